//! The municipality configuration of an election (`config/mun-e<ele6>-cm.json`): every
//! municipality's TSE and IBGE codes, name, capital flag and electoral zones, by state.
//!
//! ```text
//! {"dg", "hg", "idg", "f",
//!  "abr": [{"cd" uf, "ds" state name,
//!           "mu": [{"cd" TSE code, "cdi" IBGE code, "nm" NAME, "c" s/n, "z": ["0072", ..]}]}]}
//! ```
//!
//! Names come in upper case (`SÃO JOÃO DA SERRA`); they are title-cased the Portuguese way
//! ([`crate::model::title_case`]) and the slugs of the contract are built from them.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;

use super::{flag, nonempty, pad_code};
use crate::feed::FeedError;
use crate::feed::municipalities::MunicipalityList;
use crate::model::{Municipality, title_case};

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(default, borrow)]
    idg: Cow<'a, str>,
    #[serde(borrow)]
    abr: Vec<RawState<'a>>,
}

#[derive(Deserialize)]
struct RawState<'a> {
    #[serde(borrow)]
    cd: Cow<'a, str>,
    #[serde(default, borrow)]
    ds: Cow<'a, str>,
    #[serde(default, borrow, alias = "mun", alias = "MU")]
    mu: Vec<RawCity<'a>>,
}

#[derive(Deserialize)]
struct RawCity<'a> {
    #[serde(borrow)]
    cd: Cow<'a, str>,
    #[serde(borrow)]
    cdi: Cow<'a, str>,
    #[serde(borrow)]
    nm: Cow<'a, str>,
    #[serde(default, borrow)]
    c: Cow<'a, str>,
    #[serde(default, borrow)]
    z: Vec<Cow<'a, str>>,
}

/// A parsed municipality configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MunicipalityConfig {
    /// `idg`.
    pub generation: Option<String>,
    pub states: Vec<ConfigState>,
}

/// One state of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigState {
    /// Upper case (`RJ`).
    pub uf: String,
    /// As written (`SÃO PAULO`).
    pub name: String,
    pub cities: Vec<ConfigCity>,
}

/// One municipality of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigCity {
    /// TSE code, five digits.
    pub tse: String,
    /// IBGE code, seven digits.
    pub ibge: u32,
    /// Title-cased name (`São João da Serra`).
    pub name: String,
    pub capital: bool,
    /// Zone numbers, four digits, in file order.
    pub zones: Vec<String>,
}

impl MunicipalityConfig {
    /// Parse and validate: codes well formed, no TSE or IBGE code twice.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Self, FeedError> {
        let raw: RawFile =
            serde_json::from_slice(bytes).map_err(|e| FeedError::malformed(file, e))?;
        let mut states = Vec::with_capacity(raw.abr.len());
        let mut tse_seen = HashSet::new();
        let mut ibge_seen = HashSet::new();
        for s in &raw.abr {
            let uf = s.cd.trim().to_ascii_uppercase();
            let mut cities = Vec::with_capacity(s.mu.len());
            for c in &s.mu {
                let at = format!("{uf} {} {}", c.cd, c.nm);
                let city = city(c).map_err(|d| FeedError::invalid(file, &at, d))?;
                if !tse_seen.insert(city.tse.clone()) {
                    return Err(FeedError::invalid(file, at, "TSE code appears twice"));
                }
                if !ibge_seen.insert(city.ibge) {
                    return Err(FeedError::invalid(file, at, "IBGE code appears twice"));
                }
                cities.push(city);
            }
            states.push(ConfigState {
                uf,
                name: s.ds.trim().to_string(),
                cities,
            });
        }
        Ok(MunicipalityConfig {
            generation: nonempty(&raw.idg),
            states,
        })
    }

    /// Every municipality with its state.
    pub fn cities(&self) -> impl Iterator<Item = (&ConfigState, &ConfigCity)> {
        self.states
            .iter()
            .flat_map(|s| s.cities.iter().map(move |c| (s, c)))
    }

    /// The municipality list of the deployment: names, slugs, both codes, capitals. Refused
    /// like any list when two cities of a state would share a slug.
    pub fn list(&self, file: &str) -> Result<MunicipalityList, FeedError> {
        let items = self
            .cities()
            .map(|(s, c)| Municipality::new(c.ibge, Some(c.tse.clone()), &c.name, &s.uf, c.capital))
            .collect();
        MunicipalityList::new(items, file)
    }
}

