//! What a worker measures: counters, latency histograms overall, per publication cycle and per
//! second, and how they travel to the parent process and merge there.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds up to 10 minutes; longer ones saturate there.
/// A delivery later than that is a failure to report, not a latency to resolve.
pub const MAX_LATENCY_US: u64 = 600_000_000;

/// Wall clock in microseconds since the Unix epoch (`published_at` is Unix milliseconds from
/// the same machine's clock, so the two compare directly).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// 3 significant figures (0.1 % resolution) for the overall and per-cycle histograms.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// 2 significant figures for the per-second ones: a 10-minute run keeps 600 of them.
pub fn coarse_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid histogram bounds")
}

/// A histogram as `(value, count)` pairs of its non-empty buckets: compact, and merges
/// exactly into a histogram of the same precision.
pub type Pairs = Vec<(u64, u64)>;

pub fn to_pairs(h: &Histogram<u64>) -> Pairs {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn add_pairs(h: &mut Histogram<u64>, pairs: &Pairs) {
    for &(v, n) in pairs {
        h.saturating_record_n(v, n);
    }
}

/// Which stream a delivery came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Sse,
    Ws,
}

/// Event counts; every field adds up across workers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Counters {
    /// Subscriber connections started.
    pub attempted: u64,
    /// Subscribers whose stream was accepted (SSE 200, WebSocket 101 and subscribe sent).
    pub established: u64,
    /// TCP connect failed or timed out.
    pub connect_failed: u64,
    /// HTTP status other than 200 / 101, or a malformed response head.
    pub handshake_failed: u64,
    /// The server closed a stream before the end of the run.
    pub unexpected_close: u64,
    /// Read or write errors on an established stream.
    pub io_errors: u64,
    /// Events we could not parse, or documents without `published_at`.
    pub protocol_errors: u64,
    /// `error` messages from the WebSocket protocol.
    pub server_errors: u64,
    /// Documents published before the subscriber connected (snapshots, buffered messages).
    pub snapshots: u64,
    /// Documents published after the subscriber connected: the deliveries we time.
    pub updates: u64,
    pub updates_sse: u64,
    pub updates_ws: u64,
    /// SSE comment lines and WebSocket pings.
    pub heartbeats: u64,
    /// Bytes read on subscriber streams.
    pub bytes: u64,
    pub get_ok: u64,
    pub get_not_modified: u64,
    pub get_errors: u64,
    /// Time spent in SSE/WebSocket handshakes, microseconds, over `established`.
    pub handshake_us_total: u64,
    /// Streams that ended before the run did (closed or broken), by kind.
    pub ended_sse: u64,
    pub ended_ws: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        add!(
            attempted,
            established,
            connect_failed,
            handshake_failed,
            unexpected_close,
            io_errors,
            protocol_errors,
            server_errors,
            snapshots,
            updates,
            updates_sse,
            updates_ws,
            heartbeats,
            bytes,
            get_ok,
            get_not_modified,
            get_errors,
            handshake_us_total,
            ended_sse,
            ended_ws
        );
    }

    /// A stream of this kind ended early.
    pub fn ended(&mut self, stream: Stream) {
        match stream {
            Stream::Sse => self.ended_sse += 1,
            Stream::Ws => self.ended_ws += 1,
        }
    }

    pub fn errors(&self) -> u64 {
        self.connect_failed
            + self.handshake_failed
            + self.unexpected_close
            + self.io_errors
            + self.protocol_errors
            + self.server_errors
            + self.get_errors
    }
}

/// Deliveries of one publication cycle: keyed by the documents' `version` (apura: the cycle's
/// sequence number; nchan baseline: the publisher's cycle number), else by `published_at`.
pub struct Cycle {
    /// Earliest `published_at` seen in the cycle (apura stamps one per cycle; the nchan
    /// publisher may stamp each message as it sends it).
    pub published_at: i64,
    pub latency: Histogram<u64>,
    pub sse: u64,
    pub ws: u64,
    pub first_rx_us: u64,
    pub last_rx_us: u64,
}

/// One second of the run.
pub struct Second {
    pub latency: Histogram<u64>,
    /// Subscribers open at the end of the second (sampled).
    pub open: i64,
    pub opened: u64,
    pub deliveries: u64,
    pub errors: u64,
}

impl Cycle {
    /// A cycle with nothing delivered yet.
    pub fn empty(published_at: i64) -> Self {
        Cycle {
            published_at,
            latency: hist(),
            sse: 0,
            ws: 0,
            first_rx_us: u64::MAX,
            last_rx_us: 0,
        }
    }
}

impl Second {
    pub fn new() -> Self {
        Second {
            latency: coarse_hist(),
            open: -1,
            opened: 0,
            deliveries: 0,
            errors: 0,
        }
    }
}

/// Everything one worker records.
pub struct Recorder {
    pub counters: Counters,
    pub latency: Histogram<u64>,
    pub get_latency: Histogram<u64>,
    pub cycles: HashMap<u64, Cycle>,
    pub seconds: BTreeMap<u64, Second>,
    /// Streams established per topic (an index into the topic list).
    pub by_topic: HashMap<usize, u64>,
    pub freshness: crate::freshness::Recorder,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            counters: Counters::default(),
            latency: hist(),
            get_latency: hist(),
            cycles: HashMap::new(),
            seconds: BTreeMap::new(),
            by_topic: HashMap::new(),
            freshness: crate::freshness::Recorder::default(),
        }
    }
}

impl Recorder {
    fn second(&mut self, now_us: u64) -> &mut Second {
        self.seconds
            .entry(now_us / 1_000_000)
            .or_insert_with(Second::new)
    }

