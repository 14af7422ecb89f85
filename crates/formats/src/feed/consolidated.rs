//! The consolidated national file: every city's race of one office in one JSON document.
//!
//! ```text
//! {"last_updated": {"date": "16/09/2020", "time": "15:02:32", "turno": 1,
//!                   "apuracao_total": "100,00%", "encerrado": true},
//!  "municipios": {"<IBGE>": {"nm": .., "a": .., "b": .., "n": .., "t": ..,
//!                            "c": [{"nc", "sp", "v", "tp", "e", "st", "cp", "tc"}]}}}
//! ```
//!
//! `a` abstentions, `b` blank, `n` null, `t` votes cast; per candidate `nc` ballot name, `sp`
//! party, `v` votes, `tp` percent of valid votes, `e` elected, `st` goes to a second round, `cp`
//! colour, `tc` photo. The provider's file has no per-city progress: every city takes the
//! national `apuracao_total` and `encerrado`. Three optional per-city fields, which apura's
//! simulator writes, carry it where a feed has it: `pst` percent of sections counted, `s`/`ts`
//! sections counted and in all, `f` count finished.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

use super::FeedError;
use super::municipalities::MunicipalityList;
use super::number::{parse_count, parse_decimal, percent};
use crate::model::{Candidate, Office, Progress, Race, Status, Totals};

/// A parsed and validated consolidated file.
#[derive(Debug, Clone)]
pub struct ConsolidatedFeed {
    pub round: u8,
    /// National percent of sections counted.
    pub percent: f64,
    pub finished: bool,
    pub source_time: Option<String>,
    /// One race per city of the list found in the file, in file order.
    pub races: Vec<Race>,
    /// Keys of cities present in the file but absent from the municipality list.
    pub unknown_cities: Vec<String>,
    /// Cities of the list whose entry failed validation, with the reason, in file order
    /// ([`parse_per_city`] only: [`parse`] fails on the first).
    pub invalid_cities: Vec<(u32, FeedError)>,
}

// Strings are borrowed from the file where they need no unescaping: a national file has
// ~40,000 candidates, and an allocation per field was most of the parse time.
#[derive(Deserialize)]
struct RawFile<'a> {
    last_updated: RawHeader,
    #[serde(borrow)]
    municipios: Entries<RawCity<'a>>,
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(flatten)]
    count: RawCount,
}

/// What the headers of the provider's files (national and zone) say of the count: round,
/// percent of sections counted, finished. Read into each header with `#[serde(flatten)]`.
#[derive(Deserialize)]
pub(crate) struct RawCount {
    #[serde(default)]
    turno: Option<u8>,
    #[serde(default)]
    apuracao_total: Option<String>,
    #[serde(default)]
    encerrado: Option<bool>,
}

impl RawCount {
    /// `turno`; absent is the first.
    pub(crate) fn round(&self) -> u8 {
        self.turno.unwrap_or(1)
    }

    /// `encerrado`; absent is not finished.
    pub(crate) fn finished(&self) -> bool {
        self.encerrado.unwrap_or(false)
    }

    /// `apuracao_total`: percent of sections counted, 0 when absent.
    pub(crate) fn percent(&self) -> Result<f64, String> {
        let pct = parse_decimal(self.apuracao_total.as_deref().unwrap_or(""))?.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&pct) {
            return Err(format!("{pct} is not a percentage"));
        }
        Ok(pct)
    }
}

#[derive(Deserialize)]
struct RawCity<'a> {
    #[serde(default, borrow)]
    a: Cow<'a, str>,
    #[serde(default, borrow)]
    b: Cow<'a, str>,
    #[serde(default, borrow)]
    n: Cow<'a, str>,
    #[serde(borrow)]
    t: Cow<'a, str>,
    #[serde(borrow)]
    c: Vec<RawCandidate<'a>>,
    #[serde(default, borrow)]
    pst: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    s: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    ts: Option<Cow<'a, str>>,
    #[serde(default)]
    f: Option<bool>,
}

#[derive(Deserialize)]
struct RawCandidate<'a> {
    #[serde(borrow)]
    nc: Cow<'a, str>,
    #[serde(default, borrow)]
    sp: Cow<'a, str>,
    #[serde(borrow)]
    v: Cow<'a, str>,
    #[serde(default, borrow)]
    tp: Cow<'a, str>,
    #[serde(default)]
    e: bool,
    #[serde(default)]
    st: bool,
    #[serde(default, borrow)]
    cp: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tc: Option<Cow<'a, str>>,
    /// Ballot number, where a feed has it.
    #[serde(default, borrow)]
    num: Option<Cow<'a, str>>,
}

