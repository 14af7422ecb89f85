//! JSON text written once and kept: a string as a literal, and the fields of a candidate that
//! never change during the night (the count model keeps them with each candidate).

use super::candidates::Party;
use apura_formats::model::slug;

/// A string as a JSON literal, quotes included.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The fields of a candidate that never change during the night, written once:
/// `"nc":…,"sp":…,"cp":…,"tc":…,"num":…`.
pub fn candidate_fields(number: u32, name: &str, party: &Party) -> String {
    format!(
        r#""nc":{},"sp":{},"cp":"{}","tc":{},"num":"{number}""#,
        json_string(name),
        json_string(party.abbr),
        party.color,
        json_string(&photo(name)),
    )
}

/// The candidate's photo file, named after the ballot name.
pub fn photo(name: &str) -> String {
    format!("{}.jpg", slug(name))
}
