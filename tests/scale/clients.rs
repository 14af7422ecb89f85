//! The scale tests' subscribers: SSE and WebSocket clients that reconnect as a browser would,
//! and the check that they end with the final documents.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apura::bus::Bus;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::deployment::{Deployment, unstamped};
use super::{PATIENCE, TOPICS};
use crate::common::redis::bus;
use crate::common::{Sse, SseRead, get_json_with, topic_path};

/// A subscriber on a gateway, over SSE or WebSocket, that reconnects as a browser would
/// (SSE with `Last-Event-ID`, WebSocket with `since`) and records what it receives.
pub(crate) struct Client {
    pub(crate) name: String,
    pub(crate) gateway: usize,
    pub(crate) seen: Arc<Mutex<Seen>>,
    pub(crate) task: JoinHandle<()>,
}

#[derive(Default)]
pub(crate) struct Seen {
    /// The latest document of each topic, stamped, as received.
    pub(crate) latest: HashMap<String, Value>,
    pub(crate) messages: usize,
    pub(crate) connects: usize,
    pub(crate) disconnects: usize,
    pub(crate) problems: Vec<String>,
}

impl Seen {
    pub(crate) fn record(&mut self, topic: &str, version: u64, doc: Value) {
        self.messages += 1;
        if doc["topic"] != topic || doc["version"] != version {
            self.problems
                .push(format!("{topic} v{version} carries {}", doc["topic"]));
        }
        if let Some(held) = self.latest.get(topic) {
            let held_version = held["version"].as_u64().unwrap();
            // A resumed stream may send again what the client holds, never anything older.
            if version < held_version || (version == held_version && *held != doc) {
                self.problems
                    .push(format!("{topic} went from v{held_version} to v{version}"));
            }
        }
        self.latest.insert(topic.to_string(), doc);
    }

