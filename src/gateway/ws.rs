//! `GET /ws`: the WebSocket protocol. One task and one `select!` loop per connection; while a
//! connection follows one topic, the publisher writes that topic's changes to its socket
//! itself (see [`Direct`]).
//!
//! The upgrade is done here rather than by axum's extractor, so that the connection is a
//! tungstenite stream whose frames this module writes: a document goes out in fragments of at
//! most [`FRAGMENT`] bytes (see there why), however large it is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::wrappers::WatchStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::AppState;
use super::admission::ClientAddr;
use super::direct::{self, Sink, SinkIo};
use super::front::Replay;
use super::http::ApiError;
use super::hub::{Encoded, Frame};
use super::ordered::Ordered;
use super::wire::permessage::{self, Inbound};
use super::wire::ws::{self as wire, FRAGMENT};
use crate::metrics::{StreamForm, StreamKind};

/// A WebSocket on an upgraded HTTP connection, client messages inflated when permessage-deflate
/// was negotiated: over hyper's upgraded connection, or over the socket shared with the
/// publisher ([`SinkIo`]).
type Socket<IO> = WebSocketStream<Inbound<IO>>;

/// Read buffer per socket. tungstenite's default is 128 KiB; client messages here are short
/// JSON commands (a longer one grows the buffer to its size), and a node holds hundreds of
/// thousands of sockets.
const READ_BUFFER: usize = 512;
/// Write buffer target: 0 writes each frame through at once instead of batching 128 KiB.
const WRITE_BUFFER: usize = 0;
/// Bytes tungstenite may buffer for a client that does not read: one fragment, and the control
/// frames (pongs, a close) that may be queued behind it.
const MAX_WRITE_BUFFER: usize = 2 * FRAGMENT;
/// Largest client message: a subscribe to 64 topics of ~40 characters is under 3 KiB.
const MAX_MESSAGE: usize = 16 << 10;
/// Pings left unanswered before a client is taken for gone: three heartbeats (45 s by
/// default) on an idle connection (see [`BUSY_PING_EVERY`] for a busy one), longer than a
/// starved machine delays a pong, shorter than a load balancer's idle timeout of a minute or
/// more.
const MAX_UNANSWERED_PINGS: u32 = 3;
/// A connection that was sent a document since the last heartbeat is pinged only every this
/// many heartbeats (once a minute by default): the document already kept a proxy from taking
/// it for idle, and a ping on every beat cost each WebSocket delivery a send, a pong to read
/// and a wake more. Measured with 19,000 subscribers (half WebSocket) and a change every 5 s:
/// 12,108 pings and 12,243 pong reads in 20 s against 72,200 deliveries (BENCHMARKS.md, "Pings
/// only where needed"). A silent client behind a busy stream is still closed, after
/// [`MAX_UNANSWERED_PINGS`] of these pings (3 minutes by default).
pub(crate) const BUSY_PING_EVERY: u32 = 4;
/// How long, after closing a connection for a client's mistake, its remaining messages are
/// read (and dropped) while waiting for its Close: a socket closed with unread input is reset,
/// and a reset can destroy the Close frame before the client reads it.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Seconds' worth of `--ws-snapshot-rate` a connection may take at once: the snapshots of a
/// page opening, however many topics it subscribes to. The same for `--ws-message-rate`.
pub const SNAPSHOT_BURST_SECONDS: u64 = 10;
/// Topics a connection unsubscribed from whose last version sent is remembered, so that
/// subscribing again sends nothing unless the topic moved on. Past these, the oldest is
/// forgotten (and costs a snapshot, counted in the budget, if subscribed again).
const REMEMBERED: usize = 64;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Subscribe {
        topics: Vec<String>,
        /// As `Last-Event-ID`: a value that is not a version (negative, fractional, too large,
        /// not a number) is 0, a full snapshot, never an error.
        #[serde(default, deserialize_with = "resume_point")]
        since: u64,
        /// Changes as `patch` messages where the client holds the base.
        #[serde(default)]
        delta: bool,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
}

/// A `since` as the client sent it: a version (a whole number, or one in a string, as
/// `Last-Event-ID` carries it), else 0.
fn resume_point<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .unwrap_or(0))
}

