//! The scaled deployment on a real redis-server: cycles through Redis, the fenced leader lock
//! and its failover, a Redis restart under a serving gateway, and gateway readiness.

mod common;

use std::time::Duration;

use apura::bus::{Bus, BusEvent, Cycle, Document};
use apura::documents::Draft;
use bytes::Bytes;
use common::redis::*;
use common::*;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Leader lock ttl of these tests: renewed every 333 ms, so failover takes about a second.
const TTL: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(10);

fn draft(topic: &str, n: u64) -> Draft {
    padded(topic, n, 0)
}

fn padded(topic: &str, n: u64, pad: usize) -> Draft {
    Draft {
        topic: topic.to_string(),
        body: Bytes::from(format!(
            r#"{{"topic":"{topic}","n":{n},"pad":"{}"}}"#,
            "x".repeat(pad)
        )),
    }
}

fn by_topic(mut docs: Vec<Document>) -> Vec<Document> {
    docs.sort_by(|a, b| a.topic.cmp(&b.topic));
    docs
}

fn topics(cycle: &Cycle) -> Vec<String> {
    let mut t: Vec<String> = cycle
        .documents
        .iter()
        .map(|d| d.topic.to_string())
        .collect();
    t.sort();
    t
}

async fn next_cycle(events: &mut BoxStream<'static, BusEvent>) -> std::sync::Arc<Cycle> {
    match tokio::time::timeout(WAIT, events.next()).await {
        Ok(Some(BusEvent::Cycle(c))) => c,
        other => panic!("expected a cycle, got {other:?}"),
    }
}

async fn get(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn cycles_round_trip_in_version_order_and_another_process_continues_the_sequence() {
    let server = RedisServer::start().await;
    let a = publisher(&server, WAIT).await;
    let mut events = a.subscribe().await.unwrap();

    let c1 = a.publish(vec![draft("a", 1), draft("b", 1)]).await.unwrap();
    let c2 = a.publish(vec![draft("a", 2)]).await.unwrap();
    assert!(c2.version > c1.version);
    for sent in [&c1, &c2] {
        let got = next_cycle(&mut events).await;
        assert_eq!(got.version, sent.version);
        assert_eq!(got.published_at, sent.published_at);
        assert_eq!(got.documents, sent.documents);
    }

    // Another process reads the latest document of each topic.
    let b = bus(&server).await;
    assert_eq!(
        by_topic(b.snapshot().await.unwrap()),
        vec![c2.documents[0].clone(), c1.documents[1].clone()]
    );

    // A cycle too big to send inline (3 × 2 MB) still reaches subscribers whole.
    let big = (0..3)
        .map(|i| padded(&format!("big-{i}"), i, 2_000_000))
        .collect();
    let c3 = a.publish(big).await.unwrap();
    let got = next_cycle(&mut events).await;
    assert_eq!(got.version, c3.version);
    assert_eq!(by_topic(got.documents.clone()), c3.documents);

    // Only the lock holder publishes; a refused cycle leaves no trace.
    let err = b.publish(vec![draft("a", 99)]).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("does not hold the leader lock"),
        "{err:#}"
    );
    assert!(!b.acquire_leadership(WAIT).await.unwrap());

    // Handed over, the sequence continues in the other process.
    assert!(a.release_leadership().await.unwrap());
    assert!(b.acquire_leadership(WAIT).await.unwrap());
    let c4 = b.publish(vec![draft("a", 4)]).await.unwrap();
    assert_eq!(c4.version, c3.version + 1, "refused cycles took no version");
    assert!(a.publish(vec![draft("a", 5)]).await.is_err());
    let got = next_cycle(&mut events).await;
    assert_eq!(got.version, c4.version, "the refused cycles were not sent");
    let snap = by_topic(a.snapshot().await.unwrap());
    assert_eq!(snap.len(), 5);
    assert_eq!(snap[0], c4.documents[0]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&snap[0].json).unwrap()["n"],
        4
    );
}

