//! Ingest: poll the feed, parse, slice into topic documents, diff, publish whole cycles.
//!
//! Two sources ([`SourceKind`]): the provider's consolidated files, where the mayor and
//! councillor files are polled every `interval` (10 s); or the authority's per-city files
//! ([`tse`]), where every cycle reads the progress files and fetches only the cities that
//! changed. Zone files, one per city, are polled every `zones_interval` (60 s) by a task of their
//! own that hands parsed results to the main loop.
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

pub mod leader;
pub mod tse;
pub mod zones;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Cycle};
use crate::documents::{self, Draft};
use crate::feed::consolidated;
use crate::feed::municipalities::MunicipalityList;
use crate::fetch::{Fetched, Fetcher, Source};
use crate::metrics::Metrics;
use crate::model::{Office, Race, TopicKind, ZoneBreakdown};

/// Which layout the feed is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SourceKind {
    /// The provider's national files (`--feed`, `--councillors-feed`, `--municipalities`).
    #[default]
    Consolidated,
    /// The authority's per-city files (`--base-url`, `--election`).
    Tse,
}

/// Where the feed comes from and how often to poll it.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedArgs {
    /// The feed's layout: `consolidated` (a provider's national files) or `tse` (the
    /// authority's per-city files).
    #[arg(long, env = "APURA_SOURCE", value_enum, default_value_t = SourceKind::Consolidated)]
    pub source: SourceKind,
    /// Consolidated: the mayors file, an http(s) URL, a file:// URL or a path.
    #[arg(long, env = "APURA_FEED")]
    pub feed: Option<String>,
    /// Consolidated: the councillors file, same shape as the mayors file.
    #[arg(long, env = "APURA_COUNCILLORS_FEED")]
    pub councillors_feed: Option<String>,
    /// Consolidated: the municipality list, the consolidated JSON (`{"<IBGE>": {"n", "e"}}`) or
    /// the TSE CSV.
    #[arg(long, env = "APURA_MUNICIPALITIES")]
    pub municipalities: Option<String>,
    /// TSE: the cycle's folder, e.g. `https://resultados.tse.jus.br/oficial/ele2024/` (an
    /// http(s) URL, a file:// URL or a path).
    #[arg(long, env = "APURA_TSE_BASE_URL")]
    pub base_url: Option<String>,
    /// TSE: the first round's election code, as the catalogue (`ele-c.json`) lists it
    /// (e.g. 619 in 2024).
    #[arg(long, env = "APURA_TSE_ELECTION")]
    pub election: Option<String>,
    /// TSE: the second round's election code (the catalogue's `cdt2`, e.g. 620 in 2024); its
    /// mayor races replace the first round's in the cities that have one.
    #[arg(long, env = "APURA_TSE_ELECTION_ROUND2")]
    pub election_round2: Option<String>,
    /// TSE: requests per second to the authority, retries included (it blocks an IP above 100
    /// for ten minutes); at most 90, which leaves a tenth for clock and network jitter.
    #[arg(long, env = "APURA_TSE_RATE_LIMIT", default_value_t = tse::DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,
    /// TSE: requests open at once.
    #[arg(long, env = "APURA_TSE_MAX_IN_FLIGHT", default_value_t = tse::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Consolidated: URL template of the per-city zone files; `{uf}` and `{slug}` are replaced
    /// (e.g. `https://feed.example/zones/zone-{uf}-{slug}.json`).
    #[arg(long, env = "APURA_ZONES_URL_TEMPLATE")]
    pub zones_url_template: Option<String>,
    /// How often to poll the mayors and councillors files (TSE: the progress files; a TSE cycle
    /// fetches at most `--rate-limit` × this many city files, the rest in the next cycle).
    #[arg(long, env = "APURA_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How often to poll the zone files (TSE: the per-zone files of the cities of more than one
    /// zone whose mayor race changed).
    #[arg(long, env = "APURA_ZONES_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub zones_interval: Duration,
    /// Timeout of one feed request, body included.
    #[arg(long, env = "APURA_FETCH_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub fetch_timeout: Duration,
    /// Largest feed file accepted, in bytes; a larger one is refused (`too_large`) without
    /// being read whole.
    #[arg(long, env = "APURA_MAX_FEED_BYTES", default_value_t = crate::fetch::DEFAULT_MAX_BYTES)]
    pub max_feed_bytes: usize,
    /// Consolidated: the largest share of a file's cities, in percent, that may fail validation
    /// with the file still taken for the others (each invalid city keeps its last good
    /// documents, marked `held`); past it the whole file is rejected. 0 rejects a file for one
    /// bad city. Below 20 cities one invalid city is already over 5 %.
    #[arg(long, env = "APURA_MAX_INVALID_SHARE", default_value_t = DEFAULT_MAX_INVALID_SHARE)]
    pub max_invalid_share: f64,
    /// The feed is the built-in simulator (`apura demo`): the documents say `source:
    /// "simulation"`. Not an option.
    #[arg(skip)]
    pub simulated: bool,
}

/// Default `--max-invalid-share`, in percent: 278 of 5,570 cities. A few broken cities are a
/// provider's slip; hundreds mean the file itself is broken, and publishing its other cities
/// would be trusting a feed that is not right.
pub const DEFAULT_MAX_INVALID_SHARE: f64 = 5.0;
/// A feed file that fails to fetch is asked again after 1, 2, 4, then every 4 polls: an upstream
/// answering 500 every 10 s poll is asked every 40 s (one attempt, where a healthy file gets
/// three), and back within one of those once it recovers.
pub const BACKOFF_MAX_POLLS: u32 = 4;
/// Start-up: first wait before loading the municipality list (TSE: the configuration) again.
pub const STARTUP_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Start-up: the wait doubles up to this: a list that comes back is loaded at most 10 s later,
/// and an upstream that stays down is asked six times a minute.
pub const STARTUP_RETRY_MAX: Duration = Duration::from_secs(10);

