//! Compressed streams over real sockets: SSE with gzip (the front door and hyper's path) and
//! WebSocket with permessage-deflate (Python's `websockets`, which negotiates it by default).

#[path = "compression/clients.rs"]
mod clients;
mod common;

use std::time::Duration;

use clients::{PythonWs, RawSse, events};
use common::process::metric;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn args() -> apura::gateway::GatewayArgs {
    apura::gateway::GatewayArgs {
        heartbeat: Duration::from_millis(300),
        ..gateway_args()
    }
}

#[tokio::test]
async fn sse_with_gzip_carries_the_same_events_in_a_fraction_of_the_bytes_and_ends_whole() {
    let gw = Gateway::start(args()).await;
    let v1 = gw.publish_padded(&[("a", 1), ("b", 1)], 20_000).await;
    let path = "/events?topics=a,b";
    let mut streams = vec![
        // Identity: no Accept-Encoding, or gzip refused.
        RawSse::open(gw.addr, path, "", false).await,
        RawSse::open(gw.addr, path, "gzip;q=0, br", false).await,
        // What browsers send, on the front door and on a kept-alive connection hyper serves.
        RawSse::open(gw.addr, path, "gzip, deflate, br, zstd", false).await,
        RawSse::open(gw.addr, path, "gzip, deflate, br, zstd", true).await,
    ];
    // Streams of one topic, which the publisher writes itself: identity and gzip.
    let one = "/events?topics=a";
    let mut single = vec![
        RawSse::open(gw.addr, one, "", false).await,
        RawSse::open(gw.addr, one, "gzip, deflate, br, zstd", false).await,
    ];
    for (i, s) in streams.iter().chain(&single).enumerate() {
        assert!(s.head.starts_with("HTTP/1.1 200"), "{}", s.head);
        assert_eq!(s.header("content-type").unwrap(), "text/event-stream");
        assert_eq!(s.header("vary").unwrap(), "accept-encoding");
        assert_eq!(
            s.gzip(),
            i == 2 || i == 3 || i == 5,
            "stream {i}: {}",
            s.head
        );
    }
    for s in &mut streams {
        assert!(s.until(WAIT, |t| events(t).len() >= 2).await, "snapshots");
    }
    for s in &mut single {
        assert!(s.until(WAIT, |t| !events(t).is_empty()).await, "a snapshot");
    }
    let v2 = gw.publish_padded(&[("a", 2)], 20_000).await;
    for s in streams.iter_mut().chain(&mut single) {
        let update = format!("event: update\nid: {v2}\n");
        let seen = s.until(WAIT, |t| t.contains(&update)).await;
        let text = s.text();
        assert!(
            seen,
            "the update: {}…{}",
            s.head,
            &text[text.len().saturating_sub(300)..]
        );
        // A heartbeat decodes too, on its own.
        let beats = s.text().matches(":\n\n").count();
        assert!(s.until(WAIT, |t| t.matches(":\n\n").count() > beats).await);
    }
    let a = gw.hub.get("a").unwrap();
    let expected = [
        (
            "snapshot".to_string(),
            v1,
            String::from_utf8(gw.hub.get("b").unwrap().body.to_vec()).unwrap(),
        ),
        (
            "update".to_string(),
            v2,
            String::from_utf8(a.body.to_vec()).unwrap(),
        ),
    ];
    for s in &streams {
        let got = s.events();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].1, v1);
        assert_eq!(
            got[1..],
            expected[..],
            "every stream carries the same documents"
        );
    }
    // A stream of one topic: a's first version, as the streams of two topics had it, then
    // the same update.
    let first_a = streams[0].events()[..2]
        .iter()
        .find(|e| e.2.contains(r#""topic":"a""#))
        .cloned()
        .unwrap();
    for s in &single {
        assert_eq!(s.events(), [first_a.clone(), expected[1].clone()]);
    }
    // 20 KB of padding per document: gzip sends a small part of it.
    let (identity, gzip) = (streams[0].wire, streams[2].wire);
    assert!(gzip * 10 < identity, "gzip {gzip} B, identity {identity} B");
    let (identity, gzip) = (single[0].wire, single[1].wire);
    assert!(
        gzip * 10 < identity,
        "one topic: gzip {gzip} B, identity {identity} B"
    );

    let text = get_text(&gw.url("/metrics")).await;
    let gz = metric(&text, "apura_stream_bytes_total{form=\"gzip\"}").unwrap();
    let id = metric(&text, "apura_stream_bytes_total{form=\"identity\"}").unwrap();
    assert!(gz > 0.0 && id > 4.0 * gz, "gzip {gz}, identity {id}");

    // The drain ends every stream; a gzip stream ends whole (final block, CRC-32, length).
    gw.shutdown.cancel();
    for s in streams.iter_mut().chain(&mut single) {
        assert!(s.until_end(WAIT).await, "the stream ends");
        assert!(s.text().contains("retry: "));
    }
    for s in streams[2..].iter().chain(&single[1..]) {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&s.body[..]), &mut out)
            .expect("a whole gzip stream, its trailer right");
        assert_eq!(out, s.text());
        assert_eq!(events(&out), s.events());
    }
}

