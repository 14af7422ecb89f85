//! `apura simulate`: a count-night simulator that serves the government feed, in the provider's
//! consolidated layout or the authority's own per-city TSE layout (`--layout tse`).
//!
//! The simulator plays one first-round municipal election night, from polls closing to the last
//! section counted, and serves it over HTTP the way the results provider does: one national file
//! per office republished every `interval`, plus zone files of the large cities; or the way the
//! authority does ([`tse`]): a progress file per state and a file per city, office and zone,
//! with the authority's rate limit emulated.
//!
//! - `cities`: the 5,570 municipalities (the real capitals, invented towns) and their electorates.
//! - `candidates`: parties, ballot names.
//! - `count`: the hidden final result of every race and how the count converges to it.
//! - `shares`: the exact integer arithmetic of the count (part way figures, proportional splits).
//! - `json`: JSON text written once (string literals, a candidate's fixed fields).
//! - `files`: the feed's JSON, rendered once per tick.
//! - `http`: what both servers share: a file as served, conditional GET and gzip, errors.
//! - `server`: the consolidated layout's HTTP endpoints, and serving either layout.
//! - `snapshot`: one moment's consolidated files written to a folder (`--write`).
//! - [`tse`]: the TSE layout rendered from the same count model, and its server.
//!
//! Time is cut into ticks: tick `k = floor(elapsed / interval)`, clamped to the last tick
//! `ceil(duration / interval)`; the files of tick `k` show the count at `k × interval`. Everything
//! a file shows is a pure function of the seed, the municipality list, the duration, the interval
//! and the tick, so two simulators with the same configuration serve byte-identical files.

mod candidates;
mod cities;
mod count;
mod files;
mod http;
mod json;
mod server;
mod shares;
pub mod snapshot;
pub mod tse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use apura_formats::feed::municipalities::MunicipalityList;
use apura_formats::model::Office;

pub use server::{router, run, serve_simulator};

/// The synthetic municipality list the simulator plays by default: the real number of
/// municipalities in every state, the real capitals, invented towns.
pub fn synthetic_municipalities() -> MunicipalityList {
    cities::synthetic()
}

/// Which layout the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// The provider's national files: `/mayors.json`, `/councillors.json`, zone files.
    #[default]
    Consolidated,
    /// The authority's per-city files below `/oficial/ele2028/` (`docs/tse-format.md`).
    Tse,
}

/// Options of the TSE layout.
#[derive(Debug, Clone, PartialEq)]
pub struct TseOptions {
    /// Requests per second one client (IP) may make; above it the client is blocked.
    pub rate_limit: u32,
    /// How long a client over the limit is blocked; a request during the block restarts it.
    pub block_for: Duration,
    /// Play the second round after the first.
    pub second_round: bool,
    /// An office whose files are never published: every one of them answers 404, in every
    /// city (a cold start with one office missing).
    pub missing_office: Option<MissingOffice>,
}

/// An office whose unified files the TSE layout can leave unpublished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MissingOffice {
    /// The mayor files (cargo 11), zones included.
    Mayor,
    /// The councillor files (cargo 13).
    Councillor,
}

impl MissingOffice {
    /// The authority's office code.
    pub fn cargo(self) -> u32 {
        match self {
            MissingOffice::Mayor => 11,
            MissingOffice::Councillor => 13,
        }
    }
}

impl Default for TseOptions {
    /// The authority's figures: 100 requests per second, ten minutes' block.
    fn default() -> Self {
        TseOptions {
            rate_limit: 100,
            block_for: Duration::from_secs(600),
            second_round: false,
            missing_office: None,
        }
    }
}

