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

use std::borrow::Cow;

use serde::Deserialize;

use super::{
    CountState, Electorate, RawElectorate, RawSections, Scope, flag, fold, opt_count, opt_percent,
    round,
};
use crate::feed::FeedError;
use crate::feed::consolidated::iso_local;
use crate::feed::number::percent;
use crate::model::{Candidate, Office, Progress, Race, Status, Totals};

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(default, borrow)]
    ele: Cow<'a, str>,
    #[serde(default, borrow)]
    t: Cow<'a, str>,
    #[serde(default, borrow)]
    tpabr: Cow<'a, str>,
    #[serde(default, borrow)]
    cdabr: Cow<'a, str>,
    #[serde(default, borrow)]
    dg: Cow<'a, str>,
    #[serde(default, borrow)]
    hg: Cow<'a, str>,
    #[serde(default, borrow)]
    idg: Cow<'a, str>,
    #[serde(default, borrow)]
    dt: Cow<'a, str>,
    #[serde(default, borrow)]
    ht: Cow<'a, str>,
    #[serde(default, borrow)]
    tf: Cow<'a, str>,
    #[serde(default, borrow)]
    and: Cow<'a, str>,
    #[serde(default, borrow)]
    md: Cow<'a, str>,
    #[serde(default, borrow)]
    carg: Vec<RawOffice<'a>>,
    #[serde(default, borrow)]
    s: RawSections<'a>,
    #[serde(default, borrow)]
    e: RawElectorate<'a>,
    #[serde(default, borrow)]
    v: RawVotes<'a>,
}

#[derive(Deserialize)]
struct RawOffice<'a> {
    #[serde(borrow)]
    cd: Cow<'a, str>,
    #[serde(default, borrow)]
    nmn: Cow<'a, str>,
    #[serde(default, borrow)]
    nv: Cow<'a, str>,
    #[serde(default, borrow)]
    fed: Vec<RawFederation<'a>>,
    #[serde(default, borrow)]
    agr: Vec<RawAlliance<'a>>,
}

#[derive(Deserialize)]
struct RawFederation<'a> {
    #[serde(borrow)]
    n: Cow<'a, str>,
    #[serde(default, borrow)]
    sg: Cow<'a, str>,
    #[serde(default, borrow)]
    nm: Cow<'a, str>,
    #[serde(default, borrow)]
    npar: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawAlliance<'a> {
    #[serde(default, borrow)]
    nm: Cow<'a, str>,
    #[serde(default, borrow)]
    tp: Cow<'a, str>,
    #[serde(default, borrow)]
    par: Vec<RawParty<'a>>,
}

#[derive(Deserialize)]
struct RawParty<'a> {
    #[serde(borrow)]
    n: Cow<'a, str>,
    #[serde(default, borrow)]
    sg: Cow<'a, str>,
    #[serde(default, borrow)]
    nfed: Cow<'a, str>,
    #[serde(default, borrow)]
    tvtn: Cow<'a, str>,
    #[serde(default, borrow)]
    tvtl: Cow<'a, str>,
    #[serde(default, borrow)]
    cand: Vec<RawCandidate<'a>>,
}

#[derive(Deserialize)]
struct RawCandidate<'a> {
    #[serde(borrow)]
    n: Cow<'a, str>,
    #[serde(default, borrow)]
    sqcand: Cow<'a, str>,
    #[serde(default, borrow)]
    nm: Cow<'a, str>,
    #[serde(default, borrow)]
    nmu: Cow<'a, str>,
    #[serde(default, borrow)]
    seq: Cow<'a, str>,
    #[serde(default, borrow)]
    dvt: Cow<'a, str>,
    #[serde(default, borrow)]
    e: Cow<'a, str>,
    #[serde(default, borrow)]
    st: Cow<'a, str>,
    #[serde(default, borrow)]
    vap: Cow<'a, str>,
    #[serde(default, borrow)]
    pvap: Cow<'a, str>,
    #[serde(default, borrow)]
    vs: Vec<RawMate<'a>>,
}

