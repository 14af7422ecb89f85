//! Abuse: malformed topics, subscribe floods, oversized frames, too many topics, header floods,
//! path traversal, write methods, and client addresses in metrics. Each gets a clear error,
//! creates no topic, and leaves the gateway serving.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn gateway() -> Gateway {
    let gw = Gateway::start(gateway_args()).await;
    gw.publish(&[("brazil", 1), ("state-sp", 1), ("mayors-sp-sao-paulo", 1)])
        .await;
    gw
}

async fn metric(gw: &Gateway, name: &str) -> i64 {
    let text = get_text(&gw.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .parse()
        .unwrap()
}

/// Send raw bytes, read what comes back until the server closes or 5 s pass.
async fn raw(gw: &Gateway, request: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let (mut r, mut w) = s.split();
    let write = async {
        // The server may answer and close before reading everything: that is fine.
        let _ = w.write_all(request).await;
    };
    let read = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    out.extend_from_slice(&buf[..n]);
                    // One response is enough.
                    if out.windows(4).any(|w| w == b"\r\n\r\n")
                        && (out.starts_with(b"HTTP/1.1 4") || out.len() > 4096)
                    {
                        break;
                    }
                }
                _ => break,
            }
        }
        out
    };
    let ((), out) = tokio::join!(write, read);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no status line in {:?}",
                &response[..response.len().min(200)]
            )
        })
}

#[tokio::test]
async fn unknown_and_malformed_topics_get_json_errors_and_create_nothing() {
    let gw = gateway().await;
    let topics = gw.hub.len();
    let long = "a".repeat(2_000);
    let client = reqwest::Client::new();
    for path in [
        "/cities/mayors-xx-nowhere.json".to_string(),
        format!("/cities/mayors-sp-{long}.json"),
        "/cities/mayors-sp-%00%0a%1b.json".into(),
        "/cities/mayors-sp-s%C3%A3o-paulo.json".into(),
        "/cities/%F0%9F%92%A9.json".into(),
        "/states/ZZ.json".into(),
        "/states/spx.json".into(),
        "/events?topics=mayors-xx-nowhere".into(),
        format!("/events?topics={long}"),
        "/events?topics=%00%01%02".into(),
        "/events?topics=%F0%9F%92%A9".into(),
        "/events?topics=".into(),
        "/events".into(),
    ] {
        let r = client.get(gw.url(&path)).send().await.unwrap();
        let code = r.status().as_u16();
        assert!(code == 404 || code == 400, "{path}: {code}");
        let body: serde_json::Value = r.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(
            body["error"] == "unknown_topic" || body["error"] == "bad_request",
            "{path}: {body}"
        );
        assert!(
            message.len() < 300,
            "{path}: echoes {} bytes",
            message.len()
        );
        assert!(
            !message.chars().any(char::is_control),
            "{path}: {message:?}"
        );
    }
    let mut ws = ws_connect(gw.addr).await;
    for topic in ["nowhere", &long, "\u{0}\u{1b}[31m", "💩", ""] {
        ws_send(
            &mut ws,
            serde_json::json!({"type": "subscribe", "topics": [topic]}),
        )
        .await;
        let m = ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
        assert_eq!(m["type"], "error", "{m}");
        assert_eq!(m["code"], "unknown_topic");
    }
    for bad in [
        "not json",
        r#"{"type":"subscribe","topics":"brazil"}"#,
        r#"{"type":"publish","topic":"brazil","document":{}}"#,
        r#"{"type":"subscribe","topics":[1,2]}"#,
    ] {
        ws.send(Message::text(bad)).await.unwrap();
        let m = ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
        assert_eq!(m["code"], "bad_request", "{bad}: {m}");
    }
    assert_eq!(gw.hub.len(), topics, "a topic was created");
    assert_eq!(metric(&gw, "apura_topics").await, topics as i64);
}

