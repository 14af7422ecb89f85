//! `apura ingest --redis`: one leader publishes, standbys wait for its lock to expire.
//!
//! A process takes the lock ([`RedisBus::acquire_leadership`]) and starts a *term*: it makes the
//! version sequence continue above anything it has seen, takes what Redis holds as the diff's
//! reference (so unchanged documents are not published again, and a store found empty is
//! published again whole), then runs the ordinary ingest loop. A keeper task renews the lock
//! every third of its ttl; when the lock is lost, the store was emptied, renewal failed for a
//! whole ttl, or Redis Sentinel moved the primary, the term ends and the process goes back to
//! standby. Publishing is fenced by the
//! lock inside Redis, so even a leader that does not yet know it lost the lock cannot publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::command::IngestArgs;
use super::{FeedArgs, Ingest};
use crate::bus::Bus;
use crate::bus::redis::{self, RedisBus, Renewal};
use crate::gateway::http::metrics_response;
use crate::metrics::Metrics;

/// Shortest accepted lock ttl: a third of it must comfortably exceed a Redis round trip.
const MIN_TTL: Duration = Duration::from_millis(300);
/// How long the first publication on an empty store waits for the first zone results, in fetch
/// timeouts: the first batch (64 files fetched 8 at a time, or what came in a second) takes a
/// second or two, and two fetch timeouts (20 s by default) cover a slow server; past that,
/// publishing the rest matters more.
const ZONES_PATIENCE_PER_FETCH_TIMEOUT: u32 = 2;

/// Run the leader/standby ingest on Redis until `shutdown`; release the lock when leading.
pub async fn run(args: IngestArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let url = args.redis.clone().unwrap_or_default();
    let mut problems = args.feed.validate();
    problems.extend(redis::check_options(
        &url,
        args.redis_ca_file.as_deref(),
        &args.redis_prefix,
    ));
    if args.leader_ttl < MIN_TTL {
        problems.push(format!("--leader-ttl must be at least {MIN_TTL:?}"));
    }
    anyhow::ensure!(
        problems.is_empty(),
        "invalid options: {}",
        problems.join("; ")
    );
    let metrics = Arc::new(Metrics::default());
    let server = redis::Server::open(&url, args.redis_ca_file.as_deref())?;
    let bus = Arc::new(RedisBus::connect_to(server, &args.redis_prefix, metrics.clone()).await?);
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let leading = Arc::new(AtomicBool::new(false));
    let tracker = TaskTracker::new();
    if let Some(addr) = args.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let (m, l, s) = (metrics.clone(), leading.clone(), shutdown.clone());
        tracker.spawn(async move {
            if let Err(e) = serve_metrics(listener, m, l, s).await {
                tracing::error!(error = format!("{e:#}"), "ingest metrics stopped");
            }
        });
    }
    tracker.close();
    // The feed may be down when the ingest starts: wait for it (its failures counted on
    // `/metrics` meanwhile), as `apura run` does, before standing for the lock.
    let result = match Ingest::connect_patiently(&args.feed, dyn_bus, metrics, &shutdown).await {
        Ok(Some(ingest)) => elect(bus, ingest, args.feed, args.leader_ttl, leading, shutdown).await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    tracker.wait().await;
    result
}

/// Stand by until the lock is ours, lead until it is not, again, until `shutdown`. `leading`
/// says which of the two this process is doing.
pub async fn elect(
    bus: Arc<RedisBus>,
    mut ingest: Ingest,
    feed: FeedArgs,
    ttl: Duration,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let retry = ttl / 3;
    let metrics = ingest.metrics.clone();
    tracing::info!(token = bus.token(), ?ttl, "standing by for the leader lock");
    loop {
        if !stand_by(&bus, ttl, &metrics, &shutdown).await {
            return Ok(());
        }
        tracing::info!(token = bus.token(), "leader lock acquired");
        leading.store(true, Relaxed);
        let ended = lead(&bus, &mut ingest, &feed, ttl, &metrics, &shutdown).await;
        leading.store(false, Relaxed);
        if shutdown.is_cancelled() {
            match tokio::time::timeout(retry, bus.release_leadership()).await {
                Ok(Ok(true)) => tracing::info!("leader lock released"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(
                    error = format!("{e:#}"),
                    "could not release the leader lock; it expires by itself"
                ),
                Err(_) => {
                    tracing::warn!("releasing the leader lock timed out; it expires by itself")
                }
            }
            return Ok(());
        }
        match ended {
            Ok(reason) => tracing::warn!(%reason, "leader term ended; standing by"),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "leader term failed; standing by");
                // Not straight back: the lock may still be ours and the failure repeat at once.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(retry) => {}
                }
            }
        }
    }
}

