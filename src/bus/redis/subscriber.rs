//! The subscription to the cycles channel: its own connection, pinged, reconnected with backoff,
//! and a resync for the subscriber after every reconnect or when it falls behind.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::PubSub;
use tokio::sync::mpsc;

use super::codec::{Message, decode};
use super::{
    BACKOFF_CAP, BACKOFF_START, COMMAND_TIMEOUT, CONNECT_TIMEOUT, Shared, read_documents,
    with_retry,
};
use crate::bus::{BusEvent, Cycle};

/// How often the subscription connection is pinged. A closed connection is noticed at once; a
/// silently dead one (a cut network, no FIN or RST) within this interval plus [`PING_TIMEOUT`].
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may take before the subscription connection is considered dead.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection subscribed to the cycles channel.
pub(super) async fn open_subscription(shared: &Shared) -> anyhow::Result<PubSub> {
    let channel = shared.keys.cycles();
    let subscribe = async {
        let client = shared.commands.primary().await?;
        let mut pubsub = shared.commands.check(client.get_async_pubsub().await)?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    Ok(
        tokio::time::timeout(CONNECT_TIMEOUT + COMMAND_TIMEOUT, subscribe)
            .await
            .context("timed out")??,
    )
}

/// Why the subscription connection stopped.
enum Stopped {
    /// The subscriber is gone: nothing more to do.
    Unsubscribed,
    /// The connection was lost.
    Lost(String),
}

/// The subscription task: relay messages to `tx` as events; on a lost connection reconnect with
/// backoff, then tell the subscriber to resync. Ends when the subscriber drops its stream.
pub(super) async fn follow_channel(
    shared: Arc<Shared>,
    mut pubsub: PubSub,
    tx: mpsc::Sender<BusEvent>,
) {
    loop {
        let reason = match relay(&shared, pubsub, &tx).await {
            Stopped::Unsubscribed => return,
            Stopped::Lost(reason) => reason,
        };
        tracing::warn!(%reason, "bus subscription lost; reconnecting");
        let mut delay = BACKOFF_START;
        pubsub = loop {
            // Equal jitter: between half the delay and the delay, so gateways that lost the
            // same Redis do not all come back in the same millisecond.
            let ms = delay.as_millis() as u64;
            let pause = Duration::from_millis(rand::random_range(ms / 2..=ms));
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            match open_subscription(&shared).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::debug!(error = format!("{e:#}"), "bus reconnect failed");
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
            }
        };
        shared.metrics.bus_reconnects.fetch_add(1, Relaxed);
        tracing::info!("bus subscription restored; resyncing");
        // Cycles published while we were away are in the snapshot keys.
        if tx.send(BusEvent::Resync).await.is_err() {
            return;
        }
    }
}

/// Relay messages until the connection is lost or the subscriber is gone.
async fn relay(shared: &Shared, pubsub: PubSub, tx: &mpsc::Sender<BusEvent>) -> Stopped {
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    // Set when an event could not be queued: events are dropped until there is room for a
    // resync, which covers them all (their documents are in the snapshot keys).
    let mut lagged = false;
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => return Stopped::Unsubscribed,
            permit = tx.reserve(), if lagged => match permit {
                Ok(permit) => {
                    permit.send(BusEvent::Resync);
                    lagged = false;
                    continue;
                }
                Err(_) => return Stopped::Unsubscribed,
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return Stopped::Lost(format!("ping failed: {e}")),
                    Err(_) => return Stopped::Lost("ping timed out".into()),
                }
            }
            msg = messages.next() => match msg {
                Some(msg) => msg,
                None => return Stopped::Lost("connection closed".into()),
            },
        };
        let event = match decode(Bytes::copy_from_slice(msg.get_payload_bytes())) {
            Ok(Message::Cycle(cycle)) => BusEvent::Cycle(Arc::new(cycle)),
            Ok(Message::Changed {
                version,
                published_at,
                topics,
            }) => match with_retry(|| read_documents(shared, &topics)).await {
                Ok(documents) => BusEvent::Cycle(Arc::new(Cycle {
                    version,
                    published_at,
                    documents,
                })),
                Err(e) => {
                    tracing::warn!(
                        version,
                        error = %e,
                        "could not read a cycle's documents; resyncing"
                    );
                    BusEvent::Resync
                }
            },
            Ok(Message::Resync) => BusEvent::Resync,
            Err(reason) => {
                shared.metrics.bus_decode_errors.fetch_add(1, Relaxed);
                tracing::warn!(%reason, bytes = msg.get_payload_bytes().len(), "undecodable bus message skipped; resyncing");
                BusEvent::Resync
            }
        };
        if lagged {
            // Dropped: its documents are already in the keys the coming resync reads.
            continue;
        }
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => lagged = true,
            Err(mpsc::error::TrySendError::Closed(_)) => return Stopped::Unsubscribed,
        }
    }
}