/// An unknown state or city is named as a topic whatever its spelling (`state-SP`, as
/// `state-xx`), and a query string that does not parse gets the documented JSON error, on the
/// first request of a connection (the front door) and on a later one (the router).
#[tokio::test]
async fn unknown_paths_are_named_as_topics_and_bad_query_strings_get_json() {
    let gw = gateway().await;
    let client = reqwest::Client::new();
    for (path, message) in [
        (
            "/states/SP.json",
            "unknown topic: state-SP (UFs are lower-case: /states/sp.json)",
        ),
        ("/states/xx.json", "unknown topic: state-xx"),
        ("/states/spx.json", "unknown topic: state-spx"),
        ("/cities/foo.json", "unknown topic: foo"),
    ] {
        let r = client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unknown_topic", "{path}");
        assert_eq!(body["message"], message, "{path}");
    }
    // reqwest keeps the connection alive: the second request goes to the router.
    for _ in 0..2 {
        let r = client
            .get(gw.url("/events?topics=brazil&topics=cities"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
        assert_eq!(
            body["message"],
            "malformed query string: duplicate field `topics`"
        );
    }
}

/// 10,000 subscribe messages on one WebSocket: each is answered (an error for an unknown
/// topic), subscriptions stop at `--max-topics`, no topic is created, and it all takes bounded
/// time.
#[tokio::test]
async fn ten_thousand_subscribes_on_one_websocket_are_answered_and_capped() {
    // Every message answered, none refused for the rate (see the test after this one).
    let mut args = gateway_args();
    args.ws_message_rate = 1_000_000;
    let gw = Gateway::start(args).await;
    let known: Vec<String> = (0..100).map(|i| format!("mayors-sp-city-{i}")).collect();
    let docs: Vec<(&str, u64)> = known.iter().map(|t| (t.as_str(), 1)).collect();
    gw.publish(&docs).await;
    let topics = gw.hub.len();
    let ws = ws_connect(gw.addr).await;
    let (mut tx, mut rx) = ws.split();
    let started = Instant::now();
    const FLOOD: usize = 10_000;
    let writer = tokio::spawn(async move {
        for i in 0..FLOOD {
            // Every 100th message asks for a known topic: 100 of them, 64 fit.
            let topic = if i % 100 == 0 {
                format!("mayors-sp-city-{}", i / 100)
            } else {
                format!("nope-{i}")
            };
            let m = serde_json::json!({"type": "subscribe", "topics": [topic]});
            tx.send(Message::text(m.to_string())).await.unwrap();
        }
        tx
    });
    let (mut errors, mut snapshots, mut capped) = (0, 0, 0);
    while errors + snapshots < FLOOD {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.next())
            .await
            .expect("the flood stalled")
            .unwrap()
            .unwrap();
        let Message::Text(t) = m else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str().unwrap() {
            "snapshot" => snapshots += 1,
            "error" => {
                errors += 1;
                if v["code"] == "too_many_topics" {
                    capped += 1;
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
    let _tx = writer.await.unwrap();
    eprintln!(
        "{FLOOD} subscribes answered in {:?}: {snapshots} snapshots, {errors} errors ({capped} capped)",
        started.elapsed()
    );
    assert_eq!(snapshots, 64);
    assert_eq!(errors, FLOOD - 64);
    // Once 64 are held, every further topic, known or not, is refused by the cap.
    assert!(capped >= 36, "{capped}");
    assert_eq!(gw.hub.len(), topics, "a topic was created");
    assert_eq!(metric(&gw, "apura_subscriptions").await, 64);
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A `subscribe` naming more topics than a connection may follow is refused whole, with one
/// error; a topic named twice in a message is answered once. A client cannot make the gateway
/// write thousands of errors for one message.
#[tokio::test]
async fn a_subscribe_over_the_topic_cap_gets_one_error_and_repeats_are_answered_once() {
    let gw = gateway().await;
    let mut ws = ws_connect(gw.addr).await;
    let many = vec!["x"; 3_000];
    ws_send(
        &mut ws,
        serde_json::json!({"type": "subscribe", "topics": many}),
    )
    .await;
    let repeated = vec!["nope"; 50];
    ws_send(
        &mut ws,
        serde_json::json!({"type": "subscribe", "topics": repeated}),
    )
    .await;
    ws_send(
        &mut ws,
        serde_json::json!({"type": "subscribe", "topics": ["brazil"]}),
    )
    .await;
    let mut got = Vec::new();
    while let Some(m) = ws_next(&mut ws, Duration::from_secs(5)).await {
        let done = m["type"] == "snapshot";
        got.push(m);
        if done {
            break;
        }
    }
    let kinds: Vec<String> = got
        .iter()
        .map(|m| format!("{} {}", m["type"], m["code"]).replace('"', ""))
        .collect();
    assert_eq!(
        kinds,
        [
            "error too_many_topics",
            "error unknown_topic",
            "snapshot null"
        ],
        "{got:?}"
    );
    assert_eq!(metric(&gw, "apura_subscriptions").await, 1);
}

/// A message over 16 KiB closes the WebSocket with 1009 "message too big"; the gateway serves
/// on.
#[tokio::test]
async fn an_oversized_websocket_message_is_closed_with_1009() {
    let gw = gateway().await;
    for size in [20 << 10, 4 << 20] {
        let mut ws = ws_connect(gw.addr).await;
        let topics: Vec<String> = (0..size / 10).map(|i| format!("t{i:07}")).collect();
        let m = serde_json::json!({"type": "subscribe", "topics": topics}).to_string();
        assert!(m.len() > 16 << 10);
        // The server may close while a large message is still going out.
        let _ = ws.send(Message::text(m)).await;
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame,
                Ok(Some(Ok(_))) => continue,
                other => panic!("{size} bytes: no close frame: {other:?}"),
            }
        };
        let frame = close.expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), 1009, "{size} bytes: {frame:?}");
    }
    let mut ws = ws_connect(gw.addr).await;
    ws_send(
        &mut ws,
        serde_json::json!({"type": "subscribe", "topics": ["brazil"]}),
    )
    .await;
    assert_eq!(
        ws_next(&mut ws, Duration::from_secs(5)).await.unwrap()["type"],
        "snapshot"
    );
}

#[tokio::test]
async fn too_many_topics_on_one_sse_request_is_a_400() {
    let gw = gateway().await;
    let topics = gw.hub.len();
    let many: Vec<String> = (0..1_000).map(|i| format!("t{i}")).collect();
    let r = reqwest::get(gw.url(&format!("/events?topics={}", many.join(","))))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_topics");
    assert_eq!(gw.hub.len(), topics);
    assert_eq!(metric(&gw, "apura_sse_connections").await, 0);
}

/// A request head over 16 KiB or 100 header lines: 431, and the connection closes, first on
/// its connection or after another request.
#[tokio::test]
async fn header_floods_get_431() {
    let gw = gateway().await;
    let mut many = String::from("GET /brazil.json HTTP/1.1\r\nHost: test\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let r = raw(&gw, many.as_bytes()).await;
    assert_eq!(status(&r), 431, "10,000 headers");

    let big = format!(
        "GET /brazil.json HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let r = raw(&gw, big.as_bytes()).await;
    assert_eq!(status(&r), 431, "a 1 MB header");

    // A head over 16 KiB after a first request on the same connection: the same JSON 431
    // from the door after a document, and hyper's 431 (its buffer bounded to 16 KiB, not its
    // default ~400 KB) after a request hyper answered.
    let errors = metric(&gw, "apura_client_errors_total").await;
    let second = format!(
        "GET /brazil.json HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 << 10)
    );
    for first in ["/brazil.json", "/nope"] {
        let request = format!("GET {first} HTTP/1.1\r\nHost: test\r\n\r\n{second}");
        let out = read_to_end(&gw, request.as_bytes()).await;
        let answers: Vec<&str> = out.matches("HTTP/1.1 ").collect();
        assert_eq!(answers.len(), 2, "after {first}: {out:.300}");
        let last = &out[out.rfind("HTTP/1.1 ").unwrap()..];
        assert!(
            last.starts_with("HTTP/1.1 431"),
            "after {first}: {last:.300}"
        );
        if first == "/brazil.json" {
            assert!(last.contains("head_too_large"), "{last:.300}");
        }
    }
    assert!(metric(&gw, "apura_client_errors_total").await > errors);

    // Still serving.
    let r = reqwest::get(gw.url("/brazil.json")).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Send `request` on a new connection, read everything until the server closes (10 s at most).
async fn read_to_end(gw: &Gateway, request: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An event stream's client sends nothing after its request. One that keeps sending is cut
/// off after 1 KiB and counted, on a stream of one topic (written by the publisher) and of
/// several; a stray empty line does not end a stream, which gets the next change.
#[tokio::test]
async fn a_client_that_keeps_sending_on_its_event_stream_is_cut_off() {
    let gw = gateway().await;
    let errors = metric(&gw, "apura_client_errors_total").await;
    let open = |topics: &'static str| async move {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        let head = format!("GET /events?topics={topics} HTTP/1.1\r\nHost: test\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("event: snapshot") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("no snapshot")
                .unwrap();
            assert!(n > 0, "closed before the snapshot");
            got.extend_from_slice(&buf[..n]);
        }
        s
    };
    for topics in ["brazil", "brazil,state-sp"] {
        let mut s = open(topics).await;
        let junk = vec![b'x'; 64 << 10];
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        // Sending until the server closes; then reading to its end.
        loop {
            if s.write_all(&junk).await.is_err() {
                break;
            }
            if started.elapsed() > Duration::from_secs(5) {
                panic!("{topics}: the stream took 5 s of junk");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("{topics}: still open"),
            }
        }
    }
    assert_eq!(
        metric(&gw, "apura_client_errors_total").await,
        errors + 2,
        "each cut-off stream counted"
    );

    for topics in ["brazil", "brazil,state-sp"] {
        let mut s = open(topics).await;
        s.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.publish(&[("brazil", 2), ("state-sp", 2)]).await;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("event: update") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{topics}: no update after an empty line"))
                .unwrap();
            assert!(n > 0, "{topics}: closed after an empty line");
            got.extend_from_slice(&buf[..n]);
        }
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request without exactly one `Host` line is a 400 with a JSON
/// error and a metric, on every path (documents, streams, the page, WebSocket), first on its
/// connection or kept alive after another; HTTP/1.0 may go without, and an empty `Host` is one.
#[tokio::test]
async fn an_http11_request_without_exactly_one_host_is_a_400() {
    let gw = gateway().await;
    let errors = metric(&gw, "apura_client_errors_total").await;
    let refused = [
        "GET /brazil.json HTTP/1.1\r\n\r\n",
        "HEAD /cities/mayors-sp-sao-paulo.json HTTP/1.1\r\n\r\n",
        "GET /events?topics=brazil HTTP/1.1\r\n\r\n",
        "GET /brazil.json HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /events?topics=brazil HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
        "GET /index.html HTTP/1.1\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ];
    for head in refused {
        let r = raw(&gw, head.as_bytes()).await;
        assert_eq!(status(&r), 400, "{head:?}: {r}");
        if !head.starts_with("HEAD") {
            assert!(r.contains("exactly one `Host`"), "{head:?}: {r}");
        }
    }

    // Kept alive: a request without `Host` after a good one on the same connection.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /brazil.json HTTP/1.1\r\nHost: t\r\n\r\nGET /brazil.json HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("exactly one `Host`") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // The document's JSON ends where the second answer starts.
    assert!(got.contains("}HTTP/1.1 400 Bad Request\r\n"), "{got}");

    // Counted, one per request refused.
    let counted = metric(&gw, "apura_client_errors_total").await - errors;
    assert_eq!(counted, refused.len() as i64 + 1);

    // Still served: HTTP/1.0 without `Host`, and an empty `Host`.
    let r = raw(&gw, b"GET /brazil.json HTTP/1.0\r\n\r\n").await;
    assert_eq!(status(&r), 200, "{r}");
    let r = raw(
        &gw,
        b"GET /brazil.json HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
}

/// Static files come from `web-demo/` only, however the path is spelled.
#[tokio::test]
async fn static_files_cannot_escape_the_web_folder() {
    let gw = gateway().await;
    let ok = raw(&gw, b"GET /index.html HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(status(&ok), 200, "the page itself");
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/..%5cCargo.toml",
        "/test/../../Cargo.toml",
        "/test/%2e%2e/%2e%2e/Cargo.toml",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/....//Cargo.toml",
        "/web-demo/../Cargo.toml",
        "/%252e%252e/Cargo.toml",
    ] {
        let r = raw(
            &gw,
            format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
        )
        .await;
        let code = status(&r);
        assert!(code == 404 || code == 400, "{path}: {code}");
        assert!(
            !r.contains("[package]") && !r.contains("root:"),
            "{path} leaked a file"
        );
    }
}

/// A folder of the page is redirected to its name plus `/` on this host, never to another: a
/// path that starts with `//` would make `Location: //test/`, a link to the host `test`.
#[tokio::test]
async fn no_redirect_leads_to_another_host() {
    let gw = gateway().await;
    let own = raw(&gw, b"GET /test HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(status(&own), 307, "{own}");
    assert!(
        own.to_ascii_lowercase().contains("location: /test/\r\n"),
        "{own}"
    );
    for path in ["//test", "//test?x=1", "///test"] {
        let r = raw(
            &gw,
            format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&r), 404, "{path}: {r}");
        assert!(!r.to_ascii_lowercase().contains("location:"), "{path}: {r}");
    }
}

/// No endpoint accepts a write: there is no publish and no admin endpoint.
#[tokio::test]
async fn no_endpoint_accepts_a_write() {
    let gw = gateway().await;
    let before = get_text(&gw.url("/brazil.json")).await;
    let client = reqwest::Client::new();
    for path in [
        "/",
        "/index.html",
        "/brazil.json",
        "/cities.json",
        "/cities/mayors-sp-sao-paulo.json",
        "/states/sp.json",
        "/events?topics=brazil",
        "/ws",
        "/metrics",
        "/healthz",
        "/readyz",
        "/publish",
        "/admin",
    ] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let r = client
                .request(method.parse().unwrap(), gw.url(path))
                .body(r#"{"topic":"brazil","n":999}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405, "{method} {path}");
            assert_eq!(r.headers()["allow"], "GET, HEAD", "{method} {path}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "method_not_allowed", "{method} {path}");
        }
    }
    let after = get_text(&gw.url("/brazil.json")).await;
    assert_eq!(after, before);
}

/// `/metrics` names no client: no IPv4 or IPv6 address, no port of a connected client.
#[tokio::test]
async fn metrics_expose_no_client_address() {
    let gw = gateway().await;
    let mut sse = Sse::connect(&gw.url("/events?topics=brazil"), None).await;
    sse.next(Duration::from_secs(5)).await.unwrap();
    let mut ws = ws_connect(gw.addr).await;
    ws_send(
        &mut ws,
        serde_json::json!({"type": "subscribe", "topics": ["nope"]}),
    )
    .await;
    ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    let _ = reqwest::get(gw.url("/cities/nope.json")).await.unwrap();
    let text = get_text(&gw.url("/metrics")).await;
    assert!(text.contains("apura_ws_connections 1"), "{text}");
    for token in text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')) {
        let parts: Vec<&str> = token.split('.').collect();
        let ipv4 = parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok());
        let ipv6 = token.matches(':').count() >= 2;
        assert!(!ipv4 && !ipv6, "an address in /metrics: {token:?}");
    }
    assert!(!text.contains("127.0.0.1") && !text.contains("localhost"));
}

/// Overload: over the connection cap or the accept rate, streams get 503 with `Retry-After`
/// (1–5 s, random, so a refused crowd does not come back at once); GET still works.
#[tokio::test]
async fn over_the_connection_cap_or_accept_rate_streams_get_503_with_retry_after() {
    let mut args = gateway_args();
    args.max_connect_rate = 5;
    let gw = Gateway::start(args).await;
    gw.publish(&[("brazil", 1)]).await;
    let client = reqwest::Client::new();
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..30 {
        let r = client
            .get(gw.url("/events?topics=brazil"))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => open.push(r),
            503 => refused.push(r),
            other => panic!("status {other}"),
        }
    }
    // A burst of one second's worth (5), then a token every 200 ms.
    assert!((5..=8).contains(&open.len()), "{} admitted", open.len());
    for r in refused {
        assert_overloaded(r).await;
    }
    assert!(metric(&gw, "apura_refused_connections_total").await >= 22);
    assert_eq!(
        reqwest::get(gw.url("/brazil.json")).await.unwrap().status(),
        200
    );
}

/// Deploys: on shutdown, SSE streams end spread over the drain period, each with a random
/// `retry:` so their clients come back at times of their own.
#[tokio::test]
async fn on_shutdown_sse_streams_end_spread_out_with_random_retry() {
    let mut args = gateway_args();
    args.drain = Duration::from_secs(1);
    let gw = Gateway::start(args).await;
    gw.publish(&[("brazil", 1)]).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut sse = Sse::connect(&gw.url("/events?topics=brazil"), None).await;
        sse.next(Duration::from_secs(5)).await.unwrap();
        clients.push(sse);
    }
    let started = Instant::now();
    gw.shutdown.cancel();
    let ends = futures_util::future::join_all(clients.into_iter().map(|mut sse| async move {
        while sse.next(Duration::from_secs(5)).await.is_some() {}
        (
            started.elapsed(),
            sse.retry.expect("a retry: before the end"),
        )
    }))
    .await;
    let mut retries: Vec<u64> = ends.iter().map(|e| e.1).collect();
    retries.sort();
    retries.dedup();
    assert!(retries.len() > 10, "retry: values {retries:?}");
    assert!(ends.iter().all(|e| (1_000..3_000).contains(&e.1)));
    let first = ends.iter().map(|e| e.0).min().unwrap();
    let last = ends.iter().map(|e| e.0).max().unwrap();
    assert!(
        last - first > Duration::from_millis(300),
        "{first:?}..{last:?}"
    );
    assert!(last < Duration::from_secs(3), "drain took {last:?}");
}

/// Frames the message rate does not count (empty continuation frames of a message that never
/// ends) are read no faster than the largest messages the rate allows: a client cannot make the
/// gateway parse millions of frames a second. Its sends wait in TCP instead.
#[tokio::test]
async fn a_websocket_client_cannot_make_the_gateway_read_without_bound() {
    let gw = gateway().await;
    let mut s = raw_ws_handshake(gw.addr).await;
    // A text frame that does not end, then empty continuation frames, masked, 6 bytes each.
    s.write_all(&[0x01, 0x81, 0, 0, 0, 0, b'a']).await.unwrap();
    let batch: Vec<u8> = [0x00u8, 0x80, 0, 0, 0, 0].repeat((64 << 10) / 6);
    let (mut r, mut w) = s.into_split();
    // Whatever the gateway sends back is read and dropped.
    tokio::spawn(async move {
        let mut sink = [0u8; 4096];
        while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_millis(200), w.write_all(&batch)).await {
            Ok(Ok(())) => sent += batch.len(),
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    // At the default 20 messages a second of 16 KiB: 320 KiB a second with a burst of 10 s'
    // worth (3.2 MiB), plus what the sockets' buffers hold. Unbounded, the gateway parsed
    // ~60 MB a second here.
    eprintln!("{sent} bytes of empty frames taken in 3 s");
    assert!(sent < 24 << 20, "{sent} bytes taken in 3 s");
    // The gateway serves on.
    let r = reqwest::get(gw.url("/brazil.json")).await.unwrap();
    assert_eq!(r.status(), 200);
}