impl Default for FeedArgs {
    /// The command line's defaults, with no feed named: a consolidated source polled every
    /// 10 s, zones every 60 s, 10 s per request, 50 requests/s and 8 in flight for the TSE.
    fn default() -> Self {
        FeedArgs {
            source: SourceKind::Consolidated,
            feed: None,
            councillors_feed: None,
            municipalities: None,
            base_url: None,
            election: None,
            election_round2: None,
            rate_limit: tse::DEFAULT_RATE_LIMIT,
            max_in_flight: tse::DEFAULT_MAX_IN_FLIGHT,
            zones_url_template: None,
            interval: Duration::from_secs(10),
            zones_interval: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(10),
            max_feed_bytes: crate::fetch::DEFAULT_MAX_BYTES,
            max_invalid_share: DEFAULT_MAX_INVALID_SHARE,
            simulated: false,
        }
    }
}

impl FeedArgs {
    /// A consolidated source: the mayors file and the municipality list, the rest defaults.
    pub fn consolidated(feed: impl Into<String>, municipalities: impl Into<String>) -> Self {
        FeedArgs {
            feed: Some(feed.into()),
            municipalities: Some(municipalities.into()),
            ..FeedArgs::default()
        }
    }

    /// A TSE source: the cycle's folder and the first round's election code.
    pub fn tse(base_url: impl Into<String>, election: impl Into<String>) -> Self {
        FeedArgs {
            source: SourceKind::Tse,
            base_url: Some(base_url.into()),
            election: Some(election.into()),
            ..FeedArgs::default()
        }
    }

    /// Every problem with the options, reported at once: what the chosen source needs, what
    /// belongs to the other one, and values out of range.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut needs = |present: bool, flag: &str| {
            if !present {
                problems.push(format!(
                    "{flag} is required with --source {}",
                    self.source_name()
                ));
            }
        };
        match self.source {
            SourceKind::Consolidated => {
                needs(self.feed.is_some(), "--feed");
                needs(self.municipalities.is_some(), "--municipalities");
            }
            SourceKind::Tse => {
                needs(self.base_url.is_some(), "--base-url");
                needs(self.election.is_some(), "--election");
            }
        }
        let misplaced: &[(bool, &str)] = match self.source {
            SourceKind::Consolidated => &[
                (self.base_url.is_some(), "--base-url"),
                (self.election.is_some(), "--election"),
                (self.election_round2.is_some(), "--election-round2"),
            ],
            SourceKind::Tse => &[
                (self.feed.is_some(), "--feed"),
                (self.councillors_feed.is_some(), "--councillors-feed"),
                (self.municipalities.is_some(), "--municipalities"),
                (self.zones_url_template.is_some(), "--zones-url-template"),
            ],
        };
        for (present, flag) in misplaced {
            if *present {
                problems.push(format!(
                    "{flag} does not apply to --source {}",
                    self.source_name()
                ));
            }
        }
        for (code, flag) in [
            (&self.election, "--election"),
            (&self.election_round2, "--election-round2"),
        ] {
            if let Some(code) = code
                && let Err(e) = crate::feed::tse::paths::election_code(code)
            {
                problems.push(format!("{flag}: {e}"));
            }
        }
        if self.election.is_some() && self.election == self.election_round2 {
            problems.push("--election-round2 must differ from --election".to_string());
        }
        if !(1..=tse::MAX_RATE_LIMIT).contains(&self.rate_limit) {
            problems.push(format!(
                "--rate-limit must be between 1 and {} requests/s (the authority blocks above 100)",
                tse::MAX_RATE_LIMIT
            ));
        }
        if self.max_in_flight == 0 {
            problems.push("--max-in-flight must be at least 1".to_string());
        }
        if !(0.0..=100.0).contains(&self.max_invalid_share) {
            problems.push("--max-invalid-share must be a percentage, from 0 to 100".to_string());
        }
        for (d, flag) in [
            (self.interval, "--interval"),
            (self.zones_interval, "--zones-interval"),
            (self.fetch_timeout, "--fetch-timeout"),
        ] {
            if d.is_zero() {
                problems.push(format!("{flag} must be longer than zero"));
            }
        }
        problems
    }

    fn source_name(&self) -> &'static str {
        match self.source {
            SourceKind::Consolidated => "consolidated",
            SourceKind::Tse => "tse",
        }
    }
}

/// Load the municipality list, from a URL or a path.
pub async fn load_municipalities(
    location: &str,
    fetcher: &Fetcher,
) -> anyhow::Result<MunicipalityList> {
    let mut source = Source::new(location);
    let bytes = match fetcher.fetch(&mut source).await? {
        Fetched::Modified(b) => b,
        _ => anyhow::bail!("{location}: municipality list not found"),
    };
    let list = MunicipalityList::parse(&bytes, location)?;
    anyhow::ensure!(
        !list.is_empty(),
        "{location}: the municipality list is empty"
    );
    Ok(list)
}

/// What one cycle did.
#[derive(Debug, Default)]
pub struct CycleReport {
    /// The last cycle published, if anything changed.
    pub cycle: Option<Arc<Cycle>>,
    /// Every cycle published, in order: one for a consolidated feed; a TSE poll publishes as
    /// its cities come in, so its first cities need not wait for its last.
    pub cycles: Vec<Arc<Cycle>>,
    /// Feed files rejected in this cycle, with the reason.
    pub rejected: Vec<String>,
}

