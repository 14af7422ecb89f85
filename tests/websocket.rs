//! WebSocket limits on a real gateway (real ingest, real sockets, tungstenite and HTTP clients):
//! a 2 MB document reaches every kind of client intact, the close handshake, invalid UTF-8, and
//! what one client can pull by subscribing again and again.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::process::{metric, scrape};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

/// The topic of the crowded city.
const BIG: &str = "mayors-sp-sao-paulo";
const SMALL: &str = "mayors-rj-rio-de-janeiro";

/// São Paulo with `n` candidates (about 170 bytes each in its mayors document), votes moved by
/// `shift` so that a new feed makes a new version.
fn crowded(n: usize, shift: u64) -> City {
    let mut city = City::new(3550308, "São Paulo", "SP");
    city.candidates = (0..n)
        .map(|i| {
            let name: &'static str = Box::leak(
                format!(
                    "CANDIDATA NÚMERO {i:05} MARIA APARECIDA DOS SANTOS DE OLIVEIRA E SILVA NETO"
                )
                .into_boxed_str(),
            );
            (name, "PPP", (n - i) as u64 * 10 + shift)
        })
        .collect();
    city.percent = 10.0;
    city
}

fn rio(votes: u64) -> City {
    City::new(3304557, "Rio de Janeiro", "RJ").votes(&[votes, 300], 5.0)
}

/// The GET body of a topic's document and its version.
async fn get_document(stack: &Stack, topic: &str) -> (Bytes, u64) {
    let body = reqwest::get(stack.url(&format!("/cities/{topic}.json")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (body.clone(), v["version"].as_u64().unwrap())
}

/// The next text message, raw, within `wait` (pings skipped).
async fn ws_text(ws: &mut Ws, wait: Duration) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("no text message: {other:?}"),
        }
    }
}

/// The document in a WebSocket message, as the bytes it carries.
fn ws_document<'a>(text: &'a str, kind: &str, topic: &str, version: u64) -> &'a [u8] {
    let head = format!(r#"{{"type":"{kind}","topic":"{topic}","version":{version},"document":"#);
    let rest = text
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("unexpected message head: {}", &text[..200.min(text.len())]));
    rest.strip_suffix('}')
        .expect("the message closes")
        .as_bytes()
}

/// A raw SSE stream: each event's name, id and `data:` bytes, as sent.
struct RawSse {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
}

impl RawSse {
    async fn connect(url: &str) -> RawSse {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200);
        RawSse {
            stream: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    async fn next(&mut self, wait: Duration) -> (String, u64, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), 0, None);
                for line in block.split(|b| *b == b'\n') {
                    if let Some(v) = line.strip_prefix(b"event: ") {
                        event = String::from_utf8(v.to_vec()).unwrap();
                    } else if let Some(v) = line.strip_prefix(b"id: ") {
                        id = std::str::from_utf8(v).unwrap().parse().unwrap();
                    } else if let Some(v) = line.strip_prefix(b"data: ") {
                        data = Some(v.to_vec());
                    }
                }
                if let Some(data) = data {
                    return (event, id, data);
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                other => panic!("SSE stream: no event: {other:?}"),
            }
        }
    }
}

