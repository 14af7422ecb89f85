//! The unified result (`-u.json`): one city (or one zone of it) for one office.
//!
//! ```text
//! {"ele", "t" round, "tpabr" scope, "cdabr" code, "dg"/"hg" generated, "idg" generation id,
//!  "dt"/"ht" last totalization, "tf" final totalization s/n, "and" p/f, "md",
//!  "carg": [{"cd" office, "nmn", "nv" seats,
//!            "fed": [{"n", "sg", "nm", "npar": [party numbers]}],
//!            "agr": [{"nm", "tp" i (lone party) | c (coalition), "com",
//!                     "par": [{"n", "sg", "nfed", "tvtn" nominal, "tvtl" list votes,
//!                              "cand": [{"n", "sqcand", "nm", "nmu", "seq", "dvt", "e", "st",
//!                                        "vap", "pvap", "vs": [{"tp", "nm", "nmu", "sgp"}]}]}]}]}],
//!  "s": {"ts", "st", "pst"}, "e": {"te", "c", "a"},
//!  "v": {"tv", "vvc", "vv", "vnom", "vl", "vb", "tvn", "vn", "vnt", "van", "vansj"}}
//! ```
//!
//! [`parse`] reads the shape and every value (numbers, percentages, flags, round); [`check`]
//! tests the identities that hold on real files; [`parse_validated`], what the ingest uses,
//! does both and rejects a file that fails either. A file of zeros, as published before the
//! count starts, passes both: it is progress 0, not finished.
//!
//! [`check`]: Unified::check
//!
//! - `read`: the file's JSON into [`Unified`] ([`parse`]);
//! - `check`: the identities ([`check`]);
//! - `race`: a [`Unified`] as the model's [`Race`](crate::model::Race);
//! - [`fixtures`]: sample files for tests.

mod check;
#[doc(hidden)]
pub mod fixtures;
mod race;
mod read;

pub use read::parse;

use super::{CountState, Electorate, Scope, fold};
use crate::feed::FeedError;
use crate::model::{Candidate, Progress, Status};

/// A parsed unified result.
#[derive(Debug, Clone, PartialEq)]
pub struct Unified {
    /// Election code as written (`ele`).
    pub election: String,
    /// 1 or 2 (`t`).
    pub round: u8,
    /// What the file covers (`tpabr`), when it says.
    pub scope: Option<Scope>,
    /// Code of the scope (`cdabr`): TSE municipality code, zone number, UF.
    pub scope_code: String,
    /// Generation id (`idg`): changes on every rewrite of the file.
    pub generation: Option<String>,
    /// When the file was written (`dg`/`hg`), ISO 8601 local time.
    pub generated_at: Option<String>,
    /// Last totalization (`dt`/`ht`), ISO 8601 local time.
    pub totalized_at: Option<String>,
    /// Final totalization (`tf`).
    pub final_totalization: Option<bool>,
    /// Count state (`and`).
    pub count: Option<CountState>,
    /// Mathematically decided (`md`).
    pub decided: Option<bool>,
    pub offices: Vec<OfficeResult>,
    /// Sections (`s`).
    pub progress: Progress,
    /// Electorate (`e`).
    pub electorate: Electorate,
    /// Votes (`v`).
    pub votes: Votes,
}

/// The vote totals of `v`, each absent when the file leaves it empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Votes {
    /// `tv`: votes cast.
    pub total: Option<u64>,
    /// `vvc`: valid plus annulled ("computed") votes.
    pub computed: Option<u64>,
    /// `vv`: valid votes.
    pub valid: Option<u64>,
    /// `vnom`: valid votes for candidates.
    pub nominal: Option<u64>,
    /// `vl`: valid votes for a party list (proportional offices).
    pub list: Option<u64>,
    /// `vb`: blank.
    pub blank: Option<u64>,
    /// `tvn`: null, all kinds (`vn` + `vnt`).
    pub null_total: Option<u64>,
    /// `vn`: null.
    pub null: Option<u64>,
    /// `vnt`: null for technical reasons.
    pub null_technical: Option<u64>,
    /// `van`: votes of annulled candidates.
    pub annulled: Option<u64>,
    /// `vansj`: votes of candidates annulled sub judice.
    pub annulled_sub_judice: Option<u64>,
}

/// One office (`carg`) of a unified result.
#[derive(Debug, Clone, PartialEq)]
pub struct OfficeResult {
    /// TSE cargo code (11 mayor, 13 councillor, 1 president, …).
    pub code: u32,
    pub name: String,
    /// Seats (`nv`).
    pub seats: Option<u32>,
    pub federations: Vec<Federation>,
    pub parties: Vec<PartyResult>,
    /// In file order.
    pub candidates: Vec<UnifiedCandidate>,
}

