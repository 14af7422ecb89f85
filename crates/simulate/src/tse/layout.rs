//! The TSE-only facts of the night, drawn once: every municipality's TSE code, the voting
//! cities by state, each city's draws, and the second rounds.

use std::collections::{BTreeMap, HashMap};

use rand::RngExt;

use super::city::{TAG_TSE, TseCity};
use super::race::mayor_view;
use super::{ELECTION, ELECTION_ROUND2};
use crate::count::City;
use crate::shares::apportion;
use crate::{SimRng, normal, rng_for};
use apura_formats::feed::municipalities::MunicipalityList;

/// The TSE-only facts of the night, drawn once.
pub struct TseLayout {
    /// TSE code (five digits) of every municipality of the list, by IBGE code.
    pub(super) codes: HashMap<u32, String>,
    /// Voting cities, parallel to [`super::count::Election::cities`].
    pub(super) cities: Vec<TseCity>,
    /// Voting city index by TSE code.
    pub(super) by_code: HashMap<String, usize>,
    /// Voting city indexes of every state of the list (lower case), including states without one.
    pub(super) states: BTreeMap<String, Vec<usize>>,
    /// Second rounds, by voting city index.
    pub(super) runoffs: HashMap<usize, Runoff>,
    pub(super) second_round: bool,
    /// Four digits that set this night's `idg`s apart from another configuration's.
    pub(super) salt: u64,
}

/// A second round: the two candidates, and each zone's final votes.
pub(super) struct Runoff {
    /// Indexes into the city's mayor candidates.
    pub(super) pair: [usize; 2],
    pub(super) betas: [i32; 2],
    pub(super) zones: Vec<RunoffZone>,
    pub(super) abstentions: u64,
}

pub(super) struct RunoffZone {
    pub(super) votes: [u64; 2],
    pub(super) blank: u64,
    pub(super) null: u64,
}

impl TseLayout {
    /// Draw the layout's facts for `seed` over the voting cities of `election`.
    pub fn build(
        seed: u64,
        list: &MunicipalityList,
        cities: &[City],
        second_round: bool,
        salt: u64,
    ) -> Self {
        let codes = tse_codes(list);
        let mut states: BTreeMap<String, Vec<usize>> = list
            .iter()
            .map(|m| (m.uf.to_ascii_lowercase(), Vec::new()))
            .collect();
        let mut by_code = HashMap::with_capacity(cities.len());
        let mut layout_cities = Vec::with_capacity(cities.len());
        let mut runoffs = HashMap::new();
        for (i, city) in cities.iter().enumerate() {
            let m = &city.municipality;
            let mut rng = rng_for(&[seed, u64::from(m.ibge), TAG_TSE]);
            let tse = codes[&m.ibge].clone();
            by_code.insert(tse.clone(), i);
            states.entry(m.uf.to_ascii_lowercase()).or_default().push(i);
            let c = TseCity::draw(&mut rng, city, tse);
            if second_round && let Some(r) = Runoff::draw(&mut rng, city, &c) {
                runoffs.insert(i, r);
            }
            layout_cities.push(c);
        }
        TseLayout {
            codes,
            cities: layout_cities,
            by_code,
            states,
            runoffs,
            second_round,
            salt: 1_000 + salt % 9_000,
        }
    }

    /// The TSE code of a municipality of the list.
    pub fn code(&self, ibge: u32) -> Option<&str> {
        self.codes.get(&ibge).map(String::as_str)
    }

    /// Voting cities with a second round.
    pub fn runoff_cities(&self) -> usize {
        self.runoffs.len()
    }

    pub(super) fn election_round(&self, election: &str) -> Option<u8> {
        match election {
            ELECTION => Some(1),
            ELECTION_ROUND2 if self.second_round => Some(2),
            _ => None,
        }
    }
}

/// TSE codes for the list: the list's own where it has them (the TSE CSV), otherwise five
/// digits spread over 10000–99999 in IBGE order (`10000 + 16 i` stays below 100,000 for 5,570
/// municipalities), stable for a given list.
fn tse_codes(list: &MunicipalityList) -> HashMap<u32, String> {
    let mut all: Vec<_> = list.iter().collect();
    all.sort_by_key(|m| m.ibge);
    all.iter()
        .enumerate()
        .map(|(i, m)| {
            let code = m
                .tse
                .clone()
                .unwrap_or_else(|| format!("{:05}", 10_000 + 16 * i));
            (m.ibge, code)
        })
        .collect()
}

impl Runoff {
    /// The second round of `city`, if its final first-round file sends two candidates to one.
    fn draw(rng: &mut SimRng, city: &City, tse: &TseCity) -> Option<Runoff> {
        let view = mayor_view(city, tse, 1.0, 1);
        let mut pair = view
            .candidates
            .iter()
            .filter(|c| c.status == "2º turno")
            .map(|c| c.index);
        let pair = [pair.next()?, pair.next()?];
        // The runner-up gains: second rounds are closer than first rounds.
        let share_a: f64 = rng.random_range(0.38..0.62);
        let zones = city
            .zones
            .iter()
            .map(|z| {
                let turnout: u64 = z.votes.iter().sum::<u64>() + z.blank + z.null;
                // Fewer voters come back, and more of them vote blank or null.
                let turnout = (turnout as f64 * rng.random_range(0.93..0.98)).round() as u64;
                let blank = (turnout as f64 * rng.random_range(0.02..0.04)).round() as u64;
                let null = (turnout as f64 * rng.random_range(0.04..0.07)).round() as u64;
                let lean = (share_a * (0.15 * normal(rng)).exp()).clamp(0.05, 0.95);
                let votes = apportion(turnout - blank - null, &[lean, 1.0 - lean]);
                RunoffZone {
                    votes: [votes[0], votes[1]],
                    blank,
                    null,
                }
            })
            .collect::<Vec<_>>();
        let turnout: u64 = zones
            .iter()
            .map(|z| z.votes[0] + z.votes[1] + z.blank + z.null)
            .sum();
        Some(Runoff {
            pair,
            betas: [rng.random_range(-300..=300), rng.random_range(-300..=300)],
            zones,
            abstentions: city.electorate - turnout,
        })
    }
}
