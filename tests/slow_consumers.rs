//! Slow consumers: ten thousand clients that subscribe and then never read, on a gateway that
//! runs as its own process (`apura gateway --redis`, fed by a private redis-server), as in
//! production. The gateway's memory stays bounded (no queue per client), their lag shows in
//! `apura_blocked_writes`, a reading client's delivery latency stays near its baseline, and with
//! a short `--write-timeout` the stuck clients are dropped and counted. This process holds only
//! the client ends, the gateway only the server ends: one file per client in each, well within
//! the open-file limit of either.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apura::bus::Bus;
use apura::bus::redis::RedisBus;
use apura::documents::Draft;
use bytes::Bytes;
use common::process::{free_addr, metric, rss_bytes, scrape};
use common::redis::{GatewayProcess, RedisServer, publisher};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Document size: a large city document (São Paulo's councillors are ~300 KB).
const DOC: usize = 50 << 10;
/// Clients that stop reading: half SSE, half WebSocket.
const STUCK: usize = 10_000;
/// Files kept for the test harness, the reading client, the Redis connections, the runtime.
const SPARE_FILES: u64 = 1_000;
/// Stuck clients per source address (127.0.0.2, 127.0.0.3, …): each address has its own
/// ephemeral ports (28,232 by default), so none runs short; and each stays within its share of
/// the gateway's connections (`--address-share`, 10 % of ~19,000 by default).
const PER_SOURCE: usize = 1_250;
/// The gateway's `--send-buffer`, inherited by every accepted socket: it bounds what the kernel
/// holds for a client that does not read (Linux doubles it: 32 KiB), so ten thousand stuck
/// clients stay far from the machine's TCP memory limit (`net.ipv4.tcp_mem`), which other
/// processes share.
const SEND_BUFFER: &str = "16384";
/// The test's hold on the leader lock, to publish as the ingest would.
const LEADER_TTL: Duration = Duration::from_secs(600);

/// Raise the soft open-file limit to the hard one, which must hold every client end.
fn raise_file_limit() {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= STUCK as u64 + SPARE_FILES,
        "open-file limit {limit}: too low for {STUCK} stuck clients"
    );
}

