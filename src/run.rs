//! `apura run`: ingest and gateway in one process on the embedded bus, for a real or recorded feed.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::bus::embedded::EmbeddedBus;
use crate::fetch::Fetcher;
use crate::gateway::{self, GatewayArgs, hub::Hub};
use crate::ingest::{self, FeedArgs, Ingest};
use crate::metrics::Metrics;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub feed: FeedArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let problems = args.gateway.validate();
    anyhow::ensure!(
        problems.is_empty(),
        "invalid options: {}",
        problems.join("; ")
    );
    let listener = args.gateway.bind()?;
    serve_embedded(args.feed, args.gateway, listener, shutdown).await
}

/// Ingest `feed` and serve it on `listener` through an embedded bus until `shutdown`.
pub async fn serve_embedded(
    feed: FeedArgs,
    gateway_args: GatewayArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let fetcher = Fetcher::new(feed.fetch_timeout, feed.max_feed_bytes)?;
    let list = ingest::load_municipalities(&feed.municipalities, &fetcher)
        .await
        .context("loading the municipality list")?;
    tracing::info!(municipalities = list.len(), "municipality list loaded");
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new());
    let hub = Arc::new(Hub::new(metrics.clone()));
    let ingest = Ingest::new(Arc::new(list), &feed, fetcher, bus.clone(), metrics);

    let tracker = TaskTracker::new();
    let (s1, s2) = (shutdown.clone(), shutdown.clone());
    tracker.spawn(async move {
        if let Err(e) = ingest::run(ingest, feed, s1.clone()).await {
            tracing::error!(error = format!("{e:#}"), "ingest stopped");
            s1.cancel();
        }
    });
    let follow_hub = hub.clone();
    tracker.spawn(async move {
        if let Err(e) = gateway::follow(bus, follow_hub, s2.clone()).await {
            tracing::error!(
                error = format!("{e:#}"),
                "gateway stopped following the bus"
            );
            s2.cancel();
        }
    });
    tracker.close();
    let served = gateway::serve(&gateway_args, hub, listener, shutdown).await;
    tracker.wait().await;
    served
}
