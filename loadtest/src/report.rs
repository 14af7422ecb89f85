//! Merge the workers' reports and turn them into the JSON report and a human summary.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::args::RunArgs;
use crate::freshness::{self as fresh, Move};
use crate::proc::Sample;
use crate::stats::{Counters, Cycle, Second, WorkerReport, add_pairs, hist};

/// Everything the run measured.
pub struct Merged {
    pub counters: Counters,
    pub latency: Histogram<u64>,
    pub get_latency: Histogram<u64>,
    pub cycles: BTreeMap<u64, Cycle>,
    pub seconds: BTreeMap<u64, Second>,
    pub ramp_started_us: u64,
    pub ramp_done_us: u64,
    pub end_us: u64,
    pub peak_open: i64,
    pub workers: usize,
    pub baseline: Sample,
    pub samples: Vec<(u64, Sample)>,
    /// The load generator's own worker processes, sampled like the server.
    pub client_samples: Vec<(u64, Sample)>,
    pub started_us: u64,
    /// Every worker's moves from one `source_time` to a later one.
    pub freshness: Vec<Move>,
}

/// What the freshness figures need besides the workers' reports.
pub struct FreshnessInput {
    /// `--source-ticks`.
    pub source: String,
    /// The run's topics, by index.
    pub topics: Vec<String>,
    /// The simulator's tick list, or why it could not be read.
    pub ticks: Result<fresh::SourceTicks, String>,
    /// Class flags of every topic.
    pub classes: Vec<u8>,
    /// Subscribers of every topic.
    pub audience: Vec<u32>,
}

impl Merged {
    pub fn new(
        reports: &[WorkerReport],
        baseline: Sample,
        samples: Vec<(u64, Sample)>,
        client_samples: Vec<(u64, Sample)>,
        started_us: u64,
    ) -> Self {
        let mut m = Merged {
            counters: Counters::default(),
            latency: hist(),
            get_latency: hist(),
            cycles: BTreeMap::new(),
            seconds: BTreeMap::new(),
            ramp_started_us: u64::MAX,
            ramp_done_us: 0,
            end_us: u64::MAX,
            peak_open: 0,
            workers: reports.len(),
            baseline,
            samples,
            client_samples,
            started_us,
            freshness: Vec::new(),
        };
        let (mut t_min, mut t_max) = (u64::MAX, 0);
        for r in reports {
            m.counters.add(&r.counters);
            add_pairs(&mut m.latency, &r.latency);
            add_pairs(&mut m.get_latency, &r.get_latency);
            m.ramp_started_us = m.ramp_started_us.min(r.ramp.started_us);
            m.ramp_done_us = m.ramp_done_us.max(r.ramp.done_us);
            m.end_us = m.end_us.min(r.ramp.stopped_us);
            m.peak_open += r.peak_open;
            m.freshness.extend(r.freshness.iter().cloned());
            for c in &r.cycles {
                let e = m
                    .cycles
                    .entry(c.key)
                    .or_insert_with(|| Cycle::empty(c.published_at));
                add_pairs(&mut e.latency, &c.latency);
                e.published_at = e.published_at.min(c.published_at);
                e.sse += c.sse;
                e.ws += c.ws;
                e.first_rx_us = e.first_rx_us.min(c.first_rx_us);
                e.last_rx_us = e.last_rx_us.max(c.last_rx_us);
            }
            for s in &r.seconds {
                t_min = t_min.min(s.t);
                t_max = t_max.max(s.t);
            }
        }
        if t_min > t_max {
            return m;
        }
        for t in t_min..=t_max {
            m.seconds.insert(
                t,
                Second {
                    open: 0,
                    ..Second::new()
                },
            );
        }
        for r in reports {
            // Open-connection samples are carried forward over seconds a worker did not sample.
            let by_t: BTreeMap<u64, &crate::stats::SecondReport> =
                r.seconds.iter().map(|s| (s.t, s)).collect();
            let mut last_open = 0;
            for t in t_min..=t_max {
                let e = m.seconds.get_mut(&t).expect("filled above");
                if let Some(s) = by_t.get(&t) {
                    add_pairs(&mut e.latency, &s.latency);
                    e.opened += s.opened;
                    e.deliveries += s.deliveries;
                    e.errors += s.errors;
                    if s.open >= 0 {
                        last_open = s.open;
                    }
                }
                e.open += last_open;
            }
        }
        m
    }

