//! `apura demo`: simulator, ingest and gateway in one process on the embedded bus.
//!
//! The simulator listens on a loopback port of its own and the ingest reads it over real HTTP,
//! exactly as `apura run` reads a government feed.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::gateway::GatewayArgs;
use crate::ingest::FeedArgs;
use crate::simulate::{self, Layout, SimConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Seed of the simulated count night (same seed, same night).
    #[arg(long, env = "APURA_SIM_SEED", default_value_t = 2026)]
    pub seed: u64,
    /// Length of the simulated count, from 0 % to 100 %.
    #[arg(long, env = "APURA_SIM_DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// A new feed file every … (the authority republishes every ~10 s; faster makes a livelier demo).
    #[arg(long, env = "APURA_SIM_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// The layout the simulator serves and the ingest reads: the provider's consolidated files,
    /// or the authority's per-city files within its rate limit (`tse`: 5,568 cities at 50
    /// requests/s take about four minutes to sweep, so the long tail trails a short night).
    #[arg(long, env = "APURA_SIM_LAYOUT", value_enum, default_value_t = Layout::Consolidated)]
    pub layout: Layout,
}

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let problems = args.gateway.validate();
    anyhow::ensure!(
        problems.is_empty(),
        "invalid options: {}",
        problems.join("; ")
    );
    anyhow::ensure!(
        !args.interval.is_zero() && args.duration >= args.interval,
        "--interval must be positive and no longer than --duration"
    );
    let listener = args.gateway.bind()?;
    let sim_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the simulator")?;
    let sim = sim_listener.local_addr()?;
    let config = SimConfig {
        seed: args.seed,
        duration: args.duration,
        interval: args.interval,
        municipalities: None,
        layout: args.layout,
        ..SimConfig::default()
    };
    let sim_shutdown = shutdown.clone();
    let simulator = tokio::spawn(async move {
        if let Err(e) = simulate::run(config, sim_listener, sim_shutdown.clone()).await {
            tracing::error!(error = format!("{e:#}"), "simulator stopped");
            sim_shutdown.cancel();
        }
    });
    // Poll at the simulator's cadence, at most every second: conditional GETs answered 304
    // cost nothing, and a new file is picked up within a second of its publication.
    let poll = args.interval.min(Duration::from_secs(1));
    let feed = match args.layout {
        Layout::Consolidated => FeedArgs {
            councillors_feed: Some(format!("http://{sim}/councillors.json")),
            zones_url_template: Some(format!("http://{sim}/zones/zone-{{uf}}-{{slug}}.json")),
            ..FeedArgs::consolidated(
                format!("http://{sim}/mayors.json"),
                format!("http://{sim}/municipalities.json"),
            )
        },
        Layout::Tse => FeedArgs::tse(
            format!("http://{sim}{}", simulate::tse::BASE_PATH),
            simulate::tse::ELECTION,
        ),
    };
    let feed = FeedArgs {
        interval: poll,
        zones_interval: args.interval.max(Duration::from_secs(5)),
        fetch_timeout: Duration::from_secs(10),
        simulated: true,
        ..feed
    };
    tracing::info!(
        url = %format!("http://{}/", listener.local_addr()?),
        simulator = %sim,
        "demo: open the page"
    );
    let served = crate::run::serve_embedded(feed, args.gateway, listener, shutdown).await;
    simulator.abort();
    served
}
