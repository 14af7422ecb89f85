//! WebSocket subscribers: handshake on a socket bound to the chosen source address, send the
//! subscribe message, time every document that arrives.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use memchr::memmem;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::delivery::{Event, Failure, scan_published_at, scan_source_time, scan_version};
use crate::freshness::Held;
use crate::shared::{Shared, Subscriber};
use crate::stats::{Stream, now_us};

/// Read buffer per socket: tungstenite's default is 128 KiB, which for 19,000 sockets per worker
/// would be 2.4 GiB; a mayor update (~2 KB) fits in 4 KiB.
const READ_BUFFER: usize = 4 << 10;
/// Largest message accepted: a São Paulo councillor document is ~300 KB.
const MAX_MESSAGE: usize = 4 << 20;

pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// What a text message is: apura says `"type":"snapshot"|"update"|"error"` near the start;
/// nchan sends the bare document (no type: classified by its age).
pub fn classify(text: &[u8]) -> Option<Event> {
    let head = &text[..text.len().min(48)];
    if memmem::find(head, b"\"type\":\"error\"").is_some() {
        return None;
    }
    Some(Event::Doc {
        snapshot: memmem::find(head, b"\"type\":\"snapshot\"").is_some(),
        published_at: scan_published_at(text),
        version: scan_version(text),
        source_time: scan_source_time(text),
    })
}

/// One WebSocket subscriber: connect, subscribe to `topic`, read until stopped.
pub async fn subscriber(shared: Arc<Shared>, sub: Subscriber) {
    let topic = &shared.topics[sub.topic];
    let url = format!(
        "ws://{}{}",
        shared.target,
        shared.ws_path.replace("{topic}", topic)
    );
    let handshake = async {
        let started = now_us();
        let s = crate::net::connect_from(sub.source, shared.target)
            .await
            .map_err(|_| Failure::Connect)?;
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url.as_str(), s, Some(config()))
                .await
                .map_err(|_| Failure::Handshake)?;
        if let Some(msg) = &shared.ws_subscribe {
            ws.send(Message::text(msg.replace("{topic}", topic)))
                .await
                .map_err(|_| Failure::Handshake)?;
        }
        Ok((ws, started))
    };
    let Some((mut ws, started)) = shared.handshake(handshake).await else {
        return;
    };
    let connected_us = shared.established(started, sub.topic);
    let mut held = Held::new(shared.classes[sub.topic], sub.topic);
    let mut stop = shared.stop.clone();
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = ws.next() => m,
        };
        let now = now_us();
        match msg {
            Some(Ok(Message::Text(t))) => {
                shared.bytes(t.len());
                match classify(t.as_bytes()) {
                    Some(ev) => shared.event(Stream::Ws, ev, connected_us, now, &mut held),
                    None => shared.error(|c| c.server_errors += 1),
                }
            }
            Some(Ok(Message::Binary(b))) => {
                shared.bytes(b.len());
                let ev = Event::Doc {
                    snapshot: false,
                    published_at: scan_published_at(&b),
                    version: scan_version(&b),
                    source_time: scan_source_time(&b),
                };
                shared.event(Stream::Ws, ev, connected_us, now, &mut held);
            }
            // tungstenite queues the pong itself and flushes it on the next read.
            Some(Ok(Message::Ping(_))) => {
                shared.event(Stream::Ws, Event::Heartbeat, connected_us, now, &mut held)
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                shared.closed_by_server(Stream::Ws, &stop);
                break;
            }
            Some(Err(_)) => {
                shared.broken(Stream::Ws, &stop);
                break;
            }
        }
    }
    shared.closed();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apura_and_nchan_messages() {
        let snap = br#"{"type":"snapshot","topic":"t","version":3,"document":{"version":3,"published_at":7}}"#;
        assert_eq!(
            classify(snap),
            Some(Event::Doc {
                snapshot: true,
                published_at: Some(7),
                version: Some(3),
                source_time: None
            })
        );
        let bare = br#"{"version":3,"published_at":9,"topic":"t"}"#;
        assert_eq!(
            classify(bare),
            Some(Event::Doc {
                snapshot: false,
                published_at: Some(9),
                version: Some(3),
                source_time: None
            })
        );
        assert_eq!(
            classify(br#"{"type":"error","code":"unknown_topic"}"#),
            None
        );
    }
}
