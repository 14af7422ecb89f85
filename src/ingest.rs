//! Ingest: poll the feed, parse, slice into topic documents, diff, publish whole cycles.
//!
//! Sources produce, one core decides. A source ([`consolidated`]: a provider's national files;
//! [`tse`]: the authority's per-city files) owns its polling, its zone files and its upstream
//! faults, and sends what it accepted over a channel; the [`core`] keeps the current results,
//! quarantines invalid cities, slices, diffs and publishes on its own cadence. The core knows
//! nothing of either source.
//!
//! **Quarantine.** A file whose cities fail validation one by one is taken for every valid
//! city; each invalid city is quarantined: it keeps its last good race, its documents say since
//! when and why they are held (`held`), the roll-ups count its last good race, and one log line
//! says when it enters and when it leaves. A file that cannot be trusted as a whole (not JSON,
//! cut short, the wrong shape, an older timestamp, more than `--max-invalid-share` of its cities
//! invalid) is rejected whole: its previous documents stay current, one log line says what and
//! where, and a metric counts it. A TSE city file is one city's: a bad one quarantines that city
//! only.
//!
//! **Upstream faults.** A feed file not found is logged once when it goes missing and once when
//! it is back, and counted every poll; a file that fails to fetch is asked again after a
//! back-off that doubles up to [`BACKOFF_MAX_POLLS`] polls. At start-up
//! ([`Ingest::connect_patiently`]) the municipality list (TSE: the configuration) is retried
//! until it loads, while the gateway already serves.

pub mod args;
pub mod command;
pub mod consolidated;
pub mod core;
pub mod leader;
pub mod tse;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use args::{DEFAULT_MAX_INVALID_SHARE, FeedArgs, SourceKind};
pub use consolidated::{BACKOFF_MAX_POLLS, STAMP_DISAGREEMENT_POLLS, load_municipalities};
pub use core::{Accepted, Core};

use crate::bus::{Bus, Cycle};
use crate::documents::{self, Draft};
use crate::feed::municipalities::MunicipalityList;
use crate::fetch::Fetcher;
use crate::metrics::Metrics;
use crate::model::{Office, Race, ZoneBreakdown};
use consolidated::ConsolidatedSource;

/// Start-up: first wait before loading the municipality list (TSE: the configuration) again.
pub const STARTUP_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Start-up: the wait doubles up to this: a list that comes back is loaded at most 10 s later,
/// and an upstream that stays down is asked six times a minute.
pub const STARTUP_RETRY_MAX: Duration = Duration::from_secs(10);
/// Items a source may send ahead of the core: a TSE cycle's 500 races fit, so a source never
/// waits on the core but for a publication in progress.
const CHANNEL: usize = 1_024;

/// What one poll did.
#[derive(Debug, Default)]
pub struct CycleReport {
    /// The last cycle published, if anything changed.
    pub cycle: Option<Arc<Cycle>>,
    /// Every cycle published, in order: one for a consolidated feed; a TSE poll publishes as
    /// its cities come in, so its first cities need not wait for its last.
    pub cycles: Vec<Arc<Cycle>>,
    /// Feed files rejected in this poll, with the reason.
    pub rejected: Vec<String>,
}

/// Where an ingest reads its results.
enum FeedSource {
    Consolidated(Box<ConsolidatedSource>),
    Tse(Box<tse::TseSource>),
}

impl FeedSource {
    /// Poll once, sending what was accepted; answer the files rejected. A TSE poll waits for
    /// its requests at most `patience` (see [`tse::TseSource::poll`]).
    async fn poll(
        &mut self,
        tx: &mpsc::Sender<Accepted>,
        stop: &CancellationToken,
        patience: Option<Duration>,
    ) -> Vec<String> {
        match self {
            FeedSource::Consolidated(source) => source.poll(tx).await,
            FeedSource::Tse(source) => source.poll(tx, stop, patience).await,
        }
    }

    /// Poll every `interval` until `shutdown`, zone files beside, each poll followed by an
    /// [`Accepted::EndOfPoll`].
    async fn run(
        &mut self,
        tx: mpsc::Sender<Accepted>,
        interval: Duration,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) {
        metrics
            .poll_interval_millis
            .store(interval.as_millis() as u64, Relaxed);
        let mut every = Every::new(interval);
        while every.tick(shutdown).await {
            let started = Instant::now();
            self.poll(&tx, shutdown, Some(interval)).await;
            metrics.cycle_took(started.elapsed());
            if tx.send(Accepted::EndOfPoll).await.is_err() {
                break;
            }
            match self {
                FeedSource::Consolidated(source) => source.follow_zones(&tx, shutdown),
                FeedSource::Tse(source) => source.follow_zones(&tx, shutdown),
            }
        }
        match self {
            FeedSource::Consolidated(source) => source.stop_zones().await,
            FeedSource::Tse(source) => source.stop_zones().await,
        }
    }
}