/// One file of a consolidated feed and how it has been answering.
struct Polled {
    source: Source,
    /// Not found at the last poll: logged when it goes missing and when it is back.
    missing: bool,
    /// Consecutive failed fetches.
    failures: u32,
    /// Polls to let pass before asking again.
    skip: u32,
    /// Consecutive files whose time disagrees with the accepted file's (older, or far ahead).
    disagreements: u32,
}

impl Polled {
    fn new(location: &str) -> Self {
        Polled {
            source: Source::new(location),
            missing: false,
            failures: 0,
            skip: 0,
            disagreements: 0,
        }
    }

    /// The file answered (found or not): no back-off.
    fn answered(&mut self, name: &str) {
        if self.failures > 0 {
            tracing::info!(file = %name, failures = self.failures, "feed file answers again");
        }
        self.failures = 0;
        self.skip = 0;
    }

    /// The file is there.
    fn found(&mut self, name: &str) {
        if self.missing {
            tracing::warn!(file = %name, "feed file found again");
            self.missing = false;
        }
        self.answered(name);
    }

    /// One more failed fetch: let 0, 1, 3, then 3 polls pass before the next.
    fn failed(&mut self) {
        self.failures += 1;
        self.skip = (1u32 << (self.failures - 1).min(8)).min(BACKOFF_MAX_POLLS) - 1;
    }
}

/// A city race whose latest results failed validation.
struct Quarantined {
    /// The round of the refused results: a race of an earlier round does not release it.
    round: u8,
    held: documents::Held,
    since: Instant,
}

/// Where an ingest reads its results.
enum FeedSource {
    Consolidated {
        mayors: Box<Polled>,
        councillors: Option<Box<Polled>>,
    },
    /// Behind an async mutex so that a poll can hold it while it hands races to the ingest,
    /// and a poll cut short (its future dropped) leaves it in place.
    Tse(Arc<tokio::sync::Mutex<tse::TseSource>>),
}

