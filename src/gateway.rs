//! The gateway: the topic hub fed from the bus, and the SSE, WebSocket and JSON GET endpoints.

/// The `AsyncWrite` methods of a wrapper that changes only how a connection is read: every
/// write goes to its field `$io` as is (the front door's replay of a request head, the
/// WebSocket's inflating reader).
macro_rules! write_through {
    ($io:ident) => {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.$io).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.$io).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$io.is_write_vectored()
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.$io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.$io).poll_shutdown(cx)
        }
    };
}

pub mod admission;
pub mod command;
pub mod direct;
pub mod front;
pub mod http;
pub mod hub;
pub mod listener;
pub mod ordered;
pub mod sse;
pub mod status;
pub mod wire;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::handler::HandlerWithoutStateExt;
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;

use crate::bus::{Bus, BusEvent};
use crate::lock;
use crate::metrics::Metrics;
use hub::Hub;

/// Largest number of topics on one SSE request or one WebSocket: a page shows a city, its
/// state and the country, a dashboard a few dozen; 64 keeps a single connection cheap.
pub const DEFAULT_MAX_TOPICS: usize = 64;
/// Comment line sent on idle SSE streams (and WebSocket pings): proxies and load balancers
/// commonly drop connections idle for 30–60 s.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// New streams per second: a WebSocket handshake plus snapshots costs ~100 µs of CPU, so 5,000
/// a second is about half a core, and 200,000 clients reconnect in 40 s.
pub const DEFAULT_CONNECT_RATE: u64 = 5_000;
/// `Cache-Control` of every document GET: a CDN keeps a document 10 s, the poll cadence of the
/// feed, and may serve it stale for 30 s more while it revalidates.
pub const CACHE_CONTROL: &str = "public, max-age=10, stale-while-revalidate=30";
/// Snapshot bytes per second one WebSocket may pull by default: with the burst of ten seconds'
/// worth, 20 MiB at once, more than a page subscribing to the 64 topics it may hold, of 300 KB
/// each (the largest city documents), takes; a page changes topics at human speed after that.
pub const DEFAULT_WS_SNAPSHOT_RATE: u64 = 2 << 20;
/// Smallest `--ws-snapshot-rate` accepted: less would close pages that only open and switch
/// cities.
pub const MIN_WS_SNAPSHOT_RATE: u64 = 64 << 10;
/// Default `--ws-message-rate`: messages a second one WebSocket may send, on average.
pub const DEFAULT_WS_MESSAGE_RATE: u64 = 20;
/// Smallest `--send-buffer` accepted, one page: a smaller value is more likely a size meant in
/// KiB than a choice, and Linux raises tiny buffers to a minimum of its own anyway.
pub const MIN_SEND_BUFFER: u32 = 4096;

/// `--listen`: an `IP:PORT`, or a `HOST:PORT` resolved now (`localhost:8080`), to its first
/// IPv4 address if it has one, as a client resolving the name would most likely connect there.
pub fn listen_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let found: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(value)
        .map_err(|e| format!("{value}: not an IP:PORT or HOST:PORT that resolves ({e})"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("{value}: the host name has no address"))
}