/// Try for the lock every third of its ttl: a dead leader's lock expires within one ttl of its
/// last renewal and is taken within a third of a ttl after that. False on shutdown.
async fn stand_by(
    bus: &RedisBus,
    ttl: Duration,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> bool {
    let retry = ttl / 3;
    let mut failing = false;
    loop {
        if shutdown.is_cancelled() {
            return false;
        }
        match timed(
            metrics,
            "acquire_leadership",
            retry,
            bus.acquire_leadership(ttl),
        )
        .await
        {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => failing = false,
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot reach Redis; will keep trying"
                );
            }
            Ok(Err(_)) => {}
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("Redis does not answer; will keep trying");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// One term: take the store as it is, then run the ingest loop while the lock is ours. Answers
/// why it ended.
async fn lead(
    bus: &Arc<RedisBus>,
    ingest: &mut Ingest,
    feed: &FeedArgs,
    ttl: Duration,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<String> {
    let before = bus.continue_sequence().await?;
    // What Redis holds is the reference for the diff, not what this process published in an
    // earlier term: another leader may have published since, or the store may have been lost.
    ingest.forget_published();
    let seeded = ingest.seed_from_bus().await?;
    if before.is_none() && feed.zones_url_template.is_some() {
        // The first cycle on an empty store should be the whole state, zone documents included.
        ingest.hold_for_zones(ZONES_PATIENCE_PER_FETCH_TIMEOUT * feed.fetch_timeout);
    }
    match before {
        None if bus.highest_version() > 0 => tracing::warn!(
            floor = bus.highest_version(),
            "the store is empty (Redis restarted without its data): publishing every document again, versions continuing above the floor"
        ),
        None => tracing::info!("leading: the store is new, starting the version sequence"),
        Some(sequence) => tracing::info!(
            sequence,
            documents = seeded,
            "leading: continuing from the store"
        ),
    }
    let term = shutdown.child_token();
    // Should this future be dropped (the task aborted), the keeper must stop renewing too.
    let _stop_keeper = term.clone().drop_guard();
    let keeper = tokio::spawn(keep(bus.clone(), ttl, metrics.clone(), term.clone()));
    super::run_on(ingest, term.clone()).await?;
    term.cancel();
    Ok(keeper
        .await
        .unwrap_or_else(|e| format!("lock keeper failed: {e}")))
}

/// Renew the lock every third of its ttl until `term` is cancelled; cancel it when the lock is
/// lost, the store was emptied, no renewal succeeded for a whole ttl, or Redis Sentinel moved
/// the primary (the promoted replica may lack the last writes: a new term takes the store as it
/// is there). Answers why.
async fn keep(
    bus: Arc<RedisBus>,
    ttl: Duration,
    metrics: Arc<Metrics>,
    term: CancellationToken,
) -> String {
    let every = ttl / 3;
    let mut renewed = Instant::now();
    let failovers = bus.failovers();
    let reason = loop {
        tokio::select! {
            _ = term.cancelled() => return "shutdown".to_string(),
            _ = tokio::time::sleep(every) => {}
        }
        if bus.failovers() != failovers {
            break "Redis failed over to another primary".to_string();
        }
        match timed(
            &metrics,
            "renew_leadership",
            every,
            bus.renew_leadership(ttl),
        )
        .await
        {
            Ok(Ok(Renewal::Held)) => renewed = Instant::now(),
            Ok(Ok(Renewal::Lost)) => break "the leader lock was lost".to_string(),
            Ok(Ok(Renewal::StoreLost)) => break "the store was emptied".to_string(),
            Ok(Err(e)) if renewed.elapsed() >= ttl => {
                break format!("the leader lock could not be renewed for {ttl:?}: {e:#}");
            }
            Err(_) if renewed.elapsed() >= ttl => {
                break format!("the leader lock could not be renewed for {ttl:?}: timed out");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "renewing the leader lock failed");
            }
            Err(_) => tracing::warn!("renewing the leader lock timed out"),
        }
    };
    term.cancel();
    reason
}

/// `call` to Redis within `limit`, counted in the metrics as `op` (its duration, and whether
/// Redis answered).
async fn timed<T>(
    metrics: &Metrics,
    op: &str,
    limit: Duration,
    call: impl Future<Output = anyhow::Result<T>>,
) -> Result<anyhow::Result<T>, tokio::time::error::Elapsed> {
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(limit, call).await;
    metrics.bus_call(op, started.elapsed(), matches!(answer, Ok(Ok(_))));
    answer
}

/// Serve the ingest's `/metrics` (with `apura_ingest_leader`) and `/healthz` on `listener`.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    async fn render(
        State((metrics, leading)): State<(Arc<Metrics>, Arc<AtomicBool>)>,
        headers: HeaderMap,
    ) -> Response {
        let leader = (
            "apura_ingest_leader",
            crate::metrics::LEADER_HELP,
            f64::from(u8::from(leading.load(Relaxed))),
        );
        metrics_response(&metrics, &headers, &[leader], Vec::new())
    }
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state((metrics, leading));
    tracing::info!(addr = %listener.local_addr()?, "ingest metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving ingest metrics")
}
