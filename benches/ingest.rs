//! Ingest benchmark: parse, slice and diff one national consolidated file of 5,570 cities; and
//! the per-update cost of São Paulo's councillor race in the TSE layout (~1,000 candidates).
//!
//! `cargo bench --bench ingest` — prints the file size, the documents that changed and the
//! median / p90 / min time of parse + slice + diff over 21 runs, for a mid-count cycle (every
//! city moved since the previous file) and for an unchanged file; then, for one update of São
//! Paulo's councillor file, the time to parse and validate it, to slice and diff it, and to
//! encode and compress the document once (what every subscriber then shares).

use std::sync::Arc;
use std::time::{Duration, Instant};

use apura::bus::Document;
use apura::bus::embedded::EmbeddedBus;
use apura::feed::consolidated;
use apura::feed::tse::unified;
use apura::gateway::hub::Encoded;
use apura::ingest::{Accepted, Core};
use apura::metrics::Metrics;
use apura::model::Office;
use apura::simulate::tse::ELECTION;
use apura::simulate::{Layout, SimConfig, Simulator};

const RUNS: usize = 21;

fn main() {
    let sim = Simulator::new(SimConfig {
        seed: 2026,
        duration: Duration::from_secs(600),
        interval: Duration::from_secs(10),
        municipalities: None,
        ..SimConfig::default()
    });
    let list = Arc::new(sim.municipalities().clone());
    let mid = sim.last_tick() / 2;
    let before = sim.render_tick(mid - 1, Office::Mayor);
    let after = sim.render_tick(mid, Office::Mayor);
    let mut ingest = Core::new(
        list.clone(),
        Arc::new(EmbeddedBus::new()),
        Arc::new(Metrics::default()),
    );
    let accept =
        |ingest: &mut Core, feed| ingest.take(Accepted::Files(vec![(Office::Mayor, feed)]));
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
            accept(
                &mut ingest,
                consolidated::parse(&before, "before", Office::Mayor, &list).unwrap(),
            );
            let reference = ingest.changed();
            ingest.mark_published(&reference);

            let t = Instant::now();
            let feed = consolidated::parse(next, "bench", Office::Mayor, &list).unwrap();
            let parsed = t.elapsed();
            accept(&mut ingest, feed);
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
    tse_councillors();
}

/// One update of São Paulo's councillor race from the TSE layout: parse + validate, slice +
/// diff, encode + gzip once.
fn tse_councillors() {
    let sim = Simulator::new(SimConfig {
        layout: Layout::Tse,
        ..SimConfig::default()
    });
    let list = Arc::new(sim.municipalities().clone());
    let code = sim.tse_code(3550308).unwrap().to_string();
    let mid = sim.last_tick() * 3 / 4;
    let file = |tick| {
        sim.render_unified(ELECTION, &code, 13, None, tick)
            .unwrap()
            .0
    };
    let (before, after) = (file(mid - 1), file(mid));
    assert_ne!(before, after, "São Paulo moved between the two ticks");
    let race = |bytes: &[u8]| {
        unified::parse_validated(bytes, "sp")
            .unwrap()
            .race(3550308, Office::Councillor)
            .unwrap()
    };
    let mut ingest = Core::new(
        list,
        Arc::new(EmbeddedBus::new()),
        Arc::new(Metrics::default()),
    );
    let (mut parse, mut slice, mut encode) = (Vec::new(), Vec::new(), Vec::new());
    let (mut doc_bytes, mut gzip_bytes, mut candidates) = (0, 0, 0);
    for _ in 0..RUNS {
        ingest.accept_race(race(&before));
        let reference = ingest.changed();
        ingest.mark_published(&reference);

        let t = Instant::now();
        let r = race(&after);
        candidates = r.candidates.len();
        parse.push(t.elapsed());
        let t = Instant::now();
        ingest.accept_race(r);
        let drafts = ingest.changed();
        slice.push(t.elapsed());
        assert_eq!(
            drafts.len(),
            1,
            "only São Paulo's councillor document changed"
        );
        let t = Instant::now();
        let doc = Document::stamp(&drafts[0], 1, 0);
        let encoded = Encoded::new(&doc);
        gzip_bytes = encoded.gzip().len();
        encode.push(t.elapsed());
        doc_bytes = doc.json.len();
        ingest.mark_published(&drafts);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[RUNS / 2].as_secs_f64() * 1e3
    };
    println!(
        "TSE São Paulo councillors ({candidates} candidates, file {} KB, document {} KB, gzip {} KB): \
         parse+validate median {:.2} ms, slice+diff {:.2} ms, encode+gzip once {:.2} ms",
        after.len() / 1024,
        doc_bytes / 1024,
        gzip_bytes / 1024,
        median(&mut parse),
        median(&mut slice),
        median(&mut encode),
    );
}
