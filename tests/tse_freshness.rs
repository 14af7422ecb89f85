//! `--source tse` order of work. Cold start: every first fetch before any retry, and mayors
//! before councillors, so that an office missing everywhere (its files answering 404) never
//! keeps the other office's documents waiting. Peak: the cities the gateways' clients follow go
//! with the capitals, ahead of the sweep, and the sweep takes the oldest change first, so that
//! no city waits more than one sweep however busy the night.

mod common;
#[path = "tse/sim.rs"]
mod sim;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use apura::ingest::FeedArgs;
use apura::model::{Municipality, Office};
use apura::simulate::tse::ELECTION;
use apura::simulate::{ManualClock, MissingOffice, SimConfig, TseOptions};
use common::*;
use sim::*;

/// Acceptance 1, scaled: a cold start on a tree where every count is out and every councillor
/// file answers 404 serves every city's mayor document within the time the mayor files alone
/// take at the rate budget (plus the progress files and a margin), and the authority's block
/// never fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_serves_every_mayor_before_retrying_the_missing_councillor_files() {
    let clock = ManualClock::new();
    let config = SimConfig {
        tse: TseOptions {
            missing_office: Some(MissingOffice::Councillor),
            ..TseOptions::default()
        },
        ..tse_config(cut_list(20, &[]), Some(clock.clone()))
    };
    let sim = TseSim::start(config).await;
    clock.set(sim.sim.final_tick());
    let mut topics: HashSet<String> = sim
        .sim
        .tse_final()
        .iter()
        .filter(|r| r.office == Office::Mayor)
        .map(|r| {
            let m = sim.sim.municipalities().get(r.ibge).unwrap();
            m.topic(Office::Mayor.topic_kind())
        })
        .collect();
    let cities = topics.len();
    assert!(cities >= 250, "{cities} cities");
    // A low rate, so that the 404s of one cycle are due for a retry before the cold start ends.
    let rate = 20;
    let feed = FeedArgs {
        rate_limit: rate,
        ..sim.feed()
    };
    let started = Instant::now();
    let (addr, _stop) = start_embedded(feed).await;

    // The mayor files alone take cities / rate; the 27 progress files of each cycle (about 3 s
    // here), the start-up and a busy machine take a few seconds more.
    let deadline =
        Duration::from_secs_f64(cities as f64 / f64::from(rate)) + Duration::from_secs(15);
    let client = reqwest::Client::new();
    let patience = started + deadline * 4;
    while !topics.is_empty() && Instant::now() < patience {
        let mut served = Vec::new();
        for t in &topics {
            let r = client
                .get(format!("http://{addr}/cities/{t}.json"))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                served.push(t.clone());
            }
        }
        for t in served {
            topics.remove(&t);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    let status = sim.status().await;
    eprintln!(
        "cold start: {} of {cities} mayor documents served after {took:.1?} (deadline {deadline:?}); {} requests, {} 404, highest rate {}/s",
        cities - topics.len(),
        status["requests"],
        status["not_found"],
        status["max_rate"],
    );
    assert!(
        topics.is_empty() && took <= deadline,
        "{} of {cities} mayor documents served after {took:?}, not within {deadline:?}",
        cities - topics.len()
    );
    assert_eq!(status["blocked"], false, "{status}");
    assert_eq!(status["over_limit"], false, "{status}");
    assert_eq!(status["refused"], 0, "{status}");
    assert!(
        status["not_found"].as_u64().unwrap() > 0,
        "the councillor files were asked for and answered 404: {status}"
    );
}

/// The order of work of the peak tests: 40 requests/s, a cycle every 3 s (120 files, 60 of them
/// at most hot), on the capitals and every 40th town (about 330 files).
fn peak_feed(sim: &TseSim) -> FeedArgs {
    FeedArgs {
        rate_limit: 40,
        interval: Duration::from_secs(3),
        ..sim.feed()
    }
}

/// The towns (not capitals) of the simulated list.
fn towns(sim: &TseSim) -> Vec<Municipality> {
    sim.sim
        .municipalities()
        .iter()
        .filter(|m| !m.capital)
        .map(|m| (**m).clone())
        .collect()
}

/// Every served document of `office` of `cities`, waiting for each to be served.
async fn served(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    cities: &[Municipality],
    office: Office,
) -> HashMap<u32, serde_json::Value> {
    let mut docs = HashMap::new();
    for m in cities {
        let url = format!("http://{addr}/cities/{}.json", m.topic(office.topic_kind()));
        let doc = get_json_once_served(
            client,
            &url,
            Duration::from_millis(200),
            Duration::from_secs(120),
        )
        .await
        .unwrap_or_else(|| panic!("{url} never served"));
        docs.insert(m.ibge, doc);
    }
    docs
}

/// Whether the simulator rewrote the city's file of `cargo` (11 mayor, 13 councillor) between
/// two ticks.
fn rewritten(sim: &TseSim, m: &Municipality, cargo: u32, from: u64, to: u64) -> bool {
    let code = sim.sim.tse_code(m.ibge).expect("a city of the layout");
    sim.sim.unified_idg(ELECTION, code, cargo, None, from)
        != sim.sim.unified_idg(ELECTION, code, cargo, None, to)
}