/// A party federation (`fed`): parties that run as one for four years.
#[derive(Debug, Clone, PartialEq)]
pub struct Federation {
    pub number: String,
    pub abbreviation: String,
    pub name: String,
    /// Numbers of its parties.
    pub parties: Vec<u32>,
}

/// One party of an office (`par`) with its vote figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PartyResult {
    pub number: u32,
    pub abbreviation: String,
    /// Name of the alliance (`agr.nm`) it runs in.
    pub alliance: String,
    /// The alliance is a coalition (`tp` `c`) rather than the party alone.
    pub coalition: bool,
    /// Federation number (`nfed`), when the party belongs to one.
    pub federation: Option<String>,
    /// `tvtn`: nominal votes of its candidates.
    pub nominal: Option<u64>,
    /// `tvtl`: votes for the party list (legenda).
    pub list: Option<u64>,
}

/// A candidate with what the model keeps and the rest the file says.
#[derive(Debug, Clone, PartialEq)]
pub struct UnifiedCandidate {
    pub candidate: Candidate,
    /// Stable id (`sqcand`).
    pub id: String,
    /// Civil name (`nm`); the model's name is the ballot name (`nmu`).
    pub civil_name: String,
    /// Official order (`seq`).
    pub seq: Option<u32>,
    /// Vote destination as written (`dvt`): `Válido`, `Anulado`, `Anulado sub judice`.
    pub destination: String,
    /// Name of the party's federation, when it is in one.
    pub federation: Option<String>,
    /// Vice or alternates (`vs`).
    pub running_mates: Vec<RunningMate>,
}

/// A vice (`tp` `v`) or alternate (`s`) on a candidate's ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningMate {
    /// `tp` folded to lower case: `v` vice, `s`/`1`/`2` alternates.
    pub kind: String,
    /// Ballot name (`nmu`), or the civil name when there is none.
    pub name: String,
    pub party: String,
}

/// The status text of a candidate as the model's status; `""` (count running) and texts this
/// version does not know are `None`, so that an unforeseen status shows nothing rather than
/// rejecting the city.
pub fn status(st: &str) -> Option<Status> {
    match fold(st).as_str() {
        "eleito" | "eleita" | "eleito-por-qp" | "eleita-por-qp" | "eleito-por-media"
        | "eleita-por-media" => Some(Status::Elected),
        "2-turno" | "2o-turno" | "segundo-turno" => Some(Status::SecondRound),
        "suplente" => Some(Status::Substitute),
        "nao-eleito" | "nao-eleita" => Some(Status::NotElected),
        _ => None,
    }
}

/// Whether a vote destination counts as valid: only `Válido` does (any case or accent); `""`
/// (not said) is taken as valid, `Anulado` and `Anulado sub judice` are not.
pub fn counts_as_valid(dvt: &str) -> bool {
    matches!(fold(dvt).as_str(), "" | "valido" | "valida")
}

/// Parse one unified result and check its identities: what the ingest accepts.
pub fn parse_validated(bytes: &[u8], file: &str) -> Result<Unified, FeedError> {
    let unified = parse(bytes, file)?;
    let problems = unified.check();
    if problems.is_empty() {
        Ok(unified)
    } else {
        Err(FeedError::invalid(
            file,
            format!("{} {}", unified.scope_label(), unified.scope_code).trim(),
            problems.join("; "),
        ))
    }
}

impl Unified {
    /// The count of this file is over: `and` says finished; without `and`, a final
    /// totalization (`tf`) does.
    pub fn finished(&self) -> bool {
        match self.count {
            Some(state) => state == CountState::Finished,
            None => self.final_totalization == Some(true),
        }
    }

