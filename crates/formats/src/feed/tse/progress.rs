//! The progress file of a state (`<uf>-e<ele6>-ab.json`): one row per municipality (`tpabr`
//! `mun`) and one for the state, each with its sections, electorate and last totalization.
//!
//! ```text
//! {"ele", "t", "dg", "hg", "idg",
//!  "abr": [{"and" p/f, "tpabr" mun|uf, "cdabr" code, "dt", "ht",
//!           "s": {"ts", "st", "pst", ..}, "e": {"te", "c", "a", ..}}, ..]}
//! ```
//!
//! The poller reads it every cycle to learn which cities changed: a row's [`Fingerprint`]
//! (`dt`, `ht` and `s.st`) moves exactly when the city is totalized again.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;

use super::{
    CountState, Electorate, RawElectorate, RawHeader, RawSections, Scope, opt_percent, pad_code,
};
use crate::feed::FeedError;
use crate::feed::consolidated::iso_local;
use crate::model::Progress;

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(flatten, borrow)]
    header: RawHeader<'a>,
    #[serde(borrow)]
    abr: Vec<RawRow<'a>>,
}

#[derive(Deserialize)]
struct RawRow<'a> {
    #[serde(default, borrow)]
    and: Cow<'a, str>,
    #[serde(borrow)]
    tpabr: Cow<'a, str>,
    #[serde(borrow)]
    cdabr: Cow<'a, str>,
    #[serde(default, borrow)]
    dt: Cow<'a, str>,
    #[serde(default, borrow)]
    ht: Cow<'a, str>,
    #[serde(default, borrow)]
    pmunf: Cow<'a, str>,
    #[serde(default, borrow)]
    s: RawSections<'a>,
    #[serde(default, borrow)]
    e: RawElectorate<'a>,
}

/// A parsed progress file.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressFile {
    pub election: String,
    pub round: u8,
    /// `idg`: changes on every rewrite.
    pub generation: Option<String>,
    pub generated_at: Option<String>,
    /// In file order.
    pub rows: Vec<ProgressRow>,
}

/// What identifies one totalization of a row: `dt`, `ht` and `s.st` as written. Two equal
/// fingerprints mean the city's files have not been totalized again in between.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

/// One row: a municipality or the state.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressRow {
    pub scope: Scope,
    /// The TSE municipality code padded to five digits, or the state in upper case.
    pub code: String,
    /// Last totalization, ISO 8601 local time (absent before the first).
    pub totalized_at: Option<String>,
    pub count: Option<CountState>,
    pub progress: Progress,
    pub electorate: Electorate,
    /// State rows: percent of municipalities finished (`pmunf`).
    pub municipalities_finished_percent: Option<f64>,
    fingerprint: Fingerprint,
}

impl ProgressRow {
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Nothing is totalized yet: sections counted zero or absent.
    pub fn nothing_counted(&self) -> bool {
        self.progress.sections_counted.unwrap_or(0) == 0
    }
}

impl ProgressFile {
    /// The municipality rows.
    pub fn municipalities(&self) -> impl Iterator<Item = &ProgressRow> {
        self.rows.iter().filter(|r| r.scope == Scope::Municipality)
    }

    /// The state row, if the file has one.
    pub fn state(&self) -> Option<&ProgressRow> {
        self.rows.iter().find(|r| r.scope == Scope::State)
    }
}

/// Parse and validate one progress file: values read, municipality codes padded, no
/// municipality twice, no more sections totalized than there are.
pub fn parse(bytes: &[u8], file: &str) -> Result<ProgressFile, FeedError> {
    let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| FeedError::malformed(file, e))?;
    let header = raw
        .header
        .parse()
        .map_err(|d| FeedError::invalid(file, "header", d))?;
    let mut rows = Vec::with_capacity(raw.abr.len());
    let mut seen = HashSet::with_capacity(raw.abr.len());
    for (i, r) in raw.abr.iter().enumerate() {
        let at = format!("abr[{i}] {} {}", r.tpabr, r.cdabr);
        let row = row(r).map_err(|d| FeedError::invalid(file, &at, d))?;
        if !seen.insert((row.scope, row.code.clone())) {
            return Err(FeedError::invalid(file, at, "row appears twice"));
        }
        rows.push(row);
    }
    Ok(ProgressFile {
        election: header.election,
        round: header.round,
        generation: header.generation,
        generated_at: header.generated_at,
        rows,
    })
}

