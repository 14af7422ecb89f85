//! Process metrics, served on `/metrics` in the Prometheus text format (0.0.4) or, to a scraper
//! that asks for it (`Accept: application/openmetrics-text`, as Prometheus does), in OpenMetrics
//! 1.0.
//!
//! Counters and gauges are plain atomics bumped on the hot paths (one increment per delivery,
//! with 200,000 connections): lock-free, and read only at scrape time, when they are turned into
//! metric families. The histograms, the process metrics (CPU, resident memory, open files) and
//! the text exposition come from the `prometheus` crate. Its histograms observe with atomics
//! only (a counter per bucket, no lock), so the delivery lag is observed at every delivery:
//! `cargo bench --bench metrics` measures 56 ns per delivery for the counter, the clock and the
//! observation of a 0.4 s lag (the 16th of 35 buckets) with both cores recording at once
//! (4.5 ns for the counter alone; 138 ns on a busier machine with 22 buckets), against 24 to
//! 40 µs of gateway CPU per delivery (BENCHMARKS.md): under 1 %. `prometheus-client`'s
//! histograms take a lock per observation, and the `metrics` facade keeps one global recorder
//! per process, where several gateways can live in one (the tests). The
//! crate has no OpenMetrics encoder: [`openmetrics`] writes the same families in that format
//! (counter families named without `_total`, `info` for `apura_build_info`, `# EOF`).
//!
//! Counters opened (`apura_sse_connections_opened_total`) and gauges open
//! (`apura_sse_connections`) have distinct names: an OpenMetrics family named
//! `apura_sse_connections` would hold both the gauge and the counter's `_total` sample.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus::local::LocalHistogram;
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry, TextEncoder};

use crate::bus::now_millis;
use crate::fetch::{FetchError, Fetched};

/// The kinds of stream a delivery goes out on, a label of `apura_delivery_lag_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Sse = 0,
    Ws = 1,
}

/// Buckets of the publish→write lag: a change reaches an idle gateway's subscribers within
/// milliseconds, a fan-out to 19,000 of them spreads over tenths of a second, to 200,000 over
/// seconds, and past 10 s a subscriber is not keeping up. The steps are fine (25–50 ms up to
/// 0.5 s, 100 ms up to 1 s, 250 ms up to 2 s) where a p99 is read: `histogram_quantile`
/// interpolates linearly inside a bucket, and with these steps the gateway's p99 agrees with
/// the one its subscribers measure within 10 % (BENCHMARKS.md, "The gateway's lag
/// histogram against the subscribers'"). Finding the bucket is a linear scan of the bounds,
/// part of the 56 ns per delivery measured by `cargo bench --bench metrics`.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.35,
    0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0,
    30.0, 60.0,
];
/// Buckets of an ingest cycle: a consolidated file takes milliseconds to a second; a TSE poll
/// of hundreds of files, seconds to tens of seconds.
const CYCLE_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
/// Buckets of a feed fetch: a 304 in milliseconds, a large file in seconds, up to the fetch
/// timeout and its retries.
const FETCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of a TSE file's wait, from the progress row showing its city moved to the file's
/// fetch: a hot city's file within a cycle or two (seconds), the sweep's within a full sweep of
/// every city (minutes at the authority's rate).
const WAIT_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0,
    450.0, 600.0, 900.0, 1800.0,
];
/// Buckets of the detection delay, from a file's generation time (as the source stamps it) to
/// its parse: a second or two when polled every second, a cycle or a sweep for the TSE.
const DETECT_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0,
    600.0, 1800.0,
];
/// The sources' stamps are Brasília time (UTC-3, no daylight saving since 2019).
const SOURCE_UTC_OFFSET: Duration = Duration::from_secs(3 * 3600);

/// How long ago, at `now`, a file stamped `stamp` (the documents' `source_time`: local
/// Brasília time, ISO 8601 without zone) was generated. None for a stamp that does not parse or
/// lies in the future (the clocks disagree, or a replay of another night's files): such a delay
/// says nothing about this ingest.
pub fn detection_delay(stamp: &str, now: std::time::SystemTime) -> Option<Duration> {
    let local = humantime::parse_rfc3339_weak(stamp).ok()?;
    now.duration_since(local + SOURCE_UTC_OFFSET).ok()
}

/// Buckets of a call to the bus: a Redis round trip on a LAN is under a millisecond; a cycle
/// of a few megabytes, tens of milliseconds.
const BUS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The forms a stream's bytes take on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamForm {
    /// SSE frames and WebSocket messages as they are.
    Identity,
    /// SSE with `Content-Encoding: gzip`.
    Gzip,
    /// WebSocket messages compressed with permessage-deflate.
    Deflate,
    /// `patch` events and messages, whatever their encoding.
    Patch,
}