/// A city of 12,000 candidates, a 2 MB document, reaches WebSocket, SSE and GET clients whole,
/// as its snapshot and then as an update, the same bytes everywhere.
#[tokio::test]
async fn a_two_megabyte_document_reaches_websocket_sse_and_get_clients_intact() {
    let stack = Stack::start(&[crowded(12_000, 0), rio(100)]).await;
    let (body, version) = get_document(&stack, BIG).await;
    assert!(
        (2_000_000..2_600_000).contains(&body.len()),
        "a 2 MB document: {} bytes",
        body.len()
    );

    let mut ws = ws_connect(stack.addr).await;
    ws_send(
        &mut ws,
        serde_json::json!({"type": "subscribe", "topics": [BIG]}),
    )
    .await;
    let text = ws_text(&mut ws, Duration::from_secs(20)).await;
    assert!(
        ws_document(&text, "snapshot", BIG, version) == &body[..],
        "WebSocket snapshot differs from GET"
    );
    let mut sse = RawSse::connect(&stack.url(&format!("/events?topics={BIG}"))).await;
    let (event, id, data) = sse.next(Duration::from_secs(20)).await;
    assert_eq!((event.as_str(), id), ("snapshot", version));
    assert!(data == body, "SSE snapshot differs from GET");

    // The count moves: the update is as whole as the snapshot.
    stack.write_feed(&[crowded(12_000, 1), rio(100)]);
    let text = ws_text(&mut ws, Duration::from_secs(20)).await;
    let (event, id, data) = sse.next(Duration::from_secs(20)).await;
    let (body, version) = get_document(&stack, BIG).await;
    assert!(String::from_utf8_lossy(&body).contains("\"votes\":120001"));
    assert!(
        ws_document(&text, "update", BIG, version) == &body[..],
        "WebSocket update differs from GET"
    );
    assert_eq!((event.as_str(), id), ("update", version));
    assert!(data == body, "SSE update differs from GET");
    eprintln!("{} byte document: WebSocket, SSE and GET equal", body.len());
}

/// The close code a client gets back, within 5 s.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return u16::from(frame.code),
            Ok(Some(Ok(Message::Close(None)))) => panic!("a close frame without a code"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// A connection subscribed to the small city, its snapshot read.
async fn subscribed(addr: std::net::SocketAddr) -> Ws {
    subscribed_to(addr, SMALL).await.0
}

/// A connection subscribed to `topic` alone, and its snapshot.
async fn subscribed_to(addr: std::net::SocketAddr, topic: &str) -> (Ws, serde_json::Value) {
    let mut ws = ws_connect(addr).await;
    send(&mut ws, "subscribe", topic).await;
    let snapshot = ws_next(&mut ws, Duration::from_secs(10)).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    (ws, snapshot)
}

/// A `subscribe` or `unsubscribe` message of one topic.
async fn send(ws: &mut Ws, kind: &str, topic: &str) {
    ws_send(ws, serde_json::json!({"type": kind, "topics": [topic]})).await;
}

/// A client that closes gets a Close frame back with its own code (RFC 6455 §5.5.1), then the
/// connection ends.
#[tokio::test]
async fn a_client_close_is_answered_with_the_same_code() {
    let stack = Stack::start(&[rio(100)]).await;
    for code in [1000u16, 1001, 4321] {
        let mut ws = subscribed(stack.addr).await;
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "page closed".into(),
        })))
        .await
        .unwrap();
        assert_eq!(close_code(&mut ws).await, code);
        // Then the server ends the connection.
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        assert!(
            matches!(end, Ok(None) | Ok(Some(Err(_)))),
            "still open: {end:?}"
        );
    }
}

/// Text that is not UTF-8, in one frame or split over fragments, closes with 1007 "invalid
/// frame payload data" (RFC 6455 §7.4.1), is counted, and the gateway serves on.
#[tokio::test]
async fn invalid_utf8_text_is_closed_with_1007() {
    let stack = Stack::start(&[rio(100)]).await;
    let http = reqwest::Client::new();
    let errors = |text: &str| metric(text, "apura_client_errors_total").unwrap();
    let before = errors(&scrape(&http, stack.addr).await.unwrap());
    let text = |b: &'static [u8], fin| {
        Message::Frame(Frame::message(
            Bytes::from_static(b),
            OpCode::Data(Data::Text),
            fin,
        ))
    };
    let more = |b: &'static [u8], fin| {
        Message::Frame(Frame::message(
            Bytes::from_static(b),
            OpCode::Data(Data::Continue),
            fin,
        ))
    };
    let whole = vec![text(
        b"{\"type\":\"subscribe\",\"topics\":[\"\xff\xfe\"]}",
        true,
    )];
    let split = vec![
        text(b"{\"type\":\"subscribe\",\"topics\":[\"S\xc3", false),
        more(b"\x28o\"]}", true),
    ];
    for frames in [whole, split] {
        let mut ws = ws_connect(stack.addr).await;
        for f in frames {
            ws.send(f).await.unwrap();
        }
        assert_eq!(close_code(&mut ws).await, 1007);
    }
    let after = errors(&scrape(&http, stack.addr).await.unwrap());
    assert_eq!(after - before, 2.0);
    subscribed(stack.addr).await;
}

