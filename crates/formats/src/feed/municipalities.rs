//! Municipality lists: the consolidated feed's JSON (`{"<IBGE>": {"n": name, "e": UF}}`) and the
//! TSE CSV (`codigo_tse,uf,nome_municipio,capital,codigo_ibge`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::FeedError;
use crate::model::{Municipality, title_case};

/// IBGE codes of the 27 state capitals. The consolidated list carries no capital flag; these
/// codes are fixed by law and have not changed since Palmas (1989).
pub const CAPITALS: [u32; 27] = [
    1200401, 2704302, 1302603, 1600303, 2927408, 2304400, 5300108, 3205309, 5208707, 2111300,
    3106200, 5002704, 5103403, 1501402, 2507507, 2611606, 2211001, 4106902, 3304557, 2408102,
    1100205, 1400100, 4314902, 4205407, 2800308, 3550308, 1721000,
];

/// The 27 units of the federation.
pub const UFS: [&str; 27] = [
    "AC", "AL", "AM", "AP", "BA", "CE", "DF", "ES", "GO", "MA", "MG", "MS", "MT", "PA", "PB", "PE",
    "PI", "PR", "RJ", "RN", "RO", "RR", "RS", "SC", "SE", "SP", "TO",
];

/// The full name of a state, for the roll-up documents.
pub fn uf_name(uf: &str) -> &'static str {
    match uf {
        "AC" => "Acre",
        "AL" => "Alagoas",
        "AM" => "Amazonas",
        "AP" => "Amapá",
        "BA" => "Bahia",
        "CE" => "Ceará",
        "DF" => "Distrito Federal",
        "ES" => "Espírito Santo",
        "GO" => "Goiás",
        "MA" => "Maranhão",
        "MG" => "Minas Gerais",
        "MS" => "Mato Grosso do Sul",
        "MT" => "Mato Grosso",
        "PA" => "Pará",
        "PB" => "Paraíba",
        "PE" => "Pernambuco",
        "PI" => "Piauí",
        "PR" => "Paraná",
        "RJ" => "Rio de Janeiro",
        "RN" => "Rio Grande do Norte",
        "RO" => "Rondônia",
        "RR" => "Roraima",
        "RS" => "Rio Grande do Sul",
        "SC" => "Santa Catarina",
        "SE" => "Sergipe",
        "SP" => "São Paulo",
        "TO" => "Tocantins",
        _ => "",
    }
}

/// The municipalities known to this deployment, keyed by IBGE code.
#[derive(Debug, Clone, Default)]
pub struct MunicipalityList {
    all: Vec<Arc<Municipality>>,
    by_ibge: HashMap<u32, Arc<Municipality>>,
    by_tse: HashMap<String, Arc<Municipality>>,
}

impl MunicipalityList {
    /// Build a list, refusing two municipalities of one state with the same slug (their topics
    /// would collide) or one IBGE code twice.
    pub fn new(mut items: Vec<Municipality>, file: &str) -> Result<Self, FeedError> {
        items.sort_by(|a, b| (&a.uf, &a.slug).cmp(&(&b.uf, &b.slug)));
        let mut problems = Vec::new();
        for pair in items.windows(2) {
            if pair[0].uf == pair[1].uf && pair[0].slug == pair[1].slug {
                problems.push(format!(
                    "{} ({}) and {} ({}) in {} share the slug {:?}",
                    pair[0].name,
                    pair[0].ibge,
                    pair[1].name,
                    pair[1].ibge,
                    pair[0].uf,
                    pair[0].slug
                ));
            }
        }
        let mut list = MunicipalityList::default();
        for m in items {
            if m.slug.is_empty() {
                problems.push(format!("municipality {} has an empty name", m.ibge));
            }
            if !UFS.contains(&m.uf.as_str()) {
                problems.push(format!(
                    "municipality {} has an unknown state {:?}",
                    m.ibge, m.uf
                ));
            }
            let m = Arc::new(m);
            if let Some(prev) = list.by_ibge.insert(m.ibge, m.clone()) {
                problems.push(format!(
                    "IBGE code {} appears twice ({} and {})",
                    m.ibge, prev.name, m.name
                ));
            }
            if let Some(tse) = &m.tse {
                list.by_tse.insert(tse.clone(), m.clone());
            }
            list.all.push(m);
        }
        if problems.is_empty() {
            Ok(list)
        } else {
            Err(FeedError::invalid(
                file,
                "municipality list",
                problems.join("; "),
            ))
        }
    }

