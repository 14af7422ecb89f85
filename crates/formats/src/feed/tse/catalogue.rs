//! The election catalogue (`comum/config/ele-c.json`): the elections of a cycle, their codes, the
//! code of their second round, and their offices. Election codes change every cycle (2024: 619
//! and 620), so they are read here or given on the command line, never written into the code.
//!
//! ```text
//! {"dg", "hg", "idg", "arq": [..],
//!  "pl": [{"cd", "c" cycle (ele2026), "dt",
//!          "e": [{"cd" election, "cdt2" its second round, "nm", "t" round, "tp",
//!                 "abr": [{"cd", "cp": [{"cd" office, "ds" name, "tp" 1 majoritarian | 2 proportional}]}]}]}]}
//! ```

use std::borrow::Cow;

use serde::Deserialize;

use super::paths::election_code;
use super::{nonempty, round};
use crate::feed::FeedError;

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(default, borrow)]
    idg: Cow<'a, str>,
    #[serde(borrow)]
    pl: Vec<RawCycle<'a>>,
}

#[derive(Deserialize)]
struct RawCycle<'a> {
    #[serde(default, borrow)]
    c: Cow<'a, str>,
    #[serde(default, borrow)]
    dt: Cow<'a, str>,
    #[serde(default, borrow)]
    e: Vec<RawElection<'a>>,
}

#[derive(Deserialize)]
struct RawElection<'a> {
    #[serde(borrow)]
    cd: Cow<'a, str>,
    #[serde(default, borrow)]
    cdt2: Cow<'a, str>,
    #[serde(default, borrow)]
    nm: Cow<'a, str>,
    #[serde(default, borrow)]
    t: Cow<'a, str>,
    #[serde(default, borrow)]
    abr: Vec<RawScope<'a>>,
}

#[derive(Deserialize)]
struct RawScope<'a> {
    #[serde(default, borrow)]
    cp: Vec<RawOffice<'a>>,
}

#[derive(Deserialize)]
struct RawOffice<'a> {
    #[serde(borrow)]
    cd: Cow<'a, str>,
    #[serde(default, borrow)]
    ds: Cow<'a, str>,
    #[serde(default, borrow)]
    tp: Cow<'a, str>,
}

/// A parsed catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    pub generation: Option<String>,
    pub elections: Vec<CatalogueElection>,
}

/// One election of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueElection {
    /// Without leading zeros (`619`).
    pub code: String,
    /// Code of its second round (`cdt2`), if it has one.
    pub round2: Option<String>,
    pub name: String,
    pub round: u8,
    /// The cycle folder (`ele2024`).
    pub cycle: String,
    /// Election day, `dd/mm/yyyy`.
    pub date: String,
    pub offices: Vec<CatalogueOffice>,
}

/// One office of an election.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueOffice {
    pub code: u32,
    pub name: String,
    /// `tp` 2: seats shared by party lists (councillors, deputies).
    pub proportional: bool,
}

impl Catalogue {
    pub fn parse(bytes: &[u8], file: &str) -> Result<Self, FeedError> {
        let raw: RawFile =
            serde_json::from_slice(bytes).map_err(|e| FeedError::malformed(file, e))?;
        let mut elections = Vec::new();
        for cycle in &raw.pl {
            for e in &cycle.e {
                let at = format!("election {}", e.cd);
                let invalid = |d: String| FeedError::invalid(file, &at, d);
                let code = election_code(&e.cd).map_err(invalid)?;
                let round2 = match e.cdt2.trim() {
                    "" => None,
                    c => Some(election_code(c).map_err(invalid)?),
                };
                let mut offices = Vec::new();
                for o in e.abr.iter().flat_map(|a| &a.cp) {
                    let code =
                        o.cd.trim()
                            .parse::<u32>()
                            .map_err(|_| invalid(format!("office {:?} is not a number", o.cd)))?;
                    if !offices.iter().any(|x: &CatalogueOffice| x.code == code) {
                        offices.push(CatalogueOffice {
                            code,
                            name: o.ds.trim().to_string(),
                            proportional: o.tp.trim() == "2",
                        });
                    }
                }
                elections.push(CatalogueElection {
                    code,
                    round2,
                    name: e.nm.trim().to_string(),
                    round: round(&e.t).map_err(invalid)?,
                    cycle: cycle.c.trim().to_string(),
                    date: cycle.dt.trim().to_string(),
                    offices,
                });
            }
        }
        Ok(Catalogue {
            generation: nonempty(&raw.idg),
            elections,
        })
    }

    /// The election with `code` (leading zeros ignored).
    pub fn election(&self, code: &str) -> Option<&CatalogueElection> {
        let code = election_code(code).ok()?;
        self.elections.iter().find(|e| e.code == code)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const CATALOGUE: &str = r#"{"dg":"20/09/2028","hg":"10:00:00","f":"s","idg":"1",
      "arq":[{"tp":"u","dir":"<base>/<ambiente>/<ciclo>/<cd_eleicao>/dados/<uf>"}],
      "pl":[{"cd":"9000","cdpr":"9000","c":"ele2028","dt":"01/10/2028","dtlim":"22/10/2028",
        "e":[{"cd":"9426","cdt2":"9427","nm":"Eleição Municipal de Teste 1º Turno","t":"1","tp":"2",
              "abr":[{"cd":"br","cp":[{"cd":"11","ds":"Prefeito","tp":"1"},
                                      {"cd":"13","ds":"Vereador","tp":"2"}]}]},
             {"cd":"009427","cdt2":"","nm":"Eleição Municipal de Teste 2º Turno","t":"2","tp":"2",
              "abr":[{"cd":"br","cp":[{"cd":"11","ds":"Prefeito","tp":"1"}]}]}]}]}"#;

    #[test]
    fn the_catalogue_gives_codes_rounds_and_offices() {
        let c = Catalogue::parse(CATALOGUE.as_bytes(), "ele-c.json").unwrap();
        assert_eq!(c.elections.len(), 2);
        let first = c.election("009426").unwrap();
        assert_eq!(first.round, 1);
        assert_eq!(first.round2.as_deref(), Some("9427"));
        assert_eq!(first.cycle, "ele2028");
        assert_eq!(first.offices.len(), 2);
        assert!(first.offices[1].proportional);
        assert!(!first.offices[0].proportional);
        let second = c.election("9427").unwrap();
        assert_eq!(second.code, "9427", "leading zeros dropped");
        assert_eq!(second.round, 2);
        assert_eq!(second.round2, None);
        assert!(c.election("1").is_none());
        let bad = CATALOGUE.replace(r#""cd":"13""#, r#""cd":"x""#);
        assert!(Catalogue::parse(bad.as_bytes(), "c").is_err());
    }
}
