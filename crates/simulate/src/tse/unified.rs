//! The unified result of a city (or one zone of its mayor race) for one office, in the
//! authority's `"k" : "v"` spacing.

use std::time::SystemTime;

use bytes::Bytes;

use super::city::{FEDERATIONS, TseCity, federation_of};
use super::night::zone_number;
use super::race::{CandidateView, RaceKey, RaceView, percent_text};
use crate::Simulator;
use crate::candidates::{PARTIES, Party};
use crate::count::City;
use crate::files::{Stamp, hundredths_floor, hundredths_round};
use crate::json::json_string;

impl Simulator {
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
        let (round, idx, key) = self.unified_race(election, code, cargo, zone)?;
        let layout = self.tse_layout();
        let city = &self.election.cities()[idx];
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

    /// The `idg` a unified file has at `tick` without writing it (for conditional requests).
    pub fn unified_idg(
        &self,
        election: &str,
        code: &str,
        cargo: u32,
        zone: Option<&str>,
        tick: u64,
    ) -> Option<String> {
        let (round, idx, key) = self.unified_race(election, code, cargo, zone)?;
        Some(self.idg(self.last_change_checked(idx, key, round, tick)?))
    }

    /// The race a unified file's name asks for: its round, voting city index and race; `None`
    /// for an unknown election or city, or an office or zone it does not have.
    fn unified_race(
        &self,
        election: &str,
        code: &str,
        cargo: u32,
        zone: Option<&str>,
    ) -> Option<(u8, usize, RaceKey)> {
        if self.tse_options.missing_office.map(|m| m.cargo()) == Some(cargo) {
            return None;
        }
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
        Some((round, idx, key))
    }

    /// The tick a race's file was last rewritten as of `tick`, if it is published.
    fn last_change_checked(&self, idx: usize, key: RaceKey, round: u8, tick: u64) -> Option<u64> {
        self.published(idx, round, tick)
            .then(|| self.last_change(idx, key, round, tick))
    }
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

pub(super) fn party_number(abbr: &str) -> u32 {
    party(abbr).map_or(0, |p| p.number)
}

/// The party's name as the files write it (the simulator knows only abbreviations).
fn party_name(abbr: &str) -> String {
    format!("PARTIDO {}", abbr.to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::super::ELECTION;
    use super::super::tests::{code, sim};
    use apura_formats::feed::tse::{config::MunicipalityConfig, unified};
    use apura_formats::model::{Office, Status};

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
}