    /// Parse either format: the one its name says (`.csv` or `.json`, a URL's query ignored),
    /// else the one its first non-blank byte suggests. A file named `.csv` is read as CSV
    /// whatever it holds, so its errors speak of the CSV.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Self, FeedError> {
        let name = file
            .split(['?', '#'])
            .next()
            .unwrap_or(file)
            .to_ascii_lowercase();
        if name.ends_with(".csv") {
            return Self::parse_csv(bytes, file);
        }
        if name.ends_with(".json") {
            return Self::parse_json(bytes, file);
        }
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            Self::parse_json(bytes, file)
        } else {
            Self::parse_csv(bytes, file)
        }
    }

    /// The consolidated feed's list: `{"<IBGE 7-digit code>": {"n": name, "e": UF}}`.
    pub fn parse_json(bytes: &[u8], file: &str) -> Result<Self, FeedError> {
        #[derive(Deserialize)]
        struct Entry {
            n: String,
            e: String,
        }
        let raw: HashMap<String, Entry> =
            serde_json::from_slice(bytes).map_err(|e| FeedError::malformed(file, e))?;
        let mut items = Vec::with_capacity(raw.len());
        for (code, entry) in raw {
            let ibge = parse_ibge(&code).map_err(|d| FeedError::invalid(file, &code, d))?;
            items.push(Municipality::new(
                ibge,
                None,
                &entry.n,
                &entry.e,
                CAPITALS.contains(&ibge),
            ));
        }
        Self::new(items, file)
    }

    /// The TSE CSV: `codigo_tse,uf,nome_municipio,capital,codigo_ibge`, names in upper case,
    /// TSE codes without their leading zeros.
    pub fn parse_csv(bytes: &[u8], file: &str) -> Result<Self, FeedError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| FeedError::invalid(file, "CSV", format!("not UTF-8 text: {e}")))?;
        let mut lines = text.lines().enumerate();
        let header = lines
            .next()
            .map(|(_, l)| l.trim_start_matches('\u{feff}').trim())
            .unwrap_or("");
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let col = |name: &str| {
            columns.iter().position(|c| *c == name).ok_or_else(|| {
                FeedError::invalid(file, "CSV header", format!("no column {name:?}"))
            })
        };
        let (c_tse, c_uf, c_name, c_cap, c_ibge) = (
            col("codigo_tse")?,
            col("uf")?,
            col("nome_municipio")?,
            col("capital")?,
            col("codigo_ibge")?,
        );
        let mut items = Vec::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let fields = split_csv_line(line);
            let at = format!("line {}", i + 1);
            let get = |c: usize| {
                fields
                    .get(c)
                    .map(|s| s.trim())
                    .ok_or_else(|| FeedError::invalid(file, &at, "missing column"))
            };
            let ibge = parse_ibge(get(c_ibge)?).map_err(|d| FeedError::invalid(file, &at, d))?;
            let tse_raw = get(c_tse)?;
            let tse: u32 = tse_raw.parse().map_err(|_| {
                FeedError::invalid(file, &at, format!("TSE code {tse_raw:?} is not a number"))
            })?;
            let name = get(c_name)?;
            let name = if name.chars().any(|c| c.is_lowercase()) {
                name.to_string()
            } else {
                title_case(name)
            };
            items.push(Municipality::new(
                ibge,
                Some(format!("{tse:05}")),
                &name,
                get(c_uf)?,
                get(c_cap)? == "1",
            ));
        }
        Self::new(items, file)
    }

    pub fn get(&self, ibge: u32) -> Option<&Arc<Municipality>> {
        self.by_ibge.get(&ibge)
    }

    /// Look a municipality up by its zero-padded TSE code.
    pub fn by_tse(&self, tse: &str) -> Option<&Arc<Municipality>> {
        self.by_tse.get(tse)
    }

    /// Every municipality, ordered by state and slug.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Municipality>> {
        self.all.iter()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

