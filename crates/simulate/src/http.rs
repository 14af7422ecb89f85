//! What both layouts' servers share: a file as served (validators, conditional GET, gzip made
//! once), the errors a client sees, the status page's headers, and work that outlives a
//! client's request.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::OnceCell;
use tracing::{debug, error};

/// Feed files change every tick and pollers revalidate them every time (the ingest's
/// conditional GET); `no-cache` lets a cache keep them but makes it ask first.
const FILE_CACHE_CONTROL: &str = "no-cache";

/// One file as served: body, validators, and its gzip form once someone asked for it.
#[derive(Debug)]
pub struct FeedFile {
    pub body: Bytes,
    etag: HeaderValue,
    etag_gzip: HeaderValue,
    last_modified: HeaderValue,
    modified_secs: u64,
    gzip: OnceCell<Bytes>,
}

impl FeedFile {
    /// A file whose strong `ETag` is `"<tag>"` (and `"<tag>-gzip"` for its gzip form).
    pub fn new(body: Bytes, tag: String, modified: SystemTime) -> Self {
        let gzip_tag = format!("{tag}-gzip");
        Self::tagged(body, &tag, &gzip_tag, modified)
    }

    /// A file whose `ETag` is `"<tag>"` in both forms, as the authority's files carry their
    /// generation id (`idg`) whatever the encoding.
    pub fn same_tag(body: Bytes, tag: &str, modified: SystemTime) -> Self {
        Self::tagged(body, tag, tag, modified)
    }

    fn tagged(body: Bytes, tag: &str, gzip_tag: &str, modified: SystemTime) -> Self {
        let header = |s: String| HeaderValue::from_str(&s).expect("ETags are ASCII");
        FeedFile {
            body,
            etag: header(format!("\"{tag}\"")),
            etag_gzip: header(format!("\"{gzip_tag}\"")),
            last_modified: header(httpdate::fmt_http_date(modified)),
            modified_secs: modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            gzip: OnceCell::new(),
        }
    }

    async fn gzipped(self: &Arc<Self>) -> Result<Bytes, ApiError> {
        if let Some(zipped) = self.gzip.get() {
            return Ok(zipped.clone());
        }
        let file = self.clone();
        detached(async move {
            file.gzip
                .get_or_try_init(|| {
                    let body = file.body.clone();
                    async move {
                        tokio::task::spawn_blocking(move || gzip(&body))
                            .await
                            .map_err(|e| ApiError::Internal(format!("gzip task: {e}")))?
                    }
                })
                .await
                .cloned()
        })
        .await
    }

    /// Whether the client's copy is current: `If-None-Match` (either form's tag, weak or
    /// strong), or else `If-Modified-Since`.
    fn not_modified(&self, headers: &HeaderMap) -> bool {
        let mut tags = headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .peekable();
        if tags.peek().is_some() {
            return tags.any(|t| {
                let t = t.strip_prefix("W/").unwrap_or(t);
                t == "*" || t == self.etag || t == self.etag_gzip
            });
        }
        headers
            .get(IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
            .is_some_and(|since| self.modified_secs <= since.as_secs())
    }

    /// The response to a GET with `headers`: 304, or the body, gzipped if the client accepts it.
    pub(crate) async fn respond(
        self: &Arc<Self>,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let gzip = accepts_gzip(headers);
        let etag = if gzip { &self.etag_gzip } else { &self.etag };
        let mut response = if self.not_modified(headers) {
            StatusCode::NOT_MODIFIED.into_response()
        } else if gzip {
            let mut r = self.gzipped().await?.into_response();
            r.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            self.body.clone().into_response()
        };
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(ETAG, etag.clone());
        h.insert(LAST_MODIFIED, self.last_modified.clone());
        h.insert(CACHE_CONTROL, HeaderValue::from_static(FILE_CACHE_CONTROL));
        h.insert(VARY, HeaderValue::from_static("accept-encoding"));
        Ok(response)
    }
}

/// Compress at the fastest level: the 25 MB councillor file takes ~0.1 s (release) and still
/// shrinks about fourfold; the default level would take several times longer for a few
/// percent less.
fn gzip(body: &[u8]) -> Result<Bytes, ApiError> {
    use std::io::Write;
    let started = Instant::now();
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .map(|out| {
            debug!(bytes = body.len(), gzip = out.len(), elapsed = ?started.elapsed(), "gzipped");
            Bytes::from(out)
        })
        .map_err(|e| ApiError::Internal(format!("gzip: {e}")))
}

/// Whether `Accept-Encoding` allows gzip (`gzip`, `gzip;q=0.5`, `*`; not `gzip;q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// Run `work` in its own task: a render or a compression that other requests wait for must
/// finish even if the client that started it hangs up (dropping its request future).
pub(crate) async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(format!("task: {e}")))?
}
/// An error as the client sees it: a status and a short JSON body; details go to the log.
#[derive(Debug)]
pub(crate) enum ApiError {
    NotFound(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::Internal(detail) => {
                error!(%detail, "simulator request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}
/// A status page: JSON, never cached.
pub(crate) fn no_store(body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer to a path no route takes.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("not found".to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{SimConfig, Simulator};
    use apura_formats::model::Office;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    /// Build and gzip times; informative (run with `--release --nocapture`).
    #[test]
    fn build_and_gzip_time() {
        let started = Instant::now();
        let sim = Simulator::new(SimConfig::default());
        eprintln!("simulator built in {:?}", started.elapsed());
        for office in [Office::Mayor, Office::Councillor] {
            let body = sim.render_tick(30, office);
            let started = Instant::now();
            let zipped = gzip(&body).unwrap();
            eprintln!(
                "{office:?}: {} bytes gzipped to {} in {:?}",
                body.len(),
                zipped.len(),
                started.elapsed()
            );
        }
    }

    #[test]
    fn gzip_is_negotiated() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, gzip;q=0.8"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn validators_are_checked() {
        let modified = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let file = FeedFile::new(Bytes::from_static(b"{}"), "abc-1-mayors".into(), modified);
        assert!(file.not_modified(&headers(&[("if-none-match", "\"abc-1-mayors\"")])));
        assert!(file.not_modified(&headers(&[(
            "if-none-match",
            "\"x\", W/\"abc-1-mayors-gzip\""
        )])));
        assert!(file.not_modified(&headers(&[("if-none-match", "*")])));
        assert!(!file.not_modified(&headers(&[("if-none-match", "\"abc-0-mayors\"")])));
        let date = httpdate::fmt_http_date(modified);
        let mut h = HeaderMap::new();
        h.insert(IF_MODIFIED_SINCE, HeaderValue::from_str(&date).unwrap());
        assert!(file.not_modified(&h));
        let earlier = httpdate::fmt_http_date(modified - Duration::from_secs(1));
        h.insert(IF_MODIFIED_SINCE, HeaderValue::from_str(&earlier).unwrap());
        assert!(!file.not_modified(&h));
        // If-None-Match wins over If-Modified-Since.
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        h.insert(IF_MODIFIED_SINCE, HeaderValue::from_str(&date).unwrap());
        assert!(!file.not_modified(&h));
    }
}