/// A clock the caller moves by hand, for tests that need a given tick at a given moment:
/// [`ManualClock::set`] makes the simulator serve that tick.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new() -> Self {
        ManualClock::default()
    }

    /// Serve the files of `tick` from now on.
    pub fn set(&self, tick: u64) {
        self.0.store(tick, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// `apura simulate`: load the configuration, bind `--listen`, serve until `shutdown`; or, with
/// `--write DIR`, write the files of one moment into `DIR` and return.
pub async fn serve(
    args: &SimulateArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let config = SimConfig::from_args(args)?;
    if let Some(dir) = &args.write {
        let (path, at) = (dir.clone(), args.at);
        let written =
            tokio::task::spawn_blocking(move || snapshot::write(config, &path, at)).await??;
        tracing::info!(
            dir = %dir.display(),
            tick = written.tick,
            files = written.files,
            "snapshot written"
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %args.listen, "simulator listening");
    run(config, listener, shutdown).await
}

/// Command-line arguments of `apura simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, env = "APURA_SIM_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Seed of the simulated election: the same seed plays the same night, byte for byte.
    #[arg(long, env = "APURA_SIM_SEED", default_value_t = 2026)]
    pub seed: u64,
    /// How long the count takes from polls closing to the last section (e.g. 10m, 90s, 1h).
    #[arg(long, env = "APURA_SIM_DURATION", default_value = "10m")]
    pub duration: humantime::Duration,
    /// How often a new set of files is published (e.g. 10s, 500ms).
    #[arg(long, env = "APURA_SIM_INTERVAL", default_value = "10s")]
    pub interval: humantime::Duration,
    /// Municipality list to play instead of the synthetic one: the consolidated JSON list or the
    /// TSE CSV.
    #[arg(long, env = "APURA_SIM_MUNICIPALITIES")]
    pub municipalities: Option<PathBuf>,
    /// Which layout to serve: the provider's consolidated files, or the authority's per-city
    /// files (base URL `http://<listen>/oficial/ele2028/`, election 9426).
    #[arg(long, env = "APURA_SIM_LAYOUT", value_enum, default_value_t = Layout::Consolidated)]
    pub layout: Layout,
    /// TSE layout: requests per second one client may make before it is blocked (the
    /// authority's limit is 100).
    #[arg(long, env = "APURA_SIM_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,
    /// TSE layout: how long a client over the limit is blocked (the authority: 10 minutes,
    /// restarted by any request during the block).
    #[arg(long, env = "APURA_SIM_BLOCK_FOR", default_value = "10m")]
    pub block_for: humantime::Duration,
    /// TSE layout: after the first count, play the second round of the cities that have one
    /// (election 9427) over another `--duration`.
    #[arg(long, env = "APURA_SIM_SECOND_ROUND")]
    pub second_round: bool,
    /// TSE layout: never publish this office's files; every one answers 404, in every city
    /// (the progress files still show the count).
    #[arg(long, env = "APURA_SIM_MISSING_OFFICE", value_enum)]
    pub missing_office: Option<MissingOffice>,
    /// Write the consolidated files of one moment (`mayors.json`, `councillors.json`,
    /// `municipalities.json`, `zones/`) into this folder and exit, instead of serving: recorded
    /// files for `apura run --feed DIR/mayors.json --municipalities DIR/municipalities.json`.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
    /// With `--write`: the moment, in percent of the night (100: the final result).
    #[arg(long, value_name = "PERCENT", default_value_t = 100.0)]
    pub at: f64,
}

/// What a simulator plays: checked and loaded from [`SimulateArgs`] by [`SimConfig::from_args`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// From polls closing to the last section counted.
    pub duration: Duration,
    /// A new set of files every `interval`.
    pub interval: Duration,
    /// The municipalities to play; `None` for the synthetic list of `cities`.
    pub municipalities: Option<MunicipalityList>,
    pub layout: Layout,
    pub tse: TseOptions,
    /// A clock moved by hand instead of the wall clock.
    pub clock: Option<ManualClock>,
}

impl Default for SimConfig {
    /// The defaults of the command line: seed 2026, ten minutes, a file every ten seconds, the
    /// consolidated layout.
    fn default() -> Self {
        SimConfig {
            seed: 2026,
            duration: Duration::from_secs(600),
            interval: Duration::from_secs(10),
            municipalities: None,
            layout: Layout::Consolidated,
            tse: TseOptions::default(),
            clock: None,
        }
    }
}

impl SimConfig {
    /// Check the arguments and load the municipality list, reporting every problem at once.
    pub fn from_args(args: &SimulateArgs) -> anyhow::Result<Self> {
        let duration: Duration = args.duration.into();
        let interval: Duration = args.interval.into();
        let mut problems = Vec::new();
        if duration.is_zero() {
            problems.push("--duration must be longer than zero".to_string());
        }
        if interval.is_zero() {
            problems.push("--interval must be longer than zero".to_string());
        } else if interval > duration && !duration.is_zero() {
            problems.push(format!(
                "--interval ({}) is longer than --duration ({})",
                args.interval, args.duration
            ));
        }
        if args.layout == Layout::Tse && args.rate_limit == 0 {
            problems.push("--rate-limit must be at least 1".to_string());
        }
        if args.write.is_some() && args.layout != Layout::Consolidated {
            problems.push("--write writes the consolidated layout only".to_string());
        }
        if !(0.0..=100.0).contains(&args.at) {
            problems.push(format!(
                "--at must be a percent from 0 to 100, not {}",
                args.at
            ));
        }
        if args.second_round && args.layout != Layout::Tse {
            problems.push("--second-round needs --layout tse".to_string());
        }
        if args.missing_office.is_some() && args.layout != Layout::Tse {
            problems.push("--missing-office needs --layout tse".to_string());
        }
        let municipalities = match &args.municipalities {
            None => None,
            Some(path) => match load_list(path) {
                Ok(list) => Some(list),
                Err(e) => {
                    problems.push(format!("{e:#}"));
                    None
                }
            },
        };
        if !problems.is_empty() {
            bail!("invalid simulator configuration: {}", problems.join("; "));
        }
        Ok(SimConfig {
            seed: args.seed,
            duration,
            interval,
            municipalities,
            layout: args.layout,
            tse: TseOptions {
                rate_limit: args.rate_limit,
                block_for: args.block_for.into(),
                second_round: args.second_round,
                missing_office: args.missing_office,
            },
            clock: None,
        })
    }
}

impl TryFrom<&SimulateArgs> for SimConfig {
    type Error = anyhow::Error;

    fn try_from(args: &SimulateArgs) -> anyhow::Result<Self> {
        SimConfig::from_args(args)
    }
}

fn load_list(path: &std::path::Path) -> anyhow::Result<MunicipalityList> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the municipality list {}", path.display()))?;
    let list = MunicipalityList::parse(&bytes, &path.display().to_string())?;
    if list.is_empty() {
        bail!("the municipality list {} is empty", path.display());
    }
    Ok(list)
}

