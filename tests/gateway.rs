//! The gateway over real sockets: GET, SSE and WebSocket on a server bound to port 0.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn get_serves_documents_with_etag_304_gzip_and_json_404() {
    let stack = Stack::start(&cities()).await;
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let resp = client
        .get(stack.url("/cities/mayors-sp-sao-paulo.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        resp.headers()["cache-control"],
        "public, max-age=10, stale-while-revalidate=30"
    );
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["topic"], "mayors-sp-sao-paulo");
    assert_eq!(etag, format!("\"{}\"", doc["version"]));
    assert_eq!(doc["candidates"][0]["votes"], 600);
    assert_eq!(doc["city"]["name"], "São Paulo");

    let resp = client
        .get(stack.url("/cities/mayors-sp-sao-paulo.json"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], etag.as_str());

    let resp = client
        .get(stack.url("/cities/mayors-sp-sao-paulo.json"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let gz = resp.bytes().await.unwrap();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&plain).unwrap(),
        doc
    );

    for path in [
        "/cities/mayors-sp-nowhere.json",
        "/cities/other-sp-sao-paulo.json",
        "/states/zz.json",
    ] {
        let resp = client.get(stack.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "unknown_topic", "{path}");
    }

    let resp = client
        .get(stack.url("/brazil.json"))
        .header("Origin", "https://news.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let brazil: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(brazil["progress"]["cities_total"], 3);
    let sp: serde_json::Value = get_json(&stack.url("/states/sp.json")).await;
    assert_eq!(sp["cities"][0]["leader"]["votes"], 600);
    let index: serde_json::Value = get_json(&stack.url("/cities.json")).await;
    assert_eq!(index["cities"].as_array().unwrap().len(), 3);
    let olho = index["cities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ibge"] == 2705903)
        .unwrap();
    assert_eq!(olho["slug"], "olho-d-agua-grande");
    assert_eq!(olho["topics"], json!(["mayors-al-olho-d-agua-grande"]));
}