    /// A document published at `published_at_ms` arrived at `now_us`.
    pub fn update(
        &mut self,
        stream: Stream,
        published_at_ms: i64,
        version: Option<u64>,
        now_us: u64,
    ) {
        let lat = now_us
            .saturating_sub((published_at_ms.max(0) as u64) * 1_000)
            .max(1);
        self.counters.updates += 1;
        match stream {
            Stream::Sse => self.counters.updates_sse += 1,
            Stream::Ws => self.counters.updates_ws += 1,
        }
        self.latency.saturating_record(lat);
        let key = version.unwrap_or(published_at_ms.max(0) as u64);
        let c = self
            .cycles
            .entry(key)
            .or_insert_with(|| Cycle::empty(published_at_ms));
        c.latency.saturating_record(lat);
        c.published_at = c.published_at.min(published_at_ms);
        match stream {
            Stream::Sse => c.sse += 1,
            Stream::Ws => c.ws += 1,
        }
        c.first_rx_us = c.first_rx_us.min(now_us);
        c.last_rx_us = c.last_rx_us.max(now_us);
        let s = self.second(now_us);
        s.latency.saturating_record(lat);
        s.deliveries += 1;
    }

    pub fn opened(&mut self, now_us: u64) {
        self.counters.established += 1;
        self.second(now_us).opened += 1;
    }

    pub fn error(&mut self, now_us: u64, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters);
        self.second(now_us).errors += 1;
    }

    pub fn sample_open(&mut self, now_us: u64, open: i64) {
        self.second(now_us).open = open;
    }

    pub fn report(&self, worker: usize, ramp: Ramp, peak_open: i64) -> WorkerReport {
        let mut cycles: Vec<CycleReport> = self
            .cycles
            .iter()
            .map(|(&key, c)| CycleReport {
                key,
                published_at: c.published_at,
                sse: c.sse,
                ws: c.ws,
                first_rx_us: c.first_rx_us,
                last_rx_us: c.last_rx_us,
                latency: to_pairs(&c.latency),
            })
            .collect();
        cycles.sort_by_key(|c| c.published_at);
        WorkerReport {
            worker,
            counters: self.counters.clone(),
            latency: to_pairs(&self.latency),
            get_latency: to_pairs(&self.get_latency),
            cycles,
            seconds: self
                .seconds
                .iter()
                .map(|(&t, s)| SecondReport {
                    t,
                    open: s.open,
                    opened: s.opened,
                    deliveries: s.deliveries,
                    errors: s.errors,
                    latency: to_pairs(&s.latency),
                })
                .collect(),
            ramp,
            peak_open,
            by_topic: BTreeMap::new(),
            freshness: self.freshness.report(),
        }
    }
}

/// When a worker's ramp started and ended (all connects attempted and settled), and when it
/// stopped, Unix µs.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Ramp {
    pub started_us: u64,
    pub done_us: u64,
    /// When the stop signal went out (end of the hold).
    pub stopped_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CycleReport {
    pub key: u64,
    pub published_at: i64,
    pub sse: u64,
    pub ws: u64,
    pub first_rx_us: u64,
    pub last_rx_us: u64,
    pub latency: Pairs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecondReport {
    pub t: u64,
    pub open: i64,
    pub opened: u64,
    pub deliveries: u64,
    pub errors: u64,
    pub latency: Pairs,
}

/// What a worker process prints as its last stdout line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub counters: Counters,
    pub latency: Pairs,
    pub get_latency: Pairs,
    pub cycles: Vec<CycleReport>,
    pub seconds: Vec<SecondReport>,
    pub ramp: Ramp,
    pub peak_open: i64,
    /// Streams established per topic name.
    #[serde(default)]
    pub by_topic: BTreeMap<String, u64>,
    /// Subscribers moving from one `source_time` to a later one ([`crate::freshness`]).
    #[serde(default)]
    pub freshness: Vec<crate::freshness::Move>,
}

/// A worker's periodic progress line.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub worker: usize,
    pub attempted: u64,
    pub established: u64,
    pub open: i64,
    pub errors: u64,
    pub updates: u64,
    pub ramp_done: bool,
}

/// One line a worker writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Line {
    Progress(Progress),
    Report(Box<WorkerReport>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_exactly() {
        let mut h = hist();
        for v in [1u64, 999, 1_000, 12_345, 250_000, 250_001, 9_000_000] {
            h.record(v).unwrap();
        }
        let mut back = hist();
        add_pairs(&mut back, &to_pairs(&h));
        assert_eq!(back.len(), h.len());
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q));
        }
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn updates_group_by_cycle_and_second() {
        let mut r = Recorder::default();
        let t0 = 1_700_000_000_000_000u64;
        r.update(Stream::Sse, 1_700_000_000_000, Some(1), t0 + 5_000);
        r.update(Stream::Ws, 1_700_000_000_000, Some(1), t0 + 15_000);
        r.update(Stream::Ws, 1_700_000_005_000, Some(2), t0 + 5_020_000);
        let rep = r.report(0, Ramp::default(), 2);
        assert_eq!(rep.cycles.len(), 2);
        assert_eq!((rep.cycles[0].sse, rep.cycles[0].ws), (1, 1));
        assert_eq!(rep.seconds.len(), 2);
        assert_eq!(rep.counters.updates, 3);
        let mut h = hist();
        add_pairs(&mut h, &rep.cycles[0].latency);
        assert!(h.equivalent(h.max(), 15_000));
    }
}
