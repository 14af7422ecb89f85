//! The count model: every race's hidden final result, drawn once, and the count at any moment of
//! the night, converging to it.
//!
//! A city is split into electoral zones (one for a small town; 2–60 for a city with a zone
//! file), each with its sections and its final votes. A zone counts its sections over its own
//! window of the night along an S curve; what it shows when `s` of its `ts` sections are in is
//! [`partial`] of every final figure, which never goes down, starts at 0 and ends exactly at
//! the final figure. City figures are sums over zones, so zone files always add up to the city.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::RngExt;
use rand::seq::IndexedRandom;

use super::candidates::{self, Party};
use super::cities::{self, SAO_PAULO};
use super::json;
use super::shares::{apportion, partial};
use super::{SimRng, normal, rng_for};
use apura_formats::feed::municipalities::MunicipalityList;
use apura_formats::model::{Municipality, Office};

/// Cities with more registered voters than this hold a second round when no mayor candidate
/// wins more than half of the valid votes (Constitution, art. 29 II); they also get zone files.
pub const RUNOFF_ELECTORATE: u64 = 200_000;

/// Registered voters per section (ballot box): Brazil's ~155 M voters vote in ~470,000
/// sections (330 each); 350 keeps the round figure the provider's section counts suggest.
const VOTERS_PER_SECTION: u64 = 350;

/// Registered voters per electoral zone in the large cities: São Paulo's 9.3 M voters in 58
/// zones.
const VOTERS_PER_ZONE: u64 = 160_000;
/// Zones of a city with a zone file, at least and at most.
const ZONES_MIN: usize = 2;
const ZONES_MAX: usize = 60;

/// A candidate whose strongholds count first shows up to 45 % above their final share early on
/// (and one whose strongholds count last, 45 % below); enough for the lead to change hands.
/// Biases (`beta`) are in thousandths, as [`partial`] takes them.
const BETA_MAX: i32 = 450;

/// Tags naming the purpose of a random generator, so each draw sequence is independent.
const TAG_CITY: u64 = 1;
const TAG_COUNCIL: u64 = 2;

/// All the races of the night, voting cities in IBGE order.
pub struct Election {
    cities: Vec<City>,
    /// `"{uf}-{slug}"` (uf lower case) of every city with a zone file, to its index.
    zone_index: HashMap<String, usize>,
    /// Candidates in all, mayors and councillors, to size the rendering buffers.
    pub mayor_candidates: usize,
    pub council_candidates: usize,
}

/// One city's races.
pub struct City {
    pub municipality: Arc<Municipality>,
    /// The provider's spelling of the name, already a JSON string literal.
    pub feed_name: String,
    pub electorate: u64,
    /// Registered voters who will not vote.
    pub abstentions: u64,
    pub zones: Vec<Zone>,
    /// Whether the city has a zone file (capitals and cities above [`RUNOFF_ELECTORATE`]).
    pub zone_file: bool,
    pub mayors: Vec<Candidate>,
    mayor_blank_beta: i32,
    mayor_null_beta: i32,
    pub council: Council,
}

/// One electoral zone of a city: its window of the night, sections and final mayor votes.
pub struct Zone {
    /// Zone number, written `%04d` in the zone file.
    pub number: u32,
    /// When the zone's first and last sections come in, as fractions of the night.
    start: f64,
    end: f64,
    pub sections: u64,
    /// Final votes of each mayor candidate, in the order of [`City::mayors`].
    pub votes: Vec<u64>,
    pub blank: u64,
    pub null: u64,
}

/// A candidate: ballot number, name, party, early bias, and the JSON fields that never change.
pub struct Candidate {
    pub number: u32,
    pub name: String,
    pub party: &'static Party,
    beta: i32,
    /// `"nc":…,"sp":…,"cp":…,"tc":…,"num":…`: written once, copied into every file.
    pub fixed_fields: String,
}

/// The councillor race of a city.
pub struct Council {
    pub candidates: Vec<Candidate>,
    /// Final votes, in the order of `candidates`.
    pub votes: Vec<u64>,
    pub blank: u64,
    pub null: u64,
    /// Seats in the chamber: the top `seats` candidates are elected.
    pub seats: usize,
    blank_beta: i32,
    null_beta: i32,
}

