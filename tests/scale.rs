//! The scaled deployment as it runs in production, as processes of the built binary: a private
//! redis-server, `apura simulate`, two `apura ingest --redis` and two `apura gateway --redis`,
//! with SSE and WebSocket clients on both gateways. Each test plays a short count night with one
//! incident mid-count (none; the leader killed; Redis lost for 10 s and back empty; a gateway
//! restarted) and ends when the count is over, checking that every client holds the documents
//! built from the simulator's final files, and that one ingest published at a time: every
//! cycle seen on the Redis channel has a higher version than the one before, and no document
//! was published twice unchanged.
//!
//! The night is short (12–24 s, a new file every 500 ms) and small (205 municipalities: São
//! Paulo, four small capitals, Olho d'Água Grande and 200 towns), so that a debug build keeps
//! up with it on a shared machine. The four deployments run one after another.

#[path = "scale/clients.rs"]
mod clients;
mod common;
#[path = "scale/deployment.rs"]
mod deployment;
#[path = "scale/leaders.rs"]
mod leaders;
#[path = "scale/observer.rs"]
mod observer;

use std::time::Duration;

use apura::bus::Bus;
use serde_json::Value;
use tokio::time::Instant;

use clients::Client;
use common::redis::bus;
use common::{get_json_with, topic_path};
use deployment::Deployment;
use leaders::LeaderWatch;

/// Leader lock ttl: renewed every 667 ms, so a dead leader is replaced within 2.67 s.
const TTL: Duration = Duration::from_secs(2);
/// A new set of feed files every 500 ms; the ingest polls every 300 ms, zone files every second.
const SIM_INTERVAL: &str = "500ms";
const POLL: &str = "300ms";
const ZONES_POLL: &str = "1s";
/// Streams carry a heartbeat every 2 s, also while Redis is away. A WebSocket client has a
/// whole interval to answer a ping.
const HEARTBEAT: &str = "2s";
/// Nothing published for this long after the last files: more than a zone poll and three feed
/// polls, so the count is over for the ingest too.
const QUIET: Duration = Duration::from_secs(3);
/// Patience for whatever should happen soon, on a slow and shared machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// How late, beyond the lock period, a takeover may be seen: process scheduling on a loaded
/// host, and the 50 ms between looks at the standby's metrics.
const TAKEOVER_MARGIN: Duration = Duration::from_millis(1_500);

/// The topics every client follows: the largest city's two races and its zones, a small town,
/// its state and the country.
const TOPICS: [&str; 6] = [
    "mayors-sp-sao-paulo",
    "councillors-sp-sao-paulo",
    "zones-sp-sao-paulo",
    "mayors-al-olho-d-agua-grande",
    "state-sp",
    "brazil",
];