/// A candidate's status from the provider's flags: elected (`e`, `eleito`), to a second round
/// (`st`, `segundo_turno`), or not elected once the race is finished.
pub(crate) fn status(elected: bool, second_round: bool, finished: bool) -> Option<Status> {
    if elected {
        Some(Status::Elected)
    } else if second_round {
        Some(Status::SecondRound)
    } else if finished {
        Some(Status::NotElected)
    } else {
        None
    }
}

/// Candidate, blank and null votes add up to no more than the total.
pub(crate) fn check_counted(valid: u64, blank: u64, null: u64, turnout: u64) -> Result<(), String> {
    let counted = valid
        .checked_add(blank)
        .and_then(|v| v.checked_add(null))
        .ok_or("votes overflow")?;
    if counted > turnout {
        return Err(format!(
            "candidate votes {valid} + blank {blank} + null {null} = {counted} exceed the total {turnout}"
        ));
    }
    Ok(())
}

/// A JSON object read as a list of entries in file order, so that a key written twice (a
/// duplicated city) is seen instead of silently keeping the last one.
pub(crate) struct Entries<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// Turn `dd/mm/yyyy` and `hh:mm:ss` into ISO 8601 local time, or `None` if either is missing or
/// is not a moment of the calendar (`31/02/2028`, `24:06:30`): such a stamp would order wrongly
/// against real ones, and the ingest orders files by it.
pub(crate) fn iso_local(date: Option<&str>, time: Option<&str>) -> Option<String> {
    let (date, time) = (date?.trim(), time?.trim());
    let mut parts = date.split('/');
    let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
    if d.len() != 2 || m.len() != 2 || y.len() != 4 || time.len() != 8 || parts.next().is_some() {
        return None;
    }
    let number = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u32>().ok())?
    };
    let (day, month, year) = (number(d)?, number(m)?, number(y)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    let mut hms = time.split(':');
    let (h, mi, se) = (hms.next()?, hms.next()?, hms.next()?);
    let in_range = |s: &str, max: u32| s.len() == 2 && number(s).is_some_and(|n| n <= max);
    if !(1..=days).contains(&day) || !in_range(h, 23) || !in_range(mi, 59) || !in_range(se, 59) {
        return None;
    }
    Some(format!("{y}-{m}-{d}T{time}"))
}

/// Parse and validate one consolidated file for `office`: any invalid city fails the file.
pub fn parse(
    bytes: &[u8],
    file: &str,
    office: Office,
    list: &MunicipalityList,
) -> Result<ConsolidatedFeed, FeedError> {
    let mut feed = parse_per_city(bytes, file, office, list)?;
    if feed.invalid_cities.is_empty() {
        Ok(feed)
    } else {
        Err(feed.invalid_cities.swap_remove(0).1)
    }
}

/// Parse one consolidated file for `office`, validating each city on its own: a city whose
/// entry fails validation goes to `invalid_cities` and the others are kept. What makes the
/// whole file untrustworthy still fails it: not JSON, the wrong shape, a bad header, a city
/// written twice.
pub fn parse_per_city(
    bytes: &[u8],
    file: &str,
    office: Office,
    list: &MunicipalityList,
) -> Result<ConsolidatedFeed, FeedError> {
    let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| FeedError::malformed(file, e))?;
    let header = &raw.last_updated;
    let national_percent = header
        .count
        .percent()
        .map_err(|d| FeedError::invalid(file, "last_updated.apuracao_total", d))?;
    let finished = header.count.finished();
    let round = header.count.round();
    if !(1..=2).contains(&round) {
        return Err(FeedError::invalid(
            file,
            "last_updated.turno",
            format!("round {round} is neither 1 nor 2"),
        ));
    }
    let source_time = iso_local(header.date.as_deref(), header.time.as_deref());
    if source_time.is_none() && (header.date.is_some() || header.time.is_some()) {
        return Err(FeedError::invalid(
            file,
            "last_updated",
            format!(
                "{:?} {:?} is not a date (dd/mm/yyyy) and a time (hh:mm:ss)",
                header.date.as_deref().unwrap_or(""),
                header.time.as_deref().unwrap_or("")
            ),
        ));
    }

    let mut seen = std::collections::HashSet::with_capacity(raw.municipios.0.len());
    let mut races = Vec::with_capacity(raw.municipios.0.len());
    let mut unknown_cities = Vec::new();
    let mut invalid_cities = Vec::new();
    for (key, city) in raw.municipios.0 {
        if !seen.insert(key.clone()) {
            return Err(FeedError::invalid(
                file,
                format!("municipios.{key}"),
                "city appears twice",
            ));
        }
        // A city's code as written: digits without a leading zero or sign, so that no second
        // spelling of a code (`03550308`, `+3550308`) passes the check above and replaces
        // the city unseen.
        let canonical = !key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit());
        let code = canonical.then(|| key.parse::<u32>().ok()).flatten();
        let Some(m) = code.and_then(|code| list.get(code)) else {
            unknown_cities.push(key);
            continue;
        };
        let at = format!("municipios.{key} ({})", m.name);
        let race = match city_race(city, m.ibge, office, round, national_percent, finished) {
            Ok(race) => race,
            Err(detail) => {
                invalid_cities.push((m.ibge, FeedError::invalid(file, at, detail)));
                continue;
            }
        };
        races.push(Race {
            source_time: source_time.clone(),
            ..race
        });
    }
    Ok(ConsolidatedFeed {
        round,
        percent: national_percent,
        finished,
        source_time,
        races,
        unknown_cities,
        invalid_cities,
    })
}

