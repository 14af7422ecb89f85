//! The options of `apura-load run`, shared by the parent and its worker processes, and their
//! checks.

use std::path::PathBuf;
use std::time::Duration;

use crate::net::{parse_sources, parse_target};

/// Most subscribers one worker may hold: the process limit is 20,000 open files, and a worker
/// also needs descriptors for its runtime, pipes and GET pollers.
pub const MAX_PER_WORKER: usize = 19_500;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Server to load (IPv4 loopback `IP:PORT`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub target: String,
    /// SSE subscribers, all workers together.
    #[arg(long, default_value_t = 1_000)]
    pub sse: usize,
    /// WebSocket subscribers, all workers together.
    #[arg(long, default_value_t = 1_000)]
    pub ws: usize,
    /// Keep-alive GET pollers, all workers together (started once the ramp is done).
    #[arg(long, default_value_t = 0)]
    pub get_conns: usize,
    /// GET requests per second of each poller; 0 sends them back to back.
    #[arg(long, default_value_t = 1.0)]
    pub get_rate: f64,
    /// Worker processes (each keeps at most 19,500 subscribers).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// New subscribers per second, all workers together.
    #[arg(long, default_value_t = 2_000.0)]
    pub connect_rate: f64,
    /// How long to hold the subscribers once the ramp is done.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Hard limit on a worker's whole run (ramp + hold); the run stops by itself then.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_duration: Duration,
    /// Loopback source addresses, a range and/or a list: `127.0.0.2-127.0.0.17,127.0.0.40`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.17")]
    pub sources: String,
    /// SSE request path; `{topic}` is replaced by the topic.
    #[arg(long, default_value = "/events?topics={topic}")]
    pub sse_path: String,
    /// WebSocket path; `{topic}` is replaced by the topic.
    #[arg(long, default_value = "/ws")]
    pub ws_path: String,
    /// Text message sent once the WebSocket is open (`{topic}` replaced); empty sends none.
    #[arg(
        long,
        default_value = r#"{"type":"subscribe","topics":["{topic}"],"since":0}"#
    )]
    pub ws_subscribe: String,
    /// Ask for compressed streams: SSE with `Accept-Encoding: gzip`, WebSocket offering
    /// `permessage-deflate` without context takeover; what arrives is inflated before it is read.
    #[arg(long)]
    pub compress: bool,
    /// GET path of the pollers; `{topic}` is replaced by the topic.
    #[arg(long, default_value = "/cities/{topic}.json")]
    pub get_path: String,
    /// Cities index to take topics from, `IP:PORT/PATH` (default: the target's /cities.json).
    #[arg(long)]
    pub index: Option<String>,
    /// Topics from a file instead, one a line.
    #[arg(long)]
    pub topics_file: Option<PathBuf>,
    /// Only topics starting with this.
    #[arg(long, default_value = "mayors-")]
    pub topic_prefix: String,
    /// The hot topic (São Paulo is ~25 % of views on count night).
    #[arg(long, default_value = "mayors-sp-sao-paulo")]
    pub hot_topic: String,
    /// Share of clients on the hot topic.
    #[arg(long, default_value_t = 0.25)]
    pub hot_share: f64,
    /// Zipf exponent over the other topics (capitals ranked first).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// Time allowed for connect + handshake of one subscriber.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// What makes deliveries one publication cycle in the report: `published-at` (apura: a
    /// large change goes out as several consecutive versions that share one `published_at`,
    /// and its first delivery and spread are those of the whole change) or `version` (the nchan
    /// publisher numbers its cycles, and may stamp each message with its own time).
    #[arg(long, value_enum, default_value_t = CycleKey::PublishedAt)]
    pub cycle_key: CycleKey,
    /// Read in rounds: each worker sleeps this long between rounds of its sockets instead of
    /// waiting in `epoll_wait` for the next byte (`0s`: wait, the default). On loopback a
    /// waiting reader is woken by the server's every write, in the server's system call and on
    /// the server's cores; a client on another machine costs the server none of that. A round
    /// adds at most this much to every latency measured.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub read_pace: Duration,
    /// Seed of the topic draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server process ids to sample every second (RSS, PSS, CPU); comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub watch_pid: Vec<u32>,
    /// Gateway metrics to read once the ramp is done and again at the end, `IP:PORT/PATH`
    /// (path `metrics` when left out), repeated or comma-separated for several gateways: the
    /// report sets their `apura_delivery_lag_seconds` p99 over the hold beside the subscribers'.
    #[arg(long, value_delimiter = ',')]
    pub server_metrics: Vec<String>,
    /// A name for this run in the report.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// JSON report.
    #[arg(long, default_value = "loadtest-result.json")]
    pub out: PathBuf,
    /// SVG plot (default: the JSON path with .svg).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// The simulator's tick list (`apura simulate`'s `GET /ticks`), `IP:PORT/PATH`: read once
    /// the hold is over, it turns the `source_time` of each document received into freshness,
    /// from a file coming out to a subscriber holding it (the `freshness` section of the report).
    #[arg(long)]
    pub source_ticks: Option<String>,
    /// Freshness: ticks that came out later than this before the end of the hold are not
    /// counted (their slowest subscribers could not have had them yet); longer than the
    /// ingest's poll interval plus the fan-out.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub freshness_settle: Duration,
    #[arg(long, hide = true)]
    pub worker_id: Option<usize>,
    /// How many of the topics of `--worker-topics` (the first) are capitals'.
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_capitals: usize,
    #[arg(long, hide = true)]
    pub worker_topics: Option<PathBuf>,
}

