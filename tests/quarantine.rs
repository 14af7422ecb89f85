//! Per-city quarantine on real-size national files (5,570 municipalities, as `apura simulate`
//! writes them): one bad city never freezes the others, and past `--max-invalid-share` the file
//! is rejected whole.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apura::bus::embedded::EmbeddedBus;
use apura::feed::consolidated;
use apura::fetch::Fetcher;
use apura::ingest::{FeedArgs, Ingest};
use apura::metrics::Metrics;
use apura::model::{Office, TopicKind};
use apura::simulate::{SimConfig, Simulator};
use common::process::{Process, free_addr, metric, run_command, scrape};
use common::*;
use futures_util::StreamExt;
use serde_json::Value;

/// São Paulo: a capital, so it is in `brazil.json`'s capitals too.
const BAD: u32 = 3550308;
const BAD_TOPIC: &str = "mayors-sp-sao-paulo";

/// The simulated night of every test here: 5,570 municipalities, 100 ticks.
async fn night() -> Arc<Simulator> {
    let config = SimConfig {
        seed: 11,
        duration: Duration::from_secs(100),
        interval: Duration::from_secs(1),
        ..SimConfig::default()
    };
    Arc::new(
        tokio::task::spawn_blocking(move || Simulator::new(config))
            .await
            .unwrap(),
    )
}

/// The first tick at which the national count reaches `percent`.
fn tick_at(sim: &Simulator, percent: f64) -> u64 {
    (0..=sim.last_tick())
        .find(|t| sim.national_percent(*t) >= percent)
        .unwrap()
}

/// `file` with the first candidate's votes of each city of `cities` made negative.
fn with_negative_votes(file: &[u8], cities: &[u32]) -> Vec<u8> {
    let mut text = String::from_utf8(file.to_vec()).unwrap();
    for ibge in cities {
        let key = format!("\"{ibge}\":{{");
        let at = text
            .find(&key)
            .unwrap_or_else(|| panic!("{ibge} not in the file"));
        let v = at + text[at..].find(r#"{"v":""#).unwrap() + r#"{"v":""#.len();
        text.insert(v, '-');
    }
    text.into_bytes()
}

/// Every mayor document the file should give, by topic, without `version` and `published_at`.
fn expected(sim: &Simulator, file: &[u8]) -> HashMap<String, Value> {
    let feed = consolidated::parse(file, "expected", Office::Mayor, sim.municipalities()).unwrap();
    feed.races
        .iter()
        .map(|race| {
            let m = sim.municipalities().get(race.ibge).unwrap();
            let body = apura::documents::city(m, race).body;
            (
                m.topic(TopicKind::Mayors),
                serde_json::from_slice(&body).unwrap(),
            )
        })
        .collect()
}

/// Every document of `topics` as served, 8 requests at a time.
async fn fetch_all(http: &reqwest::Client, addr: SocketAddr, topics: &[String]) -> Vec<Value> {
    futures_util::stream::iter(topics.iter().map(|t| {
        let url = format!("http://{addr}/cities/{t}.json");
        let http = http.clone();
        async move {
            let resp = http.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url}");
            resp.json::<Value>().await.unwrap()
        }
    }))
    .buffered(8)
    .collect()
    .await
}

fn without_stamp(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let o = doc.as_object_mut().unwrap();
    o.remove("version");
    o.remove("published_at");
    doc
}

