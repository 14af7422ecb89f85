//! The real TSE samples of `../shared/data` (read in place, never copied) through the TSE
//! parsers: skipped with a message when the folder is absent. Every expected figure is read
//! from the same file with plain `serde_json`, independently of apura's parsers.

use std::path::PathBuf;

use apura::feed::tse::catalogue::Catalogue;
use apura::feed::tse::config::MunicipalityConfig;
use apura::feed::tse::{progress, unified};
use apura::model::{Office, Status};
use serde_json::Value;

const CATALOGUE: &str = "ea11-simulado-2026-ele-c.json";
const CONFIG: &str = "ea12-simulado-2026-mun-e021272-cm-excerpt.json";
const PROGRESS: &str = "ea15-simulado-2026-rj-e021272-ab.json";
const PROPORTIONAL: &str = "ea20-simulado-2026-rj60011-c0007-e021272-u.json";
const MAJORITARIAN: &str = "ea20-official-2026-br-presidente-uf-ac-partial.json";

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("APURA_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.join(MAJORITARIAN).is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: no TSE reference data at {} (set APURA_SHARED_DATA)",
            dir.display()
        );
        None
    }
}

fn read(dir: &std::path::Path, name: &str) -> (Vec<u8>, Value) {
    let bytes = std::fs::read(dir.join(name)).unwrap();
    let value = serde_json::from_slice(&bytes).unwrap();
    (bytes, value)
}

/// `"216488"` → 216488, independently of apura's number parser.
fn int(v: &Value) -> u64 {
    v.as_str().unwrap().parse().unwrap()
}

/// Every candidate of a unified file, flattened by hand.
fn candidates(file: &Value) -> Vec<&Value> {
    file["carg"][0]["agr"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["par"].as_array().unwrap())
        .flat_map(|p| p["cand"].as_array().unwrap())
        .collect()
}

#[test]
fn the_catalogue_lists_the_elections_and_their_second_rounds() {
    let Some(dir) = shared_data() else { return };
    let (bytes, raw) = read(&dir, CATALOGUE);
    let c = Catalogue::parse(&bytes, CATALOGUE).unwrap();
    let raw_elections: Vec<&Value> = raw["pl"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["e"].as_array().unwrap())
        .collect();
    assert_eq!(c.elections.len(), raw_elections.len());
    for e in raw_elections {
        let code = e["cd"].as_str().unwrap();
        let parsed = c.election(code).unwrap();
        let cdt2 = e["cdt2"].as_str().unwrap();
        assert_eq!(
            parsed.round2.as_deref().unwrap_or(""),
            cdt2.trim_start_matches('0')
        );
        let offices = e["abr"][0]["cp"].as_array().unwrap();
        assert_eq!(parsed.offices.len(), offices.len());
        for (o, raw_o) in parsed.offices.iter().zip(offices) {
            assert_eq!(o.code.to_string(), raw_o["cd"].as_str().unwrap());
            assert_eq!(o.proportional, raw_o["tp"] == "2");
        }
    }
}

#[test]
fn the_municipality_configuration_builds_the_list() {
    let Some(dir) = shared_data() else { return };
    let (bytes, raw) = read(&dir, CONFIG);
    let config = MunicipalityConfig::parse(&bytes, CONFIG).unwrap();
    let list = config.list(CONFIG).unwrap();
    let raw_cities: Vec<(&Value, &Value)> = raw["abr"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["mu"].as_array().unwrap().iter().map(move |c| (s, c)))
        .collect();
    assert_eq!(list.len(), raw_cities.len());
    for (state, city) in raw_cities {
        let m = list.by_tse(city["cd"].as_str().unwrap()).unwrap();
        assert_eq!(m.ibge.to_string(), city["cdi"].as_str().unwrap());
        assert_eq!(m.uf, state["cd"].as_str().unwrap().to_uppercase());
        assert_eq!(m.capital, city["c"] == "s");
        // Upper-case names are title-cased; the slug is the contract's.
        let upper = city["nm"].as_str().unwrap();
        assert_eq!(m.name.to_uppercase(), upper);
        assert_ne!(m.name, upper);
        assert_eq!(m.slug, apura::model::slug(upper));
        let (_, parsed) = config.cities().find(|(_, c)| c.ibge == m.ibge).unwrap();
        assert_eq!(parsed.zones.len(), city["z"].as_array().unwrap().len());
    }
}

#[test]
fn the_progress_file_gives_every_row_and_its_fingerprint() {
    let Some(dir) = shared_data() else { return };
    let (bytes, raw) = read(&dir, PROGRESS);
    let p = progress::parse(&bytes, PROGRESS).unwrap();
    let rows = raw["abr"].as_array().unwrap();
    assert_eq!(p.rows.len(), rows.len());
    let mut fingerprints = std::collections::HashSet::new();
    for (row, raw_row) in p.rows.iter().zip(rows) {
        assert_eq!(
            row.progress.sections_counted,
            Some(int(&raw_row["s"]["st"]))
        );
        assert_eq!(row.progress.sections_total, Some(int(&raw_row["s"]["ts"])));
        assert_eq!(row.electorate.total, Some(int(&raw_row["e"]["te"])));
        assert!(row.totalized_at.is_some());
        fingerprints.insert(row.fingerprint().clone());
    }
    assert_eq!(fingerprints.len(), rows.len());
    assert_eq!(
        p.municipalities().count(),
        rows.iter().filter(|r| r["tpabr"] == "mun").count()
    );
    let state = p.state().unwrap();
    assert_eq!(
        state.code.to_lowercase(),
        PROGRESS.split('-').nth(3).unwrap()
    );
}

