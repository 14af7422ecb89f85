//! The topic hub: the latest document of every topic, encoded once, and one channel per topic.
//!
//! The channel is a `watch` channel: a broadcast channel that holds only the latest value. A
//! subscriber that falls behind does not queue anything; when it next reads it gets the latest
//! document, which is always a correct answer because results are state, not a log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release};

use axum::http::HeaderValue;
use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::watch;

use super::wire::Forms;
pub use super::wire::Frame;
use crate::bus::Document;
use crate::metrics::Metrics;

/// One version of one topic, and every form of it the endpoints send (see [`super::wire`]).
#[derive(Debug)]
pub struct Encoded {
    pub topic: Arc<str>,
    pub version: u64,
    pub published_at: i64,
    /// The document JSON: the GET body.
    pub body: Bytes,
    /// `"<version>"`.
    pub etag: HeaderValue,
    /// The version this one replaced in the hub, and its body: what a patch applies to.
    pub base: Option<(u64, Bytes)>,
    pub(super) forms: Forms,
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
            base: None,
            forms: Forms::default(),
        }
    }

    /// The version after `previous`, which it replaces.
    fn after(doc: &Document, previous: &Encoded) -> Self {
        Encoded {
            base: Some((previous.version, previous.body.clone())),
            ..Encoded::new(doc)
        }
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
            let newer = store_quietly(&tx, doc);
            if newer {
                self.applied(doc);
            }
            return newer;
        }
        let enc = Arc::new(Encoded::new(doc));
        let mut newer = true;
        self.topics
            .entry(doc.topic.clone())
            .and_modify(|tx| newer = store_quietly(tx, doc))
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
fn store_quietly(tx: &watch::Sender<Arc<Encoded>>, doc: &Document) -> bool {
    let mut newer = false;
    tx.send_if_modified(|cur| {
        if doc.version > cur.version {
            *cur = Arc::new(Encoded::after(doc, cur));
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
}