    /// The office with TSE cargo `code`.
    pub fn office(&self, code: u32) -> Option<&OfficeResult> {
        self.offices.iter().find(|o| o.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::model::{Office, Race};

    fn mayor() -> Race {
        parse_validated(MAYOR.as_bytes(), "mayor.json")
            .unwrap()
            .race(3500001, Office::Mayor)
            .unwrap()
    }

    #[test]
    fn a_mayor_file_flattens_coalitions_parties_and_candidates() {
        let u = parse_validated(MAYOR.as_bytes(), "mayor.json").unwrap();
        assert_eq!(u.election, "9426");
        assert_eq!(u.scope, Some(Scope::Municipality));
        assert_eq!(u.scope_code, "99001");
        assert_eq!(u.generation.as_deref(), Some("700001"));
        assert_eq!(u.generated_at.as_deref(), Some("2028-10-01T21:00:05"));
        assert_eq!(u.decided, Some(true));
        let race = mayor();
        assert_eq!(race.round, 1);
        assert_eq!(race.office, Office::Mayor);
        assert_eq!(race.source_time.as_deref(), Some("2028-10-01T20:59:58"));
        assert!(race.finished);
        assert_eq!(race.progress.sections_counted, Some(40));
        assert_eq!(race.progress.sections_total, Some(40));
        assert_eq!(race.progress.percent, 100.0);
        let t = &race.totals;
        assert_eq!(
            (
                t.electorate,
                t.turnout,
                t.abstentions,
                t.blank,
                t.null,
                t.valid
            ),
            (Some(13_000), 11_000, 2_000, 400, 300, 10_000)
        );
        let names: Vec<&str> = race.candidates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ANA PRIMEIRA", "CARLOS SEGUNDO", "DORA", "EDU"]);
        let ana = &race.candidates[0];
        assert_eq!(ana.number, Some(45));
        assert_eq!(ana.party, "PXA");
        assert_eq!(ana.coalition.as_deref(), Some("UNIDOS PELA VILA"));
        assert_eq!((ana.votes, ana.percent), (5_200, 52.0));
        assert!(ana.elected && ana.valid);
        assert_eq!(ana.status, Some(Status::Elected));
        let carlos = &race.candidates[1];
        assert_eq!(carlos.coalition, None, "a lone party is no coalition");
        assert_eq!(carlos.status, Some(Status::NotElected));
        assert!(!carlos.elected);
        // No published percentage: computed from the valid votes.
        assert_eq!(race.candidates[2].percent, 5.0);
    }

    #[test]
    fn annulled_candidates_are_shown_but_not_counted_as_valid() {
        let race = mayor();
        let edu = race.candidates.last().unwrap();
        assert_eq!(edu.name, "EDU");
        assert!(!edu.valid);
        assert_eq!(edu.votes, 300);
        assert_eq!(edu.status, None);
        let valid = race.valid_candidate_votes();
        assert_eq!(valid, race.totals.valid);
        // Shown last although it has more votes than DORA.
        assert!(edu.votes < race.candidates[2].votes * 2);
    }

    #[test]
    fn federations_and_vices_are_read() {
        let u = parse(MAYOR.as_bytes(), "mayor.json").unwrap();
        let office = u.office(11).unwrap();
        assert_eq!(office.seats, Some(1));
        assert_eq!(office.federations.len(), 1);
        assert_eq!(office.federations[0].parties, vec![13, 43]);
        let carlos = office
            .candidates
            .iter()
            .find(|c| c.candidate.number == Some(13))
            .unwrap();
        assert_eq!(carlos.federation.as_deref(), Some("FEDERAÇÃO EXEMPLO"));
        assert_eq!(
            carlos.running_mates[0].name, "DIANA VICE",
            "civil name when no ballot name"
        );
        let ana = &office.candidates[0];
        assert_eq!(ana.id, "9001");
        assert_eq!(ana.civil_name, "ANA PRIMEIRA DA SILVA");
        assert_eq!(ana.seq, Some(2));
        assert_eq!(ana.federation, None);
        assert_eq!(ana.running_mates.len(), 1);
        assert_eq!(ana.running_mates[0].kind, "v");
        assert_eq!(ana.running_mates[0].name, "BETO VICE");
        assert_eq!(ana.running_mates[0].party, "PXB");
        let pxa = office.parties.iter().find(|p| p.number == 45).unwrap();
        assert!(pxa.coalition);
        assert_eq!(pxa.alliance, "UNIDOS PELA VILA");
        assert_eq!(pxa.nominal, Some(5_200));
        let edu = office.candidates.last().unwrap();
        assert_eq!(edu.destination, "Anulado sub judice");
    }

    #[test]
    fn a_councillor_file_maps_every_status_and_list_votes() {
        let u = parse_validated(COUNCIL.as_bytes(), "council.json").unwrap();
        assert!(u.check().is_empty(), "{:?}", u.check());
        let race = u.race(3500001, Office::Councillor).unwrap();
        assert!(u.race(3500001, Office::Mayor).is_none());
        assert_eq!(race.totals.valid, 2_450, "nominal and list votes are valid");
        let by_number = |n: u32| {
            race.candidates
                .iter()
                .find(|c| c.number == Some(n))
                .unwrap()
        };
        assert_eq!(by_number(45001).status, Some(Status::Elected));
        assert_eq!(by_number(45002).status, Some(Status::Elected));
        assert_eq!(by_number(45003).status, Some(Status::Substitute));
        assert_eq!(by_number(13002).status, Some(Status::NotElected));
        assert!(by_number(45002).elected && !by_number(45003).elected);
        let foxtrot = by_number(13003);
        assert!(!foxtrot.valid);
        assert_eq!(foxtrot.percent, 0.0);
        assert_eq!(race.candidates.last().unwrap().number, Some(13003));
        let office = u.office(13).unwrap();
        assert_eq!(office.seats, Some(9));
        let lists: u64 = office.parties.iter().filter_map(|p| p.list).sum();
        assert_eq!(lists, 250);
        assert_eq!(
            office.candidates[3].federation.as_deref(),
            Some("FEDERAÇÃO EXEMPLO")
        );
    }

    #[test]
    fn a_file_of_zeros_before_the_count_is_valid_and_not_finished() {
        let u = parse_validated(ZEROS.as_bytes(), "zeros.json").unwrap();
        assert_eq!(u.scope, Some(Scope::Municipality), "MU");
        assert_eq!(u.count, Some(CountState::Partial), "P");
        assert_eq!(u.final_totalization, Some(false), "N");
        assert_eq!(u.totalized_at, None, "not totalized yet");
        let race = u.race(3500001, Office::Mayor).unwrap();
        assert!(!race.finished);
        assert_eq!(race.progress.percent, 0.0);
        assert_eq!(race.progress.sections_counted, Some(0));
        assert_eq!(race.source_time.as_deref(), Some("2028-10-01T16:00:00"));
        assert_eq!(race.totals.valid, 0);
        assert!(
            race.candidates
                .iter()
                .all(|c| c.valid && c.votes == 0 && !c.elected && c.status.is_none())
        );
        // No votes yet: ballot-number order.
        assert_eq!(race.candidates[0].number, Some(13));
        assert_eq!(
            race.candidates[1].coalition.as_deref(),
            Some("UNIDOS PELA VILA"),
            "tp C"
        );
    }

    #[test]
    fn upper_and_lower_case_variants_read_the_same() {
        let upper = MAYOR
            .replace(r#""tpabr" : "mu""#, r#""tpabr" : "MUN""#)
            .replace(r#""and" : "f""#, r#""and" : "F""#)
            .replace(r#""e" : "s""#, r#""e" : "S""#)
            .replace(r#""tp" : "c""#, r#""tp" : "C""#)
            .replace("Válido", "VÁLIDO")
            .replace("Não eleito", "NÃO ELEITO")
            .replace(r#""st" : "Eleito""#, r#""st" : "ELEITO""#);
        assert_ne!(upper, MAYOR);
        let race = parse_validated(upper.as_bytes(), "upper.json")
            .unwrap()
            .race(3500001, Office::Mayor)
            .unwrap();
        assert_eq!(race, mayor());
    }

    #[test]
    fn second_round_statuses_and_round_two() {
        assert_eq!(status("2º turno"), Some(Status::SecondRound));
        assert_eq!(status("2° TURNO"), Some(Status::SecondRound));
        assert_eq!(status("Eleito por QP"), Some(Status::Elected));
        assert_eq!(status("ELEITO POR MÉDIA"), Some(Status::Elected));
        assert_eq!(status("Suplente"), Some(Status::Substitute));
        assert_eq!(status("nao eleito"), Some(Status::NotElected));
        assert_eq!(status(""), None);
        assert_eq!(status("Renúncia"), None, "unknown texts show nothing");
        let two = MAYOR.replace(r#""t" : "1""#, r#""t" : "2""#);
        let race = parse_validated(two.as_bytes(), "r2.json")
            .unwrap()
            .race(1, Office::Mayor)
            .unwrap();
        assert_eq!(race.round, 2);
        let bad = MAYOR.replace(r#""t" : "1""#, r#""t" : "3""#);
        assert!(parse(bad.as_bytes(), "r3.json").is_err());
    }

    #[test]
    fn bad_numbers_are_rejected() {
        for (from, to, says) in [
            (r#""vap" : "500""#, r#""vap" : "-500""#, "negative"),
            (
                r#""vap" : "500""#,
                r#""vap" : "99999999999999999999999""#,
                "overflows",
            ),
            (r#""pvap" : "52,00""#, r#""pvap" : "152,00""#, "percentage"),
            (r#""st" : "40""#, r#""st" : "41""#, "41 sections"),
            (r#""e" : "s""#, r#""e" : "x""#, "neither s nor n"),
            (r#""n" : "77""#, r#""n" : "7x""#, "not a number"),
        ] {
            let bad = MAYOR.replace(from, to);
            assert_ne!(bad, MAYOR, "{from}");
            let err = parse(bad.as_bytes(), "mayor.json").unwrap_err();
            assert!(err.to_string().contains(says), "{from}: {err}");
        }
        let cut = &MAYOR[..MAYOR.len() / 2];
        assert_eq!(parse(cut.as_bytes(), "m").unwrap_err().kind(), "malformed");
        let wrong = MAYOR.replace(r#""vap" : "500""#, r#""vap" : 500"#);
        assert_eq!(
            parse(wrong.as_bytes(), "m").unwrap_err().kind(),
            "malformed"
        );
    }
}
