//! Connections under a crowd: silent, trickling and idle connections lock nobody out, one
//! address pipelining failing requests is cut, and a paced shutdown. The gateway runs as its own
//! process (`apura gateway --redis`, its open-file limit set with `prlimit`), the crowd in
//! another; the limits within one gateway are in `connection_limits.rs`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use apura::bus::Bus;
use apura::documents::Draft;
use bytes::Bytes;
use common::net::*;
use common::process::{Process, free_addr, metric, rss_bytes, scrape};
use common::redis::{RedisServer, gateway_command, publisher};
use common::*;
use tokio::io::AsyncWriteExt;

/// The test's hold on the leader lock, to publish as the ingest would.
const LEADER_TTL: Duration = Duration::from_secs(600);
/// A gateway process following `server` on a free port, with `extra` options and, when given,
/// its open-file limit; ready.
async fn gateway_process(
    server: &RedisServer,
    dir: &Path,
    name: &str,
    files: Option<u64>,
    extra: &[&str],
) -> (Process, SocketAddr) {
    let addr = free_addr();
    let command = gateway_command(server, addr, extra);
    let process = match files {
        Some(files) => Process::spawn_with_file_limit(dir, name, files, &command),
        None => Process::spawn(dir, name, &command),
    };
    wait_ready(addr).await;
    (process, addr)
}

