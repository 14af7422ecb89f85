//! The official TSE layout of the simulated night (`tse-format.md`): the election catalogue, the
//! municipality configuration, one progress file per state, and one unified result per city and
//! office (and per zone for the mayor race), rendered from the same count model as the
//! consolidated layout.
//!
//! What the authority's files say and the model does not is drawn here once from the seed: TSE
//! codes, coalitions and vices of mayor candidates, federations, a few candidates annulled sub
//! judice, and councillor list votes (two fifths of the model's councillor null votes, which the
//! consolidated layout has no other place for).
//!
//! Publication follows the authority: a city appears (its row in the state's progress file, its
//! files answering 200 instead of 404) once the night has gone half way to its count's start, so
//! its first files are the zeros published before counting. A file is rewritten only when its
//! sections change, and then its `idg` (served as the `ETag`) and its `dt`/`ht` change with it.
//!
//! With `second_round`, the night goes on for a second `duration` after the first count ends:
//! the cities whose mayor race went to a second round play it under [`ELECTION_ROUND2`].

pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::RngExt;
use rand::seq::IndexedRandom;

use super::candidates::{self, PARTIES, Party};
use super::count::{City, RUNOFF_ELECTORATE, apportion, partial};
use super::files::{Stamp, hundredths_floor, hundredths_round, json_string};
use super::{SimRng, Simulator, normal, rng_for};
use apura_formats::feed::municipalities::{MunicipalityList, uf_name};
use apura_formats::model::{Office, Status};

/// The cycle's folder.
pub const CYCLE: &str = "ele2028";
/// First-round election code of the simulated night.
pub const ELECTION: &str = "9426";
/// Its second round.
pub const ELECTION_ROUND2: &str = "9427";
/// Where the cycle's folder is served: an ingest takes `--base-url http://<addr>/oficial/ele2028/`.
pub const BASE_PATH: &str = "/oficial/ele2028/";
/// Where the catalogue is served, beside the cycles' folders.
pub const CATALOGUE_PATH: &str = "/oficial/comum/config/ele-c.json";
/// Second rounds are held on the last Sunday of October (Constitution, art. 29 II).
const ROUND2_DATE: &str = "29/10/2028";

/// Share of the model's final councillor null votes rendered as list (party) votes: with null
/// at 4–8 % of the turnout, list votes come to 1.6–3.2 %, about what parties get in real
/// municipal races.
const LIST_SHARE_OF_NULL: f64 = 0.4;
/// A mayor candidate heads a coalition this often (about half did in 2024).
const COALITION_RATE: f64 = 0.5;
/// In this share of races with three or more mayor candidates, the weakest is annulled sub
/// judice (registration refused on appeal): about sixty cities a night.
const ANNULLED_MAYOR_RATE: f64 = 0.02;
/// Share of councillor candidates annulled: about one in a hundred.
const ANNULLED_COUNCILLOR_RATE: f64 = 0.01;
/// Generator tag of the layout's draws.
const TAG_TSE: u64 = 7;

/// Invented coalition names.
const COALITIONS: [&str; 12] = [
    "FRENTE AMPLA",
    "JUNTOS PELA CIDADE",
    "CORAGEM PARA MUDAR",
    "O TRABALHO CONTINUA",
    "UNIÃO E RECONSTRUÇÃO",
    "RENOVAÇÃO JÁ",
    "A FORÇA DO POVO",
    "CIDADE PARA TODOS",
    "SEGUE EM FRENTE",
    "NOVO TEMPO",
    "ALIANÇA POPULAR",
    "COMPROMISSO E EXPERIÊNCIA",
];

/// Invented federations of real party numbers: number, abbreviation, name, parties.
const FEDERATIONS: [(u32, &str, &str, [u32; 3]); 3] = [
    (101, "FFP", "FEDERAÇÃO FRENTE POPULAR", [13, 65, 43]),
    (102, "FCD", "FEDERAÇÃO CENTRO DEMOCRÁTICO", [45, 23, 0]),
    (103, "FAL", "FEDERAÇÃO ALTERNATIVA", [50, 18, 0]),
];

fn federation_of(party: u32) -> Option<&'static (u32, &'static str, &'static str, [u32; 3])> {
    FEDERATIONS
        .iter()
        .find(|f| party != 0 && f.3.contains(&party))
}

/// The TSE-only facts of the night, drawn once.
pub struct TseLayout {
    /// TSE code (five digits) of every municipality of the list, by IBGE code.
    codes: HashMap<u32, String>,
    /// Voting cities, parallel to [`super::count::Election::cities`].
    cities: Vec<TseCity>,
    /// Voting city index by TSE code.
    by_code: HashMap<String, usize>,
    /// Voting city indexes of every state of the list (lower case), including states without one.
    states: BTreeMap<String, Vec<usize>>,
    /// Second rounds, by voting city index.
    runoffs: HashMap<usize, Runoff>,
    second_round: bool,
    /// Four digits that set this night's `idg`s apart from another configuration's.
    salt: u64,
}

struct TseCity {
    tse: String,
    /// Its files appear once the night is this far (half way to its count's start).
    published_from: f64,
    mayors: Vec<Ticket>,
    /// Parallel to the council candidates: `""` valid, else the destination.
    council_annulled: Vec<&'static str>,
    /// Final list votes by party number, in party-number order.
    lists: Vec<(u32, u64)>,
    /// Final null votes once list votes are carved out of them.
    council_null: u64,
}

/// What a mayor candidate's ticket adds to the model.
struct Ticket {
    annulled: bool,
    coalition: Option<(&'static str, Vec<&'static str>)>,
    vice: String,
    vice_party: &'static str,
}