/// Options of every command that serves clients.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on: `IP:PORT` or `HOST:PORT` (a host name is resolved at start-up, to
    /// its first IPv4 address if it has one).
    #[arg(long, env = "APURA_LISTEN", default_value = "127.0.0.1:8080", value_parser = listen_addr)]
    pub listen: SocketAddr,
    /// Folder of the web page served at `/`.
    #[arg(long, env = "APURA_WEB_DIR", default_value = "web-demo")]
    pub web_dir: PathBuf,
    /// Interval of SSE heartbeat comments and WebSocket pings (a connection sent a document
    /// since the last tick gets no comment, and a ping only every fourth tick).
    #[arg(long, env = "APURA_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// Most threads that write a change to the streams following one topic (SSE, and
    /// WebSockets following one topic): the thread that applies the change, and others beside
    /// it while each has at least 256 streams to write. 0: one per core.
    #[arg(long, env = "APURA_PUBLISH_THREADS", default_value_t = 0)]
    pub publish_threads: usize,
    /// Most topics on one SSE connection or WebSocket.
    #[arg(long, env = "APURA_MAX_TOPICS", default_value_t = DEFAULT_MAX_TOPICS)]
    pub max_topics: usize,
    /// Reconnection delay suggested to SSE clients (`retry:`).
    #[arg(long, env = "APURA_SSE_RETRY", default_value = "3s", value_parser = humantime::parse_duration)]
    pub sse_retry: Duration,
    /// Refuse `/events` and `/ws` with 503, leaving GET only (clients fall back to polling).
    #[arg(long, env = "APURA_DISABLE_STREAMS")]
    pub disable_streams: bool,
    /// Set SO_REUSEPORT so several gateway processes can share one listening port.
    #[arg(long, env = "APURA_REUSE_PORT")]
    pub reuse_port: bool,
    /// Most open client connections of every kind (streams, requests, connections that have
    /// not sent a request yet); 0: the open-file limit (raised to its hard limit at start-up)
    /// minus 1,000 kept for everything else. At the cap, the oldest connection waiting for a
    /// request (no complete head yet, or idle) is closed to make room; with none, 503. Streams
    /// get 503 past the cap less a twentieth, so that GET keeps answering.
    #[arg(long, env = "APURA_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: u64,
    /// Most new SSE + WebSocket connections per second before new ones get 503.
    #[arg(long, env = "APURA_MAX_CONNECT_RATE", default_value_t = DEFAULT_CONNECT_RATE)]
    pub max_connect_rate: u64,
    /// Percentage of `--max-connections` one client address (IPv4 address, IPv6 /64) may hold
    /// and of `--max-connect-rate` it may take; past it, 503. 100: no per-address limit (the
    /// setting behind a proxy that pools connections and sends no PROXY header).
    #[arg(long, env = "APURA_ADDRESS_SHARE", default_value_t = admission::DEFAULT_ADDRESS_SHARE)]
    pub address_share: u8,
    /// Every connection starts with a PROXY protocol header (v1 or v2, as sent by HAProxy or
    /// a cloud TCP load balancer) naming the client, whose address then counts for
    /// `--address-share`; a connection without one is closed. Only for a gateway reachable
    /// through such a proxy alone.
    #[arg(long, env = "APURA_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,
    /// Time a connection has to send a whole request head: from its accept for the first
    /// request, from its first byte for a later one. Past it, the connection is closed.
    #[arg(long, env = "APURA_HEAD_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub head_timeout: Duration,
    /// Time a kept-alive connection may wait idle for its next request; longer than a load
    /// balancer's own idle timeout (60 s is common), so that it is the balancer that closes.
    #[arg(long, env = "APURA_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// On shutdown (SIGTERM, SIGINT), `/readyz` answers 503 at once and new streams are
    /// refused; open streams close at random moments over this period, so that their clients
    /// do not all reconnect to the neighbour gateways at once; then the process exits.
    #[arg(long, env = "APURA_DRAIN", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// A connection whose writes make no progress for this long (a client that stopped
    /// reading) is dropped.
    #[arg(long, env = "APURA_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// SO_SNDBUF of the listening socket, inherited by every connection, in bytes: bounds the
    /// kernel memory a client that stops reading holds (Linux doubles the value). 0: the
    /// kernel's default, grown as needed up to `net.ipv4.tcp_wmem`'s maximum.
    #[arg(long, env = "APURA_SEND_BUFFER", default_value_t = 0)]
    pub send_buffer: u32,
    /// Snapshot bytes per second one WebSocket may pull, on average, with bursts of ten
    /// seconds' worth (a page opening); the snapshot that finds the budget spent closes the
    /// socket with 1008. Updates are not counted, and subscribing again to a topic whose
    /// version the client was already sent sends nothing.
    #[arg(long, env = "APURA_WS_SNAPSHOT_RATE", default_value_t = DEFAULT_WS_SNAPSHOT_RATE)]
    pub ws_snapshot_rate: u64,
    /// Messages per second one WebSocket may send (text, binary, ping, pong), on average, with
    /// bursts of ten seconds' worth; the message that finds the budget spent closes the socket
    /// with 1008. A page subscribes once and then changes topics at a reader's pace.
    #[arg(long, env = "APURA_WS_MESSAGE_RATE", default_value_t = DEFAULT_WS_MESSAGE_RATE)]
    pub ws_message_rate: u64,
    /// Address (`IP:PORT` or `HOST:PORT`) of a listener of its own for `/metrics` and `/status`,
    /// which then leave the public port (they answer 404 there). Unset: both are served on
    /// `--listen`.
    #[arg(long, env = "APURA_ADMIN_LISTEN", value_parser = listen_addr)]
    pub admin_listen: Option<SocketAddr>,
}

