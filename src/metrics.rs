//! Process metrics in the Prometheus text format, kept in atomics so the hot paths stay lock-free.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::bus::now_millis;

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
#[derive(Default)]
pub struct Metrics {
    pub sse_connections: AtomicI64,
    pub ws_connections: AtomicI64,
    pub subscriptions: AtomicI64,
    pub sse_connections_total: AtomicU64,
    pub ws_connections_total: AtomicU64,
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
}

impl Metrics {
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
        let i = StreamForm::ALL
            .iter()
            .position(|f| *f == form)
            .expect("a form");
        self.stream_bytes[i].fetch_add(n as u64, Relaxed);
    }

    /// Bytes written in `form` so far.
    pub fn stream_bytes(&self, form: StreamForm) -> u64 {
        let i = StreamForm::ALL
            .iter()
            .position(|f| *f == form)
            .expect("a form");
        self.stream_bytes[i].load(Relaxed)
    }

    /// Remember the publication time of a document if it is the newest seen.
    pub fn saw_published_at(&self, t: i64) {
        self.newest_published_at.fetch_max(t, Relaxed);
    }

    /// Render every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP apura_{name} {help}\n# TYPE apura_{name} {kind}\napura_{name} {value}"
            );
        };
        gauge(
            "sse_connections",
            "Open SSE connections.",
            "gauge",
            self.sse_connections.load(Relaxed).to_string(),
        );
        gauge(
            "ws_connections",
            "Open WebSocket connections.",
            "gauge",
            self.ws_connections.load(Relaxed).to_string(),
        );
        gauge(
            "subscriptions",
            "Topic subscriptions held by open connections.",
            "gauge",
            self.subscriptions.load(Relaxed).to_string(),
        );
        gauge(
            "sse_connections_total",
            "SSE connections accepted.",
            "counter",
            self.sse_connections_total.load(Relaxed).to_string(),
        );
        gauge(
            "ws_connections_total",
            "WebSocket connections accepted.",
            "counter",
            self.ws_connections_total.load(Relaxed).to_string(),
        );
        gauge(
            "updates_applied_total",
            "Documents applied to the topic hub.",
            "counter",
            self.updates_applied.load(Relaxed).to_string(),
        );
        gauge(
            "deliveries_total",
            "Documents written to SSE and WebSocket subscribers.",
            "counter",
            self.deliveries.load(Relaxed).to_string(),
        );
        gauge(
            "bytes_sent_total",
            "Bytes of documents written to streaming subscribers.",
            "counter",
            self.bytes_sent.load(Relaxed).to_string(),
        );
        gauge(
            "get_requests_total",
            "Document GET requests.",
            "counter",
            self.get_requests.load(Relaxed).to_string(),
        );
        gauge(
            "not_modified_total",
            "GET requests answered 304.",
            "counter",
            self.not_modified.load(Relaxed).to_string(),
        );
        gauge(
            "client_errors_total",
            "Requests or messages refused as malformed or unknown.",
            "counter",
            self.client_errors.load(Relaxed).to_string(),
        );
        gauge(
            "refused_connections_total",
            "Streaming connections refused with 503 (connection or connect-rate cap).",
            "counter",
            self.refused_connections.load(Relaxed).to_string(),
        );
        gauge(
            "blocked_writes",
            "Connections whose last write waits for the client to read (lagging subscribers).",
            "gauge",
            self.blocked_writes.load(Relaxed).to_string(),
        );
        gauge(
            "write_timeouts_total",
            "Connections dropped because the client read nothing within the write timeout.",
            "counter",
            self.write_timeouts.load(Relaxed).to_string(),
        );
        gauge(
            "open_connections",
            "Open client connections of every kind.",
            "gauge",
            self.open_connections.load(Relaxed).to_string(),
        );
        for (name, help, value) in [
            (
                "connections_refused_total",
                "Connections answered 503 at the door (cap reached, none waiting; or an address over its share).",
                &self.connections_refused,
            ),
            (
                "connections_evicted_total",
                "Connections waiting for a request closed to make room at the connection cap.",
                &self.connections_evicted,
            ),
            (
                "head_timeouts_total",
                "Connections closed for not sending a whole request head within --head-timeout.",
                &self.head_timeouts,
            ),
            (
                "idle_timeouts_total",
                "Kept-alive connections closed after --idle-timeout without a request.",
                &self.idle_timeouts,
            ),
            (
                "failing_connections_closed_total",
                "Connections closed after several failing requests in a row.",
                &self.failing_connections_closed,
            ),
            (
                "proxy_header_errors_total",
                "Connections closed for a missing or malformed PROXY protocol header.",
                &self.proxy_header_errors,
            ),
        ] {
            gauge(name, help, "counter", value.load(Relaxed).to_string());
        }
        gauge(
            "cycles_published_total",
            "Ingest cycles that published changes.",
            "counter",
            self.cycles_published.load(Relaxed).to_string(),
        );
        gauge(
            "cycles_unchanged_total",
            "Ingest cycles with nothing new to publish.",
            "counter",
            self.cycles_unchanged.load(Relaxed).to_string(),
        );
        gauge(
            "documents_published_total",
            "Documents published by ingest.",
            "counter",
            self.documents_published.load(Relaxed).to_string(),
        );
        gauge(
            "ingest_cycle_seconds",
            "Duration of the last ingest cycle (fetch, parse, slice, diff, publish).",
            "gauge",
            format!("{:.6}", self.last_cycle_micros.load(Relaxed) as f64 / 1e6),
        );
        gauge(
            "unknown_cities_total",
            "Cities found in a feed but not in the municipality list.",
            "counter",
            self.unknown_cities.load(Relaxed).to_string(),
        );
        gauge(
            "bus_decode_errors_total",
            "Bus messages that could not be decoded and were skipped.",
            "counter",
            self.bus_decode_errors.load(Relaxed).to_string(),
        );
        gauge(
            "bus_reconnects_total",
            "Bus subscription connections lost and re-established.",
            "counter",
            self.bus_reconnects.load(Relaxed).to_string(),
        );
        gauge(
            "snapshot_load_failures_total",
            "Gateway snapshot loads that failed (each is tried again).",
            "counter",
            self.snapshot_load_failures.load(Relaxed).to_string(),
        );
        gauge(
            "ws_snapshot_budget_closes_total",
            "WebSockets closed with 1008 for pulling snapshots past --ws-snapshot-rate.",
            "counter",
            self.ws_budget_closes.load(Relaxed).to_string(),
        );
        gauge(
            "quarantined_cities",
            "Cities whose latest results failed validation: they keep their last good documents.",
            "gauge",
            self.quarantined_cities.load(Relaxed).to_string(),
        );
        let newest = self.newest_published_at.load(Relaxed);
        let age = if newest > 0 {
            (now_millis() - newest) as f64 / 1000.0
        } else {
            -1.0
        };
        gauge(
            "data_age_seconds",
            "Seconds since the newest document was published (-1: none yet).",
            "gauge",
            format!("{age:.3}"),
        );
        let _ = writeln!(
            out,
            "# HELP apura_stream_bytes_total Bytes written to streaming subscribers by the form they took (identity: SSE and WebSocket as they are; gzip: SSE with Content-Encoding gzip; deflate: WebSocket with permessage-deflate; patch: patch events and messages, in any of those).\n# TYPE apura_stream_bytes_total counter"
        );
        for form in StreamForm::ALL {
            let n = self.stream_bytes(form);
            let _ = writeln!(
                out,
                "apura_stream_bytes_total{{form=\"{}\"}} {n}",
                form.label()
            );
        }
        let _ = writeln!(
            out,
            "# HELP apura_feed_errors_total Feed files rejected or not fetched, by kind (fetch: http_status, network, too_large, file; content: malformed, invalid, stale; not_found: the file is not there; startup: the municipality list or configuration could not be loaded, retried; accepted with cities kept from the previous file: missing_cities).\n# TYPE apura_feed_errors_total counter"
        );
        for (kind, n) in self.feed_errors.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(out, "apura_feed_errors_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP apura_city_rejections_total City results refused by validation while the rest of the file was taken, by reason (the city keeps its last good documents).\n# TYPE apura_city_rejections_total counter"
        );
        for (reason, n) in self
            .city_rejections
            .lock()
            .expect("metrics poisoned")
            .iter()
        {
            let _ = writeln!(
                out,
                "apura_city_rejections_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
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