#[derive(Deserialize)]
struct RawMate<'a> {
    #[serde(default, borrow)]
    tp: Cow<'a, str>,
    #[serde(default, borrow)]
    nm: Cow<'a, str>,
    #[serde(default, borrow)]
    nmu: Cow<'a, str>,
    #[serde(default, borrow)]
    sgp: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct RawVotes<'a> {
    #[serde(default, borrow)]
    tv: Cow<'a, str>,
    #[serde(default, borrow)]
    vvc: Cow<'a, str>,
    #[serde(default, borrow)]
    vv: Cow<'a, str>,
    #[serde(default, borrow)]
    vnom: Cow<'a, str>,
    #[serde(default, borrow)]
    vl: Cow<'a, str>,
    #[serde(default, borrow)]
    vb: Cow<'a, str>,
    #[serde(default, borrow)]
    tvn: Cow<'a, str>,
    #[serde(default, borrow)]
    vn: Cow<'a, str>,
    #[serde(default, borrow)]
    vnt: Cow<'a, str>,
    #[serde(default, borrow)]
    van: Cow<'a, str>,
    #[serde(default, borrow)]
    vansj: Cow<'a, str>,
}

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

/// Parse one unified result: shape and values, without the identities.
pub fn parse(bytes: &[u8], file: &str) -> Result<Unified, FeedError> {
    let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| FeedError::malformed(file, e))?;
    let at = format!("{} {}", raw.tpabr, raw.cdabr);
    convert(raw).map_err(|d| FeedError::invalid(file, at.trim(), d))
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

fn convert(raw: RawFile) -> Result<Unified, String> {
    let round = round(&raw.t)?;
    let scope = if raw.tpabr.trim().is_empty() {
        None
    } else {
        Some(Scope::parse(&raw.tpabr)?)
    };
    let progress = raw.s.progress("s")?;
    let electorate = raw.e.parse("e")?;
    let votes = raw.v.parse()?;
    let offices = raw
        .carg
        .iter()
        .map(office)
        .collect::<Result<Vec<_>, String>>()?;
    let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    Ok(Unified {
        election: raw.ele.trim().to_string(),
        round,
        scope,
        scope_code: raw.cdabr.trim().to_string(),
        generation: nonempty(&raw.idg),
        generated_at: iso_local(Some(&raw.dg), Some(&raw.hg)),
        totalized_at: iso_local(Some(&raw.dt), Some(&raw.ht)),
        final_totalization: flag(&raw.tf).map_err(|e| format!("tf: {e}"))?,
        count: CountState::parse(&raw.and).map_err(|e| format!("and: {e}"))?,
        decided: flag(&raw.md).map_err(|e| format!("md: {e}"))?,
        offices,
        progress,
        electorate,
        votes,
    })
}

impl RawVotes<'_> {
    fn parse(&self) -> Result<Votes, String> {
        let c = |s: &str, f: &str| opt_count(s, &format!("v.{f}"));
        Ok(Votes {
            total: c(&self.tv, "tv")?,
            computed: c(&self.vvc, "vvc")?,
            valid: c(&self.vv, "vv")?,
            nominal: c(&self.vnom, "vnom")?,
            list: c(&self.vl, "vl")?,
            blank: c(&self.vb, "vb")?,
            null_total: c(&self.tvn, "tvn")?,
            null: c(&self.vn, "vn")?,
            null_technical: c(&self.vnt, "vnt")?,
            annulled: c(&self.van, "van")?,
            annulled_sub_judice: c(&self.vansj, "vansj")?,
        })
    }
}

fn number(s: &str, field: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("{field}: {s:?} is not a number"))
}

