//! The scaled deployment as it runs in production, as processes of the built binary: a private
//! redis-server, `apura simulate`, two `apura ingest --redis` and two `apura gateway --redis`,
//! with SSE and WebSocket clients on both gateways. Each test plays a short count night with one
//! incident mid-count (none; the leader killed; Redis lost for 10 s and back empty; a gateway
//! restarted) and ends when the count is over, checking that every client holds the documents
//! built from the simulator's final files, and that one ingest published at a time: every
//! cycle seen on the Redis channel has a higher version than the one before, and no document
//! was published twice unchanged. The last test checks `compose.yaml` and the `Dockerfile`
//! against the command line.
//!
//! The night is short (12–24 s, a new file every 500 ms) and small (205 municipalities: São
//! Paulo, four small capitals, Olho d'Água Grande and 200 towns), so that a debug build keeps
//! up with it on a shared machine. The four deployments run one after another.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apura::bus::redis::RedisBus;
use apura::bus::{Bus, BusEvent};
use apura::documents;
use apura::feed::municipalities::MunicipalityList;
use apura::feed::{consolidated, zones};
use apura::metrics::Metrics;
use apura::model::{Office, Race, TopicKind};
use common::process::{BIN, Process, args, free_addr, metric, scrape};
use common::redis::{GatewayProcess, RedisServer};
use common::{Sse, SseRead};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

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

    d.wait_until_finished().await;
    observer.wait_quiet().await;
    d.assert_clients_hold_the_final_documents(&clients).await;

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
    observer.assert_one_publisher_at_a_time();
    for c in &clients {
        c.assert_never_disconnected();
    }
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
    d.wait_until_finished().await;
    observer.wait_quiet().await;
    d.assert_clients_hold_the_final_documents(&clients).await;
    observer.assert_one_publisher_at_a_time();
    assert!(
        d.ingest_metric(standby, "apura_cycles_published_total")
            .await
            .unwrap()
            > 0.0
    );
    for c in &clients {
        c.assert_never_disconnected();
    }
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
                    .get(gw.url(&path_of(topic)))
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
    for c in &clients {
        c.assert_never_disconnected();
    }
    d.assert_ready_during_outage().await;
    // Every cycle sent before the outage has arrived by now.
    let before = observer.max_version();

    // Back, empty, on the same port. The ingest leads again and publishes everything again,
    // every document above every version from before.
    d.redis.spawn().await;
    let back = Instant::now();
    let probe = redis_bus(&d.redis).await;
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

    d.wait_until_finished().await;
    observer.wait_quiet().await;
    d.assert_clients_hold_the_final_documents(&clients).await;
    observer.assert_one_publisher_at_a_time();
    assert!(observer.resyncs() >= 1, "the observer lost Redis too");
    for c in &clients {
        c.assert_never_disconnected();
    }
    eprintln!("whole deployment: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_mid_count_is_ready_only_with_every_snapshot_loaded() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut d = Deployment::start("16s").await;
    let observer = d.observer.clone();
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
    let index: Value = d
        .http
        .get(d.gateways[0].url("/cities.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
            .get(restarted.url(&path_of(topic)))
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

    d.wait_until_finished().await;
    observer.wait_quiet().await;
    d.assert_clients_hold_the_final_documents(&clients).await;
    observer.assert_one_publisher_at_a_time();
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

#[test]
fn compose_and_dockerfile_use_only_options_the_command_line_has() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("compose.yaml")).unwrap();
    let services = compose_services(&compose);
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "gateway-a",
            "gateway-b",
            "ingest-a",
            "ingest-b",
            "lb",
            "redis",
            "simulate"
        ]
    );
    let mut helps: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut checked = 0;
    for (name, service) in &services {
        if !service.build {
            continue;
        }
        assert_eq!(service.image.as_deref(), Some("apura:latest"), "{name}");
        let (command, flags) = service
            .command
            .split_first()
            .unwrap_or_else(|| panic!("{name}: no command"));
        let help = helps
            .entry(command.clone())
            .or_insert_with(|| help_words(command));
        for flag in flags {
            let flag = flag.split('=').next().unwrap();
            if flag.starts_with("--") {
                assert!(help.contains(flag), "{name}: apura {command} has no {flag}");
                checked += 1;
            }
        }
        for (key, value) in &service.environment {
            assert!(key.starts_with("APURA_"), "{name}: {key} is not apura's");
            assert!(help.contains(key), "{name}: apura {command} reads no {key}");
            checked += 1;
            // Hosts named in URLs are services of this file.
            if let Some((_, rest)) = value.split_once("://") {
                let host = rest.split([':', '/']).next().unwrap();
                assert!(
                    services.contains_key(host),
                    "{name}: {key} names {host}, not a service"
                );
            }
        }
        // The health check asks the port the command listens on.
        let listen = ["APURA_LISTEN", "APURA_SIM_LISTEN", "APURA_METRICS_LISTEN"]
            .iter()
            .find_map(|k| service.environment.get(*k))
            .unwrap_or_else(|| panic!("{name}: listens nowhere"));
        let port = listen.rsplit(':').next().unwrap();
        let probe = service.healthcheck.join(" ");
        assert!(
            probe.contains(&format!("127.0.0.1:{port}/")),
            "{name}: health check {probe:?} is not on port {port}"
        );
    }
    assert!(checked >= 30, "only {checked} options checked");
    assert_eq!(services["ingest-a"].command, services["ingest-b"].command);
    assert_eq!(
        services["ingest-a"].environment,
        services["ingest-b"].environment
    );
    assert_eq!(
        services["gateway-a"].environment,
        services["gateway-b"].environment
    );
    assert_eq!(services["ingest-a"].command, ["ingest"]);
    assert_eq!(services["gateway-a"].command, ["gateway"]);

    // nginx sends traffic to both gateways, on the port they listen on.
    let nginx = std::fs::read_to_string(root.join("deploy/nginx.conf")).unwrap();
    for gw in ["gateway-a", "gateway-b"] {
        let port = services[gw].environment["APURA_LISTEN"]
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        assert!(
            nginx.contains(&format!("server {gw}:{port} ")),
            "nginx.conf has no upstream {gw}:{port}"
        );
    }
    assert!(compose.contains("file: ./deploy/nginx.conf"));

    // The image's defaults: its ENV and its health check speak to the default command.
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let cmd = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    let help = help_words(&cmd[0]);
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("APURA_"))
            .map(str::to_string)
            .collect()
    };
    let env_names = words(&dockerfile);
    assert!(env_names.len() >= 3, "{env_names:?}");
    for name in &env_names {
        assert!(
            help.contains(name),
            "Dockerfile: apura {} reads no {name}",
            cmd[0]
        );
    }
    for flag in &cmd[1..] {
        assert!(help.contains(flag.split('=').next().unwrap()), "{flag}");
    }
    assert!(dockerfile.contains("ENTRYPOINT [\"apura\"]"));
    assert!(dockerfile.contains("USER apura"));
    assert!(dockerfile.contains("HEALTHCHECK"));
}