    fn open_at(&self, t_us: u64) -> i64 {
        self.seconds
            .range(..=t_us / 1_000_000)
            .next_back()
            .map(|(_, s)| s.open)
            .unwrap_or(0)
    }

    /// The sample nearest to `t_us`.
    fn sample_at(&self, t_us: u64) -> Option<Sample> {
        nearest(&self.samples, t_us)
    }

    /// CPU of the load generator's workers between two times, percent of one core.
    fn client_cpu(&self, from: u64, to: u64) -> f64 {
        match (
            nearest(&self.client_samples, from),
            nearest(&self.client_samples, to),
        ) {
            (Some(a), Some(b)) if to > from => {
                ((b.cpu_s - a.cpu_s) / ((to - from) as f64 / 1e6) * 1000.0).round() / 10.0
            }
            _ => 0.0,
        }
    }
}

/// CPU percent (of one core) between the last sample at or before `from` and the first at or
/// after `to`, over the time between those two samples.
fn cpu_between(samples: &[(u64, Sample)], from: u64, to: u64) -> f64 {
    let a = samples.iter().rev().find(|(t, _)| *t <= from);
    let b = samples.iter().find(|(t, _)| *t >= to);
    match (a, b) {
        (Some((ta, a)), Some((tb, b))) if tb > ta => {
            ((b.cpu_s - a.cpu_s) / ((tb - ta) as f64 / 1e6) * 1000.0).round() / 10.0
        }
        _ => 0.0,
    }
}

/// CPU time per delivery over the hold, in µs: between the first and the last sample taken in
/// a second without a delivery, over the deliveries of the seconds between them. The CPU up to
/// such a sample and the deliveries up to its second then cover the same fan-outs; between two
/// samples taken at any moment, a window can hold one fan-out's CPU more than its deliveries
/// (a sixth more at a 5 s cycle and a 30 s hold). A load that never pauses has no such second:
/// then the samples nearest the hold's ends, over `hold_deliveries`.
fn cpu_us_per_delivery(m: &Merged, samples: &[(u64, Sample)], hold_deliveries: u64) -> f64 {
    let quiet = |(t, _): &&(u64, Sample)| {
        (m.ramp_done_us..=m.end_us).contains(t)
            && m.seconds
                .get(&(t / 1_000_000))
                .is_none_or(|s| s.deliveries == 0)
    };
    let (a, b, deliveries) = match (samples.iter().find(quiet), samples.iter().rev().find(quiet)) {
        (Some((ta, a)), Some((tb, b))) if tb / 1_000_000 > ta / 1_000_000 => {
            let seconds = m.seconds.range(ta / 1_000_000 + 1..tb / 1_000_000);
            (*a, *b, seconds.map(|(_, s)| s.deliveries).sum())
        }
        _ => match (nearest(samples, m.ramp_done_us), nearest(samples, m.end_us)) {
            (Some(a), Some(b)) => (a, b, hold_deliveries),
            _ => return 0.0,
        },
    };
    ((b.cpu_s - a.cpu_s) * 1e6 / deliveries.max(1) as f64 * 10.0).round() / 10.0
}

