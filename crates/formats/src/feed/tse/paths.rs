//! Where each file of the layout lives below the base URL of a cycle
//! (`https://resultados.tse.jus.br/oficial/ele2024/`), and the file names read back (for the
//! simulator, which serves them).
//!
//! Codes are padded in file names (election to six digits, municipality to five, zone and
//! office to four) but not in the election's folder: `619/dados/sp/sp71072-c0011-e000619-u.json`.

/// An election code as the folder names it: digits, leading zeros dropped (`"000619"` →
/// `"619"`), at most six digits.
pub fn election_code(code: &str) -> Result<String, String> {
    let code = code.trim();
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("election code {code:?} is not a number"));
    }
    let digits = code.trim_start_matches('0');
    if digits.is_empty() || digits.len() > 6 {
        return Err(format!("election code {code:?} must have 1 to 6 digits"));
    }
    Ok(digits.to_string())
}

/// The URLs of one election's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsePaths {
    /// Ends with `/`.
    base: String,
    election: String,
}

impl TsePaths {
    /// `base` is the cycle's folder (an http(s) URL, a `file://` URL or a path); `election` its
    /// code, padded or not.
    pub fn new(base: &str, election: &str) -> Result<Self, String> {
        let base = base.trim();
        if base.is_empty() {
            return Err("the base URL is empty".to_string());
        }
        let base = if base.ends_with('/') {
            base.to_string()
        } else {
            format!("{base}/")
        };
        Ok(TsePaths {
            base,
            election: election_code(election)?,
        })
    }

    /// The election code, without leading zeros.
    pub fn election(&self) -> &str {
        &self.election
    }

    fn election6(&self) -> String {
        format!("{:0>6}", self.election)
    }

    /// `../comum/config/ele-c.json`: the catalogue sits beside the cycles' folders.
    pub fn catalogue(&self) -> String {
        let trimmed = self.base.trim_end_matches('/');
        match trimmed.rsplit_once('/') {
            Some((parent, _)) if !parent.ends_with('/') && !parent.is_empty() => {
                format!("{parent}/comum/config/ele-c.json")
            }
            _ => format!("{}comum/config/ele-c.json", self.base),
        }
    }

    /// `<ele>/config/mun-e<ele6>-cm.json`.
    pub fn config(&self) -> String {
        format!(
            "{}{}/config/mun-e{}-cm.json",
            self.base,
            self.election,
            self.election6()
        )
    }

    /// `<ele>/dados/<uf>/<uf>-e<ele6>-ab.json`.
    pub fn progress(&self, uf: &str) -> String {
        let uf = uf.to_ascii_lowercase();
        format!(
            "{}{}/dados/{uf}/{uf}-e{}-ab.json",
            self.base,
            self.election,
            self.election6()
        )
    }

    /// `<ele>/dados/<uf>/<uf><mun5>-c<cargo4>-e<ele6>-u.json`.
    pub fn unified(&self, uf: &str, municipality: &str, cargo: u32) -> String {
        let uf = uf.to_ascii_lowercase();
        format!(
            "{}{}/dados/{uf}/{uf}{municipality:0>5}-c{cargo:04}-e{}-u.json",
            self.base,
            self.election,
            self.election6()
        )
    }

    /// `<ele>/dados/<uf>/<uf><mun5>-z<zona4>-c<cargo4>-e<ele6>-u.json`.
    pub fn zone(&self, uf: &str, municipality: &str, zone: &str, cargo: u32) -> String {
        let uf = uf.to_ascii_lowercase();
        format!(
            "{}{}/dados/{uf}/{uf}{municipality:0>5}-z{zone:0>4}-c{cargo:04}-e{}-u.json",
            self.base,
            self.election,
            self.election6()
        )
    }
}

/// A file of a `dados/<uf>/` folder, read from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataFile {
    /// `<uf>-e<ele6>-ab.json`
    Progress { uf: String, election: String },
    /// `<uf><mun5>[-z<zona4>]-c<cargo4>-e<ele6>-u.json`
    Unified {
        uf: String,
        municipality: String,
        zone: Option<String>,
        cargo: u32,
        election: String,
    },
}