// ---------------------------------------------------------------------------------------------
// The deployment.

struct IngestProcess {
    process: Process,
    metrics: SocketAddr,
}

/// Redis, the simulator, two ingests and two gateways, and an observer of the Redis channel.
struct Deployment {
    redis: RedisServer,
    observer: Observer,
    sim: Process,
    sim_addr: SocketAddr,
    ingests: Vec<IngestProcess>,
    gateways: Vec<GatewayProcess>,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Deployment {
    /// Start everything for a count of `duration`; ingest-a leads (it starts first and is
    /// leading before ingest-b starts). Returns once both gateways serve every followed topic.
    async fn start(duration: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start().await;
        let observer = Observer::start(&redis).await;
        let list = dir.path().join("municipalities.json");
        std::fs::write(&list, municipality_list().to_string()).unwrap();
        let sim_addr = free_addr();
        let sim = Process::spawn(
            dir.path(),
            "simulate",
            &args(&[
                "simulate",
                "--listen",
                &sim_addr.to_string(),
                "--duration",
                duration,
                "--interval",
                SIM_INTERVAL,
                "--municipalities",
                &list.display().to_string(),
            ]),
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut d = Deployment {
            redis,
            observer,
            sim,
            sim_addr,
            ingests: Vec::new(),
            gateways: Vec::new(),
            http,
            dir,
        };
        d.status().await;
        let a = d.spawn_ingest("ingest-a");
        d.ingests.push(a);
        d.wait_for("ingest-a to lead", async || {
            d.ingest_metric(0, "apura_ingest_leader").await == Some(1.0)
        })
        .await;
        let b = d.spawn_ingest("ingest-b");
        d.ingests.push(b);
        for name in ["gateway-a", "gateway-b"] {
            let gateway = d.spawn_gateway(name, free_addr());
            d.gateways.push(gateway);
        }
        for i in 0..2 {
            // Zone documents come with the first zone poll, a moment after the rest.
            d.wait_for("both gateways to serve every followed topic", async || {
                for topic in TOPICS {
                    let url = d.gateways[i].url(&path_of(topic));
                    match d.http.get(url).send().await {
                        Ok(r) if r.status() == 200 => {}
                        _ => return false,
                    }
                }
                true
            })
            .await;
        }
        d.wait_for("ingest-b to report standing by", async || {
            d.ingest_metric(1, "apura_ingest_leader").await == Some(0.0)
        })
        .await;
        d
    }

    fn sim_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim_addr)
    }

