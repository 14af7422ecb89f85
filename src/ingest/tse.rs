//! The TSE source: the authority's per-city files, fetched only where something changed, within
//! a request budget.
//!
//! At start-up: the catalogue (`ele-c.json`, best effort: it says whether the election code
//! exists and what its second round is) and the municipality configuration of the first round
//! (`mun-e<ele6>-cm.json`: codes, names, capitals, zones), which becomes the municipality list.
//!
//! Every cycle ([`TseSource::poll`]):
//! 1. the progress file of every state of the configuration (27), conditionally: in a cycle where
//!    nothing changed these are the only requests, each answered 304;
//! 2. every city whose progress row changed since its files were last fetched (the row's
//!    fingerprint: `dt`, `ht`, `s.st`): its mayor (cargo 11) and councillor (13) unified files,
//!    conditionally; with a second round, its round-2 mayor file instead of nothing;
//! 3. races sent to the core as they arrive, which publishes them at once and then at most
//!    every [`PUBLISH_EVERY`](super::core::PUBLISH_EVERY), so that the first cities of a long cycle do not wait for the
//!    last.
//!
//! A cycle fetches at most what the budget allows in one `--interval` (250 files at 50
//! requests/s every 5 s), most-watched first; the rest stay due and go first in the next cycle,
//! which reads the progress files again before. So when thousands of towns change at once (the
//! first minutes of the night, or a restart), a capital that changes meanwhile waits at most
//! about one interval, not the whole backlog. A cycle also waits for its requests one
//! `--interval` at most: a file that answers slowly (up to `--fetch-timeout`) stays in flight,
//! is not asked for again, and is taken by the cycle running when it lands, so it holds up no
//! other city past the next cycle.
//!
//! **Order.** Every file asked for the first time, or because its city's row moved, comes
//! before any retry of a file that answered 404 or failed: a file that is not there never takes
//! the turn of one that is. Within each of the two, the hot files first: second round, capitals,
//! and the files of the [`HOT_AUDIENCE`] city races the gateways' clients follow most (their
//! audience, read through the bus at the start of each cycle), at most one in [`HOT_SHARE`] of
//! a cycle's files. Then the sweep, the file whose row moved longest ago first: at the peak,
//! when every row moves every few seconds, the largest cities' new counts never take every turn
//! and no city waits more than one full sweep. Ties (a cold start reads every row at once) go
//! mayors before councillors, then by electorate (the progress row's `e.te`), largest first:
//! every city's mayor before the long tail's councillors, and an office missing everywhere (its
//! files all 404) costs the other office nothing. While mayor files never fetched are left for
//! the next cycle (a cold start), the zone sweep waits, so that its share of the budget goes to
//! them too: at 50 requests/s the 5,568 mayor files of a cold start take under two minutes.
//! `apura_tse_file_wait_seconds{tier}` is each file's wait for its turn.
//!
//! **Budget.** Every request, retries included, goes through one [`Throttle`]: at most
//! `--rate-limit` starts per second (50), evenly spaced, and `--max-in-flight` open (8). The
//! fetcher makes one attempt per request; a failed city is simply due again next cycle. A 403 or
//! 429 pauses every request for the `Retry-After` or, without one, past the authority's
//! ten-minute block. Zone files take at most a [`ZONE_SHARE`] of the budget, through a throttle
//! of their own in front of the shared one, so they never starve the main cycle.
//!
//! **A bad city file** (not JSON, cut short, numbers that do not add up, another city's)
//! quarantines that city alone: it keeps its last good documents, marked as held, until a valid
//! file of it comes.
//!
//! **404.** A file not found is not published yet. It is asked again after a back-off that
//! doubles from 10 s to 5 min; a city whose row shows nothing counted waits for its row to
//! change instead, so a start before publication costs one 404 per file, not a storm.

mod backoff;
mod check;
pub mod zones;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::FeedArgs;
use super::core::Accepted;
use crate::bus::Bus;
use crate::feed::FeedError;
use crate::feed::municipalities::MunicipalityList;
use crate::feed::tse::config::MunicipalityConfig;
use crate::feed::tse::paths::TsePaths;
use crate::feed::tse::progress::{self, Fingerprint};
use crate::fetch::throttle::Throttle;
use crate::fetch::{FetchError, Fetched, Fetcher, Source};
use crate::metrics::Metrics;
use crate::model::{Office, Race};

use backoff::Backoff;
pub use backoff::{NOT_FOUND_FIRST, NOT_FOUND_MAX};
use check::{check_catalogue, race_of};
pub use zones::ZoneTarget;

