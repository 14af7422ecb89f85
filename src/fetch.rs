//! Fetching feed files: conditional GET over HTTP(S) with timeouts, retries and a size cap, or a
//! read of `file://` URLs and plain paths for recorded feeds. A fetcher may carry
//! [`throttle::Throttle`]s that every HTTP attempt, retries included, passes through.

pub mod throttle;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rand::RngExt;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER};
use thiserror::Error;

use throttle::{REFUSED_PAUSE, Throttle};

/// Largest feed file accepted. The national councillor file is the biggest thing the
/// authority publishes (~5,570 cities × tens of candidates ≈ 30–60 MB); 128 MiB leaves room
/// and still refuses a runaway or hostile upstream before it exhausts memory.
pub const DEFAULT_MAX_BYTES: usize = 128 << 20;
/// Time for one whole request, body included: a 4 MB file on a slow link takes seconds; longer
/// than one 10 s poll interval means the next poll will do better.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per fetch for transient failures (network errors, timeouts, 5xx).
pub const ATTEMPTS: u32 = 3;
/// First retry delay; doubles with each attempt, with full jitter.
pub const RETRY_BASE: Duration = Duration::from_millis(250);

/// Why a fetch failed.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {detail}")]
    Network { url: String, detail: String },
    #[error("{url}: larger than {max} bytes")]
    TooLarge { url: String, max: usize },
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
}

impl FetchError {
    /// A short label for the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Status { .. } => "http_status",
            FetchError::Network { .. } => "network",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::File { .. } => "file",
        }
    }

    fn transient(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => *status >= 500 || *status == 429,
            FetchError::Network { .. } => true,
            _ => false,
        }
    }
}

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// New content.
    Modified(Bytes),
    /// Same as last time (304, or an unchanged file).
    NotModified,
    /// Not published yet (404, or no such file).
    NotFound,
}

/// One feed file and what is needed to ask for it conditionally.
#[derive(Debug, Clone)]
pub struct Source {
    location: Location,
    etag: Option<String>,
    last_modified: Option<String>,
    file_stamp: Option<(SystemTime, u64)>,
}

#[derive(Debug, Clone)]
enum Location {
    Http(String),
    File(PathBuf),
}

impl Source {
    /// An `http(s)://` URL, a `file://` URL, or a plain path.
    pub fn new(location: &str) -> Self {
        let location = if location.starts_with("http://") || location.starts_with("https://") {
            Location::Http(location.to_string())
        } else {
            Location::File(PathBuf::from(
                location.strip_prefix("file://").unwrap_or(location),
            ))
        };
        Source {
            location,
            etag: None,
            last_modified: None,
            file_stamp: None,
        }
    }

    /// Ask for the file in full next time, not conditionally. For a file refused as
    /// malformed: a transfer cut short comes with the whole file's validators, and keeping
    /// them would have the server answer 304 for the good file from then on, freezing it on
    /// the last file that went through.
    pub fn forget_validators(&mut self) {
        self.etag = None;
        self.last_modified = None;
        self.file_stamp = None;
    }

    /// The location as given, for messages.
    pub fn name(&self) -> String {
        match &self.location {
            Location::Http(u) => u.clone(),
            Location::File(p) => p.display().to_string(),
        }
    }
}

/// An HTTP client shared by every source.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: usize,
    /// Budgets every HTTP attempt waits for, in order, holding each for the whole request.
    throttles: Vec<Arc<Throttle>>,
    attempts: u32,
}