/// Issue 13: a small town that clients follow is fetched with the capitals. Every file of the
/// night changes at once; the town with the smallest electorate, last in the sweep's order, has
/// a subscriber, and its new result reaches it before most other towns have theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_town_is_fetched_ahead_of_the_sweep() {
    let clock = ManualClock::new();
    let sim = TseSim::start(tse_config(cut_list(40, &[]), Some(clock.clone()))).await;
    // A tenth into the night: every city published, every count running.
    let early = sim.sim.last_tick() / 10;
    let last = sim.sim.final_tick();
    clock.set(early);
    let (addr, _stop) = start_embedded(peak_feed(&sim)).await;
    let client = reqwest::Client::new();
    let towns: Vec<Municipality> = towns(&sim)
        .into_iter()
        .filter(|m| rewritten(&sim, m, 11, early, last))
        .collect();
    let before = served(&client, addr, &towns, Office::Mayor).await;
    let electorate = |ibge: &u32| before[ibge]["totals"]["electorate"].as_u64().unwrap();
    let followed = towns
        .iter()
        .min_by_key(|m| (electorate(&m.ibge), m.ibge))
        .unwrap();
    let topic = followed.topic(Office::Mayor.topic_kind());
    let mut sse = Sse::connect(&format!("http://{addr}/events?topics={topic}"), None).await;
    let snapshot = sse
        .next(Duration::from_secs(10))
        .await
        .expect("the snapshot");
    assert_eq!(
        snapshot.data["source_time"],
        before[&followed.ibge]["source_time"]
    );
    // The gateway reports its audience every 5 s; the ingest reads it at the start of a cycle.
    tokio::time::sleep(Duration::from_secs(11)).await;

    clock.set(last);
    let patience = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ev = sse
            .next(patience - tokio::time::Instant::now())
            .await
            .expect("the followed town's new result within a minute");
        if ev.data["source_time"] != snapshot.data["source_time"] {
            break;
        }
    }
    let now = served(&client, addr, &towns, Office::Mayor).await;
    let ahead = towns
        .iter()
        .filter(|m| now[&m.ibge]["source_time"] != before[&m.ibge]["source_time"])
        .count();
    eprintln!(
        "{topic} (electorate {}) updated when {ahead} of {} towns had their new mayor result",
        electorate(&followed.ibge),
        towns.len()
    );
    assert!(
        ahead <= towns.len() / 2,
        "the followed town came after {ahead} of {} towns: it was not fetched ahead of the sweep",
        towns.len()
    );
    let status = sim.status().await;
    assert_eq!(status["blocked"], false, "{status}");
    assert_eq!(status["over_limit"], false, "{status}");
}

/// Issue 13: while every row keeps moving (each progress read shows new counts, the capitals
/// first in every cycle), every town's councillor file is still fetched within one sweep: the
/// sweep takes the oldest change first, so the largest cities' changes never take every turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_city_waits_more_than_a_sweep_while_every_row_moves() {
    let clock = ManualClock::new();
    let sim = TseSim::start(tse_config(cut_list(40, &[]), Some(clock.clone()))).await;
    let early = sim.sim.last_tick() / 10;
    clock.set(early);
    let (addr, _stop) = start_embedded(peak_feed(&sim)).await;
    let client = reqwest::Client::new();
    let towns = towns(&sim);
    let before = served(&client, addr, &towns, Office::Councillor).await;

    // About 330 files, of which up to 60 hot per cycle of 3-4 s: a sweep of the other ~280
    // takes 5 cycles, 20 s. A new tick every 1.5 s for 50 s, so that rows move all along;
    // every town whose file changed in the first 20 s must have been refreshed by the end.
    let started = Instant::now();
    let mut tick = early;
    let mut mid = early;
    while started.elapsed() < Duration::from_secs(50) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tick += 1;
        clock.set(tick);
        if started.elapsed() < Duration::from_secs(20) {
            mid = tick;
        }
    }
    let now = served(&client, addr, &towns, Office::Councillor).await;
    let moved: Vec<&Municipality> = towns
        .iter()
        .filter(|m| rewritten(&sim, m, 13, early, mid))
        .collect();
    assert!(
        moved.len() >= towns.len() / 2,
        "{} of {} towns moved",
        moved.len(),
        towns.len()
    );
    let stale: Vec<&str> = moved
        .iter()
        .filter(|m| now[&m.ibge]["source_time"] == before[&m.ibge]["source_time"])
        .map(|m| m.slug.as_str())
        .collect();
    eprintln!(
        "ticks {early}..{tick}: {} of {} towns' councillor files rewritten by tick {mid}, {} not refreshed",
        moved.len(),
        towns.len(),
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "never refreshed in the 30 s after: {stale:?}"
    );
    let status = sim.status().await;
    assert_eq!(status["blocked"], false, "{status}");
    assert_eq!(status["over_limit"], false, "{status}");
}
