//! `/status` for the desk: the audience per topic equals the clients attached (SSE and
//! WebSocket, over real sockets) in the JSON, in the HTML page and in the bounded metrics;
//! quarantined cities come from the documents, escaped on the page; and `--admin-listen` moves
//! `/status` and `/metrics` off the public port.

mod common;

use std::time::Duration;

use apura::bus::Bus;
use apura::documents::Draft;
use common::process::{free_addr, metric};
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const SP: &str = "mayors-sp-sao-paulo";

/// `/status.json` once `f` holds for it (the counts follow connections that open and close
/// asynchronously), failing after 10 s with the last report.
async fn status_when(url: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, status) = get_status_json(url).await;
        assert_eq!(code, 200);
        if f(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never as expected: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The top topics of a report, as `(topic, subscribers)`.
fn top(status: &Value) -> Vec<(String, u64)> {
    status["audience"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap().to_string(),
                t["subscribers"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Subscriptions of one kind of topic in a report.
fn kind(status: &Value, kind: &str) -> u64 {
    status["audience"]["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == kind)
        .unwrap_or_else(|| panic!("no kind {kind}"))["subscriptions"]
        .as_u64()
        .unwrap()
}

fn expected(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

#[tokio::test]
async fn status_counts_exactly_the_clients_attached_per_topic_and_kind() {
    let gw = Gateway::start(gateway_args()).await;
    gw.publish(&[
        (SP, 1),
        ("state-sp", 1),
        ("brazil", 1),
        ("councillors-rj-rio-de-janeiro", 1),
    ])
    .await;
    let url = gw.url("/status.json");
    let before = status_when(&url, |s| s["ready"] == true).await;
    assert_eq!(top(&before), vec![], "nobody attached yet");
    assert_eq!(before["data"]["topics"], 4);

    // Three SSE streams on São Paulo and its state; two WebSockets on São Paulo and Brazil.
    let mut sse = Vec::new();
    for _ in 0..3 {
        let mut s = Sse::connect(&gw.url(&format!("/events?topics={SP},state-sp")), None).await;
        assert!(s.next(WAIT).await.is_some(), "a snapshot");
        sse.push(s);
    }
    let mut ws = Vec::new();
    for _ in 0..2 {
        let mut w = ws_connect(gw.addr).await;
        ws_send(
            &mut w,
            json!({"type": "subscribe", "topics": [SP, "brazil"]}),
        )
        .await;
        assert!(ws_next(&mut w, WAIT).await.is_some(), "a snapshot");
        assert!(ws_next(&mut w, WAIT).await.is_some(), "a snapshot");
        ws.push(w);
    }

    let want = expected(&[(SP, 5), ("state-sp", 3), ("brazil", 2)]);
    let status = status_when(&url, |s| top(s) == want).await;
    assert_eq!(kind(&status, "mayors"), 5);
    assert_eq!(kind(&status, "state"), 3);
    assert_eq!(kind(&status, "brazil"), 2);
    assert_eq!(kind(&status, "councillors"), 0);
    assert_eq!(status["audience"]["subscriptions"], 10);
    assert_eq!(status["connections"]["sse"], 3);
    assert_eq!(status["connections"]["ws"], 2);
    assert_eq!(status["bus"]["up"], true);

    // The same report on /status to a client asking for JSON, and as the page.
    let r = reqwest::Client::new()
        .get(gw.url("/status"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(top(&r.json().await.unwrap()), want);
    let page = reqwest::Client::new()
        .get(gw.url("/status"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = page.text().await.unwrap();
    for (topic, n) in &want {
        let row =
            format!(r#"<tr data-topic="{topic}"><td>{topic}</td><td class="n subs">{n}</td></tr>"#);
        assert!(page.contains(&row), "{row} not in the page:\n{page}");
    }
    assert!(page.contains(r#"<td class="n" id="subscriptions">10</td>"#));
    assert!(page.contains(
        r#"<tr data-kind="mayors"><td>mayors</td><td class="n">1</td><td class="n subs">5</td>"#
    ));
    assert!(!page.contains("<script"), "the page runs no script");

    // Bounded metrics: a series per kind, and the top topics.
    let metrics = get_text(&gw.url("/metrics")).await;
    assert_eq!(
        metric(
            &metrics,
            &format!(r#"apura_topic_subscribers{{topic="{SP}"}}"#)
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(&metrics, r#"apura_subscriptions_by_kind{kind="state"}"#),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"apura_subscriptions_by_kind{kind="councillors"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        metrics.matches("apura_subscriptions_by_kind{").count(),
        7,
        "one series per kind of topic"
    );

    // Closing clients lowers the counts: one stream and one WebSocket leave.
    drop(sse.pop());
    drop(ws.pop());
    let want = expected(&[(SP, 3), ("state-sp", 2), ("brazil", 1)]);
    let status = status_when(&url, |s| top(s) == want).await;
    assert_eq!(kind(&status, "mayors"), 3);
    assert_eq!(status["audience"]["subscriptions"], 6);

    // A WebSocket that unsubscribes from São Paulo is no longer counted there.
    ws_send(&mut ws[0], json!({"type": "unsubscribe", "topics": [SP]})).await;
    let want = expected(&[(SP, 2), ("state-sp", 2), ("brazil", 1)]);
    status_when(&url, |s| top(s) == want).await;

    drop((sse, ws));
    status_when(&url, |s| {
        top(s).is_empty() && s["audience"]["subscriptions"] == 0
    })
    .await;
}

#[tokio::test]
async fn quarantined_cities_are_listed_with_their_reason_and_escaped_on_the_page() {
    let gw = Gateway::start(gateway_args()).await;
    let held = json!({"since": "2026-10-04T20:15:00Z", "reason": "negative", "detail": "x"});
    let docs = [
        (
            "state-sp",
            json!({"topic": "state-sp", "kind": "state", "uf": "SP", "cities": [
                {"ibge": 1, "name": "<b>Sao Paulo</b>", "slug": "sao-paulo", "held": true},
                {"ibge": 2, "name": "Campinas", "slug": "campinas"},
            ]}),
        ),
        (SP, json!({"topic": SP, "kind": "city", "held": held})),
        (
            "brazil",
            json!({"topic": "brazil", "kind": "brazil", "source": "simulation"}),
        ),
    ];
    let drafts = docs
        .iter()
        .map(|(topic, body)| Draft {
            topic: topic.to_string(),
            body: body.to_string().into(),
        })
        .collect();
    let cycle = gw.bus.publish(drafts).await.unwrap();
    eventually(|| {
        gw.hub
            .get("brazil")
            .is_some_and(|e| e.version == cycle.version)
    })
    .await;

    let status = status_when(&gw.url("/status.json"), |s| s["ready"] == true).await;
    assert_eq!(
        status["quarantined"],
        json!([{"topic": SP, "name": "<b>Sao Paulo</b>", "uf": "sp",
                "since": "2026-10-04T20:15:00Z", "reason": "negative"}])
    );
    assert_eq!(status["data"]["source"], "simulation");
    assert_eq!(status["data"]["version"], cycle.version);

    let page = get_text(&gw.url("/status")).await;
    assert!(page.contains("Quarantined cities (1)"));
    assert!(page.contains("<td>&lt;b&gt;Sao Paulo&lt;/b&gt;</td><td>SP</td><td>2026-10-04T20:15:00Z</td><td>negative</td>"));
    assert!(
        !page.contains("<b>Sao Paulo"),
        "a name is text, never markup"
    );
}

#[tokio::test]
async fn admin_listen_serves_status_and_metrics_there_and_not_on_the_public_port() {
    let admin = free_addr();
    let gw = Gateway::start(apura::gateway::GatewayArgs {
        admin_listen: Some(admin),
        ..gateway_args()
    })
    .await;
    gw.publish(&[(SP, 1)]).await;
    for path in ["/status", "/status.json", "/metrics"] {
        assert_eq!(
            status(&gw.url(path)).await,
            404,
            "{path} on the public port"
        );
        assert_eq!(
            status(&format!("http://{admin}{path}")).await,
            200,
            "{path} on the admin port"
        );
    }
    // The public port still serves what readers need.
    assert_eq!(status(&gw.url(&format!("/cities/{SP}.json"))).await, 200);
    assert_eq!(status(&gw.url("/readyz")).await, 200);
    // The admin port serves nothing of the readers'.
    assert_eq!(
        status(&format!("http://{admin}/cities/{SP}.json")).await,
        404
    );

    let mut s = Sse::connect(&gw.url(&format!("/events?topics={SP}")), None).await;
    assert!(s.next(WAIT).await.is_some());
    let status = status_when(&format!("http://{admin}/status.json"), |s| {
        top(s) == expected(&[(SP, 1)])
    })
    .await;
    assert_eq!(status["connections"]["sse"], 1);
    let metrics = get_text(&format!("http://{admin}/metrics")).await;
    assert_eq!(
        metric(
            &metrics,
            &format!(r#"apura_topic_subscribers{{topic="{SP}"}}"#)
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn status_asked_in_a_loop_is_made_once_a_second_and_never_frozen() {
    let gw = Gateway::start(gateway_args()).await;
    gw.publish(&[(SP, 1)]).await;
    let url = gw.url("/status.json");
    status_when(&url, |s| s["ready"] == true).await;
    // Past that report's second, a report is made now; a stream opened right after is not in
    // the reports of this second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let made = std::time::Instant::now();
    let (_, before) = get_status_json(&url).await;
    let sp_subscribers = format!(r#"apura_topic_subscribers{{topic="{SP}"}}"#);
    let mut s = Sse::connect(&gw.url(&format!("/events?topics={SP}")), None).await;
    assert!(s.next(WAIT).await.is_some(), "a snapshot");
    let burst: Vec<Value> =
        futures_util::future::join_all((0..20).map(|_| async { get_status_json(&url).await.1 }))
            .await;
    // The documented promise: the requests of one second share one report.
    if made.elapsed() < Duration::from_secs(1) {
        for again in &burst {
            assert_eq!(
                again["connections"], before["connections"],
                "the same report"
            );
        }
        // `/metrics` counts the audience from the same report.
        let metrics = get_text(&gw.url("/metrics")).await;
        if made.elapsed() < Duration::from_secs(1) {
            assert_eq!(metric(&metrics, &sp_subscribers), None, "{metrics}");
        }
    } else {
        eprintln!("the burst came after the report's second: its sharing is not checked");
    }
    // The next second's report counts the stream.
    let after = status_when(&url, |s| s["connections"]["sse"] == 1).await;
    assert_eq!(top(&after), expected(&[(SP, 1)]));
    let metrics = get_text(&gw.url("/metrics")).await;
    assert_eq!(metric(&metrics, &sp_subscribers), Some(1.0), "{metrics}");
    assert!(made.elapsed() < WAIT);
}