/// Most ticks [`Simulator::ticks`] lists: the latest ones (10,000 ticks of 1 s are close to
/// three hours).
pub const MAX_LISTED_TICKS: u64 = 10_000;

/// One tick of the consolidated layout, as `GET /ticks` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickInfo {
    pub tick: u64,
    /// The `source_time` of the documents built from this tick's files
    /// (`YYYY-MM-DDThh:mm:ss`).
    pub source_time: String,
    /// When this tick's files came out (their `Last-Modified`).
    pub published_at: SystemTime,
    /// A neighbouring tick's files carry the same `source_time`, so a document does not tell
    /// which of them it was built from: the files' clock counts whole seconds of a five-hour
    /// night, so ticks shorter than `--duration` / 18,000 (a 1 s tick in a night over 5 hours)
    /// can share one.
    pub ambiguous: bool,
}

/// The whole simulated night: the races, the clock and the files already rendered.
/// Immutable apart from the file cache, so one `Arc<Simulator>` serves every request.
pub struct Simulator {
    seed: u64,
    duration: Duration,
    interval: Duration,
    last_tick: u64,
    /// The last tick of the night: `last_tick`, or twice it with a second round.
    final_tick: u64,
    list: MunicipalityList,
    election: count::Election,
    layout: Layout,
    /// The TSE layout's facts, with `--layout tse`.
    tse: Option<tse::TseLayout>,
    tse_options: TseOptions,
    clock: Option<ManualClock>,
    /// Hash of everything the files depend on besides the tick: tells files of two
    /// configurations apart in their `ETag`s.
    fingerprint: u64,
    started: Instant,
    started_wall: SystemTime,
    municipalities_file: Arc<http::FeedFile>,
    cache: Mutex<Arc<server::TickFiles>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("seed", &self.seed)
            .field("duration", &self.duration)
            .field("interval", &self.interval)
            .field("last_tick", &self.last_tick)
            .field("municipalities", &self.list.len())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Build every race of the night; the count starts now (tick 0 is this instant).
    ///
    /// A zero duration or interval (which [`SimConfig::from_args`] refuses) is raised to one
    /// millisecond, and an interval longer than the duration makes a night of one tick.
    pub fn new(config: SimConfig) -> Self {
        let interval = config.interval.max(Duration::from_millis(1));
        let duration = config.duration.max(Duration::from_millis(1));
        let last_tick = duration.as_nanos().div_ceil(interval.as_nanos()) as u64;
        let list = config.municipalities.unwrap_or_else(cities::synthetic);
        let election = count::Election::build(config.seed, &list);
        let fingerprint = fingerprint(config.seed, duration, interval, &list);
        let second_round = config.layout == Layout::Tse && config.tse.second_round;
        let tse = (config.layout == Layout::Tse).then(|| {
            tse::TseLayout::build(
                config.seed,
                &list,
                election.cities(),
                second_round,
                fingerprint,
            )
        });
        let final_tick = if second_round {
            2 * last_tick
        } else {
            last_tick
        };
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let municipalities_file = Arc::new(http::FeedFile::new(
            files::municipality_list(&list),
            format!("{fingerprint:016x}-municipalities"),
            started_wall,
        ));
        Simulator {
            seed: config.seed,
            duration,
            interval,
            last_tick,
            final_tick,
            list,
            election,
            layout: config.layout,
            tse,
            tse_options: config.tse,
            clock: config.clock,
            fingerprint,
            started,
            started_wall,
            municipalities_file,
            cache: Mutex::new(Arc::new(server::TickFiles::new(0))),
        }
    }

