//! The TSE layout's clock (a second night for second rounds), when a city's files appear, when
//! each was last rewritten, and every race at any tick.

use std::time::{Duration, SystemTime};

use super::ROUND2_DATE;
use super::layout::TseLayout;
use super::race::{FinalRace, RaceKey, RaceView, council_view, majoritarian, mayor_view};
use crate::Simulator;
use crate::count::City;
use crate::files::Stamp;
use crate::shares::partial;
use apura_formats::model::Office;

/// Smallest tick in `lo..=hi` where `pred` holds, for a predicate that, once true, stays true
/// (and holds at `hi`).
fn first_tick(mut lo: u64, mut hi: u64, pred: impl Fn(u64) -> bool) -> u64 {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// The 4-digit zone number of a model zone.
pub(super) fn zone_number(city: &City, z: usize) -> String {
    format!("{:04}", city.zones[z].number)
}

impl Simulator {
    pub(super) fn tse_layout(&self) -> &TseLayout {
        self.tse
            .as_ref()
            .expect("the TSE layout is built with --layout tse")
    }

    /// How far the count of `round` is at `tick`; `None` before that round's night.
    fn tau(&self, round: u8, tick: u64) -> Option<f64> {
        match round {
            1 => Some(self.fraction(tick)),
            _ if tick > self.last_tick => Some(self.fraction(tick - self.last_tick)),
            _ => None,
        }
    }

    /// The first tick of `round`'s night.
    pub(super) fn round_start(&self, round: u8) -> u64 {
        if round == 1 { 0 } else { self.last_tick + 1 }
    }

    /// The clock a file of `round` written at `tick` shows.
    pub(super) fn tse_stamp(&self, round: u8, tick: u64) -> Stamp {
        let mut stamp = Stamp::at(self.tau(round, tick).unwrap_or(0.0));
        if round == 2 {
            stamp.date = ROUND2_DATE;
        }
        stamp
    }

    /// When `tick`'s files came out (not clamped to the first night).
    pub(super) fn tse_modified(&self, tick: u64) -> SystemTime {
        let nanos = u128::from(tick) * self.interval.as_nanos();
        self.started_wall + Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }

    /// A city's files exist at `tick` (in `round`).
    pub(super) fn published(&self, idx: usize, round: u8, tick: u64) -> bool {
        let layout = self.tse_layout();
        if round == 2 && !layout.runoffs.contains_key(&idx) {
            return false;
        }
        self.tau(round, tick)
            .is_some_and(|tau| tau >= layout.cities[idx].published_from)
    }

    /// Sections of a race at `tick`: what its file's content depends on.
    fn race_sections(&self, idx: usize, key: RaceKey, round: u8, tick: u64) -> u64 {
        let city = &self.election.cities()[idx];
        let tau = self.tau(round, tick).unwrap_or(0.0);
        match key {
            RaceKey::Zone(z) => city.zones[z].counted(tau),
            _ => city.sections(tau).0,
        }
    }

    /// The tick a published race's file was last rewritten, as of `tick`: the first tick with
    /// the same sections (every figure is a function of them, and sections never go down).
    pub(super) fn last_change(&self, idx: usize, key: RaceKey, round: u8, tick: u64) -> u64 {
        let from = first_tick(self.round_start(round), tick, |j| {
            self.published(idx, round, j)
        });
        let now = self.race_sections(idx, key, round, tick);
        first_tick(from, tick, |j| {
            self.race_sections(idx, key, round, j) == now
        })
    }

    /// The file's generation id for a rewrite at `tick`.
    pub(super) fn idg(&self, tick: u64) -> String {
        format!("{}{:07}", self.tse_layout().salt, tick)
    }

    /// The race of the voting city `idx` as its file shows it at `tick`, or `None` if it is
    /// not published.
    pub(crate) fn tse_race(
        &self,
        idx: usize,
        key: RaceKey,
        round: u8,
        tick: u64,
    ) -> Option<RaceView> {
        if !self.published(idx, round, tick) {
            return None;
        }
        let layout = self.tse_layout();
        let city = &self.election.cities()[idx];
        let tse = &layout.cities[idx];
        let tau = self.tau(round, tick)?;
        Some(match (round, key) {
            (1, RaceKey::Mayor) => mayor_view(city, tse, tau, 1),
            (1, RaceKey::Councillor) => council_view(city, tse, tau),
            (1, RaceKey::Zone(z)) => {
                let (_, zones) = city.mayor_tally_by_zone(tau);
                let t = zones.get(z)?;
                majoritarian(
                    city,
                    tse,
                    1,
                    (t.sections, t.total_sections),
                    None,
                    None,
                    (0..city.mayors.len())
                        .zip(t.votes.iter().copied())
                        .collect(),
                    t.blank,
                    t.null,
                )
            }
            (_, RaceKey::Councillor) => return None,
            (_, key) => {
                let r = layout.runoffs.get(&idx)?;
                let zones: Vec<usize> = match key {
                    RaceKey::Zone(z) if z < city.zones.len() => vec![z],
                    RaceKey::Zone(_) => return None,
                    _ => (0..city.zones.len()).collect(),
                };
                let (mut s, mut ts, mut votes, mut blank, mut null) = (0, 0, [0u64; 2], 0, 0);
                for z in zones {
                    let (zs, zts) = (city.zones[z].counted(tau), city.zones[z].sections);
                    let rz = &r.zones[z];
                    for (k, v) in votes.iter_mut().enumerate() {
                        *v += partial(rz.votes[k], r.betas[k], zs, zts);
                    }
                    blank += partial(rz.blank, 0, zs, zts);
                    null += partial(rz.null, 0, zs, zts);
                    s += zs;
                    ts += zts;
                }
                let whole = matches!(key, RaceKey::Mayor);
                majoritarian(
                    city,
                    tse,
                    2,
                    (s, ts),
                    whole.then_some(city.electorate),
                    whole.then(|| partial(r.abstentions, 0, s, ts)),
                    vec![(r.pair[0], votes[0]), (r.pair[1], votes[1])],
                    blank,
                    null,
                )
            }
        })
    }

    /// Every race's final file in the TSE layout: first round mayor and councillor races, and
    /// second rounds when the night has them. For tests, which compare the ingest's documents
    /// with them.
    pub fn tse_final(&self) -> Vec<FinalRace> {
        let last = self.final_tick();
        let mut out = Vec::new();
        for (idx, city) in self.election.cities().iter().enumerate() {
            let ibge = city.municipality.ibge;
            let mayor = if self.tse_layout().runoffs.contains_key(&idx) {
                self.tse_race(idx, RaceKey::Mayor, 2, last)
            } else {
                self.tse_race(idx, RaceKey::Mayor, 1, last)
            };
            out.extend(mayor.map(|view| FinalRace {
                ibge,
                office: Office::Mayor,
                view,
            }));
            out.extend(
                self.tse_race(idx, RaceKey::Councillor, 1, last)
                    .map(|view| FinalRace {
                        ibge,
                        office: Office::Councillor,
                        view,
                    }),
            );
        }
        out
    }

    /// Per topic (`mayors-…`, `councillors-…`), the first-round ticks from `first` to `last`
    /// at which the city's file was written: when it first came out, and each tick its sections
    /// moved. What a freshness measure charges a city for, beside [`Simulator::ticks`]. An
    /// office whose files are never published (`--missing-office`) has none.
    pub fn tse_changes(&self, first: u64, last: u64) -> Vec<(String, Vec<u64>)> {
        let missing = self.tse_options.missing_office.map(|m| m.cargo());
        let mut out = Vec::new();
        for (idx, city) in self.election.cities().iter().enumerate() {
            let mut written = Vec::new();
            let mut before = first
                .checked_sub(1)
                .filter(|&j| self.published(idx, 1, j))
                .map(|j| self.race_sections(idx, RaceKey::Mayor, 1, j));
            for j in first..=last {
                if !self.published(idx, 1, j) {
                    continue;
                }
                // Both offices' files depend on the city's sections alone.
                let now = self.race_sections(idx, RaceKey::Mayor, 1, j);
                if before != Some(now) {
                    written.push(j);
                }
                before = Some(now);
            }
            for office in [Office::Mayor, Office::Councillor] {
                if missing == Some(office.tse_code()) {
                    continue;
                }
                out.push((
                    city.municipality.topic(office.topic_kind()),
                    written.clone(),
                ));
            }
        }
        out
    }

    /// The TSE code of a municipality of the simulated list (the layout's own when the list
    /// has none).
    pub fn tse_code(&self, ibge: u32) -> Option<&str> {
        self.tse_layout().code(ibge)
    }

    /// Cities going to a second round (0 unless the night plays it).
    pub fn tse_runoff_cities(&self) -> usize {
        self.tse_layout().runoff_cities()
    }
}
