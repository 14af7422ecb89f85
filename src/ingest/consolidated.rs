//! The consolidated source: a provider's national files, one per office, polled every
//! `--interval`, and the per-city zone files of `--zones-url-template` ([`zones`]).
//!
//! A file is taken whole or not at all: it must parse, be dated no earlier than the accepted
//! one (and no more than a day ahead), name cities of the list, and have at most
//! `--max-invalid-share` of its cities invalid; its invalid cities go to the core for
//! quarantine with the file. A file not found is logged once when it goes missing and once when
//! it is back; a file that fails to fetch is asked again after a back-off of 1, 2, then every
//! [`BACKOFF_MAX_POLLS`] polls.

pub mod zones;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::FeedArgs;
use super::core::Accepted;
use crate::feed::consolidated;
use crate::feed::municipalities::MunicipalityList;
use crate::fetch::{Fetched, Fetcher, Source};
use crate::metrics::Metrics;
use crate::model::Office;

/// A feed file that fails to fetch is asked again after 1, 2, 4, then every 4 polls: an upstream
/// answering 500 every 10 s poll is asked every 40 s (one attempt, where a healthy file gets
/// three), and back within one of those once it recovers.
pub const BACKOFF_MAX_POLLS: u32 = 4;

/// The consolidated source's state, kept across polls.
pub struct ConsolidatedSource {
    list: Arc<MunicipalityList>,
    fetcher: Fetcher,
    metrics: Arc<Metrics>,
    mayors: Polled,
    councillors: Option<Polled>,
    /// `--max-invalid-share`, in percent.
    max_invalid_share: f64,
    zones_url_template: Option<String>,
    zones_interval: Duration,
    /// Turnout of every city with a mayor race: the zone poller's order.
    turnout: HashMap<u32, u64>,
    /// Unknown city keys already logged, so a feed with one stays one log line.
    unknown_logged: HashSet<String>,
    zone_task: Option<tokio::task::JoinHandle<()>>,
}

impl ConsolidatedSource {
    /// The files of `args` over `list`.
    pub fn new(
        list: Arc<MunicipalityList>,
        args: &FeedArgs,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
    ) -> Self {
        ConsolidatedSource {
            list,
            fetcher,
            metrics,
            mayors: Polled::new(args.feed.as_deref().unwrap_or_default()),
            councillors: args.councillors_feed.as_deref().map(Polled::new),
            max_invalid_share: args.max_invalid_share,
            zones_url_template: args.zones_url_template.clone(),
            zones_interval: args.zones_interval,
            turnout: HashMap::new(),
            unknown_logged: HashSet::new(),
            zone_task: None,
        }
    }

    /// Fetch both files at once and send what is new and valid, as one item; answer the files
    /// rejected, with the reason (already logged and counted).
    pub async fn poll(&mut self, tx: &mpsc::Sender<Accepted>) -> Vec<String> {
        let share = self.max_invalid_share;
        let (fetcher, list, metrics) = (&self.fetcher, &*self.list, &*self.metrics);
        let (mayors, councillors) = tokio::join!(
            fetch_race_file(
                fetcher,
                &mut self.mayors,
                Office::Mayor,
                list,
                metrics,
                share
            ),
            async {
                match &mut self.councillors {
                    Some(polled) => Some(
                        fetch_race_file(fetcher, polled, Office::Councillor, list, metrics, share)
                            .await,
                    ),
                    None => None,
                }
            }
        );
        let mut rejected = Vec::new();
        let mut files = Vec::new();
        for (office, outcome) in [
            (Office::Mayor, Some(mayors)),
            (Office::Councillor, councillors),
        ] {
            match outcome {
                Some(Ok(Some(feed))) => files.push((office, feed)),
                Some(Err(reason)) => rejected.push(reason),
                Some(Ok(None)) | None => {}
            }
        }
        for (office, feed) in &files {
            self.note_unknown(&feed.unknown_cities);
            let polled = match office {
                Office::Mayor => Some(&mut self.mayors),
                Office::Councillor => self.councillors.as_mut(),
            };
            if let (Some(polled), Some(t)) = (polled, &feed.source_time) {
                polled.accepted_time = Some(t.clone());
                self.metrics.detected("consolidated", t);
            }
            if *office == Office::Mayor {
                self.turnout
                    .extend(feed.races.iter().map(|r| (r.ibge, r.totals.turnout)));
            }
        }
        if !files.is_empty() {
            // The core is gone only when the ingest stops.
            let _ = tx.send(Accepted::Files(files)).await;
        }
        rejected
    }

    fn note_unknown(&mut self, unknown: &[String]) {
        for key in unknown {
            if self.unknown_logged.insert(key.clone()) {
                self.metrics
                    .unknown_cities
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(city = %key, "city in the feed but not in the municipality list; skipped");
            }
        }
    }

