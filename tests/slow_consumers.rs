//! Slow consumers: thousands of clients that subscribe and then never read. The gateway's memory
//! stays bounded (no queue per client), their lag shows in `apura_blocked_writes`, a reading
//! client's delivery latency stays near its baseline, and with a short `--write-timeout` the
//! stuck clients are dropped and counted.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apura::bus::Bus;
use apura::documents::Draft;
use bytes::Bytes;
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Document size: a large city document (São Paulo's councillors are ~300 KB).
const DOC: usize = 50 << 10;
/// Files kept for the test harness, the gateway's listener, the reading client, the runtime.
const SPARE_FILES: u64 = 1_000;
/// Target number of stuck clients; fewer if the open-file limit cannot hold two descriptors
/// (client end + server end, both in this process) per client.
const TARGET: u64 = 10_000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// How many stuck clients fit: the soft limit raised to the hard one, two files per client.
fn clients_that_fit() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let n = TARGET.min(limit.saturating_sub(SPARE_FILES) / 2);
    let n = std::env::var("STUCK_CLIENTS").map_or(n, |v| v.parse().unwrap());
    eprintln!("open-file limit {limit}: {n} stuck clients (target {TARGET})");
    n as usize
}

/// A client that sends its request (SSE) or handshake and subscribe (WebSocket) in one write,
/// then never reads. A 4 KiB receive buffer keeps the kernel's share small.
async fn stuck_client(addr: std::net::SocketAddr, ws: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
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

async fn connect_stuck(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(200) {
        let conns =
            futures_util::future::join_all(batch.iter().map(|i| stuck_client(addr, i % 2 == 1)))
                .await;
        clients.extend(conns);
    }
    clients
}

/// A [`Gateway`] whose listening socket has a small send buffer, inherited by every accepted
/// socket: it bounds what the kernel holds for a client that does not read (Linux doubles it:
/// 32 KiB), so thousands of stuck clients stay far from the machine's TCP memory limit
/// (`net.ipv4.tcp_mem`), which other processes share.
async fn small_buffer_gateway(args: apura::gateway::GatewayArgs) -> Gateway {
    use apura::gateway::{self, hub::Hub};
    use apura::metrics::Metrics;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 << 10).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let bus = Arc::new(apura::bus::embedded::EmbeddedBus::new());
    let hub = Arc::new(Hub::new(Arc::new(Metrics::default())));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    tokio::spawn(gateway::follow(dyn_bus, hub.clone(), shutdown.clone()));
    let (h, s) = (hub.clone(), shutdown.clone());
    let task = tokio::spawn(async move { gateway::serve(&args, h, listener, s).await });
    Gateway {
        addr,
        bus,
        hub,
        shutdown,
        task: Some(task),
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
async fn measure(gw: &Gateway, count: usize, every: Duration) -> Vec<Duration> {
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
        let cycle = gw.bus.publish(vec![draft(i as u64)]).await.unwrap();
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
async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> (bool, String)) {
    let started = Instant::now();
    loop {
        let (done, seen) = f();
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

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_clients_cost_bounded_memory_do_not_slow_others_and_are_dropped() {
    let n = clients_that_fit();
    let mut args = gateway_args();
    args.write_timeout = Duration::from_secs(120);
    args.max_connections = 0;
    let gw = small_buffer_gateway(args).await;
    gw.publish_padded(&[("big", 0)], DOC).await;
    let metrics = gw.hub.metrics.clone();

    // Baseline: one reading client, nobody stuck.
    let every = Duration::from_millis(20);
    let base = measure(&gw, 50, every).await;

    // n clients subscribe and never read. Each blocks on its first writes.
    let rss_before = rss_bytes();
    let started = Instant::now();
    let stuck = connect_stuck(gw.addr, n).await;
    eprintln!("{n} connected in {:?}", started.elapsed());
    let open = || metrics.sse_connections.load(Relaxed) + metrics.ws_connections.load(Relaxed);
    wait_for("streams open", 120, || {
        (
            open() >= n as i64,
            format!(
                "{} SSE + {} WebSocket",
                metrics.sse_connections.load(Relaxed),
                metrics.ws_connections.load(Relaxed)
            ),
        )
    })
    .await;
    for i in 0..20 {
        gw.publish_padded(&[("big", 1000 + i)], DOC).await;
    }
    let blocked = || metrics.blocked_writes.load(Relaxed);
    wait_for("blocked writes", 120, || {
        (blocked() >= n as i64 * 9 / 10, blocked().to_string())
    })
    .await;
    let rss_blocked = rss_bytes();

    // 200 more versions of 50 KB: ~10 MB each client has not read, ~95 GB in all if queued.
    let loaded = measure(&gw, 200, every).await;
    let rss_after = rss_bytes();
    let blocked = metrics.blocked_writes.load(Relaxed);
    let text = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("apura_blocked_writes {blocked}")),
        "lag not in /metrics"
    );

    eprintln!(
        "{n} stuck clients ({blocked} blocked); latency p50/p95 baseline {:?}/{:?}, loaded {:?}/{:?}; \
         RSS before {} MiB, blocked {} MiB, after 200 versions {} MiB",
        pct(&base, 50),
        pct(&base, 95),
        pct(&loaded, 50),
        pct(&loaded, 95),
        rss_before >> 20,
        rss_blocked >> 20,
        rss_after >> 20
    );
    // Memory: no queue per client. Each stuck client holds at most one frame in its
    // connection's write buffer (tungstenite copies a WebSocket frame; hyper queues the shared
    // SSE bytes), plus its read buffer and task (~48 KiB counted generously); every version a
    // client is stuck on stays alive (≤ 221 versions × 3 encodings). Growth from 200 more
    // versions must be no more than slack: nothing grows with the versions.
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
    let mut args = gateway_args();
    args.write_timeout = Duration::from_secs(1);
    let gw = small_buffer_gateway(args).await;
    gw.publish_padded(&[("big", 0)], DOC).await;
    let metrics = gw.hub.metrics.clone();
    // Fds of the first gateway's connections may still be closing: start with fewer clients.
    let m = n / 2;
    let stuck = connect_stuck(gw.addr, m).await;
    eventually(|| {
        metrics.sse_connections_total.load(Relaxed) + metrics.ws_connections_total.load(Relaxed)
            >= m as u64
    })
    .await;
    let started = Instant::now();
    for i in 0..5 {
        gw.publish_padded(&[("big", 1 + i)], DOC).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.sse_connections.load(Relaxed) + metrics.ws_connections.load(Relaxed) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections still open, {} write timeouts",
            metrics.sse_connections.load(Relaxed) + metrics.ws_connections.load(Relaxed),
            metrics.write_timeouts.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if std::env::var("STUCK_DEBUG").is_ok() {
            eprintln!(
                "{:?}: {} SSE {} WS open, {} blocked, {} timeouts",
                started.elapsed(),
                metrics.sse_connections.load(Relaxed),
                metrics.ws_connections.load(Relaxed),
                metrics.blocked_writes.load(Relaxed),
                metrics.write_timeouts.load(Relaxed)
            );
        }
    }
    let timeouts = metrics.write_timeouts.load(Relaxed);
    eprintln!(
        "{m} stuck clients dropped in {:?}; {timeouts} write timeouts",
        started.elapsed()
    );
    assert!(
        timeouts >= m as u64,
        "{timeouts} write timeouts for {m} stuck clients"
    );
    let text = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(&format!("apura_write_timeouts_total {timeouts}")));
    assert!(text.contains("apura_blocked_writes 0"));
    drop(stuck);
}