/// The ingest state: the latest accepted results and the last published body of every topic.
pub struct Ingest {
    list: Arc<MunicipalityList>,
    fetcher: Fetcher,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    feed: FeedSource,
    mayors: HashMap<u32, Race>,
    councillors: HashMap<u32, Race>,
    zones: HashMap<u32, ZoneBreakdown>,
    /// Sliced city documents, kept until the city's results change: most cities do not
    /// change in a given cycle, and slicing all 17,000 documents again would cost more than
    /// parsing the file.
    sliced: HashMap<(u32, TopicKind), Draft>,
    /// The `/cities.json` index, kept until a city gains or loses a topic.
    index: Option<Draft>,
    /// Body of every topic as last published: the diff's reference.
    published: HashMap<String, Bytes>,
    /// Unknown city keys already logged, so a feed with one stays one log line.
    unknown_logged: HashSet<String>,
    /// The government timestamp (`last_updated`, ISO local time) of the newest accepted file
    /// of each office: an older one is refused as `stale`. The authority may republish
    /// (a retotalization), but always with a newer timestamp.
    newest_time: HashMap<Office, String>,
    /// Set by [`Ingest::hold_for_zones`]: publish nothing until the first zone results are
    /// in, or this deadline.
    zones_hold: Option<Instant>,
    /// City races whose latest results failed validation, by city and office.
    quarantine: HashMap<(u32, Office), Quarantined>,
    /// `--max-invalid-share`, in percent.
    max_invalid_share: f64,
    /// What feeds this ingest, as the `brazil` document says.
    data_source: documents::DataSource,
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
        let feed = FeedSource::Consolidated {
            mayors: Box::new(Polled::new(args.feed.as_deref().unwrap_or_default())),
            councillors: args
                .councillors_feed
                .as_deref()
                .map(|c| Box::new(Polled::new(c))),
        };
        let mut ingest = Self::with_source(list, feed, fetcher, bus, metrics);
        ingest.max_invalid_share = args.max_invalid_share;
        ingest.data_source = documents::DataSource::of(args.source, args.simulated);
        ingest
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
        let fetcher = Fetcher::new(args.fetch_timeout, args.max_feed_bytes)?;
        match args.source {
            SourceKind::Consolidated => {
                let location = args.municipalities.as_deref().unwrap_or_default();
                let list = load_municipalities(location, &fetcher)
                    .await
                    .context("loading the municipality list")?;
                tracing::info!(municipalities = list.len(), "municipality list loaded");
                Ok(Self::new(Arc::new(list), args, fetcher, bus, metrics))
            }
            SourceKind::Tse => {
                let (source, list) = tse::TseSource::connect(args)
                    .await
                    .context("starting the TSE source")?;
                let feed = FeedSource::Tse(Arc::new(tokio::sync::Mutex::new(source)));
                let mut ingest = Self::with_source(Arc::new(list), feed, fetcher, bus, metrics);
                ingest.max_invalid_share = args.max_invalid_share;
                ingest.data_source = documents::DataSource::of(args.source, args.simulated);
                Ok(ingest)
            }
        }
    }

    fn with_source(
        list: Arc<MunicipalityList>,
        feed: FeedSource,
        fetcher: Fetcher,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Ingest {
            list,
            fetcher,
            bus,
            metrics,
            feed,
            mayors: HashMap::new(),
            councillors: HashMap::new(),
            zones: HashMap::new(),
            published: HashMap::new(),
            sliced: HashMap::new(),
            index: None,
            unknown_logged: HashSet::new(),
            newest_time: HashMap::new(),
            zones_hold: None,
            quarantine: HashMap::new(),
            max_invalid_share: DEFAULT_MAX_INVALID_SHARE,
            data_source: documents::DataSource::Consolidated,
        }
    }

    /// On a store found empty, when this process holds no zone results (a standby that never
    /// led, or a restart): publish nothing until the first zone results are in, for at most
    /// `patience`. Otherwise the first cycle would be the state without its zone documents,
    /// and with an index that lists no zones topic, though gateways still serve them. The
    /// zone poller hands results over in batches, capitals and the largest cities first, so
    /// the rest of a round follows within seconds.
    pub fn hold_for_zones(&mut self, patience: Duration) {
        if self.zones.is_empty() {
            self.zones_hold = Some(Instant::now() + patience);
        }
    }

    /// Take what the bus already holds as the reference for the diff, so a new leader (or a
    /// restart) does not publish again documents that have not changed.
    pub async fn seed_from_bus(&mut self) -> anyhow::Result<usize> {
        let docs = self
            .bus
            .snapshot()
            .await
            .context("reading the bus snapshot")?;
        for doc in &docs {
            if let Some(body) = doc.content() {
                self.published.insert(doc.topic.to_string(), body);
            }
        }
        // The index lists what the store holds (see `drafts`): build it again.
        self.index = None;
        Ok(docs.len())
    }

    /// Forget what was published, so that the next cycle publishes every document again (the
    /// store was found empty: a restarted Redis without persistence).
    pub fn forget_published(&mut self) {
        self.published.clear();
        self.index = None;
    }

    /// The municipalities of this deployment.
    pub fn municipalities(&self) -> &Arc<MunicipalityList> {
        &self.list
    }

    /// The current race of `office` in the city `ibge`, as last accepted.
    pub fn race(&self, ibge: u32, office: Office) -> Option<&Race> {
        match office {
            Office::Mayor => self.mayors.get(&ibge),
            Office::Councillor => self.councillors.get(&ibge),
        }
    }

    /// What the last TSE cycle did; `None` for a consolidated source.
    pub async fn tse_stats(&self) -> Option<tse::PassStats> {
        match &self.feed {
            FeedSource::Tse(source) => Some(source.lock().await.last_stats()),
            FeedSource::Consolidated { .. } => None,
        }
    }

    /// Poll the feed once and publish what changed.
    pub async fn poll(&mut self) -> anyhow::Result<CycleReport> {
        self.poll_until(&CancellationToken::new()).await
    }

    /// Poll the feed once and publish what changed; a TSE poll stops early, publishing what
    /// it has, when `stop` is cancelled.
    pub async fn poll_until(&mut self, stop: &CancellationToken) -> anyhow::Result<CycleReport> {
        let started = Instant::now();
        let report = match &self.feed {
            FeedSource::Consolidated { .. } => self.poll_consolidated().await?,
            FeedSource::Tse(source) => {
                let source = source.clone();
                let mut source = source.lock().await;
                source.poll(self, stop).await?
            }
        };
        self.metrics
            .last_cycle_micros
            .store(started.elapsed().as_micros() as u64, Relaxed);
        Ok(report)
    }

    async fn poll_consolidated(&mut self) -> anyhow::Result<CycleReport> {
        let mut rejected = Vec::new();
        let FeedSource::Consolidated {
            mayors: mayors_source,
            councillors: councillors_source,
        } = &mut self.feed
        else {
            unreachable!("called for a consolidated source only")
        };
        let newest = |office| self.newest_time.get(&office).map(String::as_str);
        let share = self.max_invalid_share;
        let (mayors, councillors) = tokio::join!(
            fetch_race_file(
                &self.fetcher,
                mayors_source,
                Office::Mayor,
                &self.list,
                &self.metrics,
                newest(Office::Mayor),
                share,
            ),
            async {
                match councillors_source {
                    Some(src) => Some(
                        fetch_race_file(
                            &self.fetcher,
                            src,
                            Office::Councillor,
                            &self.list,
                            &self.metrics,
                            newest(Office::Councillor),
                            share,
                        )
                        .await,
                    ),
                    None => None,
                }
            }
        );
        for (office, outcome) in [
            (Office::Mayor, Some(mayors)),
            (Office::Councillor, councillors),
        ] {
            let Some(outcome) = outcome else { continue };
            match outcome {
                Ok(Some(feed)) => self.accept_office(office, feed),
                Err(reason) => rejected.push(reason),
                Ok(None) => {}
            }
        }
        let cycle = self.publish_changes().await?;
        Ok(CycleReport {
            cycles: cycle.iter().cloned().collect(),
            cycle,
            rejected,
        })
    }

    /// Take a batch of zone results and publish what changed.
    pub async fn apply_zones(
        &mut self,
        batch: Vec<(u32, ZoneBreakdown)>,
    ) -> anyhow::Result<Option<Arc<Cycle>>> {
        self.zones_hold = None;
        for (ibge, z) in batch {
            if self.zones.get(&ibge) != Some(&z) {
                self.sliced.remove(&(ibge, TopicKind::Zones));
                if self.zones.insert(ibge, z).is_none() {
                    self.index = None;
                }
            }
        }
        self.publish_changes().await
    }

    /// Take a validated feed file as the current results of `office`: its valid cities'
    /// races; its invalid cities (`invalid_cities`) are quarantined and keep their last good
    /// race.
    pub fn accept_office(&mut self, office: Office, mut feed: consolidated::ConsolidatedFeed) {
        let invalid = std::mem::take(&mut feed.invalid_cities);
        for (ibge, err) in &invalid {
            self.hold(*ibge, office, feed.round, err);
        }
        for race in &feed.races {
            self.release(race.ibge, office, race.round);
        }
        self.take_file(office, feed, &invalid);
    }

    /// Take a validated feed file as the current results of the office of its races (a file
    /// without a valid race changes nothing).
    pub fn accept(&mut self, feed: consolidated::ConsolidatedFeed) {
        match feed.races.first().map(|r| r.office) {
            Some(office) => self.accept_office(office, feed),
            None => self.note_unknown(&feed.unknown_cities),
        }
    }

    fn take_file(
        &mut self,
        office: Office,
        feed: consolidated::ConsolidatedFeed,
        invalid: &[(u32, crate::feed::FeedError)],
    ) {
        self.note_unknown(&feed.unknown_cities);
        if let Some(t) = &feed.source_time {
            self.newest_time.insert(office, t.clone());
        }
        let mut races: HashMap<u32, Race> = feed.races.into_iter().map(|r| (r.ibge, r)).collect();
        let kind = office.topic_kind();
        let old = match office {
            Office::Mayor => &mut self.mayors,
            Office::Councillor => &mut self.councillors,
        };
        // A quarantined city keeps its last good race, of whatever round.
        let invalid: HashSet<u32> = invalid.iter().map(|(ibge, _)| *ibge).collect();
        for ibge in &invalid {
            if let Some(race) = old.get(ibge) {
                races.insert(*ibge, race.clone());
            }
        }
        // A city of this round present before and absent now keeps its last results: results
        // are state, and a provider dropping a city from one file must not delete its page.
        // (A round-2 file lists only the cities with a runoff: the others are not missing.)
        let missing: Vec<u32> = old
            .iter()
            .filter(|(ibge, r)| {
                r.round == feed.round && !races.contains_key(ibge) && !invalid.contains(ibge)
            })
            .map(|(ibge, _)| *ibge)
            .collect();
        if !missing.is_empty() {
            self.metrics.feed_error("missing_cities");
            let names: Vec<&str> = missing
                .iter()
                .take(5)
                .filter_map(|c| self.list.get(*c).map(|m| m.name.as_str()))
                .collect();
            tracing::warn!(
                ?office,
                missing = missing.len(),
                first = ?names,
                "cities absent from the new file keep their last results"
            );
        }
        for ibge in missing {
            if let Some(race) = old.get(&ibge) {
                races.insert(ibge, race.clone());
            }
        }
        for (ibge, race) in old.iter() {
            if races.get(ibge) != Some(race) {
                self.sliced.remove(&(*ibge, kind));
            }
        }
        if old.len() != races.len() || races.keys().any(|k| !old.contains_key(k)) {
            self.index = None;
        }
        *old = races;
    }

    /// Take one race as the current result of its city and office. A race of an earlier round
    /// never replaces a later one (a first-round correction after the second round has begun
    /// stays out of the documents); an equal race changes nothing but ends a quarantine.
    pub fn accept_race(&mut self, race: Race) {
        let key = (race.ibge, race.office.topic_kind());
        let races = match race.office {
            Office::Mayor => &mut self.mayors,
            Office::Councillor => &mut self.councillors,
        };
        match races.get(&race.ibge) {
            Some(old) if old.round > race.round => return,
            Some(old) if *old == race => {
                self.release(race.ibge, race.office, race.round);
                return;
            }
            Some(_) => {}
            None => self.index = None,
        }
        self.sliced.remove(&key);
        let (ibge, office, round) = (race.ibge, race.office, race.round);
        races.insert(ibge, race);
        self.release(ibge, office, round);
    }

    /// The results of `office` in the city `ibge`, of round `round`, failed validation (`err`):
    /// quarantine the city, which keeps its last good race, if it has one, marked as held.
    /// Logged when the city enters; counted every time, by reason.
    pub fn hold(&mut self, ibge: u32, office: Office, round: u8, err: &crate::feed::FeedError) {
        let reason = err.reason();
        self.metrics.city_rejected(reason);
        let key = (ibge, office);
        let kind = office.topic_kind();
        if let Some(q) = self.quarantine.get_mut(&key) {
            q.round = q.round.max(round);
            // A new reason is worth republishing; the same reason with another value is not.
            if q.held.reason != reason {
                q.held.reason = reason.to_string();
                q.held.detail = err.what();
                self.sliced.remove(&(ibge, kind));
            }
            tracing::debug!(ibge, ?office, error = %err, "quarantined city still invalid");
            return;
        }
        let name = self.list.get(ibge).map_or("", |m| m.name.as_str());
        let has_race = self.race(ibge, office).is_some();
        tracing::warn!(
            city = %name,
            ibge,
            ?office,
            reason,
            error = %err,
            "city quarantined: {}",
            if has_race {
                "its last good documents stay current, marked as held"
            } else {
                "never valid yet, it is not published until it is"
            }
        );
        self.quarantine.insert(
            key,
            Quarantined {
                round,
                held: documents::Held {
                    since: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                        .to_string(),
                    reason: reason.to_string(),
                    detail: err.what(),
                },
                since: Instant::now(),
            },
        );
        self.sliced.remove(&(ibge, kind));
        self.count_quarantined();
    }

    /// Valid results of round `round` came for `office` in the city `ibge`: end its quarantine
    /// (not for an earlier round than the one refused).
    fn release(&mut self, ibge: u32, office: Office, round: u8) {
        let key = (ibge, office);
        match self.quarantine.get(&key) {
            Some(q) if round >= q.round => {}
            _ => return,
        }
        let Some(q) = self.quarantine.remove(&key) else {
            return;
        };
        let name = self.list.get(ibge).map_or("", |m| m.name.as_str());
        tracing::warn!(
            city = %name,
            ibge,
            ?office,
            held_for = ?q.since.elapsed(),
            "city out of quarantine: its documents follow the feed again"
        );
        self.sliced.remove(&(ibge, office.topic_kind()));
        self.count_quarantined();
    }

    fn count_quarantined(&self) {
        let cities: HashSet<u32> = self.quarantine.keys().map(|(ibge, _)| *ibge).collect();
        self.metrics
            .quarantined_cities
            .store(cities.len() as i64, Relaxed);
    }

    /// The quarantine of `office` in the city `ibge`, if it is quarantined: since when and why.
    pub fn held(&self, ibge: u32, office: Office) -> Option<&documents::Held> {
        self.quarantine.get(&(ibge, office)).map(|q| &q.held)
    }

    fn note_unknown(&mut self, unknown: &[String]) {
        for key in unknown {
            if self.unknown_logged.insert(key.clone()) {
                self.metrics.unknown_cities.fetch_add(1, Relaxed);
                tracing::warn!(city = %key, "city in the feed but not in the municipality list; skipped");
            }
        }
    }

    /// Every current document, built from the accepted results; none before the first results
    /// (an index of cities without results is no reason for a gateway to be ready).
    pub fn drafts(&mut self) -> Vec<Draft> {
        if self.mayors.is_empty() && self.councillors.is_empty() && self.zones.is_empty() {
            return Vec::new();
        }
        let mut drafts = Vec::with_capacity(self.mayors.len() * 2 + self.zones.len() + 30);
        let quarantine = &self.quarantine;
        let held = |ibge, office| quarantine.get(&(ibge, office)).map(|q| &q.held);
        for m in self.list.iter() {
            let key = |kind| (m.ibge, kind);
            if let Some(r) = self.mayors.get(&m.ibge) {
                let d = self
                    .sliced
                    .entry(key(TopicKind::Mayors))
                    .or_insert_with(|| documents::city_held(m, r, held(m.ibge, Office::Mayor)));
                drafts.push(d.clone());
            }
            if let Some(r) = self.councillors.get(&m.ibge) {
                let d = self
                    .sliced
                    .entry(key(TopicKind::Councillors))
                    .or_insert_with(|| {
                        documents::city_held(m, r, held(m.ibge, Office::Councillor))
                    });
                drafts.push(d.clone());
            }
            if let Some(z) = self.zones.get(&m.ibge) {
                let d = self
                    .sliced
                    .entry(key(TopicKind::Zones))
                    .or_insert_with(|| documents::zones(m, z));
                drafts.push(d.clone());
            }
        }
        if !self.mayors.is_empty() {
            let source = self.data_source;
            drafts.extend(documents::rollups_held(
                &self.list,
                &self.mayors,
                source,
                |ibge| quarantine.contains_key(&(ibge, Office::Mayor)),
            ));
        }
        let (list, mayors, councillors, zones, published) = (
            &self.list,
            &self.mayors,
            &self.councillors,
            &self.zones,
            &self.published,
        );
        // A topic is listed while this process has its results, and also while the store holds
        // its document: a new leader has the mayor and councillor files after its first poll,
        // but the zone files only after its first zone round, and meanwhile the zone documents
        // its predecessor published are still served; an index without them would tell clients
        // they are gone, then come back a zone round later.
        let index = self.index.get_or_insert_with(|| {
            documents::index(list, |m, kind| {
                let held = match kind {
                    TopicKind::Mayors => mayors.contains_key(&m.ibge),
                    TopicKind::Councillors => councillors.contains_key(&m.ibge),
                    TopicKind::Zones => zones.contains_key(&m.ibge),
                };
                held || published.contains_key(&m.topic(kind))
            })
        });
        drafts.push(index.clone());
        drafts
    }

    /// The current documents whose body differs from what was last published: slice and diff.
    pub fn changed(&mut self) -> Vec<Draft> {
        let drafts = self.drafts();
        drafts
            .into_iter()
            .filter(|d| {
                !self
                    .published
                    .get(&d.topic)
                    .is_some_and(|p| same_bytes(p, &d.body))
            })
            .collect()
    }

    /// Make `drafts` the diff's reference, once they are published.
    pub fn mark_published(&mut self, drafts: &[Draft]) {
        for d in drafts {
            self.published.insert(d.topic.clone(), d.body.clone());
        }
    }

    async fn publish_changes(&mut self) -> anyhow::Result<Option<Arc<Cycle>>> {
        if let Some(until) = self.zones_hold {
            if Instant::now() < until {
                return Ok(None);
            }
            tracing::warn!("no zone round in time; publishing without zone documents");
            self.zones_hold = None;
        }
        let changed = self.changed();
        if changed.is_empty() {
            self.metrics.cycles_unchanged.fetch_add(1, Relaxed);
            return Ok(None);
        }
        let cycle = self
            .bus
            .publish(changed.clone())
            .await
            .context("publishing a cycle")?;
        // Only a published cycle becomes the diff's reference: a failed one is retried whole.
        self.mark_published(&changed);
        self.metrics.cycles_published.fetch_add(1, Relaxed);
        self.metrics
            .documents_published
            .fetch_add(cycle.documents.len() as u64, Relaxed);
        self.metrics.saw_published_at(cycle.published_at);
        Ok(Some(cycle))
    }

    /// Zone URLs of every city with a mayor race, for the zone poller.
    /// Capitals first, then by votes cast: the cities most readers look at.
    pub fn zone_targets(&self, template: &str) -> Vec<(u32, String)> {
        let mut cities: Vec<_> = self
            .list
            .iter()
            .filter_map(|m| self.mayors.get(&m.ibge).map(|r| (m, r.totals.turnout)))
            .collect();
        cities.sort_by_key(|(m, turnout)| (!m.capital, std::cmp::Reverse(*turnout)));
        cities
            .into_iter()
            .map(|(m, _)| {
                let url = template
                    .replace("{uf}", &m.uf.to_ascii_lowercase())
                    .replace("{slug}", &m.slug);
                (m.ibge, url)
            })
            .collect()
    }
}

