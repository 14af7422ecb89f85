//! `GET /events?topics=a,b`: Server-Sent Events, many topics on one stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use super::AppState;
use super::admission::ClientAddr;
use super::http::ApiError;
use super::hub::{Encoded, Frame};
use super::ordered::Ordered;
use super::wire::sse::{self as wire, Piece};
use crate::metrics::{Metrics, StreamForm, StreamKind};

#[derive(Deserialize)]
pub struct EventsQuery {
    pub topics: Option<String>,
    /// Resume point for a first connect, where the browser cannot set `Last-Event-ID`.
    #[serde(rename = "lastEventId")]
    pub last_event_id: Option<String>,
    /// `1` (or `true`): changes as `patch` events where the client holds the base.
    pub delta: Option<String>,
}

impl EventsQuery {
    pub fn delta(&self) -> bool {
        matches!(self.delta.as_deref(), Some("1" | "true"))
    }
}

pub use super::wire::sse::HEADERS;

/// How a stream is sent.
#[derive(Debug, Clone, Copy)]
pub struct Form {
    /// gzip-compressed (the request's `Accept-Encoding` allows it).
    pub gzip: bool,
    /// Changes as patches (`&delta=1`).
    pub delta: bool,
}

/// A topic name and its channel.
pub type TopicReceiver = (Arc<str>, watch::Receiver<Arc<Encoded>>);

/// Parse a comma-separated topic list: deduplicated, at most `max`, every one known to the hub.
pub fn parse_topics<'a>(
    state: &AppState,
    raw: impl Iterator<Item = &'a str>,
) -> Result<Vec<TopicReceiver>, ApiError> {
    let mut names: Vec<&str> = Vec::new();
    for t in raw.map(str::trim).filter(|t| !t.is_empty()) {
        if !names.contains(&t) {
            names.push(t);
        }
        if names.len() > state.max_topics {
            return Err(ApiError::TooManyTopics {
                got: names.len(),
                max: state.max_topics,
            });
        }
    }
    if names.is_empty() {
        return Err(ApiError::BadRequest("no topics: use ?topics=a,b".into()));
    }
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|t| state.hub.get(t).is_none())
        .collect();
    if !unknown.is_empty() {
        let shown: String = unknown
            .join(",")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        return Err(ApiError::UnknownTopic(shown));
    }
    Ok(names
        .into_iter()
        .filter_map(|t| state.hub.subscribe(t).map(|rx| (Arc::from(t), rx)))
        .collect())
}

/// The version after which a client wants changes: `Last-Event-ID`, else `?lastEventId=`.
pub fn resume_point(header: Option<&str>, query: &EventsQuery) -> u64 {
    header
        .or(query.last_event_id.as_deref())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Decrements the connection gauges when the stream is dropped (client gone or shutdown).
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    subscriptions: i64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.sse_connections.fetch_sub(1, Relaxed);
        self.metrics
            .subscriptions
            .fetch_sub(self.subscriptions, Relaxed);
    }
}

/// `GET /events` on a connection hyper serves (a request after the first on a kept-alive
/// connection; the first one is served by the front door).
pub async fn events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A query string that does not parse (a field given twice, bad escapes) is a 400 with the
    // contract's JSON body, not axum's text.
    let Query(query) = query.map_err(|e| {
        state.metrics.client_errors.fetch_add(1, Relaxed);
        let why = e.body_text();
        let why = why
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&why);
        let why: String = why.chars().filter(|c| !c.is_control()).take(100).collect();
        ApiError::BadRequest(format!("malformed query string: {why}"))
    })?;
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let since = resume_point(header, &query);
    let gzip = super::http::accepts_gzip(&headers);
    let body = open(
        &state,
        query.topics.as_deref().unwrap_or(""),
        since,
        client,
        Form {
            gzip,
            delta: query.delta(),
        },
    )?;
    let mut resp = Body::from_stream(body.map(Ok::<_, Infallible>)).into_response();
    let encoding = gzip.then_some(&wire::GZIP);
    for (name, value) in HEADERS.iter().chain(encoding) {
        resp.headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    Ok(resp)
}

/// A stream admitted: its topics and what counts it as open.
pub struct Admitted {
    pub subs: Vec<TopicReceiver>,
    pub guard: ConnectionGuard,
}