pub async fn upgrade(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    request: Request,
) -> Response {
    if state.disable_streams {
        return ApiError::StreamsDisabled.into_response();
    }
    // Refused before the upgrade, so that the client (or the load balancer) tries again
    // rather than subscribing to topics this gateway has not loaded yet.
    if !state.hub.is_ready() {
        return ApiError::NotReady.into_response();
    }
    let (mut parts, _) = request.into_parts();
    let accept = match accept_key(&parts.method, &parts.headers) {
        Ok(accept) => accept,
        Err(refusal) => {
            state.metrics.client_errors.fetch_add(1, Relaxed);
            return refusal.into_response();
        }
    };
    if let Err(e) = state.admission.admit(&state.metrics, client) {
        return e.into_response();
    }
    let extensions = parts.headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS);
    let deflate = permessage::negotiate(extensions.iter().map(HeaderValue::as_bytes));
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::BadRequest("this connection cannot be upgraded".into()).into_response();
    };
    let compressed = deflate.is_some();
    // The client's bytes, read at most as fast as its messages may come at their largest.
    let read_rate = state.ws_message_rate.saturating_mul(MAX_MESSAGE as u64);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(READ_BUFFER)
                    .write_buffer_size(WRITE_BUFFER)
                    .max_write_buffer_size(MAX_WRITE_BUFFER)
                    .max_message_size(Some(MAX_MESSAGE))
                    .max_frame_size(Some(MAX_MESSAGE));
                // An uncompressed connection gets its socket back from hyper, to share it with
                // the publisher (see [`Direct`]).
                let upgraded = if compressed {
                    upgraded
                } else {
                    match upgraded.downcast::<TokioIo<Replay>>() {
                        Ok(parts) => {
                            let (unread, io, keep) = parts.io.into_inner().into_parts();
                            // Copied (there is seldom anything), so that hyper's and the front
                            // door's read buffers, which these bytes are slices of, are freed
                            // now rather than held for the connection's life.
                            let read = Bytes::from([&parts.read_buf[..], &unread[..]].concat());
                            drop((parts.read_buf, unread));
                            let (socket, timeout, metrics) = io.into_parts();
                            let sink = Sink::websocket(socket, timeout, metrics);
                            let io = SinkIo::new(sink.clone(), read, keep);
                            let io = Inbound::new(io, false, MAX_MESSAGE)
                                .with_read_rate(read_rate, SNAPSHOT_BURST_SECONDS);
                            let socket =
                                WebSocketStream::from_raw_socket(io, Role::Server, Some(config))
                                    .await;
                            connection(socket, state, false, Some(sink)).await;
                            return;
                        }
                        Err(upgraded) => upgraded,
                    }
                };
                let io = Inbound::new(TokioIo::new(upgraded), compressed, MAX_MESSAGE)
                    .with_read_rate(read_rate, SNAPSHOT_BURST_SECONDS);
                let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                connection(socket, state, compressed, None).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(deflate) = deflate {
        resp = resp.header(header::SEC_WEBSOCKET_EXTENSIONS, deflate);
    }
    resp.body(Body::empty()).expect("a valid response")
}

/// Why an opening handshake is refused.
enum Refusal {
    Method,
    Missing(&'static str),
    Version,
    Key,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED.into_response(),
            Refusal::Missing(what) => {
                let message = format!("a WebSocket handshake needs `{what}`");
                ApiError::BadRequest(message).into_response()
            }
            Refusal::Key => ApiError::BadRequest(
                "`Sec-WebSocket-Key` must be 16 bytes in base64 (24 characters)".into(),
            )
            .into_response(),
            Refusal::Version => {
                let mut resp =
                    ApiError::BadRequest("WebSocket version 13 only".into()).into_response();
                *resp.status_mut() = StatusCode::UPGRADE_REQUIRED;
                resp.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                resp
            }
        }
    }
}