/// The partial majoritarian file captured on count night: coalitions, a federation, vices; every
/// identity holds.
#[test]
fn the_majoritarian_file_parses_and_every_identity_holds() {
    let Some(dir) = shared_data() else { return };
    let (bytes, raw) = read(&dir, MAJORITARIAN);
    let u = unified::parse_validated(&bytes, MAJORITARIAN).unwrap();
    assert!(u.check().is_empty(), "{:?}", u.check());
    let v = &raw["v"];
    assert_eq!(
        int(&v["tv"]),
        int(&v["vvc"]) + int(&v["vb"]) + int(&v["tvn"])
    );
    let cargo: u32 = raw["carg"][0]["cd"].as_str().unwrap().parse().unwrap();
    let race = u.race_of(1_200_000, cargo, Office::Mayor).unwrap();
    let raw_candidates = candidates(&raw);
    assert_eq!(race.candidates.len(), raw_candidates.len());
    let valid = race.valid_candidate_votes();
    assert_eq!(valid, int(&v["vv"]));
    assert_eq!(race.totals.valid, int(&v["vv"]));
    assert_eq!(race.totals.turnout, int(&v["tv"]));
    assert_eq!(race.totals.blank, int(&v["vb"]));
    assert_eq!(race.totals.null, int(&v["tvn"]));
    assert_eq!(race.progress.sections_counted, Some(int(&raw["s"]["st"])));
    assert_eq!(race.finished, raw["and"] == "f");
    assert!(!race.finished, "captured at a partial count");
    for w in race.candidates.windows(2) {
        assert!(w[0].votes >= w[1].votes, "most votes first");
    }
    for c in &race.candidates {
        let src = raw_candidates
            .iter()
            .find(|r| r["n"].as_str().unwrap() == c.number.unwrap().to_string())
            .unwrap();
        assert_eq!(c.votes, int(&src["vap"]));
        assert_eq!(c.name, src["nmu"].as_str().unwrap());
        assert_eq!(c.elected, src["e"] == "s");
        assert_eq!(c.status, None, "no status during the count");
        let pvap: f64 = src["pvap"]
            .as_str()
            .unwrap()
            .replace(',', ".")
            .parse()
            .unwrap();
        assert_eq!(c.percent, pvap);
    }
    let coalitions = race
        .candidates
        .iter()
        .filter(|c| c.coalition.is_some())
        .count();
    let raw_coalitions: usize = raw["carg"][0]["agr"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["tp"] == "c")
        .map(|a| {
            a["par"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["cand"].as_array().unwrap().len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(coalitions, raw_coalitions);
    assert!(coalitions > 0);
    let office = u.office(cargo).unwrap();
    assert_eq!(
        office.federations.len(),
        raw["carg"][0]["fed"].as_array().unwrap().len()
    );
    assert!(office.candidates.iter().any(|c| c.federation.is_some()));
    for c in &office.candidates {
        assert_eq!(c.running_mates.len(), 1, "one vice each");
        assert_eq!(c.running_mates[0].kind, "v");
    }
}

/// The rehearsal's proportional file (the councillor shape). It was cut to four parties and a
/// few candidates each before it was saved, so the two sums over candidates and parties cannot
/// hold; every identity over the totals does.
#[test]
fn the_proportional_file_parses_and_its_total_identities_hold() {
    let Some(dir) = shared_data() else { return };
    let (bytes, raw) = read(&dir, PROPORTIONAL);
    let u = unified::parse(&bytes, PROPORTIONAL).unwrap();
    let problems = u.check();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("the valid candidates' votes add up to"));
    assert!(problems[1].starts_with("the parties' list votes add up to"));
    let v = &raw["v"];
    assert_eq!(
        int(&v["tv"]),
        int(&v["vvc"]) + int(&v["vb"]) + int(&v["tvn"])
    );
    assert_eq!(int(&v["vv"]), int(&v["vnom"]) + int(&v["vl"]));
    assert_eq!(
        int(&v["vvc"]),
        int(&v["vv"]) + int(&v["van"]) + int(&v["vansj"])
    );
    let cargo: u32 = raw["carg"][0]["cd"].as_str().unwrap().parse().unwrap();
    let race = u.race_of(3_304_557, cargo, Office::Councillor).unwrap();
    assert!(race.finished);
    assert_eq!(race.totals.valid, int(&v["vv"]));
    let raw_candidates = candidates(&raw);
    assert_eq!(race.candidates.len(), raw_candidates.len());
    for c in &race.candidates {
        let src = raw_candidates
            .iter()
            .find(|r| r["n"].as_str().unwrap() == c.number.unwrap().to_string())
            .unwrap();
        assert_eq!(c.elected, src["e"] == "s");
        let st = src["st"].as_str().unwrap();
        let want = if st.starts_with("Eleito") {
            Some(Status::Elected)
        } else if st == "Suplente" {
            Some(Status::Substitute)
        } else if st == "Não eleito" {
            Some(Status::NotElected)
        } else {
            None
        };
        assert_eq!(c.status, want, "{st}");
        assert_eq!(c.valid, src["dvt"] == "Válido");
    }
    let lists: u64 = u
        .office(cargo)
        .unwrap()
        .parties
        .iter()
        .filter_map(|p| p.list)
        .sum();
    let raw_lists: u64 = raw["carg"][0]["agr"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["par"].as_array().unwrap())
        .map(|p| int(&p["tvtl"]))
        .sum();
    assert_eq!(lists, raw_lists);
}
