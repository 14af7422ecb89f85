//! The TSE source when the authority's files go wrong: one city's file corrupt, the whole
//! authority down at start-up.

mod common;
#[path = "tse/sim.rs"]
mod sim;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apura::ingest::{FeedArgs, Ingest};
use apura::model::Office;
use apura::simulate::tse::{BASE_PATH, ELECTION};
use apura::simulate::{ManualClock, Simulator, serve_simulator};
use common::*;
use serde_json::Value;
use sim::*;
use tokio_util::sync::CancellationToken;

/// A proxy in front of the simulator: every request passed on (validators both ways), except
/// that while `corrupt` holds a fragment of a path, that file is served cut in half.
struct CorruptingProxy {
    addr: std::net::SocketAddr,
    corrupt: Arc<std::sync::Mutex<Option<String>>>,
    shutdown: CancellationToken,
}

impl CorruptingProxy {
    async fn start(upstream: std::net::SocketAddr) -> CorruptingProxy {
        use axum::http::{HeaderMap, StatusCode, Uri, header};
        use axum::response::IntoResponse;
        let corrupt: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let (c, http) = (corrupt.clone(), reqwest::Client::new());
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let (c, http) = (c.clone(), http.clone());
            async move {
                let mut req = http.get(format!("http://{upstream}{}", uri.path()));
                for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                    if let Some(v) = headers.get(&name) {
                        req = req.header(name, v);
                    }
                }
                let resp = req.send().await.unwrap();
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                let mut out = HeaderMap::new();
                for name in [header::ETAG, header::LAST_MODIFIED] {
                    if let Some(v) = resp.headers().get(&name) {
                        out.insert(name, v.clone());
                    }
                }
                let mut body = resp.bytes().await.unwrap();
                let cut = c
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|f| uri.path().contains(f.as_str()));
                if cut && status == StatusCode::OK {
                    body = body.slice(..body.len() / 2);
                }
                (status, out, body).into_response()
            }
        });
        let (addr, shutdown) = serve_app(app).await;
        CorruptingProxy {
            addr,
            corrupt,
            shutdown,
        }
    }

    fn corrupt(&self, fragment: Option<&str>) {
        *self.corrupt.lock().unwrap() = fragment.map(str::to_string);
    }
}

impl Drop for CorruptingProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Poll until nothing is left for a next cycle; answer what was rejected.
async fn sweep(ingest: &mut Ingest) -> Vec<String> {
    let mut rejected = Vec::new();
    for _ in 0..20 {
        rejected.extend(ingest.poll().await.unwrap().rejected);
        if ingest.tse_stats().unwrap().backlog == 0 {
            return rejected;
        }
    }
    panic!("still a backlog after 20 cycles");
}

/// Every current document, by topic.
fn current(ingest: &mut Ingest) -> HashMap<String, Value> {
    ingest
        .drafts()
        .into_iter()
        .map(|d| (d.topic, serde_json::from_slice(&d.body).unwrap()))
        .collect()
}

