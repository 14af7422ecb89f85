//! `apura ingest`: follow the feed and publish to the Redis bus (see [`super::leader`]), or run
//! one cycle on an in-process bus and print what it would publish (`--once`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{FeedArgs, Ingest};
use crate::metrics::Metrics;

/// `apura ingest`: poll the feed and publish to the bus.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub feed: FeedArgs,
    /// Run one cycle on an in-process bus and exit (to try a feed without Redis).
    #[arg(long)]
    pub once: bool,
    /// With --once: print every document, one JSON per line, to standard output.
    #[arg(long, requires = "once")]
    pub print: bool,
    /// Redis of the scaled deployment (required unless --once): `redis://127.0.0.1:6379/0`,
    /// `rediss://` for TLS, or `redis+sentinel://host:26379,host2:26379/mymaster`.
    #[arg(
        long = "redis",
        env = "APURA_REDIS_URL",
        required_unless_present = "once"
    )]
    pub redis: Option<String>,
    /// CA certificate (PEM) that signed the Redis server's, trusted instead of the system's.
    #[arg(long, env = "APURA_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Prefix of every Redis key and channel, so deployments can share one server.
    #[arg(long, env = "APURA_REDIS_PREFIX", default_value = crate::bus::redis::DEFAULT_PREFIX)]
    pub redis_prefix: String,
    /// Lifetime of the leader lock: a standby takes over at most this long (plus a third of it)
    /// after the leader dies. Renewed every third of it.
    #[arg(long, env = "APURA_LEADER_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_ttl: Duration,
    /// Serve `/metrics` and `/healthz` of this ingest on this address.
    #[arg(long, env = "APURA_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// One cycle on an embedded bus; prints the documents or a summary.
pub async fn once(args: IngestArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let metrics = Arc::new(Metrics::default());
    let bus = Arc::new(crate::bus::embedded::EmbeddedBus::new());
    let mut ingest = Ingest::connect(&args.feed, bus, metrics).await?;
    let report = ingest.poll().await?;
    anyhow::ensure!(
        report.rejected.is_empty(),
        "feed rejected: {}",
        report.rejected.join("; ")
    );
    let last = report.cycle.context("the feed had no documents")?;
    // A TSE poll publishes as it goes: the latest document of every topic, in topic order.
    let mut latest: std::collections::BTreeMap<&str, &crate::bus::Document> =
        std::collections::BTreeMap::new();
    for cycle in &report.cycles {
        for doc in &cycle.documents {
            latest.insert(&doc.topic, doc);
        }
    }
    if args.print {
        let mut out = std::io::stdout().lock();
        for doc in latest.values() {
            out.write_all(&doc.json)?;
            out.write_all(b"\n")?;
        }
    } else {
        let mayors = latest.keys().filter(|t| t.starts_with("mayors-")).count();
        let councillors = latest
            .keys()
            .filter(|t| t.starts_with("councillors-"))
            .count();
        println!(
            "version {}: {} documents ({mayors} mayors, {councillors} councillors)",
            last.version,
            latest.len()
        );
    }
    Ok(())
}

/// `apura ingest` until `shutdown`: one cycle with `--once`, else lead (or stand by) on Redis.
pub async fn run(args: IngestArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if args.once {
        once(args).await
    } else {
        super::leader::run(args, shutdown).await
    }
}
