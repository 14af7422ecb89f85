//! `apura run`: ingest and gateway in one process on the embedded bus, for a real or recorded feed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::bus::embedded::EmbeddedBus;
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
    let mut problems = args.feed.validate();
    problems.extend(args.gateway.validate());
    anyhow::ensure!(
        problems.is_empty(),
        "invalid options: {}",
        problems.join("; ")
    );
    let listener = args.gateway.bind()?;
    serve_embedded(args.feed, args.gateway, listener, shutdown).await
}

/// How often the embedded process gives freed heap back to the system.
const RELEASE_MEMORY_EVERY: Duration = Duration::from_secs(5);

/// Ingest `feed` and serve it on `listener` through an embedded bus until `shutdown`. The
/// gateway serves at once; the ingest starts as soon as what it needs loads (the municipality
/// list, retried with a back-off), and `/readyz` answers 503 until the first documents.
pub async fn serve_embedded(
    feed: FeedArgs,
    gateway_args: GatewayArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let problems = feed.validate();
    anyhow::ensure!(
        problems.is_empty(),
        "invalid options: {}",
        problems.join("; ")
    );
    let metrics = Arc::new(Metrics::default());
    // The ingest leads from its start to its end: there is no other to take over.
    let _ = metrics.embedded_ingest.set(AtomicBool::new(false));
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new());
    let hub = Arc::new(Hub::new(metrics.clone()).with_publishers(gateway_args.publishers()));

    let tracker = TaskTracker::new();
    let (s1, s2) = (shutdown.clone(), shutdown.clone());
    let ingest_bus = bus.clone();
    tracker.spawn(async move {
        let ingest = match Ingest::connect_patiently(&feed, ingest_bus, metrics.clone(), &s1).await
        {
            Ok(Some(ingest)) => ingest,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "ingest not started");
                s1.cancel();
                return;
            }
        };
        let leading = |on: bool| {
            if let Some(running) = metrics.embedded_ingest.get() {
                running.store(on, Relaxed);
            }
        };
        leading(true);
        let ran = ingest::run(ingest, s1.clone()).await;
        leading(false);
        if let Err(e) = ran {
            tracing::error!(error = format!("{e:#}"), "ingest stopped");
            s1.cancel();
        }
    });
    let follow_hub = hub.clone();
    tracker.spawn(async move {
        if let Err(e) = gateway::follow_apart(bus, follow_hub, s2.clone()).await {
            tracing::error!(
                error = format!("{e:#}"),
                "gateway stopped following the bus"
            );
            s2.cancel();
        }
    });
    tracker.spawn(release_memory_every(RELEASE_MEMORY_EVERY, shutdown.clone()));
    tracker.close();
    let served = gateway::serve(&gateway_args, hub, listener, shutdown).await;
    tracker.wait().await;
    served
}

/// Every `period`, give the heap freed since back to the system. Each cycle parses the national
/// files and renders thousands of documents, on whichever threads run then, and frees the last
/// cycle's; the allocator keeps what it freed for later, and a process that read the councillor
/// file grew by tens of megabytes a minute.
async fn release_memory_every(period: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
        let _ = tokio::task::spawn_blocking(gateway::admission::release_memory).await;
    }
}
