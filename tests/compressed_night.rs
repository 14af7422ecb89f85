//! A simulated count night (`apura demo`, a fixed seed) followed by a client that decodes gzip
//! SSE, one that inflates permessage-deflate WebSocket messages (Python's `websockets`) and one
//! that applies patches (gzip SSE with `&delta=1`): every document version each received (or
//! made) is exactly the one GET served at that version, and each ends with GET's last document
//! of every topic.

#[path = "compression/clients.rs"]
mod clients;
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clients::{PythonWs, RawSse, events};
use common::process::{Process, args, free_addr};
use common::*;

const TOPICS: [&str; 5] = [
    "mayors-sp-sao-paulo",
    "councillors-sp-sao-paulo",
    "state-sp",
    "brazil",
    "mayors-ac-campo-da-mata",
];

/// (topic, version) → the document GET served.
type Served = Arc<Mutex<HashMap<(String, u64), bytes::Bytes>>>;

/// GET every topic every 100 ms until `stop`, keeping each version served.
async fn poll_get(base: String, served: Served, stop: tokio_util::sync::CancellationToken) {
    let http = reqwest::Client::new();
    while !stop.is_cancelled() {
        for topic in TOPICS {
            let Ok(r) = http
                .get(format!("{base}{}", topic_path(topic)))
                .send()
                .await
            else {
                continue;
            };
            if r.status() != 200 {
                continue;
            }
            let etag = r.headers()["etag"]
                .to_str()
                .unwrap()
                .trim_matches('"')
                .to_string();
            let body = r.bytes().await.unwrap();
            let key = (topic.to_string(), etag.parse().unwrap());
            served.lock().unwrap().insert(key, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Check what one client received against what GET served; returns how many were compared.
fn check(client: &str, received: &[(String, u64, serde_json::Value)], served: &Served) -> usize {
    let served = served.lock().unwrap();
    let mut compared = 0;
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (topic, version, doc) in received {
        let v = last.entry(topic).or_default();
        assert!(
            *version > *v,
            "{client}: {topic} went from {v} to {version}"
        );
        *v = *version;
        if let Some(body) = served.get(&(topic.clone(), *version)) {
            let get: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(doc, &get, "{client}: {topic} at {version} differs from GET");
            compared += 1;
        }
    }
    for topic in TOPICS {
        let newest = served.keys().filter(|(t, _)| t == topic).map(|k| k.1).max();
        assert_eq!(
            last.get(topic).copied(),
            newest,
            "{client}: {topic} ends at GET's last"
        );
    }
    assert!(
        compared * 10 >= received.len() * 9,
        "{client}: {compared} of {} versions compared with GET",
        received.len()
    );
    compared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_sse_deflate_websocket_and_patches_carry_exactly_the_documents_get_serves() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let night = Duration::from_secs(30);
    let mut demo = Process::spawn(
        dir.path(),
        "demo",
        &args(&[
            "demo",
            "--listen",
            &addr.to_string(),
            "--seed",
            "7",
            "--duration",
            "30s",
            "--interval",
            "1s",
            "--drain",
            "500ms",
        ]),
    );
    wait_ready(addr).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    for topic in TOPICS {
        let url = format!("{base}{}", topic_path(topic));
        let first = get_json_once_served(
            &http,
            &url,
            Duration::from_millis(200),
            Duration::from_secs(30),
        );
        assert!(first.await.is_some(), "{topic} published");
    }
    let served: Served = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = tokio::spawn(poll_get(base.clone(), served.clone(), stop.clone()));

    let topics = TOPICS.join(",");
    let mut sse = RawSse::open(addr, &format!("/events?topics={topics}"), "gzip", false).await;
    assert!(sse.gzip(), "{}", sse.head);
    let delta_path = format!("/events?topics={topics}&delta=1");
    let mut delta = RawSse::open(addr, &delta_path, "gzip", false).await;
    let url = format!("ws://{addr}/ws");
    let seconds = (night.as_secs() + 60).to_string();
    let mut py = PythonWs::spawn(&["follow", &url, &topics, &seconds, "0"]);
    let hello = py
        .next(Duration::from_secs(10))
        .await
        .expect("python websockets runs");
    assert_eq!(hello["negotiated"][0], "permessage-deflate");
    let ws_messages = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(m) = py.next(Duration::from_secs(120)).await {
            if m.get("closed").is_some() {
                return (got, m["closed"].clone());
            }
            got.push(m);
        }
        panic!("the WebSocket client stopped without a close");
    });

    // The whole night, then a little more: the count is over and every topic holds still.
    let end = tokio::time::Instant::now() + night + Duration::from_secs(5);
    let over = |_: &str| tokio::time::Instant::now() >= end;
    let wait = night + Duration::from_secs(10);
    tokio::join!(sse.until(wait, over), delta.until(wait, over));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    poller.await.unwrap();
    // The drain ends both streams: the gzip stream whole, the WebSocket with 1012.
    assert!(demo.terminate().await.success());
    assert!(
        sse.until_end(Duration::from_secs(10)).await,
        "the SSE stream ends"
    );
    let mut whole = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&sse.body[..]), &mut whole)
        .expect("a whole gzip stream: final block, CRC-32 and length right");
    assert!(
        delta.until_end(Duration::from_secs(10)).await,
        "the delta stream ends"
    );
    let mut whole_delta = String::new();
    let mut gz = flate2::read::GzDecoder::new(&delta.body[..]);
    std::io::Read::read_to_string(&mut gz, &mut whole_delta).unwrap();
    let (ws, closed) = ws_messages.await.unwrap();
    assert_eq!(closed, 1012);

    let sse_docs: Vec<_> = events(&whole)
        .into_iter()
        .map(|(_, id, data)| {
            let doc: serde_json::Value = serde_json::from_str(&data).unwrap();
            (doc["topic"].as_str().unwrap().to_string(), id, doc)
        })
        .collect();
    let ws_docs: Vec<_> = ws
        .into_iter()
        .map(|m| {
            let topic = m["topic"].as_str().unwrap().to_string();
            (topic, m["version"].as_u64().unwrap(), m["document"].clone())
        })
        .collect();
    // The patch client: every patch applies to the version it holds, giving the next one.
    let mut held: HashMap<String, serde_json::Value> = HashMap::new();
    let mut patches = 0;
    let mut delta_docs = Vec::new();
    for (event, id, data) in events(&whole_delta) {
        let message: serde_json::Value = serde_json::from_str(&data).unwrap();
        let topic = message["topic"].as_str().unwrap().to_string();
        let doc = if event == "patch" {
            let base = held
                .get(&topic)
                .expect("a patch comes after the topic's document");
            assert_eq!(
                base["version"], message["base"],
                "{topic}: a patch of the version held"
            );
            let patch: json_patch::Patch =
                serde_json::from_value(message["patch"].clone()).unwrap();
            let mut doc = base.clone();
            json_patch::patch(&mut doc, &patch).unwrap();
            patches += 1;
            doc
        } else {
            message
        };
        held.insert(topic.clone(), doc.clone());
        delta_docs.push((topic, id, doc));
    }
    assert!(
        patches * 2 > delta_docs.len(),
        "{patches} patches of {}",
        delta_docs.len()
    );
    let versions = served.lock().unwrap().len();
    assert!(
        versions > 3 * TOPICS.len(),
        "{versions} versions: the night moved"
    );
    let sse_compared = check("gzip SSE", &sse_docs, &served);
    let ws_compared = check("deflate WebSocket", &ws_docs, &served);
    let delta_compared = check("delta SSE", &delta_docs, &served);
    println!(
        "{versions} versions served by GET; gzip SSE {} received, {sse_compared} compared; \
         deflate WebSocket {} received, {ws_compared} compared; delta SSE {} received \
         ({patches} patches), {delta_compared} compared; wire bytes: gzip SSE {}, delta gzip \
         SSE {}",
        sse_docs.len(),
        ws_docs.len(),
        delta_docs.len(),
        sse.wire,
        delta.wire
    );
}
