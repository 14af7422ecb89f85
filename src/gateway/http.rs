//! JSON GET of documents (ETag, 304, gzip, cache headers), health, readiness and metrics.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::AppState;
use super::CACHE_CONTROL;
use crate::documents::{BRAZIL_TOPIC, CITIES_TOPIC};
use crate::metrics::{Extra, Metrics, labelled_gauge};
use prometheus::proto::MetricFamily;

/// Every error a client can get: a safe message in JSON, a stable code, the status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown topic: {0}")]
    UnknownTopic(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("too many topics: {got} (at most {max} per connection)")]
    TooManyTopics { got: usize, max: usize },
    #[error("streaming is disabled on this server; use GET")]
    StreamsDisabled,
    #[error("overloaded: {reason}; retry in {retry_after} s")]
    Overloaded {
        reason: &'static str,
        retry_after: u64,
    },
    /// A path that is neither a topic, an endpoint nor a file of the page.
    #[error("nothing at {0}")]
    NotFound(String),
    /// A method other than GET or HEAD: nothing here accepts a write.
    #[error("{0} is not allowed: every endpoint is read-only (GET or HEAD)")]
    MethodNotAllowed(String),
    /// The gateway has not loaded its snapshots yet: a topic it does not hold may well exist.
    #[error("starting: documents not loaded yet; retry in {NOT_READY_RETRY_AFTER} s")]
    NotReady,
}

/// `Retry-After` while starting: loading every snapshot takes well under a second.
const NOT_READY_RETRY_AFTER: u64 = 1;

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownTopic(_) => "unknown_topic",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooManyTopics { .. } => "too_many_topics",
            ApiError::StreamsDisabled => "streams_disabled",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::NotReady => "not_ready",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownTopic(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) | ApiError::TooManyTopics { .. } => StatusCode::BAD_REQUEST,
            ApiError::StreamsDisabled | ApiError::Overloaded { .. } | ApiError::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code(), "message": self.to_string()});
        let mut resp = (self.status(), axum::Json(body)).into_response();
        let retry_after = match self {
            ApiError::StreamsDisabled => Some(60),
            ApiError::Overloaded { retry_after, .. } => Some(retry_after),
            ApiError::NotReady => Some(NOT_READY_RETRY_AFTER),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// What no route and no file of the page answers: a JSON 404, or a JSON 405 for a method other
/// than GET and HEAD, as every other error.
pub async fn nothing_here(method: Method, uri: Uri) -> Response {
    if method == Method::GET || method == Method::HEAD {
        ApiError::NotFound(uri.path().to_string()).into_response()
    } else {
        let mut resp = ApiError::MethodNotAllowed(method.to_string()).into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        resp
    }
}

pub async fn cities_index(State(s): State<AppState>, headers: HeaderMap) -> Response {
    document(&s, &headers, CITIES_TOPIC)
}

pub async fn brazil(State(s): State<AppState>, headers: HeaderMap) -> Response {
    document(&s, &headers, BRAZIL_TOPIC)
}

/// `/cities/{mayors|councillors|zones}-{uf}-{slug}.json`
pub async fn city(
    State(s): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let topic = file.strip_suffix(".json").unwrap_or("");
    let is_city = ["mayors-", "councillors-", "zones-"]
        .iter()
        .any(|p| topic.starts_with(p));
    if !is_city {
        // Named as a topic, as every unknown topic is: `foo` for `/cities/foo.json`.
        return not_found(&s, file.strip_suffix(".json").unwrap_or(&file));
    }
    document(&s, &headers, topic)
}

/// `/states/{uf}.json`
pub async fn state(
    State(s): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    match file.strip_suffix(".json") {
        Some(uf) if uf.len() == 2 && uf.bytes().all(|b| b.is_ascii_lowercase()) => {
            document(&s, &headers, &format!("state-{uf}"))
        }
        // Named as a topic, as `/states/xx.json` is (`state-xx`); a UF in capitals is told
        // where its document is.
        _ => {
            let name = file.strip_suffix(".json").unwrap_or(&file);
            let lower = name.to_ascii_lowercase();
            if name.len() == 2 && name.bytes().all(|b| b.is_ascii_alphabetic()) && lower != name {
                not_found(
                    &s,
                    &format!("state-{name} (UFs are lower-case: /states/{lower}.json)"),
                )
            } else {
                not_found(&s, &format!("state-{name}"))
            }
        }
    }
}

fn not_found(s: &AppState, what: &str) -> Response {
    s.metrics.client_errors.fetch_add(1, Relaxed);
    // Echo at most a short, printable prefix of what the client asked for.
    let shown: String = what.chars().filter(|c| !c.is_control()).take(100).collect();
    ApiError::UnknownTopic(shown).into_response()
}

fn document(s: &AppState, headers: &HeaderMap, topic: &str) -> Response {
    s.metrics.get_requests.fetch_add(1, Relaxed);
    let Some(enc) = s.hub.get(topic) else {
        // Before the snapshots are in, "unknown" only means "not loaded yet": a 404 would
        // tell a CDN or a client that a real topic does not exist; a 503 makes a load
        // balancer try another gateway.
        if !s.hub.is_ready() {
            return ApiError::NotReady.into_response();
        }
        return not_found(s, topic);
    };
    let cache = HeaderValue::from_static(CACHE_CONTROL);
    if etag_matches(headers, &enc.etag) {
        s.metrics.not_modified.fetch_add(1, Relaxed);
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, enc.etag.clone()),
                (header::CACHE_CONTROL, cache),
                (header::VARY, HeaderValue::from_static("Accept-Encoding")),
            ],
        )
            .into_response();
    }
    let gzip = accepts_gzip(headers);
    let body: Bytes = if gzip {
        enc.gzip().clone()
    } else {
        enc.body.clone()
    };
    let mut resp = (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, enc.etag.clone()),
            (header::CACHE_CONTROL, cache),
            (header::VARY, HeaderValue::from_static("Accept-Encoding")),
        ],
        body,
    )
        .into_response();
    if gzip {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

/// `If-None-Match` holding this ETag (weak or strong, in a list, or `*`), in any of its lines:
/// several lines are one list (RFC 9110, 5.3).
fn etag_matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or("");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|inm| if_none_match(inm, ours))
}