/// The count of a race (or of one zone) at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub sections: u64,
    pub total_sections: u64,
    /// Votes of each candidate, in the race's candidate order.
    pub votes: Vec<u64>,
    pub blank: u64,
    pub null: u64,
    pub abstentions: u64,
}

impl Tally {
    /// Votes for candidates.
    pub fn valid(&self) -> u64 {
        self.votes.iter().sum()
    }

    /// Votes cast: candidates, blank and null, exactly.
    pub fn turnout(&self) -> u64 {
        self.valid() + self.blank + self.null
    }

    /// Every section is in.
    pub fn finished(&self) -> bool {
        self.sections == self.total_sections
    }
}

/// What the feed says of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Count still running, or not elected.
    None,
    Elected,
    SecondRound,
}

impl Election {
    /// Draw every race of the night for `seed`.
    pub fn build(seed: u64, list: &MunicipalityList) -> Self {
        let mut voting: Vec<&Arc<Municipality>> =
            list.iter().filter(|m| cities::has_election(m)).collect();
        voting.sort_by_key(|m| m.ibge);
        let cities: Vec<City> = voting.into_iter().map(|m| City::build(seed, m)).collect();
        let zone_index = cities
            .iter()
            .enumerate()
            .filter(|(_, c)| c.zone_file)
            .map(|(i, c)| (zone_key(&c.municipality.uf, &c.municipality.slug), i))
            .collect();
        Election {
            mayor_candidates: cities.iter().map(|c| c.mayors.len()).sum(),
            council_candidates: cities.iter().map(|c| c.council.candidates.len()).sum(),
            cities,
            zone_index,
        }
    }

    /// The voting cities, in IBGE order.
    pub fn cities(&self) -> &[City] {
        &self.cities
    }

    /// Sections counted and in all, nationally, at `tau`.
    pub fn sections(&self, tau: f64) -> (u64, u64) {
        self.cities.iter().fold((0, 0), |(s, ts), c| {
            let (cs, cts) = c.sections(tau);
            (s + cs, ts + cts)
        })
    }

    /// The city with a zone file at `uf`/`slug` (either case).
    pub fn zone_city(&self, uf: &str, slug: &str) -> Option<&City> {
        self.zone_index
            .get(&zone_key(uf, slug))
            .map(|&i| &self.cities[i])
    }

    /// Cities with a zone file, in IBGE order.
    pub fn zone_cities(&self) -> impl Iterator<Item = &City> {
        self.cities.iter().filter(|c| c.zone_file)
    }
}

/// The key of a zone file: `"{uf}-{slug}"`, lower case.
pub fn zone_key(uf: &str, slug: &str) -> String {
    format!("{}-{}", uf.to_ascii_lowercase(), slug.to_ascii_lowercase())
}

impl City {
    fn build(seed: u64, m: &Arc<Municipality>) -> Self {
        let electorate = cities::electorate(m);
        let mut rng = rng_for(&[seed, u64::from(m.ibge), TAG_CITY]);
        let zone_file = m.capital || electorate > RUNOFF_ELECTORATE;

        // Turnout around 83 % (abstention 17 %); blank and null votes of the mayor race.
        let turnout_rate = (0.83 + 0.025 * normal(&mut rng)).clamp(0.70, 0.93);
        let blank_rate = rng.random_range(0.02..0.05);
        let null_rate = rng.random_range(0.03..0.065);

        let mayors = mayor_candidates(&mut rng, electorate, m.ibge == SAO_PAULO);
        let shares = mayor_shares(&mut rng, mayors.len());

        let zone_count = if zone_file {
            ((electorate + VOTERS_PER_ZONE / 2) / VOTERS_PER_ZONE)
                .clamp(ZONES_MIN as u64, ZONES_MAX as u64) as usize
        } else {
            1
        };
        let zone_numbers = zone_numbers(&mut rng, zone_count);
        let zone_weights: Vec<f64> = (0..zone_count)
            .map(|_| rng.random_range(0.6..1.4))
            .collect();
        let zone_electorates = apportion(electorate, &zone_weights);
        let (start, end) = window(&mut rng, electorate, m);
        let last_zone = rng.random_range(0..zone_count);
        let mut zones = Vec::with_capacity(zone_count);
        for (z, (&number, &e)) in zone_numbers.iter().zip(&zone_electorates).enumerate() {
            let (zstart, zend) = if zone_count == 1 {
                (start, end)
            } else {
                let zstart = start + rng.random_range(0.0..0.25) * (end - start);
                let zend = if z == last_zone {
                    end
                } else {
                    zstart + rng.random_range(0.6..1.0) * (end - zstart)
                };
                (zstart, zend)
            };
            let rate = (turnout_rate + 0.02 * normal(&mut rng)).clamp(0.6, 0.95);
            let turnout = (e as f64 * rate).round() as u64;
            let blank = (turnout as f64 * blank_rate * rng.random_range(0.85..1.15)).round() as u64;
            let null = (turnout as f64 * null_rate * rng.random_range(0.85..1.15)).round() as u64;
            let valid = turnout - blank - null;
            // Each zone leans its own way.
            let leaning: Vec<f64> = shares
                .iter()
                .map(|s| s * (0.2 * normal(&mut rng)).exp())
                .collect();
            zones.push(Zone {
                number,
                start: zstart,
                end: zend.max(zstart + 0.01),
                sections: e.div_ceil(VOTERS_PER_SECTION).max(1),
                votes: apportion(valid, &leaning),
                blank,
                null,
            });
        }
        let turnout: u64 = zones
            .iter()
            .map(|z| z.votes.iter().sum::<u64>() + z.blank + z.null)
            .sum();
        let council = Council::build(seed, m, electorate, turnout);
        City {
            feed_name: json::json_string(&cities::feed_name(m)),
            municipality: m.clone(),
            electorate,
            abstentions: electorate - turnout,
            zones,
            zone_file,
            mayors,
            mayor_blank_beta: rng.random_range(-BETA_MAX..=BETA_MAX),
            mayor_null_beta: rng.random_range(-BETA_MAX..=BETA_MAX),
            council,
        }
    }