/// A second round: the two candidates, and each zone's final votes.
struct Runoff {
    /// Indexes into the city's mayor candidates.
    pair: [usize; 2],
    betas: [i32; 2],
    zones: Vec<RunoffZone>,
    abstentions: u64,
}

struct RunoffZone {
    votes: [u64; 2],
    blank: u64,
    null: u64,
}

/// Which race of a city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaceKey {
    Mayor,
    Councillor,
    /// The mayor race in one zone (index into the city's zones).
    Zone(usize),
}

/// One race as the files show it at a tick: what the JSON is written from, and what the tests
/// compare the ingest's documents with.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceView {
    pub round: u8,
    pub sections: u64,
    pub total_sections: u64,
    pub electorate: Option<u64>,
    pub abstentions: Option<u64>,
    /// In file order: by alliance, then ballot number.
    pub candidates: Vec<CandidateView>,
    /// List votes by party number (councillors).
    pub lists: Vec<(u32, u64)>,
    pub votes: VoteTotals,
    pub finished: bool,
}

/// A candidate of a [`RaceView`].
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateView {
    pub number: u32,
    pub name: String,
    pub party: &'static str,
    pub votes: u64,
    /// `dvt`: `Válido`, `Anulado` or `Anulado sub judice`.
    pub destination: &'static str,
    pub elected: bool,
    /// `st`: `""` during the count.
    pub status: &'static str,
    /// Hundredths of a percent of the valid votes.
    pub pvap: u64,
    index: usize,
}

impl CandidateView {
    pub fn valid(&self) -> bool {
        self.destination == "Válido"
    }

    /// The status as the model names it.
    pub fn model_status(&self) -> Option<Status> {
        apura_formats::feed::tse::unified::status(self.status)
    }
}

/// The `v` block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VoteTotals {
    pub tv: u64,
    pub vvc: u64,
    pub vv: u64,
    pub vnom: u64,
    pub vl: u64,
    pub vb: u64,
    pub tvn: u64,
    pub van: u64,
    pub vansj: u64,
}

/// A final race, for tests: the city, the office and what its last file says.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalRace {
    pub ibge: u32,
    pub office: Office,
    pub view: RaceView,
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

    fn election_round(&self, election: &str) -> Option<u8> {
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

impl TseCity {
    fn draw(rng: &mut SimRng, city: &City, tse: String) -> Self {
        let mayor_parties: Vec<u32> = city.mayors.iter().map(|c| c.party.number).collect();
        let weakest = (0..city.mayors.len())
            .min_by_key(|&i| city.zones.iter().map(|z| z.votes[i]).sum::<u64>());
        let annul_one = city.mayors.len() >= 3 && rng.random_bool(ANNULLED_MAYOR_RATE);
        let mayors = city
            .mayors
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let coalition =
                    (city.mayors.len() >= 2 && rng.random_bool(COALITION_RATE)).then(|| {
                        let name = *COALITIONS.choose(rng).expect("names");
                        let mut parties = vec![c.party.abbr];
                        for _ in 0..rng.random_range(1..=3) {
                            let p = candidates::random_party(rng);
                            if !mayor_parties.contains(&p.number) && !parties.contains(&p.abbr) {
                                parties.push(p.abbr);
                            }
                        }
                        (name, parties)
                    });
                let vice_party = coalition
                    .as_ref()
                    .and_then(|(_, parties)| parties.get(1).copied())
                    .unwrap_or(c.party.abbr);
                Ticket {
                    annulled: annul_one && Some(i) == weakest,
                    coalition,
                    vice: candidates::ballot_name(rng),
                    vice_party,
                }
            })
            .collect();
        let council = &city.council;
        let council_annulled: Vec<&'static str> = council
            .candidates
            .iter()
            .map(|_| {
                if rng.random_bool(ANNULLED_COUNCILLOR_RATE) {
                    *["Anulado", "Anulado sub judice"].choose(rng).expect("two")
                } else {
                    ""
                }
            })
            .collect();
        // List votes go to the parties in proportion to their candidates' votes.
        let mut parties: Vec<u32> = council.candidates.iter().map(|c| c.party.number).collect();
        parties.sort_unstable();
        parties.dedup();
        let weights: Vec<f64> = parties
            .iter()
            .map(|p| {
                1.0 + council
                    .candidates
                    .iter()
                    .zip(&council.votes)
                    .filter(|(c, _)| c.party.number == *p)
                    .map(|(_, v)| *v as f64)
                    .sum::<f64>()
            })
            .collect();
        let list_total = (council.null as f64 * LIST_SHARE_OF_NULL).round() as u64;
        let lists = parties
            .into_iter()
            .zip(apportion(list_total, &weights))
            .collect();
        TseCity {
            tse,
            published_from: city.count_starts() / 2.0,
            mayors,
            council_annulled,
            lists,
            council_null: council.null - list_total,
        }
    }
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

/// The mayor race of `city` at `tau`, first round, or one zone of it.
fn mayor_view(city: &City, tse: &TseCity, tau: f64, round: u8) -> RaceView {
    let (total, _) = city.mayor_tally_by_zone(tau);
    let votes = total.votes.clone();
    majoritarian(
        city,
        tse,
        round,
        (total.sections, total.total_sections),
        Some(city.electorate),
        Some(total.abstentions),
        (0..city.mayors.len()).zip(votes).collect(),
        total.blank,
        total.null,
    )
}

