//! The government formats: everything that knows how the authority or the provider spells things.
//!
//! Each parser turns raw bytes into the domain model of [`crate::model`] and validates it; a
//! file that fails is rejected whole with a [`FeedError`] that says what and where.

pub mod consolidated;
pub mod municipalities;
pub mod number;
pub mod tse;
pub mod zones;

use thiserror::Error;

/// Why a feed file was rejected. The previous documents stay current whenever one is returned.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum FeedError {
    /// Not JSON, or cut short, or not the expected shape.
    #[error("{file}: not valid JSON in the expected shape: {detail}")]
    Malformed { file: String, detail: String },
    /// JSON of the right shape, but a value that cannot be right.
    #[error("{file}: {location}: {detail}")]
    Invalid {
        file: String,
        location: String,
        detail: String,
    },
}

/// What a refused value's detail says, and the reason it is counted under.
const NEEDLES: &[(&str, &str)] = &[
    ("negative", "negative"),
    ("overflow", "overflow"),
    ("exceed", "totals"),
    ("add up to", "totals"),
    (" ≠ ", "totals"),
    ("sections counted of", "sections"),
    ("not a percentage", "percentage"),
    ("not a count", "not_a_number"),
    ("not a decimal", "not_a_number"),
    ("not a number", "not_a_number"),
    ("not a ballot number", "not_a_number"),
    ("the file is of municipality", "wrong_file"),
    ("in the file", "wrong_file"),
];

impl FeedError {
    /// Every label [`FeedError::reason`] gives.
    pub const REASONS: &'static [&'static str] = &[
        "malformed",
        "negative",
        "overflow",
        "totals",
        "sections",
        "percentage",
        "not_a_number",
        "wrong_file",
        "invalid",
    ];

    /// A short, stable label for the metrics (`malformed`, `invalid`).
    pub fn kind(&self) -> &'static str {
        match self {
            FeedError::Malformed { .. } => "malformed",
            FeedError::Invalid { .. } => "invalid",
        }
    }

    /// What is wrong, without the file's name: for a public document, where the feed's URL
    /// (which may carry a token) must not appear.
    pub fn what(&self) -> String {
        match self {
            FeedError::Malformed { detail, .. } => {
                format!("not valid JSON in the expected shape: {detail}")
            }
            FeedError::Invalid {
                location, detail, ..
            } => format!("{location}: {detail}"),
        }
    }

    /// A short, stable label of why a value was refused, for the per-reason metrics and the
    /// documents: `malformed`, `negative`, `overflow`, `totals` (votes that do not add up or
    /// exceed the total), `sections` (more sections counted than exist), `percentage`,
    /// `not_a_number`, `wrong_file` (a city's file of another city, round or office), or
    /// `invalid` for anything else: one of [`FeedError::REASONS`].
    pub fn reason(&self) -> &'static str {
        let detail = match self {
            FeedError::Malformed { .. } => return "malformed",
            FeedError::Invalid { detail, .. } => detail.as_str(),
        };
        NEEDLES
            .iter()
            .find(|(needle, _)| detail.contains(needle))
            .map_or("invalid", |(_, reason)| reason)
    }

    pub fn malformed(file: &str, err: impl std::fmt::Display) -> Self {
        FeedError::Malformed {
            file: file.to_string(),
            detail: err.to_string(),
        }
    }

    pub fn invalid(file: &str, location: impl Into<String>, detail: impl Into<String>) -> Self {
        FeedError::Invalid {
            file: file.to_string(),
            location: location.into(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_given_is_one_of_the_reasons_listed() {
        for (_, reason) in NEEDLES {
            assert!(
                FeedError::REASONS.contains(reason),
                "{reason} is not listed"
            );
        }
        for e in [
            FeedError::malformed("f", "cut short"),
            FeedError::invalid("f", "city 1", "something else"),
        ] {
            assert!(FeedError::REASONS.contains(&e.reason()));
        }
    }
}
