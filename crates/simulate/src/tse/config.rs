//! The municipality configuration and the election catalogue: the files that say which cities,
//! zones, elections and offices there are.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::night::zone_number;
use super::{CYCLE, ELECTION, ELECTION_ROUND2, ROUND2_DATE};
use crate::Simulator;
use crate::json::json_string;
use apura_formats::feed::municipalities::uf_name;

impl Simulator {
    /// The municipality configuration (the same for both rounds): every municipality of the
    /// list, by state, with its zones.
    pub fn render_config(&self, election: &str) -> Option<Bytes> {
        let layout = self.tse_layout();
        layout.election_round(election)?;
        let voting: HashMap<u32, usize> = self
            .election
            .cities()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.municipality.ibge, i))
            .collect();
        let mut by_uf: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for m in self.list.iter() {
            by_uf.entry(m.uf.to_ascii_lowercase()).or_default().push(m);
        }
        let mut out = String::with_capacity(self.list.len() * 120);
        out.push_str(r#"{ "dg" : "20/09/2028", "hg" : "12:00:00", "idg" : ""#);
        out.push_str(&self.idg(0));
        out.push_str(r#"", "f" : "s", "abr" : [ "#);
        for (n, (uf, mut cities)) in by_uf.into_iter().enumerate() {
            cities.sort_by_key(|m| m.ibge);
            if n > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!(
                r#"{{ "cd" : "{uf}", "ds" : {}, "mu" : [ "#,
                json_string(&uf_name(&uf.to_ascii_uppercase()).to_uppercase())
            ));
            for (k, m) in cities.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                let zones: Vec<String> = voting
                    .get(&m.ibge)
                    .map(|&i| {
                        let city = &self.election.cities()[i];
                        (0..city.zones.len())
                            .map(|z| format!("\"{}\"", zone_number(city, z)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push_str(&format!(
                    r#"{{ "cd" : "{}", "cdi" : "{}", "nm" : {}, "c" : "{}", "z" : [ {} ] }}"#,
                    layout.codes[&m.ibge],
                    m.ibge,
                    json_string(&m.name.to_uppercase()),
                    if m.capital { "s" } else { "n" },
                    zones.join(", ")
                ));
            }
            out.push_str(" ] }");
        }
        out.push_str(" ] }");
        Some(Bytes::from(out))
    }

    /// The election catalogue: the night's election (and its second round, when played), with
    /// the mayor (11, majoritarian) and councillor (13, proportional) offices.
    pub fn render_catalogue(&self) -> Bytes {
        let layout = self.tse_layout();
        let round2 = if layout.second_round {
            ELECTION_ROUND2
        } else {
            ""
        };
        let mut elections = format!(
            r#"{{ "cd" : "{ELECTION}", "cdt2" : "{round2}", "sqele" : "1", "nm" : "Eleição Municipal Simulada - 2028 1º Turno", "t" : "1", "tp" : "2", "abr" : [ {{ "cd" : "br", "cp" : [ {{ "cd" : "11", "ds" : "Prefeito", "tp" : "1" }}, {{ "cd" : "13", "ds" : "Vereador", "tp" : "2" }} ] }} ] }}"#
        );
        if layout.second_round {
            elections.push_str(&format!(
                r#", {{ "cd" : "{ELECTION_ROUND2}", "cdt2" : "", "sqele" : "1", "nm" : "Eleição Municipal Simulada - 2028 2º Turno", "t" : "2", "tp" : "2", "abr" : [ {{ "cd" : "br", "cp" : [ {{ "cd" : "11", "ds" : "Prefeito", "tp" : "1" }} ] }} ] }}"#
            ));
        }
        Bytes::from(format!(
            r#"{{ "dg" : "20/09/2028", "hg" : "12:00:00", "f" : "s", "idg" : "{}", "arq" : [ {{ "tp" : "u", "dir" : "<base>/<ambiente>/<ciclo>/<cd_eleicao>/dados/<uf>" }} ], "pl" : [ {{ "cd" : "9000", "cdpr" : "9000", "c" : "{CYCLE}", "dt" : "01/10/2028", "dtlim" : "{ROUND2_DATE}", "e" : [ {elections} ] }} ] }}"#,
            self.idg(0)
        ))
    }
}