impl StreamForm {
    const ALL: [StreamForm; 4] = [
        StreamForm::Identity,
        StreamForm::Gzip,
        StreamForm::Deflate,
        StreamForm::Patch,
    ];

    /// The form's place in [`StreamForm::ALL`].
    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            StreamForm::Identity => "identity",
            StreamForm::Gzip => "gzip",
            StreamForm::Deflate => "deflate",
            StreamForm::Patch => "patch",
        }
    }
}

/// Every counter and gauge of one process. Connections carry no client addresses.
pub struct Metrics {
    pub sse_connections: AtomicI64,
    pub ws_connections: AtomicI64,
    pub subscriptions: AtomicI64,
    pub sse_connections_opened: AtomicU64,
    pub ws_connections_opened: AtomicU64,
    /// Documents applied to the hub (one per topic per cycle).
    pub updates_applied: AtomicU64,
    /// Frames written to SSE and WebSocket subscribers.
    pub deliveries: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// `bytes_sent` by the form the bytes took, in [`StreamForm::ALL`]'s order.
    stream_bytes: [AtomicU64; 4],
    pub get_requests: AtomicU64,
    pub not_modified: AtomicU64,
    /// Client mistakes: unknown topics, malformed messages, too many topics.
    pub client_errors: AtomicU64,
    /// Streaming connections refused with 503 (connection or connect-rate cap).
    pub refused_connections: AtomicU64,
    /// Connections dropped because a write made no progress within the write timeout (a
    /// client that stopped reading).
    pub write_timeouts: AtomicU64,
    /// Connections whose last write waits for the client to read (its socket buffer is full):
    /// the subscribers lagging right now.
    pub blocked_writes: AtomicI64,
    /// Client connections open, of every kind (streams, requests, waiting for a request).
    pub open_connections: AtomicI64,
    /// Connections answered 503 and closed at the door: the connection cap reached with none
    /// waiting to make room, or an address over its share.
    pub connections_refused: AtomicU64,
    /// Waiting connections (no complete request head, or idle) closed to make room at the cap.
    pub connections_evicted: AtomicU64,
    /// Connections closed for not sending a whole request head within `--head-timeout`.
    pub head_timeouts: AtomicU64,
    /// Kept-alive connections closed after `--idle-timeout` without a request.
    pub idle_timeouts: AtomicU64,
    /// Connections closed after several failing requests in a row.
    pub failing_connections_closed: AtomicU64,
    /// Connections closed for a missing or malformed PROXY protocol header.
    pub proxy_header_errors: AtomicU64,
    /// Unix ms of the newest document's publication, as this process knows it.
    pub newest_published_at: AtomicI64,
    /// Ingest: cycles published, cycles with nothing new, last cycle duration in µs.
    pub cycles_published: AtomicU64,
    pub cycles_unchanged: AtomicU64,
    pub documents_published: AtomicU64,
    pub last_cycle_micros: AtomicU64,
    /// Ingest: cities in a feed but not in the municipality list.
    pub unknown_cities: AtomicU64,
    /// Ingest: feed fetch or validation failures by kind.
    feed_errors: Mutex<Vec<(String, u64)>>,
    /// Ingest: cities whose latest results failed validation, held at their last good
    /// documents (or not published, if they never had any).
    pub quarantined_cities: AtomicI64,
    /// Ingest: a city's results refused by validation while the rest of its file was taken,
    /// by reason.
    city_rejections: Mutex<Vec<(String, u64)>>,
    /// Redis bus: messages that could not be decoded (skipped; the snapshot is reloaded).
    pub bus_decode_errors: AtomicU64,
    /// Redis bus: subscription connections lost and re-established.
    pub bus_reconnects: AtomicU64,
    /// Gateway: snapshot loads that failed (the bus unreachable, or its store unreadable);
    /// each is tried again.
    pub snapshot_load_failures: AtomicU64,
    /// WebSockets closed with 1008 for pulling snapshots past `--ws-snapshot-rate`.
    pub ws_budget_closes: AtomicU64,
    /// WebSockets closed with 1008 for sending past `--ws-message-rate`.
    pub ws_message_rate_closes: AtomicU64,
    /// Whether the bus answered this process's last call (1) or not (0).
    pub bus_up: AtomicI64,
    /// Ingest: `--interval`, in ms (0: not an ingest).
    pub poll_interval_millis: AtomicU64,
    /// A process that runs its own ingest on the embedded bus (`apura run`, `apura demo`):
    /// whether that ingest runs, exported as `apura_ingest_leader` (it has no lock to take and
    /// is the only one). Unset elsewhere: a Redis ingest exports its lock's state itself.
    pub embedded_ingest: OnceLock<AtomicBool>,
    /// Publish→write lag of live changes, by [`StreamKind`].
    delivery_lag: [Histogram; 2],
    ingest_cycle: Histogram,
    /// Gateway: publication→applied lag of each cycle received from the bus.
    cycle_arrival: Histogram,
    /// Feed fetches by source and outcome.
    fetches: HistogramVec,
    /// Calls to the bus by operation.
    bus_round_trips: HistogramVec,
    /// TSE: files' waits from their row moving to their fetch, by tier.
    tse_waits: HistogramVec,
    detections: HistogramVec,
    /// The histograms and the process metrics.
    registry: Registry,
}

