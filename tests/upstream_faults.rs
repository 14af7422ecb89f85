//! Upstream faults against the real binary: a municipality list and a feed down at start-up, a
//! feed file not found, a feed answering 500. The gateway serves from the first second, says
//! it is not ready until documents load, warns once per change, and asks a failing feed less
//! and less.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apura::bus::Bus;
use common::process::{Process, args, free_addr, metric, run_command, scrape, simulate_command};
use common::*;
use tokio_util::sync::CancellationToken;

async fn ready(http: &reqwest::Client, addr: SocketAddr) -> u16 {
    http.get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Wait (bounded) for `/readyz` to answer `want`.
async fn wait_readyz(http: &reqwest::Client, addr: SocketAddr, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while ready(http, addr).await != want {
        assert!(
            Instant::now() < deadline,
            "/readyz not {want} in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn feed_errors(text: &str, kind: &str) -> f64 {
    metric(text, &format!("apura_feed_errors_total{{kind=\"{kind}\"}}")).unwrap_or(0.0)
}

/// Acceptance: the municipality list and the feed are down when `apura run` starts (nothing
/// listens on their port) and come up 20 s later (the simulator, started late on that port).
/// The gateway answers from the first second, `/readyz` says 503 all along and 200 once the
/// documents load; no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_down_at_start_up_is_waited_for_while_the_gateway_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (sim_addr, addr) = (free_addr(), free_addr());
    let url = |path: &str| format!("http://{sim_addr}{path}");
    let started = Instant::now();
    let run = Process::spawn(
        dir.path(),
        "run",
        &args(&[
            "run",
            "--feed",
            &url("/mayors.json"),
            "--councillors-feed",
            &url("/councillors.json"),
            "--municipalities",
            &url("/municipalities.json"),
            "--interval",
            "1s",
            "--listen",
            &addr.to_string(),
        ]),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Up within the first second (two, on a busy machine), not ready.
    let deadline = started + Duration::from_secs(2);
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the gateway does not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("answering after {:?}", started.elapsed());
    // Not ready, every second of the 20 s; documents answer 503, never 404.
    while started.elapsed() < Duration::from_secs(20) {
        assert_eq!(ready(&http, addr).await, 503);
        let doc = http
            .get(format!("http://{addr}/cities/mayors-sp-sao-paulo.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(doc.status(), 503);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let text = scrape(&http, addr).await.unwrap();
    let attempts = feed_errors(&text, "startup");
    // 1 + 2 + 4 + 8 s of waits, then every 10 s: five or six attempts in 20 s.
    assert!((4.0..=7.0).contains(&attempts), "{attempts} attempts");

    let _sim = Process::spawn(
        dir.path(),
        "simulate",
        &simulate_command(sim_addr, "10m", "1s"),
    );
    let up = Instant::now();
    wait_readyz(&http, addr, 200, Duration::from_secs(40)).await;
    eprintln!("ready {:?} after the feed came up", up.elapsed());
    let doc = get_json(&format!("http://{addr}/cities/mayors-sp-sao-paulo.json")).await;
    assert_eq!(doc["city"]["slug"], "sao-paulo");
    let brazil = get_json(&format!("http://{addr}/brazil.json")).await;
    assert!(brazil["progress"]["cities_total"].as_u64().unwrap() > 5_000);
    let log = run.log_tail(1000);
    assert!(log.contains("cannot start the ingest yet"), "{log}");
    assert!(log.contains("ingest started"), "{log}");
}

/// A feed path that does not exist: one warning naming it, counted every poll, `/readyz` 503
/// until it is there; then served; gone again, one more warning and the documents stay.
#[tokio::test]
async fn a_missing_feed_file_is_warned_once_and_not_ready_until_it_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("mayors.json");
    let list = dir.path().join("municipalities.json");
    write_atomic(&list, municipalities_json(&cities()).as_bytes());
    let addr = free_addr();
    let (feed_path, list_path) = (feed.display().to_string(), list.display().to_string());
    let run = Process::spawn(
        dir.path(),
        "run",
        &run_command(&feed_path, &list_path, "100ms", addr),
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&http, addr).await.unwrap_or_default();
        if feed_errors(&text, "not_found") >= 5.0 {
            break;
        }
        assert!(Instant::now() < deadline, "not_found not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready(&http, addr).await, 503, "no document, not ready");
    let warned = |log: &str| log.matches("feed file not found").count();
    let log = run.log_tail(1000);
    assert_eq!(warned(&log), 1, "{log}");
    assert!(log.contains(&feed.display().to_string()), "named: {log}");

    write_atomic(&feed, feed_json(&cities()).as_bytes());
    wait_readyz(&http, addr, 200, Duration::from_secs(10)).await;
    let before = get_json(&format!("http://{addr}/cities/mayors-sp-sao-paulo.json")).await;
    assert_eq!(before["candidates"][0]["votes"], 600);

    std::fs::remove_file(&feed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while warned(&run.log_tail(1000)) < 2 {
        assert!(Instant::now() < deadline, "no warning when the file went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = run.log_tail(1000);
    assert_eq!(warned(&log), 2, "once per change: {log}");
    assert_eq!(log.matches("feed file found again").count(), 1, "{log}");
    assert_eq!(ready(&http, addr).await, 200);
    assert_eq!(
        get_json(&format!("http://{addr}/cities/mayors-sp-sao-paulo.json")).await,
        before,
        "the last documents stay"
    );
}

const NOT_FOUND: u8 = 0;
const FAILING: u8 = 1;
const GOOD: u8 = 2;

/// A test upstream: the municipality list, and `/mayors.json` answering 404, 500 or a file.
struct Upstream {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    body: Arc<Mutex<String>>,
    /// When each request for `/mayors.json` came.
    requests: Arc<Mutex<Vec<Instant>>>,
    shutdown: CancellationToken,
}

impl Upstream {
    async fn start() -> Upstream {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        let (mode, body, requests) = (
            Arc::new(AtomicU8::new(NOT_FOUND)),
            Arc::new(Mutex::new(feed_json(&cities()))),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (m, b, r) = (mode.clone(), body.clone(), requests.clone());
        let app = axum::Router::new()
            .route(
                "/municipalities.json",
                axum::routing::get(|| async { municipalities_json(&cities()) }),
            )
            .route(
                "/mayors.json",
                axum::routing::get(move || {
                    r.lock().unwrap().push(Instant::now());
                    let answer = match m.load(Relaxed) {
                        NOT_FOUND => StatusCode::NOT_FOUND.into_response(),
                        FAILING => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                        _ => b.lock().unwrap().clone().into_response(),
                    };
                    async move { answer }
                }),
            );
        let (addr, shutdown) = serve_app(app).await;
        Upstream {
            addr,
            mode,
            body,
            requests,
            shutdown,
        }
    }

    fn requests_since(&self, t: Instant) -> Vec<Instant> {
        let all = self.requests.lock().unwrap();
        all.iter().copied().filter(|r| *r >= t).collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A feed URL answering 404: warned once, not ready. Then a feed answering 500 for 5 s, polled
/// every 100 ms: asked again after 1, 2, then every 4 polls, one attempt each (three for the
/// first), not three attempts every poll; the documents stay; once it recovers, followed
/// within a few polls.
#[tokio::test]
async fn a_failing_feed_is_asked_less_and_less_and_followed_once_it_recovers() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let feed_url = format!("http://{}/mayors.json", up.addr);
    let list_url = format!("http://{}/municipalities.json", up.addr);
    let command = run_command(&feed_url, &list_url, "100ms", addr);
    let run = Process::spawn(dir.path(), "run", &command);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.requests.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "the feed is not polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready(&http, addr).await, 503);
    let log = run.log_tail(1000);
    assert_eq!(log.matches("feed file not found").count(), 1, "{log}");
    assert!(log.contains(&feed_url), "named: {log}");
    let text = scrape(&http, addr).await.unwrap();
    assert!(feed_errors(&text, "not_found") >= 4.0, "{text}");

    up.mode.store(GOOD, Relaxed);
    wait_readyz(&http, addr, 200, Duration::from_secs(10)).await;
    let before = get_json(&format!("http://{addr}/cities/mayors-sp-sao-paulo.json")).await;

    // 500 for 5 s: 50 polls.
    let failing = Instant::now();
    up.mode.store(FAILING, Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let asked = up.requests_since(failing);
    let text = scrape(&http, addr).await.unwrap();
    let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("500 for 5 s: {} requests, gaps {gaps:?}", asked.len());
    // Three attempts, then one at +1, +2, then every 4 polls (≥ 400 ms apart): about
    // 3 + 2 + 4300 / 400 ≈ 16. Without the back-off: three attempts every poll, 30 or more.
    assert!(
        (5..=20).contains(&asked.len()),
        "{} requests in 5 s",
        asked.len()
    );
    for gap in gaps.iter().skip(4) {
        assert!(
            *gap >= Duration::from_millis(300),
            "asked again after {gap:?}"
        );
    }
    assert!(feed_errors(&text, "http_status") >= 3.0);
    assert_eq!(ready(&http, addr).await, 200);
    assert_eq!(
        get_json(&format!("http://{addr}/cities/mayors-sp-sao-paulo.json")).await,
        before,
        "the documents stay"
    );

    // Back, with new results: followed within a back-off (4 polls) and a cycle.
    let mut next = cities();
    next[0] = next[0].clone().votes(&[650, 420], 12.0);
    *up.body.lock().unwrap() = feed_json(&next);
    up.mode.store(GOOD, Relaxed);
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    loop {
        let doc = get_json(&format!("http://{addr}/cities/mayors-sp-sao-paulo.json")).await;
        if doc["candidates"][0]["votes"] == 650 {
            break;
        }
        assert!(Instant::now() < deadline, "not followed after recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("followed {:?} after the feed recovered", back.elapsed());
    assert!(run.log_tail(1000).contains("feed file answers again"));
}

/// `apura ingest --redis` started while its municipality list is missing waits for it, the
/// attempts counted on its own `/metrics`, then leads and publishes: no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_on_redis_waits_for_its_municipality_list_then_publishes() {
    let server = common::redis::RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("mayors.json");
    let list = dir.path().join("municipalities.json");
    write_atomic(&feed, feed_json(&cities()).as_bytes());
    let metrics_addr = free_addr();
    let command = args(&[
        "ingest",
        "--redis",
        &server.url(),
        "--feed",
        &feed.display().to_string(),
        "--municipalities",
        &list.display().to_string(),
        "--interval",
        "200ms",
        "--metrics-listen",
        &metrics_addr.to_string(),
    ]);
    let ingest = Process::spawn(dir.path(), "ingest", &command);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(&http, metrics_addr).await.unwrap_or_default();
        if feed_errors(&text, "startup") >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no start-up attempt counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bus = common::redis::bus(&server).await;
    assert!(
        bus.snapshot().await.unwrap().is_empty(),
        "nothing published"
    );

    write_atomic(&list, municipalities_json(&cities()).as_bytes());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let docs = bus.snapshot().await.unwrap();
        if docs.iter().any(|d| &*d.topic == "mayors-sp-sao-paulo") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", ingest.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = ingest.log_tail(1000);
    assert!(log.contains("cannot start the ingest yet"), "{log}");
    assert!(log.contains("ingest started"), "{log}");
}
