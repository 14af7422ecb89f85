//! What a monitoring stack reads: `/metrics` as Prometheus (`promtool check metrics`, the text
//! format 0.0.4) and as an OpenMetrics parser (Python's `prometheus_client`, on the format a
//! scraper asks for) read it, with the delivery lag histogram filled by real streams; and the
//! files of deploy/ built on it: the alert rules, checked and unit-tested by `promtool`, and the
//! Grafana dashboard, valid JSON naming only metrics that exist.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use apura::metrics::Metrics;
use common::process::{python, repo, require};
use common::*;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `/metrics` of a stack (ingest and gateway) after an SSE and a WebSocket subscriber each got a
/// live change and a reader fetched a document (then, with `faults`, after a malformed feed
/// file): the default exposition and the OpenMetrics one, each with its content type.
async fn metrics_after_a_change(faults: bool) -> ((String, String), (String, String)) {
    let mut cs = cities();
    let stack = Stack::start(&cs).await;
    let mut sse = Sse::connect(&stack.url("/events?topics=brazil"), None).await;
    assert_eq!(sse.next(WAIT).await.expect("a snapshot").event, "snapshot");
    let mut ws = ws_connect(stack.addr).await;
    ws_send(&mut ws, json!({"type": "subscribe", "topics": ["brazil"]})).await;
    assert_eq!(ws_next(&mut ws, WAIT).await.unwrap()["type"], "snapshot");
    cs[0] = cs[0].clone().votes(&[900, 700], 40.0);
    stack.write_feed(&cs);
    assert_eq!(sse.next(WAIT).await.expect("an update").event, "update");
    assert_eq!(ws_next(&mut ws, WAIT).await.unwrap()["type"], "update");
    get_json(&stack.url("/brazil.json")).await;
    if faults {
        stack.write_raw_feed(b"{\"municipios\": ");
        counted(&stack, "apura_feed_errors_total{kind=\"malformed\"} 1\n").await;
    }
    let http = reqwest::Client::new();
    let scrape = |accept: Option<&'static str>| {
        let mut req = http.get(stack.url("/metrics"));
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
            (ct, resp.text().await.unwrap())
        }
    };
    // What Prometheus sends.
    let prometheus_accept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    (scrape(None).await, scrape(Some(prometheus_accept)).await)
}

