//! `GET /ws`: the WebSocket protocol. One task and one `select!` loop per connection.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::admission::ClientAddr;
use super::http::ApiError;
use super::ordered::Ordered;

/// Read buffer per socket. tungstenite's default is 128 KiB; client messages here are short
/// JSON commands (a longer one grows the buffer to its size), and a node holds hundreds of
/// thousands of sockets.
const READ_BUFFER: usize = 512;
/// Write buffer target: 0 writes each message through at once instead of batching 128 KiB.
const WRITE_BUFFER: usize = 0;
/// Bytes queued for a client that does not read before sends fail: a couple of São Paulo
/// councillor documents (~300 KB each).
const MAX_WRITE_BUFFER: usize = 1 << 20;
/// Largest client message: a subscribe to 64 topics of ~40 characters is under 3 KiB.
const MAX_MESSAGE: usize = 16 << 10;
/// WebSocket close code "service restart", sent when the server shuts down: the client should
/// reconnect (to another gateway behind the same address).
const CLOSE_SERVICE_RESTART: u16 = 1012;
/// WebSocket close code "going away", sent to a client that stopped answering pings.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Pings left unanswered before a client is taken for gone: three heartbeats (45 s by
/// default), longer than a starved machine delays a pong, shorter than a load balancer's idle
/// timeout of a minute or more.
const MAX_UNANSWERED_PINGS: u32 = 3;
/// WebSocket close code "message too big" (RFC 6455 §7.4.1), for a message over `MAX_MESSAGE`.
const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code "protocol error", for any other frame tungstenite refuses.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Subscribe {
        topics: Vec<String>,
        #[serde(default)]
        since: Option<u64>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
}

pub async fn upgrade(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if state.disable_streams {
        return ApiError::StreamsDisabled.into_response();
    }
    // Refused before the upgrade, so that the client (or the load balancer) tries again
    // rather than subscribing to topics this gateway has not loaded yet.
    if !state.hub.is_ready() {
        return ApiError::NotReady.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err(e) = state.admission.admit(&state.metrics, client) {
        return e.into_response();
    }
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| connection(socket, state))
}

fn error_message(code: &str, message: &str, topic: Option<&str>) -> Message {
    let v = serde_json::json!({"type": "error", "code": code, "message": message, "topic": topic});
    Message::Text(Utf8Bytes::from(v.to_string()))
}

async fn connection(mut socket: WebSocket, state: AppState) {
    let metrics = state.metrics.clone();
    metrics.ws_connections.fetch_add(1, Relaxed);
    metrics.ws_connections_total.fetch_add(1, Relaxed);
    let mut subs = Ordered::new(state.hub.complete());
    let mut heartbeat = state.heartbeat.clone();
    heartbeat.borrow_and_update();
    let mut unanswered_pings = 0u32;
    let mut beating = true;
    let closing = state.closing();
    tokio::pin!(closing);
    loop {
        let outgoing: Option<Message> = tokio::select! {
            _ = &mut closing => {
                let _ = socket.send(Message::Close(Some(CloseFrame {
                    code: CLOSE_SERVICE_RESTART,
                    reason: Utf8Bytes::from_static("server shutting down; reconnect"),
                }))).await;
                break;
            }
            Some((enc, frame)) = subs.next(), if !subs.is_empty() => {
                metrics.deliveries.fetch_add(1, Relaxed);
                let text = enc.ws(frame).clone();
                metrics.bytes_sent.fetch_add(text.len() as u64, Relaxed);
                Some(Message::Text(text))
            }
            changed = heartbeat.changed(), if beating => {
                if changed.is_err() {
                    // The timer stops at shutdown; the drain closes this connection.
                    beating = false;
                    continue;
                }
                // A client that answered none of the last pings is gone. One missed pong is
                // not enough: a starved client or host can be a whole interval late.
                if unanswered_pings >= MAX_UNANSWERED_PINGS {
                    let _ = socket.send(Message::Close(Some(CloseFrame {
                        code: CLOSE_GOING_AWAY,
                        reason: Utf8Bytes::from_static("ping timeout"),
                    }))).await;
                    break;
                }
                unanswered_pings += 1;
                Some(Message::Ping(bytes::Bytes::new()))
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    // A failed write (the client stopped reading: write timeout) ends it.
                    if handle(&state, &text, &mut subs, &mut socket).await.is_err() {
                        break;
                    }
                    None
                }
                Some(Ok(Message::Binary(_))) => {
                    metrics.client_errors.fetch_add(1, Relaxed);
                    Some(error_message("bad_request", "send JSON text messages", None))
                }
                Some(Ok(Message::Pong(_))) => { unanswered_pings = 0; None }
                Some(Ok(Message::Ping(_))) => None, // tungstenite answers pings itself
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    // Oversized or malformed frames end here: tungstenite refuses them, and
                    // the client is told why before the socket closes.
                    metrics.client_errors.fetch_add(1, Relaxed);
                    tracing::debug!(error = %e, "websocket read error");
                    // axum hides tungstenite's error type; its message names the capacity error.
                    let too_big = e.to_string().contains("too long");
                    let (code, reason) = if too_big {
                        (CLOSE_TOO_BIG, "message too big")
                    } else {
                        (CLOSE_PROTOCOL_ERROR, "protocol error")
                    };
                    let _ = socket.send(Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    }))).await;
                    break;
                }
            },
        };
        if let Some(msg) = outgoing
            && socket.send(msg).await.is_err()
        {
            break;
        }
    }
    metrics.subscriptions.fetch_sub(subs.len() as i64, Relaxed);
    metrics.ws_connections.fetch_sub(1, Relaxed);
}

type Subscriptions = Ordered;

/// Answer one client message. `Err`: the socket failed, the connection is over.
async fn handle(
    state: &AppState,
    text: &str,
    subs: &mut Subscriptions,
    socket: &mut WebSocket,
) -> Result<(), axum::Error> {
    let metrics = &state.metrics;
    let msg: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            metrics.client_errors.fetch_add(1, Relaxed);
            let detail = format!("malformed message: {e}");
            return socket
                .send(error_message("bad_request", &detail, None))
                .await;
        }
    };
    match msg {
        ClientMessage::Subscribe { topics, since } => {
            let since = since.unwrap_or(0);
            for topic in topics {
                if subs.contains(topic.as_str()) {
                    continue;
                }
                if subs.len() >= state.max_topics {
                    metrics.client_errors.fetch_add(1, Relaxed);
                    let err = ApiError::TooManyTopics {
                        got: subs.len() + 1,
                        max: state.max_topics,
                    };
                    socket
                        .send(error_message(err.code(), &err.to_string(), Some(&topic)))
                        .await?;
                    continue;
                }
                let Some(mut rx) = state.hub.subscribe(&topic) else {
                    metrics.client_errors.fetch_add(1, Relaxed);
                    let shown: String =
                        topic.chars().filter(|c| !c.is_control()).take(80).collect();
                    let err = ApiError::UnknownTopic(shown.clone());
                    socket
                        .send(error_message(err.code(), &err.to_string(), Some(&shown)))
                        .await?;
                    continue;
                };
                let current = rx.borrow_and_update().clone();
                let snapshot = current.version > since;
                metrics.subscriptions.fetch_add(1, Relaxed);
                subs.insert(Arc::from(topic.as_str()), rx, current, snapshot);
            }
        }
        ClientMessage::Unsubscribe { topics } => {
            for topic in topics {
                if subs.remove(topic.as_str()) {
                    metrics.subscriptions.fetch_sub(1, Relaxed);
                }
            }
        }
    }
    Ok(())
}
