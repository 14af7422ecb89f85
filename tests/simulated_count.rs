//! A short simulated count night end to end: simulator → ingest → gateway → clients.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use apura::ingest::FeedArgs;
use apura::simulate::{self, SimConfig};
use common::*;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Sim {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn simulator(duration: Duration, interval: Duration) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = SimConfig {
        seed: 7,
        duration,
        interval,
        municipalities: None,
        ..SimConfig::default()
    };
    tokio::spawn(simulate::run(config, listener, shutdown.clone()));
    Sim { addr, shutdown }
}

async fn status(sim: &Sim) -> Option<serde_json::Value> {
    reqwest::get(format!("http://{}/status", sim.addr))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn wait_finished(sim: &Sim) {
    for _ in 0..600 {
        if status(sim).await.is_some_and(|s| s["finished"] == true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the simulated count did not finish");
}

/// `apura ingest --once --print` over the simulator's final file: one mayor document per
/// voting municipality, integer votes adding up to the valid total in every one.
#[tokio::test]
async fn ingest_once_prints_one_mayor_document_per_voting_city() {
    let sim = simulator(Duration::from_millis(600), Duration::from_millis(200)).await;
    wait_finished(&sim).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_apura"))
        .args([
            "ingest",
            "--once",
            "--print",
            "--feed",
            &format!("http://{}/mayors.json", sim.addr),
            "--municipalities",
            &format!("http://{}/municipalities.json", sim.addr),
        ])
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let docs: Vec<serde_json::Value> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let mayors: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["topic"].as_str().unwrap().starts_with("mayors-"))
        .collect();
    assert_eq!(
        mayors.len(),
        5568,
        "5,570 municipalities less Brasília and Fernando de Noronha"
    );
    assert!(mayors.iter().any(|d| d["topic"] == "mayors-sp-sao-paulo"));
    for d in &mayors {
        let votes: Vec<u64> = d["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["votes"].as_u64().expect("integer votes"))
            .collect();
        assert_eq!(
            votes.iter().sum::<u64>(),
            d["totals"]["valid"].as_u64().unwrap(),
            "{}",
            d["topic"]
        );
        assert_eq!(d["final"], true, "{}", d["topic"]);
        assert!(
            d["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["elected"] == true)
                || d["candidates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["status"] == "second_round")
                    .count()
                    == 2
        );
    }
    let states = docs
        .iter()
        .filter(|d| d["topic"].as_str().unwrap().starts_with("state-"))
        .count();
    assert_eq!(states, 26, "every state with a municipal election");
    assert!(docs.iter().any(|d| d["topic"] == "brazil"));
    assert!(docs.iter().any(|d| d["topic"] == "cities"));
}

/// Clients on SSE and WebSocket through a whole (short) count: every client ends with the
/// document GET serves, for every topic, and no version ever went backwards.
#[tokio::test]
async fn at_the_end_of_a_count_every_client_holds_the_get_document() {
    let sim = simulator(Duration::from_secs(4), Duration::from_millis(250)).await;
    let feed = FeedArgs {
        feed: Some(format!("http://{}/mayors.json", sim.addr)),
        councillors_feed: None,
        municipalities: Some(format!("http://{}/municipalities.json", sim.addr)),
        zones_url_template: Some(format!(
            "http://{}/zones/zone-{{uf}}-{{slug}}.json",
            sim.addr
        )),
        interval: Duration::from_millis(100),
        zones_interval: Duration::from_millis(500),
        fetch_timeout: Duration::from_secs(10),
        ..FeedArgs::default()
    };
    let (addr, _stop) = serve_embedded(feed).await;

    let topics = [
        "mayors-sp-sao-paulo",
        "mayors-rj-rio-de-janeiro",
        "state-sp",
        "brazil",
    ];
    // Every client keeps (version, document) per topic and checks versions only increase.
    let mut clients = Vec::new();
    for i in 0..6 {
        let url = format!("http://{addr}/events?topics={}", topics.join(","));
        clients.push(tokio::spawn(async move {
            let mut mine: HashMap<String, (u64, serde_json::Value)> = HashMap::new();
            let mut record = |topic: String, version: u64, doc: serde_json::Value| {
                if let Some((prev, _)) = mine.get(&topic) {
                    assert!(version > *prev, "{topic}: {version} after {prev}");
                }
                mine.insert(topic, (version, doc));
            };
            if i % 2 == 0 {
                let mut sse = Sse::connect(&url, None).await;
                while let Some(ev) = sse.next(Duration::from_secs(3)).await {
                    record(
                        ev.data["topic"].as_str().unwrap().into(),
                        ev.id.unwrap(),
                        ev.data,
                    );
                }
            } else {
                let mut ws = ws_connect(addr).await;
                ws_send(&mut ws, json!({"type": "subscribe", "topics": topics})).await;
                while let Some(m) = ws_next(&mut ws, Duration::from_secs(3)).await {
                    record(
                        m["topic"].as_str().unwrap().into(),
                        m["version"].as_u64().unwrap(),
                        m["document"].clone(),
                    );
                }
            }
            mine
        }));
    }
    wait_finished(&sim).await;
    // Clients stop after 3 s without news: the count is over and the last cycle is out.
    let mut seen = Vec::new();
    for c in clients {
        seen.push(c.await.unwrap());
    }
    let client = reqwest::Client::new();
    let mut finals = HashMap::new();
    for t in topics {
        let doc = get_json_with(&client, format!("http://{addr}{}", topic_path(t))).await;
        finals.insert(t.to_string(), doc);
    }
    assert_eq!(finals["mayors-sp-sao-paulo"]["final"], true);
    assert_eq!(seen.len(), 6);
    for (i, client) in seen.iter().enumerate() {
        for t in topics {
            let (version, doc) = client
                .get(t)
                .unwrap_or_else(|| panic!("client {i} got {t}"));
            assert_eq!(doc, &finals[t], "client {i}, {t}");
            assert_eq!(*version, finals[t]["version"].as_u64().unwrap());
        }
    }
    // Several updates were delivered on the way, not only a final snapshot.
    let zones = get_json_with(
        &client,
        format!("http://{addr}/cities/zones-sp-sao-paulo.json"),
    )
    .await;
    assert!(
        zones["zones"].as_array().is_some_and(|z| z.len() > 10),
        "{zones}"
    );
}