fn nearest(samples: &[(u64, Sample)], t_us: u64) -> Option<Sample> {
    samples
        .iter()
        .min_by_key(|(t, _)| t.abs_diff(t_us))
        .map(|(_, s)| *s)
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1_000.0 * 10.0).round() / 10.0
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "mean": ms(h.mean() as u64),
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Nearest-rank quantile `q` of `v` (not empty).
fn rank(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The `freshness` section: per class over the ticks of the hold (out once every worker had
/// ramped, and `--freshness-settle` before the stop), and per tick the time for 99 % of the
/// subscribers open when it came out to hold it.
fn freshness(args: &RunArgs, m: &Merged, input: &FreshnessInput) -> Value {
    let (ticks, changes) = match &input.ticks {
        Ok(t) => (&t.ticks, t.changes.as_ref()),
        Err(e) => return json!({"source_ticks": input.source, "error": e}),
    };
    let written: Option<HashMap<u32, &BTreeSet<u64>>> = changes.map(|c| {
        input
            .topics
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((i as u32, c.get(name)?)))
            .collect()
    });
    let settle_us = args.freshness_settle.as_micros() as u64;
    let (from_us, to_us) = (m.ramp_done_us, m.end_us.saturating_sub(settle_us));
    let f = fresh::compute(&m.freshness, ticks, written.as_ref(), from_us, to_us);
    let mut per_tick = Vec::new();
    let (mut to99, mut not_reached) = (Vec::new(), 0);
    for (tick, (came_out_us, h)) in &f.ticks {
        let expected = m.open_at(*came_out_us).max(0) as u64;
        let t99 = fresh::time_to_share(h, expected, fresh::COVERAGE).map(ms);
        match t99 {
            Some(t) => to99.push(t),
            None => not_reached += 1,
        }
        per_tick.push(json!({
            "tick": tick,
            "came_out_unix_ms": came_out_us / 1_000,
            "subscribers_open": expected,
            "subscribers_reached": h.len(),
            "to_99_percent_ms": t99,
            "freshness_ms": percentiles(h),
        }));
    }
    let class = |flag: Option<u8>| {
        let of = |c: u8| flag.map_or(c == 0, |f| c & f != 0);
        let topics = input.classes.iter().filter(|&&c| of(c)).count();
        let subscribers: u64 = input
            .classes
            .iter()
            .zip(&input.audience)
            .filter(|(c, _)| of(**c))
            .map(|(_, &n)| u64::from(n))
            .sum();
        json!({"topics": topics, "subscribers": subscribers})
    };
    json!({
        "source_ticks": input.source,
        "settle_s": args.freshness_settle.as_secs_f64(),
        "ticks_listed": ticks.len(),
        // TSE layout: each topic is charged only the ticks its own file was written at.
        "per_topic_changes": changes.is_some(),
        "ticks_ambiguous": f.ambiguous,
        "ticks_counted": f.ticks.len(),
        "ms": {
            "all": percentiles(&f.all),
            "capitals": percentiles(&f.capitals),
            "top50": percentiles(&f.top),
            "rest": percentiles(&f.rest),
        },
        "classes": {
            "capitals": class(Some(fresh::CAPITAL)),
            "top50": class(Some(fresh::TOP)),
            "rest": class(None),
        },
        "to_99_percent_ms": {
            "p50": (!to99.is_empty()).then(|| rank(&to99, 0.5)),
            "p99": (!to99.is_empty()).then(|| rank(&to99, 0.99)),
            "max": (!to99.is_empty()).then(|| rank(&to99, 1.0)),
            "ticks_not_reached": not_reached,
        },
        "ticks": per_tick,
    })
}

/// The JSON report.
pub fn build(
    args: &RunArgs,
    topics: usize,
    m: &Merged,
    freshness_input: Option<&FreshnessInput>,
) -> Value {
    let c = &m.counters;
    let ramp_s = m.ramp_done_us.saturating_sub(m.ramp_started_us) as f64 / 1e6;
    // Cycles of the hold: published once every worker had ramped, early enough (5 s, a cycle
    // interval of the bench, before the stop) for their deliveries to finish.
    let hold_cycles: Vec<(&i64, &Cycle)> = m
        .cycles
        .values()
        .map(|c| (&c.published_at, c))
        .filter(|(p, _)| {
            let p_us = (**p).max(0) as u64 * 1_000;
            p_us >= m.ramp_done_us && p_us + 5_000_000 <= m.end_us
        })
        .collect();
    let mut hold_hist = hist();
    let mut cycles = Vec::new();
    let (mut p99s, mut p50s, mut p90s, mut maxs, mut coverages) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut firsts = vec![];
    for (p, cy) in &hold_cycles {
        hold_hist.add(&cy.latency).expect("same bounds");
        let expected = m.open_at(**p as u64 * 1_000).max(1);
        let got = cy.sse + cy.ws;
        let coverage = got as f64 / expected as f64;
        let h = &cy.latency;
        p50s.push(ms(h.value_at_quantile(0.5)));
        p90s.push(ms(h.value_at_quantile(0.9)));
        p99s.push(ms(h.value_at_quantile(0.99)));
        maxs.push(ms(h.max()));
        coverages.push(coverage);
        cycles.push(json!({
            "published_at": p,
            "t": ms((**p as u64 * 1_000).saturating_sub(m.started_us)) / 1_000.0,
            "deliveries": got,
            "sse": cy.sse,
            "ws": cy.ws,
            "open_subscribers": expected,
            "coverage": (coverage * 10_000.0).round() / 10_000.0,
            "latency_ms": percentiles(h),
            // The first delivery measures the pipeline before fan-out (stamp, bus, hub); the
            // spread from first to last is the fan-out itself.
            "first_ms": ms(cy.first_rx_us.saturating_sub(**p as u64 * 1_000)),
            "spread_ms": ms(cy.last_rx_us.saturating_sub(cy.first_rx_us)),
        }));
        firsts.push(ms(cy.first_rx_us.saturating_sub(**p as u64 * 1_000)));
    }
    let worst = |v: &Vec<f64>| {
        v.iter()
            .cloned()
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))))
    };
    let hold_secs: Vec<&Second> = m
        .seconds
        .iter()
        .filter(|(t, _)| **t * 1_000_000 >= m.ramp_done_us && (**t + 1) * 1_000_000 <= m.end_us)
        .map(|(_, s)| s)
        .collect();
    let hold_deliveries: u64 = hold_secs.iter().map(|s| s.deliveries).sum();
    let dps_mean = hold_deliveries as f64 / hold_secs.len().max(1) as f64;
    let dps_peak = hold_secs.iter().map(|s| s.deliveries).max().unwrap_or(0);

    // Server memory and CPU.
    let peak_t = m
        .seconds
        .iter()
        .max_by_key(|(t, s)| (s.open, std::cmp::Reverse(**t)))
        .map(|(t, s)| (*t, s.open));
    let server = if m.samples.is_empty() || args.watch_pid.is_empty() {
        json!(null)
    } else {
        let (peak_sec, peak_open) = peak_t.unwrap_or((0, 0));
        // Memory at the end of the hold (1 s before the stop): every connection open and past
        // at least one update.
        let at = m
            .sample_at(m.end_us.saturating_sub(1_000_000))
            .unwrap_or_default();
        // PSS is sampled less often: the nearest sample that has it.
        let with_pss: Vec<(u64, Sample)> = m
            .samples
            .iter()
            .filter(|s| s.1.pss_kib > 0)
            .cloned()
            .collect();
        let at_pss = nearest(&with_pss, m.end_us.saturating_sub(1_000_000)).unwrap_or_default();
        let open_then = m.open_at(m.end_us.saturating_sub(1_000_000)).max(1);
        let rss_peak = m.samples.iter().map(|s| s.1.rss_kib).max().unwrap_or(0);
        let pss_peak = m.samples.iter().map(|s| s.1.pss_kib).max().unwrap_or(0);
        let cpu = |from: u64, to: u64| {
            let (a, b) = (m.sample_at(from), m.sample_at(to));
            match (a, b) {
                (Some(a), Some(b)) if to > from => {
                    (b.cpu_s - a.cpu_s) / ((to - from) as f64 / 1e6) * 100.0
                }
                _ => 0.0,
            }
        };
        let per_conn = |v: u64, base: u64| {
            ((v.saturating_sub(base)) as f64 / open_then as f64 * 100.0).round() / 100.0
        };
        json!({
            "pids": args.watch_pid,
            "alive_at_end": m.samples.last().map(|s| s.1.alive),
            "rss_mib_baseline": m.baseline.rss_kib / 1024,
            "rss_mib_hold": at.rss_kib / 1024,
            "rss_mib_peak": rss_peak / 1024,
            "pss_mib_baseline": m.baseline.pss_kib / 1024,
            "pss_mib_hold": at_pss.pss_kib / 1024,
            "pss_mib_peak": pss_peak / 1024,
            "open_at_hold_sample": open_then,
            "rss_kib_per_connection": per_conn(at.rss_kib, 0),
            "rss_kib_per_connection_over_baseline": per_conn(at.rss_kib, m.baseline.rss_kib),
            "pss_kib_per_connection": per_conn(at_pss.pss_kib, 0),
            "pss_kib_per_connection_over_baseline": per_conn(at_pss.pss_kib, m.baseline.pss_kib),
            "cpu_percent_ramp": (cpu(m.ramp_started_us, m.ramp_done_us) * 10.0).round() / 10.0,
            "cpu_percent_hold": (cpu(m.ramp_done_us, m.end_us) * 10.0).round() / 10.0,
            // The cost of fan-out, comparable across servers.
            "cpu_us_per_delivery_hold": cpu_us_per_delivery(m, &m.samples, hold_deliveries),
            "peak_open_second": peak_sec,
            "peak_open": peak_open,
        })
    };

    let mut timeline = Vec::new();
    for (t, s) in &m.seconds {
        let sample = m.sample_at(*t * 1_000_000 + 500_000);
        // CPU over the samples around this second, divided by the time between them (samples
        // are taken about once a second, later when the machine is starved).
        let cpu_pct = cpu_between(&m.samples, *t * 1_000_000, (*t + 1) * 1_000_000);
        let mut row = json!({
            "t": (*t * 1_000_000).saturating_sub(m.started_us) as f64 / 1e6,
            "open": s.open,
            "opened": s.opened,
            "deliveries": s.deliveries,
            "errors": s.errors,
        });
        if !s.latency.is_empty() {
            row["p50_ms"] = json!(ms(s.latency.value_at_quantile(0.5)));
            row["p90_ms"] = json!(ms(s.latency.value_at_quantile(0.9)));
            row["p99_ms"] = json!(ms(s.latency.value_at_quantile(0.99)));
            row["max_ms"] = json!(ms(s.latency.max()));
        }
        if let (Some(b), false) = (sample, args.watch_pid.is_empty()) {
            row["server_rss_mib"] = json!(b.rss_kib / 1024);
            if b.pss_kib > 0 {
                row["server_pss_mib"] = json!(b.pss_kib / 1024);
            }
            row["server_cpu_percent"] = json!(cpu_pct);
        }
        let c0 = cpu_between(&m.client_samples, *t * 1_000_000, (*t + 1) * 1_000_000);
        row["client_cpu_percent"] = json!(c0);
        timeline.push(row);
    }

    let client = json!({
        "workers": m.client_samples.last().map(|s| s.1.alive),
        "cpu_percent_ramp": m.client_cpu(m.ramp_started_us, m.ramp_done_us),
        "cpu_percent_hold": m.client_cpu(m.ramp_done_us, m.end_us),
        "cpu_us_per_delivery_hold": cpu_us_per_delivery(m, &m.client_samples, hold_deliveries),
        "rss_mib_peak": m.client_samples.iter().map(|s| s.1.rss_kib).max().unwrap_or(0) / 1024,
    });
    let get_secs = m.end_us.saturating_sub(m.ramp_done_us) as f64 / 1e6;
    json!({
        "label": args.label,
        "started_at_unix_ms": m.started_us / 1_000,
        "config": {
            "target": args.target,
            "sse": args.sse,
            "ws": args.ws,
            "get_conns": args.get_conns,
            "get_rate_per_conn": args.get_rate,
            "workers": args.workers,
            "connect_rate": args.connect_rate,
            "hold_s": args.hold.as_secs_f64(),
            "sources": crate::net::parse_sources(&args.sources).map(|s| s.len()).unwrap_or(0),
            "sse_path": args.sse_path,
            "ws_path": args.ws_path,
            "compress": args.compress,
            "topics": topics,
            "hot_topic": args.hot_topic,
            "hot_share": args.hot_share,
            "zipf_s": args.zipf_s,
            "seed": args.seed,
        },
        "connections": {
            "attempted": c.attempted,
            "established": c.established,
            "peak_open": peak_t.map(|p| p.1).unwrap_or(0).max(0),
            "ramp_s": (ramp_s * 10.0).round() / 10.0,
            "connect_rate_achieved": (c.established as f64 / ramp_s.max(1e-3)).round(),
            "handshake_ms_mean": ms(c.handshake_us_total / c.established.max(1)),
            "workers_reported": m.workers,
        },
        "errors": {
            "connect_failed": c.connect_failed,
            "handshake_failed": c.handshake_failed,
            "unexpected_close": c.unexpected_close,
            "io_errors": c.io_errors,
            "protocol_errors": c.protocol_errors,
            "server_errors": c.server_errors,
            "get_errors": c.get_errors,
            "ended_early_sse": c.ended_sse,
            "ended_early_ws": c.ended_ws,
            "total": c.errors(),
        },
        "deliveries": {
            "updates": c.updates,
            "updates_sse": c.updates_sse,
            "updates_ws": c.updates_ws,
            "snapshots": c.snapshots,
            "heartbeats": c.heartbeats,
            "bytes": c.bytes,
            "per_second_hold_mean": dps_mean.round(),
            "per_second_hold_peak": dps_peak,
        },
        "latency_ms_all_updates": percentiles(&m.latency),
        "fanout": {
            "hold_cycles": hold_cycles.len(),
            "latency_ms_hold_cycles": percentiles(&hold_hist),
            "per_cycle_median": {
                "p50": median(p50s.clone()), "p90": median(p90s.clone()),
                "p99": median(p99s.clone()), "max": median(maxs.clone()),
                "first_delivery": median(firsts.clone()),
            },
            "per_cycle_worst": {
                "p50": worst(&p50s), "p90": worst(&p90s), "p99": worst(&p99s), "max": worst(&maxs),
            },
            "coverage_min": coverages.iter().cloned().fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.min(x)))),
            "cycles": cycles,
        },
        "get": {
            "ok": c.get_ok,
            "not_modified": c.get_not_modified,
            "errors": c.get_errors,
            "requests_per_second": (((c.get_ok + c.get_not_modified) as f64) / get_secs.max(1e-3)).round(),
            "latency_ms": percentiles(&m.get_latency),
        },
        "server": server,
        "client": client,
        "freshness": freshness_input.map_or(Value::Null, |f| freshness(args, m, f)),
        "timeline": timeline,
    })
}

