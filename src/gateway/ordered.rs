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
use std::sync::atomic::{AtomicU64, Ordering::Acquire};
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::watch;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;

use super::hub::{Encoded, Frame};

/// The topics of one connection and the frames waiting to be sent.
pub struct Ordered {
    topics: StreamMap<Arc<str>, Topic>,
    /// The hub's last complete version. A frame above it waits; the hub wakes its topic again
    /// once its cycle is complete (see [`super::hub::Hub`]), so no waker is needed here.
    complete: Arc<AtomicU64>,
    pending: Vec<(Arc<Encoded>, Frame)>,
}

/// One topic's changes, each version once: a document read early (before its cycle was
/// complete, or as a snapshot) is not yielded again when the wake for it comes.
struct Topic {
    changes: WatchStream<Arc<Encoded>>,
    last: u64,
}

impl Stream for Topic {
    type Item = Arc<Encoded>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Ready(Some(enc)) if enc.version <= self.last => continue,
                Poll::Ready(Some(enc)) => {
                    self.last = enc.version;
                    return Poll::Ready(Some(enc));
                }
                other => return other,
            }
        }
    }
}

impl Ordered {
    pub fn new(complete: Arc<AtomicU64>) -> Self {
        Ordered {
            topics: StreamMap::new(),
            complete,
            pending: Vec::new(),
        }
    }

    /// Follow a topic from now on: `rx` has just been read (`borrow_and_update`) and held
    /// `current`, which is sent first as `first` (a snapshot, or an update the client has not
    /// had) if given.
    pub fn insert(
        &mut self,
        topic: Arc<str>,
        rx: watch::Receiver<Arc<Encoded>>,
        current: Arc<Encoded>,
        first: Option<Frame>,
    ) {
        let last = current.version;
        if let Some(frame) = first {
            self.pending.push((current, frame));
        }
        let changes = WatchStream::from_changes(rx);
        self.topics.insert(topic, Topic { changes, last });
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
        let complete = this.complete.load(Acquire);
        let next = this
            .pending
            .iter()
            .enumerate()
            .filter(|(_, (enc, _))| enc.version <= complete)
            .min_by_key(|(_, (enc, frame))| (enc.version, *frame == Frame::Update))
            .map(|(i, _)| i);
        match next {
            Some(i) => Poll::Ready(Some(this.pending.swap_remove(i))),
            // Every topic returned Pending, so their wakers are registered. The stream never
            // ends by itself: the connection ends it (client gone, drain).
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

    fn follow(hub: &Hub, o: &mut Ordered, topic: &str) {
        let mut rx = hub.subscribe(topic).unwrap();
        let current = rx.borrow_and_update().clone();
        o.insert(Arc::from(topic), rx, current, Some(Frame::Snapshot));
    }

    #[tokio::test]
    async fn frames_wait_for_their_cycle_and_leave_in_version_order_once() {
        let hub = Hub::new(Arc::default());
        hub.apply_cycle(&[doc("a", 1), doc("b", 1)], 1);
        let mut o = Ordered::new(hub.complete());
        follow(&hub, &mut o, "a");
        follow(&hub, &mut o, "b");
        assert_eq!(next(&mut o), Some(("a".into(), 1, Frame::Snapshot)));
        assert_eq!(next(&mut o), Some(("b".into(), 1, Frame::Snapshot)));
        assert_eq!(next(&mut o), None);

        // Cycle 5 changes b.
        hub.apply_cycle(&[doc("b", 5)], 5);
        assert_eq!(next(&mut o), Some(("b".into(), 5, Frame::Update)));
        assert_eq!(next(&mut o), None);

        // Cycle 6 changes a and b and is half applied: a's 6 is stored, nothing may go yet,
        // not even to a connection that subscribes now and reads a's 6 as its snapshot.
        let (a6, b6) = (doc("a", 6), doc("b", 6));
        assert!(hub.store(&a6));
        assert_eq!(next(&mut o), None);
        let mut late = Ordered::new(hub.complete());
        follow(&hub, &mut late, "a");
        assert_eq!(next(&mut late), None);
        assert!(hub.store(&b6));
        hub.publish_cycle(&[&a6.topic, &b6.topic], 6);
        // Frames of one version leave in no particular order.
        let mut six = [next(&mut o), next(&mut o)];
        six.sort_by_key(|f| f.as_ref().map(|(topic, _, _)| topic.clone()));
        assert_eq!(
            six,
            [
                Some(("a".into(), 6, Frame::Update)),
                Some(("b".into(), 6, Frame::Update))
            ]
        );
        assert_eq!(next(&mut o), None);
        // The late subscriber gets a's 6 once, as its snapshot, not again as an update.
        assert_eq!(next(&mut late), Some(("a".into(), 6, Frame::Snapshot)));
        assert_eq!(next(&mut late), None);

        // Unsubscribing drops what was waiting.
        let a7 = doc("a", 7);
        assert!(hub.store(&a7));
        assert!(o.remove("a"));
        hub.publish_cycle(&[&a7.topic], 7);
        assert_eq!(next(&mut o), None);
    }
}