/// An `If-None-Match` value that holds the ETag `ours` (weak or strong, in a list, or `*`).
pub(crate) fn if_none_match(inm: &str, ours: &str) -> bool {
    inm.split(',')
        .map(|t| t.trim())
        .any(|t| t == "*" || t == ours || t.strip_prefix("W/") == Some(ours))
}

pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    super::wire::accepts_gzip(
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(s): State<AppState>) -> Response {
    if s.shutdown.is_cancelled() {
        // A load balancer stops sending new clients while the streams drain.
        return (StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down\n").into_response();
    }
    if s.hub.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no documents loaded yet\n",
        )
            .into_response()
    }
}

/// `/metrics`: OpenMetrics to a scraper that asks for it, else the text format 0.0.4.
///
/// The audience per topic keeps a bounded label set: `apura_subscriptions_by_kind{kind}` has
/// one series per kind of topic (seven), `apura_topic_subscribers{topic}` one per topic of the
/// [`TOP_METRIC_TOPICS`] with the most subscribers in `/status`'s last report (at most a second
/// old), which lists more.
pub async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let topics = (
        "apura_topics",
        "Topics held by the hub.",
        s.hub.len() as f64,
    );
    // Counting the audience reads every topic: it comes from `/status`'s report, made at most
    // once a second, so that a client scraping in a loop costs no more than one report a second.
    let report = s.reports.current(&s).await;
    let audience = &report.audience;
    let by_kind = labelled_gauge(
        "apura_subscriptions_by_kind",
        "Open subscriptions by kind of topic (mayors, councillors, zones, state, brazil, cities, other).",
        "kind",
        audience
            .by_kind
            .iter()
            .map(|k| (k.kind.label().to_string(), k.subscriptions as f64)),
    );
    let top = labelled_gauge(
        "apura_topic_subscribers",
        "Open subscriptions of the topics with the most subscribers on this gateway (at most 10 series).",
        "topic",
        audience
            .top
            .iter()
            .take(TOP_METRIC_TOPICS)
            .map(|t| (t.topic.clone(), t.subscribers as f64)),
    );
    metrics_response(&s.metrics, &headers, &[topics], vec![by_kind, top])
}

/// Topics with a series of their own in `apura_topic_subscribers`.
pub const TOP_METRIC_TOPICS: usize = 10;

/// The `/metrics` answer of `metrics` to a request with `headers`, `extra` gauges and
/// `labelled` families among them.
pub fn metrics_response(
    metrics: &Metrics,
    headers: &HeaderMap,
    extra: &[Extra],
    labelled: Vec<MetricFamily>,
) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = metrics.exposition(accept, extra, labelled);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching_handles_lists_weak_and_star() {
        let etag = HeaderValue::from_static("\"7\"");
        let mut h = HeaderMap::new();
        assert!(!etag_matches(&h, &etag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"6\", W/\"7\""),
        );
        assert!(etag_matches(&h, &etag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"70\""));
        assert!(!etag_matches(&h, &etag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(etag_matches(&h, &etag));
    }

    #[test]
    fn gzip_negotiation_honours_q_zero() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&h));
    }
}