/// The deliveries of one pass of the publisher over a change's streams, counted here and added
/// to the process's counters and histogram once, when the tally is dropped. The threads that
/// share a change's writes (see `crate::gateway::hub`) then do not take turns on the same
/// counters at every write.
pub struct Tally<'a> {
    metrics: &'a Metrics,
    deliveries: u64,
    bytes: [u64; 4],
    lag: [LocalHistogram; 2],
}

impl Tally<'_> {
    /// One document written to a subscriber of `kind`, as [`Metrics::delivered`].
    pub fn delivered(&mut self, kind: StreamKind, published_at: Option<i64>) {
        self.deliveries += 1;
        if let Some(at) = published_at {
            let lag = (now_millis() - at).max(0) as f64 / 1000.0;
            self.lag[kind as usize].observe(lag);
        }
    }

    /// `n` bytes written in `form`, as [`Metrics::wrote`].
    pub fn wrote(&mut self, form: StreamForm, n: usize) {
        self.bytes[form.index()] += n as u64;
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        let m = self.metrics;
        if self.deliveries > 0 {
            m.deliveries.fetch_add(self.deliveries, Relaxed);
        }
        let total: u64 = self.bytes.iter().sum();
        if total > 0 {
            m.bytes_sent.fetch_add(total, Relaxed);
            for (counter, n) in m.stream_bytes.iter().zip(self.bytes) {
                if n > 0 {
                    counter.fetch_add(n, Relaxed);
                }
            }
        }
        // Each `LocalHistogram` adds itself to its histogram as it is dropped.
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let lag = HistogramVec::new(
            HistogramOpts::new(
                "apura_delivery_lag_seconds",
                "Seconds from a document's publication to the write of its frame to a subscriber (live changes; snapshots on subscribing are not counted), by stream kind.",
            )
            .buckets(LAG_BUCKETS.to_vec()),
            &["kind"],
        )
        .expect("a valid histogram");
        let ingest_cycle = Histogram::with_opts(
            HistogramOpts::new(
                "apura_ingest_cycle_duration_seconds",
                "Duration of ingest cycles (every source polled, parsed, sliced, diffed and published).",
            )
            .buckets(CYCLE_BUCKETS.to_vec()),
        )
        .expect("a valid histogram");
        let cycle_arrival = Histogram::with_opts(
            HistogramOpts::new(
                "apura_cycle_arrival_seconds",
                "Gateway: seconds from a cycle's publication (the ingest's stamp, before its bus write) to its arrival at the gateway, read and decoded, before it is applied and written: the bus's share of the delivery lag.",
            )
            .buckets(LAG_BUCKETS.to_vec()),
        )
        .expect("a valid histogram");
        let fetches = HistogramVec::new(
            HistogramOpts::new(
                "apura_feed_fetch_duration_seconds",
                "Duration of feed fetches (retries included), by source (the kind of file) and outcome (modified, not_modified, not_found, or the error kind).",
            )
            .buckets(FETCH_BUCKETS.to_vec()),
            &["source", "outcome"],
        )
        .expect("a valid histogram");
        let bus_round_trips = HistogramVec::new(
            HistogramOpts::new(
                "apura_bus_call_duration_seconds",
                "Duration of calls to the bus (Redis round trips: publish a cycle, load the snapshots, take or renew the leader lock), by operation.",
            )
            .buckets(BUS_BUCKETS.to_vec()),
            &["op"],
        )
        .expect("a valid histogram");
        let tse_waits = HistogramVec::new(
            HistogramOpts::new(
                "apura_tse_file_wait_seconds",
                "TSE: seconds from a city's progress row showing a change to the fetch of its file, by tier (hot: capitals, second rounds, the most-subscribed cities; sweep: every other city, oldest change first).",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
            &["tier"],
        )
        .expect("a valid histogram");
        let detections = HistogramVec::new(
            HistogramOpts::new(
                "apura_source_detection_delay_seconds",
                "Ingest: seconds from a file's generation, as the source stamps it (Brasília time), to its parse, by source (consolidated, tse); files stamped in the future are not counted.",
            )
            .buckets(DETECT_BUCKETS.to_vec()),
            &["source"],
        )
        .expect("a valid histogram");
        for c in [
            Box::new(lag.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tse_waits.clone()),
            Box::new(detections.clone()),
            Box::new(ingest_cycle.clone()),
            Box::new(cycle_arrival.clone()),
            Box::new(fetches.clone()),
            Box::new(bus_round_trips.clone()),
            Box::new(ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("distinct metric names");
        }
        Metrics {
            sse_connections: AtomicI64::default(),
            ws_connections: AtomicI64::default(),
            subscriptions: AtomicI64::default(),
            sse_connections_opened: AtomicU64::default(),
            ws_connections_opened: AtomicU64::default(),
            updates_applied: AtomicU64::default(),
            deliveries: AtomicU64::default(),
            bytes_sent: AtomicU64::default(),
            stream_bytes: Default::default(),
            get_requests: AtomicU64::default(),
            not_modified: AtomicU64::default(),
            client_errors: AtomicU64::default(),
            refused_connections: AtomicU64::default(),
            write_timeouts: AtomicU64::default(),
            blocked_writes: AtomicI64::default(),
            open_connections: AtomicI64::default(),
            connections_refused: AtomicU64::default(),
            connections_evicted: AtomicU64::default(),
            head_timeouts: AtomicU64::default(),
            idle_timeouts: AtomicU64::default(),
            failing_connections_closed: AtomicU64::default(),
            proxy_header_errors: AtomicU64::default(),
            newest_published_at: AtomicI64::default(),
            cycles_published: AtomicU64::default(),
            cycles_unchanged: AtomicU64::default(),
            documents_published: AtomicU64::default(),
            last_cycle_micros: AtomicU64::default(),
            unknown_cities: AtomicU64::default(),
            feed_errors: Mutex::default(),
            quarantined_cities: AtomicI64::default(),
            city_rejections: Mutex::default(),
            bus_decode_errors: AtomicU64::default(),
            bus_reconnects: AtomicU64::default(),
            snapshot_load_failures: AtomicU64::default(),
            ws_budget_closes: AtomicU64::default(),
            ws_message_rate_closes: AtomicU64::default(),
            bus_up: AtomicI64::new(1),
            poll_interval_millis: AtomicU64::default(),
            embedded_ingest: OnceLock::new(),
            delivery_lag: [
                lag.with_label_values(&["sse"]),
                lag.with_label_values(&["ws"]),
            ],
            ingest_cycle,
            cycle_arrival,
            fetches,
            bus_round_trips,
            tse_waits,
            detections,
            registry,
        }
    }
}

/// Every kind `apura_feed_errors_total` counts (docs/hardening.md): a fetch's
/// ([`crate::fetch::FetchError::kind`]), a file's ([`crate::feed::FeedError::kind`]), a file
/// dated behind or too far ahead of the accepted one, one not there, an ingest that cannot
/// start yet, and a file taken with cities missing from it.
pub const FEED_ERROR_KINDS: &[&str] = &[
    "http_status",
    "network",
    "too_large",
    "file",
    "malformed",
    "invalid",
    "stale",
    "time_leap",
    "not_found",
    "startup",
    "missing_cities",
];

impl Metrics {
    /// An ingest of `source` (`consolidated`, `tse`) starts: its error counters and detection
    /// delays are served from 0, so that the first error shows in a `rate()` or `increase()`
    /// (a series that first appears at 1 shows none).
    pub fn ingest_started(&self, source: &str) {
        for (counts, labels) in [
            (&self.feed_errors, FEED_ERROR_KINDS),
            (&self.city_rejections, crate::feed::FeedError::REASONS),
        ] {
            let mut counts = counts.lock().expect("metrics poisoned");
            for label in labels {
                if !counts.iter().any(|(k, _)| k == label) {
                    counts.push((label.to_string(), 0));
                }
            }
        }
        self.detections.with_label_values(&[source]);
    }

    /// Count one rejected or failed feed, by a short kind label.
    pub fn feed_error(&self, kind: &str) {
        bump(&self.feed_errors, kind);
    }

    /// Failed feeds of one kind so far.
    pub fn feed_errors(&self, kind: &str) -> u64 {
        read(&self.feed_errors, kind)
    }

    /// Count one city's results refused by validation, by a short reason label.
    pub fn city_rejected(&self, reason: &str) {
        bump(&self.city_rejections, reason);
    }

    /// City results refused for one reason so far.
    pub fn city_rejections(&self, reason: &str) -> u64 {
        read(&self.city_rejections, reason)
    }

    /// Count `n` bytes written to a streaming subscriber in `form`.
    pub fn wrote(&self, form: StreamForm, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Relaxed);
        self.stream_bytes[form.index()].fetch_add(n as u64, Relaxed);
    }

    /// A tally of the deliveries of one pass of the publisher, added here when it is dropped.
    pub fn tally(&self) -> Tally<'_> {
        Tally {
            metrics: self,
            deliveries: 0,
            bytes: [0; 4],
            lag: [self.delivery_lag[0].local(), self.delivery_lag[1].local()],
        }
    }

    /// Bytes written in `form` so far.
    pub fn stream_bytes(&self, form: StreamForm) -> u64 {
        self.stream_bytes[form.index()].load(Relaxed)
    }

    /// Remember the publication time of a document if it is the newest seen.
    pub fn saw_published_at(&self, t: i64) {
        self.newest_published_at.fetch_max(t, Relaxed);
    }

    /// Record one document written to a subscriber of `kind`: a delivery, and, for a live change
    /// (not a snapshot sent on subscribing), its lag since publication.
    pub fn delivered(&self, kind: StreamKind, published_at: Option<i64>) {
        self.deliveries.fetch_add(1, Relaxed);
        if let Some(at) = published_at {
            let lag = (now_millis() - at).max(0) as f64 / 1000.0;
            self.delivery_lag[kind as usize].observe(lag);
        }
    }

    /// Record a cycle from the bus arrived at the gateway, published at `published_at`.
    pub fn cycle_arrived(&self, published_at: i64) {
        let lag = (now_millis() - published_at).max(0) as f64 / 1000.0;
        self.cycle_arrival.observe(lag);
    }

    /// Record one ingest cycle (every source polled) that took `took`.
    pub fn cycle_took(&self, took: Duration) {
        self.last_cycle_micros
            .store(took.as_micros() as u64, Relaxed);
        self.ingest_cycle.observe(took.as_secs_f64());
    }

    /// Record a TSE file fetched `waited` after its row moved; `hot` for the first tier.
    pub fn tse_waited(&self, hot: bool, waited: Duration) {
        self.tse_waits
            .with_label_values(&[if hot { "hot" } else { "sweep" }])
            .observe(waited.as_secs_f64());
    }

    /// Record the detection delay of a file of `source` (`consolidated`, `tse`) stamped `stamp`,
    /// parsed now ([`detection_delay`]).
    pub fn detected(&self, source: &str, stamp: &str) {
        if let Some(delay) = detection_delay(stamp, std::time::SystemTime::now()) {
            self.detections
                .with_label_values(&[source])
                .observe(delay.as_secs_f64());
        }
    }

    /// Record one feed fetch from `source` (a kind of file: a bounded label) that took `took`.
    pub fn fetched(&self, source: &str, took: Duration, result: &Result<Fetched, FetchError>) {
        let outcome = match result {
            Ok(Fetched::Modified(_)) => "modified",
            Ok(Fetched::NotModified) => "not_modified",
            Ok(Fetched::NotFound) => "not_found",
            Err(e) => e.kind(),
        };
        self.fetches
            .with_label_values(&[source, outcome])
            .observe(took.as_secs_f64());
    }

    /// Record one call to the bus (`op`) that took `took`, and whether it worked:
    /// `apura_bus_up` follows the last call.
    pub fn bus_call(&self, op: &str, took: Duration, ok: bool) {
        self.bus_round_trips
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
        self.bus_reachable(ok);
    }

    /// Whether the bus answered the last call.
    pub fn bus_reachable(&self, up: bool) {
        self.bus_up.store(i64::from(up), Relaxed);
    }

    /// Samples of the delivery lag histogram of `kind` so far.
    pub fn lag_samples(&self, kind: StreamKind) -> u64 {
        self.delivery_lag[kind as usize].get_sample_count()
    }

    /// Every metric, `extra` gauges of the caller's among them, as families sorted by name.
    pub fn families(&self, extra: &[Extra]) -> Vec<MetricFamily> {
        let mut out = self.registry.gather();
        let mut one = |name: &str, help: &str, kind: MetricType, value: f64| {
            out.push(family(name, help, kind, vec![sample(&[], kind, value)]));
        };
        use MetricType::{COUNTER, GAUGE};
        if let Some(running) = self.embedded_ingest.get() {
            one(
                "apura_ingest_leader",
                LEADER_HELP,
                GAUGE,
                f64::from(u8::from(running.load(Relaxed))),
            );
        }
        let gauges: [(&str, &str, &AtomicI64); 7] = [
            (
                "apura_sse_connections",
                "Open SSE connections.",
                &self.sse_connections,
            ),
            (
                "apura_ws_connections",
                "Open WebSocket connections.",
                &self.ws_connections,
            ),
            (
                "apura_subscriptions",
                "Topic subscriptions held by open connections.",
                &self.subscriptions,
            ),
            (
                "apura_blocked_writes",
                "Connections whose last write waits for the client to read (lagging subscribers).",
                &self.blocked_writes,
            ),
            (
                "apura_open_connections",
                "Open client connections of every kind.",
                &self.open_connections,
            ),
            (
                "apura_quarantined_cities",
                "Cities whose latest results failed validation: they keep their last good documents.",
                &self.quarantined_cities,
            ),
            (
                "apura_bus_up",
                "Whether the bus (Redis) answered the last call of this process (1) or not (0).",
                &self.bus_up,
            ),
        ];
        for (name, help, value) in gauges {
            one(name, help, GAUGE, value.load(Relaxed) as f64);
        }
        let counters: [(&str, &str, &AtomicU64); 25] = [
            (
                "apura_sse_connections_opened_total",
                "SSE connections accepted.",
                &self.sse_connections_opened,
            ),
            (
                "apura_ws_connections_opened_total",
                "WebSocket connections accepted.",
                &self.ws_connections_opened,
            ),
            (
                "apura_updates_applied_total",
                "Documents applied to the topic hub.",
                &self.updates_applied,
            ),
            (
                "apura_deliveries_total",
                "Documents written to SSE and WebSocket subscribers.",
                &self.deliveries,
            ),
            (
                "apura_bytes_sent_total",
                "Bytes of documents written to streaming subscribers.",
                &self.bytes_sent,
            ),
            (
                "apura_get_requests_total",
                "Document GET requests.",
                &self.get_requests,
            ),
            (
                "apura_not_modified_total",
                "GET requests answered 304.",
                &self.not_modified,
            ),
            (
                "apura_client_errors_total",
                "Requests or messages refused as malformed or unknown: a malformed request or message, an unknown topic, too many topics, a head too large (not a path that is not found, such as a browser's favicon.ico, nor a method not allowed).",
                &self.client_errors,
            ),
            (
                "apura_refused_connections_total",
                "Streaming connections refused with 503 (connection or connect-rate cap).",
                &self.refused_connections,
            ),
            (
                "apura_write_timeouts_total",
                "Connections dropped because the client read nothing within the write timeout.",
                &self.write_timeouts,
            ),
            (
                "apura_connections_refused_total",
                "Connections answered 503 at the door (cap reached, none waiting; or an address over its share).",
                &self.connections_refused,
            ),
            (
                "apura_connections_evicted_total",
                "Connections waiting for a request closed to make room at the connection cap.",
                &self.connections_evicted,
            ),
            (
                "apura_head_timeouts_total",
                "Connections closed for not sending a whole request head within --head-timeout.",
                &self.head_timeouts,
            ),
            (
                "apura_idle_timeouts_total",
                "Kept-alive connections closed after --idle-timeout without a request.",
                &self.idle_timeouts,
            ),
            (
                "apura_failing_connections_closed_total",
                "Connections closed after several failing requests in a row.",
                &self.failing_connections_closed,
            ),
            (
                "apura_proxy_header_errors_total",
                "Connections closed for a missing or malformed PROXY protocol header.",
                &self.proxy_header_errors,
            ),
            (
                "apura_cycles_published_total",
                "Ingest cycles that published changes.",
                &self.cycles_published,
            ),
            (
                "apura_cycles_unchanged_total",
                "Ingest cycles with nothing new to publish.",
                &self.cycles_unchanged,
            ),
            (
                "apura_documents_published_total",
                "Documents published by ingest.",
                &self.documents_published,
            ),
            (
                "apura_unknown_cities_total",
                "Cities found in a feed but not in the municipality list.",
                &self.unknown_cities,
            ),
            (
                "apura_bus_decode_errors_total",
                "Bus messages that could not be decoded and were skipped.",
                &self.bus_decode_errors,
            ),
            (
                "apura_bus_reconnects_total",
                "Bus subscription connections lost and re-established.",
                &self.bus_reconnects,
            ),
            (
                "apura_snapshot_load_failures_total",
                "Gateway snapshot loads that failed (each is tried again).",
                &self.snapshot_load_failures,
            ),
            (
                "apura_ws_snapshot_budget_closes_total",
                "WebSockets closed with 1008 for pulling snapshots past --ws-snapshot-rate.",
                &self.ws_budget_closes,
            ),
            (
                "apura_ws_message_rate_closes_total",
                "WebSockets closed with 1008 for sending messages past --ws-message-rate.",
                &self.ws_message_rate_closes,
            ),
        ];
        for (name, help, value) in counters {
            one(name, help, COUNTER, value.load(Relaxed) as f64);
        }
        one(
            "apura_ingest_cycle_seconds",
            "Duration of the last ingest cycle (fetch, parse, slice, diff, publish).",
            GAUGE,
            self.last_cycle_micros.load(Relaxed) as f64 / 1e6,
        );
        let newest = self.newest_published_at.load(Relaxed);
        let age = if newest > 0 {
            (now_millis() - newest) as f64 / 1000.0
        } else {
            -1.0
        };
        one(
            "apura_data_age_seconds",
            "Seconds since the newest document was published (-1: none yet).",
            GAUGE,
            age,
        );
        let interval = self.poll_interval_millis.load(Relaxed);
        if interval > 0 {
            one(
                "apura_poll_interval_seconds",
                "How often the ingest polls its feed (--interval).",
                GAUGE,
                interval as f64 / 1000.0,
            );
        }
        for (name, help, value) in extra {
            one(name, help, GAUGE, *value);
        }
        out.push(family(
            "apura_build_info",
            "The version of apura this process runs.",
            GAUGE,
            vec![sample(
                &[("version", env!("CARGO_PKG_VERSION"))],
                GAUGE,
                1.0,
            )],
        ));
        out.push(family(
            "apura_stream_bytes_total",
            "Bytes written to streaming subscribers by the form they took (identity: SSE and WebSocket as they are; gzip: SSE with Content-Encoding gzip; deflate: WebSocket with permessage-deflate; patch: patch events and messages, in any of those).",
            COUNTER,
            StreamForm::ALL
                .iter()
                .map(|f| sample(&[("form", f.label())], COUNTER, self.stream_bytes(*f) as f64))
                .collect(),
        ));
        let labelled = |counts: &Mutex<Vec<(String, u64)>>, label: &str| -> Vec<proto::Metric> {
            counts
                .lock()
                .expect("metrics poisoned")
                .iter()
                .map(|(v, n)| sample(&[(label, v)], COUNTER, *n as f64))
                .collect()
        };
        out.push(family(
            "apura_feed_errors_total",
            "Feed files rejected or not fetched, by kind (fetch: http_status, network, too_large, file; content: malformed, invalid, stale; not_found: the file is not there; startup: the municipality list or configuration could not be loaded, retried; accepted with cities kept from the previous file: missing_cities).",
            COUNTER,
            labelled(&self.feed_errors, "kind"),
        ));
        out.push(family(
            "apura_city_rejections_total",
            "City results refused by validation while the rest of the file was taken, by reason (the city keeps its last good documents).",
            COUNTER,
            labelled(&self.city_rejections, "reason"),
        ));
        out.retain(|f| !f.get_metric().is_empty());
        out.sort_by(|a, b| a.name().cmp(b.name()));
        out
    }

    /// The body and content type of `/metrics` for a scraper whose `Accept` header is `accept`:
    /// OpenMetrics if it asks for it, else the text format 0.0.4.
    /// `labelled` families of the caller's (see [`labelled_gauge`]) are added to the rest.
    pub fn exposition(
        &self,
        accept: Option<&str>,
        extra: &[Extra],
        labelled: Vec<MetricFamily>,
    ) -> (&'static str, String) {
        let mut families = self.families(extra);
        families.extend(labelled.into_iter().filter(|f| !f.get_metric().is_empty()));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        if accept.is_some_and(wants_openmetrics) {
            (OPENMETRICS, openmetrics(&families))
        } else {
            (TEXT, text(&families))
        }
    }
}