#[tokio::test]
async fn event_source_style_clients_decode_the_gzip_stream() {
    // reqwest, like a browser, asks for gzip and decodes it on the fly.
    let gw = Gateway::start(args()).await;
    let v1 = gw.publish(&[("a", 1)]).await;
    let mut sse = Sse::connect(&gw.url("/events?topics=a"), None).await;
    let ev = sse.next(WAIT).await.unwrap();
    assert_eq!((ev.event.as_str(), ev.id), ("snapshot", Some(v1)));
    let v2 = gw.publish(&[("a", 2)]).await;
    let ev = sse.next(WAIT).await.unwrap();
    assert_eq!(
        (ev.event.as_str(), ev.id, ev.data["n"].as_u64()),
        ("update", Some(v2), Some(2))
    );
}

#[tokio::test]
async fn python_websockets_negotiates_permessage_deflate_and_gets_the_documents() {
    let gw = Gateway::start(args()).await;
    let v1 = gw.publish_padded(&[("a", 1), ("b", 1)], 5_000).await;
    let url = format!("ws://{}/ws", gw.addr);
    let mut py = PythonWs::spawn(&["follow", &url, "a,b", "20", "3"]);
    let hello = py
        .next(WAIT)
        .await
        .expect("python websockets runs (python3-websockets)");
    assert_eq!(
        hello["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(hello["negotiated"][0], "permessage-deflate");
    // The subscribe was compressed by the client: it was understood.
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        let m = py.next(WAIT).await.expect("a snapshot");
        assert_eq!(m["type"], "snapshot");
        assert_eq!(m["version"], v1);
        snapshots.push(m);
    }
    let v2 = gw.publish_padded(&[("b", 2)], 5_000).await;
    let m = py.next(WAIT).await.expect("the update");
    assert_eq!(
        (m["type"].as_str(), m["topic"].as_str()),
        (Some("update"), Some("b"))
    );
    assert_eq!(m["version"], v2);
    snapshots.push(m);
    for m in &snapshots {
        let topic = m["topic"].as_str().unwrap();
        let enc = gw.hub.get(topic).unwrap();
        if enc.version == m["version"] {
            let served: serde_json::Value = serde_json::from_slice(&enc.body).unwrap();
            assert_eq!(m["document"], served);
        }
    }
    let last: serde_json::Value = serde_json::from_slice(&gw.hub.get("b").unwrap().body).unwrap();
    assert_eq!(
        snapshots[2]["document"], last,
        "the update is the document served"
    );
    assert_eq!(
        py.next(WAIT).await.unwrap()["closed"],
        serde_json::Value::Null
    );
    assert!(py.succeeded().await);

    let text = get_text(&gw.url("/metrics")).await;
    let deflate = metric(&text, "apura_stream_bytes_total{form=\"deflate\"}").unwrap();
    assert!(
        deflate > 0.0 && deflate < 3.0 * 3000.0,
        "{deflate} bytes for three documents"
    );
}

#[tokio::test]
async fn a_compressed_message_that_inflates_past_the_limit_is_refused_with_1009() {
    // The default heartbeat: Python compresses 50 MB for longer than three short heartbeats,
    // and would be closed as gone (no pong).
    let gw = Gateway::start(gateway_args()).await;
    gw.publish(&[("a", 1)]).await;
    let url = format!("ws://{}/ws", gw.addr);
    // 10 MB of one letter compresses to ~10 KB, under the largest message: the gateway inflates
    // 16 KiB + 1 bytes of it and stops. 50 MB compresses to more than a message may be.
    for size in ["10000000", "50000000"] {
        let mut py = PythonWs::spawn(&["bomb", &url, size]);
        let closed = py
            .next(Duration::from_secs(30))
            .await
            .expect("the client reports");
        assert_eq!(closed["close_code"], 1009, "{size} bytes: {closed}");
        assert_eq!(closed["close_reason"], "message too big");
        assert!(py.succeeded().await);
    }
    // The gateway is fine: a compressed subscribe on another connection works.
    let mut py = PythonWs::spawn(&["follow", &url, "a", "10", "1"]);
    assert!(py.next(WAIT).await.is_some());
    assert_eq!(py.next(WAIT).await.unwrap()["type"], "snapshot");
}

#[tokio::test]
async fn a_lagging_gzip_stream_of_one_topic_skips_to_the_latest_and_still_ends_whole() {
    let gw = Gateway::start(args()).await;
    gw.publish(&[("hot", 0)]).await;
    // Written by the publisher itself (one topic), compressed: documents of random letters,
    // which gzip cannot shrink to fit the sockets' buffers.
    let mut sse = RawSse::open(gw.addr, "/events?topics=hot", "gzip", false).await;
    assert!(sse.gzip());
    assert!(
        sse.until(WAIT, |t| !events(t).is_empty()).await,
        "the snapshot"
    );
    // 300 versions of 100 KB while the client does not read.
    let mut last = 0;
    for n in 1..=300 {
        last = gw.publish_noise("hot", n, 100_000).await;
    }
    let update = format!("event: update\nid: {last}\n");
    assert!(sse.until(WAIT, |t| t.contains(&update)).await, "the latest");
    let versions: Vec<u64> = sse.events().iter().map(|e| e.1).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert!(
        versions.len() < 300,
        "it skipped: {} versions",
        versions.len()
    );
    // The drain ends it whole: the trailer's CRC-32 and length count exactly what was sent.
    gw.shutdown.cancel();
    assert!(sse.until_end(WAIT).await, "the stream ends");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&sse.body[..]), &mut out)
        .expect("a whole gzip stream, its trailer right");
    assert_eq!(events(&out).last().map(|e| e.1), Some(last));
}
