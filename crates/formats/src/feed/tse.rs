//! The official TSE layout (`docs/tse-format.md`): one unified result per city and office, one
//! progress file per state, the municipality configuration and the election catalogue.
//!
//! - [`unified`]: `<uf><mun5>-c<cargo4>-e<ele6>-u.json`, the result of one city (or zone) for one
//!   office, into a [`crate::model::Race`];
//! - [`progress`]: `<uf>-e<ele6>-ab.json`, one row per municipality: what the poller reads to
//!   learn which cities changed;
//! - [`config`]: `mun-e<ele6>-cm.json`, codes, names, capitals and zones of every municipality;
//! - [`catalogue`]: `ele-c.json`, the election codes of a cycle;
//! - [`paths`]: where each file lives below the base URL.
//!
//! Conventions shared by every file, and how they are read here:
//! - every value is a string, and `""` means absent, not zero;
//! - integers have no separators (the shared [`parse_count`] also accepts dot thousands),
//!   percentages a decimal comma (`"64,41"`);
//! - codes and flags change case and spelling between years (`MU`/`mu`/`mun`, `S`/`s`): every
//!   comparison of a code goes through [`fold`], which also folds accents (`Válido`/`VALIDO`).

pub mod catalogue;
pub mod config;
pub mod paths;
pub mod progress;
pub mod unified;

use std::borrow::Cow;

use serde::Deserialize;

use super::consolidated::iso_local;
use super::number::{parse_count, parse_decimal, percent};
use crate::model::{Progress, slug};

/// A code or label folded for comparison: lower case, accents folded, every run of other
/// characters one `-` (`"Não eleito"` → `nao-eleito`, `"2º turno"` → `2-turno`). The slug rule
/// of the contract does exactly this, so it is reused.
pub fn fold(s: &str) -> String {
    slug(s)
}

/// A yes/no flag: `s`/`n` in either case (`sim`/`não` accepted). `""` is absent.
pub fn flag(s: &str) -> Result<Option<bool>, String> {
    match fold(s).as_str() {
        "" => Ok(None),
        "s" | "sim" => Ok(Some(true)),
        "n" | "nao" => Ok(Some(false)),
        _ => Err(format!("{s:?} is neither s nor n")),
    }
}

/// What a file or a progress row covers (`tpabr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `br`
    Country,
    /// `uf`
    State,
    /// `mu`, `MU` or `mun`
    Municipality,
    /// `zona` (also `zn`, `z`)
    Zone,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, String> {
        match fold(s).as_str() {
            "br" => Ok(Scope::Country),
            "uf" => Ok(Scope::State),
            "mu" | "mun" | "municipio" => Ok(Scope::Municipality),
            "zona" | "zn" | "z" => Ok(Scope::Zone),
            _ => Err(format!("unknown scope {s:?}")),
        }
    }
}

/// How far the count of a scope has gone (`and`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountState {
    /// `p`: partial.
    Partial,
    /// `f`: finished.
    Finished,
}

impl CountState {
    /// `p`/`f` in either case; `""` is absent.
    pub fn parse(s: &str) -> Result<Option<CountState>, String> {
        match fold(s).as_str() {
            "" => Ok(None),
            "p" | "parcial" => Ok(Some(CountState::Partial)),
            "f" | "final" | "finalizada" => Ok(Some(CountState::Finished)),
            _ => Err(format!("unknown count state {s:?}")),
        }
    }
}

/// `s`: sections in all, totalized, and the published percentage.
#[derive(Deserialize, Default)]
pub(crate) struct RawSections<'a> {
    #[serde(default, borrow)]
    ts: Cow<'a, str>,
    #[serde(default, borrow)]
    st: Cow<'a, str>,
    #[serde(default, borrow)]
    pst: Cow<'a, str>,
}

/// `e`: electorate, turnout (`c`) and abstentions (`a`).
#[derive(Deserialize, Default)]
pub(crate) struct RawElectorate<'a> {
    #[serde(default, borrow)]
    te: Cow<'a, str>,
    #[serde(default, borrow)]
    c: Cow<'a, str>,
    #[serde(default, borrow)]
    a: Cow<'a, str>,
}

/// Electorate figures of a scope, each absent when the file leaves it empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Electorate {
    pub total: Option<u64>,
    pub turnout: Option<u64>,
    pub abstentions: Option<u64>,
}

/// A count that may be absent; named in the error.
pub(crate) fn opt_count(s: &str, field: &str) -> Result<Option<u64>, String> {
    parse_count(s).map_err(|e| format!("{field}: {e}"))
}

/// A percentage in 0–100 that may be absent; named in the error.
pub(crate) fn opt_percent(s: &str, field: &str) -> Result<Option<f64>, String> {
    match parse_decimal(s).map_err(|e| format!("{field}: {e}"))? {
        Some(p) if !(0.0..=100.0).contains(&p) => Err(format!("{field}: {p} is not a percentage")),
        other => Ok(other),
    }
}