impl GatewayArgs {
    /// `--publish-threads`, 0 read as the cores this process may use.
    pub fn publishers(&self) -> usize {
        match self.publish_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Every problem with the options, reported at once.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_topics == 0 {
            problems.push("--max-topics must be at least 1".to_string());
        }
        if self.max_connect_rate == 0 {
            problems.push("--max-connect-rate must be at least 1".to_string());
        }
        if self.head_timeout.is_zero() {
            problems.push("--head-timeout must be more than 0".to_string());
        }
        if self.idle_timeout.is_zero() {
            problems.push("--idle-timeout must be more than 0".to_string());
        }
        if !(1..=100).contains(&self.address_share) {
            problems.push("--address-share must be a percentage from 1 to 100".to_string());
        }
        if self.write_timeout.is_zero() {
            problems.push("--write-timeout must be more than 0".to_string());
        }
        if self.heartbeat < Duration::from_millis(100) {
            problems.push("--heartbeat must be at least 100ms".to_string());
        }
        if self.send_buffer != 0 && self.send_buffer < MIN_SEND_BUFFER {
            problems.push(format!(
                "--send-buffer must be 0 (the kernel's default) or at least {MIN_SEND_BUFFER}"
            ));
        }
        if self.ws_message_rate == 0 {
            problems.push("--ws-message-rate must be at least 1 (messages per second)".to_string());
        }
        if self.ws_snapshot_rate < MIN_WS_SNAPSHOT_RATE {
            problems.push(format!(
                "--ws-snapshot-rate must be at least {MIN_WS_SNAPSHOT_RATE} (bytes per second)"
            ));
        }
        if !self.web_dir.is_dir() {
            tracing::warn!(dir = %self.web_dir.display(), "web folder not found; / will answer 404");
        }
        problems
    }

    /// Bind the listening socket, with SO_REUSEPORT and SO_SNDBUF when asked.
    pub fn bind(&self) -> anyhow::Result<TcpListener> {
        let socket = match self.listen {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        if self.reuse_port {
            socket.set_reuseport(true)?;
        }
        if self.send_buffer != 0 {
            socket.set_send_buffer_size(self.send_buffer)?;
        }
        socket
            .bind(self.listen)
            .with_context(|| format!("binding {}", self.listen))?;
        // A large backlog absorbs reconnect storms after a neighbour gateway restarts.
        Ok(socket.listen(4096)?)
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub max_topics: usize,
    pub sse_retry: Duration,
    pub disable_streams: bool,
    /// The heartbeat's ticks: a few shared timers, not one per connection (see [`Heartbeat`]).
    pub heartbeat: Heartbeat,
    pub shutdown: CancellationToken,
    pub admission: Arc<admission::Admission>,
    pub drain: Duration,
    /// `--ws-snapshot-rate`.
    pub ws_snapshot_rate: u64,
    /// `--ws-message-rate`.
    pub ws_message_rate: u64,
    /// The last `/status` report, shared by the requests of one second.
    pub reports: Arc<status::Reports>,
}

impl AppState {
    /// Resolves when one connection should close: after shutdown, at a random moment of the
    /// drain period.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (shutdown, drain) = (self.shutdown.clone(), self.drain);
        async move {
            shutdown.cancelled().await;
            let share = rand::random::<f64>();
            tokio::time::sleep(drain.mul_f64(share)).await;
        }
    }
}

/// The routes of the operators: `/metrics` and `/status` (HTML, or JSON when asked for), and
/// `/status.json`. On the public port unless `--admin-listen` gives them a listener of their own.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(http::metrics))
        .route("/status", get(status::page))
        .route("/status.json", get(status::json))
}

/// The operators' listener of `--admin-listen`: [`admin_routes`] and `/healthz`.
pub fn admin_router(state: AppState) -> Router {
    admin_routes()
        .route("/healthz", get(http::healthz))
        .fallback(http::nothing_here)
        .with_state(state)
}

