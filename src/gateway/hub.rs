//! The topic hub: the latest document of every topic, encoded once, and one channel per topic.
//!
//! The channel is a `watch` channel: a broadcast channel that holds only the latest value. A
//! subscriber that falls behind does not queue anything; when it next reads it gets the latest
//! document, which is always a correct answer because results are state, not a log.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, Weak};

use axum::http::HeaderValue;
use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::watch;

use super::direct::Sink;
use super::wire::Forms;
pub use super::wire::Frame;
use crate::bus::{Cycle, Document};
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
    /// Per topic, the streams the publisher writes to itself (see [`super::direct`]); a stream
    /// gone is dropped from its list at the topic's next change.
    sinks: DashMap<Arc<str>, Vec<Weak<Sink>>>,
    ready: AtomicBool,
    /// The last version whose whole cycle is applied: what connections may send up to.
    complete: Arc<AtomicU64>,
    /// Threads that write a change to the publisher's streams (see [`Hub::publish_cycle`]).
    publishers: usize,
    pub metrics: Arc<Metrics>,
}

/// Fewest streams of one change worth a thread of their own: below it, starting the thread
/// costs more than it saves.
const STREAMS_PER_PUBLISHER: usize = 256;
/// Streams a publishing thread takes at a time.
const RUN: usize = 32;

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Hub {
            topics: DashMap::new(),
            sinks: DashMap::new(),
            ready: AtomicBool::new(false),
            complete: Arc::default(),
            publishers: 1,
            metrics,
        }
    }

    /// Write a change to the publisher's streams from `threads` threads at most (at least 1).
    pub fn with_publishers(mut self, threads: usize) -> Self {
        self.publishers = threads.max(1);
        self
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

    /// Apply cycles that arrived together, as [`Hub::apply_cycle`] applies one: store every
    /// document of every cycle, mark them complete, then wake and write each changed topic
    /// once. A large change comes as dozens of cycles; those that waited while the last pass
    /// was written then go out in one pass, which `--publish-threads` can share. Returns how
    /// many documents were newer.
    pub fn apply_cycles(&self, cycles: &[Arc<Cycle>]) -> usize {
        let mut changed: Vec<&Arc<str>> = cycles
            .iter()
            .flat_map(|cycle| &cycle.documents)
            .filter(|doc| self.store(doc))
            .map(|doc| &doc.topic)
            .collect();
        let newer = changed.len();
        if cycles.len() > 1 {
            changed.sort_unstable();
            changed.dedup();
        }
        let version = cycles.iter().map(|c| c.version).max().unwrap_or(0);
        self.publish_cycle(&changed, version);
        newer
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

    /// Steps two and three: mark the cycle complete, then wake the changed topics' subscribers
    /// and write to the streams the publisher serves itself. Every task is woken first, so
    /// that the other cores run them while this one writes. With `--publish-threads` above 1
    /// and enough streams, the writes are split in runs over that many threads, this one
    /// among them; the cycle is done when every run is written.
    pub(crate) fn publish_cycle(&self, changed: &[&Arc<str>], version: u64) {
        self.complete.fetch_max(version, Release);
        // Each changed version once, and its streams by index: no count on a version shared
        // by every stream of it.
        let mut versions = Vec::new();
        let mut direct = Vec::new();
        for topic in changed {
            if let Some(tx) = self.topics.get(&***topic) {
                tx.send_modify(|_| {});
                if let Some(mut sinks) = self.sinks.get_mut(&***topic) {
                    let at = versions.len();
                    versions.push(tx.borrow().clone());
                    direct.reserve(sinks.len());
                    sinks.retain(|s| match s.upgrade() {
                        Some(sink) => {
                            direct.push((at, sink));
                            true
                        }
                        None => false,
                    });
                }
            }
        }
        self.offer_all(&versions, &direct);
    }

    /// Offer every change to its stream, over `publishers` threads at most, each with at
    /// least [`STREAMS_PER_PUBLISHER`] streams, this one among them. The threads take runs of
    /// [`RUN`] streams in turn until none is left, so that they end together however long
    /// each write takes. A thread that cannot be started leaves the runs to the others.
    ///
    /// At 19,000 subscribers on 2 cores, one run each: fan-out p99 208 ms with one thread, 150
    /// and 152 with two, 152 with three (BENCHMARKS.md, "A change written on every core, and
    /// the acceptance on another AMD machine").
    fn offer_all(&self, versions: &[Arc<Encoded>], direct: &[(usize, Arc<Sink>)]) {
        let next = AtomicUsize::new(0);
        let offer = || {
            let mut tally = self.metrics.tally();
            loop {
                let start = next.fetch_add(RUN, Relaxed);
                let Some(run) = direct.get(start..direct.len().min(start + RUN)) else {
                    break;
                };
                if run.is_empty() {
                    break;
                }
                for (at, sink) in run {
                    sink.offer(&versions[*at], &mut tally);
                }
            }
        };
        let threads = self
            .publishers
            .min(direct.len() / STREAMS_PER_PUBLISHER)
            .max(1);
        if threads == 1 {
            return offer();
        }
        std::thread::scope(|scope| {
            for _ in 1..threads {
                let started = std::thread::Builder::new()
                    .name("apura-publish".into())
                    .spawn_scoped(scope, offer);
                if started.is_err() {
                    break;
                }
            }
            offer();
        });
    }

    /// Have the publisher write `topic`'s changes to `sink` from now on.
    pub fn attach(&self, topic: &Arc<str>, sink: &Arc<Sink>) {
        let mut sinks = self.sinks.entry(topic.clone()).or_default();
        // A topic that does not change keeps the streams that left it: drop them as the list
        // doubles.
        if sinks.len() >= 64 && sinks.len().is_power_of_two() {
            sinks.retain(|s| s.strong_count() > 0);
        }
        sinks.push(Arc::downgrade(sink));
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

    /// Who listens to what, counted now: every open subscription (an SSE stream or a
    /// WebSocket following a topic holds one receiver of the topic's channel), the `top` topics
    /// with the most subscribers, and totals per kind of topic. One pass over the topics, no
    /// cost on delivery.
    pub fn audience(&self, top: usize) -> Audience {
        let mut by_kind = [0u64; TopicClass::ALL.len()];
        let mut topics_by_kind = [0u64; TopicClass::ALL.len()];
        let mut listened = Vec::new();
        for entry in self.topics.iter() {
            let class = TopicClass::of(entry.key()) as usize;
            let n = entry.value().receiver_count() as u64;
            topics_by_kind[class] += 1;
            by_kind[class] += n;
            if n > 0 {
                listened.push((entry.key().clone(), n));
            }
        }
        listened.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        listened.truncate(top);
        Audience {
            subscriptions: by_kind.iter().sum(),
            kinds: TopicClass::ALL
                .iter()
                .map(|c| KindCount {
                    kind: *c,
                    topics: topics_by_kind[*c as usize],
                    subscriptions: by_kind[*c as usize],
                })
                .collect(),
            top: listened,
        }
    }

    /// Every topic whose name starts with `prefix`, with its latest document.
    pub fn starting_with(&self, prefix: &str) -> Vec<Arc<Encoded>> {
        self.topics
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .map(|e| e.value().borrow().clone())
            .collect()
    }

    /// Per kind of topic: topics held, the highest version and the latest publication among
    /// them.
    pub fn freshness(&self) -> Vec<(TopicClass, usize, u64, i64)> {
        let mut out: Vec<(TopicClass, usize, u64, i64)> =
            TopicClass::ALL.iter().map(|c| (*c, 0, 0, 0)).collect();
        for entry in self.topics.iter() {
            let row = &mut out[TopicClass::of(entry.key()) as usize];
            let enc = entry.value().borrow();
            row.1 += 1;
            row.2 = row.2.max(enc.version);
            row.3 = row.3.max(enc.published_at);
        }
        out
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

/// The kinds of topic, a bounded set: the label of `apura_subscriptions_by_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicClass {
    Mayors = 0,
    Councillors = 1,
    Zones = 2,
    State = 3,
    Brazil = 4,
    Cities = 5,
    /// Any other name (none in the contract; a test's topics).
    Other = 6,
}

impl TopicClass {
    pub const ALL: [TopicClass; 7] = [
        TopicClass::Mayors,
        TopicClass::Councillors,
        TopicClass::Zones,
        TopicClass::State,
        TopicClass::Brazil,
        TopicClass::Cities,
        TopicClass::Other,
    ];

    pub fn of(topic: &str) -> TopicClass {
        match topic.split_once('-').map_or(topic, |(head, _)| head) {
            "mayors" => TopicClass::Mayors,
            "councillors" => TopicClass::Councillors,
            "zones" => TopicClass::Zones,
            "state" => TopicClass::State,
            "brazil" => TopicClass::Brazil,
            "cities" => TopicClass::Cities,
            _ => TopicClass::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TopicClass::Mayors => "mayors",
            TopicClass::Councillors => "councillors",
            TopicClass::Zones => "zones",
            TopicClass::State => "state",
            TopicClass::Brazil => "brazil",
            TopicClass::Cities => "cities",
            TopicClass::Other => "other",
        }
    }
}

/// Subscriptions of one kind of topic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindCount {
    pub kind: TopicClass,
    /// Topics of this kind held.
    pub topics: u64,
    pub subscriptions: u64,
}

/// Open subscriptions, counted by [`Hub::audience`].
#[derive(Debug, Clone)]
pub struct Audience {
    pub subscriptions: u64,
    /// Every kind, in [`TopicClass::ALL`]'s order.
    pub kinds: Vec<KindCount>,
    /// The topics with the most subscribers (none without), most first, then by name.
    pub top: crate::bus::TopicCounts,
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
    fn the_audience_counts_open_receivers_by_topic_and_kind() {
        let hub = Hub::new(Arc::default());
        hub.apply_cycle(
            &[
                doc("mayors-sp-sao-paulo", 1),
                doc("state-sp", 1),
                doc("brazil", 1),
            ],
            1,
        );
        let a = hub.subscribe("mayors-sp-sao-paulo").unwrap();
        let b = hub.subscribe("mayors-sp-sao-paulo").unwrap();
        let _c = hub.subscribe("brazil").unwrap();
        let audience = hub.audience(1);
        assert_eq!(audience.subscriptions, 3);
        assert_eq!(audience.top, vec![(Arc::from("mayors-sp-sao-paulo"), 2)]);
        let mayors = &audience.kinds[TopicClass::Mayors as usize];
        assert_eq!((mayors.topics, mayors.subscriptions), (1, 2));
        assert_eq!(audience.kinds[TopicClass::State as usize].subscriptions, 0);
        drop((a, b));
        let audience = hub.audience(50);
        assert_eq!(audience.top, vec![(Arc::from("brazil"), 1)]);
    }

    #[test]
    fn cycles_applied_together_leave_each_topic_on_its_newest_version_and_all_complete() {
        let hub = Hub::new(Arc::default());
        hub.apply_cycle(&[doc("a", 1), doc("b", 1)], 1);
        let mut a = hub.subscribe("a").unwrap();
        let b = hub.subscribe("b").unwrap();
        let cycle = |version, docs| {
            Arc::new(Cycle {
                version,
                published_at: 1000,
                documents: docs,
            })
        };
        let cycles = [
            cycle(2, vec![doc("a", 2)]),
            cycle(3, vec![doc("a", 3), doc("c", 3)]),
            // Already held: not newer.
            cycle(4, vec![doc("b", 1)]),
        ];
        assert_eq!(hub.apply_cycles(&cycles), 3);
        assert_eq!(hub.complete().load(std::sync::atomic::Ordering::Acquire), 4);
        assert!(a.has_changed().unwrap());
        assert_eq!(a.borrow_and_update().version, 3);
        assert!(!b.has_changed().unwrap(), "b did not change");
        assert_eq!(hub.get("c").unwrap().version, 3);
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