fn city(c: &RawCity) -> Result<ConfigCity, String> {
    let tse = pad_code(&c.cd, 5).map_err(|e| format!("cd: {e}"))?;
    let ibge = match c.cdi.trim().parse::<u32>() {
        Ok(n) if (1_000_000..10_000_000).contains(&n) => n,
        _ => return Err(format!("cdi: {:?} is not a 7-digit IBGE code", c.cdi)),
    };
    let name = c.nm.trim();
    if name.is_empty() {
        return Err("nm: empty name".to_string());
    }
    let name = if name.chars().any(char::is_lowercase) {
        name.to_string()
    } else {
        title_case(name)
    };
    let zones =
        c.z.iter()
            .map(|z| pad_code(z, 4).map_err(|e| format!("z: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
    Ok(ConfigCity {
        tse,
        ibge,
        name,
        capital: flag(&c.c).map_err(|e| format!("c: {e}"))?.unwrap_or(false),
        zones,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const CONFIG: &str = r#"{"dg":"20/09/2028","hg":"10:00:00","idg":"900001","f":"s",
      "abr":[
        {"cd":"sp","ds":"SÃO PAULO","mu":[
          {"cd":"99001","cdi":"3500001","nm":"VILA EXEMPLO","c":"n","z":["0101"]},
          {"cd":"1234","cdi":"3500002","nm":"SÃO JOÃO DA SERRA","c":"S","z":["12","0013","0099"]}]},
        {"cd":"al","ds":"ALAGOAS","mu":[
          {"cd":"27001","cdi":"2700001","nm":"OLHO D'ÁGUA DO TESTE","c":"n","z":[]}]}]}"#;

    #[test]
    fn the_configuration_gives_codes_names_capitals_and_zones() {
        let c = MunicipalityConfig::parse(CONFIG.as_bytes(), "cm.json").unwrap();
        assert_eq!(c.generation.as_deref(), Some("900001"));
        assert_eq!(c.states.len(), 2);
        assert_eq!(c.states[0].uf, "SP");
        let sj = &c.states[0].cities[1];
        assert_eq!(sj.tse, "01234");
        assert_eq!(sj.ibge, 3500002);
        assert_eq!(sj.name, "São João da Serra");
        assert!(sj.capital, "c S");
        assert_eq!(sj.zones, ["0012", "0013", "0099"]);
        let list = c.list("cm.json").unwrap();
        assert_eq!(list.len(), 3);
        let olho = list.by_tse("27001").unwrap();
        assert_eq!(olho.name, "Olho d'Água do Teste");
        assert_eq!(olho.slug, "olho-d-agua-do-teste");
        assert_eq!(olho.uf, "AL");
        assert_eq!(list.get(3500002).unwrap().tse.as_deref(), Some("01234"));
    }

    #[test]
    fn bad_configurations_are_rejected() {
        let twice = CONFIG.replace(r#""cd":"1234""#, r#""cd":"99001""#);
        assert!(MunicipalityConfig::parse(twice.as_bytes(), "cm").is_err());
        let ibge = CONFIG.replace(r#""cdi":"3500002""#, r#""cdi":"35002""#);
        assert!(MunicipalityConfig::parse(ibge.as_bytes(), "cm").is_err());
        let zone = CONFIG.replace(r#""0013""#, r#""z13""#);
        assert!(MunicipalityConfig::parse(zone.as_bytes(), "cm").is_err());
        let capital = CONFIG.replace(r#""c":"S""#, r#""c":"maybe""#);
        assert!(MunicipalityConfig::parse(capital.as_bytes(), "cm").is_err());
        let slug = CONFIG.replace("VILA EXEMPLO", "SÃO JOÃO DA SERRA");
        let c = MunicipalityConfig::parse(slug.as_bytes(), "cm").unwrap();
        assert!(c.list("cm").is_err(), "two cities of a state with one slug");
    }
}
