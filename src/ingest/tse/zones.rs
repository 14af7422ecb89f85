//! The TSE zone sweep: every `zones_interval`, the per-zone mayor files of the cities of more
//! than one zone whose mayor race changed since their last sweep, into the `zones-*` topics.
//!
//! A city of one zone has no breakdown to show (its zone is the city), so only cities with
//! several zones in the configuration are covered: the capitals and large cities, a few hundred
//! cities and a few thousand files. Those requests go through a throttle of their own, a
//! [`super::ZONE_SHARE`] of the budget, in front of the shared one: a sweep may take more than
//! one interval at the peak of the count, but the main cycle always keeps the rest of the
//! budget. Zone files are asked conditionally; a zone not found is skipped for
//! [`super::NOT_FOUND_MAX`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::NOT_FOUND_MAX;
use super::check::race_of;
use crate::fetch::{Fetched, Fetcher, Source};
use crate::ingest::Every;
use crate::ingest::core::{Accepted, PUBLISH_EVERY};
use crate::metrics::Metrics;
use crate::model::{Office, Race, ZoneBreakdown, ZoneResult, ZoneVotes};

/// Zone requests of one city open at once: the zone throttle lets ten a second through anyway.
const CONCURRENCY: usize = 2;

/// A city to sweep: its zone files and its current mayor race (the breakdown's total).
#[derive(Debug, Clone)]
pub struct ZoneTarget {
    pub ibge: u32,
    pub capital: bool,
    pub electorate: u64,
    /// Zone number and URL of its mayor file, for the race's round.
    pub urls: Vec<(String, String)>,
    pub race: Race,
}

/// What a race was when its city was last swept: a new totalization moves it.
#[derive(Debug, Clone, PartialEq)]
struct Swept {
    round: u8,
    source_time: Option<String>,
    sections: Option<u64>,
    finished: bool,
}

impl Swept {
    fn of(race: &Race) -> Self {
        Swept {
            round: race.round,
            source_time: race.source_time.clone(),
            sections: race.progress.sections_counted,
            finished: race.finished,
        }
    }
}

/// A zone file: validators, its last race, and how long it is taken as absent.
struct ZoneFile {
    source: Source,
    race: Option<Race>,
    absent_until: Option<Instant>,
}

/// Sweep until `shutdown`, sending breakdowns to the ingest loop about every second.
pub async fn sweep_loop(
    fetcher: Fetcher,
    targets: watch::Receiver<Vec<ZoneTarget>>,
    interval: Duration,
    tx: mpsc::Sender<Accepted>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut files: HashMap<String, ZoneFile> = HashMap::new();
    let mut swept: HashMap<u32, Swept> = HashMap::new();
    let mut every = Every::new(interval);
    while every.tick(&shutdown).await {
        let due: Vec<ZoneTarget> = targets
            .borrow()
            .iter()
            .filter(|t| swept.get(&t.ibge) != Some(&Swept::of(&t.race)))
            .cloned()
            .collect();
        let (mut batch, mut sent_at) = (Vec::new(), Instant::now());
        for target in due {
            if shutdown.is_cancelled() {
                return;
            }
            let breakdown = sweep_city(&fetcher, &target, &mut files, &metrics).await;
            swept.insert(target.ibge, Swept::of(&target.race));
            if let Some(b) = breakdown {
                batch.push((target.ibge, b));
            }
            if !batch.is_empty() && sent_at.elapsed() >= PUBLISH_EVERY {
                if tx
                    .send(Accepted::Zones(std::mem::take(&mut batch)))
                    .await
                    .is_err()
                {
                    return;
                }
                sent_at = Instant::now();
            }
        }
        if !batch.is_empty() && tx.send(Accepted::Zones(batch)).await.is_err() {
            return;
        }
    }
}

