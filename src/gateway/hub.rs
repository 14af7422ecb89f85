//! The topic hub: the latest document of every topic, encoded once, and one channel per topic.
//!
//! The channel is a `watch` channel: a broadcast channel that holds only the latest value. A
//! subscriber that falls behind does not queue anything; when it next reads it gets the latest
//! document, which is always a correct answer because results are state, not a log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use axum::http::HeaderValue;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::sync::watch;

use crate::bus::Document;
use crate::metrics::Metrics;

/// One version of one topic with every encoding the endpoints send. Each encoding is built at
/// most once, on first use, and the same bytes are shared by every subscriber; cold topics of
/// the long tail never build the streaming ones.
#[derive(Debug)]
pub struct Encoded {
    pub topic: Arc<str>,
    pub version: u64,
    pub published_at: i64,
    /// The document JSON: the GET body.
    pub body: Bytes,
    /// `"<version>"`.
    pub etag: HeaderValue,
    gzip: OnceLock<Bytes>,
    sse_snapshot: OnceLock<Bytes>,
    sse_update: OnceLock<Bytes>,
    ws_snapshot: OnceLock<Utf8Bytes>,
    ws_update: OnceLock<Utf8Bytes>,
}

/// Which of the two streaming messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Snapshot,
    Update,
}

impl Frame {
    fn name(self) -> &'static str {
        match self {
            Frame::Snapshot => "snapshot",
            Frame::Update => "update",
        }
    }
}

impl Encoded {
    pub fn new(doc: &Document) -> Self {
        Encoded {
            topic: doc.topic.clone(),
            version: doc.version,
            published_at: doc.published_at,
            body: doc.json.clone(),
            etag: HeaderValue::from_str(&format!("\"{}\"", doc.version))
                .expect("a number is a valid header"),
            gzip: OnceLock::new(),
            sse_snapshot: OnceLock::new(),
            sse_update: OnceLock::new(),
            ws_snapshot: OnceLock::new(),
            ws_update: OnceLock::new(),
        }
    }

    /// The body, gzip-compressed.
    pub fn gzip(&self) -> &Bytes {
        self.gzip.get_or_init(|| {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(self.body.len() / 4),
                flate2::Compression::default(),
            );
            enc.write_all(&self.body).expect("writing to memory");
            Bytes::from(enc.finish().expect("writing to memory"))
        })
    }

    /// The SSE frame: `event:`, `id:` (the version) and one `data:` line (the JSON has no raw
    /// newlines: serde_json escapes them).
    pub fn sse(&self, frame: Frame) -> &Bytes {
        let cell = match frame {
            Frame::Snapshot => &self.sse_snapshot,
            Frame::Update => &self.sse_update,
        };
        cell.get_or_init(|| {
            let head = format!("event: {}\nid: {}\ndata: ", frame.name(), self.version);
            let mut b = BytesMut::with_capacity(head.len() + self.body.len() + 2);
            b.extend_from_slice(head.as_bytes());
            b.extend_from_slice(&self.body);
            b.extend_from_slice(b"\n\n");
            b.freeze()
        })
    }

    /// The WebSocket message: `{"type", "topic", "version", "document"}`, UTF-8 JSON text.
    pub fn ws(&self, frame: Frame) -> &Utf8Bytes {
        let cell = match frame {
            Frame::Snapshot => &self.ws_snapshot,
            Frame::Update => &self.ws_update,
        };
        cell.get_or_init(|| {
            let head = format!(
                "{{\"type\":\"{}\",\"topic\":{},\"version\":{},\"document\":",
                frame.name(),
                serde_json::to_string(&*self.topic).expect("a string serializes"),
                self.version
            );
            let mut b = BytesMut::with_capacity(head.len() + self.body.len() + 1);
            b.extend_from_slice(head.as_bytes());
            b.extend_from_slice(&self.body);
            b.extend_from_slice(b"}");
            // Validated once here; every send then shares these bytes.
            Utf8Bytes::try_from(b.freeze()).expect("JSON is UTF-8")
        })
    }
}