#[tokio::test]
async fn sse_sends_snapshots_then_updates_and_resumes_from_last_event_id() {
    let mut cs = cities();
    let stack = Stack::start(&cs).await;
    let url = stack.url("/events?topics=mayors-sp-sao-paulo,brazil");
    let mut sse = Sse::connect(&url, None).await;
    let a = sse.next(WAIT).await.unwrap();
    let b = sse.next(WAIT).await.unwrap();
    assert_eq!(sse.retry, Some(3000));
    assert_eq!(
        (a.event.as_str(), b.event.as_str()),
        ("snapshot", "snapshot")
    );
    let mut topics = vec![a.data["topic"].clone(), b.data["topic"].clone()];
    topics.sort_by_key(|t| t.to_string());
    assert_eq!(topics, vec![json!("brazil"), json!("mayors-sp-sao-paulo")]);
    assert_eq!(a.id.unwrap(), a.data["version"].as_u64().unwrap());
    let first = a.id.unwrap().max(b.id.unwrap());

    // São Paulo counts more: its document and the national one change, in one cycle.
    cs[0] = cs[0].clone().votes(&[900, 700], 40.0);
    stack.write_feed(&cs);
    let mut got = Vec::new();
    while got.len() < 2 {
        let ev = sse.next(WAIT).await.expect("an update");
        assert_eq!(ev.event, "update");
        got.push(ev);
    }
    assert!(got.iter().all(|e| e.id.unwrap() > first));
    let sp = got
        .iter()
        .find(|e| e.data["topic"] == "mayors-sp-sao-paulo")
        .unwrap();
    assert_eq!(sp.data["candidates"][0]["votes"], 900);
    assert_eq!(sp.data["progress"]["percent"], 40.0);
    let last = got.iter().map(|e| e.id.unwrap()).max().unwrap();
    drop(sse);

    // Reconnect at the last id: nothing changed since, so no snapshot at all.
    let mut resumed = Sse::connect(&url, Some(last)).await;
    assert_eq!(resumed.next(Duration::from_millis(500)).await, None);
    // Reconnect from before the change: only what changed after that point comes back.
    let mut older = Sse::connect(
        &stack.url("/events?topics=mayors-sp-sao-paulo,mayors-rj-rio-de-janeiro"),
        Some(first),
    )
    .await;
    let ev = older.next(WAIT).await.unwrap();
    assert_eq!(ev.event, "snapshot");
    assert_eq!(ev.data["topic"], "mayors-sp-sao-paulo");
    assert_eq!(older.next(Duration::from_millis(500)).await, None);
    // The query parameter works for a first connect.
    let mut q = Sse::connect(&format!("{url}&lastEventId={last}"), None).await;
    assert_eq!(q.next(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn sse_refuses_unknown_and_too_many_topics_with_json_errors() {
    let mut args = gateway_args();
    args.max_topics = 2;
    let gw = Gateway::start(args).await;
    gw.publish(&[("a", 1), ("b", 1), ("c", 1)]).await;
    let (status, body) = get_status_json(&gw.url("/events?topics=a,nope")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "unknown_topic");
    assert!(body["message"].as_str().unwrap().contains("nope"));
    let (status, body) = get_status_json(&gw.url("/events?topics=a,b,c")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "too_many_topics");
    assert_eq!(get_status_json(&gw.url("/events")).await.0, 400);
}

#[tokio::test]
async fn websocket_subscribes_unsubscribes_and_answers_malformed_messages() {
    let mut cs = cities();
    let stack = Stack::start(&cs).await;
    let mut ws = ws_connect(stack.addr).await;
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "topics": ["mayors-sp-sao-paulo", "mayors-rj-rio-de-janeiro"]}),
    )
    .await;
    let mut snaps = Vec::new();
    for _ in 0..2 {
        let m = ws_next(&mut ws, WAIT).await.unwrap();
        assert_eq!(m["type"], "snapshot");
        assert_eq!(m["version"], m["document"]["version"]);
        snaps.push(m["topic"].as_str().unwrap().to_string());
    }
    snaps.sort();
    assert_eq!(snaps, ["mayors-rj-rio-de-janeiro", "mayors-sp-sao-paulo"]);

    // A malformed message gets an error and the connection stays usable.
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text("{not json"))
        .await
        .unwrap();
    let err = ws_next(&mut ws, WAIT).await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "bad_request");
    // A subscribe that names no topic is answered too, not left in silence.
    ws_send(&mut ws, json!({"type": "subscribe", "topics": []})).await;
    let err = ws_next(&mut ws, WAIT).await.unwrap();
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "topics": ["mayors-xx-nowhere"]}),
    )
    .await;
    let err = ws_next(&mut ws, WAIT).await.unwrap();
    assert_eq!(
        (err["code"].as_str(), err["topic"].as_str()),
        (Some("unknown_topic"), Some("mayors-xx-nowhere"))
    );

    cs[0] = cs[0].clone().votes(&[700, 450], 20.0);
    stack.write_feed(&cs);
    let up = ws_next(&mut ws, WAIT).await.unwrap();
    assert_eq!(up["type"], "update");
    assert_eq!(up["topic"], "mayors-sp-sao-paulo");
    assert_eq!(up["document"]["candidates"][0]["votes"], 700);

    // After unsubscribing São Paulo, only Rio's change arrives.
    ws_send(
        &mut ws,
        json!({"type": "unsubscribe", "topics": ["mayors-sp-sao-paulo"]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    cs[0] = cs[0].clone().votes(&[800, 500], 30.0);
    cs[2] = cs[2].clone().votes(&[200, 500], 15.0);
    stack.write_feed(&cs);
    let up = ws_next(&mut ws, WAIT).await.unwrap();
    assert_eq!(up["topic"], "mayors-rj-rio-de-janeiro");
    assert_eq!(ws_next(&mut ws, Duration::from_millis(500)).await, None);

    // `since` skips the snapshot of a topic that has not changed after it.
    let v = up["version"].as_u64().unwrap();
    let mut ws2 = ws_connect(stack.addr).await;
    ws_send(&mut ws2, json!({"type": "subscribe", "topics": ["mayors-rj-rio-de-janeiro", "mayors-al-olho-d-agua-grande"], "since": v})).await;
    assert_eq!(ws_next(&mut ws2, Duration::from_millis(500)).await, None);
}

#[tokio::test]
async fn a_lagging_subscriber_skips_to_the_latest_and_never_goes_back() {
    let gw = Gateway::start(gateway_args()).await;
    gw.publish(&[("hot", 0)]).await;
    // Uncompressed: the padding would shrink to almost nothing with gzip, and fit the buffers.
    let identity = reqwest::Client::builder().no_gzip().build().unwrap();
    let mut sse = Sse::try_connect_with(&identity, &gw.url("/events?topics=hot"), None)
        .await
        .unwrap();
    let mut ws = ws_connect(gw.addr).await;
    ws_send(&mut ws, json!({"type": "subscribe", "topics": ["hot"]})).await;
    ws_next(&mut ws, WAIT).await.unwrap();
    // 300 versions of 100 KB (30 MB, far more than the sockets buffer) while neither client
    // reads.
    let mut last = 0;
    for n in 1..=300 {
        last = gw.publish_padded(&[("hot", n)], 100_000).await;
    }
    let mut versions = Vec::new();
    while let Some(ev) = sse.next(Duration::from_millis(500)).await {
        versions.push(ev.id.unwrap());
        if ev.id == Some(last) {
            break;
        }
    }
    assert_skipped_to(&versions, last, "SSE");
    let mut ws_versions = Vec::new();
    while let Some(m) = ws_next(&mut ws, Duration::from_millis(500)).await {
        ws_versions.push(m["version"].as_u64().unwrap());
        if m["version"] == last {
            break;
        }
    }
    assert_skipped_to(&ws_versions, last, "WS");
    // It skipped: it did not get a queue of all 300.
    assert!(
        versions.len() < 300 && ws_versions.len() < 300,
        "{} / {}",
        versions.len(),
        ws_versions.len()
    );
}

/// A stream of one topic, uncompressed, is written by the publisher itself (src/gateway/direct.rs):
/// one opened while cycles are being published must still get its snapshot first, then every
/// later version it can, in order, never one it already has, and end on the latest.
#[tokio::test]
async fn streams_opened_while_cycles_are_published_get_a_snapshot_then_only_newer_versions() {
    let gw = Arc::new(Gateway::start(gateway_args()).await);
    // The versions the hub holds, in order: a client resumes from one of them.
    let held = Arc::new(std::sync::Mutex::new(vec![gw.publish(&[("hot", 0)]).await]));
    let identity = reqwest::Client::builder().no_gzip().build().unwrap();
    let publisher = {
        let gw = gw.clone();
        let held = held.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for n in 1..=150 {
                last = gw.publish(&[("hot", n)]).await;
                held.lock().unwrap().push(last);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            last
        })
    };
    let mut readers = Vec::new();
    for i in 0..40usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Half resume from an earlier version the hub held, half come new.
        let since = (i % 2 == 1).then(|| {
            let held = held.lock().unwrap();
            held[(i / 2).min(held.len() - 1)]
        });
        let mut sse = Sse::try_connect_with(&identity, &gw.url("/events?topics=hot"), since)
            .await
            .unwrap();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(ev) = sse.next(Duration::from_secs(2)).await {
                seen.push((ev.event, ev.id.unwrap()));
            }
            (since, seen)
        }));
    }
    let last = publisher.await.unwrap();
    for reader in readers {
        let (since, seen) = reader.await.unwrap();
        let ids: Vec<u64> = seen.iter().map(|(_, id)| *id).collect();
        assert_skipped_to(&ids, last, "SSE");
        assert!(ids[0] > since.unwrap_or(0), "{since:?}: {seen:?}");
        // A client that comes new gets a snapshot first; one that resumes gets one if the hub
        // had moved past its version when it connected.
        assert!(
            seen[0].0 == "snapshot" || since.is_some(),
            "{since:?}: {seen:?}"
        );
        assert!(
            seen[1..].iter().all(|(event, _)| event == "update"),
            "{since:?}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_resume_point_ahead_of_the_gateway_gets_no_snapshot_and_never_freezes_the_stream() {
    let gw = Gateway::start(gateway_args()).await;
    let held = gw.publish(&[("a", 0), ("b", 0)]).await;
    // A version far ahead of what this gateway holds: a client that comes from a gateway
    // further on, or one that made its id up.
    let ahead = held + 1_000_000_000;
    let identity = reqwest::Client::builder().no_gzip().build().unwrap();
    let mut one = Sse::try_connect_with(&identity, &gw.url("/events?topics=a"), Some(ahead))
        .await
        .unwrap();
    let mut two = Sse::try_connect_with(&identity, &gw.url("/events?topics=a,b"), Some(ahead))
        .await
        .unwrap();
    let mut ws = ws_connect(gw.addr).await;
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "topics": ["a"], "since": ahead}),
    )
    .await;
    let quiet = Duration::from_millis(300);
    assert_eq!(one.next(quiet).await, None, "no snapshot on one topic");
    assert_eq!(two.next(quiet).await, None, "no snapshot on two topics");
    assert_eq!(
        ws_next(&mut ws, quiet).await,
        None,
        "no snapshot on WebSocket"
    );
    let next = gw.publish(&[("a", 1)]).await;
    assert!(next < ahead);
    for (sse, name) in [(&mut one, "one topic"), (&mut two, "two topics")] {
        let ev = sse
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("{name}: no update"));
        assert_eq!((ev.event.as_str(), ev.id), ("update", Some(next)), "{name}");
    }
    let msg = ws_next(&mut ws, WAIT).await.expect("a WebSocket update");
    assert_eq!(
        (&msg["type"], &msg["version"]),
        (&json!("update"), &json!(next))
    );
}