/// Check an opening handshake (RFC 6455 §4.2.1) and compute its `Sec-WebSocket-Accept`.
fn accept_key(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
    if method != Method::GET {
        return Err(Refusal::Method);
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Err(Refusal::Missing("Connection: upgrade"));
    }
    let is = |name, value: &str| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
    };
    if !is(header::UPGRADE, "websocket") {
        return Err(Refusal::Missing("Upgrade: websocket"));
    }
    if !is(header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(Refusal::Version);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Refusal::Missing("Sec-WebSocket-Key"));
    };
    if !is_key(key.as_bytes()) {
        return Err(Refusal::Key);
    }
    Ok(HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("base64 is a header"))
}

/// Whether `key` is what RFC 6455 §4.1 asks a client to send: 16 bytes in base64, which is
/// 22 characters of the base64 alphabet and `==`. A proxy or client that sends anything else
/// is not speaking WebSocket.
fn is_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Close after a client's mistake: send the Close frame, then read (and drop) what the client
/// still sends until its Close comes back or [`CLOSE_LINGER`] passes.
async fn close_after_error<IO: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Socket<IO>,
    code: CloseCode,
    reason: &'static str,
) {
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    if socket.send(close).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = socket.next().await {} };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

/// Close with 1008 (policy violation) for a budget spent: counted in `closes`, and logged at
/// the 1st, 2nd, 4th, 8th… close (visible, and no flood of lines under an attack).
async fn close_for_policy<IO: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut Socket<IO>,
    closes: &AtomicU64,
    rate: u64,
    log: &'static str,
    reason: &'static str,
) {
    let n = closes.fetch_add(1, Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(closes = n, rate, "{log}");
    }
    close_after_error(socket, CloseCode::Policy, reason).await;
}

