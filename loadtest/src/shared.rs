//! What the connection tasks of one worker share: the recorder, the target and its paths, the
//! topics and how to draw them, the stop signal; and one subscriber to start.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::delivery::{Event, Failure};
use crate::freshness::Held;
use crate::stats::{Counters, Recorder, Stream, now_us};
use crate::topics::Sampler;

/// Everything the connection tasks of a worker share.
pub struct Shared {
    pub worker: usize,
    pub rec: Mutex<Recorder>,
    pub open: AtomicI64,
    pub peak_open: AtomicI64,
    /// Subscribers whose connect attempt has finished, one way or the other.
    pub settled: AtomicU64,
    pub stop: watch::Receiver<bool>,
    pub target: SocketAddr,
    pub sources: Vec<Ipv4Addr>,
    pub topics: Vec<String>,
    pub sampler: Sampler,
    /// Class flags of each topic ([`crate::freshness::CAPITAL`], [`crate::freshness::TOP`]).
    pub classes: Vec<u8>,
    pub sse_path: String,
    pub ws_path: String,
    pub ws_subscribe: Option<String>,
    /// Compressed streams (gzip SSE, permessage-deflate WebSocket).
    pub compress: bool,
    pub get_path: String,
    pub seed: u64,
    pub handshake_timeout: Duration,
    /// Deliveries make one cycle by their version, not their `published_at`.
    pub cycle_by_version: bool,
}

/// One subscriber to start.
#[derive(Debug, Clone, Copy)]
pub struct Subscriber {
    pub topic: usize,
    pub source: Ipv4Addr,
}

impl Shared {
    pub fn rng(&self, salt: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (self.worker as u64).rotate_left(32) ^ salt)
    }

    pub fn error(&self, f: impl FnOnce(&mut Counters)) {
        self.rec.lock().expect("recorder lock").error(now_us(), f);
    }

    /// Wait for a subscriber's `handshake`, at most `--handshake-timeout`: what it answers, or
    /// `None` with the failure counted.
    pub async fn handshake<T>(
        &self,
        handshake: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(x)) => Some(x),
            Ok(Err(f)) => {
                self.failed(f);
                None
            }
            Err(_) => {
                self.failed(Failure::Connect);
                None
            }
        }
    }

    pub fn failed(&self, f: Failure) {
        self.error(|c| match f {
            Failure::Connect => c.connect_failed += 1,
            Failure::Handshake => c.handshake_failed += 1,
        });
        self.settled.fetch_add(1, Relaxed);
    }

    /// The stream is accepted: count it open; returns the time, which separates snapshots
    /// (documents published before it) from the updates we time.
    pub fn established(&self, started_us: u64, topic: usize) -> u64 {
        let now = now_us();
        {
            let mut rec = self.rec.lock().expect("recorder lock");
            rec.opened(now);
            *rec.by_topic.entry(topic).or_default() += 1;
            rec.counters.handshake_us_total += now.saturating_sub(started_us);
        }
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(open, Relaxed);
        self.settled.fetch_add(1, Relaxed);
        now
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// The server ended a stream: unexpected unless the run is stopping.
    pub fn closed_by_server(&self, stream: Stream, stop: &watch::Receiver<bool>) {
        if !*stop.borrow() {
            self.error(|c| {
                c.unexpected_close += 1;
                c.ended(stream);
            });
        }
    }

    /// A read or write on an established stream failed (reset, broken pipe): an error unless
    /// the run is stopping.
    pub fn broken(&self, stream: Stream, stop: &watch::Receiver<bool>) {
        if !*stop.borrow() {
            self.error(|c| {
                c.io_errors += 1;
                c.ended(stream);
            });
        }
    }

    /// Read more of a `stream` connection into `raw`, unless `stop` comes first: the bytes
    /// read, or `None` once it ended (stopped; closed by the server or broken, counted).
    pub async fn read_on<R: tokio::io::AsyncRead + Unpin>(
        &self,
        stream: Stream,
        s: &mut R,
        raw: &mut Vec<u8>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<usize> {
        let n = tokio::select! {
            biased;
            _ = stop.changed() => return None,
            n = crate::http::read_more(s, raw) => n,
        };
        match n {
            Ok(0) => {
                self.closed_by_server(stream, stop);
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                self.broken(stream, stop);
                None
            }
        }
    }

    pub fn bytes(&self, n: usize) {
        self.rec.lock().expect("recorder lock").counters.bytes += n as u64;
    }

    /// A parsed event that arrived at `received_us` on a stream accepted at `connected_us`,
    /// whose subscriber holds `held`.
    pub fn event(
        &self,
        stream: Stream,
        ev: Event,
        connected_us: u64,
        received_us: u64,
        held: &mut Held,
    ) {
        let mut rec = self.rec.lock().expect("recorder lock");
        match ev {
            Event::Heartbeat => rec.counters.heartbeats += 1,
            Event::Doc {
                published_at: None, ..
            } => rec.error(received_us, |c| c.protocol_errors += 1),
            Event::Doc {
                snapshot,
                published_at: Some(p),
                version,
                source_time,
            } => {
                if let Some(s) = source_time {
                    rec.freshness.arrived(held, s, received_us);
                }
                // A document published before we subscribed is a snapshot (apura says so; for
                // nchan it is a buffered message): its age is not a fan-out latency.
                if snapshot || (p.max(0) as u64) * 1_000 < connected_us {
                    rec.counters.snapshots += 1;
                } else {
                    rec.update(
                        stream,
                        p,
                        version.filter(|_| self.cycle_by_version),
                        received_us,
                    );
                }
            }
        }
    }
}