/// Equal bodies, answered without reading them when both are the same buffer (a cached slice).
fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Fetch and parse one race file. `Ok(None)`: nothing new (or in back-off). `Err`: rejected,
/// with the reason already logged and counted. The file's invalid cities, up to
/// `max_invalid_share` percent of them, come back in `invalid_cities`.
async fn fetch_race_file(
    fetcher: &Fetcher,
    polled: &mut Polled,
    office: Office,
    list: &MunicipalityList,
    metrics: &Metrics,
    newest_time: Option<&str>,
    max_invalid_share: f64,
) -> Result<Option<consolidated::ConsolidatedFeed>, String> {
    if polled.skip > 0 {
        polled.skip -= 1;
        return Ok(None);
    }
    let name = polled.source.name();
    // A file that is failing gets one attempt per poll, not the usual three.
    let fetched = if polled.failures > 0 {
        fetcher
            .clone()
            .with_attempts(1)
            .fetch(&mut polled.source)
            .await
    } else {
        fetcher.fetch(&mut polled.source).await
    };
    let bytes = match fetched {
        Ok(Fetched::Modified(b)) => {
            polled.found(&name);
            b
        }
        Ok(Fetched::NotModified) => {
            polled.found(&name);
            return Ok(None);
        }
        Ok(Fetched::NotFound) => {
            metrics.feed_error("not_found");
            if !polled.missing {
                tracing::warn!(file = %name, "feed file not found; nothing of it is published until it is there");
                polled.missing = true;
            }
            polled.answered(&name);
            return Ok(None);
        }
        Err(e) => {
            metrics.feed_error(e.kind());
            polled.failed();
            tracing::error!(
                error = %e,
                failures = polled.failures,
                next_in_polls = polled.skip + 1,
                "feed fetch failed; previous documents stay current"
            );
            return Err(e.to_string());
        }
    };
    match consolidated::parse_per_city(&bytes, &name, office, list) {
        Ok(feed) => {
            match stamp_disagreement(feed.source_time.as_deref(), newest_time).or_else(|| {
                // A file that agrees ends a run of disagreeing ones.
                polled.disagreements = 0;
                None
            }) {
                Some((kind, why)) if polled.disagreements + 1 < STAMP_DISAGREEMENT_POLLS => {
                    polled.disagreements += 1;
                    metrics.feed_error(kind);
                    let e = format!("{name}: {why}; refused as {kind}");
                    tracing::error!(
                        error = %e,
                        in_a_row = polled.disagreements,
                        taken_after = STAMP_DISAGREEMENT_POLLS,
                        "feed rejected; previous documents stay current"
                    );
                    Err(e)
                }
                Some((kind, why)) => {
                    // The files agree with each other, not with the one accepted: that one was
                    // wrong (dated ahead by mistake), or the upstream's clock moved. Believe the
                    // feed rather than freeze every city for the rest of the night.
                    tracing::warn!(
                        file = %name,
                        %why,
                        in_a_row = polled.disagreements + 1,
                        "files keep disagreeing with the accepted file's time ({kind}); taking the feed's clock"
                    );
                    polled.disagreements = 0;
                    Ok(Some(feed))
                }
                // A file that names no city we know (an empty `municipios`, a file of another
                // election) would change nothing but hide a broken feed: refuse it loudly.
                _ if feed.races.is_empty() && feed.invalid_cities.is_empty() => {
                    let e = crate::feed::FeedError::invalid(
                        &name,
                        "municipios",
                        "no city of the municipality list",
                    );
                    metrics.feed_error(e.kind());
                    tracing::error!(error = %e, "feed rejected; previous documents stay current");
                    Err(e.to_string())
                }
                // Many invalid cities: the file, not a city, is broken.
                _ if too_many_invalid(&feed, max_invalid_share) => {
                    let (invalid, total) = (
                        feed.invalid_cities.len(),
                        feed.invalid_cities.len() + feed.races.len(),
                    );
                    let first = &feed.invalid_cities[0].1;
                    metrics.feed_error(first.kind());
                    let e = format!(
                        "{first}; {invalid} of {total} cities invalid, over --max-invalid-share {max_invalid_share} %: the file is rejected whole"
                    );
                    tracing::error!(error = %e, "feed rejected; previous documents stay current");
                    Err(e)
                }
                _ => Ok(Some(feed)),
            }
        }
        Err(e) => {
            metrics.feed_error(e.kind());
            // The validators are kept: the same bad file is not fetched, rejected and logged
            // again every cycle; a corrected file has new validators.
            tracing::error!(error = %e, "feed rejected; previous documents stay current");
            Err(e.to_string())
        }
    }
}

