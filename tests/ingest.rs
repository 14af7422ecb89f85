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
    let text = reqwest::get(stack.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
        let text = reqwest::get(stack.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("metric line {line:?} never appeared");
}