/// A few lines for the terminal.
pub fn summary(r: &Value) -> String {
    let mut out = format!("[{}] ", r["label"].as_str().unwrap_or(""));
    out += &fill(
        r,
        "subscribers {/connections/established} established / {/connections/attempted} attempted (peak open {/connections/peak_open}), ramp {/connections/ramp_s} s at {/connections/connect_rate_achieved} /s; errors {/errors/total} ({/errors})\n",
    );
    out += &fill(
        r,
        "  fan-out over {/fanout/hold_cycles} hold cycles: p50 {/fanout/latency_ms_hold_cycles/p50} ms  p90 {/fanout/latency_ms_hold_cycles/p90} ms  p99 {/fanout/latency_ms_hold_cycles/p99} ms  max {/fanout/latency_ms_hold_cycles/max} ms  (per-cycle p99 median {/fanout/per_cycle_median/p99} worst {/fanout/per_cycle_worst/p99}; first delivery median {/fanout/per_cycle_median/first_delivery} ms; min coverage {/fanout/coverage_min})\n",
    );
    if let Some(e) = r["server_lag"]["error"].as_str() {
        out += &format!("  gateways' lag histogram: not read ({e})\n");
    } else if r["server_lag"].is_object() {
        out += &fill(
            r,
            "  gateways' lag histogram over the hold: p50 {/server_lag/p50_ms} ms  p99 {/server_lag/p99_ms} ms = {/server_lag/p99_over_client_p99}× the subscribers' p99 ({/server_lag/observations} observations)\n",
        );
    }
    if r["server_arrival"]["observations"].is_u64() {
        out += &fill(
            r,
            "  cycles held in the gateways' hubs after publication (apura_cycle_arrival_seconds): p50 {/server_arrival/p50_ms} ms  p99 {/server_arrival/p99_ms} ms ({/server_arrival/observations} cycles)\n",
        );
    }
    if r["status_audience"]["topics_compared"].is_u64() {
        out += &fill(
            r,
            "  gateways' /status top topics: {/status_audience/topics_equal} of {/status_audience/topics_compared} equal to the streams the load generator holds (largest {/status_audience/largest}; {/status_audience/client_errors} client errors)\n",
        );
    }
    if r["freshness"]["error"].is_string() {
        out += &fill(r, "  freshness: not measured, {/freshness/error}\n");
    } else if r["freshness"].is_object() {
        out += &fill(
            r,
            "  freshness over {/freshness/ticks_counted} ticks, file out to subscriber: p50 {/freshness/ms/all/p50} ms  p90 {/freshness/ms/all/p90} ms  p99 {/freshness/ms/all/p99} ms  max {/freshness/ms/all/max} ms; capitals p50 {/freshness/ms/capitals/p50} p99 {/freshness/ms/capitals/p99} ms, 50 most subscribed p50 {/freshness/ms/top50/p50} p99 {/freshness/ms/top50/p99} ms, the rest p50 {/freshness/ms/rest/p50} p99 {/freshness/ms/rest/p99} ms; file out to 99 % of subscribers: median tick {/freshness/to_99_percent_ms/p50} ms, p99 tick {/freshness/to_99_percent_ms/p99} ms ({/freshness/to_99_percent_ms/ticks_not_reached} ticks not reached)\n",
        );
    }
    out += &fill(
        r,
        "  deliveries {/deliveries/updates} updates ({/deliveries/per_second_hold_mean} /s mean in hold, peak {/deliveries/per_second_hold_peak} /s), {/deliveries/snapshots} snapshots, {/deliveries/heartbeats} heartbeats\n",
    );
    if !r["server"].is_null() {
        out += &fill(
            r,
            "  server: RSS {/server/rss_mib_hold} MiB (baseline {/server/rss_mib_baseline} MiB) = {/server/rss_kib_per_connection} KiB/conn ({/server/rss_kib_per_connection_over_baseline} over baseline); PSS {/server/pss_kib_per_connection} KiB/conn; CPU ramp {/server/cpu_percent_ramp} % hold {/server/cpu_percent_hold} %, {/server/cpu_us_per_delivery_hold} µs per delivery\n",
        );
    }
    out += &fill(
        r,
        "  load generator: CPU ramp {/client/cpu_percent_ramp} % hold {/client/cpu_percent_hold} % (100 % = one core), RSS peak {/client/rss_mib_peak} MiB\n",
    );
    if r["get"]["ok"].as_u64().unwrap_or(0) + r["get"]["not_modified"].as_u64().unwrap_or(0) > 0 {
        out += &fill(
            r,
            "  GET: {/get/ok} ok, {/get/not_modified} not modified, {/get/errors} errors, {/get/requests_per_second} req/s, latency {/get/latency_ms}\n",
        );
    }
    out
}