fn office(raw: &RawOffice) -> Result<OfficeResult, String> {
    let code = number(&raw.cd, "carg.cd")?;
    let at = format!("carg {code}");
    let seats = match raw.nv.trim() {
        "" => None,
        nv => Some(number(nv, &format!("{at}.nv"))?),
    };
    let mut federations = Vec::with_capacity(raw.fed.len());
    for f in &raw.fed {
        let parties = f
            .npar
            .iter()
            .map(|n| number(n, &format!("{at}.fed {}.npar", f.n)))
            .collect::<Result<Vec<_>, _>>()?;
        federations.push(Federation {
            number: f.n.trim().to_string(),
            abbreviation: f.sg.trim().to_string(),
            name: f.nm.trim().to_string(),
            parties,
        });
    }
    let mut parties = Vec::new();
    let mut candidates = Vec::new();
    for alliance in &raw.agr {
        let coalition = fold(&alliance.tp) == "c";
        for p in &alliance.par {
            let number_ = number(&p.n, &format!("{at}.par.n"))?;
            let pat = format!("{at}.par {number_}");
            let federation_no = (!p.nfed.trim().is_empty()).then(|| p.nfed.trim().to_string());
            let federation_name = federation_no.as_ref().and_then(|n| {
                federations
                    .iter()
                    .find(|f| &f.number == n)
                    .map(|f| f.name.clone())
            });
            parties.push(PartyResult {
                number: number_,
                abbreviation: p.sg.trim().to_string(),
                alliance: alliance.nm.trim().to_string(),
                coalition,
                federation: federation_no,
                nominal: opt_count(&p.tvtn, &format!("{pat}.tvtn"))?,
                list: opt_count(&p.tvtl, &format!("{pat}.tvtl"))?,
            });
            for c in &p.cand {
                candidates.push(candidate(
                    c,
                    &p.sg,
                    coalition.then(|| alliance.nm.trim()),
                    federation_name.clone(),
                    &pat,
                )?);
            }
        }
    }
    // `com` (composition) repeats what `par` and `fed` say: not read.
    Ok(OfficeResult {
        code,
        name: raw.nmn.trim().to_string(),
        seats,
        federations,
        parties,
        candidates,
    })
}

fn candidate(
    c: &RawCandidate,
    party: &str,
    coalition: Option<&str>,
    federation: Option<String>,
    at: &str,
) -> Result<UnifiedCandidate, String> {
    let number = number(&c.n, &format!("{at}.cand.n"))?;
    let at = format!("{at}.cand {number}");
    let votes = opt_count(&c.vap, &format!("{at}.vap"))?.unwrap_or(0);
    let pct = opt_percent(&c.pvap, &format!("{at}.pvap"))?;
    let elected = flag(&c.e)
        .map_err(|e| format!("{at}.e: {e}"))?
        .unwrap_or(false);
    let seq = match c.seq.trim() {
        "" => None,
        s => Some(self::number(s, &format!("{at}.seq"))?),
    };
    let name = if c.nmu.trim().is_empty() {
        c.nm.trim()
    } else {
        c.nmu.trim()
    };
    let running_mates =
        c.vs.iter()
            .map(|m| RunningMate {
                kind: fold(&m.tp),
                name: if m.nmu.trim().is_empty() {
                    m.nm.trim().to_string()
                } else {
                    m.nmu.trim().to_string()
                },
                party: m.sgp.trim().to_string(),
            })
            .collect();
    Ok(UnifiedCandidate {
        candidate: Candidate {
            number: Some(number),
            name: name.to_string(),
            party: party.trim().to_string(),
            coalition: coalition.filter(|c| !c.is_empty()).map(str::to_string),
            votes,
            // NaN: not published; filled in from the valid total once it is known.
            percent: pct.unwrap_or(f64::NAN),
            elected,
            status: status(&c.st),
            valid: counts_as_valid(&c.dvt),
            color: None,
            photo: None,
        },
        id: c.sqcand.trim().to_string(),
        civil_name: c.nm.trim().to_string(),
        seq,
        destination: c.dvt.trim().to_string(),
        federation,
        running_mates,
    })
}

