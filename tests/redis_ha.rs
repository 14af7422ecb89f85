//! Redis as newsrooms deploy it, on real servers started here: over TLS (`rediss://`, trusting a
//! CA made by the test), and under Redis Sentinel, where the primary is killed mid-count and the
//! ingest and the gateway follow the replica Sentinel promotes. A simulated count publishes all
//! along, and a client streaming over SSE ends with the documents GET answers.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{Process, free_addr, simulate_command};
use common::redis::{GatewayProcess, RedisServer, RedisUrl, Sentinel, ingest_command};
use common::{Sse, SseRead, get_status_json, topic_path, wait_ready};
use serde_json::Value;
use tokio::time::Instant;

/// What the streaming client follows.
const TOPICS: [&str; 3] = ["brazil", "state-sp", "mayors-sp-sao-paulo"];

/// A simulated count, an `apura ingest` and an `apura gateway` on one Redis, and a client
/// streaming [`TOPICS`] from the gateway.
struct Night {
    sim: std::net::SocketAddr,
    _simulate: Process,
    ingest: Process,
    gateway: GatewayProcess,
    /// The latest document of each topic the client received.
    latest: Arc<Mutex<HashMap<String, Value>>>,
    /// Whether the server ended the client's stream.
    ended: Arc<AtomicBool>,
}

impl Night {
    /// A count of `duration`; `redis` are the options the ingest and the gateway get.
    async fn start(dir: &Path, server: &impl RedisUrl, redis: &[&str], duration: &str) -> Night {
        let sim = free_addr();
        let simulate = Process::spawn(dir, "simulate", &simulate_command(sim, duration, "1s"));
        let mut extra = vec!["--interval", "500ms"];
        extra.extend(redis);
        let ingest = Process::spawn(
            dir,
            "ingest",
            &ingest_command(
                server,
                &format!("http://{sim}/mayors.json"),
                &format!("http://{sim}/municipalities.json"),
                &extra,
            ),
        );
        let gateway = GatewayProcess::spawn(server, dir, "gateway", free_addr(), redis);
        wait_ready(gateway.addr).await;
        let url = gateway.url(&format!("/events?topics={}", TOPICS.join(",")));
        let mut sse = Sse::connect(&url, None).await;
        let latest: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let ended = Arc::new(AtomicBool::new(false));
        let (l, e) = (Arc::clone(&latest), ended.clone());
        tokio::spawn(async move {
            loop {
                match sse.read(Duration::from_secs(60)).await {
                    SseRead::Event(ev) => {
                        let topic = ev.data["topic"].as_str().unwrap().to_string();
                        l.lock().unwrap().insert(topic, ev.data);
                    }
                    SseRead::Idle => {}
                    SseRead::Ended => return e.store(true, Relaxed),
                }
            }
        });
        Night {
            sim,
            _simulate: simulate,
            ingest,
            gateway,
            latest,
            ended,
        }
    }

    /// What GET answers for `topic`.
    async fn get(&self, topic: &str) -> Value {
        let path = topic_path(topic);
        let (status, doc) = get_status_json(&self.gateway.url(&path)).await;
        assert_eq!(status, 200, "GET {path}");
        doc
    }

    async fn version(&self) -> u64 {
        self.get("brazil").await["version"].as_u64().unwrap()
    }