    /// After a poll: start the zone poller, once mayor races are known, if there are zone files.
    pub fn follow_zones(&mut self, tx: &mpsc::Sender<Accepted>, shutdown: &CancellationToken) {
        let Some(template) = &self.zones_url_template else {
            return;
        };
        if self.zone_task.is_some() || self.turnout.is_empty() {
            return;
        }
        self.zone_task = Some(tokio::spawn(zones::poll_loop(
            self.fetcher.clone(),
            self.zone_targets(template),
            self.zones_interval,
            tx.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        )));
    }

    /// Stop the zone poller; the next [`ConsolidatedSource::follow_zones`] starts it again.
    pub async fn stop_zones(&mut self) {
        if let Some(task) = self.zone_task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Zone URLs of every city with a mayor race, for the zone poller.
    /// Capitals first, then by votes cast: the cities most readers look at.
    fn zone_targets(&self, template: &str) -> Vec<(u32, String)> {
        let mut cities: Vec<_> = self
            .list
            .iter()
            .filter_map(|m| self.turnout.get(&m.ibge).map(|t| (m, *t)))
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
    /// The government timestamp (`last_updated`, ISO local time) of the newest accepted file:
    /// an older one is refused as `stale`. The authority may republish (a retotalization), but
    /// always with a newer timestamp.
    accepted_time: Option<String>,
}

impl Polled {
    fn new(location: &str) -> Self {
        Polled {
            source: Source::new(location),
            missing: false,
            failures: 0,
            skip: 0,
            disagreements: 0,
            accepted_time: None,
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

/// Fetch and parse one race file. `Ok(None)`: nothing new (or in back-off). `Err`: rejected,
/// with the reason already logged and counted. The file's invalid cities, up to
/// `max_invalid_share` percent of them, come back in `invalid_cities`.
async fn fetch_race_file(
    fetcher: &Fetcher,
    polled: &mut Polled,
    office: Office,
    list: &MunicipalityList,
    metrics: &Metrics,
    max_invalid_share: f64,
) -> Result<Option<consolidated::ConsolidatedFeed>, String> {
    if polled.skip > 0 {
        polled.skip -= 1;
        return Ok(None);
    }
    let name = polled.source.name();
    // A file that is failing gets one attempt per poll, not the usual three.
    let started = std::time::Instant::now();
    let fetched = if polled.failures > 0 {
        fetcher
            .clone()
            .with_attempts(1)
            .fetch(&mut polled.source)
            .await
    } else {
        fetcher.fetch(&mut polled.source).await
    };
    metrics.fetched("consolidated", started.elapsed(), &fetched);
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
            let disagreement =
                stamp_disagreement(feed.source_time.as_deref(), polled.accepted_time.as_deref());
            if disagreement.is_none() {
                // A file that agrees ends a run of disagreeing ones.
                polled.disagreements = 0;
            }
            match disagreement {
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
            // An invalid file keeps its validators: the same file is not fetched, refused and
            // logged again every cycle; a corrected one has new validators. A malformed one
            // (not JSON, cut short) is asked for in full next time: it may be a transfer cut
            // short under the good file's validators (see `Source::forget_validators`).
            if e.kind() == "malformed" {
                polled.source.forget_validators();
            }
            tracing::error!(error = %e, "feed rejected; previous documents stay current");
            Err(e.to_string())
        }
    }
}

/// Files in a row whose time disagrees with the accepted file's before the feed's clock is
/// believed over it: 6 polls (6 s at the default interval of 1 s, a minute at 10 s) ride out a
/// cache serving an old copy now and then, and bound how long one wrongly dated file can hold
/// every city.
pub const STAMP_DISAGREEMENT_POLLS: u32 = 6;
/// How far ahead of the accepted file's time a new file may be dated: a count night is hours
/// long, a retotalization comes days later (and is taken after a run of such files).
const STAMP_MAX_LEAP_SECS: i64 = 24 * 3_600;

/// Why a file's time (`new`) cannot follow the accepted file's (`old`): the metric kind and the
/// words. Older is `stale`; more than a day ahead is `time_leap`.
fn stamp_disagreement(new: Option<&str>, old: Option<&str>) -> Option<(&'static str, String)> {
    let old = old?;
    // An undated file after a dated one cannot be placed after it: it may be any old copy.
    let Some(new) = new else {
        return Some((
            "stale",
            format!("last_updated has no date and time; the accepted file's is {old}"),
        ));
    };
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
        let (kind, why) = stamp_disagreement(None, old).unwrap();
        assert_eq!(kind, "stale");
        assert!(why.contains("no date and time"), "{why}");
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
