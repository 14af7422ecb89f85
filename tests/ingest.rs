//! Ingest end to end on files: only changes are published, and a bad feed changes nothing.

mod common;

use std::time::Duration;

use common::*;

async fn get(stack: &Stack, path: &str) -> serde_json::Value {
    reqwest::get(stack.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metric(stack: &Stack, name: &str) -> String {
    let text = get_text(&stack.url("/metrics")).await;
    text.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn one_changed_city_publishes_its_topics_its_state_and_brazil_only() {
    let mut cs = cities();
    let stack = Stack::start(&cs).await;
    let before_rj = get(&stack, "/cities/mayors-rj-rio-de-janeiro.json").await;
    let before_al = get(&stack, "/states/al.json").await;
    let v0 = before_rj["version"].as_u64().unwrap();

    cs[0] = cs[0].clone().votes(&[650, 420], 12.0);
    stack.write_feed(&cs);
    let mut sse = Sse::connect(
        &stack.url("/events?topics=mayors-sp-sao-paulo,state-sp,brazil,state-al,mayors-rj-rio-de-janeiro,cities"),
        Some(v0),
    )
    .await;
    let mut topics = Vec::new();
    while let Some(ev) = sse.next(Duration::from_millis(700)).await {
        topics.push(ev.data["topic"].as_str().unwrap().to_string());
    }
    topics.sort();
    assert_eq!(topics, ["brazil", "mayors-sp-sao-paulo", "state-sp"]);
    assert_eq!(
        get(&stack, "/cities/mayors-rj-rio-de-janeiro.json").await,
        before_rj
    );
    assert_eq!(get(&stack, "/states/al.json").await, before_al);
}

#[tokio::test]
async fn an_unchanged_feed_publishes_nothing() {
    let cs = cities();
    let stack = Stack::start(&cs).await;
    let v = get(&stack, "/brazil.json").await["version"].clone();
    // Rewritten with the same content: fetched again (new mtime), parsed, nothing differs.
    stack.write_feed(&cs);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(&stack, "apura_cycles_published_total").await,
        "apura_cycles_published_total 1"
    );
    assert_eq!(get(&stack, "/brazil.json").await["version"], v);
}

#[tokio::test]
async fn a_truncated_feed_or_votes_above_the_total_keep_every_previous_document() {
    let mut cs = cities();
    let stack = Stack::start(&cs).await;
    let before_sp = get(&stack, "/cities/mayors-sp-sao-paulo.json").await;
    let before_br = get(&stack, "/brazil.json").await;

    cs[0] = cs[0].clone().votes(&[999, 1], 90.0);
    let good = feed_json(&cs);
    stack.write_raw_feed(&good.as_bytes()[..good.len() / 2]);
    eventually_metric(&stack, "apura_feed_errors_total{kind=\"malformed\"} 1").await;
    assert_eq!(
        get(&stack, "/cities/mayors-sp-sao-paulo.json").await,
        before_sp
    );
    assert_eq!(get(&stack, "/brazil.json").await, before_br);

    // Rio's total below its votes: the whole file is refused, São Paulo's good change too.
    let bad = good.replace(r#""t": "400""#, r#""t": "300""#);
    assert_ne!(bad, good);
    stack.write_raw_feed(bad.as_bytes());
    eventually_metric(&stack, "apura_feed_errors_total{kind=\"invalid\"} 1").await;
    assert_eq!(
        get(&stack, "/cities/mayors-sp-sao-paulo.json").await,
        before_sp
    );

    // The fixed file goes through.
    stack.write_raw_feed(good.as_bytes());
    let mut tries = 0;
    while get(&stack, "/cities/mayors-sp-sao-paulo.json").await["candidates"][0]["votes"] != 999 {
        tries += 1;
        assert!(tries < 200, "fixed feed not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually_metric(stack: &Stack, line: &str) {
    for _ in 0..250 {
        let text = get_text(&stack.url("/metrics")).await;
        if text.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("metric line {line:?} never appeared");
}

/// An ingest on its own embedded bus, fed from files, driven by hand.
async fn ingest_on(
    bus: &std::sync::Arc<apura::bus::embedded::EmbeddedBus>,
    feed: &common::redis::Feed,
) -> apura::ingest::Ingest {
    let fetcher = apura::fetch::Fetcher::new(Duration::from_secs(5), 1 << 20).unwrap();
    let list =
        apura::ingest::load_municipalities(feed.args.municipalities.as_deref().unwrap(), &fetcher)
            .await
            .unwrap();
    apura::ingest::Ingest::new(
        std::sync::Arc::new(list),
        &feed.args,
        fetcher,
        bus.clone(),
        std::sync::Arc::default(),
    )
}

fn zone_breakdown(votes: u64) -> apura::model::ZoneBreakdown {
    let zone = |name: &str| apura::model::ZoneResult {
        zone: name.to_string(),
        turnout: votes,
        blank: 0,
        null: 0,
        valid: votes,
        results: vec![apura::model::ZoneVotes {
            number: 45,
            votes,
            percent: 100.0,
        }],
    };
    apura::model::ZoneBreakdown {
        round: 1,
        source_time: None,
        finished: false,
        percent: 10.0,
        candidates: Vec::new(),
        total: zone("0000"),
        zones: vec![zone("0001")],
    }
}

fn listed_topics(cycle: &apura::bus::Cycle, ibge: u64) -> Vec<String> {
    let index = cycle
        .documents
        .iter()
        .find(|d| &*d.topic == "cities")
        .expect("the index in the cycle");
    let index: serde_json::Value = serde_json::from_slice(&index.json).unwrap();
    let city = index["cities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ibge"] == ibge)
        .unwrap();
    serde_json::from_value(city["topics"].clone()).unwrap()
}

#[tokio::test]
async fn a_new_leader_keeps_the_stored_zone_topics_in_the_index_until_its_zone_round() {
    let feed = common::redis::Feed::new(&cities());
    let bus = std::sync::Arc::new(apura::bus::embedded::EmbeddedBus::new());
    let mut first = ingest_on(&bus, &feed).await;
    first.poll().await.unwrap();
    let cycle = first
        .apply_zones(vec![(3550308, zone_breakdown(10))])
        .await
        .unwrap()
        .pop()
        .expect("zones published");
    assert_eq!(
        listed_topics(&cycle, 3550308),
        ["mayors-sp-sao-paulo", "zones-sp-sao-paulo"]
    );

    // Another process takes over: it has the feed files after one poll, no zone files yet.
    let mut second = ingest_on(&bus, &feed).await;
    second.seed_from_bus().await.unwrap();
    let mut cs = cities();
    cs[0] = cs[0].clone().votes(&[700, 500], 20.0);
    feed.write(&cs);
    let cycle = second
        .poll()
        .await
        .unwrap()
        .cycle
        .expect("São Paulo changed");
    let topics: Vec<&str> = cycle.documents.iter().map(|d| &*d.topic).collect();
    assert!(
        !topics.contains(&"cities"),
        "{topics:?}: the index did not change"
    );
}

#[tokio::test]
async fn held_for_zones_the_first_cycle_on_an_empty_store_is_the_whole_state() {
    let feed = common::redis::Feed::new(&cities());
    let bus = std::sync::Arc::new(apura::bus::embedded::EmbeddedBus::new());
    let mut ingest = ingest_on(&bus, &feed).await;
    ingest.hold_for_zones(Duration::from_secs(60));
    assert!(ingest.poll().await.unwrap().cycle.is_none(), "held");
    let cycle = ingest
        .apply_zones(vec![(3550308, zone_breakdown(10))])
        .await
        .unwrap()
        .pop()
        .expect("everything at once");
    assert_eq!(
        cycle.documents.len(),
        9,
        "3 cities, their zones, 3 states, brazil, the index"
    );
    assert_eq!(
        listed_topics(&cycle, 3550308),
        ["mayors-sp-sao-paulo", "zones-sp-sao-paulo"]
    );

    // No zone round in time: the rest goes out without it.
    let other = std::sync::Arc::new(apura::bus::embedded::EmbeddedBus::new());
    let mut ingest = ingest_on(&other, &feed).await;
    ingest.hold_for_zones(Duration::ZERO);
    let cycle = ingest.poll().await.unwrap().cycle.expect("published");
    assert_eq!(cycle.documents.len(), 8);
}