    /// The municipalities played, including the two without a municipal election.
    pub fn municipalities(&self) -> &MunicipalityList {
        &self.list
    }

    /// The count has reached 100 % everywhere (second rounds included) and the final files
    /// are out.
    pub fn finished(&self) -> bool {
        self.current_tick() >= self.final_tick
    }

    /// The layout served.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The last tick of the night: [`Simulator::last_tick`], or twice it when a second round
    /// is played after the first.
    pub fn final_tick(&self) -> u64 {
        self.final_tick
    }

    /// The seed this night was played with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The tick being served now.
    pub fn current_tick(&self) -> u64 {
        let ticks = match &self.clock {
            Some(clock) => u128::from(clock.get()),
            None => self.started.elapsed().as_nanos() / self.interval.as_nanos(),
        };
        ticks.min(u128::from(self.final_tick)) as u64
    }

    /// The tick of the final files: `ceil(duration / interval)`; ticks run from 0 to this.
    pub fn last_tick(&self) -> u64 {
        self.last_tick
    }

    /// National percent of sections counted at `tick`, with two decimals, never 100 before the
    /// last section.
    pub fn national_percent(&self, tick: u64) -> f64 {
        let (s, ts) = self.election.sections(self.fraction(tick));
        files::hundredths_floor(s, ts) as f64 / 100.0
    }

    /// The consolidated file of `office` at `tick` (ticks past the last serve the final file).
    pub fn render_tick(&self, tick: u64, office: Office) -> Bytes {
        files::consolidated(&self.election, office, &self.stamp(tick))
    }

    /// The zone file of the city `uf`/`slug` at `tick`, or `None` if that city has no zone file.
    pub fn render_zone(&self, tick: u64, uf: &str, slug: &str) -> Option<Bytes> {
        let city = self.election.zone_city(uf, slug)?;
        Some(files::zone_file(city, &self.stamp(tick)))
    }

    /// The `(uf, slug)` of every city that has a zone file, in IBGE order.
    pub fn zone_cities(&self) -> Vec<(String, String)> {
        self.election
            .zone_cities()
            .map(|c| {
                (
                    c.municipality.uf.to_ascii_lowercase(),
                    c.municipality.slug.clone(),
                )
            })
            .collect()
    }

    /// The `/municipalities.json` body: every municipality in the consolidated-list format.
    pub fn render_municipalities(&self) -> Bytes {
        self.municipalities_file.body.clone()
    }

    /// The ticks of the first round whose files are out, at most the last
    /// [`MAX_LISTED_TICKS`]: what each one's documents say (`source_time`) and when its files came
    /// out. Ticks past the last serve the final files again and are not listed. In the TSE
    /// layout a city file carries the `source_time` of the tick it was last rewritten at.
    pub fn ticks(&self) -> Vec<TickInfo> {
        let last = self.current_tick().min(self.last_tick);
        let first = last.saturating_sub(MAX_LISTED_TICKS - 1);
        let time = |tick: u64| self.stamp(tick).source_time();
        let mut before = first.checked_sub(1).map(time);
        let mut this = time(first);
        (first..=last)
            .map(|tick| {
                // The next tick's files may not be out yet; their stamp is known already.
                let next = (tick < self.last_tick).then(|| time(tick + 1));
                let ambiguous = before.as_ref() == Some(&this) || next.as_ref() == Some(&this);
                let info = TickInfo {
                    tick,
                    source_time: this.clone(),
                    published_at: self.published_at(tick),
                    ambiguous,
                };
                before = Some(std::mem::replace(&mut this, next.unwrap_or_default()));
                info
            })
            .collect()
    }

