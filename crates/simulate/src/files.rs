//! The feed's JSON, written straight into one buffer per file (5,568 cities and ~200,000
//! candidates per tick: no intermediate tree), in the provider's spelling: numbers as strings
//! with dot thousands (`"8.441.886"`), percentages with a decimal comma (`"39,81%"`).

use bytes::Bytes;

use super::count::{City, Election, Mark, Tally, ranking};
use super::json::{json_string, photo};
use apura_formats::feed::municipalities::MunicipalityList;
use apura_formats::model::Office;

/// Election day of the fictional night: the first Sunday of October 2028, when municipal
/// elections are held (Constitution, art. 29 II).
const NIGHT_DATE: &str = "01/10/2028";
/// Polls close at 17:00 Brasília time.
const NIGHT_START_SECS: u64 = 17 * 3_600;
/// The files' clock runs a five-hour night whatever the real duration, so that a ten-minute
/// simulation still reads like a count night (small towns by 18:00, capitals by 22:00).
const NIGHT_LENGTH_SECS: f64 = 5.0 * 3_600.0;

/// The moment a file shows: how far into the count, and the local time the file says.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// 0 (polls closed) to 1 (the last section is in).
    pub tau: f64,
    pub date: &'static str,
    /// `hh:mm:ss`.
    pub time: String,
}

impl Stamp {
    /// The `source_time` of the documents built from a file of this stamp: the header's date
    /// and time as ISO 8601 local time, `YYYY-MM-DDThh:mm:ss`.
    pub fn source_time(&self) -> String {
        let mut parts = self.date.split('/');
        let (d, m, y) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        format!("{y}-{m}-{d}T{}", self.time)
    }

    pub fn at(tau: f64) -> Self {
        let secs = NIGHT_START_SECS + (tau.clamp(0.0, 1.0) * NIGHT_LENGTH_SECS).round() as u64;
        Stamp {
            tau,
            date: NIGHT_DATE,
            time: format!("{:02}:{:02}:{:02}", secs / 3_600, secs / 60 % 60, secs % 60),
        }
    }
}

/// `part / whole` in hundredths of a percent, rounded down, so that 100,00 % means everything
/// (0 when `whole` is 0).
pub fn hundredths_floor(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (u128::from(part) * 10_000 / u128::from(whole)) as u64
    }
}

/// `part / whole` in hundredths of a percent, rounded half up (0 when `whole` is 0).
pub fn hundredths_round(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        let (part, whole) = (u128::from(part), u128::from(whole));
        ((part * 20_000 + whole) / (2 * whole)) as u64
    }
}