    /// When the first of its zones starts counting, as a fraction of the night.
    pub fn count_starts(&self) -> f64 {
        self.zones.iter().map(|z| z.start).fold(1.0, f64::min)
    }

    /// Sections counted and in all at `tau`.
    pub fn sections(&self, tau: f64) -> (u64, u64) {
        self.zones
            .iter()
            .fold((0, 0), |(s, ts), z| (s + z.counted(tau), ts + z.sections))
    }

    fn abstentions_at(&self, s: u64, ts: u64) -> u64 {
        partial(self.abstentions, 0, s, ts)
    }

    /// The mayor race at `tau`.
    pub fn mayor_tally(&self, tau: f64) -> Tally {
        self.mayor_tally_by_zone(tau).0
    }

    /// The mayor race at `tau`, and each zone's part of it (they add up to the city exactly).
    pub fn mayor_tally_by_zone(&self, tau: f64) -> (Tally, Vec<Tally>) {
        let mut city = Tally {
            sections: 0,
            total_sections: 0,
            votes: vec![0; self.mayors.len()],
            blank: 0,
            null: 0,
            abstentions: 0,
        };
        let mut zones = Vec::with_capacity(self.zones.len());
        for zone in &self.zones {
            let (s, ts) = (zone.counted(tau), zone.sections);
            let votes: Vec<u64> = self
                .mayors
                .iter()
                .zip(&zone.votes)
                .map(|(c, &v)| partial(v, c.beta, s, ts))
                .collect();
            let tally = Tally {
                sections: s,
                total_sections: ts,
                votes,
                blank: partial(zone.blank, self.mayor_blank_beta, s, ts),
                null: partial(zone.null, self.mayor_null_beta, s, ts),
                abstentions: 0,
            };
            city.sections += s;
            city.total_sections += ts;
            for (sum, v) in city.votes.iter_mut().zip(&tally.votes) {
                *sum += v;
            }
            city.blank += tally.blank;
            city.null += tally.null;
            zones.push(tally);
        }
        city.abstentions = self.abstentions_at(city.sections, city.total_sections);
        (city, zones)
    }

    /// The councillor race at `tau`.
    pub fn council_tally(&self, tau: f64) -> Tally {
        let (s, ts) = self.sections(tau);
        let c = &self.council;
        Tally {
            sections: s,
            total_sections: ts,
            votes: c
                .candidates
                .iter()
                .zip(&c.votes)
                .map(|(cand, &v)| partial(v, cand.beta, s, ts))
                .collect(),
            blank: partial(c.blank, c.blank_beta, s, ts),
            null: partial(c.null, c.null_beta, s, ts),
            abstentions: self.abstentions_at(s, ts),
        }
    }