/// The latest document of every topic and its channel.
///
/// A cycle is applied in three steps: every document is stored without waking anyone, then the
/// cycle is marked complete, then each changed topic's subscribers are woken. A connection
/// therefore wakes once per change of its own topics and, when it does, the cycle is complete;
/// a document it reads early (woken for another topic) has a version above `complete` and waits
/// for the wake that the third step is sure to bring.
pub struct Hub {
    topics: DashMap<Arc<str>, watch::Sender<Arc<Encoded>>>,
    ready: AtomicBool,
    /// The last version whose whole cycle is applied: what connections may send up to.
    complete: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Hub {
            topics: DashMap::new(),
            ready: AtomicBool::new(false),
            complete: Arc::default(),
            metrics,
        }
    }

    /// Apply a cycle (or a snapshot load): store its documents, mark every version up to
    /// `version` complete, then wake the subscribers of the topics that changed. Older or equal
    /// versions than the one held are ignored, so a subscriber never sees a version go
    /// backwards. Returns how many documents were newer.
    pub fn apply_cycle(&self, docs: &[Document], version: u64) -> usize {
        let changed: Vec<&Arc<str>> = docs
            .iter()
            .filter(|doc| self.store(doc))
            .map(|doc| &doc.topic)
            .collect();
        self.publish_cycle(&changed, version);
        changed.len()
    }

    /// Step one: hold a document as the topic's latest, waking nobody.
    pub(crate) fn store(&self, doc: &Document) -> bool {
        if let Some(tx) = self.topics.get(&doc.topic) {
            if tx.borrow().version >= doc.version {
                return false;
            }
            let newer = store_quietly(&tx, Arc::new(Encoded::new(doc)));
            if newer {
                self.applied(doc);
            }
            return newer;
        }
        let enc = Arc::new(Encoded::new(doc));
        let mut newer = true;
        self.topics
            .entry(doc.topic.clone())
            .and_modify(|tx| newer = store_quietly(tx, enc.clone()))
            .or_insert_with(|| watch::channel(enc.clone()).0);
        if newer {
            self.applied(doc);
        }
        newer
    }

    /// Steps two and three: mark the cycle complete, then wake the changed topics' subscribers.
    pub(crate) fn publish_cycle(&self, changed: &[&Arc<str>], version: u64) {
        self.complete.fetch_max(version, Release);
        for topic in changed {
            if let Some(tx) = self.topics.get(&***topic) {
                tx.send_modify(|_| {});
            }
        }
    }

    fn applied(&self, doc: &Document) {
        self.metrics.updates_applied.fetch_add(1, Relaxed);
        self.metrics.saw_published_at(doc.published_at);
    }

    /// The latest document of a topic.
    pub fn get(&self, topic: &str) -> Option<Arc<Encoded>> {
        self.topics.get(topic).map(|tx| tx.borrow().clone())
    }

    /// A receiver of a topic's channel; `None` for a topic that was never published, and then
    /// nothing is allocated.
    pub fn subscribe(&self, topic: &str) -> Option<watch::Receiver<Arc<Encoded>>> {
        self.topics.get(topic).map(|tx| tx.subscribe())
    }

    /// Topics held.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The highest version held by any topic.
    pub fn max_version(&self) -> u64 {
        self.topics
            .iter()
            .map(|e| e.value().borrow().version)
            .max()
            .unwrap_or(0)
    }

    /// The last complete version, shared with the connections that read it.
    pub fn complete(&self) -> Arc<AtomicU64> {
        self.complete.clone()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
    }

    /// Ready once the first documents are loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }
}

/// Replace a channel's value with a newer one without notifying its receivers (they are woken
/// by [`Hub::publish_cycle`]). Returns whether it was newer.
fn store_quietly(tx: &watch::Sender<Arc<Encoded>>, enc: Arc<Encoded>) -> bool {
    let mut newer = false;
    tx.send_if_modified(|cur| {
        if enc.version > cur.version {
            *cur = enc;
            newer = true;
        }
        false
    });
    newer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::Draft;

    fn doc(topic: &str, version: u64) -> Document {
        let draft = Draft {
            topic: topic.into(),
            body: Bytes::from(format!(r#"{{"topic":"{topic}"}}"#)),
        };
        Document::stamp(&draft, version, 1000 + version as i64)
    }

    #[test]
    fn older_versions_never_replace_newer_ones() {
        let hub = Hub::new(Arc::default());
        assert_eq!(hub.apply_cycle(&[doc("a", 5)], 5), 1);
        assert_eq!(hub.apply_cycle(&[doc("a", 3)], 3), 0);
        assert_eq!(hub.apply_cycle(&[doc("a", 5)], 5), 0);
        assert_eq!(hub.get("a").unwrap().version, 5);
        assert_eq!(hub.apply_cycle(&[doc("a", 6)], 6), 1);
        assert_eq!(hub.get("a").unwrap().version, 6);
    }

    #[test]
    fn unknown_topics_allocate_nothing() {
        let hub = Hub::new(Arc::default());
        hub.apply_cycle(&[doc("a", 1)], 1);
        assert!(hub.subscribe("nope").is_none());
        assert!(hub.get("nope").is_none());
        assert_eq!(hub.len(), 1);
    }

    #[test]
    fn encodings_carry_the_version_and_the_same_body() {
        let enc = Encoded::new(&doc("brazil", 7));
        let sse = std::str::from_utf8(enc.sse(Frame::Update)).unwrap();
        assert!(sse.starts_with("event: update\nid: 7\ndata: {\"version\":7,"));
        assert!(sse.ends_with("}\n\n"));
        let ws: serde_json::Value = serde_json::from_str(enc.ws(Frame::Snapshot)).unwrap();
        assert_eq!(ws["type"], "snapshot");
        assert_eq!(ws["topic"], "brazil");
        assert_eq!(ws["version"], 7);
        assert_eq!(ws["document"]["topic"], "brazil");
        assert_eq!(enc.etag, "\"7\"");
        let mut d = flate2::read::GzDecoder::new(&enc.gzip()[..]);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out).unwrap();
        assert_eq!(out, enc.body);
    }
}