async fn get(http: &reqwest::Client, addr: SocketAddr, path: &str) -> Value {
    http.get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Wait (bounded) until `brazil.json` has a version above `above`; answer it.
async fn next_brazil(http: &reqwest::Client, addr: SocketAddr, above: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let brazil = get(http, addr, "/brazil.json").await;
        if brazil["version"].as_u64().unwrap() > above {
            return brazil;
        }
        assert!(Instant::now() < deadline, "brazil.json did not change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every city but the bad one shows exactly the new file, published no later than the change
/// that moved the roll-ups (a large change goes out as several cycles that share its
/// `published_at`, the roll-ups first); the bad one shows `held_at` with a `held` marker.
/// Answers the bad city's `held`.
fn check_cycle(
    topics: &[String],
    docs: &[Value],
    want: &HashMap<String, Value>,
    held_at: &Value,
    change: i64,
) -> Value {
    let mut held = Value::Null;
    for (topic, doc) in topics.iter().zip(docs) {
        assert!(
            doc["published_at"].as_i64().unwrap() <= change,
            "{topic} published after the change of {change}"
        );
        let mut doc = without_stamp(doc);
        if topic == BAD_TOPIC {
            held = doc.as_object_mut().unwrap().remove("held").unwrap();
            assert_eq!(&doc, held_at, "the bad city keeps its last good document");
        } else {
            assert_eq!(&doc, &want[topic], "{topic} follows the new file");
        }
    }
    held
}

/// Acceptance: a national file with one city's votes made negative is taken for every other
/// city within one cycle; the bad city keeps its last good document, marked `held` (since when,
/// why), and the roll-ups count it so; once fixed, it follows and the marker goes. One log line
/// when it enters quarantine, one when it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_city_keeps_its_last_document_and_every_other_city_follows() {
    let sim = night().await;
    let (t17, t70, t95) = (
        tick_at(&sim, 17.0),
        tick_at(&sim, 70.0),
        tick_at(&sim, 95.0),
    );
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("mayors.json");
    let list = dir.path().join("municipalities.json");
    write_atomic(&list, &sim.render_municipalities());
    let first = sim.render_tick(t17, Office::Mayor);
    write_atomic(&feed, &first);
    let addr = free_addr();
    let (feed_path, list_path) = (feed.display().to_string(), list.display().to_string());
    let command = run_command(&feed_path, &list_path, "200ms", addr);
    let process = Process::spawn(dir.path(), "run", &command);
    wait_ready(addr).await;
    let http = reqwest::Client::new();
    let index = get(&http, addr, "/cities.json").await;
    let mut topics: Vec<String> = index["cities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["topics"].as_array().unwrap().iter())
        .filter_map(|t| t.as_str().filter(|t| t.starts_with("mayors-")))
        .map(str::to_string)
        .collect();
    topics.sort();
    let at17 = expected(&sim, &first);
    assert_eq!(topics.len(), at17.len(), "every city of the file published");
    eprintln!("{} mayor documents", topics.len());
    let brazil17 = next_brazil(&http, addr, 0).await;
    let docs = fetch_all(&http, addr, &topics).await;
    let kept = without_stamp(&docs[topics.iter().position(|t| t == BAD_TOPIC).unwrap()]);
    assert_eq!(kept, at17[BAD_TOPIC]);

    // 70 %, São Paulo's votes negative.
    let good70 = sim.render_tick(t70, Office::Mayor);
    write_atomic(&feed, &with_negative_votes(&good70, &[BAD]));
    let brazil = next_brazil(&http, addr, brazil17["version"].as_u64().unwrap()).await;
    let change = brazil["published_at"].as_i64().unwrap();
    let docs = fetch_all(&http, addr, &topics).await;
    let held = check_cycle(&topics, &docs, &expected(&sim, &good70), &kept, change);
    assert_eq!(held["reason"], "negative", "{held}");
    assert!(
        held["detail"]
            .as_str()
            .unwrap()
            .starts_with("municipios.3550308 (São Paulo): c[0]"),
        "{held}"
    );
    assert!(
        !held["detail"].as_str().unwrap().contains("mayors.json"),
        "no feed location in a public document"
    );
    let since = held["since"].as_str().unwrap().to_string();
    assert!(since.ends_with('Z') && since.len() == 20, "{since}");
    // The roll-ups moved, with São Paulo at its last good results, marked.
    assert!(
        brazil["progress"]["percent"].as_f64().unwrap()
            > brazil17["progress"]["percent"].as_f64().unwrap()
    );
    let capital = brazil["capitals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["uf"] == "SP")
        .unwrap();
    assert_eq!(capital["held"], true);
    assert_eq!(capital["percent"], kept["progress"]["percent"]);
    let sp = get(&http, addr, "/states/sp.json").await;
    let line = sp["cities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ibge"] == BAD)
        .unwrap();
    assert_eq!(line["held"], true);
    assert_eq!(
        sp["cities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.get("held").is_some())
            .count(),
        1
    );
    let text = scrape(&http, addr).await.unwrap();
    assert_eq!(metric(&text, "apura_quarantined_cities"), Some(1.0));
    assert_eq!(
        metric(&text, "apura_city_rejections_total{reason=\"negative\"}"),
        Some(1.0)
    );

    // 95 %, still broken: the others follow again, São Paulo is held since the same moment.
    let good95 = sim.render_tick(t95, Office::Mayor);
    write_atomic(&feed, &with_negative_votes(&good95, &[BAD]));
    let brazil = next_brazil(&http, addr, brazil["version"].as_u64().unwrap()).await;
    let change = brazil["published_at"].as_i64().unwrap();
    let docs = fetch_all(&http, addr, &topics).await;
    let still = check_cycle(&topics, &docs, &expected(&sim, &good95), &kept, change);
    assert_eq!(
        still, held,
        "held since the first bad file, for the same reason"
    );

    // Fixed: São Paulo follows, unmarked.
    write_atomic(&feed, &good95);
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = expected(&sim, &good95);
    loop {
        let doc = get(&http, addr, &format!("/cities/{BAD_TOPIC}.json")).await;
        if doc.get("held").is_none() {
            assert_eq!(without_stamp(&doc), want[BAD_TOPIC]);
            break;
        }
        assert!(Instant::now() < deadline, "São Paulo still held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let brazil = get(&http, addr, "/brazil.json").await;
    assert!(
        brazil["capitals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("held").is_none())
    );
    let text = scrape(&http, addr).await.unwrap();
    assert_eq!(metric(&text, "apura_quarantined_cities"), Some(0.0));
    assert_eq!(
        metric(&text, "apura_city_rejections_total{reason=\"negative\"}"),
        Some(2.0),
        "one per bad file"
    );
    let log = process.log_tail(100_000);
    assert_eq!(log.matches("city quarantined").count(), 1, "{log}");
    assert_eq!(log.matches("city out of quarantine").count(), 1, "{log}");
}

fn ingest_of(sim: &Simulator, feed: &std::path::Path, share: f64) -> (Ingest, Arc<Metrics>) {
    let args = FeedArgs {
        max_invalid_share: share,
        ..FeedArgs::consolidated(feed.display().to_string(), "unused")
    };
    let metrics = Arc::new(Metrics::default());
    let ingest = Ingest::new(
        Arc::new(sim.municipalities().clone()),
        &args,
        Fetcher::new(args.fetch_timeout, args.max_feed_bytes).unwrap(),
        Arc::new(EmbeddedBus::new()),
        metrics.clone(),
    );
    (ingest, metrics)
}

/// The limit of `--max-invalid-share` (5 % by default) at its edge: 278 bad cities of 5,568
/// (4.99 %) are quarantined and the file taken; 279 (5.01 %) reject the whole file, every
/// document kept. With the share at 0, one bad city rejects the file.
#[tokio::test]
async fn past_the_invalid_share_the_whole_file_is_rejected() {
    let sim = night().await;
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("mayors.json");
    let (t30, t60) = (tick_at(&sim, 30.0), tick_at(&sim, 60.0));
    let before = sim.render_tick(t30, Office::Mayor);
    let after = sim.render_tick(t60, Office::Mayor);
    let cities: Vec<u32> = consolidated::parse(&after, "f", Office::Mayor, sim.municipalities())
        .unwrap()
        .races
        .iter()
        .map(|r| r.ibge)
        .collect();
    assert_eq!(cities.len(), 5_568);
    let (mut ingest, metrics) = ingest_of(&sim, &feed, apura::ingest::DEFAULT_MAX_INVALID_SHARE);
    write_atomic(&feed, &before);
    assert!(ingest.poll().await.unwrap().cycle.is_some());
    let at30 = ingest.race(cities[0], Office::Mayor).cloned().unwrap();

    // 279 of 5,568: one over the limit. Nothing taken.
    write_atomic(&feed, &with_negative_votes(&after, &cities[..279]));
    let report = ingest.poll().await.unwrap();
    assert!(report.cycle.is_none(), "nothing published");
    let [error] = report.rejected.as_slice() else {
        panic!("{:?}", report.rejected)
    };
    assert!(
        error.contains("279 of 5568 cities invalid") && error.contains("--max-invalid-share 5"),
        "{error}"
    );
    assert_eq!(metrics.feed_errors("invalid"), 1);
    assert_eq!(ingest.race(cities[0], Office::Mayor), Some(&at30));
    assert_eq!(ingest.held(cities[0], Office::Mayor), None);
    assert_ne!(
        ingest.race(cities[300], Office::Mayor).unwrap().progress,
        consolidated::parse(&after, "f", Office::Mayor, sim.municipalities())
            .unwrap()
            .races[300]
            .progress,
        "a good city of a rejected file is not taken either"
    );

    // 278: at the limit. The file is taken; the 278 are held at their last good race.
    write_atomic(&feed, &with_negative_votes(&after, &cities[..278]));
    let report = ingest.poll().await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(report.cycle.is_some());
    assert_eq!(ingest.race(cities[0], Office::Mayor), Some(&at30));
    assert_eq!(
        ingest.held(cities[277], Office::Mayor).unwrap().reason,
        "negative"
    );
    assert_eq!(ingest.held(cities[278], Office::Mayor), None);
    assert_eq!(
        metrics
            .quarantined_cities
            .load(std::sync::atomic::Ordering::Relaxed),
        278
    );
    assert_eq!(metrics.city_rejections("negative"), 278);
    // The other 5,290 cities follow (those whose count moved), the 278 only gain the marker.
    let mayors = report
        .cycles
        .iter()
        .flat_map(|c| &c.documents)
        .filter(|d| d.topic.starts_with("mayors-"))
        .count();
    assert!(mayors > 5_000, "{mayors} mayor documents");

    // Share 0: one bad city is one too many.
    let (mut strict, _) = ingest_of(&sim, &feed, 0.0);
    write_atomic(&feed, &with_negative_votes(&after, &cities[..1]));
    let report = strict.poll().await.unwrap();
    assert!(report.cycle.is_none());
    assert!(report.rejected[0].contains("1 of 5568 cities invalid"));
}
