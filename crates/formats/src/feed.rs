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

impl FeedError {
    /// A short, stable label for the metrics (`malformed`, `invalid`).
    pub fn kind(&self) -> &'static str {
        match self {
            FeedError::Malformed { .. } => "malformed",
            FeedError::Invalid { .. } => "invalid",
        }
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