/// Requests per second by default: half the authority's limit of 100, so that a second client
/// on the same address (a standby ingest, someone's curl) cannot push the IP over it.
pub const DEFAULT_RATE_LIMIT: u32 = 50;
/// Highest `--rate-limit` accepted: the authority blocks above 100 per second; a tenth is kept
/// for jitter that can bunch two evenly spaced requests into one second at its end.
pub const MAX_RATE_LIMIT: u32 = 90;
/// Requests open at once by default: at 50 requests/s and ~50–150 ms per request, 3–8 are open;
/// more would only queue at the throttle.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
/// Zone files get at most this share of the request budget (10 of 50 per second), the main
/// cycle the rest.
pub const ZONE_SHARE: u32 = 5;
/// Topics of the gateways' audience whose files are hot: the 50 most-subscribed city races.
pub const HOT_AUDIENCE: usize = 50;
/// Hot files take at most this share of a cycle's files (one in two); the rest is the sweep's,
/// so that no city waits more than a full sweep however many cities are hot.
pub const HOT_SHARE: usize = 2;
/// Longest wait for the gateways' audience at the start of a cycle: a slow bus costs the order
/// its freshest input, never the cycle.
const AUDIENCE_TIMEOUT: Duration = Duration::from_secs(1);
/// A city of the configuration.
#[derive(Debug, Clone)]
struct CityInfo {
    ibge: u32,
    /// Lower case.
    uf: String,
    capital: bool,
    zones: Vec<String>,
}

/// One unified file: its validators, which row it was last fetched for, its back-off.
#[derive(Debug, Clone)]
struct FileState {
    source: Source,
    fetched_for: Option<Fingerprint>,
    backoff: Backoff,
    /// Its last answer was a 404 or a failure: asking again is a retry, which waits behind
    /// every file asked for the first time or because its row moved.
    retry: bool,
}

/// A municipality row as last read.
#[derive(Debug, Clone)]
struct Row {
    fingerprint: Fingerprint,
    electorate: u64,
    nothing_counted: bool,
}

/// One election (round) polled.
struct Election {
    paths: TsePaths,
    round: u8,
    offices: &'static [Office],
    progress: HashMap<String, (Source, Backoff)>,
    rows: HashMap<u32, Row>,
    files: HashMap<(u32, Office), FileState>,
    /// Files whose row moved since they were last fetched, and since when: the sweep takes
    /// the oldest first.
    stale_since: HashMap<(u32, Office), Instant>,
}

/// The TSE source's state, kept across cycles.
pub struct TseSource {
    metrics: Arc<Metrics>,
    fetcher: Fetcher,
    zone_fetcher: Fetcher,
    throttle: Arc<Throttle>,
    max_in_flight: usize,
    elections: Vec<Election>,
    /// Most unified files fetched in one cycle: `--rate-limit` × `--interval`.
    files_per_cycle: usize,
    /// By TSE code.
    cities: HashMap<String, CityInfo>,
    /// TSE code by IBGE code.
    codes: HashMap<u32, String>,
    unknown_logged: HashSet<String>,
    last_stats: PassStats,
    /// The latest mayor race sent of every city (a later round replaces an earlier one): what
    /// the zone sweep follows.
    mayors: HashMap<u32, Race>,
    zones_interval: Duration,
    /// Mayor files never fetched left for the next cycle by the last one: while there are
    /// any, the zone sweep waits, so that its share of the budget goes to them.
    mayors_waiting: usize,
    /// The zone sweep and what it should cover, once it runs.
    zone_sweep: Option<(tokio::task::JoinHandle<()>, watch::Sender<Vec<ZoneTarget>>)>,
    /// Where the gateways report their audience (none: no audience, capitals and second
    /// rounds are the only hot cities).
    audience: Option<Arc<dyn Bus>>,
    /// The city race of every `mayors-` and `councillors-` topic.
    topic_files: HashMap<String, (u32, Office)>,
    /// The files of the [`HOT_AUDIENCE`] most-subscribed city races, as last reported.
    hot: HashSet<(u32, Office)>,
    /// Requests in flight: one left by a cycle that stopped waiting for it is taken by a
    /// later cycle when it lands.
    flights: FuturesUnordered<Landing>,
    /// What is in flight: not asked for again until it lands.
    flying: HashSet<Flight>,
}

/// A request in flight: a state's progress file (election, state) or a city's file (election,
/// IBGE code, office).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Flight {
    Progress(usize, String),
    File(usize, u32, Office),
}