/// A client that sends its request (SSE) or handshake and subscribe (WebSocket) in one write,
/// then never reads. A 4 KiB receive buffer keeps the kernel's share small.
async fn stuck_client(addr: SocketAddr, source: Ipv4Addr, ws: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind((source, 0).into())
        .unwrap_or_else(|e| panic!("binding a client to {source}: {e}"));
    let mut stream = socket.connect(addr).await.unwrap();
    let mut request = if ws {
        b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec()
    } else {
        b"GET /events?topics=big HTTP/1.1\r\nHost: test\r\n\r\n".to_vec()
    };
    if ws {
        // A masked text frame (mask 0: the payload goes as is).
        let payload = br#"{"type":"subscribe","topics":["big"]}"#;
        request.extend_from_slice(&[0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
        request.extend_from_slice(payload);
    }
    stream.write_all(&request).await.unwrap();
    stream
}

/// `n` stuck clients, every other one a WebSocket, [`PER_SOURCE`] per source address.
async fn connect_stuck(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(200) {
        let conns = futures_util::future::join_all(batch.iter().map(|i| {
            let source = Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8);
            stuck_client(addr, source, i % 2 == 1)
        }))
        .await;
        clients.extend(conns);
    }
    clients
}

/// A gateway process on `server` with a small send buffer and the given write timeout, ready
/// (the `big` document loaded).
async fn gateway(
    server: &RedisServer,
    dir: &Path,
    name: &str,
    write_timeout: &str,
) -> GatewayProcess {
    let gw = GatewayProcess::spawn(
        server,
        dir,
        name,
        free_addr(),
        &[
            "--send-buffer",
            SEND_BUFFER,
            "--write-timeout",
            write_timeout,
            "--max-connect-rate",
            "100000",
        ],
    );
    wait_ready(gw.addr).await;
    gw
}

/// The gateway's `/metrics` at one moment.
struct GatewayMetrics(String);

impl GatewayMetrics {
    async fn of(http: &reqwest::Client, gw: &GatewayProcess) -> GatewayMetrics {
        GatewayMetrics(scrape(http, gw.addr).await.expect("/metrics answers"))
    }

    fn get(&self, name: &str) -> u64 {
        metric(&self.0, name).unwrap_or_else(|| panic!("no {name} in /metrics")) as u64
    }

    fn open_streams(&self) -> u64 {
        self.get("apura_sse_connections") + self.get("apura_ws_connections")
    }

    fn streams_accepted(&self) -> u64 {
        self.get("apura_sse_connections_opened_total")
            + self.get("apura_ws_connections_opened_total")
    }
}

fn draft(n: u64) -> Draft {
    let pad = "x".repeat(DOC);
    Draft {
        topic: "big".into(),
        body: Bytes::from(format!(r#"{{"topic":"big","n":{n},"pad":"{pad}"}}"#)),
    }
}

/// Publish `count` versions of `big`, `every` apart, while a reading SSE client takes them;
/// return the client's delivery latencies (publish call to event parsed), sorted.
async fn measure(
    gw: &GatewayProcess,
    bus: &RedisBus,
    count: usize,
    every: Duration,
) -> Vec<Duration> {
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut sse = Sse::connect(&gw.url("/events?topics=big"), None).await;
    assert_eq!(
        sse.next(Duration::from_secs(10)).await.unwrap().event,
        "snapshot"
    );
    let s = sent.clone();
    let reader = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while let Some(ev) = sse.next(Duration::from_secs(3)).await {
            let at = Instant::now();
            if let Some(t) = ev.id.and_then(|v| s.lock().unwrap().get(&v).copied()) {
                latencies.push(at - t);
            }
        }
        latencies
    });
    for i in 0..count {
        let started = Instant::now();
        // The version is known only after publication: record the time against it at once.
        let t = Instant::now();
        let cycle = bus.publish(vec![draft(i as u64)]).await.unwrap();
        sent.lock().unwrap().insert(cycle.version, t);
        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
    }
    let mut latencies = reader.await.unwrap();
    latencies.sort();
    assert!(
        latencies.len() >= count / 4,
        "the reading client got {} of {count} versions",
        latencies.len()
    );
    latencies
}

/// Wait up to `secs` for `f`, saying what was awaited and the last value seen if it fails.
async fn wait_for(what: &str, secs: u64, mut f: impl AsyncFnMut() -> (bool, String)) {
    let started = Instant::now();
    loop {
        let (done, seen) = f().await;
        if done {
            eprintln!("{what}: {seen} after {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s (last seen {seen})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until nine in ten of `n` stuck clients show in `apura_blocked_writes`.
async fn nine_in_ten_blocked(http: &reqwest::Client, gw: &GatewayProcess, n: usize) {
    wait_for("blocked writes", 120, async || {
        let blocked = GatewayMetrics::of(http, gw)
            .await
            .get("apura_blocked_writes");
        (blocked >= n as u64 * 9 / 10, blocked.to_string())
    })
    .await;
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_clients_cost_bounded_memory_do_not_slow_others_and_are_dropped() {
    raise_file_limit();
    let n = STUCK;
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start().await;
    let bus = publisher(&server, LEADER_TTL).await;
    bus.publish(vec![draft(0)]).await.unwrap();
    let http = reqwest::Client::new();
    let gw = gateway(&server, dir.path(), "gateway", "120s").await;
    let pid = gw.process.pid();

    // Baseline: one reading client, nobody stuck.
    let every = Duration::from_millis(20);
    let base = measure(&gw, &bus, 50, every).await;

    // n clients subscribe and never read. Each blocks on its first writes.
    let rss_before = rss_bytes(pid);
    let accepted_before = GatewayMetrics::of(&http, &gw).await.streams_accepted();
    let started = Instant::now();
    let stuck = connect_stuck(gw.addr, n).await;
    eprintln!("{} connected in {:?}", stuck.len(), started.elapsed());
    wait_for("streams open", 120, async || {
        let m = GatewayMetrics::of(&http, &gw).await;
        (
            m.streams_accepted() - accepted_before >= n as u64,
            format!(
                "{} SSE + {} WebSocket",
                m.get("apura_sse_connections"),
                m.get("apura_ws_connections")
            ),
        )
    })
    .await;
    let m = GatewayMetrics::of(&http, &gw).await;
    assert_eq!(m.streams_accepted() - accepted_before, n as u64);
    assert!(m.open_streams() >= n as u64, "{} open", m.open_streams());
    assert_eq!(m.get("apura_refused_connections_total"), 0);
    for i in 0..20 {
        bus.publish(vec![draft(1000 + i)]).await.unwrap();
    }
    nine_in_ten_blocked(&http, &gw, n).await;
    let rss_blocked = rss_bytes(pid);

    // 200 more versions of 50 KB: ~10 MB each client has not read, ~100 GB in all if queued.
    let loaded = measure(&gw, &bus, 200, every).await;
    let rss_after = rss_bytes(pid);
    let blocked = GatewayMetrics::of(&http, &gw)
        .await
        .get("apura_blocked_writes");

    eprintln!(
        "{n} stuck clients ({blocked} blocked); latency p50/p95 baseline {:?}/{:?}, loaded {:?}/{:?}; \
         gateway RSS before {} MiB, blocked {} MiB, after 200 versions {} MiB",
        pct(&base, 50),
        pct(&base, 95),
        pct(&loaded, 50),
        pct(&loaded, 95),
        rss_before >> 20,
        rss_blocked >> 20,
        rss_after >> 20
    );
    assert!(
        blocked >= n as u64 * 9 / 10,
        "{blocked} blocked writes for {n} stuck clients"
    );
    // Memory: no queue per client. Each stuck client holds at most one frame in its
    // connection's write buffer (tungstenite copies a WebSocket frame; hyper queues the shared
    // SSE bytes), plus its read buffer and task (~48 KiB counted generously); every version a
    // client is stuck on stays alive (≤ 221 versions × 3 encodings). For 10,000 clients that is
    // about 1 GiB. Growth from 200 more versions must be no more than slack: nothing grows
    // with the versions.
    let per_client = (DOC + (48 << 10)) as u64;
    let bound = n as u64 * per_client + 221 * 3 * DOC as u64 + (64 << 20);
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < bound,
        "RSS grew {} MiB, bound {} MiB",
        growth >> 20,
        bound >> 20
    );
    let from_versions = rss_after.saturating_sub(rss_blocked);
    assert!(
        from_versions < 64 << 20,
        "200 versions grew RSS by {} MiB: something queues",
        from_versions >> 20
    );
    // Latency of the reading client: generous, no tight timing on a shared machine.
    let limit = pct(&base, 50) * 5 + Duration::from_millis(50);
    assert!(
        pct(&loaded, 50) < limit,
        "p50 {:?} with stuck clients, baseline {:?}",
        pct(&loaded, 50),
        pct(&base, 50)
    );
    drop(stuck);
    drop(gw);

    // A gateway with a 1 s write timeout drops the stuck clients and counts them.
    let gw = gateway(&server, dir.path(), "gateway-timeout", "1s").await;
    let stuck = connect_stuck(gw.addr, n).await;
    wait_for("streams accepted", 60, async || {
        let accepted = GatewayMetrics::of(&http, &gw).await.streams_accepted();
        (accepted >= n as u64, accepted.to_string())
    })
    .await;
    let started = Instant::now();
    for i in 0..5 {
        bus.publish(vec![draft(1 + i)]).await.unwrap();
    }
    let debug = std::env::var("STUCK_DEBUG").is_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = GatewayMetrics::of(&http, &gw).await;
        if debug {
            eprintln!(
                "{:?}: {} SSE {} WS open, {} blocked, {} timeouts",
                started.elapsed(),
                m.get("apura_sse_connections"),
                m.get("apura_ws_connections"),
                m.get("apura_blocked_writes"),
                m.get("apura_write_timeouts_total")
            );
        }
        if m.open_streams() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} connections still open, {} write timeouts",
            m.open_streams(),
            m.get("apura_write_timeouts_total")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let m = GatewayMetrics::of(&http, &gw).await;
    let timeouts = m.get("apura_write_timeouts_total");
    eprintln!("{n} stuck clients dropped in {took:?}; {timeouts} write timeouts");
    assert!(
        timeouts >= n as u64,
        "{timeouts} write timeouts for {n} stuck clients"
    );
    assert_eq!(m.get("apura_blocked_writes"), 0);
    drop(stuck);
}

/// The size of the large document of [`stuck_clients_of_a_large_document_hold_no_copy_of_it`],
/// as the `cities` index (~900 KB on a real night).
const LARGE: usize = 512 << 10;

/// A client that asks for the large `cities` document and never reads: an SSE stream of it and
/// `brazil` (two snapshots ready at once, written as one chunk), or four pipelined GETs of it.
async fn stuck_on_large(addr: SocketAddr, source: Ipv4Addr, sse: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind((source, 0).into()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = if sse {
        b"GET /events?topics=cities,brazil HTTP/1.1\r\nHost: test\r\n\r\n".to_vec()
    } else {
        b"GET /cities.json HTTP/1.1\r\nHost: test\r\n\r\n".repeat(4)
    };
    stream.write_all(&request).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_clients_of_a_large_document_hold_no_copy_of_it() {
    raise_file_limit();
    let n = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start().await;
    let bus = publisher(&server, LEADER_TTL).await;
    let pad = "x".repeat(LARGE);
    bus.publish(vec![
        Draft {
            topic: "cities".into(),
            body: Bytes::from(format!(r#"{{"topic":"cities","pad":"{pad}"}}"#)),
        },
        Draft {
            topic: "brazil".into(),
            body: Bytes::from_static(br#"{"topic":"brazil"}"#),
        },
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let gw = gateway(&server, dir.path(), "gateway", "120s").await;
    let pid = gw.process.pid();
    // A client that reads gets the document whole, as a GET (the bare socket's answer, from
    // the shared bytes) and in a stream of two topics (both snapshots in one chunk).
    let got = http.get(gw.url("/cities.json")).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let doc: serde_json::Value = got.json().await.unwrap();
    assert_eq!(doc["pad"].as_str().map(str::len), Some(LARGE));
    let mut reader = Sse::connect(&gw.url("/events?topics=cities,brazil"), None).await;
    let mut sizes = Vec::new();
    for _ in 0..2 {
        let ev = reader
            .next(Duration::from_secs(10))
            .await
            .expect("a snapshot");
        assert_eq!(ev.event, "snapshot");
        let pad = ev.data["pad"].as_str().map_or(0, str::len);
        sizes.push((ev.data["topic"].as_str().unwrap().to_string(), pad));
    }
    sizes.sort();
    assert_eq!(
        sizes,
        [("brazil".to_string(), 0), ("cities".to_string(), LARGE)]
    );
    drop(reader);
    let rss_before = rss_bytes(pid);
    let mut stuck = Vec::with_capacity(n);
    for i in 0..n {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8);
        stuck.push(stuck_on_large(gw.addr, source, i % 2 == 0).await);
    }
    nine_in_ten_blocked(&http, &gw, n).await;
    // Every stuck client is served: its stream counted, or its first GET answered. The last
    // few may still be on their way in when nine in ten writes are blocked.
    wait_for("every stuck client served", 30, async || {
        let m = GatewayMetrics::of(&http, &gw).await;
        let (sse, gets) = (
            m.get("apura_sse_connections"),
            m.get("apura_get_requests_total"),
        );
        (
            sse == n as u64 / 2 && gets >= n as u64 / 2,
            format!("{sse} SSE streams, {gets} GET requests"),
        )
    })
    .await;
    let growth = rss_bytes(pid).saturating_sub(rss_before);
    eprintln!(
        "{n} clients stuck on a {} KiB document: gateway RSS grew {} MiB, {} KiB a client",
        LARGE >> 10,
        growth >> 20,
        (growth / n as u64) >> 10
    );
    // Each holds a reference to the document's shared bytes, not a copy of them (which would
    // be 512 KiB a client, 500 MiB in all): its connection's buffers and task, and slack.
    let bound = n as u64 * (48 << 10) + (64 << 20);
    assert!(
        growth < bound,
        "RSS grew {} MiB for {n} stuck clients, bound {} MiB: a copy of the document each?",
        growth >> 20,
        bound >> 20
    );
    drop(stuck);
}