fn digits(s: &str, prefix: char, width: usize) -> Option<&str> {
    let d = s.strip_prefix(prefix)?;
    (d.len() == width && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

fn uf(s: &str) -> Option<String> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_lowercase())).then(|| s.to_string())
}

/// Read a data file's name; `None` for anything else.
pub fn parse_data_file(name: &str) -> Option<DataFile> {
    let stem = name.strip_suffix(".json")?;
    let parts: Vec<&str> = stem.split('-').collect();
    match parts.as_slice() {
        [u, e, "ab"] => Some(DataFile::Progress {
            uf: uf(u)?,
            election: election_code(digits(e, 'e', 6)?).ok()?,
        }),
        [place, rest @ .., "u"] if (2..=3).contains(&rest.len()) => {
            let (u, m) = (place.get(..2)?, place.get(2..)?);
            let (zone, c, e) = match rest {
                [z, c, e] => (Some(digits(z, 'z', 4)?.to_string()), *c, *e),
                [c, e] => (None, *c, *e),
                _ => return None,
            };
            if m.len() != 5 || !m.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(DataFile::Unified {
                uf: uf(u)?,
                municipality: m.to_string(),
                zone,
                cargo: digits(c, 'c', 4)?.parse().ok()?,
                election: election_code(digits(e, 'e', 6)?).ok()?,
            })
        }
        _ => None,
    }
}

/// Read a configuration file's name (`mun-e<ele6>-cm.json`): its election code.
pub fn parse_config_file(name: &str) -> Option<String> {
    let e = name.strip_prefix("mun-")?.strip_suffix("-cm.json")?;
    election_code(digits(e, 'e', 6)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_layout() {
        let p = TsePaths::new("https://example.test/oficial/ele2028", "009426").unwrap();
        assert_eq!(p.election(), "9426");
        assert_eq!(
            p.catalogue(),
            "https://example.test/oficial/comum/config/ele-c.json"
        );
        assert_eq!(
            p.config(),
            "https://example.test/oficial/ele2028/9426/config/mun-e009426-cm.json"
        );
        assert_eq!(
            p.progress("SP"),
            "https://example.test/oficial/ele2028/9426/dados/sp/sp-e009426-ab.json"
        );
        assert_eq!(
            p.unified("SP", "1234", 11),
            "https://example.test/oficial/ele2028/9426/dados/sp/sp01234-c0011-e009426-u.json"
        );
        assert_eq!(
            p.zone("sp", "71072", "1", 13),
            "https://example.test/oficial/ele2028/9426/dados/sp/sp71072-z0001-c0013-e009426-u.json"
        );
        assert!(TsePaths::new("", "1").is_err());
        assert!(TsePaths::new("http://x/", "0").is_err());
        assert!(TsePaths::new("http://x/", "1234567").is_err());
        assert!(TsePaths::new("http://x/", "12a").is_err());
    }

    #[test]
    fn names_are_read_back() {
        let p = TsePaths::new("http://h/oficial/ele2028/", "426").unwrap();
        let name = |url: String| url.rsplit('/').next().unwrap().to_string();
        assert_eq!(
            parse_data_file(&name(p.progress("rj"))),
            Some(DataFile::Progress {
                uf: "rj".into(),
                election: "426".into()
            })
        );
        assert_eq!(
            parse_data_file(&name(p.unified("rj", "60011", 13))),
            Some(DataFile::Unified {
                uf: "rj".into(),
                municipality: "60011".into(),
                zone: None,
                cargo: 13,
                election: "426".into()
            })
        );
        assert_eq!(
            parse_data_file(&name(p.zone("rj", "60011", "0179", 11))),
            Some(DataFile::Unified {
                uf: "rj".into(),
                municipality: "60011".into(),
                zone: Some("0179".into()),
                cargo: 11,
                election: "426".into()
            })
        );
        assert_eq!(parse_config_file(&name(p.config())), Some("426".into()));
        for bad in [
            "rj-e426-ab.json",
            "rj6001-c0011-e000426-u.json",
            "RJ60011-c0011-e000426-u.json",
            "rj60011-c11-e000426-u.json",
            "rj60011-c0011-e000426-r.json",
            "rj60011-x0001-c0011-e000426-u.json",
            "rj60011-c0011-e000426-u.txt",
        ] {
            assert_eq!(parse_data_file(bad), None, "{bad}");
        }
    }
}
