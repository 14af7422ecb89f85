//! The seam between ingest and gateways: whole publication cycles out, cycles and snapshots in.
//!
//! Ingest calls [`Bus::publish`] with the drafts that changed; the bus takes the next number of
//! the global version sequence, stamps it on every document, stores the latest document of every
//! topic and broadcasts the cycle, all or nothing. A gateway calls [`Bus::subscribe`] first, then
//! [`Bus::snapshot`], and ignores anything not newer than what it holds.

pub mod embedded;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;

use crate::documents::Draft;

/// A published document: a draft stamped with its cycle's version and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub topic: Arc<str>,
    pub version: u64,
    /// Unix milliseconds at which the cycle was published.
    pub published_at: i64,
    /// The whole document as JSON: `{"version":N,"published_at":T,` followed by the draft body.
    pub json: Bytes,
}

impl Document {
    /// Stamp `version` and `published_at` onto a draft body (a JSON object) without re-encoding it.
    pub fn stamp(draft: &Draft, version: u64, published_at: i64) -> Document {
        let header = header(version, published_at);
        let rest = &draft.body[1..];
        let mut json = BytesMut::with_capacity(header.len() + rest.len() + 1);
        json.extend_from_slice(header.as_bytes());
        if rest.starts_with(b"}") {
            json.extend_from_slice(b"}");
        } else {
            json.extend_from_slice(b",");
            json.extend_from_slice(rest);
        }
        Document {
            topic: Arc::from(draft.topic.as_str()),
            version,
            published_at,
            json: json.freeze(),
        }
    }

    /// The draft body this document was stamped from: what the diff compares.
    pub fn content(&self) -> Option<Bytes> {
        let header = header(self.version, self.published_at);
        let rest = self.json.strip_prefix(header.as_bytes())?;
        let mut body = BytesMut::with_capacity(rest.len());
        body.extend_from_slice(b"{");
        body.extend_from_slice(rest.strip_prefix(b",").unwrap_or(rest));
        Some(body.freeze())
    }
}

fn header(version: u64, published_at: i64) -> String {
    format!("{{\"version\":{version},\"published_at\":{published_at}")
}

/// One publication cycle: every document that changed, under one version.
#[derive(Debug)]
pub struct Cycle {
    pub version: u64,
    pub published_at: i64,
    pub documents: Vec<Document>,
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum BusEvent {
    /// A cycle, in version order.
    Cycle(Arc<Cycle>),
    /// Cycles may have been missed (the subscriber lagged, or the connection to the bus was
    /// lost and is back): load the snapshots again.
    Resync,
}

/// The bus and store behind ingest and gateways.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publish one cycle: all drafts under the next version, or none of them, stamped with
    /// `published_at` (Unix milliseconds): the ingest publishes a large change as several
    /// cycles that share the time the first one went out.
    async fn publish_at(&self, drafts: Vec<Draft>, published_at: i64)
    -> anyhow::Result<Arc<Cycle>>;
    /// Publish one cycle stamped now.
    async fn publish(&self, drafts: Vec<Draft>) -> anyhow::Result<Arc<Cycle>> {
        self.publish_at(drafts, now_millis()).await
    }
    /// The latest document of every topic.
    async fn snapshot(&self) -> anyhow::Result<Vec<Document>>;
    /// Cycles published from now on. Subscribe before reading the snapshot.
    async fn subscribe(&self) -> anyhow::Result<BoxStream<'static, BusEvent>>;
    /// A gateway's audience now: its most-subscribed topics with their subscriptions. It
    /// replaces this process's last report and counts for [`AUDIENCE_TTL`].
    async fn report_audience(&self, top: &[(Arc<str>, u64)]) -> anyhow::Result<()>;
    /// The audience of every gateway that reported within [`AUDIENCE_TTL`], summed per topic,
    /// most subscribed first: what the ingest fetches first.
    async fn audience(&self) -> anyhow::Result<Vec<(String, u64)>>;
}

/// Topics with their subscriptions, as a gateway reports them.
pub type TopicCounts = Vec<(Arc<str>, u64)>;

/// How often a gateway reports its audience ([`Bus::report_audience`]).
pub const AUDIENCE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a report counts: three reports, so that one late report does not drop a gateway's
/// audience, and a gateway gone stops counting within 15 s.
pub const AUDIENCE_TTL: std::time::Duration = std::time::Duration::from_secs(15);
/// Topics per report: the ingest's first places (capitals, then the 50 most subscribed) with
/// room for gateways whose top topics differ.
pub const AUDIENCE_TOP: usize = 200;

/// Several reports summed per topic, most subscribed first, then by name.
pub fn sum_audience<'a>(
    reports: impl IntoIterator<Item = &'a [(Arc<str>, u64)]>,
) -> Vec<(String, u64)> {
    let mut sum: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for report in reports {
        for (topic, n) in report {
            *sum.entry(topic).or_default() += n;
        }
    }
    let mut out: Vec<(String, u64)> = sum.into_iter().map(|(t, n)| (t.to_string(), n)).collect();
    out.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_is_reversible_and_valid_json() {
        let draft = Draft {
            topic: "brazil".into(),
            body: Bytes::from_static(br#"{"topic":"brazil","x":[1,2]}"#),
        };
        let doc = Document::stamp(&draft, 42, 1_700_000_000_123);
        let v: serde_json::Value = serde_json::from_slice(&doc.json).unwrap();
        assert_eq!(v["version"], 42);
        assert_eq!(v["published_at"], 1_700_000_000_123i64);
        assert_eq!(v["topic"], "brazil");
        assert_eq!(doc.content().unwrap(), draft.body);
        let empty = Draft {
            topic: "t".into(),
            body: Bytes::from_static(b"{}"),
        };
        let doc = Document::stamp(&empty, 1, 2);
        assert_eq!(&doc.json[..], br#"{"version":1,"published_at":2}"#);
        assert_eq!(doc.content().unwrap(), empty.body);
    }
}
