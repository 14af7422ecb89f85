//! The domain model: municipalities, offices, candidates, totals, progress, and the slug rule.

use serde::{Deserialize, Serialize};

/// A Brazilian state (or the Federal District), by its two-letter code in upper case.
pub type Uf = String;

/// One municipality of the list, with the names and codes every document carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Municipality {
    /// IBGE 7-digit code: the key of the consolidated feed.
    pub ibge: u32,
    /// TSE 5-digit code, zero-padded, when the list gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tse: Option<String>,
    /// Display name, with accents.
    pub name: String,
    /// State, upper case (`SP`).
    pub uf: Uf,
    /// URL slug built from `name` by [`slug`].
    pub slug: String,
    /// State capital.
    pub capital: bool,
}

impl Municipality {
    /// Build a municipality, deriving the slug from the name.
    pub fn new(ibge: u32, tse: Option<String>, name: &str, uf: &str, capital: bool) -> Self {
        Municipality {
            ibge,
            tse,
            name: name.to_string(),
            uf: uf.to_ascii_uppercase(),
            slug: slug(name),
            capital,
        }
    }

    /// The topic of this city's race for `office`, e.g. `mayors-sp-sao-paulo`.
    pub fn topic(&self, kind: TopicKind) -> String {
        format!(
            "{}-{}-{}",
            kind.prefix(),
            self.uf.to_ascii_lowercase(),
            self.slug
        )
    }
}

/// The per-city topic families of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Mayors,
    Councillors,
    Zones,
}

impl TopicKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TopicKind::Mayors => "mayors",
            TopicKind::Councillors => "councillors",
            TopicKind::Zones => "zones",
        }
    }
}

/// An office in a municipal election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Office {
    /// Prefeito, TSE cargo 11: majoritarian.
    Mayor,
    /// Vereador, TSE cargo 13: proportional.
    Councillor,
}

impl Office {
    /// The topic family that carries this office's race.
    pub fn topic_kind(self) -> TopicKind {
        match self {
            Office::Mayor => TopicKind::Mayors,
            Office::Councillor => TopicKind::Councillors,
        }
    }

    /// The TSE `cargo` code.
    pub fn tse_code(self) -> u32 {
        match self {
            Office::Mayor => 11,
            Office::Councillor => 13,
        }
    }
}

/// Where a candidate stands once the authority has said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Elected,
    SecondRound,
    NotElected,
    /// Suplente: a councillor candidate first in line for a vacated seat.
    Substitute,
}

/// One candidate of a race.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Ballot number (45, 13, 45123).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// Ballot name.
    pub name: String,
    /// Party abbreviation.
    pub party: String,
    /// Coalition name, when the feed gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalition: Option<String>,
    pub votes: u64,
    /// Percent of valid votes, 0–100.
    pub percent: f64,
    pub elected: bool,
    /// `null` while the count runs.
    pub status: Option<Status>,
    /// False for a candidate whose votes are annulled (shown, not counted as valid).
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub photo: Option<String>,
}

/// Vote totals of a race.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Registered voters, when known.
    pub electorate: Option<u64>,
    /// Voters who turned up (total votes cast).
    pub turnout: u64,
    pub abstentions: u64,
    pub blank: u64,
    pub null: u64,
    pub valid: u64,
}

/// How far the count of a race has gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Sections (ballot boxes) counted, when the feed says.
    pub sections_counted: Option<u64>,
    /// Sections in all, when the feed says.
    pub sections_total: Option<u64>,
    /// Percent of sections counted, 0–100.
    pub percent: f64,
}

/// The result of one race (one city, one office) as read from a feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Race {
    pub ibge: u32,
    pub office: Office,
    pub round: u8,
    /// The government's own timestamp of this result, as ISO 8601 local time (Brasília).
    pub source_time: Option<String>,
    pub progress: Progress,
    pub totals: Totals,
    pub candidates: Vec<Candidate>,
    /// The count of this race is over.
    pub finished: bool,
}

impl Race {
    /// The votes of the candidates whose votes count as valid: equal to `totals.valid` in a
    /// race that adds up.
    pub fn valid_candidate_votes(&self) -> u64 {
        self.candidates
            .iter()
            .filter(|c| c.valid)
            .map(|c| c.votes)
            .sum()
    }
}

/// Vote counts of one electoral zone of a city.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneResult {
    /// Zone number as the feed writes it (`0397`).
    pub zone: String,
    pub turnout: u64,
    pub blank: u64,
    pub null: u64,
    pub valid: u64,
    pub results: Vec<ZoneVotes>,
}

/// One candidate's votes in a zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneVotes {
    pub number: u32,
    pub votes: u64,
    pub percent: f64,
}