impl RunArgs {
    /// Every problem with the options, at once.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = parse_target(&self.target) {
            p.push(format!("{e:#}"));
        }
        if let Err(e) = parse_sources(&self.sources) {
            p.push(format!("{e:#}"));
        } else if let Ok(s) = parse_sources(&self.sources) {
            for ip in s {
                if !ip.is_loopback() {
                    p.push(format!("source {ip} is not on loopback"));
                }
            }
        }
        if self.workers == 0 {
            p.push("--workers must be at least 1".into());
        }
        let per = (self.sse + self.ws + self.get_conns).div_ceil(self.workers.max(1));
        if per > MAX_PER_WORKER {
            p.push(format!(
                "{per} connections per worker is over {MAX_PER_WORKER} (20,000 open files per process): raise --workers"
            ));
        }
        if self.connect_rate <= 0.0 {
            p.push("--connect-rate must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.hot_share) {
            p.push("--hot-share must be within 0..1".into());
        }
        if self.read_pace > Duration::from_millis(50) {
            p.push("--read-pace must be at most 50ms: it adds up to that to every latency".into());
        }
        for spec in &self.server_metrics {
            if let Err(e) = crate::scrape::parse_spec(spec) {
                p.push(format!("{e:#}"));
            }
        }
        if let Some(spec) = &self.source_ticks {
            match spec.split_once('/') {
                Some((addr, _)) => {
                    if let Err(e) = parse_target(addr) {
                        p.push(format!("--source-ticks: {e:#}"));
                    }
                }
                None => p.push(format!(
                    "--source-ticks {spec:?}: expected IP:PORT/PATH, e.g. 127.0.0.1:8081/ticks"
                )),
            }
            if self.freshness_settle.is_zero() || self.freshness_settle >= self.hold {
                p.push(format!(
                    "--freshness-settle ({}) must be longer than zero and shorter than --hold ({}): no tick would be counted",
                    humantime::format_duration(self.freshness_settle),
                    humantime::format_duration(self.hold)
                ));
            }
        }
        if self.max_duration > Duration::from_secs(3_600) {
            p.push("--max-duration is capped at 1h".into());
        }
        p
    }
}

/// See [`RunArgs::cycle_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CycleKey {
    PublishedAt,
    Version,
}