/// `a == b + c + …` over values that must all be present to be compared.
fn identity(name: &str, lhs: Option<u64>, rhs: &[Option<u64>], out: &mut Vec<String>) {
    let Some(lhs) = lhs else { return };
    let mut sum: u128 = 0;
    for v in rhs {
        match v {
            Some(v) => sum += u128::from(*v),
            None => return,
        }
    }
    if u128::from(lhs) != sum {
        out.push(format!("{name}: {lhs} ≠ {sum}"));
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

    fn scope_label(&self) -> &'static str {
        match self.scope {
            Some(Scope::Country) => "br",
            Some(Scope::State) => "uf",
            Some(Scope::Municipality) => "mu",
            Some(Scope::Zone) => "zona",
            None => "",
        }
    }

    /// The office with TSE cargo `code`.
    pub fn office(&self, code: u32) -> Option<&OfficeResult> {
        self.offices.iter().find(|o| o.code == code)
    }

    /// Every identity of `tse-format.md` that fails, in words; empty when the file is
    /// consistent. Each is tested only where the file has every figure it needs:
    ///
    /// - `tv = vvc + vb + tvn` (votes cast are computed, blank and null);
    /// - `tvn = vn + vnt`, `vvc = vv + van + vansj`, `vv = vnom + vl`;
    /// - the valid candidates' `vap` add up to `vnom` (to `vv` where there is no `vnom`:
    ///   majoritarian offices have no list votes, so the two are equal);
    /// - the parties' list votes (`tvtl`) add up to `vl`.
    ///
    /// The candidate sums need the file to hold one office, as a city's file does.
    pub fn check(&self) -> Vec<String> {
        let v = &self.votes;
        let mut out = Vec::new();
        identity(
            "tv = vvc + vb + tvn",
            v.total,
            &[v.computed, v.blank, v.null_total],
            &mut out,
        );
        identity(
            "tvn = vn + vnt",
            v.null_total,
            &[v.null, v.null_technical],
            &mut out,
        );
        if v.annulled.is_some() || v.annulled_sub_judice.is_some() {
            identity(
                "vvc = vv + van + vansj",
                v.computed,
                &[
                    v.valid,
                    Some(v.annulled.unwrap_or(0)),
                    Some(v.annulled_sub_judice.unwrap_or(0)),
                ],
                &mut out,
            );
        }
        if v.nominal.is_some() {
            identity(
                "vv = vnom + vl",
                v.valid,
                &[v.nominal, Some(v.list.unwrap_or(0))],
                &mut out,
            );
        }
        if let [office] = self.offices.as_slice() {
            let nominal: u128 = office
                .candidates
                .iter()
                .filter(|c| c.candidate.valid)
                .map(|c| u128::from(c.candidate.votes))
                .sum();
            let (name, target) = match v.nominal {
                Some(n) => ("vnom", Some(n)),
                None => ("vv", v.valid),
            };
            if let Some(target) = target
                && nominal != u128::from(target)
            {
                out.push(format!(
                    "the valid candidates' votes add up to {nominal}, {name} is {target}"
                ));
            }
            if let Some(vl) = v.list
                && office.parties.iter().any(|p| p.list.is_some())
            {
                let lists: u128 = office
                    .parties
                    .iter()
                    .map(|p| u128::from(p.list.unwrap_or(0)))
                    .sum();
                if lists != u128::from(vl) {
                    out.push(format!(
                        "the parties' list votes add up to {lists}, vl is {vl}"
                    ));
                }
            }
        }
        out
    }

    /// The race of `office` as the model has it, for the city `ibge`; `None` if the file has no
    /// such office.
    ///
    /// Candidates are flattened from coalition → party → candidate, valid ones first, then by
    /// votes (most first) and ballot number; an annulled candidate is shown with `valid: false`
    /// and its votes stay out of the valid total. The percentage is the published `pvap`, or
    /// computed from `vv` where the file has none.
    pub fn race(&self, ibge: u32, office: Office) -> Option<Race> {
        self.race_of(ibge, office.tse_code(), office)
    }

    /// The race of TSE cargo `cargo` labelled as `office`: for offices the model does not name
    /// (a state's president or deputies file read as a majoritarian or proportional race).
    pub fn race_of(&self, ibge: u32, cargo: u32, office: Office) -> Option<Race> {
        let o = self.office(cargo)?;
        let v = &self.votes;
        // Saturating: without `vv` or `tvn` no identity bounds the sums, and a file of absurd
        // counts must not overflow them (found writing the tse_unified fuzz target).
        let valid = v.valid.unwrap_or_else(|| {
            o.candidates
                .iter()
                .filter(|c| c.candidate.valid)
                .fold(0, |sum, c| sum.saturating_add(c.candidate.votes))
        });
        let mut candidates: Vec<Candidate> = o
            .candidates
            .iter()
            .map(|c| {
                let mut c = c.candidate.clone();
                if c.percent.is_nan() {
                    c.percent = if c.valid {
                        percent(c.votes, valid)
                    } else {
                        0.0
                    };
                }
                c
            })
            .collect();
        candidates.sort_by(|a, b| {
            b.valid
                .cmp(&a.valid)
                .then(b.votes.cmp(&a.votes))
                .then(a.number.cmp(&b.number))
        });
        let null = v
            .null_total
            .or_else(|| Some(v.null?.saturating_add(v.null_technical.unwrap_or(0))))
            .unwrap_or(0);
        Some(Race {
            ibge,
            office,
            round: self.round,
            source_time: self
                .totalized_at
                .clone()
                .or_else(|| self.generated_at.clone()),
            progress: self.progress.clone(),
            totals: Totals {
                electorate: self.electorate.total,
                turnout: v.total.or(self.electorate.turnout).unwrap_or(0),
                abstentions: self.electorate.abstentions.unwrap_or(0),
                blank: v.blank.unwrap_or(0),
                null,
                valid,
            },
            candidates,
            finished: self.finished(),
        })
    }
}

