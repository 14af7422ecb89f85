//! `--source tse` cold start: the order of work puts every first fetch before any retry, and
//! mayors before councillors, so that an office missing everywhere (its files answering 404)
//! never keeps the other office's documents waiting.

mod common;
#[path = "tse/sim.rs"]
mod sim;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use apura::ingest::FeedArgs;
use apura::model::Office;
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