/// Files in a row whose time disagrees with the accepted file's before the feed's clock is
/// believed over it: 6 polls (a minute at the default interval) ride out a cache serving an
/// old copy now and then, and bound how long one wrongly dated file can hold every city.
pub const STAMP_DISAGREEMENT_POLLS: u32 = 6;
/// How far ahead of the accepted file's time a new file may be dated: a count night is hours
/// long, a retotalization comes days later (and is taken after a run of such files).
const STAMP_MAX_LEAP_SECS: i64 = 24 * 3_600;

/// Why a file's time (`new`) cannot follow the accepted file's (`old`): the metric kind and the
/// words. Older is `stale`; more than a day ahead is `time_leap`.
fn stamp_disagreement(new: Option<&str>, old: Option<&str>) -> Option<(&'static str, String)> {
    let (new, old) = (new?, old?);
    if new < old {
        return Some((
            "stale",
            format!("last_updated {new} is older than the accepted file's {old}"),
        ));
    }
    let leap = local_seconds(new)? - local_seconds(old)?;
    (leap > STAMP_MAX_LEAP_SECS).then(|| {
        (
            "time_leap",
            format!(
                "last_updated {new} is {} h ahead of the accepted file's {old}",
                leap / 3_600
            ),
        )
    })
}

/// Seconds since 1970-01-01T00:00:00 of an ISO local time `yyyy-mm-ddThh:mm:ss` (as the
/// parsers write it, already checked to be a moment of the calendar).
fn local_seconds(iso: &str) -> Option<i64> {
    let field = |range: std::ops::Range<usize>| iso.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
    let (h, mi, s) = (field(11..13)?, field(14..16)?, field(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm), March-based years.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + mi * 60 + s)
}