/// The snapshot bytes a connection may still pull: a token bucket of `--ws-snapshot-rate`
/// bytes a second holding [`SNAPSHOT_BURST_SECONDS`] of them. A snapshot is sent while the
/// bucket is not empty, and may take it below zero: one document of any size always fits, and
/// a connection pulls at most the burst, plus the rate over its life, plus one document. The
/// messages a connection may still send are counted the same way, one token each
/// (`--ws-message-rate`).
struct Budget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Budget {
    fn new(rate: u64) -> Self {
        let rate = rate as f64;
        let burst = rate * SNAPSHOT_BURST_SECONDS as f64;
        Budget {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Take `bytes` from the bucket; `false` if it was already empty.
    fn spend(&mut self, bytes: usize) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens <= 0.0 {
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

/// The last version of each topic sent on this connection, kept for [`REMEMBERED`] topics
/// after they are unsubscribed: a client holds what it was sent, and subscribing again sends
/// nothing unless the topic moved on.
#[derive(Default)]
struct Held {
    versions: HashMap<Arc<str>, u64>,
    /// Subscribed topics whose changes go as patches.
    delta: HashSet<Arc<str>>,
    /// Unsubscribed topics with a version in `versions`, oldest first.
    released: VecDeque<Arc<str>>,
}

impl Held {
    fn version(&self, topic: &str) -> u64 {
        self.versions.get(topic).copied().unwrap_or(0)
    }

    fn sent(&mut self, enc: &Encoded) {
        self.sent_version(&enc.topic, enc.version);
    }

    fn sent_version(&mut self, topic: &Arc<str>, version: u64) {
        match self.versions.get_mut(&**topic) {
            Some(v) => *v = (*v).max(version),
            None => {
                self.versions.insert(topic.clone(), version);
            }
        }
    }

    fn subscribed(&mut self, topic: &str) {
        if let Some(i) = self.released.iter().position(|t| &**t == topic) {
            self.released.remove(i);
        }
    }

    fn unsubscribed(&mut self, topic: &str) {
        self.delta.remove(topic);
        let Some((topic, _)) = self.versions.get_key_value(topic) else {
            return;
        };
        self.released.push_back(topic.clone());
        if self.released.len() > REMEMBERED
            && let Some(oldest) = self.released.pop_front()
        {
            self.versions.remove(&oldest);
        }
    }
}

/// The publisher's path for a WebSocket (see [`super::direct`]): a connection whose first
/// subscription is one topic, without patches or compression, has that topic's changes written
/// by the publisher straight to its socket, as SSE streams of one topic have; its task only
/// reads the client, pings, and sends what the publisher could not write. Any later subscribe
/// or unsubscribe moves the topic to the task's [`Ordered`] path for the rest of the
/// connection's life, from the version last written.
///
/// Measured with 19,000 subscribers (half SSE, half WebSocket) and a change every 5 s: see
/// BENCHMARKS.md, "WebSockets written by the publisher".
struct Direct {
    /// The socket shared with the publisher; `None` on a compressed connection.
    sink: Option<Arc<Sink>>,
    /// The topic the publisher writes, and its channel.
    following: Option<(Arc<str>, direct::Stream)>,
    /// A topic was followed this way once: later subscriptions take the task's path.
    used: bool,
}

impl Direct {
    /// Shut the publisher out (the connection is closing).
    fn quiet(&self) {
        if let Some(sink) = &self.sink {
            sink.detach();
        }
    }

    /// Move the followed topic to `subs`, from the version last written.
    fn leave(&mut self, subs: &mut Ordered, held: &mut Held) {
        let Some((topic, stream)) = self.following.take() else {
            return;
        };
        let (last, snapshot_due) = stream.sink.detach();
        let mut rx = stream.topic;
        let current = rx.borrow_and_update().clone();
        let first = if snapshot_due {
            Some(Frame::Snapshot)
        } else {
            held.sent_version(&topic, last);
            (current.version > last).then_some(Frame::Update)
        };
        subs.insert(topic, rx, current, first);
    }

    /// Wait until the publisher leaves something to the task.
    async fn woken(&self) {
        match &self.following {
            Some((_, stream)) => stream.sink.woken().await,
            None => std::future::pending().await,
        }
    }
}

/// What the loop sends after a `select!`.
enum Outgoing {
    /// A document's frame, and its publication time if it is a live change (not a snapshot).
    Document(Bytes, Option<i64>),
    Control(Message),
    /// A heartbeat's ping, unless the client answered none of the last ones.
    Ping,
}

/// Serve one WebSocket; with `compressed`, documents go out compressed (permessage-deflate);
/// with `sink`, the publisher may write to it (see [`Direct`]).
async fn connection<IO: AsyncRead + AsyncWrite + Unpin>(
    mut socket: Socket<IO>,
    state: AppState,
    compressed: bool,
    sink: Option<Arc<Sink>>,
) {
    let metrics = state.metrics.clone();
    metrics.ws_connections.fetch_add(1, Relaxed);
    metrics.ws_connections_opened.fetch_add(1, Relaxed);
    let mut subs = Ordered::new(state.hub.complete());
    let mut held = Held::default();
    let mut direct = Direct {
        sink,
        following: None,
        used: false,
    };
    let mut budget = Budget::new(state.ws_snapshot_rate);
    let mut messages = Budget::new(state.ws_message_rate);
    // A stream, not `changed()` in the loop: that future would be made, registered and
    // dropped again at every message.
    let mut heartbeat = WatchStream::from_changes(state.heartbeat.join(direct.sink.as_ref()));
    let mut unanswered_pings = 0u32;
    let mut beating = true;
    // Whether a document went out since the last heartbeat, and heartbeats since the last ping.
    let mut wrote_since_beat = false;
    let mut beats_since_ping = 0u32;
    let closing = state.closing();
    tokio::pin!(closing);
    loop {
        let outgoing = tokio::select! {
            _ = &mut closing => {
                direct.quiet();
                let _ = socket.send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Restart,
                    reason: Utf8Bytes::from_static("server shutting down; reconnect"),
                }))).await;
                break;
            }
            Some((enc, frame)) = subs.next(), if !subs.is_empty() => {
                let patch = frame == Frame::Update
                    && held.delta.contains(&*enc.topic)
                    && enc.patches(held.version(&enc.topic));
                let frame = if patch { Frame::Patch } else { frame };
                let text = Bytes::from(enc.ws(frame).clone());
                if frame == Frame::Snapshot && !budget.spend(text.len()) {
                    Box::pin(close_for_policy(
                        &mut socket,
                        &metrics.ws_budget_closes,
                        state.ws_snapshot_rate,
                        "WebSocket closed with 1008: snapshot budget spent (--ws-snapshot-rate)",
                        "snapshot budget exceeded; subscribe less often",
                    ))
                    .await;
                    break;
                }
                held.sent(&enc);
                let live = (frame != Frame::Snapshot).then_some(enc.published_at);
                let (payload, form) = if compressed {
                    (enc.ws_deflate(frame).clone(), StreamForm::Deflate)
                } else {
                    (text, StreamForm::Identity)
                };
                let form = if patch { StreamForm::Patch } else { form };
                metrics.wrote(form, payload.len());
                Some(Outgoing::Document(payload, live))
            }
            // While the publisher writes the connection, the heartbeat's sweep counts its
            // beats and wakes it for a ping (see `Sink::beat`).
            beat = heartbeat.next(), if beating && direct.following.is_none() => {
                if beat.is_none() {
                    // The timer stops at shutdown; the drain closes this connection.
                    beating = false;
                    continue;
                }
                beats_since_ping += 1;
                if std::mem::take(&mut wrote_since_beat) && beats_since_ping < BUSY_PING_EVERY {
                    continue;
                }
                beats_since_ping = 0;
                Some(Outgoing::Ping)
            }
            msg = socket.next() => match msg {
                // Every message of the client goes through the budget, pongs too (one answers
                // each ping, a few a minute; unasked, they are a flood like any other): a flood
                // of subscribes or pings costs the gateway a core otherwise.
                Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_)))
                    if !messages.spend(1) =>
                {
                    direct.quiet();
                    Box::pin(close_for_policy(
                        &mut socket,
                        &metrics.ws_message_rate_closes,
                        state.ws_message_rate,
                        "WebSocket closed with 1008: too many messages (--ws-message-rate)",
                        "too many messages; send fewer",
                    ))
                    .await;
                    break;
                }
                Some(Ok(Message::Text(text))) => {
                    // A failed write (the client stopped reading: write timeout) ends it.
                    let mut conn = Conn { subs: &mut subs, held: &mut held, direct: &mut direct, budget: &mut budget };
                    // Boxed, as the rarer awaits below: held inline, their state would make every
                    // connection's task larger for its whole life.
                    if Box::pin(handle(&state, &text, &mut conn, &mut socket)).await.is_err() {
                        break;
                    }
                    None
                }
                Some(Ok(Message::Binary(_))) => {
                    metrics.client_errors.fetch_add(1, Relaxed);
                    Some(Outgoing::Control(wire::error("bad_request", "send JSON text messages", None)))
                }
                Some(Ok(Message::Pong(_))) => { unanswered_pings = 0; None }
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => None,
                Some(Ok(Message::Close(_))) => {
                    direct.quiet();
                    // tungstenite has queued the answer, the client's code echoed (RFC 6455
                    // §5.5.1): send it, then end the connection.
                    let _ = socket.flush().await;
                    break;
                }
                Some(Err(e)) => {
                    // Malformed frames end here: tungstenite refuses them, and the client is
                    // told why (RFC 6455 §7.4.1) before the socket closes.
                    let (code, reason) = match &e {
                        tungstenite::Error::Utf8(_) => (CloseCode::Invalid, "text is not UTF-8"),
                        tungstenite::Error::Capacity(_) => (CloseCode::Size, "message too big"),
                        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => break,
                        tungstenite::Error::Protocol(_) => (CloseCode::Protocol, "protocol error"),
                        // The connection failed: there is no one to tell.
                        _ => {
                            tracing::debug!(error = %e, "websocket read error");
                            break;
                        }
                    };
                    metrics.client_errors.fetch_add(1, Relaxed);
                    tracing::debug!(error = %e, "websocket client error");
                    direct.quiet();
                    Box::pin(close_after_error(&mut socket, code, reason)).await;
                    break;
                }
                None => break,
            },
            _ = direct.woken() => match &direct.following {
                Some((_, stream)) => {
                    if let Err(e) = Box::pin(stream.flush()).await {
                        tracing::debug!(error = %e, "websocket write failed");
                        break;
                    }
                    stream.sink.take_ping_due().then_some(Outgoing::Ping)
                }
                None => None,
            },
        };
        let sent = match outgoing {
            Some(Outgoing::Document(payload, live)) => {
                let sent = wire::send_message(&mut socket, payload, compressed).await;
                if sent.is_ok() {
                    wrote_since_beat = true;
                    metrics.delivered(StreamKind::Ws, live);
                }
                sent
            }
            Some(Outgoing::Control(msg)) => socket.send(msg).await,
            Some(Outgoing::Ping) => {
                // A client that answered none of the last pings is gone. One missed pong is
                // not enough: a starved client or host can be a whole interval late.
                if unanswered_pings >= MAX_UNANSWERED_PINGS {
                    direct.quiet();
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Away,
                            reason: Utf8Bytes::from_static("ping timeout"),
                        })))
                        .await;
                    break;
                }
                unanswered_pings += 1;
                socket.send(Message::Ping(Bytes::new())).await
            }
            None => Ok(()),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "websocket write failed");
            break;
        }
    }
    direct.quiet();
    let followed = i64::from(direct.following.is_some());
    metrics
        .subscriptions
        .fetch_sub(subs.len() as i64 + followed, Relaxed);
    metrics.ws_connections.fetch_sub(1, Relaxed);
}