/// The mayor race of one city broken down by zone (the 60 s data).
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneBreakdown {
    pub round: u8,
    pub source_time: Option<String>,
    pub finished: bool,
    pub percent: f64,
    /// Candidate details, in ballot-number order of the city total.
    pub candidates: Vec<Candidate>,
    pub total: ZoneResult,
    pub zones: Vec<ZoneResult>,
}

/// The slug rule of the contract: transliterate to ASCII, lower-case, replace every run of other
/// characters by one `-`, trim `-` at both ends. `Olho d'Água Grande` → `olho-d-agua-grande`.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_dash = false;
    let mut push = |a: char, out: &mut String| {
        if a.is_ascii_alphanumeric() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(a.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
    };
    for c in name.chars() {
        if c.is_ascii() {
            push(c, &mut out);
        } else {
            for a in fold_ascii(c).chars() {
                push(a, &mut out);
            }
        }
    }
    out
}

/// Fold one non-ASCII character to its ASCII transliteration; anything unknown is a separator.
fn fold_ascii(c: char) -> &'static str {
    // The Latin-1 letters cover every Brazilian municipality name; `ñ`, `ß` and the ligatures
    // cover names that arrive from elsewhere.
    match c {
        'á' | 'à' | 'â' | 'ã' | 'ä' | 'å' | 'Á' | 'À' | 'Â' | 'Ã' | 'Ä' | 'Å' => "a",
        'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => "e",
        'í' | 'ì' | 'î' | 'ï' | 'Í' | 'Ì' | 'Î' | 'Ï' => "i",
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' | 'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ö' => "o",
        'ú' | 'ù' | 'û' | 'ü' | 'Ú' | 'Ù' | 'Û' | 'Ü' => "u",
        'ç' | 'Ç' => "c",
        'ñ' | 'Ñ' => "n",
        'ý' | 'ÿ' | 'Ý' => "y",
        'ß' => "ss",
        'æ' | 'Æ' => "ae",
        'œ' | 'Œ' => "oe",
        _ => "-",
    }
}

/// Title-case an upper-case name the Portuguese way: `SÃO JOÃO DA PARAÚNA` → `São João da
/// Paraúna`, `OLHO D'ÁGUA GRANDE` → `Olho d'Água Grande`.
pub fn title_case(name: &str) -> String {
    const LOWER_WORDS: [&str; 7] = ["da", "das", "de", "do", "dos", "e", "d'"];
    let mut out = String::with_capacity(name.len());
    for (i, word) in name.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let lower = word.to_lowercase();
        if i > 0 && LOWER_WORDS.contains(&lower.as_str()) {
            out.push_str(&lower);
            continue;
        }
        // `d'água` keeps the elision lower-case and capitalises what follows it.
        let (head, rest) = match lower.strip_prefix("d'") {
            Some(rest) if i > 0 => ("d'", rest),
            _ => ("", lower.as_str()),
        };
        out.push_str(head);
        let mut chars = rest.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_folds_accents_and_apostrophes() {
        assert_eq!(slug("Olho d'Água Grande"), "olho-d-agua-grande");
        assert_eq!(slug("São Paulo"), "sao-paulo");
        assert_eq!(slug("Ji-Paraná"), "ji-parana");
        assert_eq!(slug("  Santa Bárbara d'Oeste "), "santa-barbara-d-oeste");
        assert_eq!(slug("Itaporanga D`Ajuda"), "itaporanga-d-ajuda");
        assert_eq!(slug("MOJI MIRIM"), "moji-mirim");
        assert_eq!(slug("Açailândia"), "acailandia");
        assert_eq!(slug("Xique-Xique -- (BA)"), "xique-xique-ba");
    }

    #[test]
    fn title_case_follows_portuguese_particles() {
        assert_eq!(title_case("SÃO JOÃO DA PARAÚNA"), "São João da Paraúna");
        assert_eq!(title_case("OLHO D'ÁGUA GRANDE"), "Olho d'Água Grande");
        assert_eq!(title_case("RIO DE JANEIRO"), "Rio de Janeiro");
        assert_eq!(
            slug(&title_case("OLHO D'ÁGUA GRANDE")),
            "olho-d-agua-grande"
        );
    }

    #[test]
    fn topic_names_follow_the_contract() {
        let m = Municipality::new(3550308, Some("71072".into()), "São Paulo", "sp", true);
        assert_eq!(m.topic(TopicKind::Mayors), "mayors-sp-sao-paulo");
        assert_eq!(m.topic(TopicKind::Zones), "zones-sp-sao-paulo");
    }
}