/// Sample files of the per-city layout, shared by the parsers' tests and the ingest's.
#[doc(hidden)]
pub mod fixtures {
    /// A finished mayor race, in the authority's compact `"k" : "v"` spacing: a coalition with a
    /// vice, a federation party, a lone party, and a candidate annulled sub judice.
    pub const MAYOR: &str = r#"{ "ele" : "9426", "t" : "1", "f" : "s", "sup" : "n", "tpabr" : "mu", "cdabr" : "99001", "dg" : "01/10/2028", "hg" : "21:00:05", "idg" : "700001", "dt" : "01/10/2028", "ht" : "20:59:58", "dv" : "s", "tf" : "s", "and" : "f", "md" : "s", "carg" : [
{ "cd" : "11", "nmn" : "Prefeito", "nv" : "1", "fed" : [
{ "n" : "101", "sg" : "FXA", "nm" : "FEDERAÇÃO EXEMPLO", "com" : "PXC/PXF", "npar" : [ "13", "43" ] } ], "agr" : [
{ "n" : "1", "nm" : "UNIDOS PELA VILA", "tp" : "c", "com" : "PXA / PXB", "par" : [
{ "n" : "45", "sg" : "PXA", "nm" : "PARTIDO XA", "nfed" : "", "tvtn" : "5200", "cand" : [
{ "n" : "45", "sqcand" : "9001", "nm" : "ANA PRIMEIRA DA SILVA", "nmu" : "ANA PRIMEIRA", "seq" : "2", "dvt" : "Válido", "e" : "s", "st" : "Eleito", "vap" : "5200", "pvap" : "52,00", "vs" : [
{ "tp" : "v", "sqcand" : "9002", "nm" : "ROBERTO VICE", "nmu" : "BETO VICE", "sgp" : "PXB" } ] } ] } ] },
{ "n" : "2", "nm" : "PARTIDO XC", "tp" : "i", "com" : "PXC", "par" : [
{ "n" : "13", "sg" : "PXC", "nm" : "PARTIDO XC", "nfed" : "101", "tvtn" : "4300", "cand" : [
{ "n" : "13", "sqcand" : "9003", "nm" : "CARLOS SEGUNDO", "nmu" : "CARLOS SEGUNDO", "seq" : "1", "dvt" : "Válido", "e" : "n", "st" : "Não eleito", "vap" : "4300", "pvap" : "43,00", "vs" : [
{ "tp" : "v", "sqcand" : "9004", "nm" : "DIANA VICE", "nmu" : "", "sgp" : "PXF" } ] } ] } ] },
{ "n" : "3", "nm" : "PARTIDO XD", "tp" : "i", "com" : "PXD", "par" : [
{ "n" : "77", "sg" : "PXD", "nfed" : "", "tvtn" : "500", "cand" : [
{ "n" : "77", "sqcand" : "9005", "nm" : "DORA TERCEIRA", "nmu" : "DORA", "seq" : "3", "dvt" : "Válido", "e" : "n", "st" : "Não eleito", "vap" : "500", "pvap" : "" } ] } ] },
{ "n" : "4", "nm" : "PARTIDO XE", "tp" : "i", "com" : "PXE", "par" : [
{ "n" : "22", "sg" : "PXE", "nfed" : "", "tvtn" : "0", "cand" : [
{ "n" : "22", "sqcand" : "9006", "nm" : "EDU ANULADO", "nmu" : "EDU", "seq" : "4", "dvt" : "Anulado sub judice", "e" : "n", "st" : "", "vap" : "300", "pvap" : "0,00" } ] } ] } ] } ],
"s" : { "ts" : "40", "st" : "40", "pst" : "100,00", "snt" : "0" },
"e" : { "te" : "13000", "c" : "11000", "pc" : "84,62", "a" : "2000", "pa" : "15,38" },
"v" : { "tv" : "11000", "vvc" : "10300", "vv" : "10000", "vnom" : "10000", "van" : "0", "vansj" : "300", "vb" : "400", "tvn" : "300", "vn" : "280", "vnt" : "20" } }"#;

    /// A councillor race with list votes, every councillor status, a federation and an annulled
    /// candidate.
    pub const COUNCIL: &str = r#"{"ele":"9426","t":"1","tpabr":"mu","cdabr":"99001","idg":"700002",
      "dt":"01/10/2028","ht":"20:59:58","tf":"s","and":"f",
      "carg":[{"cd":"13","nmn":"Vereador","nv":"9",
        "fed":[{"n":"101","sg":"FXA","nm":"FEDERAÇÃO EXEMPLO","npar":["13","43"]}],
        "agr":[
          {"nm":"PARTIDO XA","tp":"i","par":[{"n":"45","sg":"PXA","nfed":"","dvt":"Válido (legenda)",
            "tvtn":"1450","tvtl":"150","cand":[
              {"n":"45001","nmu":"ALFA","dvt":"Válido","e":"s","st":"Eleito por QP","vap":"900","pvap":"36,73"},
              {"n":"45002","nmu":"BRAVO","dvt":"Válido","e":"s","st":"Eleito por média","vap":"450","pvap":"18,37"},
              {"n":"45003","nmu":"CHARLIE","dvt":"Válido","e":"n","st":"Suplente","vap":"100","pvap":"4,08"}]}]},
          {"nm":"PARTIDO XC","tp":"i","par":[{"n":"13","sg":"PXC","nfed":"101","dvt":"Válido (legenda)",
            "tvtn":"750","tvtl":"100","cand":[
              {"n":"13001","nmu":"DELTA","dvt":"Válido","e":"s","st":"Eleito por QP","vap":"700","pvap":"28,57"},
              {"n":"13002","nmu":"ECHO","dvt":"Válido","e":"n","st":"Não eleito","vap":"50","pvap":"2,04"},
              {"n":"13003","nmu":"FOXTROT","dvt":"Anulado","e":"n","st":"","vap":"80","pvap":""}]}]}]}],
      "s":{"ts":"12","st":"12","pst":"100,00"},
      "e":{"te":"3500","c":"2900","a":"600"},
      "v":{"tv":"2900","vvc":"2530","vv":"2450","vnom":"2200","vl":"250","van":"80","vansj":"0",
           "vb":"200","tvn":"170","vn":"170","vnt":"0"}}"#;

    /// The same mayor race before the count starts: zeros everywhere, in upper case.
    pub const ZEROS: &str = r#"{"ele":"9426","t":"1","f":"S","tpabr":"MU","cdabr":"99001","idg":"700000",
      "dg":"01/10/2028","hg":"16:00:00","dt":"","ht":"","tf":"N","and":"P","md":"N",
      "carg":[{"cd":"11","nmn":"Prefeito","nv":"1","agr":[
        {"nm":"UNIDOS PELA VILA","tp":"C","par":[{"n":"45","sg":"PXA","tvtn":"0","cand":[
          {"n":"45","nmu":"ANA PRIMEIRA","dvt":"VÁLIDO","e":"N","st":"","vap":"0","pvap":"0,00"}]}]},
        {"nm":"PARTIDO XC","tp":"I","par":[{"n":"13","sg":"PXC","tvtn":"0","cand":[
          {"n":"13","nmu":"CARLOS SEGUNDO","dvt":"VÁLIDO","e":"N","st":"","vap":"0","pvap":"0,00"}]}]}]}],
      "s":{"ts":"40","st":"0","pst":"0,00"},
      "e":{"te":"13000","c":"0","a":"0"},
      "v":{"tv":"0","vvc":"0","vv":"0","vnom":"0","van":"0","vansj":"0","vb":"0","tvn":"0","vn":"0","vnt":"0"}}"#;
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

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
        let valid: u64 = race
            .candidates
            .iter()
            .filter(|c| c.valid)
            .map(|c| c.votes)
            .sum();
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
    fn broken_identities_are_rejected_naming_them() {
        let bad = MAYOR.replace(r#""tv" : "11000""#, r#""tv" : "11001""#);
        let err = parse_validated(bad.as_bytes(), "mayor.json").unwrap_err();
        assert_eq!(err.kind(), "invalid");
        assert!(err.to_string().contains("tv = vvc + vb + tvn"), "{err}");
        assert!(err.to_string().contains("mu 99001"), "{err}");
        // The parse alone still reads it: the identities are a separate step.
        assert!(parse(bad.as_bytes(), "mayor.json").is_ok());

        let bad = MAYOR.replace(r#""vap" : "4300""#, r#""vap" : "4301""#);
        let err = parse_validated(bad.as_bytes(), "mayor.json").unwrap_err();
        assert!(err.to_string().contains("add up to 10001"), "{err}");

        let bad = COUNCIL.replace(r#""tvtl":"100""#, r#""tvtl":"90""#);
        let err = parse_validated(bad.as_bytes(), "council.json").unwrap_err();
        assert!(err.to_string().contains("list votes"), "{err}");

        let bad = MAYOR.replace(r#""vn" : "280""#, r#""vn" : "281""#);
        let err = parse_validated(bad.as_bytes(), "mayor.json").unwrap_err();
        assert!(err.to_string().contains("tvn = vn + vnt"), "{err}");
    }

    #[test]
    fn absurd_counts_without_totals_do_not_overflow_the_race() {
        let file = r#"{"carg":[{"cd":"11","agr":[{"par":[{"n":"45","cand":[
            {"n":"45","vap":"18446744073709551615"},{"n":"13","vap":"1"}]}]}]}],
          "v":{"vn":"18446744073709551615","vnt":"1"}}"#;
        let u = parse_validated(file.as_bytes(), "u.json").unwrap();
        let race = u.race(1, Office::Mayor).unwrap();
        assert_eq!((race.totals.valid, race.totals.null), (u64::MAX, u64::MAX));
        assert_eq!(race.candidates[0].percent, 100.0);
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
