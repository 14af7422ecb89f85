//! Delivery in version order: the documents of one connection's topics, each sent only once the
//! hub holds the whole cycle it belongs to.
//!
//! Each topic has a channel of its own, so a connection sees its topics' changes in whatever
//! order it polls them, and a cycle is applied to the hub one topic at a time. Were frames sent
//! as they came, a client could get topic A at version 10 before topic B at version 9 (or before
//! B at 10, not applied yet), disconnect, resume from `Last-Event-ID: 10`, and never learn B's
//! change. Here frames wait until every cycle up to theirs is complete, and leave smallest
//! version first, so "the last id received" always means "everything up to it was received".

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::watch;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;

use super::hub::{Encoded, Frame};

/// The topics of one connection and the frames waiting to be sent.
pub struct Ordered {
    topics: StreamMap<Arc<str>, WatchStream<Arc<Encoded>>>,
    /// The hub's last complete version, and its changes.
    complete: WatchStream<u64>,
    complete_version: u64,
    pending: Vec<(Arc<Encoded>, Frame)>,
}

impl Ordered {
    pub fn new(complete: watch::Receiver<u64>) -> Self {
        let complete_version = *complete.borrow();
        Ordered {
            topics: StreamMap::new(),
            complete: WatchStream::from_changes(complete),
            complete_version,
            pending: Vec::new(),
        }
    }

    /// Follow a topic from now on; `snapshot` is sent first when given.
    pub fn insert(
        &mut self,
        topic: Arc<str>,
        rx: watch::Receiver<Arc<Encoded>>,
        snapshot: Option<Arc<Encoded>>,
    ) {
        if let Some(enc) = snapshot {
            self.pending.push((enc, Frame::Snapshot));
        }
        self.topics.insert(topic, WatchStream::from_changes(rx));
    }

    /// Stop following a topic, dropping its frames not yet sent.
    pub fn remove(&mut self, topic: &str) -> bool {
        self.pending.retain(|(enc, _)| &*enc.topic != topic);
        self.topics.remove(topic).is_some()
    }

    pub fn contains(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

impl Stream for Ordered {
    type Item = (Arc<Encoded>, Frame);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while let Poll::Ready(Some((_, enc))) = Pin::new(&mut this.topics).poll_next(cx) {
            // A newer version replaces a waiting update of the same topic: skip to the latest.
            this.pending
                .retain(|(p, f)| !(*f == Frame::Update && p.topic == enc.topic));
            this.pending.push((enc, Frame::Update));
        }
        while let Poll::Ready(Some(v)) = Pin::new(&mut this.complete).poll_next(cx) {
            this.complete_version = this.complete_version.max(v);
        }
        let next = this
            .pending
            .iter()
            .enumerate()
            .filter(|(_, (enc, _))| enc.version <= this.complete_version)
            .min_by_key(|(_, (enc, frame))| (enc.version, *frame == Frame::Update))
            .map(|(i, _)| i);
        match next {
            Some(i) => Poll::Ready(Some(this.pending.swap_remove(i))),
            // Every inner stream returned Pending, so their wakers are registered. The stream
            // never ends by itself: the connection ends it (client gone, drain).
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Document;
    use crate::documents::Draft;
    use crate::gateway::hub::Hub;
    use futures_util::{FutureExt, StreamExt};

    fn doc(topic: &str, version: u64) -> Document {
        let draft = Draft {
            topic: topic.into(),
            body: bytes::Bytes::from(format!(r#"{{"topic":"{topic}"}}"#)),
        };
        Document::stamp(&draft, version, 0)
    }

    fn next(o: &mut Ordered) -> Option<(String, u64, Frame)> {
        o.next()
            .now_or_never()
            .flatten()
            .map(|(e, f)| (e.topic.to_string(), e.version, f))
    }

    #[tokio::test]
    async fn frames_wait_for_their_cycle_and_leave_in_version_order() {
        let hub = Hub::new(Arc::default());
        hub.apply(&doc("a", 1));
        hub.apply(&doc("b", 1));
        hub.set_complete(1);
        let mut o = Ordered::new(hub.complete());
        for t in ["a", "b"] {
            let mut rx = hub.subscribe(t).unwrap();
            let snap = rx.borrow_and_update().clone();
            o.insert(Arc::from(t), rx, Some(snap));
        }
        assert_eq!(next(&mut o), Some(("a".into(), 1, Frame::Snapshot)));
        assert_eq!(next(&mut o), Some(("b".into(), 1, Frame::Snapshot)));
        assert_eq!(next(&mut o), None);

        // Cycle 5 changes b, cycle 6 changes a and b; cycle 6 is half applied.
        hub.apply(&doc("b", 5));
        hub.set_complete(5);
        hub.apply(&doc("a", 6));
        // b's 5 may go, a's 6 must wait for the rest of cycle 6.
        assert_eq!(next(&mut o), Some(("b".into(), 5, Frame::Update)));
        assert_eq!(next(&mut o), None);
        hub.apply(&doc("b", 6));
        hub.set_complete(6);
        assert_eq!(next(&mut o), Some(("a".into(), 6, Frame::Update)));
        assert_eq!(next(&mut o), Some(("b".into(), 6, Frame::Update)));
        assert_eq!(next(&mut o), None);

        // Unsubscribing drops what was waiting.
        hub.apply(&doc("a", 7));
        assert!(o.remove("a"));
        hub.set_complete(7);
        assert_eq!(next(&mut o), None);
    }
}