    /// Where a WebSocket client resumes: the oldest version it holds, so that every topic that
    /// changed since is sent.
    pub(crate) fn since(&self) -> u64 {
        TOPICS
            .iter()
            .map(|t| {
                self.latest
                    .get(*t)
                    .and_then(|d| d["version"].as_u64())
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    }
}

impl Client {
    /// An SSE and a WebSocket client on each gateway, each with its first snapshots in.
    pub(crate) async fn on_every_gateway(d: &Deployment) -> Vec<Client> {
        let mut clients = Vec::new();
        for (i, gw) in d.gateways.iter().enumerate() {
            for sse in [true, false] {
                let seen = Arc::new(Mutex::new(Seen::default()));
                let (addr, s) = (gw.addr, seen.clone());
                let task = if sse {
                    tokio::spawn(sse_client(addr, s))
                } else {
                    tokio::spawn(ws_client(addr, s))
                };
                let kind = if sse { "sse" } else { "ws" };
                clients.push(Client {
                    name: format!("{kind}@{}", gw.name),
                    gateway: i,
                    seen,
                    task,
                });
            }
        }
        for c in &clients {
            d.wait_for("every client's snapshots", async || {
                c.seen.lock().unwrap().latest.len() == TOPICS.len()
            })
            .await;
        }
        clients
    }

    /// None of `clients` ever lost its stream.
    pub(crate) fn assert_none_disconnected(clients: &[Client]) {
        for c in clients {
            c.assert_never_disconnected();
        }
    }

    pub(crate) fn assert_never_disconnected(&self) {
        let seen = self.seen.lock().unwrap();
        assert_eq!(
            (seen.connects, seen.disconnects),
            (1, 0),
            "{}: connects, disconnects",
            self.name
        );
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pause between connection attempts.
pub(crate) const RECONNECT: Duration = Duration::from_millis(100);

pub(crate) async fn sse_client(addr: SocketAddr, seen: Arc<Mutex<Seen>>) {
    let url = format!("http://{addr}/events?topics={}", TOPICS.join(","));
    let mut last_event_id = None;
    loop {
        let Ok(mut sse) = Sse::try_connect(&url, last_event_id).await else {
            tokio::time::sleep(RECONNECT).await;
            continue;
        };
        seen.lock().unwrap().connects += 1;
        loop {
            match sse.read(Duration::from_secs(3600)).await {
                SseRead::Event(ev) => {
                    let mut seen = seen.lock().unwrap();
                    let Some(version) = ev.id else {
                        seen.problems.push(format!("event without id: {ev:?}"));
                        continue;
                    };
                    if ev.event != "snapshot" && ev.event != "update" {
                        seen.problems.push(format!("{} event", ev.event));
                    }
                    let topic = ev.data["topic"].as_str().unwrap_or_default().to_string();
                    seen.record(&topic, version, ev.data);
                    last_event_id = Some(version);
                }
                SseRead::Idle => {}
                SseRead::Ended => break,
            }
        }
        seen.lock().unwrap().disconnects += 1;
        tokio::time::sleep(RECONNECT).await;
    }
}

pub(crate) async fn ws_client(addr: SocketAddr, seen: Arc<Mutex<Seen>>) {
    let url = format!("ws://{addr}/ws");
    loop {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(RECONNECT).await;
            continue;
        };
        let since = {
            let mut seen = seen.lock().unwrap();
            seen.connects += 1;
            seen.since()
        };
        let subscribe = json!({"type": "subscribe", "topics": TOPICS, "since": since});
        if ws.send(Message::text(subscribe.to_string())).await.is_ok() {
            // Pings are answered by tungstenite while reading.
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Text(text) => {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        let mut seen = seen.lock().unwrap();
                        match v["type"].as_str() {
                            Some("snapshot" | "update") => {
                                let topic = v["topic"].as_str().unwrap().to_string();
                                let version = v["version"].as_u64().unwrap();
                                seen.record(&topic, version, v["document"].clone());
                            }
                            _ => seen.problems.push(format!("message {v}")),
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        }
        seen.lock().unwrap().disconnects += 1;
        tokio::time::sleep(RECONNECT).await;
    }
}

impl Deployment {
    /// Wait for the end of the count and for the channel to go quiet, then check that every
    /// client holds the final documents and that one ingest published at a time.
    pub(crate) async fn finish(&self, clients: &[Client]) {
        self.wait_until_finished().await;
        self.observer.wait_quiet().await;
        self.assert_clients_hold_the_final_documents(clients).await;
        self.observer.assert_one_publisher_at_a_time();
    }

    /// The end of the count: Redis, both gateways (GET) and every client hold the same latest
    /// document of every followed topic, and it is the one built from the final files.
    pub(crate) async fn assert_clients_hold_the_final_documents(&self, clients: &[Client]) {
        let expected = self.final_documents().await;
        let store: HashMap<String, Value> = bus(&self.redis)
            .await
            .snapshot()
            .await
            .unwrap()
            .into_iter()
            .map(|d| {
                (
                    d.topic.to_string(),
                    serde_json::from_slice(&d.json).unwrap(),
                )
            })
            .collect();
        for (topic, body) in &expected {
            let stored = &store[topic];
            assert_eq!(&unstamped(stored), body, "{topic} in Redis");
            match stored.get("final") {
                Some(finished) => assert_eq!(finished, true, "{topic} in Redis"),
                None => assert_eq!(
                    stored["progress"]["cities_final"], stored["progress"]["cities_total"],
                    "{topic} in Redis"
                ),
            }
            for gw in &self.gateways {
                let got = get_json_with(&self.http, gw.url(&topic_path(topic))).await;
                assert_eq!(&got, stored, "{topic} from {}", gw.name);
            }
        }
        // Clients: the last frames may still be on their way.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let behind: Vec<String> = clients
                .iter()
                .flat_map(|c| {
                    let seen = c.seen.lock().unwrap();
                    TOPICS
                        .iter()
                        .filter(|t| seen.latest.get(**t) != Some(&store[**t]))
                        .map(|t| format!("{} {t}", c.name))
                        .collect::<Vec<_>>()
                })
                .collect();
            if behind.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "clients without the final documents: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in clients {
            let seen = c.seen.lock().unwrap();
            assert!(seen.problems.is_empty(), "{}: {:?}", c.name, seen.problems);
            // Snapshots, then updates all through the count.
            assert!(
                seen.messages >= 3 * TOPICS.len(),
                "{} got only {} messages",
                c.name,
                seen.messages
            );
        }
    }
}