/// The HTTP routes, without a socket (tests can call it directly); with `admin`, the
/// operators' routes ([`admin_routes`]) among them.
pub fn router(state: AppState, web_dir: PathBuf, admin: bool) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([axum::http::Method::GET])
        .allow_headers(Any)
        .expose_headers([axum::http::header::ETAG]);
    let operators = if admin { admin_routes() } else { Router::new() };
    Router::new()
        .route("/cities.json", get(http::cities_index))
        .route("/brazil.json", get(http::brazil))
        .route("/cities/{file}", get(http::city))
        .route("/states/{file}", get(http::state))
        .route("/events", get(sse::events))
        .route("/ws", get(ws::upgrade))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .merge(operators)
        .method_not_allowed_fallback(http::nothing_here)
        .fallback_service(
            ServeDir::new(web_dir)
                .call_fallback_on_method_not_allowed(true)
                .fallback(http::nothing_here.into_service()),
        )
        .layer(axum::middleware::from_fn(no_leading_double_slash))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            one_host,
        ))
        .layer(cors)
        .with_state(state)
}

/// An HTTP/1.1 request without exactly one `Host` line is answered 400, as RFC 9112 §3.2 asks
/// of a server: browsers, proxies and CDNs always send one. HTTP/1.0 may go without.
async fn one_host(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let hosts = req
        .headers()
        .get_all(axum::http::header::HOST)
        .iter()
        .count();
    if req.version() == axum::http::Version::HTTP_11 && hosts != 1 {
        state.metrics.client_errors.fetch_add(1, Relaxed);
        let message = "an HTTP/1.1 request needs exactly one `Host` header".to_string();
        return http::ApiError::BadRequest(message).into_response();
    }
    next.run(req).await
}

/// A path that starts with `//` is not found: the page's files would answer a folder's name
/// with a redirect to it plus `/`, and `Location: //name/` sends a browser to the host `name`.
async fn no_leading_double_slash(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.uri().path().starts_with("//") {
        return http::nothing_here(req.method().clone(), req.uri().clone()).await;
    }
    next.run(req).await
}

/// First pause before trying the bus again (subscribing, or loading the snapshots); doubled
/// after every failure.
const RETRY_START: Duration = Duration::from_millis(100);
/// Longest pause between tries: a bus that is back is picked up within 2 s, and a try every
/// 2 s from each gateway is no load on a Redis that is coming back.
const RETRY_CAP: Duration = Duration::from_secs(2);

/// Tell the ingest, through the bus, which topics this gateway's clients follow, every
/// [`AUDIENCE_EVERY`](crate::bus::AUDIENCE_EVERY): the TSE source fetches the most-followed
/// cities first. One pass over the topics every 5 s; a failed report is retried at the next.
async fn report_audience(bus: Arc<dyn Bus>, hub: Arc<Hub>, stop: CancellationToken) {
    let mut every = tokio::time::interval(crate::bus::AUDIENCE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if !hub.is_ready() {
            continue;
        }
        let top = hub.audience(crate::bus::AUDIENCE_TOP).top;
        if let Err(e) = bus.report_audience(&top).await {
            tracing::debug!(
                error = format!("{e:#}"),
                "audience report failed; next one in 5 s"
            );
        }
    }
}

/// Most cycles applied together. A large change comes as dozens of cycles of at most 256 KiB
/// (see `crate::ingest::core::CYCLE_BYTES`); those that arrived while the last pass was being
/// written are applied at once.
const CYCLES_AT_ONCE: usize = 64;