/// More than `max_share` percent of the file's cities of the list are invalid.
fn too_many_invalid(feed: &consolidated::ConsolidatedFeed, max_share: f64) -> bool {
    let invalid = feed.invalid_cities.len();
    let total = invalid + feed.races.len();
    invalid > 0 && invalid as f64 * 100.0 > max_share * total as f64
}

/// Run the ingest loop until `shutdown`: poll every `interval`, zone files every
/// `zones_interval`, publish on the bus.
pub async fn run(
    mut ingest: Ingest,
    args: FeedArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_on(&mut ingest, &args, shutdown).await
}

/// The ingest loop on a borrowed [`Ingest`], which keeps its state when the loop ends: a leader
/// that loses its lock stops here and may lead again later.
pub async fn run_on(
    ingest: &mut Ingest,
    args: &FeedArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (zone_tx, mut zone_rx) = mpsc::channel::<Vec<(u32, ZoneBreakdown)>>(4);
    let mut zone_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut zone_targets: Option<watch::Sender<Vec<tse::ZoneTarget>>> = None;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                match ingest.poll_until(&shutdown).await {
                    Ok(report) => {
                        for cycle in &report.cycles {
                            log_cycle(&Some(cycle.clone()));
                        }
                    }
                    Err(e) => tracing::error!(error = format!("{e:#}"), "ingest cycle failed; will retry"),
                }
                if let FeedSource::Tse(source) = &ingest.feed {
                    // The zone sweep follows the mayor races as they are now.
                    let source = source.lock().await;
                    let targets = source.zone_targets(&ingest.mayors);
                    match &zone_targets {
                        Some(tx) => {
                            tx.send_replace(targets);
                        }
                        None if !targets.is_empty() => {
                            let (tx, rx) = watch::channel(targets);
                            zone_task = Some(tokio::spawn(tse::zones::sweep_loop(
                                source.zone_fetcher(),
                                rx,
                                args.zones_interval,
                                zone_tx.clone(),
                                ingest.metrics.clone(),
                                shutdown.clone(),
                            )));
                            zone_targets = Some(tx);
                        }
                        None => {}
                    }
                } else if zone_task.is_none() && !ingest.mayors.is_empty()
                    && let Some(template) = &args.zones_url_template
                {
                    zone_task = Some(tokio::spawn(zones::poll_loop(
                        ingest.fetcher.clone(),
                        ingest.zone_targets(template),
                        args.zones_interval,
                        zone_tx.clone(),
                        ingest.metrics.clone(),
                        shutdown.clone(),
                    )));
                }
            }
            Some(batch) = zone_rx.recv() => {
                match ingest.apply_zones(batch).await {
                    Ok(cycle) => log_cycle(&cycle),
                    Err(e) => tracing::error!(error = format!("{e:#}"), "zone cycle failed; will retry"),
                }
            }
        }
    }
    if let Some(task) = zone_task {
        task.abort();
    }
    Ok(())
}

