//! `apura gateway --redis`: one gateway of the scaled deployment, following the Redis bus.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{GatewayArgs, hub::Hub};
use crate::bus::Bus;
use crate::bus::redis::{self, RedisBus};
use crate::metrics::Metrics;

/// Options of `apura gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayCommandArgs {
    /// Redis of the scaled deployment: `redis://127.0.0.1:6379/0`, `rediss://` for TLS, or
    /// `redis+sentinel://host:26379,host2:26379/mymaster` for the primary Sentinel names.
    #[arg(long = "redis", env = "APURA_REDIS_URL")]
    pub redis: String,
    /// CA certificate (PEM) that signed the Redis server's, trusted instead of the system's.
    #[arg(long, env = "APURA_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Prefix of every Redis key and channel, as given to the ingest.
    #[arg(long, env = "APURA_REDIS_PREFIX", default_value = redis::DEFAULT_PREFIX)]
    pub redis_prefix: String,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// Check the options, bind the listener, and serve until `shutdown`.
pub async fn run(args: GatewayCommandArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut problems = args.gateway.validate();
    problems.extend(redis::check_options(
        &args.redis,
        args.redis_ca_file.as_deref(),
        &args.redis_prefix,
    ));
    anyhow::ensure!(
        problems.is_empty(),
        "invalid options: {}",
        problems.join("; ")
    );
    let listener = args.gateway.bind()?;
    serve(args, listener, shutdown).await
}

/// Follow the Redis bus and serve clients on `listener` until `shutdown`. `/readyz` turns ready
/// once every snapshot is loaded; when Redis goes away the gateway keeps serving what it holds,
/// and reloads the snapshots when it is back. Nothing waits for Redis before serving: started
/// while Redis is down, the gateway answers at once (`/healthz` 200, 503 for the rest) and
/// follows Redis when it comes (see [`super::follow`]).
pub async fn serve(
    args: GatewayCommandArgs,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let server = redis::Server::open(&args.redis, args.redis_ca_file.as_deref())?;
    let bus: Arc<dyn Bus> = Arc::new(RedisBus::connect_lazy(
        server,
        &args.redis_prefix,
        metrics.clone(),
    )?);
    let hub = Arc::new(Hub::new(metrics).with_publishers(args.gateway.publishers()));
    let (h, s) = (hub.clone(), shutdown.clone());
    let follower = tokio::spawn(async move {
        let followed = super::follow_apart(bus, h, s.clone()).await;
        if followed.is_err() {
            // Without the bus this gateway would serve stale documents forever: stop instead.
            s.cancel();
        }
        followed
    });
    let served = super::serve(&args.gateway, hub, listener, shutdown).await;
    follower
        .await
        .context("the bus follower panicked")?
        .context("following the bus")?;
    served
}
