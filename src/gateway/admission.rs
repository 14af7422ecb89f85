//! Admission: every accepted connection is counted against `--max-connections`, and each client
//! address against its share of it; streams also against the rate of new ones (global and per
//! address). An overloaded process answers 503 with `Retry-After` before it runs out of memory
//! or files, and one client cannot take the room or the rate meant for everybody.
//!
//! A connection that has not sent a complete request head yet, or that waits idle between two
//! requests, is *waiting*: when the cap is reached, the oldest waiting connection is closed to
//! make room for a new one, so a crowd of silent or trickling connections cannot lock clients
//! out; a new connection is refused (503) only when every open one carries a request or a stream.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::task::AtomicWaker;
use rand::RngExt;
use tokio_util::sync::CancellationToken;

use super::http::ApiError;
use crate::metrics::Metrics;

/// File descriptors kept back from client connections when the cap is derived from the
/// open-file limit: the listener, Redis and feed connections, log files, and the short-lived
/// sockets accepted only to be answered 503 when the cap is reached.
pub const RESERVED_FILES: u64 = 1_000;
/// Default `--address-share`: one address (an IPv4 address, an IPv6 /64) may hold at most this
/// percentage of `--max-connections` and take this percentage of `--max-connect-rate`. A mobile
/// carrier's NAT address carries thousands of real users, far from 10 % of a gateway.
pub const DEFAULT_ADDRESS_SHARE: u8 = 10;

/// The limits, as configured.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open client connections of every kind.
    pub max_connections: u64,
    /// New streams per second.
    pub rate: u64,
    /// Percentage of both one address may take (100: no per-address limit).
    pub address_share: u8,
}

impl Limits {
    /// Open streams: the connection cap less a twentieth (at least one), so that a gateway
    /// full of streams still answers GET (clients fall back to polling).
    pub fn max_streams(&self) -> u64 {
        let headroom = (self.max_connections / 20).max(1);
        self.max_connections.saturating_sub(headroom).max(1)
    }

    /// Open connections one address may hold.
    pub fn per_address_connections(&self) -> u64 {
        (self.max_connections * u64::from(self.address_share)).div_ceil(100)
    }

    /// New streams per second one address may open (and its burst).
    pub fn per_address_rate(&self) -> f64 {
        (self.rate as f64 * f64::from(self.address_share) / 100.0).max(1.0)
    }
}

/// Why a connection or a stream is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every open connection carries a request or a stream.
    Full,
    /// This address holds its share of the open connections.
    AddressFull,
}

impl Refusal {
    pub fn error(self) -> ApiError {
        ApiError::Overloaded {
            reason: match self {
                Refusal::Full => "too many open connections",
                Refusal::AddressFull => "too many open connections from your address",
            },
            retry_after: retry_after(),
        }
    }
}

/// Spread the retries of a refused crowd over a few seconds.
fn retry_after() -> u64 {
    rand::rng().random_range(1..=5)
}

/// The address a client is counted under: an IPv4 address, or the /64 of an IPv6 one (what
/// one subscriber usually gets). IPv4-mapped IPv6 addresses count as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

/// The client address of a request (peer address, or the one a PROXY protocol header gave),
/// put in the request's extensions by the server; unspecified when the router is called
/// without it (tests calling the router directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))))
    }
}

/// One address's open connections and stream-rate bucket.
struct Address {
    open: u64,
    tokens: f64,
    last: Instant,
}

/// What admission knows of one connection.
pub struct Conn {
    evicted: AtomicBool,
    waker: AtomicWaker,
    /// Key in `waiting` while the connection waits (0: busy).
    waiting: AtomicU64,
    /// Responses that failed in a row (hyper connections).
    pub failures: AtomicU64,
}

impl Conn {
    /// Ready once the connection was chosen to make room: it must close.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.evicted.load(Relaxed) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.evicted.load(Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Relaxed)
    }

    pub async fn evicted(&self) {
        std::future::poll_fn(|cx| self.poll_evicted(cx)).await
    }
}

/// Connection, per-address and stream-rate limits of one gateway.
pub struct Admission {
    limits: Limits,
    max_streams: i64,
    per_address: u64,
    per_address_rate: f64,
    bucket: Mutex<(f64, Instant)>,
    addresses: DashMap<IpAddr, Address>,
    waiting: Mutex<BTreeMap<u64, Arc<Conn>>>,
    seq: AtomicU64,
    open: AtomicU64,
    /// Most connections open at once since the last [`Admission::take_peak`].
    peak: AtomicU64,
    metrics: Arc<Metrics>,
    /// Cancelled when the gateway starts draining: no new stream is admitted.
    draining: CancellationToken,
}

