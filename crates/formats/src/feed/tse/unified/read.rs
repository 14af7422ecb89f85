//! A unified result's JSON into a [`Unified`]: the shape (borrowed where nothing needs
//! unescaping) and every value.

use std::borrow::Cow;

use serde::Deserialize;

use super::super::{
    CountState, RawElectorate, RawHeader, RawSections, Scope, flag, fold, opt_count, opt_percent,
};
use super::{
    Federation, OfficeResult, PartyResult, RunningMate, Unified, UnifiedCandidate, Votes,
    counts_as_valid, status,
};
use crate::feed::FeedError;
use crate::feed::consolidated::iso_local;
use crate::model::Candidate;

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(flatten, borrow)]
    header: RawHeader<'a>,
    #[serde(default, borrow)]
    tpabr: Cow<'a, str>,
    #[serde(default, borrow)]
    cdabr: Cow<'a, str>,
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

/// Parse one unified result: shape and values, without the identities.
pub fn parse(bytes: &[u8], file: &str) -> Result<Unified, FeedError> {
    let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| FeedError::malformed(file, e))?;
    let at = format!("{} {}", raw.tpabr, raw.cdabr);
    convert(raw).map_err(|d| FeedError::invalid(file, at.trim(), d))
}

fn convert(raw: RawFile) -> Result<Unified, String> {
    let header = raw.header.parse()?;
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
    Ok(Unified {
        election: header.election,
        round: header.round,
        scope,
        scope_code: raw.cdabr.trim().to_string(),
        generation: header.generation,
        generated_at: header.generated_at,
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