#[tokio::test]
async fn only_the_lock_holder_publishes_and_a_standby_takes_over_when_it_dies() {
    let server = RedisServer::start().await;
    let mut cs = cities();
    let feed = Feed::new(&cs);
    let observer = bus(&server).await;
    let mut events = observer.subscribe().await.unwrap();

    let first = IngestProcess::start(&server, &feed, TTL).await;
    eventually(|| first.is_leading()).await;
    let second = IngestProcess::start(&server, &feed, TTL).await;
    let c1 = next_cycle(&mut events).await;
    assert_eq!(
        c1.documents.len(),
        8,
        "3 cities, 3 states, brazil, the index"
    );
    // The standby tries for the lock three times a ttl; it never gets it, never publishes.
    tokio::time::sleep(TTL).await;
    assert!(first.is_leading());
    assert!(!second.is_leading());
    assert_eq!(second.cycles_published(), 0);
    assert!(second.bus.publish(vec![draft("brazil", 1)]).await.is_err());

    // The leader dies without releasing its lock: the standby takes over once it expires.
    first.kill();
    let killed = Instant::now();
    eventually(|| second.is_leading()).await;
    let took = killed.elapsed();
    assert!(
        took <= TTL + TTL / 3 + Duration::from_millis(700),
        "took over in {took:?}"
    );

    // It continues from what Redis holds: nothing unchanged is published again...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(second.cycles_published(), 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), events.next())
            .await
            .is_err(),
        "nothing was published twice"
    );
    // ...and what changes is published once, under a higher version.
    cs[0] = cs[0].clone().votes(&[900, 700], 40.0);
    feed.write(&cs);
    let c2 = next_cycle(&mut events).await;
    assert!(c2.version > c1.version);
    assert_eq!(topics(&c2), ["brazil", "mayors-sp-sao-paulo", "state-sp"]);
    let sp = c2
        .documents
        .iter()
        .find(|d| &*d.topic == "mayors-sp-sao-paulo")
        .unwrap();
    let sp: serde_json::Value = serde_json::from_slice(&sp.json).unwrap();
    assert_eq!(sp["candidates"][0]["votes"], 900);
    // Subscribers hear the cycle as Redis runs the write, the writer a moment later with its
    // answer: its count follows, and stays at one.
    eventually(|| second.cycles_published() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(second.cycles_published(), 1);
}