/// A WebSocket `since` that is not a version is taken as 0, as SSE takes such a
/// `Last-Event-ID`: the client gets its snapshot, not an error; one given as a string is read.
#[tokio::test]
async fn a_websocket_since_that_is_not_a_version_gets_the_snapshot_not_an_error() {
    let gw = Gateway::start(gateway_args()).await;
    let held = gw.publish(&[("a", 0)]).await;
    for since in [
        json!(-1),
        json!(1.5),
        json!(1e30),
        json!("abc"),
        json!(null),
        json!([1]),
    ] {
        let mut ws = ws_connect(gw.addr).await;
        ws_send(
            &mut ws,
            json!({"type": "subscribe", "topics": ["a"], "since": since}),
        )
        .await;
        let msg = ws_next(&mut ws, WAIT).await.expect("an answer");
        assert_eq!(
            (&msg["type"], &msg["version"]),
            (&json!("snapshot"), &json!(held)),
            "since {since}: {msg}"
        );
    }
    let mut ws = ws_connect(gw.addr).await;
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "topics": ["a"], "since": held.to_string()}),
    )
    .await;
    assert_eq!(
        ws_next(&mut ws, Duration::from_millis(300)).await,
        None,
        "no snapshot for the version held, given as a string"
    );
}

/// A lagging client's versions: increasing, ending on `last`.
fn assert_skipped_to(versions: &[u64], last: u64, stream: &str) {
    assert_eq!(versions.last(), Some(&last), "{stream} ends on the latest");
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "{stream} versions only increase: {versions:?}"
    );
}