impl Admission {
    pub fn new(limits: Limits, metrics: Arc<Metrics>, draining: CancellationToken) -> Self {
        Admission {
            max_streams: limits.max_streams() as i64,
            per_address: limits.per_address_connections().max(1),
            per_address_rate: limits.per_address_rate(),
            bucket: Mutex::new((limits.rate as f64, Instant::now())),
            limits,
            addresses: DashMap::new(),
            waiting: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(1),
            open: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            metrics,
            draining,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Open client connections.
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// Most connections open at once since the last call.
    pub fn take_peak(&self) -> u64 {
        self.peak.swap(self.open(), Relaxed)
    }

    /// Take a just-accepted connection into account. At the cap, the oldest waiting connection
    /// is closed to make room; when none waits, the new one is refused.
    pub fn accept(self: &Arc<Self>) -> Result<Ticket, Refusal> {
        if self.open.load(Relaxed) >= self.limits.max_connections && !self.evict_oldest() {
            self.metrics.connections_refused.fetch_add(1, Relaxed);
            return Err(Refusal::Full);
        }
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(open, Relaxed);
        self.metrics.open_connections.fetch_add(1, Relaxed);
        Ok(Ticket {
            admission: self.clone(),
            conn: Arc::new(Conn {
                evicted: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                waiting: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
            address: None,
        })
    }

    /// Close the oldest waiting connection; false if none waits.
    pub fn evict_oldest(&self) -> bool {
        let oldest = self.waiting.lock().expect("admission poisoned").pop_first();
        let Some((_, conn)) = oldest else {
            return false;
        };
        conn.waiting.store(0, Relaxed);
        conn.evicted.store(true, Relaxed);
        conn.waker.wake();
        self.metrics.connections_evicted.fetch_add(1, Relaxed);
        true
    }

    /// Admit one more stream from `client`, or say when to come back. Call it only once the
    /// request is known to be valid: a refused or invalid request must not spend the budget.
    pub fn admit(&self, metrics: &Metrics, client: IpAddr) -> Result<(), ApiError> {
        let open = metrics.sse_connections.load(Relaxed) + metrics.ws_connections.load(Relaxed);
        let refuse = |reason: &'static str| {
            metrics.refused_connections.fetch_add(1, Relaxed);
            Err(ApiError::Overloaded {
                reason,
                retry_after: retry_after(),
            })
        };
        if self.draining.is_cancelled() {
            return refuse("shutting down");
        }
        if open >= self.max_streams {
            return refuse("too many open connections");
        }
        let now = Instant::now();
        if self.limits.address_share < 100 {
            let rate = self.per_address_rate;
            let mut entry = self
                .addresses
                .entry(address_key(client))
                .or_insert_with(|| Address {
                    open: 0,
                    tokens: rate,
                    last: now,
                });
            let tokens =
                (entry.tokens + now.duration_since(entry.last).as_secs_f64() * rate).min(rate);
            entry.last = now;
            if tokens < 1.0 {
                entry.tokens = tokens;
                return refuse("too many new connections per second from your address");
            }
            entry.tokens = tokens - 1.0;
        }
        let rate = self.limits.rate as f64;
        let mut bucket = self.bucket.lock().expect("admission poisoned");
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            return refuse("too many new connections per second");
        }
        *bucket = (tokens - 1.0, now);
        Ok(())
    }

    /// Forget addresses with no open connection whose bucket has refilled.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.addresses
            .retain(|_, a| a.open > 0 || now.duration_since(a.last) < Duration::from_secs(2));
    }
}

/// One accepted connection's place: released when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    pub conn: Arc<Conn>,
    address: Option<IpAddr>,
}

impl Ticket {
    /// Count the connection under its client's address, or refuse it if that address holds
    /// its share of the open connections.
    pub fn claim(&mut self, client: IpAddr) -> Result<(), Refusal> {
        let a = &self.admission;
        if a.limits.address_share >= 100 {
            return Ok(());
        }
        let key = address_key(client);
        let mut entry = a.addresses.entry(key).or_insert_with(|| Address {
            open: 0,
            tokens: a.per_address_rate,
            last: Instant::now(),
        });
        if entry.open >= a.per_address {
            a.metrics.connections_refused.fetch_add(1, Relaxed);
            return Err(Refusal::AddressFull);
        }
        entry.open += 1;
        self.address = Some(key);
        Ok(())
    }