/// Append a count with dot thousands: `8.441.886`.
fn push_count(out: &mut String, n: u64) {
    // u64::MAX has 20 digits and 6 separators.
    let mut buf = [0u8; 26];
    let mut i = buf.len();
    let mut n = n;
    let mut digits = 0;
    loop {
        if digits > 0 && digits % 3 == 0 {
            i -= 1;
            buf[i] = b'.';
        }
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        digits += 1;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
}

/// Append a quoted count: `"8.441.886"`.
fn push_count_string(out: &mut String, n: u64) {
    out.push('"');
    push_count(out, n);
    out.push('"');
}

/// Append each field's text (its key, with the comma or brace before it) and its quoted count.
fn push_counts(out: &mut String, fields: &[(&str, u64)]) {
    for &(key, n) in fields {
        out.push_str(key);
        push_count_string(out, n);
    }
}

/// Append a quoted percentage from hundredths: `"39,81%"`.
fn push_percent_string(out: &mut String, hundredths: u64) {
    out.push('"');
    push_count(out, hundredths / 100);
    out.push(',');
    let frac = hundredths % 100;
    out.push(char::from(b'0' + (frac / 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
    out.push_str("%\"");
}

fn push_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

/// Bytes per city and per candidate of a consolidated file, to size its buffer at once.
const CITY_BYTES: usize = 200;
const CANDIDATE_BYTES: usize = 150;

/// The national consolidated file of `office` at `stamp`.
pub fn consolidated(election: &Election, office: Office, stamp: &Stamp) -> Bytes {
    let tallies: Vec<Tally> = election
        .cities()
        .iter()
        .map(|c| c.tally(office, stamp.tau))
        .collect();
    let (s, ts) = tallies
        .iter()
        .fold((0, 0), |(s, ts), t| (s + t.sections, ts + t.total_sections));
    let finished = tallies.iter().all(Tally::finished);
    let candidates = match office {
        Office::Mayor => election.mayor_candidates,
        Office::Councillor => election.council_candidates,
    };
    let mut out = String::with_capacity(tallies.len() * CITY_BYTES + candidates * CANDIDATE_BYTES);
    out.push_str(r#"{"last_updated":{"date":""#);
    out.push_str(stamp.date);
    out.push_str(r#"","time":""#);
    out.push_str(&stamp.time);
    out.push_str(r#"","turno":1,"apuracao_total":"#);
    push_percent_string(&mut out, hundredths_floor(s, ts));
    out.push_str(r#","encerrado":"#);
    push_bool(&mut out, finished);
    out.push_str(r#"},"municipios":{"#);
    for (i, (city, tally)) in election.cities().iter().zip(&tallies).enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_city(&mut out, city, office, tally);
    }
    out.push_str("}}");
    Bytes::from(out)
}

fn push_city(out: &mut String, city: &City, office: Office, tally: &Tally) {
    out.push('"');
    // The key is a code, not a count: no thousands dots.
    out.push_str(&city.municipality.ibge.to_string());
    out.push_str(r#"":{"nm":"#);
    out.push_str(&city.feed_name);
    push_counts(
        out,
        &[
            (r#","a":"#, tally.abstentions),
            (r#","b":"#, tally.blank),
            (r#","n":"#, tally.null),
            (r#","t":"#, tally.turnout()),
        ],
    );
    out.push_str(r#","pst":"#);
    push_percent_string(out, hundredths_floor(tally.sections, tally.total_sections));
    push_counts(
        out,
        &[
            (r#","s":"#, tally.sections),
            (r#","ts":"#, tally.total_sections),
        ],
    );
    out.push_str(r#","f":"#);
    push_bool(out, tally.finished());
    out.push_str(r#","c":["#);
    let candidates = city.candidates(office);
    let order = ranking(candidates, &tally.votes);
    let marks = city.marks(office, tally, &order);
    let valid = tally.valid();
    for (n, &i) in order.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(r#"{"v":"#);
        push_count_string(out, tally.votes[i]);
        out.push_str(r#","tp":"#);
        push_percent_string(out, hundredths_round(tally.votes[i], valid));
        out.push_str(r#","e":"#);
        push_bool(out, marks[i] == Mark::Elected);
        out.push_str(r#","st":"#);
        push_bool(out, marks[i] == Mark::SecondRound);
        out.push(',');
        out.push_str(&candidates[i].fixed_fields);
        out.push('}');
    }
    out.push_str("]}");
}

/// The zone file of `city` at `stamp`: its mayor race, in all and zone by zone.
pub fn zone_file(city: &City, stamp: &Stamp) -> Bytes {
    let (total, zones) = city.mayor_tally_by_zone(stamp.tau);
    let order = ranking(&city.mayors, &total.votes);
    let marks = city.marks(Office::Mayor, &total, &order);
    let m = &city.municipality;
    let mut out = String::with_capacity(1_024 + zones.len() * 120 * (city.mayors.len() + 1));
    out.push_str(r#"{"atualizacao":{"data":""#);
    out.push_str(stamp.date);
    out.push_str(r#"","hora":""#);
    out.push_str(&stamp.time);
    out.push_str(r#"","turno":1,"apuracao_total":"#);
    push_percent_string(
        &mut out,
        hundredths_floor(total.sections, total.total_sections),
    );
    out.push_str(r#","encerrado":"#);
    push_bool(&mut out, total.finished());
    out.push_str(r#","segundo_turno":false,"cidade":"#);
    out.push_str(&json_string(&m.name));
    out.push_str(r#","estado":"#);
    out.push_str(&json_string(&m.uf));
    out.push_str(r#"},"total":"#);
    // The provider spells the city total's vote field with a double s.
    push_zone_block(&mut out, city, &total, &order, "total_votos_validoss");
    out.push_str(r#","zonas":{"#);
    for (n, (zone, tally)) in city.zones.iter().zip(&zones).enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"{:04}\":", zone.number));
        let zone_order = ranking(&city.mayors, &tally.votes);
        push_zone_block(&mut out, city, tally, &zone_order, "total_votos_validos");
    }
    out.push_str(r#"},"candidatos":{"#);
    for (n, &i) in order.iter().enumerate() {
        let c = &city.mayors[i];
        if n > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#""{num}":{{"numero_candidato":"{num}","nome_candidato":{},"sigla_partido":{},"eleito":{},"segundo_turno":{},"cor_partido":"{}","thumb_candidato":{},"id_candidato":"{num}"}}"#,
            json_string(&c.name),
            json_string(c.party.abbr),
            marks[i] == Mark::Elected,
            marks[i] == Mark::SecondRound,
            c.party.color,
            json_string(&photo(&c.name)),
            num = c.number,
        ));
    }
    out.push_str("}}");
    Bytes::from(out)
}

fn push_zone_block(out: &mut String, city: &City, tally: &Tally, order: &[usize], field: &str) {
    push_counts(
        out,
        &[
            (r#"{"brancos":"#, tally.blank),
            (r#","nulos":"#, tally.null),
            (r#","total":"#, tally.turnout()),
        ],
    );
    out.push_str(r#","candidatos":["#);
    let valid = tally.valid();
    for (n, &i) in order.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"id_candidato":"{}","{field}":"#,
            city.mayors[i].number
        ));
        push_count_string(out, tally.votes[i]);
        out.push_str(r#","total_percentual":"#);
        push_percent_string(out, hundredths_round(tally.votes[i], valid));
        out.push('}');
    }
    out.push_str("]}");
}

/// The municipality list in the consolidated format, `{"<IBGE>": {"n": name, "e": UF}}`, in
/// IBGE order.
pub fn municipality_list(list: &MunicipalityList) -> Bytes {
    let mut all: Vec<_> = list.iter().collect();
    all.sort_by_key(|m| m.ibge);
    let mut out = String::with_capacity(all.len() * 48);
    out.push('{');
    for (i, m) in all.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#""{}":{{"n":{},"e":{}}}"#,
            m.ibge,
            json_string(&m.name),
            json_string(&m.uf)
        ));
    }
    out.push('}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Instant;

    use super::*;
    use crate::tests::shared;
    use crate::{SimConfig, Simulator};
    use apura_formats::feed::consolidated::{self, ConsolidatedFeed};
    use apura_formats::feed::zones;
    use apura_formats::model::{Status, ZoneResult};

    #[test]
    fn numbers_are_written_the_brazilian_way() {
        let mut s = String::new();
        for n in [0, 7, 999, 1_000, 12_059, 8_441_886, u64::MAX] {
            push_count_string(&mut s, n);
            s.push(' ');
        }
        assert_eq!(
            s,
            r#""0" "7" "999" "1.000" "12.059" "8.441.886" "18.446.744.073.709.551.615" "#
        );
        let mut p = String::new();
        for h in [0, 5, 3_981, 10_000] {
            push_percent_string(&mut p, h);
        }
        assert_eq!(p, r#""0,00%""0,05%""39,81%""100,00%""#);
        assert_eq!(hundredths_floor(9_999, 10_000), 9_999);
        assert_eq!(hundredths_floor(99_999, 100_000), 9_999);
        assert_eq!(hundredths_round(2, 3), 6_667);
        assert_eq!(hundredths_round(1, 0), 0);
    }

    #[test]
    fn the_clock_runs_a_five_hour_night() {
        assert_eq!(Stamp::at(0.0).time, "17:00:00");
        assert_eq!(Stamp::at(0.5).time, "19:30:00");
        assert_eq!(Stamp::at(1.0).time, "22:00:00");
        assert_eq!(Stamp::at(0.0).date, "01/10/2028");
    }

    fn parse(sim: &Simulator, tick: u64, office: Office) -> ConsolidatedFeed {
        let bytes = sim.render_tick(tick, office);
        consolidated::parse(&bytes, "simulated", office, sim.municipalities())
            .unwrap_or_else(|e| panic!("tick {tick} {office:?}: {e}"))
    }

    /// Candidate votes plus blank and null make the total, exactly, in every city.
    /// The last tick's file of `office`: every voting city, finished, its figures adding up.
    fn final_feed(sim: &Simulator, office: Office) -> ConsolidatedFeed {
        let feed = parse(sim, sim.last_tick(), office);
        assert_eq!(feed.races.len(), 5_568);
        assert!(feed.finished);
        assert_identities(&feed);
        feed
    }

    fn assert_identities(feed: &ConsolidatedFeed) {
        for race in &feed.races {
            let t = &race.totals;
            assert_eq!(t.valid + t.blank + t.null, t.turnout, "{}", race.ibge);
            let sum: u64 = race.candidates.iter().map(|c| c.votes).sum();
            assert_eq!(sum, t.valid);
            let (s, ts) = (
                race.progress.sections_counted.unwrap(),
                race.progress.sections_total.unwrap(),
            );
            assert!(ts >= 1 && s <= ts);
            assert_eq!(race.finished, s == ts);
        }
    }

    #[test]
    fn tick_zero_lists_every_candidate_with_zero_votes() {
        let sim = shared();
        let feed = parse(sim, 0, Office::Mayor);
        assert_eq!(feed.races.len(), 5_568);
        assert_eq!(feed.percent, 0.0);
        assert!(!feed.finished);
        assert_eq!(feed.source_time.as_deref(), Some("2028-10-01T17:00:00"));
        for race in &feed.races {
            assert!(!race.candidates.is_empty());
            assert!(
                race.candidates
                    .iter()
                    .all(|c| c.votes == 0 && c.percent == 0.0)
            );
            assert!(
                race.candidates
                    .iter()
                    .all(|c| !c.elected && c.status.is_none())
            );
            assert_eq!(race.totals.turnout, 0);
            assert_eq!(race.progress.percent, 0.0);
        }
        assert_identities(&feed);
    }

    #[test]
    fn the_final_mayor_file_elects_one_mayor_or_sends_two_to_a_second_round() {
        let sim = shared();
        let feed = final_feed(sim, Office::Mayor);
        assert_eq!(feed.percent, 100.0);
        assert!(feed.unknown_cities.is_empty());
        let mut runoffs = 0;
        for race in &feed.races {
            assert!(race.finished);
            assert_eq!(race.progress.percent, 100.0);
            let elected = race.candidates.iter().filter(|c| c.elected).count();
            let second = race
                .candidates
                .iter()
                .filter(|c| c.status == Some(Status::SecondRound))
                .count();
            assert!(
                (elected, second) == (1, 0) || (elected, second) == (0, 2),
                "{}: {elected} elected, {second} in the second round",
                race.ibge
            );
            if second == 2 {
                runoffs += 1;
                let m = sim.municipalities().get(race.ibge).unwrap();
                assert!(m.capital || race.totals.electorate.unwrap() > 200_000);
                assert!(race.candidates[0].votes * 2 <= race.totals.valid);
            }
            let pct: f64 = race.candidates.iter().map(|c| c.percent).sum();
            assert!((pct - 100.0).abs() < 0.1, "{}: {pct}", race.ibge);
            for c in &race.candidates {
                assert!(c.number.is_some() && c.color.is_some() && c.photo.is_some());
            }
        }
        eprintln!("{runoffs} second rounds");
        assert!(runoffs >= 5, "{runoffs} second rounds");
        let sp = feed.races.iter().find(|r| r.ibge == 3550308).unwrap();
        assert!(sp.totals.electorate.unwrap() > 9_000_000);
        assert!(sp.candidates.len() >= 9);
    }

    #[test]
    fn the_final_councillor_file_elects_the_seats() {
        let sim = shared();
        let feed = final_feed(sim, Office::Councillor);
        let election = &sim.election;
        for race in &feed.races {
            let city = election
                .cities()
                .iter()
                .find(|c| c.municipality.ibge == race.ibge)
                .unwrap();
            let elected = race.candidates.iter().filter(|c| c.elected).count();
            assert_eq!(elected, city.council.seats, "{}", race.ibge);
            // Elected candidates head the list.
            assert!(race.candidates[..elected].iter().all(|c| c.elected));
            for c in &race.candidates {
                let n = c.number.unwrap();
                assert!((10_000..100_000).contains(&n));
                assert!(
                    crate::candidates::PARTIES
                        .iter()
                        .any(|p| p.number == n / 1_000 && p.abbr == c.party)
                );
            }
        }
    }

    #[test]
    fn mid_count_small_towns_are_ahead_of_capitals_and_nobody_is_elected_early() {
        let sim = shared();
        let tick = sim.last_tick() / 4;
        let feed = parse(sim, tick, Office::Mayor);
        assert_identities(&feed);
        assert!(
            feed.percent > 0.0 && feed.percent < 100.0,
            "{}",
            feed.percent
        );
        assert!(!feed.finished);
        let electorate: HashMap<u32, u64> = sim
            .election
            .cities()
            .iter()
            .map(|c| (c.municipality.ibge, c.electorate))
            .collect();
        let mut towns = (0.0, 0);
        let mut capitals = (0.0, 0);
        for race in &feed.races {
            let p = race.progress.percent;
            assert!((0.0..=100.0).contains(&p));
            if !race.finished {
                assert!(
                    race.candidates
                        .iter()
                        .all(|c| !c.elected && c.status.is_none())
                );
            }
            let m = sim.municipalities().get(race.ibge).unwrap();
            if m.capital {
                capitals = (capitals.0 + p, capitals.1 + 1);
                assert!(!race.finished, "{} finished early", m.name);
            } else if electorate[&race.ibge] < 20_000 {
                towns = (towns.0 + p, towns.1 + 1);
            }
        }
        let towns = towns.0 / f64::from(towns.1);
        let capitals = capitals.0 / f64::from(capitals.1);
        eprintln!(
            "tick {tick}: towns {towns:.1} %, capitals {capitals:.1} %, national {}",
            feed.percent
        );
        assert!(towns > capitals, "towns {towns} capitals {capitals}");
    }

    #[test]
    fn votes_never_go_down_between_ticks() {
        let sim = shared();
        let mut previous: HashMap<(u32, u32), u64> = HashMap::new();
        let mut totals: HashMap<u32, (u64, u64, u64, u64)> = HashMap::new();
        for tick in [0, 3, 4, 10, 11, 20, 35, 50, 59, 60] {
            let feed = parse(sim, tick, Office::Mayor);
            for race in &feed.races {
                for c in &race.candidates {
                    let key = (race.ibge, c.number.unwrap());
                    let before = previous.insert(key, c.votes).unwrap_or(0);
                    assert!(c.votes >= before, "{key:?} went down at tick {tick}");
                }
                let t = &race.totals;
                let now = (t.turnout, t.blank, t.null, t.abstentions);
                let before = totals.insert(race.ibge, now).unwrap_or_default();
                assert!(now.0 >= before.0 && now.1 >= before.1 && now.2 >= before.2);
                assert!(now.3 >= before.3);
            }
        }
    }

    #[test]
    fn councillor_votes_never_go_down_either() {
        let sim = shared();
        let mut previous: HashMap<(u32, u32), u64> = HashMap::new();
        for tick in [7, 8, 30] {
            let feed = parse(sim, tick, Office::Councillor);
            assert_identities(&feed);
            for race in &feed.races {
                for c in &race.candidates {
                    let key = (race.ibge, c.number.unwrap());
                    let before = previous.insert(key, c.votes).unwrap_or(0);
                    assert!(c.votes >= before, "{key:?} went down at tick {tick}");
                }
            }
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = shared();
        let b = Simulator::new(SimConfig::default());
        let c = Simulator::new(SimConfig {
            seed: 7,
            ..SimConfig::default()
        });
        for tick in [0, 17, 60] {
            assert_eq!(
                a.render_tick(tick, Office::Mayor),
                b.render_tick(tick, Office::Mayor)
            );
            assert_eq!(
                a.render_zone(tick, "sp", "sao-paulo"),
                b.render_zone(tick, "sp", "sao-paulo")
            );
        }
        assert_eq!(
            a.render_tick(23, Office::Councillor),
            b.render_tick(23, Office::Councillor)
        );
        assert_ne!(
            a.render_tick(17, Office::Mayor),
            c.render_tick(17, Office::Mayor)
        );
        assert_ne!(
            a.render_tick(60, Office::Mayor),
            c.render_tick(60, Office::Mayor)
        );
        // The geography does not depend on the seed.
        assert_eq!(a.render_municipalities(), c.render_municipalities());
    }

    #[test]
    fn zone_files_add_up_to_the_mayor_file() {
        let sim = shared();
        let cities = sim.zone_cities();
        assert!(cities.len() >= 60, "{} cities with zones", cities.len());
        assert!(cities.contains(&("sp".to_string(), "sao-paulo".to_string())));
        assert!(!cities.contains(&("df".to_string(), "brasilia".to_string())));
        assert!(sim.render_zone(0, "df", "brasilia").is_none());
        for tick in [0, 25, 57, 60] {
            let feed = parse(sim, tick, Office::Mayor);
            let races: HashMap<u32, _> = feed.races.iter().map(|r| (r.ibge, r)).collect();
            for (uf, slug) in &cities {
                let bytes = sim.render_zone(tick, uf, slug).unwrap();
                let z = zones::parse(&bytes, slug).unwrap_or_else(|e| panic!("{slug}: {e}"));
                let m = sim
                    .municipalities()
                    .iter()
                    .find(|m| &m.slug == slug && m.uf.eq_ignore_ascii_case(uf))
                    .unwrap();
                let race = races[&m.ibge];
                assert_eq!(z.total.turnout, race.totals.turnout);
                assert_eq!(z.total.blank, race.totals.blank);
                assert_eq!(z.total.null, race.totals.null);
                assert_eq!(z.total.valid, race.totals.valid);
                assert_eq!(z.finished, race.finished);
                assert_eq!(z.percent, race.progress.percent);
                assert!((2..=60).contains(&z.zones.len()));
                let fields: [fn(&ZoneResult) -> u64; 4] =
                    [|r| r.turnout, |r| r.blank, |r| r.null, |r| r.valid];
                for field in fields {
                    let sum: u64 = z.zones.iter().map(field).sum();
                    assert_eq!(sum, field(&z.total), "{slug} at tick {tick}");
                }
                for c in &race.candidates {
                    let n = c.number.unwrap();
                    let in_zones: u64 = z
                        .zones
                        .iter()
                        .flat_map(|zr| &zr.results)
                        .filter(|v| v.number == n)
                        .map(|v| v.votes)
                        .sum();
                    assert_eq!(in_zones, c.votes, "{slug} candidate {n} at tick {tick}");
                    let zc = z.candidates.iter().find(|zc| zc.number == Some(n)).unwrap();
                    assert_eq!((zc.elected, zc.status), (c.elected, c.status));
                }
            }
        }
        let sp = sim.render_zone(60, "sp", "sao-paulo").unwrap();
        let z = zones::parse(&sp, "sp").unwrap();
        assert!((56..=60).contains(&z.zones.len()));
    }

    #[test]
    fn municipality_list_round_trips() {
        let sim = shared();
        let list = MunicipalityList::parse(&sim.render_municipalities(), "served").unwrap();
        assert_eq!(list.len(), 5_570);
        for m in sim.municipalities().iter() {
            let back = list.get(m.ibge).unwrap();
            assert_eq!(
                (&back.name, &back.uf, &back.slug),
                (&m.name, &m.uf, &m.slug)
            );
        }
    }

    /// Render time and size of one tick; informative (run with `--release --nocapture`).
    #[test]
    fn render_time_of_one_tick() {
        let sim = shared();
        for office in [Office::Mayor, Office::Councillor] {
            let started = Instant::now();
            let bytes = sim.render_tick(sim.last_tick() / 2, office);
            eprintln!(
                "{office:?}: {} bytes in {:?}",
                bytes.len(),
                started.elapsed()
            );
        }
        let started = Instant::now();
        let cities = sim.zone_cities();
        let total: usize = cities
            .iter()
            .map(|(uf, slug)| sim.render_zone(30, uf, slug).unwrap().len())
            .sum();
        eprintln!(
            "{} zone files: {total} bytes in {:?}",
            cities.len(),
            started.elapsed()
        );
    }
}