/// Publish `brazil` (about 2 KB) through `bus`.
async fn publish_brazil(bus: &dyn Bus, n: u64) {
    let pad = "x".repeat(2_000);
    bus.publish(vec![Draft {
        topic: "brazil".into(),
        body: Bytes::from(format!(r#"{{"topic":"brazil","n":{n},"pad":"{pad}"}}"#)),
    }])
    .await
    .unwrap();
}

/// A count night's worth of documents (17,000 of 3 KB: 5,570 mayor and 5,570 councillor races,
/// zones, roll-ups), so that the gateway's memory is measured as it is on the night.
async fn publish_count_night(bus: &dyn Bus) {
    let pad = "x".repeat(3_000);
    let drafts = (0..17_000)
        .map(|i| Draft {
            topic: format!("mayors-sp-city-{i}"),
            body: Bytes::from(format!(r#"{{"topic":"mayors-sp-city-{i}","pad":"{pad}"}}"#)),
        })
        .collect();
    bus.publish(drafts).await.unwrap();
}

/// A metric of the gateway at `addr`, read from 127.0.0.3.
async fn gauge(addr: SocketAddr, name: &str) -> u64 {
    let text = scrape(&client_from(source(3)), addr)
        .await
        .expect("/metrics answers");
    metric(&text, name).unwrap_or_else(|| panic!("no {name}")) as u64
}

/// Private memory of a process (anonymous pages: heap, stacks), from `/proc/<pid>/status`:
/// its RSS less the pages of the binary, which the first run of a code path brings in once.
fn anon_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:") + field("RssShmem:")) * 1024
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Acceptance: the open-file limit at 3,000, a separate process holds 3,100 connections that
/// never complete a request (GET /events one byte every 2 s, a lone X, a head without its final
/// CRLF, an idle kept-alive connection after a GET), coming back half a second after each
/// close. GET answers throughout (p99 under 100 ms on a new connection each time), new SSE
/// streams open, no trickling connection outlives the head deadline, the gateway never runs
/// out of files, and the memory the crowd took is given back once it leaves (all but a few
/// MiB: see docs/hardening.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_silent_trickling_and_idle_connections_locks_nobody_out() {
    const FILES: u64 = 3_000;
    const CROWD: usize = 3_100;
    const ATTACK: Duration = Duration::from_secs(40);
    const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start().await;
    let bus = publisher(&server, LEADER_TTL).await;
    publish_count_night(&*bus).await;
    publish_brazil(&*bus, 1).await;
    let (gw, addr) = gateway_process(&server, dir.path(), "gateway", Some(FILES), &[]).await;
    let pid = gw.pid();
    let http = client_from(source(2));
    let url = format!("http://{addr}/brazil.json");
    let events = format!("http://{addr}/events?topics=brazil");

    // Warm up, then the memory before.
    for _ in 0..100 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    }
    for _ in 0..10 {
        let mut sse = Sse::try_connect_with(&http, &events, None).await.unwrap();
        sse.next(Duration::from_secs(5)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_before, anon_before) = (rss_bytes(pid), anon_bytes(pid));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crowd.py");
    let crowd = tokio::process::Command::new("python3")
        .arg(&script)
        .args([
            "127.0.0.1".to_string(),
            addr.port().to_string(),
            CROWD.to_string(),
            ATTACK.as_secs().to_string(),
            // 20 addresses, 155 connections each: within each address's share (10 % of
            // 2,000), so that it is the cap and the deadlines that are tested.
            "127.0.0.10-127.0.0.29".to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs tests/crowd.py");
    let started = Instant::now();
    let mut cap_reached = false;
    while started.elapsed() < Duration::from_secs(15) {
        if gauge(addr, "apura_open_connections").await >= 1_900 {
            cap_reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cap_reached, "the crowd did not fill the gateway");
    eprintln!("crowd holds the gateway after {:?}", started.elapsed());

    // Legitimate clients from 127.0.0.2 while the crowd stays: a GET on a new connection
    // every 50 ms, a new SSE stream every 500 ms (kept open).
    let until = started + ATTACK - Duration::from_secs(2);
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut streams = Vec::new();
    let mut next_stream = Instant::now();
    while Instant::now() < until {
        let t = Instant::now();
        match http.get(&url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(_) => latencies.push(t.elapsed()),
                Err(e) => failures.push(format!("GET body: {e}")),
            },
            Ok(r) => failures.push(format!("GET: status {}", r.status())),
            Err(e) => failures.push(format!("GET: {e}")),
        }
        if Instant::now() >= next_stream {
            next_stream += Duration::from_millis(500);
            match Sse::try_connect_with(&http, &events, None).await {
                Ok(mut sse) => match sse.next(Duration::from_secs(5)).await {
                    Some(_) => streams.push(sse),
                    None => failures.push("SSE: no snapshot".into()),
                },
                Err(e) => failures.push(format!("SSE: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(50).saturating_sub(t.elapsed())).await;
    }
    let evicted = gauge(addr, "apura_connections_evicted_total").await;
    let output = crowd.wait_with_output().await.unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("crowd output {e}: {:?}", output));
    latencies.sort();
    eprintln!(
        "{} GETs, p50 {:?}, p99 {:?}, max {:?}; {} streams opened; {evicted} evicted; crowd: {report}",
        latencies.len(),
        pct(&latencies, 50),
        pct(&latencies, 99),
        latencies.last().unwrap(),
        streams.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(latencies.len() >= 200, "{} GETs", latencies.len());
    // Acceptance bound, a functional check: a GET (connect included) under 100 ms at p99.
    assert!(
        pct(&latencies, 99) < Duration::from_millis(100),
        "GET p99 {:?}",
        pct(&latencies, 99)
    );
    assert!(streams.len() >= 50, "{} streams", streams.len());
    for mut sse in streams.drain(..) {
        assert!(
            !sse.ended(Duration::from_millis(10)).await,
            "a stream was closed"
        );
    }
    for kind in ["events", "x", "nocrlf"] {
        let k = &report[kind];
        let longest = Duration::from_secs_f64(k["longest"].as_f64().unwrap());
        let oldest = Duration::from_secs_f64(k["oldest_open"].as_f64().unwrap());
        assert!(k["closed"].as_u64().unwrap() > 0, "{kind}: {k}");
        assert!(
            longest <= HEAD_TIMEOUT + SLACK && oldest <= HEAD_TIMEOUT + SLACK,
            "{kind}: a connection without a whole head lived {longest:?} (oldest open {oldest:?})"
        );
    }
    assert!(
        evicted > 0,
        "the cap was reached: the oldest waiting ones were closed"
    );
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    assert!(
        !log.contains("accept failed"),
        "out of files:\n{}",
        gw.log_tail(20)
    );

    // The crowd has left: memory comes back.
    let left = Instant::now();
    while gauge(addr, "apura_open_connections").await > 1 {
        assert!(
            left.elapsed() < Duration::from_secs(20),
            "connections left open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_after, anon_after) = (rss_bytes(pid), anon_bytes(pid));
    eprintln!(
        "gateway RSS before {} KiB, after the crowd left {} KiB; of which private (heap, stacks) \
         {} KiB before, {} KiB after",
        rss_before >> 10,
        rss_after >> 10,
        anon_before >> 10,
        anon_after >> 10
    );
    // At its peak the crowd held ~2,000 connections, idle kept-alive ones ~30 KiB each in
    // hyper's buffers (~27 MiB stayed in the allocator's arenas when nothing gave it back).
    // Once it has left, the gateway is within 20 % of what it was before; what stays is a
    // remainder of a few MiB, not the crowd's memory.
    assert!(
        rss_after * 100 <= rss_before * 120,
        "RSS {} KiB after the crowd, {} KiB before",
        rss_after >> 10,
        rss_before >> 10
    );
    assert!(
        anon_after <= anon_before + (8 << 20),
        "private memory {} KiB after the crowd, {} KiB before",
        anon_after >> 10,
        anon_before >> 10
    );
}

/// Acceptance: one address pipelining failing `/events` requests at up to 5,000 a second; at
/// the default limits, at least 99 % of the SSE opens from other addresses succeed. The
/// attacker's kept-alive connections are cut after a few failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_pipelining_failing_requests_locks_nobody_out() {
    const ATTACK: Duration = Duration::from_secs(12);
    const RATE: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start().await;
    let bus = publisher(&server, LEADER_TTL).await;
    publish_brazil(&*bus, 1).await;
    let (_gw, addr) = gateway_process(&server, dir.path(), "gateway", None, &[]).await;
    let errors_before = gauge(addr, "apura_client_errors_total").await;

    // The attacker: connections from 127.0.0.1, each a GET then failing stream requests
    // pipelined, as fast as the gateway answers, paced to RATE failing requests a second.
    let sent = Arc::new(AtomicU64::new(0));
    let most_answers = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let (sent, most_answers) = (sent.clone(), most_answers.clone());
        attackers.push(tokio::spawn(async move {
            let mut batch = b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n".to_vec();
            for _ in 0..20 {
                batch.extend_from_slice(b"GET /events?topics=nope HTTP/1.1\r\nHost: g\r\n\r\n");
            }
            while started.elapsed() < ATTACK {
                let budget = started.elapsed().as_secs_f64() * RATE as f64;
                if sent.load(Relaxed) as f64 > budget {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let mut s = connect_from(addr, source(1)).await;
                if s.write_all(&batch).await.is_err() {
                    continue;
                }
                let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
                assert!(closed.is_some(), "a failing pipeline was not cut: {got}");
                let answers = got.matches("HTTP/1.1 ").count() as u64;
                most_answers.fetch_max(answers, Relaxed);
                sent.fetch_add(answers.saturating_sub(1), Relaxed);
            }
        }));
    }

    // Legitimate clients from 127.0.0.2–127.0.0.5: 40 SSE opens a second, each on a new
    // connection, must get 200 and their snapshot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut opens = Vec::new();
    let mut i = 0u8;
    while started.elapsed() < ATTACK - Duration::from_secs(1) {
        let http = client_from(source(2 + i % 4));
        i = i.wrapping_add(1);
        let url = format!("http://{addr}/events?topics=brazil");
        opens.push(tokio::spawn(async move {
            match Sse::try_connect_with(&http, &url, None).await {
                Ok(mut sse) => match sse.next(Duration::from_secs(5)).await {
                    Some(_) => Ok(()),
                    None => Err("no snapshot".to_string()),
                },
                Err(e) => Err(e),
            }
        }));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let attempts = opens.len();
    let mut refused = Vec::new();
    for open in futures_util::future::join_all(opens).await {
        if let Err(e) = open.unwrap() {
            refused.push(e);
        }
    }
    for a in attackers {
        a.await.unwrap();
    }
    let took = started.elapsed();
    let errors = gauge(addr, "apura_client_errors_total").await - errors_before;
    let rate = errors as f64 / took.as_secs_f64();
    eprintln!(
        "attack: {errors} failing requests in {took:?} ({rate:.0}/s), at most {} answers per \
         connection; {} of {attempts} legitimate opens failed ({:?})",
        most_answers.load(Relaxed),
        refused.len(),
        refused.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        refused.len() * 100 <= attempts,
        "{} of {attempts} legitimate opens failed: {:?}",
        refused.len(),
        refused.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        rate >= 2_000.0,
        "the attack reached only {rate:.0} failing requests/s"
    );
    assert!(
        most_answers.load(Relaxed) <= 1 + apura::gateway::front::MAX_FAILURES,
        "a connection got {} answers",
        most_answers.load(Relaxed)
    );
}

/// Acceptance: SIGTERM with `--drain 20s`: `/readyz` answers 503 from the signal on while GET
/// still answers and new streams are refused; the open streams close spread over the 20 s;
/// the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_streams_over_the_drain_period_and_exits_cleanly() {
    const STREAMS: usize = 100;
    const DRAIN: Duration = Duration::from_secs(20);
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start().await;
    let bus = publisher(&server, LEADER_TTL).await;
    publish_brazil(&*bus, 1).await;
    let (mut gw, addr) =
        gateway_process(&server, dir.path(), "gateway", None, &["--drain", "20s"]).await;
    let events = format!("http://{addr}/events?topics=brazil");
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let http = client_from(source(2 + (i % 4) as u8));
        let mut sse = Sse::try_connect_with(&http, &events, None).await.unwrap();
        sse.next(Duration::from_secs(5)).await.unwrap();
        streams.push(sse);
    }

    let signalled = Instant::now();
    let ends = futures_util::future::join_all(streams.into_iter().map(|mut sse| async move {
        assert!(
            sse.ended(DRAIN + Duration::from_secs(10)).await,
            "a stream outlived the drain"
        );
        signalled.elapsed()
    }));
    let probe = async {
        // Until the gateway stops accepting: /readyz, GET and a new stream, every 250 ms.
        let http = client_from(source(3));
        let (mut ready, mut get, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        tokio::time::sleep(Duration::from_millis(100)).await;
        while signalled.elapsed() < DRAIN - Duration::from_secs(1) {
            let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await else {
                break;
            };
            ready.push(r.status().as_u16());
            if let Ok(r) = http.get(format!("http://{addr}/brazil.json")).send().await {
                get.push(r.status().as_u16());
            }
            if let Err(e) = Sse::try_connect_with(&http, &events, None).await {
                refused.push(e);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (ready, get, refused)
    };
    let (status, mut ends, (ready, get, refused)) = tokio::join!(gw.terminate(), ends, probe);
    let exited = signalled.elapsed();
    ends.sort();
    eprintln!(
        "exit {status:?} after {exited:?}; streams ended from {:?} to {:?} (quartiles {:?} {:?} {:?}); \
         {} /readyz probes, {} GETs, {} stream refusals",
        ends[0],
        ends[STREAMS - 1],
        ends[STREAMS / 4],
        ends[STREAMS / 2],
        ends[STREAMS * 3 / 4],
        ready.len(),
        get.len(),
        refused.len()
    );
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        gw.log_tail(20)
    );
    assert!(
        ready.len() >= 40,
        "{} /readyz answers during the drain",
        ready.len()
    );
    assert!(
        ready.iter().all(|s| *s == 503),
        "/readyz during the drain: {ready:?}"
    );
    assert!(
        get.iter().all(|s| *s == 200) && get.len() >= 40,
        "GET during the drain: {get:?}"
    );
    assert_eq!(
        refused.len(),
        ready.len(),
        "new streams during the drain: {refused:?}"
    );
    // Spread over the drain: a uniform spread of 100 puts the quartiles near 5, 10 and 15 s.
    assert!(
        ends[STREAMS - 1] <= DRAIN + SLACK,
        "last stream at {:?}",
        ends[STREAMS - 1]
    );
    assert!(
        ends[0] < Duration::from_secs(3),
        "first stream at {:?}",
        ends[0]
    );
    assert!(
        ends[STREAMS - 1] > Duration::from_secs(16),
        "last at {:?}",
        ends[STREAMS - 1]
    );
    for (q, expected) in [(1, 5), (2, 10), (3, 15)] {
        let at = ends[STREAMS * q / 4].as_secs_f64();
        assert!(
            (at - expected as f64).abs() < 4.0,
            "quartile {q} at {at:.1} s"
        );
    }
    assert!(
        exited < DRAIN + Duration::from_secs(8),
        "exit after {exited:?}"
    );
}
