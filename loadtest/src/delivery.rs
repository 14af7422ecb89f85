//! What a subscriber receives, whatever the protocol: a document (its `published_at` and
//! `version` found by scanning the bytes) or a heartbeat; and why a subscriber got no stream.

use std::sync::LazyLock;

use memchr::memmem;

static PUBLISHED_AT: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"published_at\":"));
static VERSION: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"version\":"));
static SOURCE_TIME: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"source_time\":"));

/// The number after the first `finder` match.
fn scan_number(doc: &[u8], finder: &memmem::Finder<'_>) -> Option<i64> {
    let at = finder.find(doc)? + finder.needle().len();
    let rest = &doc[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits = &rest[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The first `version` number of a document or message: the publication cycle (apura's
/// WebSocket wrapper repeats the document's version first).
pub fn scan_version(doc: &[u8]) -> Option<u64> {
    scan_number(doc, &VERSION).and_then(|v| u64::try_from(v).ok())
}

/// The `published_at` number of a JSON document, found by scanning the bytes (cheaper than
/// parsing a whole document per delivery; every document carries the field once at top level,
/// before any nested object that could carry another).
pub fn scan_published_at(doc: &[u8]) -> Option<i64> {
    scan_number(doc, &PUBLISHED_AT)
}

/// The first `source_time` of a document or message (`"YYYY-MM-DDThh:mm:ss"`, the feed's own
/// time of the result), as [`crate::freshness::parse_source_time`] reads it: a city document
/// carries it once at top level, and apura's WebSocket wrapper has none of its own.
pub fn scan_source_time(doc: &[u8]) -> Option<i64> {
    let at = SOURCE_TIME.find(doc)? + SOURCE_TIME.needle().len();
    let rest = &doc[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let value = rest[start..].strip_prefix(b"\"")?;
    crate::freshness::parse_source_time(value.get(..19)?).filter(|_| value.get(19) == Some(&b'"'))
}

/// One delivery: a document or a heartbeat.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A `data:` event: whether its `event:` field said `snapshot`, its `published_at`,
    /// `version` and `source_time`.
    Doc {
        snapshot: bool,
        published_at: Option<i64>,
        version: Option<u64>,
        source_time: Option<i64>,
    },
    /// A comment-only block (`:` lines): the gateway's heartbeat.
    Heartbeat,
}

/// Why a subscriber did not get its stream.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    Connect,
    Handshake,
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_at_is_scanned() {
        assert_eq!(
            scan_published_at(br#"{"version":5,"published_at":1795629793012,"topic":"x"}"#),
            Some(1_795_629_793_012)
        );
        assert_eq!(scan_published_at(br#"{"published_at": 42}"#), Some(42));
        assert_eq!(scan_published_at(br#"{"version":5}"#), None);
    }

    #[test]
    fn source_time_is_scanned() {
        let doc = br#"{"version":5,"topic":"x","source_time":"2028-10-01T19:12:00","total":{}}"#;
        assert_eq!(
            scan_source_time(doc),
            crate::freshness::parse_source_time(b"2028-10-01T19:12:00")
        );
        assert!(scan_source_time(br#"{"source_time": "2028-10-01T19:12:13"}"#).is_some());
        assert_eq!(scan_source_time(br#"{"source_time":null}"#), None);
        assert_eq!(
            scan_source_time(br#"{"source_time":"2028-10-01T19:12:00Z"}"#),
            None
        );
        assert_eq!(scan_source_time(br#"{"version":5}"#), None);
    }
}