/// One deployment at a time: each is a dozen processes, and the timing checks (takeover within
/// the lock period) should not measure the other tests.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingests_two_gateways_every_client_ends_with_the_final_documents() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let d = Deployment::start("12s").await;
    let observer = &d.observer;
    let leaders = LeaderWatch::start(&d);
    let clients = Client::on_every_gateway(&d).await;

    d.finish(&clients).await;

    let samples = leaders.stop().await;
    assert!(samples.len() > 20, "{} samples", samples.len());
    for s in &samples {
        assert_eq!(
            *s,
            [Some(true), Some(false)],
            "ingest-a leads throughout, ingest-b stands by"
        );
    }
    let mut published = Vec::new();
    for i in 0..2 {
        let n = d.ingest_metric(i, "apura_cycles_published_total").await;
        published.push(n.expect("ingest metrics") as u64);
    }
    let seen = observer.cycles();
    assert_eq!(published[1], 0, "the standby never published");
    assert_eq!(
        published[0], seen as u64,
        "every cycle the leader published reached the channel once"
    );
    Client::assert_none_disconnected(&clients);
    eprintln!("whole deployment: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_count_hands_over_within_the_lock_period() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut d = Deployment::start("16s").await;
    let observer = d.observer.clone();
    let clients = Client::on_every_gateway(&d).await;

    d.wait_for_progress(0.3).await;
    let leader = d.leader().await;
    let standby = 1 - leader;
    let before = observer.max_version();
    d.ingests[leader].process.kill().await;
    let killed = Instant::now();
    let deadline = killed + PATIENCE;
    while d.ingest_metric(standby, "apura_ingest_leader").await != Some(1.0) {
        assert!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed.elapsed();
    eprintln!("takeover in {took:?}");
    assert!(
        took <= TTL + TTL / 3 + TAKEOVER_MARGIN,
        "the standby took over {took:?} after the leader died (lock ttl {TTL:?})"
    );

    // Versions continue from where the dead leader stopped, and the count goes on.
    let deadline = Instant::now() + PATIENCE;
    while observer.max_version() <= before {
        assert!(
            Instant::now() < deadline,
            "nothing published after the takeover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.finish(&clients).await;
    assert!(
        d.ingest_metric(standby, "apura_cycles_published_total")
            .await
            .unwrap()
            > 0.0
    );
    Client::assert_none_disconnected(&clients);
    eprintln!("whole deployment: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_for_ten_seconds_and_back_empty_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut d = Deployment::start("28s").await;
    let observer = d.observer.clone();
    let clients = Client::on_every_gateway(&d).await;

    d.wait_for_progress(0.45).await;
    let topics = d.redis_topics().await;
    d.redis.stop();
    let outage = Instant::now();
    // Gateways keep answering GET from memory, and keep every stream open.
    let mut answered = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        for gw in &d.gateways {
            for topic in ["mayors-sp-sao-paulo", "brazil"] {
                let resp = d
                    .http
                    .get(gw.url(&topic_path(topic)))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{} during the outage: {e}", gw.name));
                assert_eq!(resp.status(), 200, "{} during the outage", gw.name);
                let doc: Value = resp.json().await.unwrap();
                assert_eq!(doc["topic"], topic);
            }
        }
        answered += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(answered >= 10, "{answered} rounds of GET in 10 s");
    Client::assert_none_disconnected(&clients);
    d.assert_ready_during_outage().await;
    // Every cycle sent before the outage has arrived by now.
    let before = observer.max_version();

    // Back, empty, on the same port. The ingest leads again and publishes everything again,
    // every document above every version from before.
    d.redis.spawn().await;
    let back = Instant::now();
    let probe = bus(&d.redis).await;
    let deadline = back + PATIENCE;
    loop {
        let snapshot = probe.snapshot().await.unwrap_or_default();
        let republished = snapshot.iter().filter(|doc| doc.version > before).count();
        if republished == topics {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{republished} of {topics} topics published again after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "store rebuilt {:?} after Redis came back, by ingest-{}",
        back.elapsed(),
        ["a", "b"][d.leader().await]
    );

    d.finish(&clients).await;
    assert!(observer.resyncs() >= 1, "the observer lost Redis too");
    Client::assert_none_disconnected(&clients);
    eprintln!("whole deployment: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_mid_count_is_ready_only_with_every_snapshot_loaded() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut d = Deployment::start("16s").await;
    let clients = Client::on_every_gateway(&d).await;

    d.wait_for_progress(0.3).await;
    let status = d.gateways[1].process.terminate().await;
    assert!(status.success(), "gateway-b stopped with {status}");
    d.gateways[1] = d.spawn_gateway("gateway-b", d.gateways[1].addr);

    // Until ready, the restarted gateway refuses connections or answers 503, for /readyz and
    // for documents alike (never a 404 for a topic it has not loaded yet).
    let restarted = &d.gateways[1];
    let deadline = Instant::now() + PATIENCE;
    let (mut refused, mut not_ready) = (0, 0);
    loop {
        assert!(Instant::now() < deadline, "gateway-b never became ready");
        // The document first: readiness never goes back, so a document served means ready.
        let doc = d
            .http
            .get(restarted.url("/cities/mayors-sp-sao-paulo.json"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        let ready = d
            .http
            .get(restarted.url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert!(
            matches!(
                (&doc, &ready),
                (Err(_), _) | (Ok(503), _) | (Ok(200), Ok(200))
            ),
            "document {doc:?} then /readyz {ready:?} while starting"
        );
        match ready {
            Err(_) => refused += 1,
            Ok(503) => not_ready += 1,
            Ok(200) => break,
            Ok(other) => panic!("/readyz answered {other} while starting"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // At the first 200, every topic in Redis is loaded.
    let held = d.gateway_metric(1, "apura_topics").await;
    let in_redis = d.redis_topics().await;
    eprintln!(
        "gateway-b ready: {refused} refused, {not_ready} not ready, then {held:?} topics, {in_redis} in Redis"
    );
    assert_eq!(held, Some(in_redis as f64));
    let index = get_json_with(&d.http, d.gateways[0].url("/cities.json")).await;
    let mut listed: Vec<String> = index["cities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["topics"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    listed.extend(["brazil".to_string(), "state-sp".to_string()]);
    assert!(listed.len() > 400, "{} topics listed", listed.len());
    for topic in &listed {
        let status = d
            .http
            .get(restarted.url(&topic_path(topic)))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{topic} on the restarted gateway");
    }
    assert_eq!(
        d.gateway_metric(1, "apura_topics").await,
        d.gateway_metric(0, "apura_topics").await
    );

    d.finish(&clients).await;
    for c in &clients {
        if c.gateway == 0 {
            c.assert_never_disconnected();
        } else {
            let seen = c.seen.lock().unwrap();
            assert!(
                seen.connects >= 2,
                "{} reconnected after the restart: {} connects",
                c.name,
                seen.connects
            );
        }
    }
    eprintln!("whole deployment: {:?}", started.elapsed());
}