    fn spawn_ingest(&self, name: &str) -> IngestProcess {
        let metrics = free_addr();
        let process = Process::spawn(
            self.dir.path(),
            name,
            &args(&[
                "ingest",
                "--redis",
                &self.redis.url(),
                "--leader-ttl",
                &format!("{}ms", TTL.as_millis()),
                "--feed",
                &self.sim_url("/mayors.json"),
                "--councillors-feed",
                &self.sim_url("/councillors.json"),
                "--municipalities",
                &self.sim_url("/municipalities.json"),
                "--zones-url-template",
                &self.sim_url("/zones/zone-{uf}-{slug}.json"),
                "--interval",
                POLL,
                "--zones-interval",
                ZONES_POLL,
                "--metrics-listen",
                &metrics.to_string(),
            ]),
        );
        IngestProcess { process, metrics }
    }

    fn spawn_gateway(&self, name: &str, addr: SocketAddr) -> GatewayProcess {
        GatewayProcess::spawn(
            &self.redis,
            self.dir.path(),
            name,
            addr,
            &["--heartbeat", HEARTBEAT, "--drain", "500ms"],
        )
    }

    /// Poll `condition` until it holds; fail after [`PATIENCE`].
    async fn wait_for(&self, what: &str, mut condition: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition().await {
            assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The simulator's `/status`.
    async fn status(&self) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = self.http.get(self.sim_url("/status")).send().await
                && let Ok(v) = r.json::<Value>().await
            {
                return v;
            }
            assert!(Instant::now() < deadline, "the simulator does not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the count has reached `fraction` of its ticks.
    async fn wait_for_progress(&self, fraction: f64) {
        self.wait_for("the count to progress", async || {
            let s = self.status().await;
            s["tick"].as_f64().unwrap() >= fraction * s["ticks"].as_f64().unwrap()
        })
        .await;
    }

    async fn wait_until_finished(&self) {
        self.wait_for("the end of the count", async || {
            self.status().await["finished"] == true
        })
        .await;
    }

    /// A value from a Prometheus text page; `None` if the page does not answer.
    async fn metric(&self, addr: SocketAddr, name: &str) -> Option<f64> {
        metric(&scrape(&self.http, addr).await?, name)
    }

    async fn ingest_metric(&self, i: usize, name: &str) -> Option<f64> {
        self.metric(self.ingests[i].metrics, name).await
    }

    async fn gateway_metric(&self, i: usize, name: &str) -> Option<f64> {
        self.metric(self.gateways[i].addr, name).await
    }

    /// The ingest that says it leads; exactly one must, once a hand-over has settled (an old
    /// leader notices a lost lock at its next renewal, a third of the ttl later, and its
    /// publications are fenced meanwhile).
    async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        loop {
            let mut leading = Vec::new();
            for i in 0..self.ingests.len() {
                if self.ingest_metric(i, "apura_ingest_leader").await == Some(1.0) {
                    leading.push(i);
                }
            }
            if leading.len() == 1 {
                return leading[0];
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "leaders: {leading:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Topics in the Redis snapshot index.
    async fn redis_topics(&self) -> usize {
        let client = ::redis::Client::open(self.redis.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("HLEN")
            .arg("apura:topics")
            .query_async(&mut con)
            .await
            .unwrap()
    }

    /// A gateway that lost Redis still says ready: it serves what it holds.
    async fn assert_ready_during_outage(&self) {
        for gw in &self.gateways {
            let status = self.http.get(gw.url("/readyz")).send().await.unwrap();
            assert_eq!(status.status(), 200, "{} during the outage", gw.name);
        }
    }

    /// The documents of [`TOPICS`] built from the simulator's final files, as the ingest
    /// builds them, without `version` and `published_at`.
    async fn final_documents(&self) -> BTreeMap<String, Value> {
        let get = async |path: &str| -> bytes::Bytes {
            let resp = self.http.get(self.sim_url(path)).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            resp.bytes().await.unwrap()
        };
        let list =
            MunicipalityList::parse(&get("/municipalities.json").await, "municipalities.json")
                .unwrap();
        let feed = async |path: &str, office| -> HashMap<u32, Race> {
            let file = consolidated::parse(&get(path).await, path, office, &list).unwrap();
            assert!(file.finished, "{path} is the final file");
            file.races.into_iter().map(|r| (r.ibge, r)).collect()
        };
        let mayors = feed("/mayors.json", Office::Mayor).await;
        let councillors = feed("/councillors.json", Office::Councillor).await;
        let mut drafts = documents::rollups(&list, &mayors);
        for m in list.iter() {
            for (kind, races) in [
                (TopicKind::Mayors, &mayors),
                (TopicKind::Councillors, &councillors),
            ] {
                if TOPICS.contains(&m.topic(kind).as_str()) {
                    drafts.push(documents::city(m, &races[&m.ibge]));
                }
            }
            let zone_topic = m.topic(TopicKind::Zones);
            if TOPICS.contains(&zone_topic.as_str()) {
                let file = format!("zone-{}-{}.json", m.uf.to_ascii_lowercase(), m.slug);
                let z = zones::parse(&get(&format!("/zones/{file}")).await, &file).unwrap();
                assert!(z.finished, "{file} is final");
                drafts.push(documents::zones(m, &z));
            }
        }
        let expected: BTreeMap<String, Value> = drafts
            .into_iter()
            .filter(|d| TOPICS.contains(&d.topic.as_str()))
            .map(|d| (d.topic, serde_json::from_slice(&d.body).unwrap()))
            .collect();
        assert_eq!(expected.len(), TOPICS.len());
        expected
    }

    /// The end of the count: Redis, both gateways (GET) and every client hold the same latest
    /// document of every followed topic, and it is the one built from the final files.
    async fn assert_clients_hold_the_final_documents(&self, clients: &[Client]) {
        let expected = self.final_documents().await;
        let store: HashMap<String, Value> = redis_bus(&self.redis)
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
                let got: Value = self
                    .http
                    .get(gw.url(&path_of(topic)))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
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

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut processes = vec![&self.sim];
            processes.extend(self.ingests.iter().map(|i| &i.process));
            processes.extend(self.gateways.iter().map(|g| &g.process));
            for p in processes {
                eprintln!("----- {} (last lines)\n{}", p.name, p.log_tail(40));
            }
        }
    }
}

/// The municipalities played: São Paulo, four small capitals, Olho d'Água Grande (a slug with
/// an apostrophe) and 40 invented towns in each of five states.
fn municipality_list() -> Value {
    let mut list = serde_json::Map::new();
    for (code, name, uf) in [
        (3550308, "São Paulo", "SP"),
        (1721000, "Palmas", "TO"),
        (1400100, "Boa Vista", "RR"),
        (1200401, "Rio Branco", "AC"),
        (1600303, "Macapá", "AP"),
        (2705903, "Olho d'Água Grande", "AL"),
    ] {
        list.insert(code.to_string(), json!({"n": name, "e": uf}));
    }
    for (uf, prefix) in [("SP", 35), ("AL", 27), ("TO", 17), ("RR", 14), ("AC", 12)] {
        for i in 1..=40 {
            let code = prefix * 100_000 + 10 * i + 1;
            list.insert(
                code.to_string(),
                json!({"n": format!("Vila {uf} {i}"), "e": uf}),
            );
        }
    }
    Value::Object(list)
}

/// The GET path of a topic.
fn path_of(topic: &str) -> String {
    if topic == "brazil" {
        "/brazil.json".to_string()
    } else if let Some(uf) = topic.strip_prefix("state-") {
        format!("/states/{uf}.json")
    } else {
        format!("/cities/{topic}.json")
    }
}

/// A document without what publication stamps on it.
fn unstamped(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let map = doc.as_object_mut().unwrap();
    map.remove("version");
    map.remove("published_at");
    doc
}

async fn redis_bus(server: &RedisServer) -> RedisBus {
    RedisBus::connect(&server.url(), "apura", Arc::new(Metrics::default()))
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// What the test watches.

/// Every cycle on the Redis channel, as a gateway receives it. Clones share the log.
#[derive(Clone)]
struct Observer {
    log: Arc<Mutex<ObserverLog>>,
    _task: Arc<AbortOnDrop>,
}

/// Stops a task when the last handle goes.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Default)]
struct ObserverLog {
    cycles: usize,
    resyncs: usize,
    max_version: u64,
    last: Option<Instant>,
    /// Body of every topic as last seen, until a resync (cycles may have been missed).
    latest: HashMap<String, bytes::Bytes>,
    /// Topics listed by the latest `/cities.json` seen: a city never loses one.
    indexed: usize,
    problems: Vec<String>,
}

impl Observer {
    async fn start(server: &RedisServer) -> Observer {
        let bus = redis_bus(server).await;
        let mut events = bus.subscribe().await.unwrap();
        let log = Arc::new(Mutex::new(ObserverLog::default()));
        let l = log.clone();
        let task = tokio::spawn(async move {
            let _bus = bus;
            while let Some(event) = events.next().await {
                let mut log = l.lock().unwrap();
                match event {
                    BusEvent::Resync => {
                        log.resyncs += 1;
                        log.latest.clear();
                    }
                    BusEvent::Cycle(cycle) => log.record(&cycle),
                }
            }
        });
        Observer {
            log,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    fn cycles(&self) -> usize {
        self.log.lock().unwrap().cycles
    }

    fn resyncs(&self) -> usize {
        self.log.lock().unwrap().resyncs
    }

    fn max_version(&self) -> u64 {
        self.log.lock().unwrap().max_version
    }

    /// Wait until nothing has been published for [`QUIET`].
    async fn wait_quiet(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let last = self.log.lock().unwrap().last;
            if last.is_some_and(|t| t.elapsed() >= QUIET) {
                return;
            }
            assert!(Instant::now() < deadline, "publication never stopped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Versions strictly increasing, no document published twice unchanged, no index shrinking.
    fn assert_one_publisher_at_a_time(&self) {
        let log = self.log.lock().unwrap();
        assert!(log.cycles > 10, "only {} cycles seen", log.cycles);
        assert!(log.problems.is_empty(), "{:#?}", log.problems);
    }
}

impl ObserverLog {
    fn record(&mut self, cycle: &apura::bus::Cycle) {
        self.cycles += 1;
        self.last = Some(Instant::now());
        if cycle.version <= self.max_version {
            self.problems.push(format!(
                "cycle {} after cycle {}",
                cycle.version, self.max_version
            ));
        }
        self.max_version = self.max_version.max(cycle.version);
        for doc in &cycle.documents {
            let body = doc.content().expect("a stamped document");
            if self.latest.get(&*doc.topic) == Some(&body) {
                self.problems.push(format!(
                    "{} published again unchanged in cycle {}",
                    doc.topic, cycle.version
                ));
            }
            if &*doc.topic == "cities" {
                let index: Value = serde_json::from_slice(&doc.json).unwrap();
                let listed = index["cities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["topics"].as_array().unwrap().len())
                    .sum();
                if listed < self.indexed {
                    self.problems.push(format!(
                        "/cities.json went from {} topics to {listed} in cycle {}",
                        self.indexed, cycle.version
                    ));
                }
                self.indexed = listed;
            }
            self.latest.insert(doc.topic.to_string(), body);
        }
    }
}

/// Which ingest says it leads, every 200 ms.
struct LeaderWatch {
    samples: Arc<Mutex<Vec<[Option<bool>; 2]>>>,
    stop: tokio_util::sync::CancellationToken,
    task: JoinHandle<()>,
}

impl LeaderWatch {
    fn start(d: &Deployment) -> LeaderWatch {
        let addrs = [d.ingests[0].metrics, d.ingests[1].metrics];
        let http = d.http.clone();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (s, st) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.is_cancelled() {
                let mut sample = [None, None];
                for (i, addr) in addrs.iter().enumerate() {
                    let page = http.get(format!("http://{addr}/metrics")).send().await.ok();
                    if let Some(page) = page
                        && let Ok(text) = page.text().await
                    {
                        sample[i] = Some(text.contains("\napura_ingest_leader 1\n"));
                    }
                }
                s.lock().unwrap().push(sample);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        LeaderWatch {
            samples,
            stop,
            task,
        }
    }

    async fn stop(self) -> Vec<[Option<bool>; 2]> {
        self.stop.cancel();
        self.task.await.unwrap();
        self.samples.lock().unwrap().clone()
    }
}

/// A subscriber on a gateway, over SSE or WebSocket, that reconnects as a browser would
/// (SSE with `Last-Event-ID`, WebSocket with `since`) and records what it receives.
struct Client {
    name: String,
    gateway: usize,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    /// The latest document of each topic, stamped, as received.
    latest: HashMap<String, Value>,
    messages: usize,
    connects: usize,
    disconnects: usize,
    problems: Vec<String>,
}

impl Seen {
    fn record(&mut self, topic: &str, version: u64, doc: Value) {
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
    fn since(&self) -> u64 {
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
    async fn on_every_gateway(d: &Deployment) -> Vec<Client> {
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

    fn assert_never_disconnected(&self) {
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
const RECONNECT: Duration = Duration::from_millis(100);

async fn sse_client(addr: SocketAddr, seen: Arc<Mutex<Seen>>) {
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

async fn ws_client(addr: SocketAddr, seen: Arc<Mutex<Seen>>) {
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

// ---------------------------------------------------------------------------------------------
// compose.yaml and `--help`.

/// What the test reads of a compose service.
#[derive(Debug, Default)]
struct Service {
    image: Option<String>,
    build: bool,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    healthcheck: Vec<String>,
}

/// The services of compose.yaml, read line by line: this file's layout (two-space indents,
/// `command:` and `test:` as flow sequences, `environment:` as a map or a list).
fn compose_services(yaml: &str) -> BTreeMap<String, Service> {
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<String> = None;
    let mut section = String::new();
    for line in yaml.lines() {
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            in_services = text == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            let name = text.strip_suffix(':').expect("a service name").to_string();
            services.insert(name.clone(), Service::default());
            current = Some(name);
            continue;
        }
        let service = services.get_mut(current.as_ref().unwrap()).unwrap();
        let (key, value) = match text.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (text, ""),
        };
        if indent == 4 {
            section = key.to_string();
            match key {
                "image" => service.image = Some(value.to_string()),
                "build" => service.build = true,
                "command" => {
                    service.command = serde_json::from_str(value).expect("command: [..]");
                }
                _ => {}
            }
        } else if indent == 6 && section == "environment" {
            let (key, value) = match text.strip_prefix("- ") {
                Some(item) => item.split_once('=').unwrap_or((item, "")),
                None => (key, value),
            };
            service
                .environment
                .insert(key.to_string(), value.trim_matches('"').to_string());
        } else if indent == 6 && section == "healthcheck" && key == "test" {
            service.healthcheck = serde_json::from_str(value).expect("test: [..]");
        }
    }
    services
}

/// The flags (`--feed`) and environment variables (`APURA_FEED`) `apura <command> --help` lists.
fn help_words(command: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(BIN)
        .args([command, "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "apura {command} --help");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| w.starts_with("--") || w.starts_with("APURA_"))
        .map(str::to_string)
        .collect()
}