/// Wait until the stack's `/metrics` has `sample`.
async fn counted(stack: &Stack, sample: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = get_text(&stack.url("/metrics")).await;
        if text.contains(sample) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {sample} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run `program args` with `input` on its standard input; answers its exit success and output.
fn run_with_input(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Parses OpenMetrics from stdin with `prometheus_client` and prints one JSON object: each
/// family's type, and each sample's value by name and labels.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
types, samples = {}, {}
for f in text_string_to_metric_families(sys.stdin.read()):
    types[f.name] = f.type
    for s in f.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps({"types": types, "samples": samples}))
"#;

#[tokio::test]
async fn metrics_pass_promtool_and_the_openmetrics_parser_with_the_lag_of_real_deliveries() {
    require("promtool");
    let ((text_type, text), (om_type, om)) = metrics_after_a_change(false).await;
    assert_eq!(text_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(om_type, OPENMETRICS);

    let (ok, lint) = run_with_input("promtool", &["check", "metrics"], &text);
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}\n{text}"
    );
    for sample in [
        "apura_delivery_lag_seconds_count{kind=\"sse\"} ",
        "apura_build_info{version=\"",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
    ] {
        assert!(text.contains(sample), "{sample} in\n{text}");
    }

    let (ok, parsed) = run_with_input(&python(), &["-c", PARSE], &om);
    assert!(
        ok,
        "prometheus_client's OpenMetrics parser (python3-prometheus-client) refused it:\n{parsed}\n{om}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&parsed).unwrap();
    let (types, samples) = (&parsed["types"], &parsed["samples"]);
    for (family, kind) in [
        ("apura_delivery_lag_seconds", "histogram"),
        ("apura_ingest_cycle_duration_seconds", "histogram"),
        ("apura_feed_fetch_duration_seconds", "histogram"),
        ("apura_bus_call_duration_seconds", "histogram"),
        ("apura_sse_connections", "gauge"),
        ("apura_sse_connections_opened", "counter"),
        ("apura_ws_connections", "gauge"),
        ("apura_ws_connections_opened", "counter"),
        ("apura_build", "info"),
        ("process_open_fds", "gauge"),
    ] {
        assert_eq!(types[family], kind, "{family}");
    }
    // Each subscriber's live change is one lag sample of its kind; snapshots are not counted.
    for kind in ["sse", "ws"] {
        let count = &samples[format!("apura_delivery_lag_seconds_count{{kind={kind}}}")];
        assert_eq!(count, 1, "{kind} lag samples");
        let sum = samples[format!("apura_delivery_lag_seconds_sum{{kind={kind}}}")]
            .as_f64()
            .unwrap();
        assert!(
            (0.0..WAIT.as_secs_f64()).contains(&sum),
            "{kind} lag {sum} s"
        );
    }
    // Before a first error, every kind of error is served at 0: a series that first appeared
    // at 1 would show no rise to `rate()` or `increase()`, and the first bad file no alert.
    for kind in apura::metrics::FEED_ERROR_KINDS {
        assert_eq!(
            samples[format!("apura_feed_errors_total{{kind={kind}}}")],
            0,
            "{kind}"
        );
    }
    for reason in apura::feed::FeedError::REASONS {
        let sample = format!("apura_city_rejections_total{{reason={reason}}}");
        assert_eq!(samples[sample], 0, "{reason}");
    }
    assert_eq!(types["apura_source_detection_delay_seconds"], "histogram");
    assert_eq!(samples["apura_sse_connections{}"], 1);
    assert_eq!(samples["apura_get_requests_total{}"], 1);
    // The stack runs its own ingest: it says so as a Redis ingest holding the lock would, and
    // ApuraNoIngestLeader stays quiet for `apura run` with every rule kept.
    assert_eq!(types["apura_ingest_leader"], "gauge");
    assert_eq!(samples["apura_ingest_leader{}"], 1);
    assert!(
        samples["apura_feed_fetch_duration_seconds_count{outcome=modified,source=consolidated}"]
            .as_f64()
            .unwrap()
            >= 2.0
    );
}

/// Every sample name of a text exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Every `apura_` metric name in `text`.
fn apura_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("apura_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.insert(name);
    }
    names
}

/// The names of a stack's `/metrics` and of an ingest's (`apura_ingest_leader`).
async fn names_that_exist() -> BTreeSet<String> {
    let ((_, gateway), _) = metrics_after_a_change(true).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(apura::ingest::leader::serve_metrics(
        listener,
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(true)),
        stop,
    ));
    let ingest = get_text(&format!("http://{addr}/metrics")).await;
    assert!(ingest.contains("\napura_ingest_leader 1\n"), "{ingest}");
    let mut names = sample_names(&gateway);
    names.extend(sample_names(&ingest));
    names
}

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_name_only_metrics_that_exist() {
    let exist = names_that_exist().await;
    let dashboard = std::fs::read_to_string(repo().join("deploy/grafana/apura.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut exprs = String::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}: no query", p["title"]);
        for t in targets {
            exprs += t["expr"].as_str().expect("a PromQL expression");
            exprs.push('\n');
        }
    }
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    for (file, text) in [("apura.json", &exprs), ("alerts.yml", &rules)] {
        let used = apura_names(text);
        let missing: Vec<_> = used.difference(&exist).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics /metrics lacks: {missing:?}"
        );
    }
    // What the desk asks about is on the dashboard.
    for name in [
        "apura_delivery_lag_seconds_bucket",
        "apura_data_age_seconds",
        "apura_ingest_leader",
        "apura_quarantined_cities",
        "apura_bus_up",
        "apura_sse_connections",
    ] {
        assert!(exprs.contains(name), "the dashboard shows {name}");
    }
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    require("promtool");
    let dir = repo().join("deploy/prometheus");
    let promtool = |args: &[&str]| {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        text
    };
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 5 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every rule has a unit test that makes it fire.
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            let fires = tests
                .split("alertname: ")
                .skip(1)
                .any(|t| t.starts_with(name) && !t.lines().nth(1).unwrap_or("").contains("[]"));
            assert!(fires, "{name}: no test where it fires");
        }
    }
}