/// What a request brought back.
enum Landed {
    /// A state's progress file (the flight says which), asked for at `asked`: the moment its
    /// moved rows are stale from, the same for every state of a cycle, so that the sweep's
    /// order does not depend on which state answered first.
    Progress {
        asked: Instant,
        source: Source,
        result: Result<Fetched, FetchError>,
    },
    File {
        due: Due,
        source: Source,
        result: Result<Fetched, FetchError>,
    },
}

/// A request in flight, and what it brings.
type Landing = Pin<Box<dyn Future<Output = (Flight, Landed)> + Send>>;

/// What a cycle did, for the log line and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub progress_requests: usize,
    pub file_requests: usize,
    pub modified: usize,
    pub not_modified: usize,
    pub not_found: usize,
    pub failed: usize,
    pub rejected: usize,
    /// Files due but left for the next cycle (over [`TseSource::poll`]'s per-cycle cap, or
    /// not yet asked for when the cycle's `--interval` was up).
    pub backlog: usize,
    /// Requests still in flight when the cycle stopped waiting: a later cycle takes them.
    pub in_flight: usize,
}

impl TseSource {
    /// Read the catalogue (best effort) and the municipality configuration; answer the source
    /// and the municipality list it gives.
    pub async fn connect(
        args: &FeedArgs,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(TseSource, MunicipalityList)> {
        let base = args.base_url.as_deref().unwrap_or_default();
        let election = args.election.as_deref().unwrap_or_default();
        let first = TsePaths::new(base, election).map_err(anyhow::Error::msg)?;
        let second = args
            .election_round2
            .as_deref()
            .map(|e| TsePaths::new(base, e).map_err(anyhow::Error::msg))
            .transpose()?;
        let throttle = Arc::new(Throttle::new(args.rate_limit, args.max_in_flight));
        let plain = Fetcher::new(args.fetch_timeout, args.max_feed_bytes)?;
        // One attempt per request: a failed city is due again next cycle, and every attempt is
        // a request the throttle has counted.
        let fetcher = plain.clone().throttled(throttle.clone()).with_attempts(1);
        let zone_throttle = Arc::new(Throttle::new(
            (args.rate_limit / ZONE_SHARE).max(1),
            (args.max_in_flight / 4).max(1),
        ));
        let zone_fetcher = plain
            .throttled(zone_throttle)
            .throttled(throttle.clone())
            .with_attempts(1);

        check_catalogue(&fetcher, &first, second.as_ref()).await;

        let config_url = first.config();
        let mut source = Source::new(&config_url);
        // Start-up may meet a transient failure: three attempts, all through the throttle.
        let bytes = match fetcher.clone().with_attempts(3).fetch(&mut source).await {
            Ok(Fetched::Modified(b)) => b,
            Ok(_) => anyhow::bail!("{config_url}: municipality configuration not found"),
            Err(e) => return Err(e).context("fetching the municipality configuration"),
        };
        let config = MunicipalityConfig::parse(&bytes, &config_url)?;
        let list = config.list(&config_url)?;
        anyhow::ensure!(
            !list.is_empty(),
            "{config_url}: the municipality configuration is empty"
        );
        let topic_files = list
            .iter()
            .flat_map(|m| {
                [Office::Mayor, Office::Councillor]
                    .map(|office| (m.topic(office.topic_kind()), (m.ibge, office)))
            })
            .collect();
        let mut cities = HashMap::with_capacity(list.len());
        let mut codes = HashMap::with_capacity(list.len());
        for (state, city) in config.cities() {
            cities.insert(
                city.tse.clone(),
                CityInfo {
                    ibge: city.ibge,
                    uf: state.uf.to_ascii_lowercase(),
                    capital: city.capital,
                    zones: city.zones.clone(),
                },
            );
            codes.insert(city.ibge, city.tse.clone());
        }
        let states: Vec<String> = config
            .states
            .iter()
            .map(|s| s.uf.to_ascii_lowercase())
            .collect();
        let mut elections = vec![Election::new(
            first,
            1,
            &[Office::Mayor, Office::Councillor],
            &states,
        )];
        if let Some(second) = second {
            // Councillors have no second round.
            elections.push(Election::new(second, 2, &[Office::Mayor], &states));
        }
        tracing::info!(
            municipalities = list.len(),
            states = states.len(),
            zones = config.cities().map(|(_, c)| c.zones.len()).sum::<usize>(),
            rate_limit = args.rate_limit,
            max_in_flight = args.max_in_flight,
            "TSE municipality configuration loaded"
        );
        Ok((
            TseSource {
                metrics,
                fetcher,
                zone_fetcher,
                throttle,
                max_in_flight: args.max_in_flight.max(1),
                elections,
                files_per_cycle: files_per_cycle(
                    args.rate_limit,
                    args.interval,
                    args.max_in_flight,
                ),
                cities,
                codes,
                unknown_logged: HashSet::new(),
                last_stats: PassStats::default(),
                mayors: HashMap::new(),
                zones_interval: args.zones_interval,
                mayors_waiting: 0,
                zone_sweep: None,
                audience: None,
                topic_files,
                hot: HashSet::new(),
                flights: FuturesUnordered::new(),
                flying: HashSet::new(),
            },
            list,
        ))
    }

    /// Read the gateways' audience from `bus` at the start of every cycle: the files of the
    /// most-subscribed city races are fetched first.
    pub fn with_audience(mut self, bus: Arc<dyn Bus>) -> Self {
        self.audience = Some(bus);
        self
    }

    /// Take the gateways' audience (best effort: on failure the last one stays).
    async fn read_audience(&mut self) {
        let Some(bus) = &self.audience else { return };
        match tokio::time::timeout(AUDIENCE_TIMEOUT, bus.audience()).await {
            Ok(Ok(topics)) => self.set_audience(&topics),
            Ok(Err(e)) => {
                tracing::debug!(
                    error = format!("{e:#}"),
                    "audience not read; the last one stays"
                )
            }
            Err(_) => tracing::debug!("audience not read in time; the last one stays"),
        }
    }

    /// The hot files: those of the first [`HOT_AUDIENCE`] city races of `topics` (most
    /// subscribed first).
    fn set_audience(&mut self, topics: &[(String, u64)]) {
        self.hot = topics
            .iter()
            .filter_map(|(topic, _)| self.topic_files.get(topic).copied())
            .take(HOT_AUDIENCE)
            .collect();
    }

    /// The throttle every request of this source passes.
    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }

    /// One cycle: progress files, then the changed cities in order, each race sent to the core
    /// as it comes. Answers the files rejected, with the reason (already logged and counted).
    ///
    /// With `patience` (the loop's `--interval`), the cycle waits for a request that long at
    /// most past its turn in the budget: one slow file (up to `--fetch-timeout`) delays no
    /// other city past the next cycle. A request still open then runs on, is not asked for
    /// again meanwhile, and is taken when it lands by the cycle then running, which waits for
    /// it as for its own; files not yet asked for (every slot held by a slow request) stay
    /// due, first in the next cycle. Without it, the cycle waits for every request.
    pub async fn poll(
        &mut self,
        tx: &mpsc::Sender<Accepted>,
        stop: &CancellationToken,
        patience: Option<Duration>,
    ) -> Vec<String> {
        let started = Instant::now();
        // How long a request is waited for past its turn in the budget.
        let spacing = Duration::from_secs(1) / self.throttle.rate().max(1);
        let wait_for = |turns: usize| {
            patience
                .map(|p| Instant::now() + p + spacing * u32::try_from(turns).unwrap_or(u32::MAX))
        };
        let mut stats = PassStats::default();
        let mut rejected = Vec::new();
        self.read_audience().await;

        // The progress files, all at once within the budget.
        let now = Instant::now();
        let mut asked = Vec::new();
        for (e, election) in self.elections.iter().enumerate() {
            for (uf, (source, backoff)) in &election.progress {
                let flight = Flight::Progress(e, uf.clone());
                if backoff.allows(now, None) && !self.flying.contains(&flight) {
                    asked.push((flight, source.clone()));
                }
            }
        }
        stats.progress_requests = asked.len();
        let mut deadline = wait_for(asked.len());
        let mut mine = HashSet::with_capacity(asked.len());
        for (flight, source) in asked {
            mine.insert(flight.clone());
            self.launch_progress(flight, source, now);
        }
        while mine.iter().any(|f| self.flying.contains(f)) {
            if !self
                .land_next(deadline, stop, tx, &mut stats, &mut rejected)
                .await
            {
                break;
            }
        }

        // The files of the cities that moved, in order, at most `max_in_flight` open.
        let mut due = self.due(Instant::now());
        stats.backlog = due.len().saturating_sub(self.files_per_cycle);
        let never_fetched = |d: &&Due| d.office == Office::Mayor && d.first && !d.retry;
        self.mayors_waiting = due
            .iter()
            .skip(self.files_per_cycle)
            .filter(never_fetched)
            .count();
        due.truncate(self.files_per_cycle);
        // Then every request in flight, an earlier cycle's too, until the last one this cycle
        // asked for has been waited for.
        let mut queue = VecDeque::from(due);
        loop {
            while !stop.is_cancelled() && self.files_in_flight() < self.max_in_flight {
                let Some(d) = queue.pop_front() else { break };
                stats.file_requests += 1;
                self.launch_file(d);
                deadline = deadline.max(wait_for(self.max_in_flight));
            }
            if queue.is_empty() && self.flying.is_empty() {
                break;
            }
            if !self
                .land_next(deadline, stop, tx, &mut stats, &mut rejected)
                .await
            {
                break;
            }
        }
        stats.backlog += queue.len();
        self.mayors_waiting += queue.iter().filter(never_fetched).count();
        stats.in_flight = self.flying.len();
        if stats.file_requests > 0 || stats.failed > 0 || stats.in_flight > 0 {
            tracing::info!(
                progress = stats.progress_requests,
                files = stats.file_requests,
                modified = stats.modified,
                not_modified = stats.not_modified,
                not_found = stats.not_found,
                failed = stats.failed,
                rejected = stats.rejected,
                backlog = stats.backlog,
                in_flight = stats.in_flight,
                elapsed = ?started.elapsed(),
                "TSE cycle"
            );
        } else {
            tracing::debug!(progress = stats.progress_requests, elapsed = ?started.elapsed(), "TSE cycle: nothing changed");
        }
        self.last_stats = stats;
        rejected
    }