    /// The race of `office` at `tau`.
    pub fn tally(&self, office: Office, tau: f64) -> Tally {
        match office {
            Office::Mayor => self.mayor_tally(tau),
            Office::Councillor => self.council_tally(tau),
        }
    }

    /// The candidates of `office`.
    pub fn candidates(&self, office: Office) -> &[Candidate] {
        match office {
            Office::Mayor => &self.mayors,
            Office::Councillor => &self.council.candidates,
        }
    }

    /// What the feed says of each candidate of `office` (in candidate order), given the tally
    /// and the candidates' ranking. Nothing before every section is in. Then the mayor with the
    /// most votes is elected, unless the city has more than 200,000 voters and the leader has at
    /// most half of the valid votes: then the top two go to a second round. The top `seats`
    /// councillor candidates are elected.
    pub fn marks(&self, office: Office, tally: &Tally, ranking: &[usize]) -> Vec<Mark> {
        let mut marks = vec![Mark::None; tally.votes.len()];
        if !tally.finished() || ranking.is_empty() {
            return marks;
        }
        match office {
            Office::Mayor => {
                let leader = ranking[0];
                let runoff = self.electorate > RUNOFF_ELECTORATE
                    && ranking.len() > 1
                    && tally.votes[leader] * 2 <= tally.valid();
                if runoff {
                    marks[ranking[0]] = Mark::SecondRound;
                    marks[ranking[1]] = Mark::SecondRound;
                } else {
                    marks[leader] = Mark::Elected;
                }
            }
            Office::Councillor => {
                for &i in ranking.iter().take(self.council.seats) {
                    marks[i] = Mark::Elected;
                }
            }
        }
        marks
    }
}

/// Candidates by votes, most first; ties by ballot number.
pub fn ranking(candidates: &[Candidate], votes: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        votes[b]
            .cmp(&votes[a])
            .then(candidates[a].number.cmp(&candidates[b].number))
    });
    order
}

impl Zone {
    /// Sections of this zone counted at `tau`: none before its window, all after it, and an S
    /// curve in between (a trickle, the bulk, a tail).
    pub fn counted(&self, tau: f64) -> u64 {
        if tau >= self.end {
            return self.sections;
        }
        let x = ((tau - self.start) / (self.end - self.start)).clamp(0.0, 1.0);
        let done = x * x * (3.0 - 2.0 * x);
        ((self.sections as f64 * done).floor() as u64).min(self.sections)
    }
}

impl Council {
    fn build(seed: u64, m: &Municipality, electorate: u64, turnout: u64) -> Self {
        let mut rng = rng_for(&[seed, u64::from(m.ibge), TAG_COUNCIL]);
        let seats = seats(electorate);
        // ~25 candidates in a town of 3,000 voters, ~60 at 100,000, ~1,000 in São Paulo:
        // 20 + 0.013 × electorate^0.7, ±15 %.
        let base = 20.0 + 0.013 * (electorate as f64).powf(0.7);
        let count = ((base * rng.random_range(0.85..1.15)).round() as usize).max(seats + 6);
        // How strong each party is in this city.
        let strength: HashMap<u32, f64> = candidates::PARTIES
            .iter()
            .map(|p| (p.number, (0.5 * normal(&mut rng)).exp()))
            .collect();
        let mut taken_names = HashSet::with_capacity(count);
        let mut taken_numbers = HashSet::with_capacity(count);
        let mut drawn: Vec<(Candidate, f64)> = Vec::with_capacity(count);
        while drawn.len() < count {
            let party = candidates::random_party(&mut rng);
            // Five digits: the party's two, then three of the candidate's own.
            let number = party.number * 1_000 + rng.random_range(1..1_000);
            if !taken_numbers.insert(number) {
                continue;
            }
            let name = candidates::unique_ballot_name(&mut rng, &mut taken_names);
            let weight = strength[&party.number] * (1.1 * normal(&mut rng)).exp();
            drawn.push((Candidate::new(number, name, party, &mut rng), weight));
        }
        drawn.sort_by_key(|(c, _)| c.number);
        let weights: Vec<f64> = drawn.iter().map(|(_, w)| *w).collect();
        let list: Vec<Candidate> = drawn.into_iter().map(|(c, _)| c).collect();
        // Blank and null votes run higher for councillor than for mayor.
        let blank = (turnout as f64 * rng.random_range(0.03..0.06)).round() as u64;
        let null = (turnout as f64 * rng.random_range(0.04..0.08)).round() as u64;
        let votes = apportion(turnout - blank - null, &weights);
        Council {
            candidates: list,
            votes,
            blank,
            null,
            seats,
            blank_beta: rng.random_range(-BETA_MAX..=BETA_MAX),
            null_beta: rng.random_range(-BETA_MAX..=BETA_MAX),
        }
    }
}