impl RawSections<'_> {
    /// Sections as the model's progress: the published `pst` where there is one, otherwise
    /// computed from the counts (0 before anything is counted).
    pub(crate) fn progress(&self, at: &str) -> Result<Progress, String> {
        let total = opt_count(&self.ts, &format!("{at}.ts"))?;
        let counted = opt_count(&self.st, &format!("{at}.st"))?;
        if let (Some(st), Some(ts)) = (counted, total)
            && st > ts
        {
            return Err(format!("{at}: {st} sections totalized of {ts}"));
        }
        let published = opt_percent(&self.pst, &format!("{at}.pst"))?;
        let percent = published.unwrap_or_else(|| match (counted, total) {
            (Some(st), Some(ts)) => percent(st, ts),
            _ => 0.0,
        });
        Ok(Progress {
            sections_counted: counted,
            sections_total: total,
            percent,
        })
    }
}

impl RawElectorate<'_> {
    pub(crate) fn parse(&self, at: &str) -> Result<Electorate, String> {
        Ok(Electorate {
            total: opt_count(&self.te, &format!("{at}.te"))?,
            turnout: opt_count(&self.c, &format!("{at}.c"))?,
            abstentions: opt_count(&self.a, &format!("{at}.a"))?,
        })
    }
}

/// The header a data file (unified result or progress file) opens with: election, round, and
/// when and in which generation it was written. Read into the file's struct with
/// `#[serde(flatten)]`.
#[derive(Deserialize, Default)]
pub(crate) struct RawHeader<'a> {
    #[serde(default, borrow)]
    ele: Cow<'a, str>,
    #[serde(default, borrow)]
    t: Cow<'a, str>,
    #[serde(default, borrow)]
    dg: Cow<'a, str>,
    #[serde(default, borrow)]
    hg: Cow<'a, str>,
    #[serde(default, borrow)]
    idg: Cow<'a, str>,
}

/// A data file's header as read.
pub(crate) struct Header {
    /// Election code as written (`ele`).
    pub election: String,
    /// 1 or 2 (`t`).
    pub round: u8,
    /// Generation id (`idg`).
    pub generation: Option<String>,
    /// When the file was written (`dg`/`hg`), ISO 8601 local time.
    pub generated_at: Option<String>,
}

impl RawHeader<'_> {
    /// The header's values; the round is the one that can be wrong.
    pub(crate) fn parse(&self) -> Result<Header, String> {
        Ok(Header {
            election: self.ele.trim().to_string(),
            round: round(&self.t)?,
            generation: nonempty(&self.idg),
            generated_at: iso_local(Some(&self.dg), Some(&self.hg)),
        })
    }
}

/// A text value trimmed, `None` when empty.
pub(crate) fn nonempty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

/// A round (`t`): 1 or 2; absent is the first.
pub(crate) fn round(s: &str) -> Result<u8, String> {
    match s.trim() {
        "" | "1" => Ok(1),
        "2" => Ok(2),
        other => Err(format!("t: round {other:?} is neither 1 nor 2")),
    }
}

/// A code of digits, zero-padded to `width` (`"35"` → `"00035"`); longer codes are refused.
pub fn pad_code(code: &str, width: usize) -> Result<String, String> {
    let code = code.trim();
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{code:?} is not a numeric code"));
    }
    let digits = code.trim_start_matches('0');
    if digits.len() > width {
        return Err(format!("{code:?} has more than {width} digits"));
    }
    Ok(format!("{digits:0>width$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_flags_are_read_in_any_case() {
        for s in ["MU", "mu", "mun", "Mun"] {
            assert_eq!(Scope::parse(s), Ok(Scope::Municipality), "{s}");
        }
        assert_eq!(Scope::parse("UF"), Ok(Scope::State));
        assert_eq!(Scope::parse("br"), Ok(Scope::Country));
        assert_eq!(Scope::parse("ZONA"), Ok(Scope::Zone));
        assert!(Scope::parse("xx").is_err());
        assert_eq!(flag("S"), Ok(Some(true)));
        assert_eq!(flag("n"), Ok(Some(false)));
        assert_eq!(flag(""), Ok(None));
        assert!(flag("x").is_err());
        assert_eq!(CountState::parse("F"), Ok(Some(CountState::Finished)));
        assert_eq!(CountState::parse("p"), Ok(Some(CountState::Partial)));
        assert_eq!(CountState::parse(""), Ok(None));
        assert!(CountState::parse("q").is_err());
        assert_eq!(fold("Não eleito"), "nao-eleito");
        assert_eq!(fold("2º turno"), "2-turno");
        assert_eq!(fold("VÁLIDO"), "valido");
    }

    #[test]
    fn codes_are_padded() {
        assert_eq!(pad_code("35", 5).unwrap(), "00035");
        assert_eq!(pad_code("0619", 6).unwrap(), "000619");
        assert_eq!(pad_code("71072", 5).unwrap(), "71072");
        assert!(pad_code("123456", 5).is_err());
        assert!(pad_code("12a", 5).is_err());
        assert!(pad_code("", 5).is_err());
    }
}