    /// Put the request of `source` for `flight` in flight, its duration recorded as `kind`;
    /// `landed` is what it brings. Requests are polled first in the order they are put in
    /// flight, so they take their turns in the budget in that order.
    fn launch(
        &mut self,
        flight: Flight,
        kind: &'static str,
        mut source: Source,
        landed: impl FnOnce(Source, Result<Fetched, FetchError>) -> Landed + Send + 'static,
    ) {
        let (fetcher, metrics) = (self.fetcher.clone(), self.metrics.clone());
        self.flying.insert(flight.clone());
        self.flights.push(Box::pin(async move {
            let started = std::time::Instant::now();
            let result = fetcher.fetch(&mut source).await;
            metrics.fetched(kind, started.elapsed(), &result);
            (flight, landed(source, result))
        }));
    }

    fn launch_progress(&mut self, flight: Flight, source: Source, asked: Instant) {
        self.launch(flight, "tse_progress", source, move |source, result| {
            Landed::Progress {
                asked,
                source,
                result,
            }
        });
    }

    fn launch_file(&mut self, due: Due) {
        let flight = Flight::File(due.election, due.ibge, due.office);
        let source = due.source.clone();
        self.launch(flight, "tse_results", source, move |source, result| {
            Landed::File {
                due,
                source,
                result,
            }
        });
    }

    fn files_in_flight(&self) -> usize {
        self.flying
            .iter()
            .filter(|f| matches!(f, Flight::File(..)))
            .count()
    }

    /// Take the next request to land, whichever cycle asked for it: `false` (nothing taken)
    /// when none is in flight, `stop` is cancelled or `deadline` passes first.
    async fn land_next(
        &mut self,
        deadline: Option<Instant>,
        stop: &CancellationToken,
        tx: &mpsc::Sender<Accepted>,
        stats: &mut PassStats,
        rejected: &mut Vec<String>,
    ) -> bool {
        let expired = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let landed = tokio::select! {
            biased;
            _ = stop.cancelled() => return false,
            landed = self.flights.next() => landed,
            _ = expired => return false,
        };
        let Some((flight, landed)) = landed else {
            return false;
        };
        self.flying.remove(&flight);
        match landed {
            Landed::Progress {
                asked,
                source,
                result,
            } => {
                if let Flight::Progress(e, uf) = flight {
                    self.take_progress(e, &uf, asked, source, result, stats, rejected);
                }
            }
            Landed::File {
                due,
                source,
                result,
            } => {
                if let Some(accepted) = self.take_file(due, source, result, stats, rejected) {
                    if let Accepted::Race(race) = &accepted {
                        self.remember_mayor(race);
                    }
                    // The core is gone only when the ingest stops.
                    let _ = tx.send(accepted).await;
                }
            }
        }
        true
    }

    /// Keep the latest mayor race of a city for the zone sweep, as the core does: an earlier
    /// round never replaces a later one.
    fn remember_mayor(&mut self, race: &Race) {
        if race.office != Office::Mayor {
            return;
        }
        match self.mayors.get(&race.ibge) {
            Some(old) if old.round > race.round => {}
            _ => {
                self.mayors.insert(race.ibge, race.clone());
            }
        }
    }