/// Keep the hub in step with the bus until `shutdown`: subscribe first, then load every
/// snapshot, then report ready; on a resync (lag, or a bus reconnect) load the snapshots again.
///
/// A bus that cannot be reached does not stop it: subscribing, and loading the snapshots, are
/// tried again with backoff (up to [`RETRY_CAP`] apart) until they work, while the gateway
/// serves what it holds; before the first load that is nothing, and `/readyz`, documents and
/// streams answer 503. A failure is logged when it starts and when it ends, not at every try.
pub async fn follow(
    bus: Arc<dyn Bus>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Stops when this function returns, however it returns.
    let reporting = shutdown.child_token();
    let _stop_reporting = reporting.clone().drop_guard();
    tokio::spawn(report_audience(bus.clone(), hub.clone(), reporting));
    let mut retry = Retry::default();
    let events = loop {
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            s = bus.subscribe() => s,
        };
        match subscribed {
            Ok(events) => break events,
            Err(e) => {
                hub.metrics.bus_reachable(false);
                let pause = retry.failed("subscribing", &e);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    };
    retry.succeeded();
    hub.metrics.bus_reachable(true);
    // Every event waiting when one arrives, taken at once: the cycles among them are applied
    // together and their changes written in one pass (see [`Hub::apply_cycles`]).
    let mut events = events.ready_chunks(CYCLES_AT_ONCE);
    // When the snapshots are to be loaded: now, after every resync, and again after a failed
    // load, until one succeeds.
    let mut reload = Some(tokio::time::Instant::now());
    // Whether a load ever succeeded: until then a cycle alone does not make the hub ready.
    let mut loaded = false;
    loop {
        let due = reload.unwrap_or_else(tokio::time::Instant::now);
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(due), if reload.is_some() => {
                let started = std::time::Instant::now();
                let loading = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    l = load_snapshot(&*bus, &hub) => l,
                };
                hub.metrics.bus_call("snapshot", started.elapsed(), loading.is_ok());
                match loading {
                    Ok(()) => {
                        loaded = true;
                        reload = None;
                        retry.succeeded();
                    }
                    Err(e) => {
                        hub.metrics.snapshot_load_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let pause = retry.failed("loading snapshots", &e);
                        reload = Some(tokio::time::Instant::now() + pause);
                    }
                }
                continue;
            }
            e = events.next() => e,
        };
        let Some(events) = event else {
            anyhow::bail!("the bus subscription ended");
        };
        let mut cycles = Vec::with_capacity(events.len());
        for event in events {
            match event {
                BusEvent::Cycle(cycle) => cycles.push(cycle),
                // Cycles were missed: load the snapshots now (also when a retry was waiting:
                // a resync after a reconnect means the bus is back).
                BusEvent::Resync => reload = Some(tokio::time::Instant::now()),
            }
        }
        if !cycles.is_empty() {
            // Arrived: held here, ready to be applied. Applying them writes the streams the
            // publisher serves, which is the fan-out's share, not the bus's.
            for cycle in &cycles {
                hub.metrics.cycle_arrived(cycle.published_at);
            }
            hub.apply_cycles(&cycles);
            if loaded && !hub.is_ready() && !hub.is_empty() {
                hub.set_ready();
            }
        }
    }
}

/// [`follow`] on a thread of its own, with a single-threaded runtime; the answer is
/// [`follow`]'s when it ends. The connections' tasks run on the main runtime, and a cycle wakes
/// thousands of them at once: on a shared runtime the task applying the next cycle waits in the
/// same queue behind every connection the last one woke, so a change sent as many cycles
/// (see `crate::ingest::core::CYCLE_BYTES`) reached the hub one fan-out at a time. On its own
/// thread the bus is read and each cycle applied as it arrives, and the kernel's scheduler
/// shares the cores between it and the connections (BENCHMARKS.md, "A large change in cycles
/// of 256 KiB").
pub fn follow_apart(
    bus: Arc<dyn Bus>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = std::thread::Builder::new()
        .name("apura-bus".into())
        .spawn(move || {
            let followed = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(follow(bus, hub, shutdown)),
                Err(e) => Err(anyhow::Error::new(e).context("starting the bus thread's runtime")),
            };
            let _ = tx.send(followed);
        });
    async move {
        started.context("starting the bus thread")?;
        rx.await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the bus follower panicked")))
    }
}

/// Backoff between tries of the bus, and their log: one line when a failure starts, one when
/// it ends, each try in between at debug level.
#[derive(Default)]
struct Retry {
    failures: u32,
    since: Option<std::time::Instant>,
    pause: Duration,
}