/// A count, 0 when absent; named in the error.
pub(crate) fn count(s: &str, field: &str) -> Result<u64, String> {
    parse_count(s)
        .map(|v| v.unwrap_or(0))
        .map_err(|e| format!("{field}: {e}"))
}

fn city_race(
    city: RawCity,
    ibge: u32,
    office: Office,
    round: u8,
    national_percent: f64,
    national_finished: bool,
) -> Result<Race, String> {
    let turnout = count(&city.t, "t")?;
    let abstentions = count(&city.a, "a")?;
    let blank = count(&city.b, "b")?;
    let null = count(&city.n, "n")?;
    let mut candidates = Vec::with_capacity(city.c.len());
    let mut valid: u64 = 0;
    let finished = city.f.unwrap_or(national_finished);
    for (i, c) in city.c.into_iter().enumerate() {
        // Built only for an error message: most files have none.
        let field = || format!("c[{i}] ({})", c.nc);
        let votes = parse_count(&c.v)
            .map(|v| v.unwrap_or(0))
            .map_err(|e| format!("{}.v: {e}", field()))?;
        valid = valid
            .checked_add(votes)
            .ok_or_else(|| format!("{}: votes overflow", field()))?;
        let pct = parse_decimal(&c.tp).map_err(|e| format!("{}.tp: {e}", field()))?;
        if let Some(p) = pct
            && !(0.0..=100.0).contains(&p)
        {
            return Err(format!("{}.tp: {p} is not a percentage", field()));
        }
        let number = match c.num.as_deref() {
            Some(n) => Some(
                n.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{}.num: {n:?} is not a ballot number", field()))?,
            ),
            None => None,
        };
        let status = status(c.e, c.st, finished);
        candidates.push(Candidate {
            number,
            name: c.nc.into_owned(),
            party: c.sp.into_owned(),
            coalition: None,
            votes,
            percent: pct.unwrap_or(f64::NAN),
            elected: c.e,
            status,
            valid: true,
            color: c.cp.filter(|s| !s.is_empty()).map(Cow::into_owned),
            photo: c.tc.filter(|s| !s.is_empty()).map(Cow::into_owned),
        });
    }
    for c in &mut candidates {
        if c.percent.is_nan() {
            c.percent = percent(c.votes, valid);
        }
    }
    check_counted(valid, blank, null, turnout)?;
    let sections_counted = city.s.as_deref().map(|s| count(s, "s")).transpose()?;
    let sections_total = city.ts.as_deref().map(|s| count(s, "ts")).transpose()?;
    if let (Some(s), Some(ts)) = (sections_counted, sections_total)
        && s > ts
    {
        return Err(format!("{s} sections counted of {ts}"));
    }
    let pct = match city.pst.as_deref() {
        Some(p) => parse_decimal(p)
            .map_err(|e| format!("pst: {e}"))?
            .unwrap_or(0.0),
        None => match (sections_counted, sections_total) {
            (Some(s), Some(ts)) => percent(s, ts),
            _ => national_percent,
        },
    };
    if !(0.0..=100.0).contains(&pct) {
        return Err(format!("pst: {pct} is not a percentage"));
    }
    // Found by fuzzing: an absurd `a` overflowed this sum (a panic with overflow checks on).
    let electorate = turnout
        .checked_add(abstentions)
        .ok_or_else(|| format!("t {turnout} + a {abstentions} overflows"))?;
    // The provider lists candidates by votes already; keep that order stable for ties.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.votes));
    Ok(Race {
        ibge,
        office,
        round,
        source_time: None,
        progress: Progress {
            sections_counted,
            sections_total,
            percent: pct,
        },
        totals: Totals {
            electorate: (abstentions > 0 || finished).then_some(electorate),
            turnout,
            abstentions,
            blank,
            null,
            valid,
        },
        candidates,
        finished,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Municipality;

    fn list() -> MunicipalityList {
        MunicipalityList::new(
            vec![
                Municipality::new(3550308, None, "São Paulo", "SP", true),
                Municipality::new(2705903, None, "Olho d'Água Grande", "AL", false),
            ],
            "test",
        )
        .unwrap()
    }

    #[test]
    fn a_stamp_must_be_a_moment_of_the_calendar() {
        let iso = |d, t| iso_local(Some(d), Some(t));
        assert_eq!(
            iso("16/09/2020", "15:02:32").as_deref(),
            Some("2020-09-16T15:02:32")
        );
        assert_eq!(
            iso("29/02/2028", "23:59:59").as_deref(),
            Some("2028-02-29T23:59:59")
        );
        for (d, t) in [
            ("01/10/2028", "24:06:30"),
            ("01/10/2028", "12:60:00"),
            ("01/10/2028", "12:00:60"),
            ("31/02/2028", "12:00:00"),
            ("29/02/2027", "12:00:00"),
            ("00/10/2028", "12:00:00"),
            ("01/13/2028", "12:00:00"),
            ("0a/10/2028", "12:00:00"),
            ("01/10/2028/1", "12:00:00"),
            ("01/10/2028", "1:00:000"),
        ] {
            assert_eq!(iso(d, t), None, "{d} {t}");
        }
    }

    const GOOD: &str = r##"{"last_updated": {"date": "16/09/2020", "time": "15:02:32", "turno": 1,
        "apuracao_total": "100,00%", "encerrado": true},
      "municipios": {
        "3550308": {"nm": "S. Paulo", "a": "1.000", "b": "100", "n": "50", "t": "10.150",
          "c": [{"nc": "ANA", "sp": "AAA", "v": "6.000", "tp": "60,00%", "e": true, "st": false, "cp": "#112233"},
                {"nc": "BIA", "sp": "BBB", "v": "4.000", "tp": "40,00%", "e": false, "st": false}]},
        "2705903": {"nm": "OLHO", "a": "", "b": "1", "n": "1", "t": "12",
          "c": [{"nc": "CID", "sp": "CCC", "v": "10", "tp": "100,00%", "e": true, "st": false}]},
        "9999999": {"nm": "NOWHERE", "a": "1", "b": "0", "n": "0", "t": "1", "c": []}
      }}"##;

    #[test]
    fn parses_numbers_and_joins_by_ibge() {
        let feed = parse(GOOD.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap();
        assert_eq!(feed.races.len(), 2);
        assert_eq!(feed.unknown_cities, vec!["9999999".to_string()]);
        assert_eq!(feed.source_time.as_deref(), Some("2020-09-16T15:02:32"));
        let sp = &feed.races[0];
        assert_eq!(sp.ibge, 3550308);
        assert_eq!(sp.totals.turnout, 10_150);
        assert_eq!(sp.totals.electorate, Some(11_150));
        assert_eq!(sp.totals.valid, 10_000);
        assert_eq!(sp.candidates[0].votes, 6_000);
        assert_eq!(sp.candidates[0].percent, 60.0);
        assert_eq!(sp.candidates[0].status, Some(Status::Elected));
        assert_eq!(sp.candidates[1].status, Some(Status::NotElected));
        assert_eq!(sp.progress.percent, 100.0);
        assert!(sp.finished);
    }

    #[test]
    fn a_file_cut_in_the_middle_is_malformed() {
        let cut = &GOOD[..GOOD.len() / 2];
        let err = parse(cut.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap_err();
        assert_eq!(err.kind(), "malformed");
        assert!(err.to_string().starts_with("mayors.json:"), "{err}");
    }

    #[test]
    fn votes_above_the_total_are_rejected_naming_the_city() {
        let bad = GOOD.replace(r#""t": "10.150""#, r#""t": "9.000""#);
        let err = parse(bad.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("3550308") && text.contains("exceed"),
            "{text}"
        );
    }

    #[test]
    fn negative_votes_are_rejected() {
        let bad = GOOD.replace(r#""v": "4.000""#, r#""v": "-4.000""#);
        let err = parse(bad.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn per_city_parsing_keeps_the_valid_cities_and_names_the_invalid_ones() {
        let bad = GOOD.replace(r#""v": "4.000""#, r#""v": "-4.000""#);
        let feed = parse_per_city(bad.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap();
        assert_eq!(feed.races.len(), 1);
        assert_eq!(feed.races[0].ibge, 2705903);
        let [(ibge, err)] = feed.invalid_cities.as_slice() else {
            panic!("{:?}", feed.invalid_cities);
        };
        assert_eq!(*ibge, 3550308);
        assert_eq!(err.reason(), "negative");
        assert!(
            err.what()
                .starts_with("municipios.3550308 (São Paulo): c[1] (BIA).v")
        );
        assert!(!err.what().contains("mayors.json"), "{}", err.what());
        for (from, to, reason) in [
            (r#""t": "10.150""#, r#""t": "9.000""#, "totals"),
            (
                r#""v": "4.000""#,
                r#""v": "99999999999999999999""#,
                "overflow",
            ),
            (r#""tp": "40,00%""#, r#""tp": "400,00%""#, "percentage"),
            (r#""v": "4.000""#, r#""v": "4.0""#, "not_a_number"),
        ] {
            let bad = GOOD.replace(from, to);
            let feed = parse_per_city(bad.as_bytes(), "m", Office::Mayor, &list()).unwrap();
            assert_eq!(feed.invalid_cities[0].1.reason(), reason, "{to}");
        }
        // The whole file still fails for what makes all of it untrustworthy.
        let cut = &bad[..bad.len() / 2];
        assert_eq!(
            parse_per_city(cut.as_bytes(), "m", Office::Mayor, &list())
                .unwrap_err()
                .reason(),
            "malformed"
        );
    }

    #[test]
    fn wrong_types_are_rejected() {
        let bad = GOOD.replace(r#""v": "4.000""#, r#""v": 4000"#);
        let err = parse(bad.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap_err();
        assert_eq!(err.kind(), "malformed");
        let bad = GOOD.replace(r#""c": [{"nc": "CID""#, r#""c": {"x": [{"nc": "CID""#);
        assert!(parse(bad.as_bytes(), "m", Office::Mayor, &list()).is_err());
    }

    #[test]
    fn a_duplicated_city_is_rejected() {
        let bad = GOOD.replace(
            r#""9999999": {"nm": "NOWHERE""#,
            r#""2705903": {"nm": "OLHO", "a": "", "b": "1", "n": "1", "t": "12", "c": []},
               "9999999": {"nm": "NOWHERE""#,
        );
        let err = parse(bad.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    /// A second spelling of a city's code (a leading zero, a sign) is no city: it is skipped
    /// as unknown and cannot replace the city's results.
    #[test]
    fn another_spelling_of_a_city_code_is_unknown_not_a_replacement() {
        let good = parse(GOOD.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap();
        let turnout = |f: &ConsolidatedFeed| {
            f.races
                .iter()
                .find(|r| r.ibge == 2705903)
                .map(|r| r.totals.turnout)
        };
        for spelling in ["02705903", "+2705903"] {
            let bad = GOOD.replace(
                r#""9999999": {"nm": "NOWHERE""#,
                &format!(
                    r#""{spelling}": {{"nm": "OLHO", "a": "", "b": "1", "n": "1", "t": "99", "c": []}},
                       "9999999": {{"nm": "NOWHERE""#
                ),
            );
            let feed = parse(bad.as_bytes(), "mayors.json", Office::Mayor, &list()).unwrap();
            assert_eq!(turnout(&feed), turnout(&good), "{spelling}");
            assert!(
                feed.unknown_cities.contains(&spelling.to_string()),
                "{spelling}"
            );
        }
    }

    #[test]
    fn overflowing_numbers_are_rejected() {
        let bad = GOOD.replace(r#""v": "4.000""#, r#""v": "99999999999999999999999""#);
        assert!(parse(bad.as_bytes(), "m", Office::Mayor, &list()).is_err());
    }

    #[test]
    fn per_city_progress_overrides_the_national_figure() {
        let partial = GOOD
            .replace(r#""encerrado": true"#, r#""encerrado": false"#)
            .replace(
                r#""a": "", "b": "1""#,
                r#""pst": "42,50%", "s": "17", "ts": "40", "f": false, "a": "", "b": "1""#,
            );
        let feed = parse(partial.as_bytes(), "m", Office::Mayor, &list()).unwrap();
        let olho = &feed.races[1];
        assert_eq!(olho.progress.percent, 42.5);
        assert_eq!(olho.progress.sections_counted, Some(17));
        assert!(!olho.finished);
        assert_eq!(olho.candidates[0].status, Some(Status::Elected));
        assert_eq!(olho.totals.electorate, None);
    }
}