    /// How far into the count `tick` is, 0 to 1.
    fn fraction(&self, tick: u64) -> f64 {
        let at = u128::from(tick.min(self.last_tick)) * self.interval.as_nanos();
        let total = self.duration.as_nanos();
        at.min(total) as f64 / total as f64
    }

    /// The clock of `tick`: its fraction of the count and the fictional local time the files say.
    fn stamp(&self, tick: u64) -> files::Stamp {
        files::Stamp::at(self.fraction(tick))
    }

    /// When the files of `tick` came out, for `Last-Modified`.
    fn published_at(&self, tick: u64) -> SystemTime {
        let nanos = u128::from(tick.min(self.last_tick)) * self.interval.as_nanos();
        self.started_wall + Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }
}

/// The random generator of the simulator: xoshiro256++, whose output is fixed by its
/// specification (unlike `StdRng`'s), seeded per purpose so that adding a draw in one place does
/// not shift every draw after it.
pub(crate) type SimRng = Xoshiro256PlusPlus;

/// A generator for one purpose: `parts` name it (seed, city code, a tag).
pub(crate) fn rng_for(parts: &[u64]) -> SimRng {
    SimRng::seed_from_u64(mix(parts))
}

/// Mix words into one with SplitMix64's finaliser: stable across Rust versions, unlike
/// `DefaultHasher`.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        h ^= p;
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