impl Fetcher {
    pub fn new(timeout: Duration, max_bytes: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("apura/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Fetcher {
            client,
            max_bytes,
            throttles: Vec::new(),
            attempts: ATTEMPTS,
        })
    }

    /// This fetcher, with every HTTP attempt also waiting for `throttle` (after the throttles
    /// it already has). A 403 or 429 answer pauses all of its throttles.
    pub fn throttled(mut self, throttle: Arc<Throttle>) -> Self {
        self.throttles.push(throttle);
        self
    }

    /// This fetcher, making at most `attempts` attempts per fetch (1: no retries; the caller
    /// retries in its own loop).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Fetch a source, retrying transient failures with exponential backoff and full jitter.
    pub async fn fetch(&self, source: &mut Source) -> Result<Fetched, FetchError> {
        let mut attempt = 0;
        loop {
            let result = match &source.location {
                Location::Http(url) => {
                    let url = url.clone();
                    self.fetch_http(&url, source).await
                }
                Location::File(path) => {
                    let path = path.clone();
                    return self.fetch_file(&path, source).await;
                }
            };
            match result {
                Err(e) if e.transient() && attempt + 1 < self.attempts => {
                    let cap = RETRY_BASE * 2u32.pow(attempt);
                    let delay = rand::rng().random_range(Duration::ZERO..=cap);
                    tracing::debug!(error = %e, ?delay, "retrying fetch");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn fetch_http(&self, url: &str, source: &mut Source) -> Result<Fetched, FetchError> {
        let net = |e: reqwest::Error| FetchError::Network {
            url: url.to_string(),
            detail: e.without_url().to_string(),
        };
        let mut permits = Vec::with_capacity(self.throttles.len());
        for t in &self.throttles {
            permits.push(t.acquire().await);
        }
        let mut req = self.client.get(url);
        if let Some(etag) = &source.etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &source.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
        let resp = req.send().await.map_err(net)?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
            StatusCode::NOT_FOUND => return Ok(Fetched::NotFound),
            s @ (StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS)
                if !self.throttles.is_empty() =>
            {
                // A throttled upstream that refuses us may be blocking this IP: nobody asks
                // again before the block is over, or it would start again.
                let pause = retry_after(resp.headers()).unwrap_or(REFUSED_PAUSE);
                tracing::error!(%url, status = s.as_u16(), ?pause, "the upstream refused a request; pausing every request to it");
                for t in &self.throttles {
                    t.pause(pause);
                }
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status: s.as_u16(),
                });
            }
            s if !s.is_success() => {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status: s.as_u16(),
                });
            }
            _ => {}
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            max: self.max_bytes,
        };
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(net)?;
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        drop(permits);
        source.etag = etag;
        source.last_modified = last_modified;
        Ok(Fetched::Modified(body.freeze()))
    }

    async fn fetch_file(
        &self,
        path: &std::path::Path,
        source: &mut Source,
    ) -> Result<Fetched, FetchError> {
        let err = |e: std::io::Error| FetchError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let meta = match tokio::fs::metadata(path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Fetched::NotFound),
            Err(e) => return Err(err(e)),
        };
        if meta.len() > self.max_bytes as u64 {
            return Err(FetchError::TooLarge {
                url: path.display().to_string(),
                max: self.max_bytes,
            });
        }
        let stamp = (meta.modified().map_err(err)?, meta.len());
        if source.file_stamp == Some(stamp) {
            return Ok(Fetched::NotModified);
        }
        let bytes = tokio::fs::read(path).await.map_err(err)?;
        source.file_stamp = Some(stamp);
        Ok(Fetched::Modified(Bytes::from(bytes)))
    }
}

/// `Retry-After` as a duration: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_read_once_until_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.json");
        std::fs::write(&path, b"{}").unwrap();
        let fetcher = Fetcher::new(DEFAULT_TIMEOUT, 16).unwrap();
        let mut src = Source::new(&format!("file://{}", path.display()));
        assert_eq!(
            fetcher.fetch(&mut src).await.unwrap(),
            Fetched::Modified(Bytes::from_static(b"{}"))
        );
        assert_eq!(fetcher.fetch(&mut src).await.unwrap(), Fetched::NotModified);
        std::fs::write(&path, b"{\"a\":1}").unwrap();
        assert!(matches!(
            fetcher.fetch(&mut src).await.unwrap(),
            Fetched::Modified(_)
        ));
        std::fs::write(&path, vec![b' '; 17]).unwrap();
        assert!(matches!(
            fetcher.fetch(&mut src).await,
            Err(FetchError::TooLarge { .. })
        ));
        let mut missing = Source::new(dir.path().join("nope.json").to_str().unwrap());
        assert_eq!(
            fetcher.fetch(&mut missing).await.unwrap(),
            Fetched::NotFound
        );
    }

    #[tokio::test]
    async fn a_refused_request_pauses_every_throttled_request() {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let n = h.fetch_add(1, Relaxed);
            async move {
                if n == 0 {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        "slow down",
                    )
                } else {
                    (axum::http::StatusCode::OK, [("retry-after", "0")], "{}")
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let throttle = Arc::new(Throttle::new(50, 4));
        let fetcher = Fetcher::new(DEFAULT_TIMEOUT, 1 << 20)
            .unwrap()
            .throttled(throttle.clone())
            .with_attempts(1);
        let mut src = Source::new(&format!("http://{addr}/f.json"));
        let err = fetcher.fetch(&mut src).await.unwrap_err();
        assert!(
            matches!(err, FetchError::Status { status: 429, .. }),
            "{err}"
        );
        assert!(throttle.paused());
        let started = std::time::Instant::now();
        assert!(matches!(
            fetcher.fetch(&mut src).await.unwrap(),
            Fetched::Modified(_)
        ));
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(hits.load(Relaxed), 2, "no retry inside the pause");
        assert_eq!(throttle.started(), 2);
    }
}