impl Candidate {
    fn new(number: u32, name: String, party: &'static Party, rng: &mut SimRng) -> Self {
        Candidate {
            fixed_fields: json::candidate_fields(number, &name, party),
            number,
            name,
            party,
            beta: rng.random_range(-BETA_MAX..=BETA_MAX),
        }
    }
}

/// Mayor candidates: 1–3 in a town, up to 11 in the big cities, 9–11 in São Paulo; each of a
/// different party, the party's number on the ballot.
fn mayor_candidates(rng: &mut SimRng, electorate: u64, sao_paulo: bool) -> Vec<Candidate> {
    let count = if sao_paulo {
        rng.random_range(9..=11)
    } else {
        match electorate {
            0..10_000 => *[1, 2, 2, 2, 2, 3, 3, 3].choose(rng).expect("counts"),
            10_000..50_000 => rng.random_range(2..=4),
            50_000..200_000 => rng.random_range(2..=6),
            200_000..1_000_000 => rng.random_range(3..=8),
            _ => rng.random_range(5..=11),
        }
    };
    let mut names = HashSet::new();
    let mut list: Vec<Candidate> = candidates::distinct_parties(rng, count)
        .into_iter()
        .map(|party| {
            let name = candidates::unique_ballot_name(rng, &mut names);
            Candidate::new(party.number, name, party, rng)
        })
        .collect();
    list.sort_by_key(|c| c.number);
    list
}

/// Hidden popularity of `count` mayor candidates (weights, not normalised). Log-normal shares
/// make some races close and others a landslide; with three or more candidates the favourite's
/// share is drawn between 30 % and 80 %, so that about two in five large cities go to a second
/// round, as in 2024 (51 of 103).
fn mayor_shares(rng: &mut SimRng, count: usize) -> Vec<f64> {
    let mut shares: Vec<f64> = (0..count).map(|_| (0.75 * normal(rng)).exp()).collect();
    if count >= 3 {
        let favourite = (0..count)
            .max_by(|&a, &b| shares[a].total_cmp(&shares[b]))
            .expect("candidates");
        let others: f64 = shares.iter().sum::<f64>() - shares[favourite];
        let target: f64 = rng.random_range(0.30..0.80);
        shares[favourite] = others * target / (1.0 - target);
    }
    shares
}

/// Seats in the municipal chamber (Constitution, art. 29 IV, as of amendment 58/2009), by
/// population; population taken as 1.31 × electorate (203 M people, 155 M voters).
fn seats(electorate: u64) -> usize {
    const BRACKETS: [(u64, usize); 24] = [
        (15_000, 9),
        (30_000, 11),
        (50_000, 13),
        (80_000, 15),
        (120_000, 17),
        (160_000, 19),
        (300_000, 21),
        (450_000, 23),
        (600_000, 25),
        (750_000, 27),
        (900_000, 29),
        (1_050_000, 31),
        (1_200_000, 33),
        (1_350_000, 35),
        (1_500_000, 37),
        (1_800_000, 39),
        (2_400_000, 41),
        (3_000_000, 43),
        (4_000_000, 45),
        (5_000_000, 47),
        (6_000_000, 49),
        (7_000_000, 51),
        (8_000_000, 53),
        (u64::MAX, 55),
    ];
    let population = electorate * 131 / 100;
    BRACKETS
        .iter()
        .find(|(up_to, _)| population <= *up_to)
        .map_or(55, |b| b.1)
}

/// Distinct zone numbers for a city, sorted: zones are numbered state-wide, so a city's are
/// scattered over the state's few hundred.
fn zone_numbers(rng: &mut SimRng, count: usize) -> Vec<u32> {
    let mut numbers = HashSet::with_capacity(count);
    let highest = (count as u32 * 6).max(400);
    while numbers.len() < count {
        numbers.insert(rng.random_range(1..=highest));
    }
    let mut numbers: Vec<u32> = numbers.into_iter().collect();
    numbers.sort_unstable();
    numbers
}