fn row(r: &RawRow) -> Result<ProgressRow, String> {
    let scope = Scope::parse(&r.tpabr)?;
    let code = match scope {
        Scope::Municipality => pad_code(&r.cdabr, 5).map_err(|e| format!("cdabr: {e}"))?,
        Scope::Zone => pad_code(&r.cdabr, 4).map_err(|e| format!("cdabr: {e}"))?,
        Scope::State | Scope::Country => r.cdabr.trim().to_ascii_uppercase(),
    };
    Ok(ProgressRow {
        scope,
        code,
        totalized_at: iso_local(Some(&r.dt), Some(&r.ht)),
        count: CountState::parse(&r.and).map_err(|e| format!("and: {e}"))?,
        progress: r.s.progress("s")?,
        electorate: r.e.parse("e")?,
        municipalities_finished_percent: opt_percent(&r.pmunf, "pmunf")?,
        fingerprint: Fingerprint(format!("{}|{}|{}", r.dt.trim(), r.ht.trim(), r.s.st.trim())),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two towns and the state row; the second town has not been totalized yet.
    pub const PROGRESS: &str = r#"{"ele":"9426","t":"1","f":"s","dg":"01/10/2028","hg":"19:00:02","idg":"800001",
      "abr":[
        {"and":"p","tpabr":"mun","cdabr":"99001","dt":"01/10/2028","ht":"18:59:40",
         "s":{"ts":"40","st":"22","pst":"55,00","snt":"18"},
         "e":{"te":"13000","est":"7150","c":"6000","pc":"83,92","a":"1150"}},
        {"and":"p","tpabr":"MUN","cdabr":"1234","dt":"","ht":"",
         "s":{"ts":"12","st":"0","pst":"0,00"},
         "e":{"te":"3500","c":"0","a":"0"}},
        {"and":"p","tpabr":"uf","cdabr":"sp","dt":"01/10/2028","ht":"18:59:50",
         "munf":"0","pmunf":"0,00",
         "s":{"ts":"52","st":"22","pst":"42,31"},
         "e":{"te":"16500","c":"6000","a":"1150"}}]}"#;

    #[test]
    fn rows_are_read_with_their_fingerprints() {
        let p = parse(PROGRESS.as_bytes(), "sp-ab.json").unwrap();
        assert_eq!(p.election, "9426");
        assert_eq!(p.round, 1);
        assert_eq!(p.generation.as_deref(), Some("800001"));
        let towns: Vec<&ProgressRow> = p.municipalities().collect();
        assert_eq!(towns.len(), 2);
        assert_eq!(towns[0].code, "99001");
        assert_eq!(towns[1].code, "01234", "codes are padded to five digits");
        assert_eq!(towns[0].progress.sections_counted, Some(22));
        assert_eq!(towns[0].progress.percent, 55.0);
        assert_eq!(towns[0].electorate.total, Some(13_000));
        assert_eq!(
            towns[0].totalized_at.as_deref(),
            Some("2028-10-01T18:59:40")
        );
        assert_eq!(towns[0].count, Some(CountState::Partial));
        assert!(!towns[0].nothing_counted());
        assert!(towns[1].nothing_counted());
        assert_eq!(towns[1].totalized_at, None);
        let state = p.state().unwrap();
        assert_eq!(state.code, "SP");
        assert_eq!(state.municipalities_finished_percent, Some(0.0));
        assert_ne!(towns[0].fingerprint(), towns[1].fingerprint());
    }

    #[test]
    fn a_fingerprint_moves_with_date_time_and_sections_only() {
        let fp = |text: &str| {
            parse(text.as_bytes(), "ab")
                .unwrap()
                .municipalities()
                .next()
                .unwrap()
                .fingerprint()
                .clone()
        };
        let base = fp(PROGRESS);
        let later = PROGRESS.replace("18:59:40", "19:00:10");
        assert_ne!(fp(&later), base);
        let more = PROGRESS.replace(r#""st":"22","pst":"55,00""#, r#""st":"23","pst":"55,00""#);
        assert_ne!(fp(&more), base);
        // The electorate or a percentage alone does not make a new totalization.
        let other = PROGRESS.replace(r#""pc":"83,92""#, r#""pc":"83,93""#);
        assert_eq!(fp(&other), base);
    }

    #[test]
    fn bad_rows_are_rejected() {
        let twice = PROGRESS.replace(r#""cdabr":"1234""#, r#""cdabr":"99001""#);
        let err = parse(twice.as_bytes(), "ab").unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let over = PROGRESS.replace(r#""ts":"40","st":"22""#, r#""ts":"20","st":"22""#);
        assert!(parse(over.as_bytes(), "ab").is_err());
        let scope = PROGRESS.replace(r#""tpabr":"MUN""#, r#""tpabr":"xx""#);
        assert!(parse(scope.as_bytes(), "ab").is_err());
        let code = PROGRESS.replace(r#""cdabr":"1234""#, r#""cdabr":"123456""#);
        assert!(parse(code.as_bytes(), "ab").is_err());
        assert_eq!(
            parse(&PROGRESS.as_bytes()[..100], "ab").unwrap_err().kind(),
            "malformed"
        );
    }
}