impl Retry {
    /// Note a failure; answers how long to wait before the next try.
    fn failed(&mut self, what: &str, e: &anyhow::Error) -> Duration {
        if self.failures == 0 {
            tracing::warn!(
                error = format!("{e:#}"),
                "bus unavailable ({what}); retrying every {RETRY_CAP:?} at most, serving what is \
                 held meanwhile (503 until documents are loaded)"
            );
            self.since = Some(std::time::Instant::now());
            self.pause = RETRY_START;
        } else {
            tracing::debug!(error = format!("{e:#}"), "bus still unavailable ({what})");
        }
        self.failures += 1;
        // Equal jitter: gateways that lost the same bus do not all come back at once.
        let ms = self.pause.as_millis() as u64;
        self.pause = (self.pause * 2).min(RETRY_CAP);
        Duration::from_millis(rand::random_range(ms / 2..=ms))
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            let down = self.since.map(|t| t.elapsed()).unwrap_or_default();
            tracing::info!(
                tries = self.failures,
                down = format!("{down:.1?}"),
                "bus reachable again"
            );
        }
        *self = Retry::default();
    }
}

async fn load_snapshot(bus: &dyn Bus, hub: &Hub) -> anyhow::Result<()> {
    let docs = bus.snapshot().await.context("loading snapshots")?;
    let newest = docs.iter().map(|d| d.version).max().unwrap_or(0);
    let newer = hub.apply_cycle(&docs, newest);
    tracing::info!(documents = docs.len(), newer, "snapshots loaded");
    if !hub.is_empty() {
        hub.set_ready();
    }
    Ok(())
}

/// Groups of connections whose heartbeats fall at the same moment, spread evenly over the
/// interval. With one group, every connection of a gateway woke and wrote at the same instant
/// every 15 s, and the change that came next waited for all of them: in the 50,000-subscriber
/// runs, every third cycle (5 s apart) had a fan-out p99 300–600 ms above the others
/// (BENCHMARKS.md, "Heartbeats spread over the interval").
pub const HEARTBEAT_SLOTS: usize = 32;

/// The heartbeat's shared timers: [`HEARTBEAT_SLOTS`] ticks per interval, each for its own
/// group of connections, a connection joining the groups in turn.
///
/// A stream the publisher writes (see [`direct`]) is not woken by the tick: the timer's task
/// sweeps the group's sinks itself ([`direct::Sink::beat`]), writes the SSE comments that are
/// due, and wakes a stream's task only for what the task must do (a WebSocket ping, a comment
/// the socket would not take). A wake on every tick cost as much as a third of the deliveries:
/// with 19,000 subscribers, a change every 5 s and a tick every 15 s, 1,267 wakes a second
/// against 3,734 deliveries, and the gateway spent 12.5 µs per delivery with them against 11.0
/// without (BENCHMARKS.md, "Heartbeats without waking the streams").
#[derive(Clone)]
pub struct Heartbeat {
    slots: Arc<[watch::Receiver<u64>]>,
    /// Per group, the streams the timer's task beats itself.
    sinks: Arc<[Mutex<Vec<Weak<direct::Sink>>>]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl Heartbeat {
    /// Start the timers; they stop at `shutdown`, and every receiver then sees its channel
    /// closed.
    pub fn start(every: Duration, shutdown: CancellationToken) -> Heartbeat {
        let (senders, slots): (Vec<_>, Vec<_>) =
            (0..HEARTBEAT_SLOTS).map(|_| watch::channel(0u64)).unzip();
        let sinks: Arc<[Mutex<Vec<Weak<direct::Sink>>>]> =
            (0..HEARTBEAT_SLOTS).map(|_| Mutex::default()).collect();
        let swept = sinks.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every / HEARTBEAT_SLOTS as u32);
            // A starved runtime delays the next ticks instead of firing the late ones at once.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is at once
            for (slot, group) in senders.iter().zip(swept.iter()).cycle() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {
                        slot.send_modify(|n| *n += 1);
                        sweep(group);
                    }
                }
            }
        });
        Heartbeat {
            slots: slots.into(),
            sinks,
            next: Arc::default(),
        }
    }

    fn group(&self) -> usize {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % HEARTBEAT_SLOTS
    }

    /// The ticks for a new connection: once every interval, in the next group in turn. With
    /// `sink`, the group's sweep also beats that sink until it closes, so that a connection's
    /// own ticks and its sweep fall at the same moment.
    pub fn join(&self, sink: Option<&Arc<direct::Sink>>) -> watch::Receiver<u64> {
        let group = self.group();
        if let Some(sink) = sink {
            lock(&self.sinks[group]).push(Arc::downgrade(sink));
        }
        let mut rx = self.slots[group].clone();
        rx.borrow_and_update();
        rx
    }

    /// Beat `sink` from the timer's task, in the next group in turn, until it closes: a
    /// stream that needs no ticks of its own.
    pub fn enlist(&self, sink: &Arc<direct::Sink>) {
        self.join(Some(sink));
    }
}