#[tokio::test]
async fn a_gateway_serves_through_a_redis_restart_then_catches_up_with_higher_versions() {
    let mut server = RedisServer::start().await;
    let mut cs = cities();
    let feed = Feed::new(&cs);
    let ingest = IngestProcess::start(&server, &feed, TTL).await;
    let gw = RedisGateway::start(&server).await;
    wait_ready(gw.addr).await;
    eventually(|| gw.hub.len() == 8).await;
    let sp_url = gw.url("/cities/mayors-sp-sao-paulo.json");
    let (_, before) = get(&sp_url).await;
    assert_eq!(before["candidates"][0]["votes"], 600);
    let newest_before = gw.hub.max_version();

    // Redis dies; the count goes on meanwhile.
    server.stop();
    cs[0] = cs[0].clone().votes(&[900, 700], 40.0);
    feed.write(&cs);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        let (status, doc) = get(&sp_url).await;
        assert_eq!(status, 200, "GET keeps working during the outage");
        assert_eq!(doc, before);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What `ApuraRedisDown` (deploy/prometheus/alerts.yml) watches.
    let bus_up = || {
        ingest
            .metrics
            .bus_up
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(bus_up(), 0, "the ingest's apura_bus_up during the outage");

    // It comes back empty. The ingest leads again and publishes everything again; the gateway
    // resubscribes, reloads, and has the change with a version above anything before.
    server.spawn().await;
    eventually(|| {
        gw.hub
            .get("mayors-sp-sao-paulo")
            .is_some_and(|d| d.version > newest_before)
    })
    .await;
    let (_, after) = get(&sp_url).await;
    assert_eq!(after["candidates"][0]["votes"], 900);
    assert!(after["version"].as_u64().unwrap() > newest_before);
    assert!(ingest.is_leading());
    assert_eq!(bus_up(), 1, "the ingest's apura_bus_up once Redis is back");

    let latest = bus(&server).await.snapshot().await.unwrap();
    assert_eq!(latest.len(), 8, "every document was published again");
    for doc in &latest {
        assert!(doc.version > newest_before, "{} went backwards", doc.topic);
        eventually(|| gw.hub.get(&doc.topic).is_some_and(|e| e.body == doc.json)).await;
    }
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains("apura_bus_reconnects_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("apura_bus_decode_errors_total 0\n"));
}

#[tokio::test]
async fn a_gateway_started_after_publications_is_ready_only_with_every_snapshot_loaded() {
    let server = RedisServer::start().await;
    let publisher = publisher(&server, WAIT).await;
    let names: Vec<String> = (0..2_500)
        .map(|i| format!("mayors-sp-city-{i:04}"))
        .collect();
    let c1 = publisher
        .publish(names.iter().map(|t| padded(t, 1, 500)).collect())
        .await
        .unwrap();
    let c2 = publisher
        .publish(names[..10].iter().map(|t| draft(t, 2)).collect())
        .await
        .unwrap();

    // The command's own serving path, on port 0.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let args = apura::gateway::command::GatewayCommandArgs {
        redis: server.url(),
        redis_ca_file: None,
        redis_prefix: "apura".to_string(),
        gateway: gateway_args(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(apura::gateway::command::serve(
        args,
        listener,
        shutdown.clone(),
    ));
    wait_ready(addr).await;
    let metrics = get_text(&format!("http://{addr}/metrics")).await;
    assert!(metrics.contains("apura_topics 2500\n"), "{metrics}");
    let (status, doc) = get(&format!("http://{addr}/cities/mayors-sp-city-0005.json")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (doc["version"].as_u64(), doc["n"].as_u64()),
        (Some(c2.version), Some(2))
    );
    let (_, doc) = get(&format!("http://{addr}/cities/mayors-sp-city-2499.json")).await;
    assert_eq!(
        (doc["version"].as_u64(), doc["n"].as_u64()),
        (Some(c1.version), Some(1))
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_or_gets_garbage_is_told_to_resync() {
    let server = RedisServer::start().await;
    let metrics = std::sync::Arc::new(apura::metrics::Metrics::default());
    let publisher = publisher(&server, WAIT).await;
    let follower = apura::bus::redis::RedisBus::connect(&server.url(), "apura", metrics.clone())
        .await
        .unwrap();
    let mut events = follower.subscribe().await.unwrap();

    // Not read for 400 cycles: it gets what fitted in its queue (256), then one resync, not
    // 400.
    let mut last = 0;
    for n in 0..400 {
        last = publisher
            .publish(vec![draft("a", n)])
            .await
            .unwrap()
            .version;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut cycles = 0;
    while let BusEvent::Cycle(_) = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
    {
        cycles += 1;
    }
    assert!(
        (1..400).contains(&cycles),
        "{cycles} cycles before the resync"
    );
    let snap = follower.snapshot().await.unwrap();
    assert_eq!(
        snap[0].version, last,
        "the resync's snapshot has the latest"
    );

    // Something that is not a cycle on the channel: counted, skipped, answered with a resync.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = ::redis::cmd("PUBLISH")
        .arg("apura:cycles")
        .arg("not a cycle")
        .query_async(&mut con)
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
    {
        BusEvent::Resync => {}
        other => panic!("expected a resync, got {other:?}"),
    }
    assert_eq!(
        metrics
            .bus_decode_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // And the subscription goes on.
    let c = publisher.publish(vec![draft("a", 1000)]).await.unwrap();
    assert_eq!(next_cycle(&mut events).await.version, c.version);
}

#[tokio::test]
async fn a_standby_that_takes_over_an_emptied_redis_continues_above_the_last_version() {
    let mut server = RedisServer::start().await;
    let leader = bus(&server).await;
    let standby = bus(&server).await;
    assert!(leader.acquire_leadership(WAIT).await.unwrap());
    leader.continue_sequence().await.unwrap();
    // Brisk cycles, a few a second as a fast simulated night gives: versions run ahead of the
    // clock. The standby reads the sequence each time it tries for the lock...
    for n in 0..20 {
        leader.publish(vec![draft("a", n)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!standby.acquire_leadership(WAIT).await.unwrap());
    // ...but the leader publishes a little more before Redis is lost.
    let last = leader.publish(vec![draft("a", 99)]).await.unwrap().version;
    leader.publish(vec![draft("b", 99)]).await.unwrap();
    let last = last.max(leader.highest_version());
    assert!(standby.highest_version() < last);

    // Redis comes back empty and the standby wins the lock: its versions continue above every
    // version gateways may hold, though it never saw the last ones.
    server.restart().await;
    let deadline = Instant::now() + WAIT;
    while !standby.acquire_leadership(WAIT).await.unwrap_or(false) {
        assert!(Instant::now() < deadline, "the standby never got the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(standby.continue_sequence().await.unwrap(), None, "empty");
    let next = standby.publish(vec![draft("a", 100)]).await.unwrap();
    assert!(
        next.version > last,
        "version {} after {last}: gateways would ignore it",
        next.version
    );
}

/// A leader whose lock is taken while it writes cycles back to back: from the moment the lock
/// is someone else's, not one more of its cycles reaches Redis, whatever point of a write the
/// theft falls on (before the lock is checked, or between the check and the `EXEC`). The theft
/// and a marker message are one transaction, so the marker's place on the channel is the
/// theft's place among the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lock_is_taken_mid_write_writes_nothing_after() {
    let server = RedisServer::start().await;
    let leader = publisher(&server, Duration::from_secs(30)).await;
    let channel = leader.keys().cycles();
    let mut pubsub = server.client().get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let writer = {
        let leader = leader.clone();
        tokio::spawn(async move {
            let mut written = 0u64;
            loop {
                let drafts = (0..2_000)
                    .map(|i| padded(&format!("t-{i}"), written, 1_000))
                    .collect();
                match leader.publish(drafts).await {
                    Ok(_) => written += 1,
                    Err(e) => return (written, format!("{e:#}")),
                }
            }
        })
    };
    // Let a few cycles through, then take the lock at a moment the writer does not choose.
    tokio::time::sleep(Duration::from_millis(300 + rand_ms())).await;
    let mut con = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = ::redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("apura:leader")
        .arg("someone-else")
        .ignore()
        .cmd("PUBLISH")
        .arg(&channel)
        .arg("theft")
        .ignore()
        .query_async(&mut con)
        .await
        .unwrap();
    let (written, error) = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert!(written >= 1, "no cycle went through before the theft");
    assert!(
        error.contains("does not hold the leader lock"),
        "the writer stopped on: {error}"
    );
    // Every message up to the marker is a cycle; none follows it.
    let mut messages = pubsub.on_message();
    let mut before = 0;
    loop {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        if msg.get_payload_bytes() == b"theft" {
            break;
        }
        before += 1;
    }
    assert_eq!(
        before, written,
        "every acknowledged cycle came before the theft"
    );
    let after = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(
        after.is_err(),
        "a cycle was published after the lock was taken"
    );
}

fn rand_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        % 200
}

/// The lock's key touched again and again while the leader writes (as its own renewal does, a
/// `PEXPIRE` every third of a ttl, here as fast as Redis answers): an `EXEC` refused because
/// of it is tried again, and a write is reported done only if it was done. Every cycle the
/// leader was told is published is on the channel and in the keys; none of the others is.
/// The touching stops for the last writes, which then go through: how many of the first ones
/// are refused depends on the machine's speed (all of them on a slow one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_because_the_lock_was_touched_is_never_reported_done() {
    let server = RedisServer::start().await;
    let leader = publisher(&server, Duration::from_secs(30)).await;
    let channel = leader.keys().cycles();
    let mut pubsub = server.client().get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let touching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut toucher = {
        let touching = touching.clone();
        let client = server.client();
        tokio::spawn(async move {
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let mut touches = 0u64;
            while touching.load(std::sync::atomic::Ordering::Relaxed) {
                let _: i64 = ::redis::cmd("PEXPIRE")
                    .arg("apura:leader")
                    .arg(30_000)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                touches += 1;
            }
            touches
        })
    };
    let mut done = Vec::new();
    let mut refused = 0;
    let mut touches = 0;
    for n in 0..45u64 {
        if n == 40 {
            touching.store(false, std::sync::atomic::Ordering::Relaxed);
            touches = (&mut toucher).await.unwrap();
        }
        let drafts = (0..500)
            .map(|i| padded(&format!("t-{i}"), n, 1_000))
            .collect();
        match leader.publish(drafts).await {
            Ok(cycle) => done.push(cycle.version),
            Err(e) => {
                assert!(
                    n < 40,
                    "a write failed with nobody touching the lock: {e:#}"
                );
                assert!(
                    format!("{e:#}").contains("kept changing"),
                    "unexpected failure: {e:#}"
                );
                refused += 1;
            }
        }
    }
    assert!(touches > 100, "the lock was touched {touches} times only");
    assert!(
        refused > 0,
        "no write was refused while the lock was touched {touches} times: nothing was tested"
    );
    // The channel holds exactly the cycles reported done, in order.
    let mut messages = pubsub.on_message();
    let mut heard = Vec::new();
    while let Ok(Some(msg)) =
        tokio::time::timeout(Duration::from_millis(500), messages.next()).await
    {
        let payload = msg.get_payload_bytes();
        heard.push(u64::from_be_bytes(payload[1..9].try_into().unwrap()));
    }
    assert_eq!(heard, done, "{refused} writes refused");
    // And the keys hold the last of them.
    let snapshot = leader.snapshot().await.unwrap();
    assert!(
        snapshot.iter().all(|d| d.version == *done.last().unwrap()),
        "the keys hold a version that was not reported done"
    );
}

/// A change of more than 256 KiB (every city of a 1,500-city state moving) reaches a gateway as
/// several cycles, each travelling whole on the channel: the gateway holds every city at its new
/// version, a stream resuming from before the change gets every topic it follows, and no
/// gateway read documents back from Redis on the way (no `MGET` while the change went out).
#[tokio::test]
async fn a_large_change_reaches_the_gateway_in_several_whole_cycles_without_a_bulk_read() {
    let server = RedisServer::start().await;
    let names: Vec<&'static str> = (0..1_500)
        .map(|i| &*Box::leak(format!("Cidade {i:04}").into_boxed_str()))
        .collect();
    let state = |n: u64| -> Vec<City> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                City::new(3_500_001 + i as u32, name, "SP")
                    .votes(&[100 * n + i as u64, 50], 10.0 * n as f64)
            })
            .collect()
    };
    let feed = Feed::new(&state(1));
    let ingest = IngestProcess::start(&server, &feed, TTL).await;
    let gw = RedisGateway::start(&server).await;
    let last = "mayors-sp-cidade-1499";
    let deadline = Instant::now() + WAIT;
    while !gw.hub.is_ready() || gw.hub.get(last).is_none() {
        assert!(
            Instant::now() < deadline,
            "the first publication never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = gw.hub.complete().load(std::sync::atomic::Ordering::Relaxed);
    let cycles_before = ingest.cycles_published();
    let mut sse = Sse::connect(
        &gw.url(&format!(
            "/events?topics=brazil,mayors-sp-cidade-0000,{last}"
        )),
        Some(before),
    )
    .await;
    let _: () = server
        .query(::redis::cmd("CONFIG").arg("RESETSTAT"))
        .await
        .unwrap();

    feed.write(&state(2));
    let mut topics = Vec::new();
    while topics.len() < 3 {
        let ev = sse.next(WAIT).await.expect("every followed topic changed");
        assert!(ev.data["version"].as_u64().unwrap() > before);
        topics.push(ev.data["topic"].as_str().unwrap().to_string());
    }
    topics.sort();
    assert_eq!(topics, ["brazil", "mayors-sp-cidade-0000", last]);
    eventually(|| {
        names.iter().all(|n| {
            let topic = format!("mayors-sp-{}", n.to_lowercase().replace(' ', "-"));
            gw.hub.get(&topic).is_some_and(|e| e.version > before)
        })
    })
    .await;
    let cycles = ingest.cycles_published() - cycles_before;
    assert!(cycles >= 3, "the change went out as {cycles} cycle(s)");
    let stats = server.info("commandstats").await;
    assert!(stats.contains("cmdstat_publish:calls="), "{stats}");
    assert!(!stats.contains("cmdstat_mget"), "a bulk read: {stats}");
}