/// A majoritarian race from candidate votes: statuses once every section is in (the leader of
/// the valid candidates elected, or the top two to a second round in a first round of a city
/// above 200,000 voters where the leader has at most half of the valid votes).
#[allow(clippy::too_many_arguments)]
fn majoritarian(
    city: &City,
    tse: &TseCity,
    round: u8,
    (sections, total_sections): (u64, u64),
    electorate: Option<u64>,
    abstentions: Option<u64>,
    votes: Vec<(usize, u64)>,
    blank: u64,
    null: u64,
) -> RaceView {
    let finished = sections == total_sections;
    let annulled = |i: usize| tse.mayors[i].annulled;
    let vv: u64 = votes
        .iter()
        .filter(|(i, _)| !annulled(*i))
        .map(|v| v.1)
        .sum();
    let vansj: u64 = votes
        .iter()
        .filter(|(i, _)| annulled(*i))
        .map(|v| v.1)
        .sum();
    let mut ranking: Vec<(usize, u64)> = votes
        .iter()
        .copied()
        .filter(|(i, _)| !annulled(*i))
        .collect();
    ranking.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(city.mayors[a.0].number.cmp(&city.mayors[b.0].number))
    });
    let runoff = round == 1
        && city.electorate > RUNOFF_ELECTORATE
        && ranking.len() > 1
        && ranking[0].1 * 2 <= vv;
    let candidates = votes
        .iter()
        .map(|&(i, v)| {
            let place = ranking.iter().position(|r| r.0 == i);
            let (elected, status) = match (finished, annulled(i), place) {
                (false, _, _) | (_, true, _) => (false, ""),
                (true, false, Some(0)) if !runoff => (true, "Eleito"),
                (true, false, Some(0 | 1)) if runoff => (false, "2º turno"),
                _ => (false, "Não eleito"),
            };
            let c = &city.mayors[i];
            CandidateView {
                number: c.number,
                name: c.name.clone(),
                party: c.party.abbr,
                votes: v,
                destination: if annulled(i) {
                    "Anulado sub judice"
                } else {
                    "Válido"
                },
                elected,
                status,
                pvap: if annulled(i) {
                    0
                } else {
                    hundredths_round(v, vv)
                },
                index: i,
            }
        })
        .collect();
    let tvn = null;
    RaceView {
        round,
        sections,
        total_sections,
        electorate,
        abstentions,
        candidates,
        lists: Vec::new(),
        votes: VoteTotals {
            tv: vv + vansj + blank + tvn,
            vvc: vv + vansj,
            vv,
            vnom: vv,
            vl: 0,
            vb: blank,
            tvn,
            van: 0,
            vansj,
        },
        finished,
    }
}

/// The councillor race of `city` at `tau`.
fn council_view(city: &City, tse: &TseCity, tau: f64) -> RaceView {
    let tally = city.council_tally(tau);
    let (s, ts) = (tally.sections, tally.total_sections);
    let council = &city.council;
    let finished = s == ts;
    let lists: Vec<(u32, u64)> = tse
        .lists
        .iter()
        .map(|&(p, v)| (p, partial(v, 0, s, ts)))
        .collect();
    let vl: u64 = lists.iter().map(|l| l.1).sum();
    let tvn = partial(tse.council_null, 0, s, ts);
    let (mut vnom, mut van, mut vansj) = (0, 0, 0);
    for (i, v) in tally.votes.iter().enumerate() {
        match tse.council_annulled[i] {
            "" => vnom += v,
            "Anulado" => van += v,
            _ => vansj += v,
        }
    }
    let vv = vnom + vl;
    let mut ranking: Vec<usize> = (0..council.candidates.len())
        .filter(|&i| tse.council_annulled[i].is_empty())
        .collect();
    ranking.sort_by(|&a, &b| {
        tally.votes[b].cmp(&tally.votes[a]).then(
            council.candidates[a]
                .number
                .cmp(&council.candidates[b].number),
        )
    });
    let elected: Vec<usize> = ranking.iter().take(council.seats).copied().collect();
    // The first seven tenths of the seats go by quotient, the rest by highest average.
    let by_quotient = council.seats * 7 / 10;
    let candidates = council
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let annulled = tse.council_annulled[i];
            let place = elected.iter().position(|&e| e == i);
            let party_elects = elected
                .iter()
                .any(|&e| council.candidates[e].party.number == c.party.number);
            let status = match (finished, annulled.is_empty(), place) {
                (false, _, _) | (_, false, _) => "",
                (true, true, Some(p)) if p < by_quotient => "Eleito por QP",
                (true, true, Some(_)) => "Eleito por média",
                (true, true, None) if party_elects => "Suplente",
                _ => "Não eleito",
            };
            CandidateView {
                number: c.number,
                name: c.name.clone(),
                party: c.party.abbr,
                votes: tally.votes[i],
                destination: if annulled.is_empty() {
                    "Válido"
                } else {
                    annulled
                },
                elected: finished && place.is_some(),
                status,
                pvap: if annulled.is_empty() {
                    hundredths_round(tally.votes[i], vv)
                } else {
                    0
                },
                index: i,
            }
        })
        .collect();
    RaceView {
        round: 1,
        sections: s,
        total_sections: ts,
        electorate: Some(city.electorate),
        abstentions: Some(tally.abstentions),
        candidates,
        lists,
        votes: VoteTotals {
            tv: vnom + vl + van + vansj + tally.blank + tvn,
            vvc: vv + van + vansj,
            vv,
            vnom,
            vl,
            vb: tally.blank,
            tvn,
            van,
            vansj,
        },
        finished,
    }
}

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
fn zone_number(city: &City, z: usize) -> String {
    format!("{:04}", city.zones[z].number)
}