/// The ticks of a polling loop: the first at once, then every `interval`; a poll that overruns
/// delays the next tick rather than bunching the missed ones.
pub(crate) struct Every(tokio::time::Interval);

impl Every {
    pub(crate) fn new(interval: Duration) -> Self {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Every(ticker)
    }

    /// Wait for the next tick: `false` once `shutdown` is cancelled.
    pub(crate) async fn tick(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = self.0.tick() => true,
        }
    }
}

/// An ingest: one source and the core it feeds.
pub struct Ingest {
    core: Core,
    source: FeedSource,
    metrics: Arc<Metrics>,
    interval: Duration,
}

impl Ingest {
    /// An ingest of a consolidated feed (`args.feed`) over `list`. [`Ingest::connect`] builds
    /// either kind from the options alone.
    pub fn new(
        list: Arc<MunicipalityList>,
        args: &FeedArgs,
        fetcher: Fetcher,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let source = ConsolidatedSource::new(list.clone(), args, fetcher, metrics.clone());
        Self::with_source(
            list,
            FeedSource::Consolidated(Box::new(source)),
            args,
            bus,
            metrics,
        )
    }

    /// [`Ingest::connect`] until it succeeds or `shutdown`: what the source needs to start (the
    /// municipality list; the TSE configuration) is loaded again after a wait that doubles
    /// from [`STARTUP_RETRY_FIRST`] to [`STARTUP_RETRY_MAX`], each failure logged and counted
    /// (`startup`). Options are checked once, first: a mistake there is an error at once.
    /// `None`: shut down before it could start.
    pub async fn connect_patiently(
        args: &FeedArgs,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        let problems = args.validate();
        anyhow::ensure!(
            problems.is_empty(),
            "invalid options: {}",
            problems.join("; ")
        );
        metrics.ingest_started(match args.source {
            SourceKind::Consolidated => "consolidated",
            SourceKind::Tse => "tse",
        });
        let mut wait = STARTUP_RETRY_FIRST;
        for attempt in 1u32.. {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                c = Self::connect(args, bus.clone(), metrics.clone()) => c,
            };
            match connected {
                Ok(ingest) => {
                    if attempt > 1 {
                        tracing::warn!(attempt, "ingest started");
                    }
                    return Ok(Some(ingest));
                }
                Err(e) => {
                    metrics.feed_error("startup");
                    tracing::warn!(
                        error = format!("{e:#}"),
                        attempt,
                        retry_in = ?wait,
                        "cannot start the ingest yet; serving, not ready, until documents load"
                    );
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(STARTUP_RETRY_MAX);
        }
        unreachable!("the attempts never run out")
    }

    /// Check the options (every problem at once), load what the source needs to start (the
    /// municipality list; for the TSE, the catalogue and the municipality configuration) and
    /// build the ingest.
    pub async fn connect(
        args: &FeedArgs,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let problems = args.validate();
        anyhow::ensure!(
            problems.is_empty(),
            "invalid options: {}",
            problems.join("; ")
        );
        match args.source {
            SourceKind::Consolidated => {
                let fetcher = Fetcher::new(args.fetch_timeout, args.max_feed_bytes)?;
                let location = args.municipalities.as_deref().unwrap_or_default();
                let list = load_municipalities(location, &fetcher)
                    .await
                    .context("loading the municipality list")?;
                tracing::info!(municipalities = list.len(), "municipality list loaded");
                Ok(Self::new(Arc::new(list), args, fetcher, bus, metrics))
            }
            SourceKind::Tse => {
                let (source, list) = tse::TseSource::connect(args, metrics.clone())
                    .await
                    .context("starting the TSE source")?;
                let source = source.with_audience(bus.clone());
                let feed = FeedSource::Tse(Box::new(source));
                Ok(Self::with_source(Arc::new(list), feed, args, bus, metrics))
            }
        }
    }

    fn with_source(
        list: Arc<MunicipalityList>,
        source: FeedSource,
        args: &FeedArgs,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Ingest {
            core: Core::new(list, bus, metrics.clone()).labelled(args.data_source()),
            source,
            metrics,
            interval: args.interval,
        }
    }

    /// The core: the current results and what was published.
    pub fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    /// See [`Core::hold_for_zones`].
    pub fn hold_for_zones(&mut self, patience: Duration) {
        self.core.hold_for_zones(patience);
    }

    /// See [`Core::seed_from_bus`].
    pub async fn seed_from_bus(&mut self) -> anyhow::Result<usize> {
        self.core.seed_from_bus().await
    }

    /// See [`Core::forget_published`].
    pub fn forget_published(&mut self) {
        self.core.forget_published();
    }

    /// The municipalities of this deployment.
    pub fn municipalities(&self) -> &Arc<MunicipalityList> {
        self.core.municipalities()
    }

    /// The current race of `office` in the city `ibge`, as last accepted.
    pub fn race(&self, ibge: u32, office: Office) -> Option<&Race> {
        self.core.race(ibge, office)
    }

    /// The quarantine of `office` in the city `ibge`, if it is quarantined: since when and why.
    pub fn held(&self, ibge: u32, office: Office) -> Option<&documents::Held> {
        self.core.held(ibge, office)
    }

    /// Every current document (see [`Core::drafts`]).
    pub fn drafts(&mut self) -> Vec<Draft> {
        self.core.drafts()
    }

    /// Take one race as a source would send it (see [`Core::accept_race`]).
    pub fn accept_race(&mut self, race: Race) {
        self.core.accept_race(race);
    }

    /// Take zone results and publish what changed.
    pub async fn apply_zones(
        &mut self,
        batch: Vec<(u32, ZoneBreakdown)>,
    ) -> anyhow::Result<Vec<Arc<Cycle>>> {
        self.core.apply_zones(batch).await
    }

    /// What the last TSE cycle did; `None` for a consolidated source.
    pub fn tse_stats(&self) -> Option<tse::PassStats> {
        match &self.source {
            FeedSource::Tse(source) => Some(source.last_stats()),
            FeedSource::Consolidated(_) => None,
        }
    }

    /// Poll the feed once and publish what changed.
    pub async fn poll(&mut self) -> anyhow::Result<CycleReport> {
        self.poll_until(&CancellationToken::new()).await
    }

    /// Poll the feed once and publish what changed; a TSE poll stops early, publishing what
    /// it has, when `stop` is cancelled.
    pub async fn poll_until(&mut self, stop: &CancellationToken) -> anyhow::Result<CycleReport> {
        self.poll_with(stop, None).await
    }

    /// Poll once as the loop does, with `patience` its `--interval`: a TSE poll waits for
    /// requests that long at most, and a later poll takes those still open when they land
    /// (see [`tse::TseSource::poll`]).
    pub async fn poll_within(&mut self, patience: Duration) -> anyhow::Result<CycleReport> {
        self.poll_with(&CancellationToken::new(), Some(patience))
            .await
    }

    async fn poll_with(
        &mut self,
        stop: &CancellationToken,
        patience: Option<Duration>,
    ) -> anyhow::Result<CycleReport> {
        let started = Instant::now();
        let (tx, mut rx) = mpsc::channel(CHANNEL);
        let mut cycles = Vec::new();
        let Ingest {
            core,
            source,
            metrics,
            ..
        } = self;
        let (rejected, followed) = tokio::join!(
            async move {
                let rejected = source.poll(&tx, stop, patience).await;
                let _ = tx.send(Accepted::EndOfPoll).await;
                rejected
            },
            core.follow(&mut rx, |cs| cycles.extend(cs.iter().cloned())),
        );
        followed?;
        metrics.cycle_took(started.elapsed());
        Ok(CycleReport {
            cycle: cycles.last().cloned(),
            cycles,
            rejected,
        })
    }
}

/// Run the ingest loop until `shutdown`: the source polls every `--interval` (zone files
/// beside), the core publishes what it sends.
pub async fn run(mut ingest: Ingest, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_on(&mut ingest, shutdown).await
}

/// The ingest loop on a borrowed [`Ingest`], which keeps its state when the loop ends: a leader
/// that loses its lock stops here and may lead again later.
pub async fn run_on(ingest: &mut Ingest, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(CHANNEL);
    let Ingest {
        core,
        source,
        metrics,
        interval,
    } = ingest;
    let (_, followed) = tokio::join!(
        source.run(tx, *interval, metrics, &shutdown),
        core.follow(&mut rx, log_cycle),
    );
    followed
}

fn log_cycle(cycles: &[Arc<Cycle>]) {
    let (Some(first), Some(last)) = (cycles.first(), cycles.last()) else {
        return;
    };
    tracing::info!(
        version = last.version,
        first_version = first.version,
        cycles = cycles.len(),
        documents = cycles.iter().map(|c| c.documents.len()).sum::<usize>(),
        "published"
    );
}
