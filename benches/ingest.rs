//! Ingest benchmark: parse, slice and diff one national consolidated file of 5,570 cities.
//!
//! `cargo bench --bench ingest` — prints the file size, the documents that changed and the
//! median / p90 / min time of parse + slice + diff over 21 runs, for a mid-count cycle (every
//! city moved since the previous file) and for an unchanged file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apura::bus::embedded::EmbeddedBus;
use apura::feed::consolidated;
use apura::fetch::{DEFAULT_MAX_BYTES, Fetcher};
use apura::ingest::{FeedArgs, Ingest};
use apura::metrics::Metrics;
use apura::model::Office;
use apura::simulate::{SimConfig, Simulator};

const RUNS: usize = 21;

fn main() {
    let sim = Simulator::new(SimConfig {
        seed: 2026,
        duration: Duration::from_secs(600),
        interval: Duration::from_secs(10),
        municipalities: None,
    });
    let list = Arc::new(sim.municipalities().clone());
    let mid = sim.last_tick() / 2;
    let before = sim.render_tick(mid - 1, Office::Mayor);
    let after = sim.render_tick(mid, Office::Mayor);
    let args = FeedArgs {
        feed: "unused".into(),
        councillors_feed: None,
        municipalities: "unused".into(),
        zones_url_template: None,
        interval: Duration::from_secs(10),
        zones_interval: Duration::from_secs(60),
        fetch_timeout: Duration::from_secs(10),
        max_feed_bytes: DEFAULT_MAX_BYTES,
    };
    let fetcher = Fetcher::new(Duration::from_secs(1), DEFAULT_MAX_BYTES).unwrap();
    let mut ingest = Ingest::new(
        list.clone(),
        &args,
        fetcher,
        Arc::new(EmbeddedBus::new()),
        Arc::new(Metrics::default()),
    );
    println!(
        "municipalities: {}, mayors file: {:.2} MB (tick {mid} of {})",
        list.len(),
        after.len() as f64 / 1e6,
        sim.last_tick()
    );
    for (label, next) in [("changed cycle", &after), ("unchanged cycle", &before)] {
        let mut times = Vec::with_capacity(RUNS);
        let mut changed = 0;
        for _ in 0..RUNS {
            // Reference state: the previous file, published.
            ingest.accept(consolidated::parse(&before, "before", Office::Mayor, &list).unwrap());
            let reference = ingest.changed();
            ingest.mark_published(&reference);

            let t = Instant::now();
            let feed = consolidated::parse(next, "bench", Office::Mayor, &list).unwrap();
            let parsed = t.elapsed();
            ingest.accept(feed);
            let accepted = t.elapsed();
            let drafts = ingest.changed();
            times.push(t.elapsed());
            if std::env::var_os("APURA_BENCH_SPLIT").is_some() {
                eprintln!(
                    "parse {parsed:?} accept {:?} slice+diff {:?}",
                    accepted - parsed,
                    t.elapsed() - accepted
                );
            }
            changed = drafts.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{label}: parse+slice+diff median {:.1} ms, p90 {:.1} ms, min {:.1} ms; {changed} documents changed",
            ms(times[RUNS / 2]),
            ms(times[RUNS * 9 / 10]),
            ms(times[0])
        );
    }
}
