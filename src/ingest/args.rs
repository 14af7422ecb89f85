//! The options of a feed: which source, where, how often, and the limits on what it sends.

use std::time::Duration;

use super::tse::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_RATE_LIMIT, MAX_RATE_LIMIT};

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
    #[arg(long, env = "APURA_TSE_RATE_LIMIT", default_value_t = DEFAULT_RATE_LIMIT)]
    pub rate_limit: u32,
    /// TSE: requests open at once.
    #[arg(long, env = "APURA_TSE_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Consolidated: URL template of the per-city zone files; `{uf}` and `{slug}` are replaced
    /// (e.g. `https://feed.example/zones/zone-{uf}-{slug}.json`).
    #[arg(long, env = "APURA_ZONES_URL_TEMPLATE")]
    pub zones_url_template: Option<String>,
    /// How often to poll the mayors and councillors files (TSE: the progress files; a TSE cycle
    /// fetches at most `--rate-limit` × this many city files, the rest in the next cycle).
    /// Default: 1s with `--source consolidated` (a conditional GET answered 304 costs the
    /// provider a fraction of a millisecond and about 450 bytes), 5s with `--source tse` (the
    /// 27 progress files, mostly answered 304, take about a tenth of the authority's budget).
    #[arg(
        long,
        env = "APURA_INTERVAL",
        default_value = "1s",
        default_value_if("source", "tse", "5s"),
        value_parser = humantime::parse_duration
    )]
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

/// Default `--interval` of the consolidated source: a changed file waits at most this long to
/// be seen (half of it on average), and each poll that finds nothing new is one conditional GET
/// answered 304.
pub const DEFAULT_CONSOLIDATED_INTERVAL: Duration = Duration::from_secs(1);
/// Default `--interval` of the TSE source: the 27 progress files each time, and the city files
/// of one cycle's budget (`--rate-limit` × this).
pub const DEFAULT_TSE_INTERVAL: Duration = Duration::from_secs(5);

/// Default `--max-invalid-share`, in percent: 278 of 5,570 cities. A few broken cities are a
/// provider's slip; hundreds mean the file itself is broken, and publishing its other cities
/// would be trusting a feed that is not right.
pub const DEFAULT_MAX_INVALID_SHARE: f64 = 5.0;

impl Default for FeedArgs {
    /// The command line's defaults, with no feed named: a consolidated source polled every
    /// second, zones every 60 s, 10 s per request, 50 requests/s and 8 in flight for the TSE.
    fn default() -> Self {
        FeedArgs {
            source: SourceKind::Consolidated,
            feed: None,
            councillors_feed: None,
            municipalities: None,
            base_url: None,
            election: None,
            election_round2: None,
            rate_limit: DEFAULT_RATE_LIMIT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            zones_url_template: None,
            interval: DEFAULT_CONSOLIDATED_INTERVAL,
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

    /// A TSE source: the cycle's folder and the first round's election code, polled every 5 s.
    pub fn tse(base_url: impl Into<String>, election: impl Into<String>) -> Self {
        FeedArgs {
            source: SourceKind::Tse,
            interval: DEFAULT_TSE_INTERVAL,
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
        if !(1..=MAX_RATE_LIMIT).contains(&self.rate_limit) {
            problems.push(format!(
                "--rate-limit must be between 1 and {} requests/s (the authority blocks above 100)",
                MAX_RATE_LIMIT
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

    /// What the documents say feeds them.
    pub fn data_source(&self) -> crate::documents::DataSource {
        use crate::documents::DataSource;
        match self.source {
            _ if self.simulated => DataSource::Simulation,
            SourceKind::Consolidated => DataSource::Consolidated,
            SourceKind::Tse => DataSource::Tse,
        }
    }

    fn source_name(&self) -> &'static str {
        match self.source {
            SourceKind::Consolidated => "consolidated",
            SourceKind::Tse => "tse",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        feed: FeedArgs,
    }

    fn parse(args: &[&str]) -> FeedArgs {
        Cli::try_parse_from(std::iter::once("apura").chain(args.iter().copied()))
            .unwrap()
            .feed
    }

    #[test]
    fn the_poll_interval_defaults_to_the_source_s() {
        assert_eq!(parse(&[]).interval, DEFAULT_CONSOLIDATED_INTERVAL);
        assert_eq!(
            parse(&["--source", "consolidated"]).interval,
            Duration::from_secs(1)
        );
        assert_eq!(parse(&["--source", "tse"]).interval, Duration::from_secs(5));
        assert_eq!(
            parse(&["--source", "tse", "--interval", "2s"]).interval,
            Duration::from_secs(2)
        );
        assert_eq!(
            parse(&["--interval", "250ms"]).interval,
            Duration::from_millis(250)
        );
        assert_eq!(FeedArgs::default().interval, DEFAULT_CONSOLIDATED_INTERVAL);
        assert_eq!(
            FeedArgs::consolidated("f", "m").interval,
            Duration::from_secs(1)
        );
        assert_eq!(FeedArgs::tse("b", "619").interval, DEFAULT_TSE_INTERVAL);
        assert!(
            parse(&["--interval", "0s"])
                .validate()
                .contains(&"--interval must be longer than zero".to_string())
        );
    }
}