/// Beat every live sink of a group, and drop the closed ones. The group is taken out of its
/// lock while it is written, so that a connection joining it meanwhile never waits on a write.
fn sweep(group: &Mutex<Vec<Weak<direct::Sink>>>) {
    let mut sinks = std::mem::take(&mut *lock(group));
    sinks.retain(|s| s.upgrade().is_some_and(|sink| sink.beat()));
    lock(group).append(&mut sinks);
}

/// Serve clients on `listener` from `hub` until `shutdown`; then drain: `/readyz` answers 503,
/// new streams are refused, open ones close over `--drain` while GET is still served; then stop
/// accepting, finish the responses under way and return.
pub async fn serve(
    args: &GatewayArgs,
    hub: Arc<Hub>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let admin_listener = match args.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --admin-listen {addr}"))?,
        ),
        None => None,
    };
    let file_limit = admission::raise_file_limit();
    let max_connections = match args.max_connections {
        0 => file_limit.saturating_sub(admission::RESERVED_FILES).max(1),
        n => n,
    };
    let limits = admission::Limits {
        max_connections,
        rate: args.max_connect_rate,
        address_share: args.address_share,
    };
    tracing::info!(
        max_connections,
        max_streams = limits.max_streams(),
        rate = args.max_connect_rate,
        per_address_connections = limits.per_address_connections(),
        per_address_rate = limits.per_address_rate(),
        file_limit,
        "admission limits"
    );
    let admission = Arc::new(admission::Admission::new(
        limits,
        hub.metrics.clone(),
        shutdown.clone(),
    ));
    let state = AppState {
        admission: admission.clone(),
        drain: args.drain,
        ws_snapshot_rate: args.ws_snapshot_rate,
        ws_message_rate: args.ws_message_rate,
        reports: Arc::default(),
        metrics: hub.metrics.clone(),
        hub,
        max_topics: args.max_topics,
        sse_retry: args.sse_retry,
        disable_streams: args.disable_streams,
        heartbeat: Heartbeat::start(args.heartbeat, shutdown.clone()),
        shutdown: shutdown.clone(),
    };
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let listener =
        listener::TimeoutListener::new(listener, args.write_timeout, state.metrics.clone());
    // Accepting stops once the drain is over.
    let stop = CancellationToken::new();
    tokio::spawn(housekeeping(admission, stop.clone()));
    let tasks = TaskTracker::new();
    let door = front::Door {
        head_timeout: args.head_timeout,
        idle_timeout: args.idle_timeout,
        proxy_protocol: args.proxy_protocol,
    };
    let app = router(
        state.clone(),
        args.web_dir.clone(),
        args.admin_listen.is_none(),
    );
    let admin = match admin_listener {
        Some(listener) => {
            tracing::info!(addr = %listener.local_addr()?, "metrics and status listening");
            let app = admin_router(state.clone());
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    let front = tokio::spawn(front::run(
        listener,
        state,
        app,
        door,
        tasks.clone(),
        stop.clone(),
    ));
    shutdown.cancelled().await;
    tracing::info!(drain = ?args.drain, "draining: /readyz answers 503, streams close over the drain");
    tokio::time::sleep(args.drain).await;
    stop.cancel();
    front.await.context("the accept loop panicked")?;
    if let Some(admin) = admin {
        admin
            .await
            .context("the admin listener panicked")?
            .context("serving --admin-listen")?;
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Every few seconds: forget the client addresses with no connection left, and once a crowd
/// of connections has left, give the memory it used back to the system.
async fn housekeeping(admission: Arc<admission::Admission>, stop: CancellationToken) {
    /// Connections gone since the peak before memory is released: a kept-alive connection
    /// holds ~30 KiB of hyper buffers, so 256 of them ~8 MiB.
    const RELEASE_AFTER: u64 = 256;
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    let mut peak = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        admission.sweep();
        let open = admission.open();
        peak = admission.take_peak().max(peak);
        if peak >= open + RELEASE_AFTER && open <= peak / 2 {
            admission::release_memory();
            tracing::debug!(peak, open, "memory released after connections left");
            peak = open;
        }
    }
}