impl Simulator {
    fn tse_layout(&self) -> &TseLayout {
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
    fn round_start(&self, round: u8) -> u64 {
        if round == 1 { 0 } else { self.last_tick + 1 }
    }

    /// The clock a file of `round` written at `tick` shows.
    fn tse_stamp(&self, round: u8, tick: u64) -> Stamp {
        let mut stamp = Stamp::at(self.tau(round, tick).unwrap_or(0.0));
        if round == 2 {
            stamp.date = ROUND2_DATE;
        }
        stamp
    }

    /// When `tick`'s files came out (not clamped to the first night).
    fn tse_modified(&self, tick: u64) -> SystemTime {
        let nanos = u128::from(tick) * self.interval.as_nanos();
        self.started_wall + Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }

    /// A city's files exist at `tick` (in `round`).
    fn published(&self, idx: usize, round: u8, tick: u64) -> bool {
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
    fn last_change(&self, idx: usize, key: RaceKey, round: u8, tick: u64) -> u64 {
        let from = first_tick(self.round_start(round), tick, |j| {
            self.published(idx, round, j)
        });
        let now = self.race_sections(idx, key, round, tick);
        first_tick(from, tick, |j| {
            self.race_sections(idx, key, round, j) == now
        })
    }

    /// The file's generation id for a rewrite at `tick`.
    fn idg(&self, tick: u64) -> String {
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

    /// The TSE code of a municipality of the simulated list (the layout's own when the list
    /// has none).
    pub fn tse_code(&self, ibge: u32) -> Option<&str> {
        self.tse_layout().code(ibge)
    }

    /// Cities going to a second round (0 unless the night plays it).
    pub fn tse_runoff_cities(&self) -> usize {
        self.tse_layout().runoff_cities()
    }

    /// The unified file of a city (TSE code `code`) for `cargo` (and zone `zone`) of `election`
    /// at `tick`: body, `idg` and when it was written; `None` where the authority would answer
    /// 404 (unknown, not published yet, no such office or zone).
    pub fn render_unified(
        &self,
        election: &str,
        code: &str,
        cargo: u32,
        zone: Option<&str>,
        tick: u64,
    ) -> Option<(Bytes, String, SystemTime)> {
        let layout = self.tse_layout();
        let round = layout.election_round(election)?;
        let idx = *layout.by_code.get(code)?;
        let city = &self.election.cities()[idx];
        let key = match (cargo, zone) {
            (11, None) => RaceKey::Mayor,
            (13, None) if round == 1 => RaceKey::Councillor,
            (11, Some(z)) => {
                RaceKey::Zone((0..city.zones.len()).find(|&i| zone_number(city, i) == z)?)
            }
            _ => return None,
        };
        let changed = self.last_change_checked(idx, key, round, tick)?;
        let view = self.tse_race(idx, key, round, changed)?;
        let stamp = self.tse_stamp(round, changed);
        let idg = self.idg(changed);
        let (scope, scope_code) = match key {
            RaceKey::Zone(z) => ("zona", zone_number(city, z)),
            _ => ("mu", layout.cities[idx].tse.clone()),
        };
        let body = write_unified(
            city,
            &layout.cities[idx],
            &view,
            election,
            cargo,
            city.council.seats,
            (scope, &scope_code),
            &stamp,
            &idg,
        );
        Some((body, idg, self.tse_modified(changed)))
    }

    fn last_change_checked(&self, idx: usize, key: RaceKey, round: u8, tick: u64) -> Option<u64> {
        self.published(idx, round, tick)
            .then(|| self.last_change(idx, key, round, tick))
    }

    /// The `idg` a unified file has at `tick` without writing it (for conditional requests).
    pub fn unified_idg(
        &self,
        election: &str,
        code: &str,
        cargo: u32,
        zone: Option<&str>,
        tick: u64,
    ) -> Option<String> {
        let layout = self.tse_layout();
        let round = layout.election_round(election)?;
        let idx = *layout.by_code.get(code)?;
        let city = &self.election.cities()[idx];
        let key = match (cargo, zone) {
            (11, None) => RaceKey::Mayor,
            (13, None) if round == 1 => RaceKey::Councillor,
            (11, Some(z)) => {
                RaceKey::Zone((0..city.zones.len()).find(|&i| zone_number(city, i) == z)?)
            }
            _ => return None,
        };
        Some(self.idg(self.last_change_checked(idx, key, round, tick)?))
    }

    /// The progress file of `uf` for `election` at `tick`: body, `idg`, when it was written.
    pub fn render_progress(
        &self,
        election: &str,
        uf: &str,
        tick: u64,
    ) -> Option<(Bytes, String, SystemTime)> {
        let layout = self.tse_layout();
        let round = layout.election_round(election)?;
        let cities = layout.states.get(uf)?;
        if round == 2 && tick < self.round_start(2) {
            return None;
        }
        let published: Vec<usize> = cities
            .iter()
            .copied()
            .filter(|&i| self.published(i, round, tick))
            .collect();
        let changed = published
            .iter()
            .map(|&i| self.last_change(i, RaceKey::Mayor, round, tick))
            .max()
            .unwrap_or(self.round_start(round));
        let stamp = self.tse_stamp(round, changed);
        let idg = self.idg(changed);
        let mut rows = String::with_capacity(published.len() * 400 + 800);
        let (mut st, mut ts, mut te, mut c, mut a, mut finished) = (0, 0, 0, 0, 0, 0);
        for &i in &published {
            let city = &self.election.cities()[i];
            let at = self.last_change(i, RaceKey::Mayor, round, tick);
            let view = self.tse_race(i, RaceKey::Mayor, round, at)?;
            let row_stamp = self.tse_stamp(round, at);
            st += view.sections;
            ts += view.total_sections;
            te += city.electorate;
            c += view.votes.tv;
            a += view.abstentions.unwrap_or(0);
            finished += usize::from(view.finished);
            write_row(
                &mut rows,
                "mun",
                &layout.cities[i].tse,
                &row_stamp,
                &view,
                city.electorate,
            );
            rows.push_str(", ");
        }
        let state = RaceView {
            round,
            sections: st,
            total_sections: ts,
            electorate: Some(te),
            abstentions: Some(a),
            candidates: Vec::new(),
            lists: Vec::new(),
            votes: VoteTotals {
                tv: c,
                ..VoteTotals::default()
            },
            finished: !published.is_empty() && finished == published.len(),
        };
        write_row(&mut rows, "uf", uf, &stamp, &state, te);
        let mut out = String::with_capacity(rows.len() + 200);
        out.push_str(&format!(
            r#"{{ "ele" : "{election}", "t" : "{round}", "f" : "s", "dg" : "{}", "hg" : "{}", "idg" : "{idg}", "abr" : [ "#,
            stamp.date, stamp.time
        ));
        out.push_str(&rows);
        out.push_str(" ] }");
        Some((Bytes::from(out), idg, self.tse_modified(changed)))
    }

    /// The municipality configuration (the same for both rounds): every municipality of the
    /// list, by state, with its zones.
    pub fn render_config(&self, election: &str) -> Option<Bytes> {
        let layout = self.tse_layout();
        layout.election_round(election)?;
        let voting: HashMap<u32, usize> = self
            .election
            .cities()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.municipality.ibge, i))
            .collect();
        let mut by_uf: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for m in self.list.iter() {
            by_uf.entry(m.uf.to_ascii_lowercase()).or_default().push(m);
        }
        let mut out = String::with_capacity(self.list.len() * 120);
        out.push_str(r#"{ "dg" : "20/09/2028", "hg" : "12:00:00", "idg" : ""#);
        out.push_str(&self.idg(0));
        out.push_str(r#"", "f" : "s", "abr" : [ "#);
        for (n, (uf, mut cities)) in by_uf.into_iter().enumerate() {
            cities.sort_by_key(|m| m.ibge);
            if n > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!(
                r#"{{ "cd" : "{uf}", "ds" : {}, "mu" : [ "#,
                json_string(&uf_name(&uf.to_ascii_uppercase()).to_uppercase())
            ));
            for (k, m) in cities.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                let zones: Vec<String> = voting
                    .get(&m.ibge)
                    .map(|&i| {
                        let city = &self.election.cities()[i];
                        (0..city.zones.len())
                            .map(|z| format!("\"{}\"", zone_number(city, z)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push_str(&format!(
                    r#"{{ "cd" : "{}", "cdi" : "{}", "nm" : {}, "c" : "{}", "z" : [ {} ] }}"#,
                    layout.codes[&m.ibge],
                    m.ibge,
                    json_string(&m.name.to_uppercase()),
                    if m.capital { "s" } else { "n" },
                    zones.join(", ")
                ));
            }
            out.push_str(" ] }");
        }
        out.push_str(" ] }");
        Some(Bytes::from(out))
    }

    /// The election catalogue: the night's election (and its second round, when played), with
    /// the mayor (11, majoritarian) and councillor (13, proportional) offices.
    pub fn render_catalogue(&self) -> Bytes {
        let layout = self.tse_layout();
        let round2 = if layout.second_round {
            ELECTION_ROUND2
        } else {
            ""
        };
        let mut elections = format!(
            r#"{{ "cd" : "{ELECTION}", "cdt2" : "{round2}", "sqele" : "1", "nm" : "Eleição Municipal Simulada - 2028 1º Turno", "t" : "1", "tp" : "2", "abr" : [ {{ "cd" : "br", "cp" : [ {{ "cd" : "11", "ds" : "Prefeito", "tp" : "1" }}, {{ "cd" : "13", "ds" : "Vereador", "tp" : "2" }} ] }} ] }}"#
        );
        if layout.second_round {
            elections.push_str(&format!(
                r#", {{ "cd" : "{ELECTION_ROUND2}", "cdt2" : "", "sqele" : "1", "nm" : "Eleição Municipal Simulada - 2028 2º Turno", "t" : "2", "tp" : "2", "abr" : [ {{ "cd" : "br", "cp" : [ {{ "cd" : "11", "ds" : "Prefeito", "tp" : "1" }} ] }} ] }}"#
            ));
        }
        Bytes::from(format!(
            r#"{{ "dg" : "20/09/2028", "hg" : "12:00:00", "f" : "s", "idg" : "{}", "arq" : [ {{ "tp" : "u", "dir" : "<base>/<ambiente>/<ciclo>/<cd_eleicao>/dados/<uf>" }} ], "pl" : [ {{ "cd" : "9000", "cdpr" : "9000", "c" : "{CYCLE}", "dt" : "01/10/2028", "dtlim" : "{ROUND2_DATE}", "e" : [ {elections} ] }} ] }}"#,
            self.idg(0)
        ))
    }
}

/// One progress row (`mun` or `uf`).
fn write_row(out: &mut String, scope: &str, code: &str, stamp: &Stamp, view: &RaceView, te: u64) {
    let tv = view.votes.tv;
    let a = view.abstentions.unwrap_or(0);
    let counted_electorate = tv + a;
    let dt = if view.sections > 0 || scope == "uf" {
        (stamp.date, stamp.time.as_str())
    } else {
        ("", "")
    };
    out.push_str(&format!(
        r#"{{ "and" : "{}", "tpabr" : "{scope}", "cdabr" : "{code}", "dt" : "{}", "ht" : "{}", "s" : {{ "ts" : "{}", "st" : "{}", "pst" : "{}", "snt" : "{}" }}, "e" : {{ "te" : "{te}", "est" : "{counted_electorate}", "c" : "{tv}", "pc" : "{}", "a" : "{a}", "pa" : "{}" }} }}"#,
        if view.finished { "f" } else { "p" },
        dt.0,
        dt.1,
        view.total_sections,
        view.sections,
        percent_text(hundredths_floor(view.sections, view.total_sections)),
        view.total_sections - view.sections,
        percent_text(hundredths_round(tv, counted_electorate)),
        percent_text(hundredths_round(a, counted_electorate)),
    ));
}

/// `"64,41"` from hundredths.
fn percent_text(hundredths: u64) -> String {
    format!("{},{:02}", hundredths / 100, hundredths % 100)
}

/// A unified result in the authority's `"k" : "v"` spacing.
#[allow(clippy::too_many_arguments)]
fn write_unified(
    city: &City,
    tse: &TseCity,
    view: &RaceView,
    election: &str,
    cargo: u32,
    seats: usize,
    (scope, scope_code): (&str, &str),
    stamp: &Stamp,
    idg: &str,
) -> Bytes {
    let mut out = String::with_capacity(2_000 + view.candidates.len() * 260);
    let yn = |b: bool| if b { "s" } else { "n" };
    let (dt, ht) = if view.sections > 0 {
        (stamp.date, stamp.time.as_str())
    } else {
        ("", "")
    };
    out.push_str(&format!(
        r#"{{ "ele" : "{election}", "t" : "{}", "f" : "s", "sup" : "n", "tpabr" : "{scope}", "cdabr" : "{scope_code}", "dg" : "{}", "hg" : "{}", "idg" : "{idg}", "dt" : "{dt}", "ht" : "{ht}", "dv" : "s", "tf" : "{}", "and" : "{}", "md" : "{}", "carg" : [ "#,
        view.round,
        stamp.date,
        stamp.time,
        yn(view.finished),
        if view.finished { "f" } else { "p" },
        yn(view.finished),
    ));
    let mayor = cargo == 11;
    let (name, nv) = if mayor {
        ("Prefeito", 1)
    } else {
        ("Vereador", seats)
    };
    out.push_str(&format!(
        r#"{{ "cd" : "{cargo}", "nmn" : "{name}", "nv" : "{nv}", "fed" : [ "#
    ));
    // Federations whose parties run here.
    let parties_here: Vec<u32> = view
        .candidates
        .iter()
        .map(|c| party_number(c.party))
        .collect();
    let feds: Vec<_> = FEDERATIONS
        .iter()
        .filter(|f| f.3.iter().any(|p| *p != 0 && parties_here.contains(p)))
        .collect();
    for (k, f) in feds.iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        let members: Vec<String> =
            f.3.iter()
                .filter(|p| **p != 0)
                .map(|p| format!("\"{p}\""))
                .collect();
        out.push_str(&format!(
            r#"{{ "n" : "{}", "sg" : "{}", "nm" : {}, "com" : "{}", "npar" : [ {} ] }}"#,
            f.0,
            f.1,
            json_string(f.2),
            f.1,
            members.join(", ")
        ));
    }
    out.push_str(" ], \"agr\" : [ ");
    // Alliances: each mayor candidate's own (coalition or lone party); councillor candidates by
    // party.
    let mut groups: Vec<(String, bool, String, u32, Vec<&CandidateView>)> = Vec::new();
    for c in &view.candidates {
        let party = party_number(c.party);
        let (alliance, coalition, com) = if mayor {
            match &tse.mayors[c.index].coalition {
                Some((name, parties)) => (name.to_string(), true, parties.join(" / ")),
                None => (party_name(c.party), false, c.party.to_string()),
            }
        } else {
            (party_name(c.party), false, c.party.to_string())
        };
        match groups.iter_mut().find(|g| g.3 == party && g.0 == alliance) {
            Some(g) => g.4.push(c),
            None => groups.push((alliance, coalition, com, party, vec![c])),
        }
    }
    groups.sort_by_key(|g| g.3);
    for (k, (alliance, coalition, com, party, cands)) in groups.iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        let abbr = cands[0].party;
        let nominal: u64 = cands.iter().filter(|c| c.valid()).map(|c| c.votes).sum();
        let list = view.lists.iter().find(|l| l.0 == *party).map(|l| l.1);
        let nfed = federation_of(*party).map_or(String::new(), |f| f.0.to_string());
        out.push_str(&format!(
            r#"{{ "n" : "{}{party:02}", "nm" : {}, "tp" : "{}", "com" : {}, "par" : [ {{ "n" : "{party}", "sg" : {}, "nm" : {}, "nfed" : "{nfed}", "#,
            if *coalition { "9" } else { "1" },
            json_string(alliance),
            if *coalition { "c" } else { "i" },
            json_string(com),
            json_string(abbr),
            json_string(&party_name(abbr)),
        ));
        if let Some(list) = list {
            out.push_str(&format!(
                r#""dvt" : "Válido (legenda)", "tvtn" : "{nominal}", "tvtl" : "{list}", "#
            ));
        } else {
            out.push_str(&format!(r#""tvtn" : "{nominal}", "#));
        }
        out.push_str("\"cand\" : [ ");
        for (j, c) in cands.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            let id = format!("{}{:05}", city.municipality.ibge, c.number);
            out.push_str(&format!(
                r#"{{ "n" : "{}", "sqcand" : "{id}", "nm" : {name}, "nmu" : {name}, "dvt" : "{}", "seq" : "{}", "e" : "{}", "st" : "{}", "vap" : "{}", "pvap" : "{}""#,
                c.number,
                c.destination,
                c.index + 1,
                yn(c.elected),
                c.status,
                c.votes,
                percent_text(c.pvap),
                name = json_string(&c.name),
            ));
            if mayor {
                let t = &tse.mayors[c.index];
                out.push_str(&format!(
                    r#", "vs" : [ {{ "tp" : "v", "sqcand" : "{id}1", "nm" : {v}, "nmu" : {v}, "sgp" : {} }} ]"#,
                    json_string(t.vice_party),
                    v = json_string(&t.vice),
                ));
            }
            out.push_str(" }");
        }
        out.push_str(" ] } ] }");
    }
    out.push_str(" ] } ], ");
    let s = view.sections;
    let ts = view.total_sections;
    out.push_str(&format!(
        r#""s" : {{ "ts" : "{ts}", "st" : "{s}", "pst" : "{}", "snt" : "{}" }}, "#,
        percent_text(hundredths_floor(s, ts)),
        ts - s
    ));
    let v = &view.votes;
    match (view.electorate, view.abstentions) {
        (Some(te), Some(a)) => out.push_str(&format!(
            r#""e" : {{ "te" : "{te}", "c" : "{}", "pc" : "{}", "a" : "{a}", "pa" : "{}" }}, "#,
            v.tv,
            percent_text(hundredths_round(v.tv, v.tv + a)),
            percent_text(hundredths_round(a, v.tv + a)),
        )),
        _ => out.push_str(&format!(
            r#""e" : {{ "te" : "", "c" : "{}", "a" : "" }}, "#,
            v.tv
        )),
    }
    out.push_str(&format!(
        r#""v" : {{ "tv" : "{}", "vvc" : "{}", "vv" : "{}", "pvv" : "{}", "vnom" : "{}", "#,
        v.tv,
        v.vvc,
        v.vv,
        percent_text(hundredths_round(v.vv, v.tv)),
        v.vnom
    ));
    if !mayor {
        out.push_str(&format!(r#""vl" : "{}", "#, v.vl));
    }
    out.push_str(&format!(
        r#""van" : "{}", "vansj" : "{}", "vb" : "{}", "pvb" : "{}", "tvn" : "{}", "vn" : "{}", "vnt" : "0" }} }}"#,
        v.van,
        v.vansj,
        v.vb,
        percent_text(hundredths_round(v.vb, v.tv)),
        v.tvn,
        v.tvn,
    ));
    Bytes::from(out)
}

fn party(abbr: &str) -> Option<&'static Party> {
    PARTIES.iter().find(|p| p.abbr == abbr)
}

fn party_number(abbr: &str) -> u32 {
    party(abbr).map_or(0, |p| p.number)
}

/// The party's name as the files write it (the simulator knows only abbreviations).
fn party_name(abbr: &str) -> String {
    format!("PARTIDO {}", abbr.to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Layout, SimConfig, TseOptions};
    use apura_formats::feed::tse::{config::MunicipalityConfig, progress, unified};

    fn sim() -> &'static Simulator {
        static SIM: std::sync::OnceLock<Simulator> = std::sync::OnceLock::new();
        SIM.get_or_init(|| {
            Simulator::new(SimConfig {
                layout: Layout::Tse,
                tse: TseOptions {
                    second_round: true,
                    ..TseOptions::default()
                },
                ..SimConfig::default()
            })
        })
    }

    fn code(sim: &Simulator, ibge: u32) -> String {
        sim.tse_code(ibge).unwrap().to_string()
    }

    #[test]
    fn every_file_parses_and_holds_its_identities() {
        let sim = sim();
        let mid = sim.last_tick() / 2;
        let config = sim.render_config(ELECTION).unwrap();
        let config = MunicipalityConfig::parse(&config, "cm").unwrap();
        let list = config.list("cm").unwrap();
        assert_eq!(list.len(), 5_570);
        assert_eq!(config.states.len(), 27);
        let sp = list.get(3550308).unwrap();
        assert_eq!(sp.name, "São Paulo");
        assert!(sp.capital);
        let mut checked = 0;
        for uf in ["sp", "rj", "ac", "df"] {
            let (body, idg, _) = sim.render_progress(ELECTION, uf, mid).unwrap();
            let p = progress::parse(&body, "ab").unwrap();
            assert_eq!(p.generation.as_deref(), Some(idg.as_str()));
            assert_eq!(p.state().unwrap().code, uf.to_uppercase());
            for row in p.municipalities() {
                for cargo in [11, 13] {
                    let (body, idg, _) = sim
                        .render_unified(ELECTION, &row.code, cargo, None, mid)
                        .unwrap();
                    let u = unified::parse_validated(&body, "u")
                        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&body)));
                    assert_eq!(u.generation.as_deref(), Some(idg.as_str()));
                    assert_eq!(u.progress.sections_counted, row.progress.sections_counted);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000, "{checked}");
        // Brasília has no municipal election: its state has a progress file with no city.
        let (body, _, _) = sim.render_progress(ELECTION, "df", mid).unwrap();
        assert_eq!(
            progress::parse(&body, "df")
                .unwrap()
                .municipalities()
                .count(),
            0
        );
    }

    #[test]
    fn sao_paulo_has_about_a_thousand_councillor_candidates_and_the_final_file_elects_the_seats() {
        let sim = sim();
        let sp = code(sim, 3550308);
        let (body, _, _) = sim
            .render_unified(ELECTION, &sp, 13, None, sim.last_tick())
            .unwrap();
        let u = unified::parse_validated(&body, "sp-13").unwrap();
        let race = u.race(3550308, Office::Councillor).unwrap();
        assert!((800..=1_200).contains(&race.candidates.len()));
        assert!(race.finished);
        let seats = u.office(13).unwrap().seats.unwrap() as usize;
        assert_eq!(race.candidates.iter().filter(|c| c.elected).count(), seats);
        assert!(
            race.candidates
                .iter()
                .any(|c| c.status == Some(Status::Substitute))
        );
        assert!(race.totals.valid > 0);
        eprintln!(
            "São Paulo councillor file: {} candidates, {} KB",
            race.candidates.len(),
            body.len() / 1024
        );
    }

    #[test]
    fn files_are_404_before_publication_and_rewritten_only_when_they_change() {
        let sim = sim();
        let late = sim
            .election
            .cities()
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.count_starts().total_cmp(&b.1.count_starts()))
            .unwrap();
        let code = sim.tse_layout().cities[late.0].tse.clone();
        assert!(sim.render_unified(ELECTION, &code, 11, None, 0).is_none());
        let published = (0..=sim.last_tick())
            .find(|&t| sim.render_unified(ELECTION, &code, 11, None, t).is_some())
            .unwrap();
        let (first, idg, _) = sim
            .render_unified(ELECTION, &code, 11, None, published)
            .unwrap();
        let u = unified::parse_validated(&first, "first").unwrap();
        assert_eq!(
            u.progress.sections_counted,
            Some(0),
            "zeros before the count"
        );
        assert!(!u.finished());
        // The next tick may or may not count anything; when it does not, the file is the same.
        let mut last_idg = idg;
        for t in published..=sim.last_tick() {
            let (body, idg, _) = sim.render_unified(ELECTION, &code, 11, None, t).unwrap();
            let u = unified::parse(&body, "t").unwrap();
            if idg == last_idg {
                assert_eq!(sim.unified_idg(ELECTION, &code, 11, None, t).unwrap(), idg);
            } else {
                assert!(u.progress.sections_counted > Some(0));
                last_idg = idg;
            }
        }
        assert!(
            sim.render_unified(ELECTION, &code, 13, Some("0001"), published)
                .is_none(),
            "no councillor zone files"
        );
        assert!(
            sim.render_unified("1", &code, 11, None, published)
                .is_none()
        );
    }

    #[test]
    fn zone_files_add_up_to_the_city() {
        let sim = sim();
        let sp = code(sim, 3550308);
        let mid = sim.last_tick() / 2;
        let config =
            MunicipalityConfig::parse(&sim.render_config(ELECTION).unwrap(), "cm").unwrap();
        let (_, city) = config.cities().find(|(_, c)| c.tse == sp).unwrap();
        assert!(city.zones.len() > 50);
        let (body, _, _) = sim.render_unified(ELECTION, &sp, 11, None, mid).unwrap();
        let total = unified::parse_validated(&body, "sp").unwrap();
        let mut tv = 0;
        for z in &city.zones {
            let (body, _, _) = sim.render_unified(ELECTION, &sp, 11, Some(z), mid).unwrap();
            let u = unified::parse_validated(&body, "zone").unwrap();
            assert_eq!(u.scope_code, *z);
            tv += u.votes.total.unwrap();
        }
        assert_eq!(Some(tv), total.votes.total);
    }

    #[test]
    fn the_night_has_coalitions_federations_annulled_candidates_and_second_rounds() {
        let sim = sim();
        let last = sim.last_tick();
        let (mut coalitions, mut feds, mut annulled, mut runoffs) = (0, 0, 0, 0);
        for (idx, _) in sim.election.cities().iter().enumerate() {
            let view = sim.tse_race(idx, RaceKey::Mayor, 1, last).unwrap();
            annulled += view.candidates.iter().filter(|c| !c.valid()).count();
            runoffs += usize::from(view.candidates.iter().any(|c| c.status == "2º turno"));
            coalitions += sim.tse_layout().cities[idx]
                .mayors
                .iter()
                .filter(|t| t.coalition.is_some())
                .count();
            feds += view
                .candidates
                .iter()
                .filter(|c| federation_of(party_number(c.party)).is_some())
                .count();
        }
        eprintln!(
            "{coalitions} coalitions, {feds} federation candidates, {annulled} annulled mayor candidates, {runoffs} second rounds"
        );
        assert!(coalitions > 1_000 && feds > 100 && annulled > 20);
        assert_eq!(runoffs, sim.tse_runoff_cities());
        assert!(runoffs >= 5);
        // Second rounds: 404 during the first night, then a two-candidate race that ends with
        // one elected.
        let (idx, _) = sim.tse_layout().runoffs.iter().next().unwrap();
        let code = sim.tse_layout().cities[*idx].tse.clone();
        assert!(
            sim.render_unified(ELECTION_ROUND2, &code, 11, None, last)
                .is_none()
        );
        assert!(sim.render_progress(ELECTION_ROUND2, "sp", last).is_none());
        let end = sim.final_tick();
        let (body, _, _) = sim
            .render_unified(ELECTION_ROUND2, &code, 11, None, end)
            .unwrap();
        let race = unified::parse_validated(&body, "r2")
            .unwrap()
            .race(1, Office::Mayor)
            .unwrap();
        assert_eq!(race.round, 2);
        assert_eq!(race.candidates.len(), 2);
        assert_eq!(race.candidates.iter().filter(|c| c.elected).count(), 1);
        assert!(
            sim.render_unified(ELECTION_ROUND2, &code, 13, None, end)
                .is_none()
        );
        let catalogue =
            apura_formats::feed::tse::catalogue::Catalogue::parse(&sim.render_catalogue(), "ele-c")
                .unwrap();
        assert_eq!(
            catalogue.election(ELECTION).unwrap().round2.as_deref(),
            Some(ELECTION_ROUND2)
        );
    }
}