/// A standard normal draw (Box–Muller).
pub(crate) fn normal(rng: &mut SimRng) -> f64 {
    // 1 - u keeps the logarithm's argument in (0, 1].
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn fingerprint(seed: u64, duration: Duration, interval: Duration, list: &MunicipalityList) -> u64 {
    let mut h = mix(&[seed, duration.as_nanos() as u64, interval.as_nanos() as u64]);
    for m in list.iter() {
        let mut words = vec![h, u64::from(m.ibge)];
        words.extend(m.name.bytes().map(u64::from));
        words.extend(m.uf.bytes().map(u64::from));
        h = mix(&words);
    }
    h
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use clap::Parser;

    /// One simulator with the default configuration, shared by the tests of this module tree
    /// (building one takes a moment in a debug build).
    pub(super) fn shared() -> &'static Simulator {
        static SIM: OnceLock<Simulator> = OnceLock::new();
        SIM.get_or_init(|| Simulator::new(SimConfig::default()))
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn arguments_have_the_documented_defaults() {
        let cli = Cli::try_parse_from(["apura"]).unwrap();
        let config = SimConfig::from_args(&cli.args).unwrap();
        assert_eq!(cli.args.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(config.seed, 2026);
        assert_eq!(config.duration, Duration::from_secs(600));
        assert_eq!(config.interval, Duration::from_secs(10));
        assert!(config.municipalities.is_none());
    }

    #[test]
    fn every_bad_argument_is_reported_at_once() {
        let cli = Cli::try_parse_from([
            "apura",
            "--duration",
            "0s",
            "--interval",
            "0s",
            "--municipalities",
            "/nonexistent/list.json",
        ])
        .unwrap();
        let err = format!("{:#}", SimConfig::from_args(&cli.args).unwrap_err());
        assert!(err.contains("--duration"), "{err}");
        assert!(err.contains("--interval"), "{err}");
        assert!(err.contains("/nonexistent/list.json"), "{err}");
    }

    #[test]
    fn a_municipality_file_replaces_the_synthetic_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.json");
        std::fs::write(
            &path,
            r#"{"3550308": {"n": "São Paulo", "e": "SP"}, "3500105": {"n": "Vila Teste", "e": "SP"},
                "5300108": {"n": "Brasília", "e": "DF"}}"#,
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "apura",
            "--municipalities",
            path.to_str().unwrap(),
            "--duration",
            "1m",
            "--interval",
            "1s",
        ])
        .unwrap();
        let sim = Simulator::new(SimConfig::from_args(&cli.args).unwrap());
        assert_eq!(sim.municipalities().len(), 3);
        assert_eq!(sim.last_tick(), 60);
        let list = apura_formats::feed::municipalities::MunicipalityList::parse(
            &sim.render_municipalities(),
            "served",
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        let feed = apura_formats::feed::consolidated::parse(
            &sim.render_tick(60, Office::Mayor),
            "mayors.json",
            Office::Mayor,
            sim.municipalities(),
        )
        .unwrap();
        // Brasília has no municipal election.
        assert_eq!(feed.races.len(), 2);
        assert!(feed.finished);
        assert!(sim.render_zone(60, "sp", "sao-paulo").is_some());
    }

    #[test]
    fn ticks_cover_the_duration() {
        let sim = shared();
        assert_eq!(sim.last_tick(), 60);
        assert_eq!(sim.fraction(0), 0.0);
        assert_eq!(sim.fraction(30), 0.5);
        assert_eq!(sim.fraction(60), 1.0);
        assert_eq!(sim.fraction(1_000), 1.0);
        assert_eq!(sim.national_percent(0), 0.0);
        assert_eq!(sim.national_percent(60), 100.0);
        assert!(!sim.finished());
        let uneven = Simulator::new(SimConfig {
            duration: Duration::from_millis(1_050),
            interval: Duration::from_millis(100),
            municipalities: Some(one_city()),
            ..SimConfig::default()
        });
        assert_eq!(uneven.last_tick(), 11);
        assert_eq!(uneven.fraction(11), 1.0);
        assert!(uneven.fraction(10) < 1.0);
    }

    fn one_city() -> MunicipalityList {
        MunicipalityList::new(
            vec![apura_formats::model::Municipality::new(
                3500105,
                None,
                "Vila Teste",
                "SP",
                false,
            )],
            "test",
        )
        .unwrap()
    }

    #[test]
    fn the_national_count_follows_a_count_night() {
        let sim = shared();
        let mut last = 0.0;
        let mut curve = Vec::new();
        for tick in 0..=sim.last_tick() {
            let p = sim.national_percent(tick);
            assert!(p >= last, "national percent went down at tick {tick}");
            last = p;
            if tick % 6 == 0 {
                curve.push(format!("{tick}:{p}"));
            }
        }
        eprintln!("national percent by tick: {}", curve.join(" "));
        assert!(sim.national_percent(12) > 10.0);
        assert!(sim.national_percent(59) < 100.0);
    }

    #[test]
    fn the_tick_list_says_what_each_tick_s_files_carry_and_when_they_came_out() {
        let clock = ManualClock::new();
        let sim = Simulator::new(SimConfig {
            municipalities: Some(cities::synthetic()),
            clock: Some(clock.clone()),
            ..SimConfig::default()
        });
        assert_eq!(sim.ticks().len(), 1);
        clock.set(3);
        let ticks = sim.ticks();
        assert_eq!(
            ticks.iter().map(|t| t.tick).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        for t in &ticks {
            let feed = apura_formats::feed::consolidated::parse(
                &sim.render_tick(t.tick, Office::Mayor),
                "simulated",
                Office::Mayor,
                sim.municipalities(),
            )
            .unwrap();
            assert_eq!(feed.source_time.as_deref(), Some(t.source_time.as_str()));
            assert_eq!(t.published_at, sim.published_at(t.tick));
            assert!(!t.ambiguous);
        }
        // 10 s ticks of a 10-minute night: five minutes of the files' clock apart.
        assert_eq!(ticks[0].source_time, "2028-10-01T17:00:00");
        assert_eq!(ticks[1].source_time, "2028-10-01T17:05:00");
        // Past the last tick, the final files: not listed again.
        clock.set(sim.last_tick() + 5);
        assert_eq!(sim.ticks().last().unwrap().tick, sim.last_tick());
    }

    #[test]
    fn ticks_that_share_a_source_time_are_marked() {
        // 1 ms ticks over 20 s: 18,000 s of the files' clock over 20,000 ticks, 0.9 s apart,
        // so about one tick in ten rounds to its neighbour's second.
        let clock = ManualClock::new();
        let sim = Simulator::new(SimConfig {
            duration: Duration::from_secs(20),
            interval: Duration::from_millis(1),
            municipalities: Some(cities::synthetic()),
            clock: Some(clock.clone()),
            ..SimConfig::default()
        });
        clock.set(200);
        let ticks = sim.ticks();
        assert_eq!(ticks.len(), 201);
        for pair in ticks.windows(2) {
            if pair[0].source_time == pair[1].source_time {
                assert!(pair[0].ambiguous && pair[1].ambiguous, "{pair:?}");
            }
        }
        assert!(ticks.iter().all(|t| {
            t.ambiguous
                == ticks
                    .iter()
                    .any(|o| o.tick != t.tick && o.source_time == t.source_time)
        }));
        assert!(ticks.iter().any(|t| t.ambiguous) && ticks.iter().any(|t| !t.ambiguous));
    }
}