/// When a city's count runs, as fractions of the night: towns start at once and finish within
/// the first 20–40 %, larger cities later, capitals at 88–100 %, São Paulo exactly at the end.
fn window(rng: &mut SimRng, electorate: u64, m: &Municipality) -> (f64, f64) {
    // Towns send their first sections within minutes; large cities' first batches take longer.
    let start = if electorate > RUNOFF_ELECTORATE {
        rng.random_range(0.03..0.12)
    } else {
        rng.random_range(0.0..0.04)
    };
    let end = if m.ibge == SAO_PAULO {
        1.0
    } else if m.capital {
        rng.random_range(0.88..1.0)
    } else {
        // 0.12 at 2,000 voters, 0.29 at 20,000, 0.47 at 200,000.
        let by_size = 0.12 + 0.075 * (electorate as f64 / 2_000.0).ln().max(0.0);
        let mut end = by_size + rng.random_range(-0.06..0.10);
        if electorate > RUNOFF_ELECTORATE {
            end = end.max(rng.random_range(0.55..0.9));
        }
        end.clamp(start + 0.05, 0.97)
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::shared;

    #[test]
    fn seats_follow_the_constitution() {
        assert_eq!(seats(3_000), 9);
        assert_eq!(seats(9_320_000), 55);
        assert_eq!(seats(5_010_000), 51);
    }

    #[test]
    fn races_have_the_promised_shapes() {
        let election = &shared().election;
        assert_eq!(election.cities().len(), 5_568);
        for c in election.cities() {
            let n = c.mayors.len();
            assert!(
                (1..=11).contains(&n),
                "{} has {n} mayor candidates",
                c.municipality.name
            );
            if c.electorate < 10_000 {
                assert!(n <= 3);
            }
            let numbers: HashSet<u32> = c.mayors.iter().map(|m| m.number).collect();
            assert_eq!(numbers.len(), n);
            let council = &c.council;
            assert!((9..=55).contains(&council.seats));
            assert!(council.candidates.len() > council.seats);
            for cand in &council.candidates {
                assert!((10_000..100_000).contains(&cand.number));
            }
            let zones = c.zones.len();
            if c.zone_file {
                assert!((ZONES_MIN..=ZONES_MAX).contains(&zones));
            } else {
                assert_eq!(zones, 1);
            }
            let mayor_total: u64 = c
                .zones
                .iter()
                .map(|z| z.votes.iter().sum::<u64>() + z.blank + z.null)
                .sum();
            let council_total = council.votes.iter().sum::<u64>() + council.blank + council.null;
            assert_eq!(mayor_total, council_total);
            assert_eq!(mayor_total + c.abstentions, c.electorate);
        }
        let sp = election.zone_city("sp", "sao-paulo").unwrap();
        assert!((56..=60).contains(&sp.zones.len()), "{}", sp.zones.len());
        assert!((800..=1_200).contains(&sp.council.candidates.len()));
        let small: Vec<usize> = election
            .cities()
            .iter()
            .filter(|c| c.electorate < 10_000)
            .map(|c| c.council.candidates.len())
            .collect();
        let mean = small.iter().sum::<usize>() / small.len();
        assert!((20..=40).contains(&mean), "{mean}");
        eprintln!(
            "{} mayor candidates, {} councillor candidates, {} cities with zone files",
            election.mayor_candidates,
            election.council_candidates,
            election.zone_cities().count()
        );
    }

    #[test]
    fn small_towns_finish_before_capitals() {
        let election = &shared().election;
        let done_at = |c: &City| c.zones.iter().map(|z| z.end).fold(0.0, f64::max);
        let towns: Vec<f64> = election
            .cities()
            .iter()
            .filter(|c| c.electorate < 20_000)
            .map(done_at)
            .collect();
        let early = towns.iter().filter(|&&e| e <= 0.4).count();
        assert!(early * 10 >= towns.len() * 8, "{early} of {}", towns.len());
        for c in election.cities().iter().filter(|c| c.municipality.capital) {
            assert!(done_at(c) >= 0.88, "{}", c.municipality.name);
        }
        let sp = election.zone_city("SP", "sao-paulo").unwrap();
        assert_eq!(done_at(sp), 1.0);
        assert!(sp.mayor_tally(0.999).sections < sp.mayor_tally(1.0).sections);
    }
}