/// Fetch a city's zone files (conditionally) and build its breakdown from every zone known.
async fn sweep_city(
    fetcher: &Fetcher,
    target: &ZoneTarget,
    files: &mut HashMap<String, ZoneFile>,
    metrics: &Metrics,
) -> Option<ZoneBreakdown> {
    let now = Instant::now();
    let jobs: Vec<(String, String, Source)> = target
        .urls
        .iter()
        .filter(|(_, url)| {
            files
                .get(url)
                .is_none_or(|f| f.absent_until.is_none_or(|t| now >= t))
        })
        .map(|(zone, url)| {
            let source = files
                .get(url)
                .map_or_else(|| Source::new(url), |f| f.source.clone());
            (zone.clone(), url.clone(), source)
        })
        .collect();
    let results: Vec<_> =
        futures_util::stream::iter(jobs.into_iter().map(|(zone, url, mut source)| async move {
            let started = std::time::Instant::now();
            let r = fetcher.fetch(&mut source).await;
            metrics.fetched("tse_zones", started.elapsed(), &r);
            (zone, url, source, r)
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (zone, url, source, result) in results {
        let file = files.entry(url).or_insert_with(|| ZoneFile {
            source: source.clone(),
            race: None,
            absent_until: None,
        });
        let name = source.name();
        match result {
            Ok(Fetched::Modified(bytes)) => {
                file.source = source;
                file.absent_until = None;
                match race_of(
                    &bytes,
                    &name,
                    &zone,
                    target.ibge,
                    Office::Mayor,
                    target.race.round,
                ) {
                    Ok(race) => file.race = Some(race),
                    Err(e) => {
                        metrics.feed_error(e.kind());
                        tracing::error!(error = %e, "zone file rejected; its previous figures stay");
                    }
                }
            }
            Ok(Fetched::NotModified) => {
                file.source = source;
                file.absent_until = None;
            }
            Ok(Fetched::NotFound) => file.absent_until = Some(now + NOT_FOUND_MAX),
            Err(e) => {
                metrics.feed_error(e.kind());
                tracing::warn!(error = %e, "zone fetch failed");
            }
        }
    }
    let zones: Vec<(&str, &Race)> = target
        .urls
        .iter()
        .filter_map(|(zone, url)| {
            let race = files.get(url)?.race.as_ref()?;
            (race.round == target.race.round).then_some((zone.as_str(), race))
        })
        .collect();
    (!zones.is_empty()).then(|| breakdown(&target.race, &zones))
}

/// The city race as the breakdown's total and candidates, each zone's race as a zone.
pub fn breakdown(city: &Race, zones: &[(&str, &Race)]) -> ZoneBreakdown {
    let mut zones: Vec<ZoneResult> = zones
        .iter()
        .map(|(zone, race)| zone_result(zone, race))
        .collect();
    zones.sort_by(|a, b| a.zone.cmp(&b.zone));
    ZoneBreakdown {
        round: city.round,
        source_time: city.source_time.clone(),
        finished: city.finished,
        percent: city.progress.percent,
        candidates: city.candidates.clone(),
        total: zone_result("total", city),
        zones,
    }
}

/// One race's votes as a zone line: valid candidates only (an annulled candidate's votes are
/// not part of the valid total), most votes first.
fn zone_result(zone: &str, race: &Race) -> ZoneResult {
    let mut results: Vec<ZoneVotes> = race
        .candidates
        .iter()
        .filter(|c| c.valid)
        .filter_map(|c| {
            Some(ZoneVotes {
                number: c.number?,
                votes: c.votes,
                percent: c.percent,
            })
        })
        .collect();
    results.sort_by(|a, b| b.votes.cmp(&a.votes).then(a.number.cmp(&b.number)));
    ZoneResult {
        zone: zone.to_string(),
        turnout: race.totals.turnout,
        blank: race.totals.blank,
        null: race.totals.null,
        valid: race.totals.valid,
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::tse::unified::{self, fixtures::MAYOR};

    #[test]
    fn a_breakdown_has_the_city_total_and_each_zone() {
        let city = unified::parse_validated(MAYOR.as_bytes(), "city")
            .unwrap()
            .race(3500001, Office::Mayor)
            .unwrap();
        let zone = MAYOR.replace(
            r#""tpabr" : "mu", "cdabr" : "99001""#,
            r#""tpabr" : "zona", "cdabr" : "0101""#,
        );
        let zone = unified::parse_validated(zone.as_bytes(), "zone")
            .unwrap()
            .race(3500001, Office::Mayor)
            .unwrap();
        let b = breakdown(&city, &[("0102", &zone), ("0101", &zone)]);
        assert_eq!(b.zones.len(), 2);
        assert_eq!(b.zones[0].zone, "0101");
        assert_eq!(b.total.zone, "total");
        assert_eq!(b.total.valid, 10_000);
        assert_eq!(
            b.total.results.len(),
            3,
            "the annulled candidate is not in the valid votes"
        );
        assert_eq!(b.total.results[0].number, 45);
        assert_eq!(b.candidates.len(), 4);
        assert!(b.finished);
    }
}