/// Check a stream request from `client` and admit it: an invalid one spends none of the
/// admission budget.
pub fn admit(state: &AppState, topics: &str, client: IpAddr) -> Result<Admitted, ApiError> {
    if state.disable_streams {
        return Err(ApiError::StreamsDisabled);
    }
    if !state.hub.is_ready() {
        return Err(ApiError::NotReady);
    }
    let subs = parse_topics(state, topics.split(',')).inspect_err(|_| {
        state.metrics.client_errors.fetch_add(1, Relaxed);
    })?;
    state.admission.admit(&state.metrics, client)?;
    let metrics = state.metrics.clone();
    metrics.sse_connections.fetch_add(1, Relaxed);
    metrics.sse_connections_opened.fetch_add(1, Relaxed);
    metrics.subscriptions.fetch_add(subs.len() as i64, Relaxed);
    let guard = ConnectionGuard {
        metrics,
        subscriptions: subs.len() as i64,
    };
    Ok(Admitted { subs, guard })
}

/// Admit a stream from `client` and build what it sends: `retry:`, then the frames of `topics`
/// after version `since` with heartbeats between them, until shutdown ends it with a randomised
/// `retry:`; gzip-compressed with `gzip` (see [`wire`]).
pub fn open(
    state: &AppState,
    topics: &str,
    since: u64,
    client: IpAddr,
    form: Form,
) -> Result<impl Stream<Item = Bytes> + Send + 'static, ApiError> {
    Ok(frames(state, admit(state, topics, client)?, since, form))
}

/// What an admitted stream sends (see [`open`]).
pub fn frames(
    state: &AppState,
    admitted: Admitted,
    since: u64,
    form: Form,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let Admitted { subs, guard } = admitted;
    let metrics = state.metrics.clone();
    let first = Piece::Retry(state.sse_retry.as_millis() as u64);
    let mut frames = Ordered::new(state.hub.complete());
    for (topic, mut rx) in subs {
        let current = rx.borrow_and_update().clone();
        let snapshot = current.version > since;
        frames.insert(topic, rx, current, snapshot.then_some(Frame::Snapshot));
    }
    // With deltas, the version of each topic this stream sent last: an update whose base it is
    // goes as a patch.
    let mut sent: Option<HashMap<Arc<str>, u64>> = form.delta.then(HashMap::new);
    let frames = frames.map(move |(enc, frame)| {
        let Some(sent) = sent.as_mut() else {
            return Piece::Document(enc, frame);
        };
        let held = sent.insert(enc.topic.clone(), enc.version);
        let patch = frame == Frame::Update && held.is_some_and(|v| enc.patches(v));
        Piece::Document(enc, if patch { Frame::Patch } else { frame })
    });
    let heartbeats =
        WatchStream::from_changes(state.heartbeat.join(None)).map(|_| Piece::Heartbeat);
    // On shutdown the stream ends at a random moment of the drain period, with a random
    // `retry:` so its client comes back at a time of its own; a gzip stream is then finished.
    let drain_ms = state.drain.as_millis().max(1) as u64;
    let farewell = stream::iter([
        Piece::Retry(rand::random_range(1_000..1_000 + 2 * drain_ms)),
        Piece::End,
    ]);
    let live = stream::select(frames, heartbeats)
        .take_until(state.closing())
        .chain(farewell);
    let mut encoder = wire::Encoder::new(form.gzip);
    let encoding = encoder.form();
    // A heartbeat only goes out when nothing else did since the last one: any bytes keep a
    // proxy from taking the stream for idle, so a stream is never silent for two intervals,
    // and a stream with news costs no write for it.
    let mut wrote_since_beat = false;
    stream::once(async { first })
        .chain(live)
        .filter_map(move |piece| {
            let _alive = &guard;
            let beat = matches!(piece, Piece::Heartbeat);
            if beat && std::mem::take(&mut wrote_since_beat) {
                return std::future::ready(None);
            }
            wrote_since_beat = !beat;
            let bytes = encoder.encode(&piece);
            let form = match piece {
                Piece::Document(_, Frame::Patch) => StreamForm::Patch,
                _ => encoding,
            };
            if let Piece::Document(enc, frame) = &piece {
                // The frame goes to the socket now: the writer asks for the next one when it
                // can write.
                let live = *frame != Frame::Snapshot;
                metrics.delivered(StreamKind::Sse, live.then_some(enc.published_at));
            }
            metrics.wrote(form, bytes.len());
            std::future::ready((!bytes.is_empty()).then_some(bytes))
        })
}