    /// The connection waits for a request head: it may be closed to make room. A later call
    /// puts it at the back of the line.
    pub fn wait(&self) {
        let key = self.admission.seq.fetch_add(1, Relaxed);
        let mut waiting = self.admission.waiting.lock().expect("admission poisoned");
        if self.conn.evicted.load(Relaxed) {
            return;
        }
        let old = self.conn.waiting.swap(key, Relaxed);
        if old != 0 {
            waiting.remove(&old);
        }
        waiting.insert(key, self.conn.clone());
    }

    /// The connection carries a request or a stream: it is not closed to make room.
    pub fn busy(&self) {
        if self.conn.waiting.load(Relaxed) == 0 {
            return;
        }
        let mut waiting = self.admission.waiting.lock().expect("admission poisoned");
        let old = self.conn.waiting.swap(0, Relaxed);
        if old != 0 {
            waiting.remove(&old);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.busy();
        let a = &self.admission;
        a.open.fetch_sub(1, Relaxed);
        a.metrics.open_connections.fetch_sub(1, Relaxed);
        if let Some(key) = self.address
            && let Some(mut entry) = a.addresses.get_mut(&key)
        {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

static RELEASE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Set how freed memory is given back to the system, called after a crowd of connections has
/// left. The allocator may keep the heap of a crowd for later (glibc's does, in its arenas):
/// the binary, which chooses the allocator, sets this (`malloc_trim` for glibc).
pub fn set_release_memory(release: fn()) {
    let _ = RELEASE_MEMORY.set(release);
}

/// Give freed memory back to the system, if the binary said how.
pub fn release_memory() {
    if let Some(release) = RELEASE_MEMORY.get() {
        release();
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

    fn admission(max_connections: u64, rate: u64, address_share: u8) -> Arc<Admission> {
        Arc::new(Admission::new(
            Limits {
                max_connections,
                rate,
                address_share,
            },
            Arc::new(Metrics::default()),
            CancellationToken::new(),
        ))
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn open_streams_over_the_cap_are_refused() {
        let m = Metrics::default();
        let a = admission(3, 1000, 100);
        assert!(a.admit(&m, A).is_ok());
        m.sse_connections.store(1, Relaxed);
        m.ws_connections.store(1, Relaxed);
        assert!(matches!(a.admit(&m, A), Err(ApiError::Overloaded { .. })));
        assert_eq!(m.refused_connections.load(Relaxed), 1);
    }

    #[test]
    fn the_connect_rate_is_capped() {
        let m = Metrics::default();
        let a = admission(1_000_000, 10, 100);
        let admitted = (0..100).filter(|_| a.admit(&m, A).is_ok()).count();
        assert!((10..=12).contains(&admitted), "{admitted}");
    }

    #[test]
    fn one_address_gets_its_share_of_the_rate_and_leaves_the_rest() {
        let m = Metrics::default();
        let a = admission(1_000_000, 100, 10);
        let from_a = (0..100).filter(|_| a.admit(&m, A).is_ok()).count();
        assert!((10..=12).contains(&from_a), "{from_a}");
        let from_b = (0..10).filter(|_| a.admit(&m, B).is_ok()).count();
        assert_eq!(from_b, 10);
    }

    #[test]
    fn at_the_cap_the_oldest_waiting_connection_makes_room() {
        let a = admission(2, 10, 100);
        let first = a.accept().unwrap();
        let second = a.accept().unwrap();
        second.wait();
        first.wait();
        let third = a.accept().unwrap();
        assert!(second.conn.is_evicted() && !first.conn.is_evicted());
        first.busy();
        third.busy();
        drop(second);
        // Nothing waits: the next one is refused.
        assert_eq!(a.accept().err(), Some(Refusal::Full));
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_the_connections() {
        let a = admission(100, 10, 10);
        let mut held = Vec::new();
        for _ in 0..10 {
            let mut t = a.accept().unwrap();
            t.claim(A).unwrap();
            held.push(t);
        }
        let mut t = a.accept().unwrap();
        assert_eq!(t.claim(A), Err(Refusal::AddressFull));
        t.claim(B).unwrap();
        drop(held.pop());
        a.accept().unwrap().claim(A).unwrap();
        assert_eq!(
            address_key("2001:db8::1".parse().unwrap()),
            address_key("2001:db8::2:3".parse().unwrap())
        );
    }
}