fn log_cycle(cycle: &Option<Arc<Cycle>>) {
    if let Some(c) = cycle {
        tracing::info!(
            version = c.version,
            documents = c.documents.len(),
            "published"
        );
    }
}

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
    /// Redis of the scaled deployment, e.g. `redis://127.0.0.1:6379/0` (required unless --once).
    #[arg(
        long = "redis",
        env = "APURA_REDIS_URL",
        required_unless_present = "once"
    )]
    pub redis: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_seconds_count_days_and_leap_years() {
        assert_eq!(local_seconds("1970-01-01T00:00:00"), Some(0));
        assert_eq!(local_seconds("2000-03-01T00:00:00"), Some(951_868_800));
        let midnight = local_seconds("2028-10-02T00:00:00").unwrap();
        assert_eq!(midnight - local_seconds("2028-10-01T23:59:59").unwrap(), 1);
        assert_eq!(local_seconds("2028-1O-01T00:00:00"), None);
    }

    #[test]
    fn a_file_older_or_a_day_ahead_disagrees_with_the_accepted_one() {
        let old = Some("2028-10-01T20:00:00");
        assert_eq!(stamp_disagreement(Some("2028-10-01T20:00:10"), old), None);
        assert_eq!(stamp_disagreement(Some("2028-10-02T19:59:59"), old), None);
        let (kind, _) = stamp_disagreement(Some("2028-10-01T19:59:59"), old).unwrap();
        assert_eq!(kind, "stale");
        let (kind, why) = stamp_disagreement(Some("2029-10-01T20:00:00"), old).unwrap();
        assert_eq!(kind, "time_leap");
        assert!(why.contains("8760 h ahead"), "{why}");
        assert_eq!(stamp_disagreement(None, old), None);
        assert_eq!(stamp_disagreement(Some("2028-10-01T20:00:00"), None), None);
    }

    /// The back-off of a failing feed file: asked again at the next poll, then after 2, then
    /// every 4 (never longer), and at every poll again once it answers.
    #[test]
    fn a_failing_file_is_asked_after_1_2_then_every_4_polls() {
        let mut file = Polled::new("mayors.json");
        let waits: Vec<u32> = (0..40)
            .map(|_| {
                file.failed();
                file.skip + 1
            })
            .collect();
        assert_eq!(waits[..5], [1, 2, 4, 4, 4]);
        assert!(waits.iter().all(|w| *w <= BACKOFF_MAX_POLLS));
        file.answered("mayors.json");
        assert_eq!((file.failures, file.skip), (0, 0));
    }
}