/// `template` with every `{/a/b}` replaced by the report's value at that JSON pointer, written
/// as JSON (`null` where the report has none).
fn fill(r: &Value, template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 128);
    let mut rest = template;
    while let Some(start) = rest.find("{/") {
        let end = start + rest[start..].find('}').expect("a closed placeholder");
        out.push_str(&rest[..start]);
        let value = r.pointer(&rest[start + 1..end]).unwrap_or(&Value::Null);
        out.push_str(&value.to_string());
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_delivery_counts_the_same_fan_outs_on_both_sides() {
        // A fan-out of 1,000 deliveries at 10 µs each, 0.2 s into every fifth second from 12
        // to 37; samples 0.5 s into every second. The hold ends at 37.6 s: its last whole
        // second is 36, yet the sample nearest its end (37.5 s) holds the CPU of the fan-out
        // at 37.2 s. Counted that way, 6 fan-outs' CPU over 5 fan-outs' deliveries: 12 µs.
        let s = 1_000_000u64;
        let burst = |t: u64| t >= 12 && (t - 12).is_multiple_of(5);
        let samples: Vec<(u64, Sample)> = (0..45)
            .map(|t| {
                let bursts = (0..=t).filter(|&k| burst(k)).count();
                let cpu_s = bursts as f64 * 1_000.0 * 10e-6;
                (
                    t * s + s / 2,
                    Sample {
                        cpu_s,
                        ..Sample::default()
                    },
                )
            })
            .collect();
        let mut m = Merged::new(&[], Sample::default(), samples.clone(), samples, 0);
        m.ramp_done_us = 10 * s;
        m.end_us = 37 * s + 600_000;
        for t in 0..45 {
            let deliveries = if burst(t) { 1_000 } else { 0 };
            m.seconds.insert(
                t,
                Second {
                    latency: hist(),
                    open: 1_000,
                    opened: 0,
                    deliveries,
                    errors: 0,
                },
            );
        }
        assert_eq!(cpu_us_per_delivery(&m, &m.samples, 5_000), 10.0);
        // A load that never pauses: the whole hold, as before.
        for second in m.seconds.values_mut() {
            second.deliveries += 1;
        }
        assert_eq!(cpu_us_per_delivery(&m, &m.samples, 6_000), 10.0);
    }

    #[test]
    fn the_summary_names_every_figure_as_the_report_writes_it() {
        let r = json!({
            "label": "apura",
            "connections": {"established": 3, "attempted": 4},
            "errors": {"total": 1, "connect_failed": 1},
            "fanout": {"latency_ms_hold_cycles": {"p99": 12.5}},
            "server": null,
            "get": {"ok": 0, "not_modified": 0},
        });
        let s = summary(&r);
        assert!(
            s.starts_with(
                "[apura] subscribers 3 established / 4 attempted (peak open null), ramp null s"
            ),
            "{s}"
        );
        assert!(
            s.contains(r#"errors 1 ({"connect_failed":1,"total":1})"#),
            "{s}"
        );
        assert!(s.contains("p99 12.5 ms"), "{s}");
        assert!(!s.contains("server:") && !s.contains("GET:"), "{s}");
        assert!(!s.contains("freshness"), "{s}");
        assert_eq!(s.lines().count(), 4);
    }

    #[test]
    fn the_summary_sets_the_gateways_lag_beside_the_subscribers() {
        let mut r = json!({
            "label": "apura",
            "server": null,
            "get": {"ok": 0, "not_modified": 0},
            "server_lag": {"p50_ms": 120.5, "p99_ms": 410.0, "p99_over_client_p99": 0.95,
                           "observations": 570000},
            "server_arrival": {"p50_ms": 12.5, "p99_ms": 24.0, "p99_over_client_p99": null,
                               "observations": 30},
        });
        let s = summary(&r);
        assert!(
            s.contains("p99 410.0 ms = 0.95× the subscribers' p99 (570000 observations)"),
            "{s}"
        );
        assert!(
            s.contains("hubs after publication (apura_cycle_arrival_seconds): p50 12.5 ms  p99 24.0 ms (30 cycles)"),
            "{s}"
        );
        r["server_lag"] = json!({"error": "reading 127.0.0.1:1/metrics: connection refused"});
        let s = summary(&r);
        assert!(
            s.contains("lag histogram: not read (reading 127.0.0.1:1/metrics"),
            "{s}"
        );
    }

    #[test]
    fn the_summary_gives_freshness_when_the_run_measured_it() {
        let mut r = json!({
            "label": "fresh",
            "freshness": {
                "ticks_counted": 3,
                "ms": {
                    "all": {"p50": 900.5, "p90": 1_500.0, "p99": 2_100.0, "max": 2_400.0},
                    "capitals": {"p50": 800.0, "p99": 2_000.0},
                    "top50": {"p50": 810.0, "p99": 2_050.0},
                    "rest": {"count": 0},
                },
                "to_99_percent_ms": {"p50": 1_900.0, "p99": 2_300.0, "ticks_not_reached": 0},
            },
        });
        let s = summary(&r);
        assert!(
            s.contains("freshness over 3 ticks, file out to subscriber: p50 900.5 ms  p90 1500.0 ms  p99 2100.0 ms  max 2400.0 ms"),
            "{s}"
        );
        assert!(
            s.contains("capitals p50 800.0 p99 2000.0 ms, 50 most subscribed p50 810.0 p99 2050.0 ms, the rest p50 null p99 null ms"),
            "{s}"
        );
        assert!(
            s.contains("file out to 99 % of subscribers: median tick 1900.0 ms, p99 tick 2300.0 ms (0 ticks not reached)"),
            "{s}"
        );
        assert_eq!(s.lines().count(), 5);
        r["freshness"] =
            json!({"source_ticks": "127.0.0.1:1/ticks", "error": "GET /ticks: refused"});
        let s = summary(&r);
        assert!(
            s.contains("freshness: not measured, \"GET /ticks: refused\""),
            "{s}"
        );
    }
}