/// Acceptance: one city's file corrupt (cut in half) holds that city alone. Never valid yet,
/// it is not published while every other city is; valid, it is; corrupt again, its last good
/// document stays, marked `held`, while the others follow; valid again, the marker goes.
#[tokio::test]
async fn a_corrupt_city_file_holds_that_city_alone() {
    let clock = ManualClock::new();
    let sim = TseSim::start(tse_config(cut_list(400, &[]), Some(clock.clone()))).await;
    let proxy = CorruptingProxy::start(sim.addr).await;
    let mid = sim.sim.last_tick() / 3;
    clock.set(mid);
    let rio = 3304557;
    let topic = "mayors-rj-rio-de-janeiro";
    let mut ingest = ingest(&FeedArgs::tse(
        format!("http://{}{BASE_PATH}", proxy.addr),
        ELECTION,
    ))
    .await;
    let code = ingest
        .municipalities()
        .get(rio)
        .unwrap()
        .tse
        .clone()
        .unwrap();
    let fragment = format!("/rj{code:0>5}-c0011-");
    proxy.corrupt(Some(&fragment));

    let rejected = sweep(&mut ingest).await;
    assert!(
        rejected.len() == 1 && rejected[0].contains(&fragment),
        "{rejected:?}"
    );
    let docs = current(&mut ingest);
    let count = |prefix: &str| docs.keys().filter(|t| t.starts_with(prefix)).count();
    assert!(!docs.contains_key(topic), "never valid: not published");
    assert!(docs.contains_key("councillors-rj-rio-de-janeiro"));
    assert_eq!(
        count("mayors-"),
        count("councillors-") - 1,
        "every other city"
    );
    assert!(count("mayors-") > 30);
    assert_eq!(ingest.held(rio, Office::Mayor).unwrap().reason, "malformed");
    let brazil = &docs["brazil"];
    assert!(
        brazil["capitals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["uf"] != "RJ"),
        "not in the roll-ups either"
    );

    // Valid again: published, unmarked. (A tick later its row moves and it is fetched again.)
    proxy.corrupt(None);
    let mut tick = mid;
    let mut published = None;
    for _ in 0..5 {
        tick += 1;
        clock.set(tick);
        assert!(sweep(&mut ingest).await.is_empty());
        if let Some(doc) = current(&mut ingest).remove(topic) {
            published = Some(doc);
            break;
        }
    }
    let good = published.expect("Rio published once valid");
    assert!(good.get("held").is_none(), "{good}");
    assert_eq!(ingest.held(rio, Office::Mayor), None);
    let before = current(&mut ingest);

    // Corrupt again: the last good document stays, marked; the others move on.
    proxy.corrupt(Some(&fragment));
    for _ in 0..5 {
        tick += 1;
        clock.set(tick);
        sweep(&mut ingest).await;
        if ingest.held(rio, Office::Mayor).is_some() {
            break;
        }
    }
    let docs = current(&mut ingest);
    let mut held = docs[topic].clone();
    let marker = held
        .as_object_mut()
        .unwrap()
        .remove("held")
        .expect("marked");
    assert_eq!(held, good, "the last good document");
    assert_eq!(marker["reason"], "malformed");
    assert!(
        marker["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let moved = docs
        .iter()
        .filter(|(t, d)| t.starts_with("mayors-") && *t != topic && before.get(*t) != Some(d))
        .count();
    assert!(moved > 1, "the other cities follow: {moved} moved");

    // Valid again: the marker goes.
    proxy.corrupt(None);
    for _ in 0..5 {
        tick += 1;
        clock.set(tick);
        sweep(&mut ingest).await;
        if ingest.held(rio, Office::Mayor).is_none() {
            break;
        }
    }
    let doc = current(&mut ingest).remove(topic).unwrap();
    assert!(doc.get("held").is_none(), "{doc}");
    assert_ne!(doc["progress"], good["progress"], "Rio follows the count");
}

/// Start-up with the authority down: `apura run --source tse`'s pipeline serves at once, not
/// ready, loads the municipality configuration again until the simulator is up (3 s later),
/// then publishes; no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tse_source_down_at_start_up_is_waited_for() {
    let addr = common::process::free_addr();
    let feed = FeedArgs {
        interval: Duration::from_millis(500),
        ..FeedArgs::tse(format!("http://{addr}{BASE_PATH}"), ELECTION)
    };
    let (gateway, _stop) = start_embedded(feed).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(status(&format!("http://{gateway}/readyz")).await, 503);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let clock = ManualClock::new();
    let config = tse_config(cut_list(400, &["SP"]), Some(clock.clone()));
    let sim = Arc::new(
        tokio::task::spawn_blocking(move || Simulator::new(config))
            .await
            .unwrap(),
    );
    clock.set(sim.last_tick() / 3);
    let sim_stop = CancellationToken::new();
    let _sim_stop = sim_stop.clone().drop_guard();
    tokio::spawn(serve_simulator(
        sim,
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        sim_stop,
    ));
    wait_ready(gateway).await;
    let doc = get_json(&format!("http://{gateway}/cities/mayors-sp-sao-paulo.json")).await;
    assert_eq!(doc["city"]["slug"], "sao-paulo");
}
