//! A gateway without Redis: started while Redis is down it answers at once and picks Redis up
//! when it comes; a snapshot reload that fails after a resync is tried again.

mod common;

use std::time::{Duration, Instant};

use apura::bus::{Bus, Document};
use apura::documents::Draft;
use common::process::{Process, free_addr};
use common::redis::{Feed, GatewayProcess, RedisGateway, RedisServer, ingest_command, publisher};
use common::{Sse, cities, eventually, wait_ready};

/// `apura gateway --redis` started while Redis is down: from its first second it answers
/// `/healthz` 200, `/readyz` 503 and 503 (`not_ready`, `Retry-After`) for documents and streams,
/// and keeps doing so; Redis comes up 20 s later, a real `apura ingest` publishes, and the same
/// process turns ready and serves the documents. Redis' absence is logged once, not per try.
#[tokio::test]
async fn a_gateway_started_while_redis_is_down_answers_at_once_and_serves_once_it_comes() {
    let mut server = RedisServer::start().await;
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let started = Instant::now();
    let gateway = GatewayProcess::spawn(&server, dir.path(), "gateway", addr, &[]);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let get = async |path: &str| http.get(gateway.url(path)).send().await;

    // Answers from the first second.
    loop {
        if get("/healthz").await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no /healthz answer within 1 s of start:\n{}",
            gateway.process.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_answer = started.elapsed();

    // Redis stays down for 20 s: every second the gateway answers, and says it is not ready.
    let mut checks = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let r = get("/healthz").await.expect("the gateway answers");
        assert_eq!(r.status(), 200);
        let r = get("/readyz").await.expect("the gateway answers");
        assert_eq!(r.status(), 503);
        for path in [
            "/brazil.json",
            "/cities/mayors-sp-sao-paulo.json",
            "/events?topics=brazil",
        ] {
            let r = get(path).await.expect("the gateway answers");
            assert_eq!(r.status(), 503, "{path}");
            assert!(r.headers().contains_key("retry-after"), "{path}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "not_ready", "{path}");
        }
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 503)
            }
            other => panic!("/ws: {other:?}"),
        }
        checks += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(checks >= 15, "{checks} rounds of checks in 20 s");

    // Redis comes up, empty; a real ingest publishes to it.
    server.spawn().await;
    let redis_up = Instant::now();
    let feed = Feed::new(&cities());
    let _ingest = Process::spawn(
        dir.path(),
        "ingest",
        &ingest_command(
            &server,
            feed.args.feed.as_deref().unwrap(),
            feed.args.municipalities.as_deref().unwrap(),
            &["--interval", "100ms"],
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get("/readyz").await.expect("the gateway answers");
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 30 s after Redis came up:\n{}",
            gateway.process.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_after = redis_up.elapsed();
    let r = get("/cities/mayors-sp-sao-paulo.json").await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["candidates"][0]["votes"], 600);
    let mut sse = Sse::connect(
        &gateway.url("/events?topics=mayors-rj-rio-de-janeiro"),
        None,
    )
    .await;
    let ev = sse.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev.event, "snapshot");
    assert_eq!(ev.data["candidates"][0]["votes"], 300);

    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap();
    let unavailable = log
        .lines()
        .filter(|l| l.contains("bus unavailable"))
        .count();
    assert_eq!(unavailable, 1, "logged once, not per try:\n{log}");
    assert!(
        log.lines().any(|l| l.contains("bus reachable again")),
        "the recovery is logged:\n{log}"
    );
    eprintln!(
        "first answer after {first_answer:?}; ready {ready_after:?} after Redis came up; \
         {} log lines",
        log.lines().count()
    );
}

fn stamped(topic: &str, n: u64, version: u64) -> Document {
    let draft = Draft {
        topic: topic.into(),
        body: bytes::Bytes::from(format!(r#"{{"topic":"{topic}","n":{n}}}"#)),
    };
    Document::stamp(&draft, version, 1_700_000_000_000)
}

async fn brazil_n(gw: &RedisGateway) -> u64 {
    let r = reqwest::get(gw.url("/brazil.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["n"].as_u64().unwrap()
}

/// A resync whose snapshot reload fails (here the index key has the wrong type) keeps serving
/// what the gateway holds, and the reload is tried again until it works.
#[tokio::test]
async fn a_failed_snapshot_reload_after_a_resync_is_retried() {
    let server = RedisServer::start().await;
    let ingest = publisher(&server, Duration::from_secs(60)).await;
    let c1 = ingest
        .publish(vec![Draft {
            topic: "brazil".into(),
            body: bytes::Bytes::from_static(br#"{"topic":"brazil","n":1}"#),
        }])
        .await
        .unwrap();
    let gw = RedisGateway::start(&server).await;
    wait_ready(gw.addr).await;
    assert_eq!(brazil_n(&gw).await, 1);

    // The snapshot index becomes unreadable, a newer document lands in the store without a
    // cycle, and the gateway is told to resync.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let run = async |con: &mut ::redis::aio::MultiplexedConnection, cmd: &mut ::redis::Cmd| {
        let _: ::redis::Value = cmd.query_async(con).await.unwrap();
    };
    run(
        &mut con,
        ::redis::cmd("RENAME")
            .arg("apura:topics")
            .arg("apura:aside"),
    )
    .await;
    run(
        &mut con,
        ::redis::cmd("SET").arg("apura:topics").arg("not a hash"),
    )
    .await;
    let newer = stamped("brazil", 2, c1.version + 10);
    run(
        &mut con,
        ::redis::cmd("SET")
            .arg("apura:doc:brazil")
            .arg(&newer.json[..]),
    )
    .await;
    run(
        &mut con,
        ::redis::cmd("HSET")
            .arg("apura:aside")
            .arg("brazil")
            .arg(newer.version),
    )
    .await;
    run(
        &mut con,
        ::redis::cmd("PUBLISH")
            .arg("apura:cycles")
            .arg("resync, please"),
    )
    .await;
    // The reload fails: the gateway serves what it holds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(brazil_n(&gw).await, 1);
    assert_eq!(reqwest::get(gw.url("/readyz")).await.unwrap().status(), 200);

    // The index is readable again: a retry picks the newer document up, with no new cycle.
    run(&mut con, ::redis::cmd("DEL").arg("apura:topics")).await;
    run(
        &mut con,
        ::redis::cmd("RENAME")
            .arg("apura:aside")
            .arg("apura:topics"),
    )
    .await;
    eventually(|| {
        gw.hub
            .get("brazil")
            .is_some_and(|e| e.version == newer.version)
    })
    .await;
    assert_eq!(brazil_n(&gw).await, 2);
}