    /// Wait (bounded) until the gateway's `brazil` passes `version`; answers the new version.
    async fn passes(&self, version: u64, within: Duration, what: &str) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let now = self.version().await;
            if now > version {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no version above {version} in {within:?}\ningest:\n{}\ngateway:\n{}",
                self.ingest.log_tail(20),
                self.gateway.process.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait (bounded) for the end of the count and its last publication, then for the client to
    /// hold what GET answers, which is what `store` holds; answers GET's documents.
    async fn finish(&self, store: &RedisServer) -> HashMap<&'static str, Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = get_status_json(&format!("http://{}/status", self.sim)).await;
            if status.1["finished"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "the count did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The last files are published within a poll or two: wait for 3 s without a change.
        let (mut last, mut since) = (self.version().await, Instant::now());
        while since.elapsed() < Duration::from_secs(3) {
            assert!(Instant::now() < deadline, "the gateway never settled");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.version().await;
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        let mut got = HashMap::new();
        for topic in TOPICS {
            got.insert(topic, self.get(topic).await);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let streamed = self.latest.lock().unwrap().clone();
            if TOPICS.iter().all(|t| streamed.get(*t) == got.get(t)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the client's documents differ from GET's: {:?}",
                TOPICS
                    .iter()
                    .map(|t| (t, streamed.get(*t).map(|d| &d["version"])))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!self.ended.load(Relaxed), "the client's stream stayed open");
        for topic in TOPICS {
            let kept = stored(store, topic).await;
            assert_eq!(kept.as_ref(), got.get(topic), "{topic} in Redis");
        }
        got
    }
}

/// The document of `topic` as `server` stores it.
async fn stored(server: &RedisServer, topic: &str) -> Option<Value> {
    let json: String = server
        .query(::redis::cmd("GET").arg(format!("apura:doc:{topic}")))
        .await?;
    serde_json::from_str(&json).ok()
}

/// `rediss://` to a redis-server that speaks TLS only, its certificate signed by a CA the test
/// made: with `--redis-ca-file` naming that CA, the ingest publishes the count and the gateway
/// serves it; without it, the gateway refuses the certificate and stays not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_over_tls_reaches_the_client_as_get_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start_tls().await;
    assert!(server.url().starts_with("rediss://127.0.0.1:"));
    let ca = server.ca_file();
    let night = Night::start(dir.path(), &server, &["--redis-ca-file", &ca], "15s").await;
    let first = night.version().await;
    night
        .passes(first, Duration::from_secs(30), "over TLS")
        .await;
    let got = night.finish(&server).await;
    let counted = got["brazil"]["progress"]["percent"].as_f64();
    eprintln!(
        "over TLS: versions {first} → {}, counted {counted:?}",
        got["brazil"]["version"]
    );

    // Without the CA, the system's roots do not know this certificate.
    let untrusting = GatewayProcess::spawn(&server, dir.path(), "untrusting", free_addr(), &[]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(untrusting.url("/readyz")).send().await {
            assert_eq!(r.status(), 503, "ready without trusting the server");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = untrusting.process.log_tail(50);
    let refused = log.lines().find(|l| l.contains("UnknownIssuer"));
    assert!(refused.is_some(), "the certificate was not refused:\n{log}");
    eprintln!("without the CA: {}", refused.unwrap());
}

/// `redis+sentinel://` with a primary, a replica and one sentinel: mid-count the primary is
/// killed; Sentinel promotes the replica; the ingest leader and the gateway follow it, the count
/// goes on with new versions written to the new primary, and the client streaming through it
/// all ends with GET's documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_goes_on_when_sentinel_promotes_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut primary = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&primary).await;
    let sentinel = Sentinel::start(&primary, 1).await;
    assert!(
        sentinel
            .redis_url()
            .starts_with("redis+sentinel://127.0.0.1:")
    );
    let night = Night::start(dir.path(), &sentinel, &[], "40s").await;

    // The count is under way through the primary.
    let started = night.version().await;
    let before = night
        .passes(started, Duration::from_secs(30), "before the failover")
        .await;
    primary.stop();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while sentinel.primary_port().await != Some(replica.port) {
        assert!(Instant::now() < deadline, "Sentinel promoted no replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = killed.elapsed();

    // New versions are written to the promoted replica and reach the gateway.
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = loop {
        let version = stored(&replica, "brazil")
            .await
            .map(|d| d["version"].clone());
        if let Some(v) = version.and_then(|v| v.as_u64()).filter(|v| *v > before) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "nothing new written to the new primary\ningest:\n{}",
            night.ingest.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let followed = night
        .passes(written - 1, Duration::from_secs(30), "after the failover")
        .await;
    eprintln!(
        "primary killed at version {before}: replica promoted after {promoted:?}, version \
         {followed} served {:?} after the kill",
        killed.elapsed()
    );

    let got = night.finish(&replica).await;
    assert!(got["brazil"]["version"].as_u64().unwrap() > before);
    for (name, log) in [
        ("ingest", night.ingest.log_tail(1000)),
        ("gateway", night.gateway.process.log_tail(1000)),
    ] {
        assert!(
            log.contains("the Redis primary changed"),
            "{name} did not follow the failover:\n{log}"
        );
    }
    // The leader took the new primary's store as its reference, in a new term.
    let log = night.ingest.log_tail(1000);
    let changed = log.find("the Redis primary changed").unwrap();
    assert!(
        log[changed..].contains("leading: continuing from the store"),
        "{log}"
    );
    if let Some(ended) = log[changed..].lines().find(|l| l.contains("leader term")) {
        eprintln!("ingest: {ended}");
    }
}
