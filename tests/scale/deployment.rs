//! The deployment of the scale tests: Redis, the simulator, two ingests and two gateways as
//! processes, and what the test asks of them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use apura::documents;
use apura::feed::municipalities::MunicipalityList;
use apura::feed::{consolidated, zones};
use apura::model::{Office, Race, TopicKind};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::observer::Observer;
use super::{HEARTBEAT, PATIENCE, POLL, SIM_INTERVAL, TOPICS, TTL, ZONES_POLL};
use crate::common::process::{Process, args, free_addr, metric, scrape, simulate_command};
use crate::common::redis::{GatewayProcess, RedisServer};
use crate::common::topic_path;

pub(crate) struct IngestProcess {
    pub(crate) process: Process,
    pub(crate) metrics: SocketAddr,
}

/// Redis, the simulator, two ingests and two gateways, and an observer of the Redis channel.
pub(crate) struct Deployment {
    pub(crate) redis: RedisServer,
    pub(crate) observer: Observer,
    pub(crate) sim: Process,
    pub(crate) sim_addr: SocketAddr,
    pub(crate) ingests: Vec<IngestProcess>,
    pub(crate) gateways: Vec<GatewayProcess>,
    pub(crate) http: reqwest::Client,
    pub(crate) dir: tempfile::TempDir,
}

impl Deployment {
    /// Start everything for a count of `duration`; ingest-a leads (it starts first and is
    /// leading before ingest-b starts). Returns once both gateways serve every followed topic.
    pub(crate) async fn start(duration: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start().await;
        let observer = Observer::start(&redis).await;
        let list = dir.path().join("municipalities.json");
        std::fs::write(&list, municipality_list().to_string()).unwrap();
        let sim_addr = free_addr();
        let mut command = simulate_command(sim_addr, duration, SIM_INTERVAL);
        command.extend(args(&["--municipalities", &list.display().to_string()]));
        let sim = Process::spawn(dir.path(), "simulate", &command);
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
                    let url = d.gateways[i].url(&topic_path(topic));
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

    pub(crate) fn sim_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim_addr)
    }

    pub(crate) fn spawn_ingest(&self, name: &str) -> IngestProcess {
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

    pub(crate) fn spawn_gateway(&self, name: &str, addr: SocketAddr) -> GatewayProcess {
        GatewayProcess::spawn(
            &self.redis,
            self.dir.path(),
            name,
            addr,
            &["--heartbeat", HEARTBEAT, "--drain", "500ms"],
        )
    }

    /// Poll `condition` until it holds; fail after [`PATIENCE`].
    pub(crate) async fn wait_for(&self, what: &str, mut condition: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition().await {
            assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The simulator's `/status`.
    pub(crate) async fn status(&self) -> Value {
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
    pub(crate) async fn wait_for_progress(&self, fraction: f64) {
        self.wait_for("the count to progress", async || {
            let s = self.status().await;
            s["tick"].as_f64().unwrap() >= fraction * s["ticks"].as_f64().unwrap()
        })
        .await;
    }

    pub(crate) async fn wait_until_finished(&self) {
        self.wait_for("the end of the count", async || {
            self.status().await["finished"] == true
        })
        .await;
    }

    /// A value from a Prometheus text page; `None` if the page does not answer.
    pub(crate) async fn metric(&self, addr: SocketAddr, name: &str) -> Option<f64> {
        metric(&scrape(&self.http, addr).await?, name)
    }

    pub(crate) async fn ingest_metric(&self, i: usize, name: &str) -> Option<f64> {
        self.metric(self.ingests[i].metrics, name).await
    }

    pub(crate) async fn gateway_metric(&self, i: usize, name: &str) -> Option<f64> {
        self.metric(self.gateways[i].addr, name).await
    }

    /// The ingest that says it leads; exactly one must, once a hand-over has settled (an old
    /// leader notices a lost lock at its next renewal, a third of the ttl later, and its
    /// publications are fenced meanwhile).
    pub(crate) async fn leader(&self) -> usize {
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
    pub(crate) async fn redis_topics(&self) -> usize {
        let client = ::redis::Client::open(self.redis.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("HLEN")
            .arg("apura:topics")
            .query_async(&mut con)
            .await
            .unwrap()
    }

    /// A gateway that lost Redis still says ready: it serves what it holds.
    pub(crate) async fn assert_ready_during_outage(&self) {
        for gw in &self.gateways {
            let status = self.http.get(gw.url("/readyz")).send().await.unwrap();
            assert_eq!(status.status(), 200, "{} during the outage", gw.name);
        }
    }

    /// The documents of [`TOPICS`] built from the simulator's final files, as the ingest
    /// builds them, without `version` and `published_at`.
    pub(crate) async fn final_documents(&self) -> BTreeMap<String, Value> {
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
        let mut drafts = documents::rollups(&list, &mayors, documents::DataSource::Consolidated);
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
pub(crate) fn municipality_list() -> Value {
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

/// A document without what publication stamps on it.
pub(crate) fn unstamped(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let map = doc.as_object_mut().unwrap();
    map.remove("version");
    map.remove("published_at");
    doc
}