fn parse_ibge(code: &str) -> Result<u32, String> {
    match code.trim().parse::<u32>() {
        Ok(n) if (1_000_000..10_000_000).contains(&n) => Ok(n),
        _ => Err(format!("{code:?} is not a 7-digit IBGE code")),
    }
}

/// Split one CSV line, honouring double-quoted fields (names such as `"Olho d'Água, Grande"`).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_the_one_the_name_says() {
        let json = br#"{"3550308": {"n": "S\u00e3o Paulo", "e": "SP"}}"#;
        let garbage_csv = MunicipalityList::parse(json, "municipios.csv").unwrap_err();
        assert_eq!(
            garbage_csv.to_string(),
            r#"municipios.csv: CSV header: no column "codigo_tse""#
        );
        let empty_json =
            MunicipalityList::parse(b"", "https://x.example/list.JSON?v=2").unwrap_err();
        assert!(
            empty_json.to_string().contains("not valid JSON"),
            "{empty_json}"
        );
        let binary_csv = MunicipalityList::parse(&[0xff, 0xfe, 0], "m.csv").unwrap_err();
        assert!(
            binary_csv.to_string().contains("CSV: not UTF-8"),
            "{binary_csv}"
        );
        // Without an extension, the content decides.
        assert_eq!(MunicipalityList::parse(json, "list").unwrap().len(), 1);
    }

    #[test]
    fn json_list_marks_capitals_and_builds_slugs() {
        let json = r#"{"3550308": {"n": "São Paulo", "e": "SP"},
                      "2705903": {"n": "Olho d'Água Grande", "e": "AL"}}"#;
        let list = MunicipalityList::parse(json.as_bytes(), "list.json").unwrap();
        assert_eq!(list.len(), 2);
        let sp = list.get(3550308).unwrap();
        assert!(sp.capital);
        assert_eq!(sp.slug, "sao-paulo");
        let olho = list.get(2705903).unwrap();
        assert!(!olho.capital);
        assert_eq!(olho.slug, "olho-d-agua-grande");
    }

    #[test]
    fn csv_list_pads_tse_codes_and_title_cases_names() {
        let csv = "codigo_tse,uf,nome_municipio,capital,codigo_ibge\n\
                   1392,AC,RIO BRANCO,1,1200401\n\
                   35,RO,PORTO VELHO,1,1100205\n\
                   2704,AL,\"OLHO D'ÁGUA GRANDE\",0,2705903\n";
        let list = MunicipalityList::parse(csv.as_bytes(), "m.csv").unwrap();
        assert_eq!(list.len(), 3);
        let pv = list.by_tse("00035").unwrap();
        assert_eq!(pv.name, "Porto Velho");
        assert!(pv.capital);
        let olho = list.get(2705903).unwrap();
        assert_eq!(olho.name, "Olho d'Água Grande");
        assert_eq!(olho.tse.as_deref(), Some("02704"));
    }

    #[test]
    fn same_slug_in_one_state_is_a_start_up_error_naming_both() {
        let json = r#"{"3500001": {"n": "Santa Rita", "e": "SP"},
                      "3500002": {"n": "Santa-Rita", "e": "SP"},
                      "2500003": {"n": "Santa Rita", "e": "PB"}}"#;
        let err = MunicipalityList::parse(json.as_bytes(), "list.json").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("3500001") && text.contains("3500002"),
            "{text}"
        );
        assert!(!text.contains("2500003"), "{text}");
    }

    #[test]
    fn bad_codes_and_states_are_rejected() {
        let json = r#"{"12": {"n": "X", "e": "SP"}}"#;
        assert!(MunicipalityList::parse(json.as_bytes(), "l").is_err());
        let json = r#"{"3500001": {"n": "X", "e": "ZZ"}}"#;
        assert!(MunicipalityList::parse(json.as_bytes(), "l").is_err());
        assert!(MunicipalityList::parse(b"{\"3500001\": ", "l").is_err());
    }
}