/// What a client message may change of its connection.
struct Conn<'a> {
    subs: &'a mut Ordered,
    held: &'a mut Held,
    direct: &'a mut Direct,
    budget: &'a mut Budget,
}

/// Answer one client message. `Err`: the socket failed, the connection is over.
async fn handle<IO: AsyncRead + AsyncWrite + Unpin>(
    state: &AppState,
    text: &str,
    conn: &mut Conn<'_>,
    socket: &mut Socket<IO>,
) -> Result<(), tungstenite::Error> {
    let metrics = &state.metrics;
    let Conn {
        subs,
        held,
        direct,
        budget,
    } = conn;
    let msg: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            metrics.client_errors.fetch_add(1, Relaxed);
            let detail = format!("malformed message: {e}");
            return socket.send(wire::error("bad_request", &detail, None)).await;
        }
    };
    match msg {
        ClientMessage::Subscribe {
            topics,
            since,
            delta,
        } => {
            if topics.is_empty() {
                metrics.client_errors.fetch_add(1, Relaxed);
                let err = ApiError::BadRequest("subscribe names no topic".into());
                return socket
                    .send(wire::error(err.code(), &err.to_string(), None))
                    .await;
            }
            // More topics than a connection may follow: refused whole, with one error. Taken
            // topic by topic, a message of 4,000 unknown names (16 KiB) cost 4,000 errors, each
            // written on its own, 20 times a second within the message rate: 65 MB out for
            // 3 MB in, a quarter of a core, per connection.
            if topics.len() > state.max_topics {
                metrics.client_errors.fetch_add(1, Relaxed);
                let err = ApiError::TooManyTopics {
                    got: topics.len(),
                    max: state.max_topics,
                };
                return socket
                    .send(wire::error(err.code(), &err.to_string(), None))
                    .await;
            }
            direct.leave(subs, held);
            // The connection's first subscription, to one topic: the publisher's path.
            let enter = direct.sink.is_some()
                && !direct.used
                && subs.is_empty()
                && held.versions.is_empty()
                && topics.len() == 1
                && !delta;
            let mut named = HashSet::with_capacity(topics.len());
            for topic in topics {
                // A topic named twice in one message is taken once.
                if !named.insert(topic.clone()) {
                    continue;
                }
                if subs.contains(topic.as_str()) {
                    if delta {
                        held.delta.insert(Arc::from(topic.as_str()));
                    } else {
                        held.delta.remove(topic.as_str());
                    }
                    continue;
                }
                if subs.len() >= state.max_topics {
                    metrics.client_errors.fetch_add(1, Relaxed);
                    let err = ApiError::TooManyTopics {
                        got: subs.len() + 1,
                        max: state.max_topics,
                    };
                    socket
                        .feed(wire::error(err.code(), &err.to_string(), Some(&topic)))
                        .await?;
                    continue;
                }
                let Some(mut rx) = state.hub.subscribe(&topic) else {
                    metrics.client_errors.fetch_add(1, Relaxed);
                    let shown: String =
                        topic.chars().filter(|c| !c.is_control()).take(80).collect();
                    let err = ApiError::UnknownTopic(shown.clone());
                    socket
                        .feed(wire::error(err.code(), &err.to_string(), Some(&shown)))
                        .await?;
                    continue;
                };
                let current = rx.borrow_and_update().clone();
                // Nothing the client holds already, by its word or because it was sent here.
                let known = since.max(held.version(&topic));
                let snapshot = current.version > known;
                held.subscribed(&topic);
                if delta {
                    held.delta.insert(Arc::from(topic.as_str()));
                }
                metrics.subscriptions.fetch_add(1, Relaxed);
                let topic = Arc::from(topic.as_str());
                if let (true, Some(sink)) = (enter, &direct.sink) {
                    direct.used = true;
                    if snapshot {
                        // The bucket is full: the first snapshot always goes.
                        budget.spend(current.ws(Frame::Snapshot).len());
                    }
                    let last = if snapshot { known } else { current.version };
                    sink.follow(last, snapshot);
                    state.hub.attach(&topic, sink);
                    let stream = direct::Stream {
                        sink: sink.clone(),
                        topic: rx,
                        complete: state.hub.complete(),
                    };
                    // The snapshot, and any change since `current`.
                    stream.flush().await.map_err(tungstenite::Error::Io)?;
                    direct.following = Some((topic, stream));
                } else {
                    subs.insert(topic, rx, current, snapshot.then_some(Frame::Snapshot));
                }
            }
            // The errors fed above, in one write.
            socket.flush().await?;
        }
        ClientMessage::Unsubscribe { topics } => {
            direct.leave(subs, held);
            for topic in topics {
                if subs.remove(topic.as_str()) {
                    held.unsubscribed(&topic);
                    metrics.subscriptions.fetch_sub(1, Relaxed);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn socket() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    /// The hand-over from the publisher to the task: from the version the publisher wrote,
    /// nothing twice and nothing left out; a snapshot not sent yet is still sent.
    #[tokio::test]
    async fn a_topic_handed_to_the_task_goes_on_from_the_version_written() {
        use crate::bus::Document;
        use crate::documents::Draft;
        use crate::gateway::hub::Hub;
        use futures_util::FutureExt;

        let doc = |version| {
            let draft = Draft {
                topic: "a".into(),
                body: Bytes::from_static(br#"{"topic":"a"}"#),
            };
            Document::stamp(&draft, version, 0)
        };
        let hub = Hub::new(Arc::default());
        hub.apply_cycle(&[doc(1)], 1);
        let mut rx = hub.subscribe("a").unwrap();
        rx.borrow_and_update();
        hub.apply_cycle(&[doc(2)], 2);
        // (written by the publisher, snapshot still due) → what the task sends
        for (written, due, expected) in [
            (1, false, Some((2, Frame::Update))),
            (2, false, None),
            (0, true, Some((2, Frame::Snapshot))),
        ] {
            let (server, _client) = socket().await;
            let sink = Sink::websocket(server, Duration::from_secs(1), Arc::default());
            sink.follow(written, due);
            let stream = direct::Stream {
                sink: sink.clone(),
                topic: rx.clone(),
                complete: hub.complete(),
            };
            let mut direct = Direct {
                sink: Some(sink),
                following: Some((Arc::from("a"), stream)),
                used: true,
            };
            let (mut subs, mut held) = (Ordered::new(hub.complete()), Held::default());
            direct.leave(&mut subs, &mut held);
            assert!(direct.following.is_none() && subs.contains("a"));
            let next = subs.next().now_or_never().flatten();
            assert_eq!(
                next.map(|(e, f)| (e.version, f)),
                expected,
                "after {written}"
            );
            assert_eq!(
                subs.next().now_or_never().flatten().map(|(e, _)| e.version),
                None
            );
            assert_eq!(held.version("a"), if due { 0 } else { written });
        }
    }

    #[test]
    fn the_budget_lets_one_document_through_then_closes_until_refilled() {
        let mut b = Budget::new(1_000);
        assert!(b.spend(9_000));
        assert!(b.spend(5_000), "not empty yet: one more, whatever its size");
        assert!(!b.spend(1));
        assert!(b.tokens < 0.0);
    }
}
