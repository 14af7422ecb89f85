//! One race as the files show it at a tick: the mayor race (first or second round, or one zone
//! of it) and the councillor race, with the statuses the authority writes once every section
//! is in.

use super::city::TseCity;
use crate::count::{City, RUNOFF_ELECTORATE};
use crate::files::hundredths_round;
use crate::shares::partial;
use apura_formats::model::{Office, Status};

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
    pub(super) index: usize,
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

/// The mayor race of `city` at `tau`, first round, or one zone of it.
pub(super) fn mayor_view(city: &City, tse: &TseCity, tau: f64, round: u8) -> RaceView {
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
pub(super) fn majoritarian(
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
pub(super) fn council_view(city: &City, tse: &TseCity, tau: f64) -> RaceView {
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

/// `"64,41"` from hundredths.
pub(super) fn percent_text(hundredths: u64) -> String {
    format!("{},{:02}", hundredths / 100, hundredths % 100)
}
