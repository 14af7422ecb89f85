//! Admission of streaming connections: a cap on open streams and on the rate of new ones, so an
//! overloaded process answers 503 with `Retry-After` before it runs out of memory or files.

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use rand::RngExt;

use super::http::ApiError;
use crate::metrics::Metrics;

/// File descriptors kept back from streams when the cap is derived from the open-file limit:
/// GET connections, the feed and Redis connections, log files.
pub const RESERVED_FILES: u64 = 1_000;

/// Open-stream and connect-rate limits.
pub struct Admission {
    max_streams: i64,
    rate: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl Admission {
    /// `max_streams` open SSE + WebSocket connections; `rate` new ones per second, with a burst
    /// of one second's worth.
    pub fn new(max_streams: u64, rate: u64) -> Self {
        Admission {
            max_streams: max_streams as i64,
            rate: rate as f64,
            bucket: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// Admit one more stream, or say when to come back.
    pub fn admit(&self, metrics: &Metrics) -> Result<(), ApiError> {
        let open = metrics.sse_connections.load(Relaxed) + metrics.ws_connections.load(Relaxed);
        let refuse = |reason: &'static str| {
            metrics.refused_connections.fetch_add(1, Relaxed);
            // Spread the retries of a refused crowd over a few seconds.
            Err(ApiError::Overloaded {
                reason,
                retry_after: rand::rng().random_range(1..=5),
            })
        };
        if open >= self.max_streams {
            return refuse("too many open connections");
        }
        let mut bucket = self.bucket.lock().expect("admission poisoned");
        let now = Instant::now();
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            return refuse("too many new connections per second");
        }
        *bucket = (tokens - 1.0, now);
        Ok(())
    }
}

/// Raise the soft open-file limit to the hard limit and return it.
pub fn raise_file_limit() -> u64 {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((_, hard)) => match rlimit::increase_nofile_limit(hard) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |l| l.0)
            }
        },
        Err(_) => 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_streams_over_the_cap_are_refused() {
        let m = Metrics::default();
        let a = Admission::new(2, 1000);
        assert!(a.admit(&m).is_ok());
        m.sse_connections.store(1, Relaxed);
        m.ws_connections.store(1, Relaxed);
        assert!(matches!(a.admit(&m), Err(ApiError::Overloaded { .. })));
        assert_eq!(m.refused_connections.load(Relaxed), 1);
    }

    #[test]
    fn the_connect_rate_is_capped() {
        let m = Metrics::default();
        let a = Admission::new(1_000_000, 10);
        let admitted = (0..100).filter(|_| a.admit(&m).is_ok()).count();
        assert!((10..=12).contains(&admitted), "{admitted}");
    }
}