    /// After a poll: point the zone sweep at the mayor races as they are now, starting it once
    /// there is a city to sweep. While mayor files never fetched wait for the next cycle (a
    /// cold start), it sweeps nothing: the first result of a city comes before the breakdown
    /// of another.
    pub fn follow_zones(&mut self, tx: &mpsc::Sender<Accepted>, shutdown: &CancellationToken) {
        if self.mayors_waiting > 0 {
            if let Some((_, sweep)) = &self.zone_sweep {
                sweep.send_replace(Vec::new());
            }
            return;
        }
        let targets = self.zone_targets();
        match &self.zone_sweep {
            Some((_, sweep)) => {
                sweep.send_replace(targets);
            }
            None if !targets.is_empty() => {
                let (sweep, rx) = watch::channel(targets);
                let task = tokio::spawn(zones::sweep_loop(
                    self.zone_fetcher.clone(),
                    rx,
                    self.zones_interval,
                    tx.clone(),
                    self.metrics.clone(),
                    shutdown.clone(),
                ));
                self.zone_sweep = Some((task, sweep));
            }
            None => {}
        }
    }

    /// Stop the zone sweep; the next [`TseSource::follow_zones`] starts it again.
    pub async fn stop_zones(&mut self) {
        if let Some((task, _)) = self.zone_sweep.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Take a state's progress file, asked for at `now`: its rows, or why it was refused.
    #[allow(clippy::too_many_arguments)]
    fn take_progress(
        &mut self,
        e: usize,
        uf: &str,
        now: Instant,
        source: Source,
        result: Result<Fetched, FetchError>,
        stats: &mut PassStats,
        rejected: &mut Vec<String>,
    ) {
        let name = source.name();
        match result {
            Ok(Fetched::Modified(bytes)) => match progress::parse(&bytes, &name) {
                Ok(file) => {
                    self.take_rows(e, &file, now);
                    self.set_progress(e, uf, source, Backoff::default());
                }
                Err(err) => {
                    stats.rejected += 1;
                    reject(&self.metrics, &err, rejected);
                    // An invalid file's validators are kept: the same bad file is not fetched
                    // again. A malformed one is asked for in full next time (see
                    // `Source::forget_validators`).
                    let mut source = source;
                    if err.kind() == "malformed" {
                        source.forget_validators();
                    }
                    self.set_progress(e, uf, source, Backoff::default());
                }
            },
            Ok(Fetched::NotModified) => {
                self.set_progress(e, uf, source, Backoff::default());
            }
            Ok(Fetched::NotFound) => {
                stats.not_found += 1;
                let mut backoff = self.elections[e].progress[uf].1.clone();
                backoff.miss(now, None);
                tracing::debug!(file = %name, wait = ?backoff.until.map(|t| t - now), "progress file not published yet");
                self.set_progress(e, uf, source, backoff);
            }
            Err(err) => {
                stats.failed += 1;
                fetch_failed(&self.metrics, &err, rejected);
            }
        }
    }

    fn set_progress(&mut self, e: usize, uf: &str, source: Source, backoff: Backoff) {
        if let Some(slot) = self.elections[e].progress.get_mut(uf) {
            *slot = (source, backoff);
        }
    }

    /// Take the municipality rows of a progress file read at `now`: a row that moved makes its
    /// files stale from `now`, unless they already were.
    fn take_rows(&mut self, e: usize, file: &progress::ProgressFile, now: Instant) {
        for row in file.municipalities() {
            let Some(city) = self.cities.get(&row.code) else {
                if self.unknown_logged.insert(row.code.clone()) {
                    self.metrics
                        .unknown_cities
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(code = %row.code, "city in a progress file but not in the municipality configuration; skipped");
                }
                continue;
            };
            let election = &mut self.elections[e];
            let moved = election
                .rows
                .get(&city.ibge)
                .is_none_or(|old| &old.fingerprint != row.fingerprint());
            if moved {
                for &office in election.offices {
                    election
                        .stale_since
                        .entry((city.ibge, office))
                        .or_insert(now);
                }
            }
            election.rows.insert(
                city.ibge,
                Row {
                    fingerprint: row.fingerprint().clone(),
                    electorate: row.electorate.total.unwrap_or(0),
                    nothing_counted: row.nothing_counted(),
                },
            );
        }
    }

    /// Files to fetch this cycle, in the order of work: every file asked for the first time or
    /// because its row moved before any retry of a 404 or a failure; among those, the hot files
    /// (second round, capitals, the most-subscribed city races), at most one in [`HOT_SHARE`]
    /// of the cycle's files, then the sweep: the file whose row moved longest ago first, ties
    /// (a cold start: every row read at once) mayors before councillors, largest electorate
    /// first.
    fn due(&self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        for (e, election) in self.elections.iter().enumerate() {
            for (&ibge, row) in &election.rows {
                let Some(code) = self.codes.get(&ibge) else {
                    continue;
                };
                let city = &self.cities[code];
                for &office in election.offices {
                    if self.flying.contains(&Flight::File(e, ibge, office)) {
                        continue;
                    }
                    let state = election.files.get(&(ibge, office));
                    let fresh =
                        state.is_some_and(|s| s.fetched_for.as_ref() == Some(&row.fingerprint));
                    let allowed =
                        state.is_none_or(|s| s.backoff.allows(now, Some(&row.fingerprint)));
                    if fresh || !allowed {
                        continue;
                    }
                    let source = match state {
                        Some(s) => s.source.clone(),
                        None => {
                            Source::new(&election.paths.unified(&city.uf, code, office.tse_code()))
                        }
                    };
                    due.push(Due {
                        election: e,
                        round: election.round,
                        ibge,
                        office,
                        hot: election.round == 2
                            || city.capital
                            || self.hot.contains(&(ibge, office)),
                        since: election
                            .stale_since
                            .get(&(ibge, office))
                            .copied()
                            .unwrap_or(now),
                        retry: state.is_some_and(|s| s.retry),
                        first: state.is_none_or(|s| s.fetched_for.is_none()),
                        capital: city.capital,
                        electorate: row.electorate,
                        fingerprint: row.fingerprint.clone(),
                        nothing_counted: row.nothing_counted,
                        source,
                    });
                }
            }
        }
        let order = |a: &Due, b: &Due| {
            a.retry
                .cmp(&b.retry)
                .then(b.hot.cmp(&a.hot))
                .then(b.round.cmp(&a.round))
                .then(b.capital.cmp(&a.capital))
                .then(a.since.cmp(&b.since))
                .then((a.office == Office::Councillor).cmp(&(b.office == Office::Councillor)))
                .then(b.electorate.cmp(&a.electorate))
                .then(a.ibge.cmp(&b.ibge))
        };
        due.sort_by(order);
        // Past its share, a hot file takes its place in the sweep like any other.
        let share = self.files_per_cycle / HOT_SHARE;
        let hot = due.iter().take_while(|d| !d.retry && d.hot).count();
        if hot > share {
            for d in &mut due[share..hot] {
                d.hot = false;
            }
            due.sort_by(order);
        }
        due
    }

    /// Take one fetched file: record its validators and row; answer its race if it is new, or
    /// the city's quarantine if it is invalid.
    fn take_file(
        &mut self,
        d: Due,
        source: Source,
        result: Result<Fetched, FetchError>,
        stats: &mut PassStats,
        rejected: &mut Vec<String>,
    ) -> Option<Accepted> {
        let election = &mut self.elections[d.election];
        let state = election
            .files
            .entry((d.ibge, d.office))
            .or_insert_with(|| FileState {
                source: source.clone(),
                fetched_for: None,
                backoff: Backoff::default(),
                retry: false,
            });
        let name = source.name();
        match result {
            Ok(Fetched::Modified(bytes)) => {
                stats.modified += 1;
                waited(&self.metrics, &mut election.stale_since, &d);
                state.source = source;
                state.fetched_for = Some(d.fingerprint);
                state.backoff = Backoff::default();
                state.retry = false;
                let code = self.codes.get(&d.ibge).map(String::as_str).unwrap_or("");
                match race_of(&bytes, &name, code, d.ibge, d.office, election.round) {
                    Ok(race) => {
                        if let Some(stamp) = &race.source_time {
                            self.metrics.detected("tse", stamp);
                        }
                        Some(Accepted::Race(race))
                    }
                    Err(error) => {
                        // An invalid file's validators are kept: the same file is not fetched
                        // again until its row moves. A malformed one (not JSON, cut short) is
                        // due again next cycle, asked for in full: it may be a transfer cut
                        // short (see `Source::forget_validators`). The city is quarantined; no
                        // other city waits for it.
                        if error.kind() == "malformed" {
                            state.source.forget_validators();
                            state.fetched_for = None;
                            state.retry = true;
                        }
                        stats.rejected += 1;
                        self.metrics.feed_error(error.kind());
                        rejected.push(error.to_string());
                        Some(Accepted::Invalid {
                            ibge: d.ibge,
                            office: d.office,
                            round: election.round,
                            error,
                        })
                    }
                }
            }
            Ok(Fetched::NotModified) => {
                stats.not_modified += 1;
                waited(&self.metrics, &mut election.stale_since, &d);
                state.source = source;
                state.fetched_for = Some(d.fingerprint);
                state.backoff = Backoff::default();
                state.retry = false;
                None
            }
            Ok(Fetched::NotFound) => {
                stats.not_found += 1;
                // Not there yet: nothing is stale until its row moves again.
                election.stale_since.remove(&(d.ibge, d.office));
                state.retry = true;
                let now = Instant::now();
                state
                    .backoff
                    .miss(now, Some((&d.fingerprint, d.nothing_counted)));
                tracing::debug!(file = %name, misses = state.backoff.misses, "not published yet");
                None
            }
            Err(err) => {
                // Due again next cycle, behind the files not yet asked for.
                stats.failed += 1;
                state.retry = true;
                fetch_failed(&self.metrics, &err, rejected);
                None
            }
        }
    }

    /// What the zone sweep should cover now: every city of more than one zone with a mayor
    /// race, in fetch order, with the election of the race's round.
    fn zone_targets(&self) -> Vec<ZoneTarget> {
        let mayors = &self.mayors;
        let mut targets: Vec<ZoneTarget> = self
            .cities
            .iter()
            .filter(|(_, c)| c.zones.len() > 1)
            .filter_map(|(code, c)| {
                let race = mayors.get(&c.ibge)?;
                let election = self.elections.iter().find(|e| e.round == race.round)?;
                let electorate = election.rows.get(&c.ibge).map_or(0, |r| r.electorate);
                Some(ZoneTarget {
                    ibge: c.ibge,
                    capital: c.capital,
                    electorate,
                    urls: c
                        .zones
                        .iter()
                        .map(|z| {
                            (
                                z.clone(),
                                election
                                    .paths
                                    .zone(&c.uf, code, z, Office::Mayor.tse_code()),
                            )
                        })
                        .collect(),
                    race: race.clone(),
                })
            })
            .collect();
        targets.sort_by(|a, b| {
            b.capital
                .cmp(&a.capital)
                .then(b.electorate.cmp(&a.electorate))
                .then(a.ibge.cmp(&b.ibge))
        });
        targets
    }

    /// What the last cycle did.
    pub fn last_stats(&self) -> PassStats {
        self.last_stats
    }
}

/// Files one cycle may fetch: what the rate allows in one interval, and at least enough to keep
/// every in-flight slot busy.
fn files_per_cycle(rate: u32, interval: Duration, max_in_flight: usize) -> usize {
    let budget = (f64::from(rate) * interval.as_secs_f64()).floor() as usize;
    budget.max(2 * max_in_flight.max(1))
}

/// The file of `d` is fetched: it is no longer stale; its wait is recorded.
fn waited(metrics: &Metrics, stale_since: &mut HashMap<(u32, Office), Instant>, d: &Due) {
    if let Some(since) = stale_since.remove(&(d.ibge, d.office)) {
        metrics.tse_waited(d.hot, since.elapsed());
    }
}

/// A file due this cycle.
struct Due {
    election: usize,
    round: u8,
    ibge: u32,
    office: Office,
    /// Second round, capital, or one of the most-subscribed (within [`HOT_SHARE`]).
    hot: bool,
    /// Since when its row moved without it being fetched (now if it did not).
    since: Instant,
    /// A retry of a 404 or a failure.
    retry: bool,
    /// No document of this file yet.
    first: bool,
    capital: bool,
    electorate: u64,
    fingerprint: Fingerprint,
    nothing_counted: bool,
    source: Source,
}

impl Election {
    fn new(paths: TsePaths, round: u8, offices: &'static [Office], states: &[String]) -> Self {
        let progress = states
            .iter()
            .map(|uf| {
                (
                    uf.clone(),
                    (Source::new(&paths.progress(uf)), Backoff::default()),
                )
            })
            .collect();
        Election {
            paths,
            round,
            offices,
            progress,
            rows: HashMap::new(),
            files: HashMap::new(),
            stale_since: HashMap::new(),
        }
    }
}

fn reject(metrics: &Metrics, err: &FeedError, rejected: &mut Vec<String>) {
    metrics.feed_error(err.kind());
    tracing::error!(error = %err, "TSE file rejected; previous documents stay current");
    rejected.push(err.to_string());
}

fn fetch_failed(metrics: &Metrics, err: &FetchError, rejected: &mut Vec<String>) {
    metrics.feed_error(err.kind());
    tracing::warn!(error = %err, "TSE fetch failed; due again next cycle");
    rejected.push(err.to_string());
}