/// What a client read: snapshots and updates by topic, bytes, and how the connection ended.
#[derive(Default, Debug)]
struct Tally {
    snapshots: std::collections::HashMap<String, u32>,
    updates: std::collections::HashMap<String, u32>,
    bytes: u64,
    snapshot_bytes: u64,
    /// Error messages (an unknown topic, …).
    errors: u32,
    close: Option<u16>,
}

/// Read `stream` into a tally until it ends, or `wait` passes.
async fn tally(mut stream: futures_util::stream::SplitStream<Ws>, wait: Duration) -> Tally {
    let mut t = Tally::default();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, stream.next()).await {
        match msg {
            Ok(Message::Text(text)) => {
                t.bytes += text.len() as u64;
                // Only the head is parsed: the document may be megabytes long.
                let head = &text.as_str()[..text.len().min(200)];
                let kind = if head.starts_with(r#"{"type":"snapshot""#) {
                    t.snapshot_bytes += text.len() as u64;
                    &mut t.snapshots
                } else if head.starts_with(r#"{"type":"update""#) {
                    &mut t.updates
                } else {
                    t.errors += u32::from(head.contains(r#""type":"error""#));
                    continue;
                };
                let topic = head.split('"').nth(7).unwrap_or("").to_string();
                *kind.entry(topic).or_default() += 1;
            }
            Ok(Message::Close(frame)) => {
                t.close = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    t
}

/// Subscribe and unsubscribe 1,000 times to a 2 MB topic: the client gets its snapshot once
/// (it holds that version), while another client on the gateway keeps receiving.
#[tokio::test]
async fn a_subscribe_loop_gets_no_repeated_snapshot() {
    // Every message taken, none refused for the rate: what is counted here is snapshots.
    let mut args = gateway_args();
    args.ws_message_rate = 1_000_000;
    let stack = Stack::start_with(&[crowded(12_000, 0), rio(100)], args).await;
    let (body, _) = get_document(&stack, BIG).await;

    let mut reader = ws_connect(stack.addr).await;
    ws_send(
        &mut reader,
        serde_json::json!({"type": "subscribe", "topics": [BIG, SMALL]}),
    )
    .await;
    let (_, reader_rx) = reader.split();
    let reader = tokio::spawn(tally(reader_rx, Duration::from_secs(8)));

    let (mut tx, rx) = ws_connect(stack.addr).await.split();
    let looper = tokio::spawn(tally(rx, Duration::from_secs(30)));
    let subscribe = serde_json::json!({"type": "subscribe", "topics": [BIG]}).to_string();
    let unsubscribe = serde_json::json!({"type": "unsubscribe", "topics": [BIG]}).to_string();
    for _ in 0..1_000 {
        tx.send(Message::text(subscribe.clone())).await.unwrap();
        tx.send(Message::text(unsubscribe.clone())).await.unwrap();
    }
    tx.send(Message::text(subscribe.clone())).await.unwrap();
    // Rio moves: both clients hear of it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.write_feed(&[crowded(12_000, 0), rio(101)]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.send(Message::Close(None)).await.unwrap();
    let looped = looper.await.unwrap();
    assert_eq!(looped.snapshots.get(BIG), Some(&1), "{looped:?}");
    assert!(
        looped.bytes < body.len() as u64 * 3 / 2,
        "{} bytes for a {} byte document",
        looped.bytes,
        body.len()
    );
    eprintln!(
        "2,001 subscribe/unsubscribe messages: {} snapshot(s), {} bytes received, document {} bytes",
        looped.snapshots.get(BIG).copied().unwrap_or(0),
        looped.bytes,
        body.len()
    );
    let read = reader.await.unwrap();
    assert_eq!(read.snapshots.get(BIG), Some(&1), "{read:?}");
    assert_eq!(read.updates.get(SMALL), Some(&1), "{read:?}");
}

/// Topics `t000`… padded to about `pad` bytes, published on a gateway of its own bus.
async fn padded_topics(gw: &Gateway, n: usize, pad: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
    let docs: Vec<(&str, u64)> = names.iter().map(|t| (t.as_str(), 1)).collect();
    gw.publish_padded(&docs, pad).await;
    names
}

/// A client cycling subscribe/unsubscribe over more topics than a connection remembers pulls
/// snapshots past `--ws-snapshot-rate`: it is closed with 1008 after at most the burst, the
/// rate over its life and one document; the close is counted; a client on the same gateway
/// gets its update meanwhile.
#[tokio::test]
async fn past_the_snapshot_budget_a_subscribe_loop_is_closed_with_1008() {
    const RATE: u64 = 256 << 10;
    const PAD: usize = 20_000;
    let mut args = gateway_args();
    args.ws_snapshot_rate = RATE;
    // The snapshot budget is what this client runs into, not the message rate.
    args.ws_message_rate = 1_000_000;
    let gw = Gateway::start(args).await;
    let topics = padded_topics(&gw, 200, PAD).await;
    let http = reqwest::Client::new();

    let mut ordinary = ws_connect(gw.addr).await;
    ws_send(
        &mut ordinary,
        serde_json::json!({"type": "subscribe", "topics": ["t000"]}),
    )
    .await;
    assert_eq!(
        ws_next(&mut ordinary, Duration::from_secs(5))
            .await
            .unwrap()["type"],
        "snapshot"
    );

    let started = std::time::Instant::now();
    let (mut tx, rx) = ws_connect(gw.addr).await.split();
    let attacker = tokio::spawn(tally(rx, Duration::from_secs(30)));
    let flood = tokio::spawn(async move {
        let mut sent = 0u32;
        'rounds: for _ in 0..20 {
            for t in &topics {
                for kind in ["subscribe", "unsubscribe"] {
                    let m = serde_json::json!({"type": kind, "topics": [t]}).to_string();
                    if tx.send(Message::text(m)).await.is_err()
                        || started.elapsed() > Duration::from_secs(20)
                    {
                        break 'rounds;
                    }
                    sent += 1;
                }
            }
        }
        sent
    });

    // Meanwhile the ordinary client's topic moves, and it hears of it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let version = gw.publish(&[("t000", 2)]).await;
    let update = ws_next(&mut ordinary, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (update["type"].as_str(), update["version"].as_u64()),
        (Some("update"), Some(version))
    );

    let pulled = attacker.await.unwrap();
    let lasted = started.elapsed().as_secs_f64();
    let messages = flood.await.unwrap();
    assert_eq!(
        pulled.close,
        Some(1008),
        "{messages} messages sent: {pulled:?}"
    );
    let bound = (RATE * apura::gateway::ws::SNAPSHOT_BURST_SECONDS) as f64
        + RATE as f64 * lasted
        + 2.0 * PAD as f64;
    assert!(
        (pulled.snapshot_bytes as f64) < bound,
        "{} snapshot bytes in {lasted:.1} s, bound {bound}",
        pulled.snapshot_bytes
    );
    let text = scrape(&http, gw.addr).await.unwrap();
    assert_eq!(
        metric(&text, "apura_ws_snapshot_budget_closes_total"),
        Some(1.0)
    );
    eprintln!(
        "{messages} messages sent; closed with 1008 after {} snapshot bytes, {lasted:.1} s",
        pulled.snapshot_bytes
    );
    // The ordinary client is still served.
    let version = gw.publish(&[("t000", 3)]).await;
    let update = ws_next(&mut ordinary, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(update["version"].as_u64(), Some(version));
}

/// The default budget holds what a page can ask for: the 64 topics a connection may hold, of
/// 300 KB each (the largest city documents), at once; leaving and coming back to them costs
/// nothing more.
#[tokio::test]
async fn a_page_of_64_large_topics_stays_within_the_default_budget() {
    let gw = Gateway::start(gateway_args()).await;
    let topics = padded_topics(&gw, 64, 300_000).await;
    let (mut tx, rx) = ws_connect(gw.addr).await.split();
    let page = tokio::spawn(tally(rx, Duration::from_secs(6)));
    let all = serde_json::json!({"type": "subscribe", "topics": topics}).to_string();
    let half = serde_json::json!({"type": "unsubscribe", "topics": topics[..32]}).to_string();
    tx.send(Message::text(all.clone())).await.unwrap();
    for _ in 0..3 {
        tx.send(Message::text(half.clone())).await.unwrap();
        tx.send(Message::text(all.clone())).await.unwrap();
    }
    let read = page.await.unwrap();
    assert_eq!(read.close, None, "{read:?}");
    assert_eq!(read.snapshots.len(), 64, "{read:?}");
    assert!(read.snapshots.values().all(|n| *n == 1), "{read:?}");
    assert!(read.snapshot_bytes > 64 * 300_000);
}

/// Handshakes that are not WebSocket version 13 upgrades get a clear refusal, not a socket.
#[tokio::test]
async fn malformed_handshakes_are_refused_with_json_errors() {
    let stack = Stack::start(&[rio(100)]).await;
    let http = reqwest::Client::new();
    let handshake = |version: &str| {
        http.get(stack.url("/ws"))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", version)
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let plain = http.get(stack.url("/ws")).send().await.unwrap();
    assert_eq!(plain.status(), 400);
    let body: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Connection: upgrade")
    );
    let old = handshake("8").send().await.unwrap();
    assert_eq!(old.status(), 426);
    assert_eq!(old.headers()["sec-websocket-version"], "13");
    let keyless = http
        .get(stack.url("/ws"))
        .header("connection", "keep-alive, Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .unwrap();
    assert_eq!(keyless.status(), 400);
    // RFC 6455 §4.1: the key is 16 bytes in base64.
    for key in [
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ=!",
        "dGhl IHNhbXBsZSBub25jZ==",
    ] {
        let bad = http
            .get(stack.url("/ws"))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{key}");
        assert!(bad.headers().get("sec-websocket-accept").is_none(), "{key}");
        let body: serde_json::Value = bad.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Sec-WebSocket-Key"),
            "{key}: {body}"
        );
    }
    // A real handshake still works.
    subscribed(stack.addr).await;
}

/// A client that sends messages past `--ws-message-rate` (subscribe/unsubscribe as fast as it
/// can) is closed with 1008 after at most the burst and the rate over its life; the close is
/// counted; so is a flood of pongs nobody asked for; a client that sends a burst within the
/// budget and then a message a second stays open; a client on the same gateway gets its
/// update meanwhile.
#[tokio::test]
async fn past_the_message_rate_a_flood_of_messages_is_closed_with_1008() {
    const RATE: u64 = 10;
    let mut args = gateway_args();
    args.ws_message_rate = RATE;
    let gw = Gateway::start(args).await;
    gw.publish(&[("a", 1), ("b", 1)]).await;
    let burst = (RATE * apura::gateway::ws::SNAPSHOT_BURST_SECONDS) as usize;

    let (mut ordinary, _) = subscribed_to(gw.addr, "a").await;
    // A page within the budget: most of the burst at once, then one message a second.
    let (mut calm_tx, calm_rx) = ws_connect(gw.addr).await.split();
    let calm = tokio::spawn(tally(calm_rx, Duration::from_secs(30)));
    for i in 0..burst - 10 {
        let kind = if i % 2 == 0 {
            "subscribe"
        } else {
            "unsubscribe"
        };
        let m = serde_json::json!({"type": kind, "topics": ["b"]}).to_string();
        calm_tx.send(Message::text(m)).await.unwrap();
    }

    let started = std::time::Instant::now();
    let (mut tx, rx) = ws_connect(gw.addr).await.split();
    let flooder = tokio::spawn(tally(rx, Duration::from_secs(30)));
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(20) {
        // An unknown topic: every message taken is answered with an error.
        let m = serde_json::json!({"type": "subscribe", "topics": [format!("nope-{sent}")]})
            .to_string();
        if tx.send(Message::text(m)).await.is_err() {
            break;
        }
        sent += 1;
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
        if flooder.is_finished() {
            break;
        }
    }
    let flooded = flooder.await.unwrap();
    let lasted = started.elapsed().as_secs_f64();
    assert_eq!(
        flooded.close,
        Some(1008),
        "{sent} messages sent: {flooded:?}"
    );
    // Every message taken was answered with an error: the burst at least, and at most the
    // burst and the rate over the flood's life.
    let answered = f64::from(flooded.errors);
    assert!(
        answered >= burst as f64 && answered <= burst as f64 + RATE as f64 * lasted + 1.0,
        "{answered} answered in {lasted:.1} s, {sent} sent"
    );
    assert_eq!(
        gw.hub
            .metrics
            .ws_message_rate_closes
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Pongs nobody asked for are a flood like any other.
    let (mut pong_tx, pong_rx) = ws_connect(gw.addr).await.split();
    let ponger = tokio::spawn(tally(pong_rx, Duration::from_secs(30)));
    let pong_started = std::time::Instant::now();
    while !ponger.is_finished() && pong_started.elapsed() < Duration::from_secs(20) {
        if pong_tx.send(Message::Pong(Bytes::new())).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(ponger.await.unwrap().close, Some(1008));
    assert_eq!(
        gw.hub
            .metrics
            .ws_message_rate_closes
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    // The ordinary client is still served, and the calm one, a message a second, still open.
    let version = gw.publish(&[("a", 2)]).await;
    let update = ws_next(&mut ordinary, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(update["version"].as_u64(), Some(version));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = serde_json::json!({"type": "subscribe", "topics": ["a"]}).to_string();
        calm_tx.send(Message::text(m)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    calm_tx.send(Message::Close(None)).await.unwrap();
    let calm = calm.await.unwrap();
    assert_ne!(calm.close, Some(1008), "{calm:?}");
    assert_eq!(calm.snapshots.get("a"), Some(&1), "{calm:?}");
    eprintln!("{sent} messages sent; closed with 1008 after {lasted:.1} s");
}

/// A client closed with 1008 that never reads the Close and keeps sending is cut off once the
/// 2 s the gateway waits for its Close have passed.
#[tokio::test]
async fn a_client_that_ignores_the_close_is_cut_off() {
    const RATE: u64 = apura::gateway::MIN_WS_SNAPSHOT_RATE;
    let mut args = gateway_args();
    args.ws_snapshot_rate = RATE;
    // The snapshot budget is what this client runs into, not the message rate.
    args.ws_message_rate = 1_000_000;
    let gw = Gateway::start(args).await;
    let topics = padded_topics(&gw, 100, 20_000).await;
    let (mut tx, _rx) = ws_connect(gw.addr).await.split();
    let started = std::time::Instant::now();
    let mut sent = 0u32;
    let cut = 'flood: loop {
        for t in &topics {
            for kind in ["subscribe", "unsubscribe"] {
                let m = serde_json::json!({"type": kind, "topics": [t]}).to_string();
                if tx.send(Message::text(m)).await.is_err() {
                    break 'flood started.elapsed();
                }
                sent += 1;
                if started.elapsed() > Duration::from_secs(15) {
                    panic!("still connected after 15 s, {sent} messages");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        gw.hub
            .metrics
            .ws_budget_closes
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(cut < Duration::from_secs(8), "cut off after {cut:?}");
    eventually(|| {
        gw.hub
            .metrics
            .ws_connections
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    })
    .await;
    eprintln!("cut off {cut:?} after the start of the flood, {sent} messages sent");
}

/// Every message until `wait` passes with nothing new: its type, topic and version; `None` for
/// pongs. A frame that is not whole (two frames written into each other) fails the read.
async fn drain(ws: &mut Ws, wait: Duration) -> Vec<(String, String, u64)> {
    let mut got = Vec::new();
    while let Ok(next) = tokio::time::timeout(wait, ws.next()).await {
        match next
            .expect("the connection stays open")
            .expect("whole frames")
        {
            Message::Text(t) => {
                let m: serde_json::Value = serde_json::from_str(&t).expect("one JSON message");
                got.push((
                    m["type"].as_str().unwrap().to_string(),
                    m["topic"].as_str().unwrap().to_string(),
                    m["version"].as_u64().unwrap(),
                ));
            }
            Message::Pong(_) | Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

fn versions(got: &[(String, String, u64)], topic: &str) -> Vec<u64> {
    got.iter()
        .filter(|(_, t, _)| t == topic)
        .map(|(_, _, v)| *v)
        .collect()
}

/// A WebSocket of one topic is written by the publisher; the client's pings are answered
/// through the same socket. A client that stops reading while 100 KB versions are published
/// and pings all along gets whole frames only, skips to the latest and never goes back.
#[tokio::test]
async fn a_websocket_of_one_topic_that_lags_and_pings_gets_whole_frames_and_the_latest() {
    // 300 pings in a few seconds: past the default message rate's burst.
    let mut args = gateway_args();
    args.ws_message_rate = 1_000_000;
    let gw = Gateway::start(args).await;
    gw.publish(&[("hot", 0)]).await;
    let (mut ws, _) = subscribed_to(gw.addr, "hot").await;
    // 300 versions of 100 KB while the client reads nothing and pings after each.
    let mut last = 0;
    for n in 1..=300 {
        last = gw.publish_noise("hot", n, 100_000).await;
        ws.send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
    }
    let got = drain(&mut ws, Duration::from_secs(2)).await;
    let seen = versions(&got, "hot");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&last), "the latest arrives");
    assert!(seen.len() < 300, "it skipped: {} versions", seen.len());
    assert!(got.iter().all(|(kind, _, _)| kind == "update"));
}

/// The hand-over from the publisher to the connection's task: a second subscription moves the
/// first topic to the task from the version the publisher wrote, so nothing is sent twice,
/// and a version the publisher could not write (the client's socket full) is sent then.
#[tokio::test]
async fn subscribing_a_second_topic_hands_the_first_over_without_a_repeat_or_a_gap() {
    let gw = Gateway::start(gateway_args()).await;
    let first = gw.publish(&[("a", 0), ("b", 0)]).await;
    let (mut ws, snap) = subscribed_to(gw.addr, "a").await;
    assert_eq!(snap["version"].as_u64(), Some(first));

    // Written by the publisher, then the hand-over: `a` is not sent again.
    let v2 = gw.publish(&[("a", 2)]).await;
    send(&mut ws, "subscribe", "b").await;
    let got = drain(&mut ws, Duration::from_millis(500)).await;
    assert_eq!(versions(&got, "a"), [v2], "{got:?}");
    assert_eq!(
        got.iter()
            .filter(|(k, t, _)| k == "snapshot" && t == "b")
            .count(),
        1
    );
    let v3 = gw.publish(&[("a", 3), ("b", 3)]).await;
    let got = drain(&mut ws, Duration::from_millis(500)).await;
    assert_eq!(
        (versions(&got, "a"), versions(&got, "b")),
        (vec![v3], vec![v3])
    );

    // A second connection that lags while following `a` alone, then subscribes `b`: what the
    // publisher left unwritten comes from the task, the latest last.
    let (mut slow, _) = subscribed_to(gw.addr, "a").await;
    let mut last = 0;
    for n in 1..=100 {
        last = gw.publish_noise("a", n, 100_000).await;
    }
    send(&mut slow, "subscribe", "b").await;
    let got = drain(&mut slow, Duration::from_secs(2)).await;
    let seen = versions(&got, "a");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&last), "the latest arrives");
    assert_eq!(versions(&got, "b"), [v3], "b's snapshot");
    // After the hand-over, unsubscribing `a` stops it; `b` goes on.
    send(&mut slow, "unsubscribe", "a").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = gw.publish(&[("a", 9), ("b", 9)]).await;
    let got = drain(&mut slow, Duration::from_millis(500)).await;
    assert_eq!(
        (versions(&got, "a"), versions(&got, "b")),
        (vec![], vec![v])
    );
}