/// The help of `apura_ingest_leader`, on a Redis ingest and on an embedded one.
pub const LEADER_HELP: &str =
    "Whether this ingest leads: holds the leader lock (Redis), or runs (embedded bus).";

/// A gauge a caller adds to `/metrics`: name, help, value.
pub type Extra = (&'static str, &'static str, f64);

/// A gauge family of one label, one sample per `(label value, value)`: the caller bounds how
/// many label values there are.
pub fn labelled_gauge(
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (String, f64)>,
) -> MetricFamily {
    let samples = values
        .into_iter()
        .map(|(v, n)| sample(&[(label, &v)], MetricType::GAUGE, n))
        .collect();
    family(name, help, MetricType::GAUGE, samples)
}

/// The content type of the text format 0.0.4.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics 1.0.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (and does not refuse it with `q=0`).
fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        parts.next() == Some("application/openmetrics-text")
            && !parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f64>().ok()) == Some(0.0))
    })
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn sample(labels: &[(&str, &str)], kind: MetricType, value: f64) -> proto::Metric {
    let mut m = proto::Metric::from_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = proto::LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.to_string());
                l
            })
            .collect(),
    );
    if kind == MetricType::COUNTER {
        let mut c = proto::Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

/// `families` in the text format 0.0.4, by the crate's encoder.
pub fn text(families: &[MetricFamily]) -> String {
    TextEncoder::new()
        .encode_to_string(families)
        .expect("metric families encode")
}

/// `families` in OpenMetrics 1.0 text: a counter family is named without `_total` and its
/// sample with it; a gauge named `*_info` of value 1 is an `info` family; `# EOF` ends it.
pub fn openmetrics(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(8192);
    for f in families {
        let name = f.name();
        let metrics = f.get_metric();
        let info = f.get_field_type() == MetricType::GAUGE
            && name.ends_with("_info")
            && metrics.iter().all(|m| m.get_gauge().get_value() == 1.0);
        let (base, kind) = match f.get_field_type() {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::GAUGE if info => (name.strip_suffix("_info").unwrap_or(name), "info"),
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let help = f
            .help()
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('"', "\\\"");
        let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} {kind}");
        for m in metrics {
            let labels = m.get_label();
            match f.get_field_type() {
                MetricType::COUNTER => line(
                    &mut out,
                    base,
                    "_total",
                    labels,
                    None,
                    m.get_counter().get_value(),
                ),
                MetricType::GAUGE if info => line(&mut out, base, "_info", labels, None, 1.0),
                MetricType::GAUGE => {
                    line(&mut out, base, "", labels, None, m.get_gauge().get_value())
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let le = go_float(b.upper_bound());
                        line(
                            &mut out,
                            base,
                            "_bucket",
                            labels,
                            Some(("le", &le)),
                            b.cumulative_count() as f64,
                        );
                    }
                    let count = h.get_sample_count() as f64;
                    line(
                        &mut out,
                        base,
                        "_bucket",
                        labels,
                        Some(("le", "+Inf")),
                        count,
                    );
                    line(&mut out, base, "_count", labels, None, count);
                    line(&mut out, base, "_sum", labels, None, h.get_sample_sum());
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let at = go_float(q.quantile());
                        line(
                            &mut out,
                            base,
                            "",
                            labels,
                            Some(("quantile", &at)),
                            q.value(),
                        );
                    }
                    line(
                        &mut out,
                        base,
                        "_count",
                        labels,
                        None,
                        s.sample_count() as f64,
                    );
                    line(&mut out, base, "_sum", labels, None, s.sample_sum());
                }
                // None here: every family above has a type.
                MetricType::UNTYPED => {}
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn line(
    out: &mut String,
    base: &str,
    suffix: &str,
    labels: &[proto::LabelPair],
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(base);
    out.push_str(suffix);
    let pairs = labels.iter().map(|l| (l.name(), l.value())).chain(extra);
    let mut first = true;
    for (k, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        let v = v
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('"', "\\\"");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    if !first {
        out.push('}');
    }
    let _ = writeln!(out, " {}", go_float(value));
}

/// A float as Prometheus writes it: `+Inf`, `-Inf`, `NaN`, else the shortest decimal.
fn go_float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.is_nan() {
        "NaN".into()
    } else {
        v.to_string()
    }
}

fn bump(counters: &Mutex<Vec<(String, u64)>>, label: &str) {
    let mut counters = counters.lock().expect("metrics poisoned");
    match counters.iter_mut().find(|(k, _)| k == label) {
        Some((_, n)) => *n += 1,
        None => counters.push((label.to_string(), 1)),
    }
}

fn read(counters: &Mutex<Vec<(String, u64)>>, label: &str) -> u64 {
    let counters = counters.lock().expect("metrics poisoned");
    counters.iter().find(|(k, _)| k == label).map_or(0, |e| e.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_in_brasilia_time_is_read_as_utc_minus_three() {
        let now = humantime::parse_rfc3339("2028-10-01T22:12:30Z").unwrap();
        assert_eq!(
            detection_delay("2028-10-01T19:12:00", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(detection_delay("2028-10-01T19:13:00", now), None);
        assert_eq!(detection_delay("01/10/2028 19:12:00", now), None);
    }

    #[test]
    fn openmetrics_only_for_a_scraper_that_asks_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(prometheus));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(!wants_openmetrics("text/plain, */*"));
        assert!(!wants_openmetrics(
            "application/openmetrics-text; q=0, text/plain"
        ));
    }

    #[test]
    fn a_counter_family_drops_total_in_openmetrics_and_keeps_it_in_text() {
        let m = Metrics::default();
        m.sse_connections.store(2, Relaxed);
        m.sse_connections_opened.store(5, Relaxed);
        m.delivered(StreamKind::Ws, Some(now_millis() - 20));
        let families = m.families(&[]);
        let om = openmetrics(&families);
        assert!(om.contains("# TYPE apura_sse_connections gauge\napura_sse_connections 2\n"));
        assert!(om.contains(
            "# TYPE apura_sse_connections_opened counter\napura_sse_connections_opened_total 5\n"
        ));
        assert!(om.contains("# TYPE apura_build info\napura_build_info{version=\""));
        assert!(om.contains("apura_delivery_lag_seconds_bucket{kind=\"ws\",le=\"+Inf\"} 1\n"));
        assert!(om.ends_with("# EOF\n"));
        let text = text(&families);
        assert!(text.contains(
            "# TYPE apura_sse_connections_opened_total counter\napura_sse_connections_opened_total 5\n"
        ));
        assert!(text.contains("apura_delivery_lag_seconds_count{kind=\"ws\"} 1\n"));
    }
}
