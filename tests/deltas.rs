//! Deltas over real sockets: SSE `&delta=1` and WebSocket `"delta": true` send a change as a
//! `patch` (RFC 6902) from the version the client holds, and the document whole when it does
//! not hold that version.

#[path = "compression/clients.rs"]
mod clients;
mod common;

use std::time::Duration;

use clients::{RawSse, events};
use common::process::metric;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
/// Documents of ~2 KB, whose change (`n`) is a small patch.
const PAD: usize = 2_000;

/// The document the gateway serves now (what GET answers for a city, state or country topic;
/// these test topics have no GET path).
fn served(gw: &Gateway, topic: &str) -> Value {
    serde_json::from_slice(&gw.hub.get(topic).unwrap().body).unwrap()
}

fn apply(doc: &Value, patch: &Value) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    let mut doc = doc.clone();
    json_patch::patch(&mut doc, &patch).unwrap();
    doc
}

#[tokio::test]
async fn sse_with_delta_sends_patches_from_the_version_held_and_whole_updates_otherwise() {
    let gw = Gateway::start(gateway_args()).await;
    let v1 = gw.publish_padded(&[("a", 1), ("b", 1)], PAD).await;
    for accept in ["", "gzip"] {
        let mut sse = RawSse::open(gw.addr, "/events?topics=a,b&delta=1", accept, false).await;
        assert!(sse.until(WAIT, |t| events(t).len() >= 2).await);
        let before = events(&sse.text());
        let a1: Value = serde_json::from_str(
            &before
                .iter()
                .find(|e| e.2.contains(r#""topic":"a""#))
                .unwrap()
                .2,
        )
        .unwrap();
        let n = if accept.is_empty() { 2 } else { 3 };
        let v2 = gw.publish_padded(&[("a", n)], PAD).await;
        assert!(
            sse.until(WAIT, |t| events(t).len() >= 3).await,
            "the change"
        );
        let (event, id, data) = events(&sse.text()).pop().unwrap();
        assert_eq!((event.as_str(), id), ("patch", v2));
        let change: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(change["topic"], "a");
        assert_eq!(change["version"], v2);
        let base = change["base"].as_u64().unwrap();
        assert_eq!(base, a1["version"].as_u64().unwrap());
        assert!(base >= v1);
        assert!(data.len() < 300, "a small patch: {data}");
        let get = served(&gw, "a");
        assert_eq!(
            apply(&a1, &change["patch"]),
            get,
            "the patch gives the served document"
        );
        assert_eq!(get["n"], n);
    }
    // Resuming, the client holds no version this stream knows of: the change comes whole.
    let held = gw.hub.get("a").unwrap().version;
    let mut sse = RawSse::open(
        gw.addr,
        &format!("/events?topics=a,b&delta=1&lastEventId={held}"),
        "",
        false,
    )
    .await;
    let v4 = gw.publish_padded(&[("a", 4)], PAD).await;
    assert!(sse.until(WAIT, |t| !events(t).is_empty()).await);
    let got = events(&sse.text());
    assert_eq!((got[0].0.as_str(), got[0].1), ("update", v4), "{got:?}");
    // Without delta=1, never a patch.
    let mut plain = RawSse::open(gw.addr, "/events?topics=a", "", false).await;
    assert!(plain.until(WAIT, |t| !events(t).is_empty()).await);
    let v5 = gw.publish_padded(&[("a", 5)], PAD).await;
    assert!(plain.until(WAIT, |t| events(t).len() >= 2).await);
    assert_eq!(events(&plain.text())[1].0, "update");
    assert!(v5 > v4);

    let text = get_text(&gw.url("/metrics")).await;
    let patch = metric(&text, "apura_stream_bytes_total{form=\"patch\"}").unwrap();
    assert!(patch > 0.0 && patch < 1000.0, "{patch} bytes of patches");
}

#[tokio::test]
async fn websocket_subscriptions_with_delta_get_patches_others_whole_updates() {
    let gw = Gateway::start(gateway_args()).await;
    gw.publish_padded(&[("a", 1), ("b", 1)], PAD).await;
    let mut ws = ws_connect(gw.addr).await;
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "topics": ["a"], "delta": true}),
    )
    .await;
    ws_send(&mut ws, json!({"type": "subscribe", "topics": ["b"]})).await;
    let mut held = std::collections::HashMap::new();
    for _ in 0..2 {
        let m = ws_next(&mut ws, WAIT).await.unwrap();
        assert_eq!(m["type"], "snapshot");
        held.insert(
            m["topic"].as_str().unwrap().to_string(),
            m["document"].clone(),
        );
    }
    for n in 2..5 {
        let v = gw.publish_padded(&[("a", n), ("b", n)], PAD).await;
        for _ in 0..2 {
            let m = ws_next(&mut ws, WAIT).await.unwrap();
            let topic = m["topic"].as_str().unwrap().to_string();
            assert_eq!(m["version"], v);
            let doc = if topic == "a" {
                assert_eq!(m["type"], "patch", "{m}");
                assert_eq!(m["base"], held[&topic]["version"]);
                apply(&held[&topic], &m["patch"])
            } else {
                assert_eq!(m["type"], "update", "{m}");
                m["document"].clone()
            };
            assert_eq!(doc, served(&gw, &topic));
            held.insert(topic, doc);
        }
    }
}
