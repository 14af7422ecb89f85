//! What the fuzz targets assert about a file a parser accepted, beyond not panicking. Each
//! property is one the parser itself guarantees (it rejects a file that breaks it), so a failed
//! assertion is a parser bug just like a panic.

use std::fmt::Debug;

use apura_formats::model::{Candidate, Progress};

/// A percentage as the parsers hand it on: finite and within 0–100.
pub fn check_percent(p: f64, what: &impl Debug) {
    assert!((0.0..=100.0).contains(&p), "percent {p} of {what:?}");
}

/// Sections counted never exceed sections in all, and the percentage is one.
pub fn check_progress(p: &Progress) {
    check_percent(p.percent, p);
    if let (Some(counted), Some(total)) = (p.sections_counted, p.sections_total) {
        assert!(counted <= total, "{p:?}");
    }
}

/// The candidates' votes add up to `valid`, and `valid + blank + null` (without wrapping) is at
/// most `turnout`.
pub fn check_counts(
    votes: impl Iterator<Item = u64>,
    valid: u64,
    blank: u64,
    null: u64,
    turnout: u64,
    what: &impl Debug,
) {
    let sum: u128 = votes.map(u128::from).sum();
    assert_eq!(sum, u128::from(valid), "candidate votes of {what:?}");
    let counted = u128::from(valid) + u128::from(blank) + u128::from(null);
    assert!(
        counted <= u128::from(turnout),
        "{counted} counted of {what:?}"
    );
}

/// Candidates come most votes first.
pub fn check_by_votes(candidates: &[Candidate]) {
    assert!(
        candidates.windows(2).all(|w| w[0].votes >= w[1].votes),
        "{candidates:?}"
    );
}

/// A code zero-padded to exactly `width` digits (`00035`).
pub fn check_code(code: &str, width: usize) {
    assert!(
        code.len() == width && code.bytes().all(|b| b.is_ascii_digit()),
        "{code:?} is not a {width}-digit code"
    );
}