/// A change to more streams than one thread writes alone (`--publish-threads`: the streams are
/// shared out in runs over several threads), in cycles that arrive one by one or several at
/// once (applied together, one pass): every stream gets its snapshot, then only newer
/// versions, in order, and ends on the latest; every frame is counted once in
/// `apura_deliveries_total`.
#[tokio::test]
async fn a_change_written_by_several_threads_reaches_every_stream_once_and_in_order() {
    use apura::bus::Bus;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const STREAMS: usize = 1_200;
    let mut args = gateway_args();
    args.publish_threads = 4;
    let gw = Gateway::start(args).await;
    gw.publish(&[("hot", 0), ("cold", 0)]).await;
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let topic = if i % 4 == 3 { "cold" } else { "hot" };
        let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!("GET /events?topics={topic} HTTP/1.1\r\nHost: t\r\n\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        streams.push(socket);
    }
    eventually(|| gw.hub.audience(1).subscriptions == STREAMS as u64).await;
    let mut last = 0;
    for n in 1..=6 {
        if n % 2 == 0 {
            // Two cycles at once: the gateway may take them together.
            let draft = |topic: &str| apura::documents::Draft {
                topic: topic.into(),
                body: bytes::Bytes::from(format!(r#"{{"topic":"{topic}","n":{n}}}"#)),
            };
            gw.bus.publish(vec![draft("hot")]).await.unwrap();
            last = gw
                .bus
                .publish(vec![draft("hot"), draft("cold")])
                .await
                .unwrap()
                .version;
            eventually(|| gw.hub.get("cold").is_some_and(|e| e.version == last)).await;
        } else {
            last = gw.publish(&[("hot", n), ("cold", n)]).await;
        }
    }
    let end = format!("\nid: {last}\n");
    let mut frames = 0;
    for (i, mut socket) in streams.into_iter().enumerate() {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(&end) {
            let read = tokio::time::timeout(WAIT, socket.read(&mut buf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => panic!("stream {i} ended or stalled before version {last}"),
            }
        }
        let text = String::from_utf8(got).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|v| v.trim().parse().unwrap())
            .collect();
        let events: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_skipped_to(&ids, last, "SSE");
        assert_eq!(events.len(), ids.len());
        assert_eq!(events[0], "snapshot", "stream {i}");
        assert!(
            events[1..].iter().all(|e| *e == "update"),
            "stream {i}: {events:?}"
        );
        frames += ids.len() as u64;
    }
    let deliveries = || {
        gw.hub
            .metrics
            .deliveries
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    eventually(|| deliveries() == frames).await;
}

#[tokio::test]
async fn unknown_topics_allocate_no_channel() {
    let gw = Gateway::start(gateway_args()).await;
    gw.publish(&[("a", 1)]).await;
    let before = gw.hub.len();
    let client = reqwest::Client::new();
    for i in 0..50 {
        let r = client
            .get(gw.url(&format!("/events?topics=x{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = client
            .get(gw.url(&format!("/cities/mayors-sp-x{i}.json")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let mut ws = ws_connect(gw.addr).await;
    let topics: Vec<String> = (0..50).map(|i| format!("y{i}")).collect();
    ws_send(&mut ws, json!({"type": "subscribe", "topics": topics})).await;
    for _ in 0..50 {
        assert_eq!(
            ws_next(&mut ws, WAIT).await.unwrap()["code"],
            "unknown_topic"
        );
    }
    assert_eq!(gw.hub.len(), before);
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains(&format!("apura_topics {before}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains("apura_client_errors_total 150\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn streams_can_be_disabled_leaving_get() {
    let mut args = gateway_args();
    args.disable_streams = true;
    let gw = Gateway::start(args).await;
    gw.publish(&[("brazil", 1)]).await;
    let client = reqwest::Client::new();
    let r = client
        .get(gw.url("/events?topics=brazil"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "60");
    let r = client.get(gw.url("/ws")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(ws_refused(gw.addr).await);
    assert_eq!(status(&gw.url("/brazil.json")).await, 200);
}

#[tokio::test]
async fn graceful_shutdown_ends_streams_and_closes_websockets_with_service_restart() {
    let mut gw = Gateway::start(gateway_args()).await;
    gw.publish(&[("a", 1)]).await;
    let mut sse = Sse::connect(&gw.url("/events?topics=a"), None).await;
    sse.next(WAIT).await.unwrap();
    let mut ws = ws_connect(gw.addr).await;
    ws_send(&mut ws, json!({"type": "subscribe", "topics": ["a"]})).await;
    ws_next(&mut ws, WAIT).await.unwrap();

    gw.shutdown.cancel();
    // The stream ends with a randomised reconnection delay (drain of 200 ms in tests).
    while sse.next(WAIT).await.is_some() {}
    let retry = sse.retry.unwrap();
    assert!((1_000..1_400).contains(&retry), "randomised retry: {retry}");
    assert!(sse.ended(WAIT).await, "the SSE stream ends");
    use futures_util::StreamExt;
    let close = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    match close {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1012)
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let served = tokio::time::timeout(WAIT, gw.task.take().unwrap()).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "the server stops cleanly: {served:?}"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let stack = Stack::start(&cities()).await;
    assert_eq!(status(&stack.url("/healthz")).await, 200);
    assert_eq!(status(&stack.url("/readyz")).await, 200);
    let _sse = Sse::connect(
        &stack.url("/events?topics=brazil,mayors-sp-sao-paulo"),
        None,
    )
    .await;
    let m = get_text(&stack.url("/metrics")).await;
    for needle in [
        "apura_sse_connections 1\n",
        "apura_ws_connections 0\n",
        "apura_subscriptions 2\n",
        "apura_cycles_published_total 1\n",
        "apura_ingest_cycle_seconds ",
        "apura_data_age_seconds ",
        "apura_bytes_sent_total ",
    ] {
        assert!(m.contains(needle), "{needle:?} in\n{m}");
    }
}

#[tokio::test]
async fn before_its_snapshots_are_loaded_a_gateway_answers_503_not_404() {
    let gw = Gateway::start(gateway_args()).await;
    let client = reqwest::Client::new();
    for path in [
        "/readyz",
        "/cities/mayors-sp-sao-paulo.json",
        "/brazil.json",
        "/events?topics=brazil",
    ] {
        let resp = client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 503, "{path}");
        if path != "/readyz" {
            assert_eq!(resp.headers()["retry-after"], "1", "{path}");
            let err: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(err["error"], "not_ready", "{path}");
        }
    }
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        other => panic!("WebSocket before ready: {other:?}"),
    }

    // Loaded: what exists is served, what does not is a 404 again.
    gw.publish(&[("brazil", 1)]).await;
    wait_ready(gw.addr).await;
    let resp = client.get(gw.url("/brazil.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(gw.url("/cities/mayors-sp-sao-paulo.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let mut ws = ws_connect(gw.addr).await;
    ws_send(&mut ws, json!({"type": "subscribe", "topics": ["brazil"]})).await;
    assert_eq!(ws_next(&mut ws, WAIT).await.unwrap()["type"], "snapshot");
}

#[tokio::test]
async fn over_the_connection_cap_streams_get_503_with_retry_after() {
    let mut args = gateway_args();
    // Three connections: two streams (the cap less one kept for GET) and a GET.
    args.max_connections = 3;
    let gw = Gateway::start(args).await;
    gw.publish(&[("a", 1)]).await;
    let mut first = Sse::connect(&gw.url("/events?topics=a"), None).await;
    first.next(WAIT).await.unwrap();
    let mut ws = ws_connect(gw.addr).await;
    ws_send(&mut ws, json!({"type": "subscribe", "topics": ["a"]})).await;
    ws_next(&mut ws, WAIT).await.unwrap();
    let client = reqwest::Client::new();
    let r = client.get(gw.url("/events?topics=a")).send().await.unwrap();
    assert_overloaded(r).await;
    assert!(ws_refused(gw.addr).await);
    // GET is not a stream and still answers.
    assert_eq!(status(&gw.url("/healthz")).await, 200);
    // A stream that closes frees its place.
    drop(first);
    eventually(|| {
        gw.hub
            .metrics
            .sse_connections
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    })
    .await;
    Sse::connect(&gw.url("/events?topics=a"), None).await;
}

/// Send `request` on a fresh connection and read until `done` holds for what came back (or the
/// connection ends, or 5 s pass).
async fn raw(addr: std::net::SocketAddr, request: &str, done: impl Fn(&str) -> bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&String::from_utf8_lossy(&got)) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn the_first_request_opens_a_chunked_stream_and_anything_else_reaches_the_router() {
    let gw = Gateway::start(gateway_args()).await;
    let v = gw.publish(&[("a", 1)]).await;

    // A stream on a fresh connection: the head as hyper would send it, then chunks.
    let stream = "GET /events?topics=a HTTP/1.1\r\nHost: t\r\n\r\n";
    let got = raw(gw.addr, stream, |g| g.contains("\"n\":1")).await;
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for h in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "transfer-encoding: chunked",
        "access-control-allow-origin: *",
    ] {
        assert!(head.contains(h), "{h} missing from {head}");
    }
    let retry = "retry: 3000\n\n";
    assert!(
        body.starts_with(&format!("{:x}\r\n{retry}\r\n", retry.len())),
        "{body}"
    );
    assert!(
        body.contains(&format!("event: snapshot\nid: {v}\n")),
        "{body}"
    );

    // Its errors are the router's: JSON, CORS, the same status.
    let unknown = "GET /events?topics=nope HTTP/1.1\r\nHost: t\r\n\r\n";
    let got = raw(gw.addr, unknown, |g| g.ends_with('}')).await;
    assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");
    assert!(got.contains("access-control-allow-origin: *"), "{got}");
    assert!(
        got.ends_with(r#""message":"unknown topic: nope"}"#),
        "{got}"
    );

    // A stream asked for after a GET on a kept-alive connection is served by the router.
    let kept_alive = format!("GET /cities.json HTTP/1.1\r\nHost: t\r\n\r\n{stream}");
    let got = raw(gw.addr, &kept_alive, |g| g.contains("event: snapshot")).await;
    assert!(
        got.starts_with("HTTP/1.1 404"),
        "no cities topic yet: {got}"
    );
    assert_eq!(got.matches("HTTP/1.1 ").count(), 2, "{got}");
    assert!(got.contains(&format!("id: {v}\n")), "{got}");

    // A request head too large for the front door is the router's to refuse.
    let flood = format!(
        "GET /events?topics=a HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-Pad: 0123456789abcdef0123456789abcdef\r\n".repeat(400)
    );
    let got = raw(gw.addr, &flood, |g| g.contains("\r\n\r\n")).await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");

    // A WebSocket handshake on a fresh connection still reaches the router.
    let mut ws = ws_connect(gw.addr).await;
    ws_send(&mut ws, json!({"type": "subscribe", "topics": ["a"]})).await;
    assert_eq!(ws_next(&mut ws, WAIT).await.unwrap()["version"], v);
}

/// One HTTP/1.1 answer read off a raw socket: status line and headers (lower-case names, the
/// `date` line left out, in the order sent) and body.
async fn read_answer(
    s: &mut tokio::net::TcpStream,
    pending: &mut Vec<u8>,
    head_request: bool,
) -> (Vec<String>, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut b = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before an answer");
        pending.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8(pending[..end].to_vec()).unwrap();
    pending.drain(..end);
    let lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("date:"))
        .map(|l| match l.split_once(": ") {
            Some((n, v)) => format!("{}: {v}", n.to_ascii_lowercase()),
            None => l.to_string(),
        })
        .collect();
    let len: usize = lines
        .iter()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.parse().unwrap());
    let len = if head_request || lines[0].contains(" 304 ") {
        0
    } else {
        len
    };
    while pending.len() < len {
        let mut b = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed inside a body");
        pending.extend_from_slice(&b[..n]);
    }
    let body = pending.drain(..len).collect();
    (lines, body)
}

/// `request` alone on a connection of its own.
async fn answer_alone(addr: std::net::SocketAddr, request: &str) -> (Vec<String>, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut s, &mut Vec::new(), request.starts_with("HEAD")).await
}

/// A document request as a client sends it; a query (`?via=router`) sends it through the
/// router instead of the front door's own answer.
fn doc_request(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: apura.test\r\n{extra}\r\n")
}

/// Headers as a set: hyper and the front door may order them differently.
fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[tokio::test]
async fn documents_answered_on_the_bare_socket_equal_the_routers_answers_on_one_kept_connection() {
    use tokio::io::AsyncWriteExt;
    let stack = Stack::start(&cities()).await;
    let sp = get_json(&stack.url("/cities/mayors-sp-sao-paulo.json")).await;
    let etag = format!("\"{}\"", sp["version"]);
    let cases: Vec<(&str, &str, String)> = [
        "/cities/mayors-sp-sao-paulo.json",
        "/cities.json",
        "/brazil.json",
        "/states/sp.json",
    ]
    .iter()
    .flat_map(|path| {
        [
            ("GET", *path, String::new()),
            ("GET", *path, "Accept-Encoding: gzip, br\r\n".to_string()),
            ("GET", *path, "Accept-Encoding: gzip;q=0\r\n".to_string()),
            ("HEAD", *path, "Accept-Encoding: gzip\r\n".to_string()),
            ("GET", *path, format!("If-None-Match: \"1\", W/{etag}\r\n")),
        ]
    })
    .collect();

    // Every case on one kept-alive connection, the first three pipelined in one write, then a
    // request the router answers (`/healthz`), then the documents again.
    let mut s = tokio::net::TcpStream::connect(stack.addr).await.unwrap();
    let mut pending = Vec::new();
    let batch: String = cases[..3]
        .iter()
        .map(|(m, p, h)| doc_request(m, p, h))
        .collect();
    s.write_all(batch.as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    for (m, _, _) in &cases[..3] {
        answers.push(read_answer(&mut s, &mut pending, *m == "HEAD").await);
    }
    for (m, p, h) in &cases[3..] {
        s.write_all(doc_request(m, p, h).as_bytes()).await.unwrap();
        answers.push(read_answer(&mut s, &mut pending, *m == "HEAD").await);
    }
    s.write_all(doc_request("GET", "/healthz", "").as_bytes())
        .await
        .unwrap();
    let (health, _) = read_answer(&mut s, &mut pending, false).await;
    assert_eq!(health[0], "HTTP/1.1 200 OK");
    for (m, p, h) in &cases {
        s.write_all(doc_request(m, p, h).as_bytes()).await.unwrap();
        answers.push(read_answer(&mut s, &mut pending, *m == "HEAD").await);
    }

    for (i, (m, p, h)) in cases.iter().chain(&cases).enumerate() {
        let (head, body) = &answers[i];
        let routed = answer_alone(stack.addr, &doc_request(m, &format!("{p}?via=router"), h)).await;
        assert_eq!(sorted(head.clone()), sorted(routed.0), "{m} {p} {h:?}");
        assert_eq!(*body, routed.1, "{m} {p} {h:?}");
    }
    // What the cases ask for, as a client sees it.
    assert_eq!(answers[0].0[0], "HTTP/1.1 200 OK");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&answers[0].1).unwrap(),
        sp
    );
    assert!(answers[1].0.contains(&"content-encoding: gzip".to_string()));
    assert!(
        !answers[2]
            .0
            .iter()
            .any(|l| l.starts_with("content-encoding"))
    );
    assert!(
        answers[3].1.is_empty() && answers[3].0.contains(&"content-encoding: gzip".to_string())
    );
    assert_eq!(answers[4].0[0], "HTTP/1.1 304 Not Modified");
    // A cache keeps the variants of the 200 apart on the 304 too (RFC 9110, 15.4.5).
    assert!(
        answers[4].0.contains(&"vary: Accept-Encoding".to_string()),
        "{:?}",
        answers[4].0
    );

    // A document the gateway does not hold, on the same connection: the router's 404.
    s.write_all(doc_request("GET", "/cities/mayors-sp-nowhere.json", "").as_bytes())
        .await
        .unwrap();
    let (missing, body) = read_answer(&mut s, &mut pending, false).await;
    assert_eq!(missing[0], "HTTP/1.1 404 Not Found");
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["error"], "unknown_topic");
}

#[tokio::test]
async fn a_connection_kept_after_a_document_is_closed_when_idle_or_slow() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let args = apura::gateway::GatewayArgs {
        idle_timeout: Duration::from_millis(400),
        head_timeout: Duration::from_millis(400),
        ..gateway_args()
    };
    let stack = Stack::start_with(&cities(), args).await;
    let get = doc_request("GET", "/brazil.json", "");
    // Idle after an answer: closed once the idle timeout has passed.
    let mut s = tokio::net::TcpStream::connect(stack.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    assert_eq!(
        read_answer(&mut s, &mut pending, false).await.0[0],
        "HTTP/1.1 200 OK"
    );
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "an idle kept connection is closed");

    // A next head trickled a byte every 100 ms: cut off 400 ms after its first byte, not kept
    // open by the trickle (the whole head would take 5 s).
    let mut s = tokio::net::TcpStream::connect(stack.addr).await.unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    read_answer(&mut s, &mut pending, false).await;
    let started = std::time::Instant::now();
    let mut lived = None;
    for byte in get.as_bytes() {
        if s.write_all(&[*byte]).await.is_err() {
            lived = Some(started.elapsed());
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                lived = Some(started.elapsed());
                break;
            }
            _ => {}
        }
    }
    let lived = lived.expect("the trickled head was cut off");
    assert!(
        lived < Duration::from_secs(2),
        "a trickled head lived {lived:?}"
    );
}

/// The time of the first heartbeat on a stream opened now (a comment line on SSE, a ping on a
/// WebSocket).
async fn first_heartbeat(addr: std::net::SocketAddr, ws: bool) -> tokio::time::Instant {
    use futures_util::StreamExt;
    if ws {
        let mut ws = ws_connect(addr).await;
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_)))) => {
                    return tokio::time::Instant::now();
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no ping: {other:?}"),
            }
        }
    }
    let mut sse = Sse::connect(&format!("http://{addr}/events?topics=a"), None).await;
    while sse.comments == 0 {
        assert!(
            matches!(
                sse.read(Duration::from_millis(5)).await,
                SseRead::Idle | SseRead::Event(_)
            ),
            "the stream ended"
        );
    }
    tokio::time::Instant::now()
}

#[tokio::test]
async fn heartbeats_are_spread_over_the_interval_not_sent_to_everyone_at_once() {
    // Every connection woken to write at the same instant delays the change that comes next
    // by the whole crowd's worth of writes; spread, each moment carries a small share.
    let every = Duration::from_millis(800);
    let gw = Gateway::start(apura::gateway::GatewayArgs {
        heartbeat: every,
        ..gateway_args()
    })
    .await;
    gw.publish(&[("a", 1)]).await;
    let origin = tokio::time::Instant::now();
    let streams: Vec<_> = (0..64)
        .map(|i| tokio::spawn(first_heartbeat(gw.addr, i % 4 == 0)))
        .collect();
    // Where in the interval each connection's heartbeat falls, in eighths of it.
    let mut eighths = std::collections::BTreeSet::new();
    for s in streams {
        let at = s.await.unwrap().duration_since(origin);
        let phase = at.as_nanos() % every.as_nanos();
        eighths.insert(phase * 8 / every.as_nanos());
    }
    assert!(
        eighths.len() >= 6,
        "64 connections' heartbeats fall in {} eighths of the interval: {eighths:?}",
        eighths.len()
    );
}

#[tokio::test]
async fn an_sse_stream_with_news_gets_no_heartbeat_and_an_idle_one_does() {
    let gw = Gateway::start(apura::gateway::GatewayArgs {
        heartbeat: Duration::from_millis(300),
        ..gateway_args()
    })
    .await;
    gw.publish(&[("a", 1)]).await;
    let mut sse = Sse::connect(&gw.url("/events?topics=a"), None).await;
    assert_eq!(sse.next(WAIT).await.unwrap().event, "snapshot");
    // A change every 100 ms for 3 s: ten heartbeat intervals, each with a frame in it.
    let mut updates = 0;
    for n in 2..32 {
        gw.publish(&[("a", n)]).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while let SseRead::Event(ev) = sse.read(deadline - tokio::time::Instant::now()).await {
            assert_eq!(ev.event, "update");
            updates += 1;
        }
    }
    assert!(updates >= 25, "{updates} updates of 30");
    // A starved test machine may let one interval pass without a frame.
    assert!(
        sse.comments <= 1,
        "{} heartbeats on a stream that had news in every interval",
        sse.comments
    );
    let before = sse.comments;
    assert!(matches!(
        sse.read(Duration::from_millis(1_500)).await,
        SseRead::Idle
    ));
    assert!(
        sse.comments >= before + 3,
        "{} heartbeats in 1.5 s of silence, at 300 ms",
        sse.comments - before
    );
}

/// A WebSocket client on a bare socket: it answers no ping unless told to.
struct RawWs {
    stream: tokio::net::TcpStream,
    /// Bytes not yet parsed into frames.
    buf: Vec<u8>,
}

/// A frame from the server.
struct RawFrame {
    opcode: u8,
    payload: Vec<u8>,
}

impl RawWs {
    /// Open `/ws` and subscribe to `topic`.
    async fn connect(addr: std::net::SocketAddr, topic: &str) -> RawWs {
        let stream = raw_ws_handshake(addr).await;
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        let subscribe = json!({"type": "subscribe", "topics": [topic]}).to_string();
        ws.send(0x1, subscribe.as_bytes()).await;
        ws
    }

    /// Send a masked frame (mask 0: the payload goes as is).
    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        assert!(payload.len() < 126);
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame within `wait`; `None` when none came or the server closed.
    async fn frame(&mut self, wait: Duration) -> Option<RawFrame> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 2 {
                let (mut at, len) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 => panic!("an 8-byte length in a test frame"),
                    n if n < 126 => (2, n as usize),
                    _ => (usize::MAX, 0),
                };
                if at != usize::MAX && self.buf.len() >= at + len {
                    let frame = RawFrame {
                        opcode: self.buf[0] & 0x0f,
                        payload: self.buf[at..at + len].to_vec(),
                    };
                    at += len;
                    self.buf.drain(..at);
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// How long a WebSocket subscribed to `a` that answers no ping lives, heartbeat 200 ms, with a
/// change of `a` every 50 ms (`news`) or none; it must end with 1001 after three pings.
async fn unanswered_websocket_lives(news: bool) -> Duration {
    let gw = Gateway::start(apura::gateway::GatewayArgs {
        heartbeat: Duration::from_millis(200),
        ..gateway_args()
    })
    .await;
    gw.publish(&[("a", 1)]).await;
    let mut ws = RawWs::connect(gw.addr, "a").await;
    let opened = tokio::time::Instant::now();
    let publisher = {
        let (bus, hub) = (gw.bus.clone(), gw.hub.clone());
        tokio::spawn(async move {
            // A change every 50 ms until the test ends.
            for n in 2..1_000u64 {
                if !news {
                    return;
                }
                let draft = apura::documents::Draft {
                    topic: "a".into(),
                    body: bytes::Bytes::from(format!(r#"{{"topic":"a","n":{n}}}"#)),
                };
                let published = apura::bus::Bus::publish(&*bus, vec![draft]).await;
                if published.is_err() || hub.get("a").is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut pings = 0;
    let mut documents = 0;
    let close = loop {
        let frame = ws.frame(WAIT).await.expect("closed with a Close frame");
        match frame.opcode {
            0x1 => documents += 1,
            0x9 => pings += 1,
            0x8 => break frame.payload,
            other => panic!("opcode {other:#x}"),
        }
    };
    let lived = opened.elapsed();
    publisher.abort();
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);
    assert_eq!(&close[2..], b"ping timeout");
    assert_eq!(pings, 3, "pings before the close");
    if news {
        assert!(documents > 10, "{documents} documents while it lived");
    }
    lived
}

#[tokio::test]
async fn an_idle_websocket_that_answers_no_ping_is_closed_with_1001_after_three_beats() {
    // The snapshot, then pings on the next beats: closed at the fifth tick, 1 s.
    let lived = unanswered_websocket_lives(false).await;
    assert!(
        lived < Duration::from_millis(2_400),
        "closed after {lived:?}"
    );
}

#[tokio::test]
async fn a_websocket_with_news_is_pinged_every_fourth_beat_and_closed_with_1001_all_the_same() {
    // A document in every interval already keeps the connection from looking idle: a ping
    // every fourth beat (800 ms), and the close at the tick after the third, about 3.2 s.
    // Pinged on every beat, it would have been closed after 0.8 s.
    let lived = unanswered_websocket_lives(true).await;
    assert!(
        lived >= Duration::from_millis(2_400),
        "closed after {lived:?}"
    );
    assert!(lived < Duration::from_secs(10), "closed after {lived:?}");
}

/// The next chunk of a chunked body on `stream` (`buf` holds what was read past the last one):
/// each chunk of a stream is one write of the gateway.
async fn next_chunk(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> String {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&buf[..eol]).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size line");
            if buf.len() >= eol + 2 + size + 2 {
                let chunk = String::from_utf8_lossy(&buf[eol + 2..eol + 2 + size]).into_owned();
                buf.drain(..eol + 2 + size + 2);
                return chunk;
            }
        }
        let mut b = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, stream.read(&mut b))
            .await
            .expect("a read within the wait")
            .unwrap();
        assert!(n > 0, "the stream ended");
        buf.extend_from_slice(&b[..n]);
    }
}

#[tokio::test]
async fn the_changes_of_one_cycle_to_several_topics_leave_in_one_write() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start(gateway_args()).await;
    gw.publish(&[("a", 1), ("b", 1), ("c", 1)]).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /events?topics=a,b,c HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(stream.read(&mut b).await.unwrap(), 1, "the head was cut");
        buf.push(b[0]);
    }
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    buf.clear();
    let mut snapshots = 0;
    while snapshots < 3 {
        snapshots += next_chunk(&mut stream, &mut buf)
            .await
            .matches("event: snapshot")
            .count();
    }
    for n in 2..8 {
        gw.publish(&[("a", n), ("b", n), ("c", n)]).await;
        let chunk = next_chunk(&mut stream, &mut buf).await;
        assert_eq!(
            chunk.matches("event: update").count(),
            3,
            "cycle {n}: the first write held {chunk:?}"
        );
    }
}
