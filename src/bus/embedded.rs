//! The embedded bus: an in-process broadcast channel and a memory store, no external service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use super::{AUDIENCE_TTL, Bus, BusEvent, Cycle, Document, TopicCounts, now_millis, sum_audience};
use crate::documents::Draft;

/// Cycles buffered for a slow subscriber before it is told to resync. A change of every city
/// comes as dozens of cycles of at most 256 KiB at once (a large change is split, see
/// `crate::ingest::core::CYCLE_BYTES`), which a gateway applies in well under a millisecond
/// each; between changes there are seconds. The buffer holds the same documents as
/// the store, not copies.
const CHANNEL_CAPACITY: usize = 256;

/// In-process bus and store.
pub struct EmbeddedBus {
    store: Mutex<Store>,
    tx: broadcast::Sender<Arc<Cycle>>,
    /// The last audience report and when it came: one process, one gateway.
    audience: Mutex<Option<(Instant, TopicCounts)>>,
}

struct Store {
    sequence: u64,
    latest: HashMap<Arc<str>, Document>,
}

impl EmbeddedBus {
    /// A bus whose sequence starts at the current Unix time in milliseconds, not at 1: a client
    /// that stays open across a restart of the process holds versions of the previous run and
    /// ignores anything not newer. Cycles come at most a few per second, far below the clock's
    /// thousand per second, so a restarted process always starts above where it stopped.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        EmbeddedBus {
            store: Mutex::new(Store {
                sequence: now_millis().max(0) as u64,
                latest: HashMap::new(),
            }),
            tx,
            audience: Mutex::new(None),
        }
    }
}

impl Default for EmbeddedBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish_at(
        &self,
        drafts: Vec<Draft>,
        published_at: i64,
    ) -> anyhow::Result<Arc<Cycle>> {
        let mut store = self.store.lock().expect("bus store poisoned");
        store.sequence += 1;
        let version = store.sequence;
        let documents: Vec<Document> = drafts
            .iter()
            .map(|d| Document::stamp(d, version, published_at))
            .collect();
        for doc in &documents {
            store.latest.insert(doc.topic.clone(), doc.clone());
        }
        let cycle = Arc::new(Cycle {
            version,
            published_at,
            documents,
        });
        // Sent under the lock so that subscribers see cycles in version order. No receiver is
        // not an error: gateways may start later and read the store.
        let _ = self.tx.send(cycle.clone());
        Ok(cycle)
    }

    async fn snapshot(&self) -> anyhow::Result<Vec<Document>> {
        let store = self.store.lock().expect("bus store poisoned");
        Ok(store.latest.values().cloned().collect())
    }

    async fn subscribe(&self) -> anyhow::Result<BoxStream<'static, BusEvent>> {
        let rx = self.tx.subscribe();
        Ok(BroadcastStream::new(rx)
            .map(|item| match item {
                Ok(cycle) => BusEvent::Cycle(cycle),
                Err(_lagged) => BusEvent::Resync,
            })
            .boxed())
    }

    async fn report_audience(&self, top: &[(Arc<str>, u64)]) -> anyhow::Result<()> {
        *self.audience.lock().expect("audience poisoned") = Some((Instant::now(), top.to_vec()));
        Ok(())
    }

    async fn audience(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let audience = self.audience.lock().expect("audience poisoned");
        Ok(match &*audience {
            Some((at, top)) if at.elapsed() < AUDIENCE_TTL => sum_audience([&top[..]]),
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn draft(topic: &str, n: u32) -> Draft {
        Draft {
            topic: topic.into(),
            body: Bytes::from(format!(r#"{{"topic":"{topic}","n":{n}}}"#)),
        }
    }

    #[tokio::test]
    async fn cycles_take_increasing_versions_and_update_the_store() {
        let before = crate::bus::now_millis();
        let bus = EmbeddedBus::new();
        let mut events = bus.subscribe().await.unwrap();
        let c1 = bus
            .publish(vec![draft("a", 1), draft("b", 1)])
            .await
            .unwrap();
        let c2 = bus.publish(vec![draft("a", 2)]).await.unwrap();
        assert_eq!(c2.version, c1.version + 1);
        // From the clock when the bus was made, however long the publish took after it.
        assert!(
            c1.version as i64 >= before && c1.version as i64 <= c1.published_at + 1,
            "starts from the clock: {} not in [{before}, {}]",
            c1.version,
            c1.published_at + 1
        );
        let snap = bus.snapshot().await.unwrap();
        let a = snap.iter().find(|d| &*d.topic == "a").unwrap();
        let b = snap.iter().find(|d| &*d.topic == "b").unwrap();
        assert_eq!((a.version, b.version), (c2.version, c1.version));
        for expected in [c1.version, c2.version] {
            match events.next().await.unwrap() {
                BusEvent::Cycle(c) => assert_eq!(c.version, expected),
                BusEvent::Resync => panic!("unexpected resync"),
            }
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_to_resync() {
        let bus = EmbeddedBus::new();
        let mut events = bus.subscribe().await.unwrap();
        for i in 0..(CHANNEL_CAPACITY as u32 + 5) {
            bus.publish(vec![draft("a", i)]).await.unwrap();
        }
        assert!(matches!(events.next().await.unwrap(), BusEvent::Resync));
    }
}
