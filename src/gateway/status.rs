//! `/status` for the desk: what this gateway holds and who listens to it, as JSON
//! (`/status.json`, or `/status` with `Accept: application/json`) and as a small HTML page that
//! refreshes itself. Read-only, computed on request, and without secrets (no address of Redis
//! or of the feed, no client address).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::hub::{Hub, KindCount};
use crate::bus::now_millis;
use crate::documents::BRAZIL_TOPIC;

/// Topics listed by `/status`, most subscribers first.
pub const TOP_TOPICS: usize = 50;
/// Seconds between two refreshes of the HTML page.
const REFRESH_SECONDS: u32 = 5;

/// How long one report answers every request for `/status` and `/status.json`. A report reads
/// every state document and counts the subscribers of every topic: milliseconds of CPU with a
/// whole country loaded, where a document GET costs microseconds. On the public port a client
/// asking for it in a loop then costs the gateway one report a second, not one per request.
pub const REPORT_TTL: Duration = Duration::from_secs(1);

/// The last report made, and when: shared by the requests of one [`REPORT_TTL`].
#[derive(Default)]
pub struct Reports(tokio::sync::Mutex<Option<(Instant, Arc<Status>)>>);

impl Reports {
    /// A report at most [`REPORT_TTL`] old. The requests that arrive while one is made wait for
    /// it rather than make their own.
    pub async fn current(&self, s: &AppState) -> Arc<Status> {
        let mut last = self.0.lock().await;
        if let Some((at, report)) = &*last
            && at.elapsed() < REPORT_TTL
        {
            return report.clone();
        }
        let fresh = Arc::new(report(s));
        *last = Some((Instant::now(), fresh.clone()));
        fresh
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The version of apura this gateway runs.
    pub apura: &'static str,
    /// When this report was made (RFC 3339, UTC).
    pub generated_at: String,
    /// `/readyz` would answer 200: the documents are loaded and no drain is under way.
    pub ready: bool,
    pub data: Data,
    pub bus: Bus,
    pub connections: Connections,
    pub audience: AudienceReport,
    /// Cities whose mayor race shows its last good results (quarantined by the ingest), as the
    /// state documents mark them.
    pub quarantined: Vec<QuarantinedCity>,
}

/// What the gateway holds.
#[derive(Debug, Serialize)]
pub struct Data {
    /// What feeds the documents, as the `brazil` document says: `consolidated`, `tse`,
    /// `simulation` (absent before it is loaded).
    pub source: Option<String>,
    /// The last version whose whole cycle is applied.
    pub version: u64,
    pub topics: usize,
    /// When the newest document was published (RFC 3339), and its age in seconds.
    pub published_at: Option<String>,
    pub age_seconds: Option<f64>,
    /// Per kind of topic.
    pub kinds: Vec<KindFreshness>,
}

#[derive(Debug, Serialize)]
pub struct KindFreshness {
    pub kind: &'static str,
    pub topics: usize,
    pub version: u64,
    pub published_at: Option<String>,
    pub age_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Bus {
    /// Whether the bus (Redis, or the embedded bus) answered this gateway's last call.
    pub up: bool,
}

#[derive(Debug, Serialize)]
pub struct Connections {
    pub sse: i64,
    pub ws: i64,
    /// Client connections of every kind (streams, requests, waiting).
    pub open: i64,
}

#[derive(Debug, Serialize)]
pub struct AudienceReport {
    /// Open subscriptions, all topics.
    pub subscriptions: u64,
    pub by_kind: Vec<KindCount>,
    /// The [`TOP_TOPICS`] topics with the most subscribers.
    pub top: Vec<TopicCount>,
}

#[derive(Debug, Serialize)]
pub struct TopicCount {
    pub topic: String,
    pub subscribers: u64,
}

#[derive(Debug, Serialize)]
pub struct QuarantinedCity {
    pub topic: String,
    pub name: String,
    pub uf: String,
    /// Since when and why, as the city's document says.
    pub since: Option<String>,
    pub reason: Option<String>,
}

fn rfc3339(ms: i64) -> Option<String> {
    (ms > 0).then(|| {
        let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    })
}

fn age(ms: i64, now: i64) -> Option<f64> {
    (ms > 0).then(|| (now - ms).max(0) as f64 / 1000.0)
}

/// Make the report now.
pub fn report(s: &AppState) -> Status {
    let hub = &s.hub;
    let now = now_millis();
    let freshness = hub.freshness();
    let newest = freshness.iter().map(|k| k.3).max().unwrap_or(0);
    let audience = hub.audience(TOP_TOPICS);
    let source = hub
        .get(BRAZIL_TOPIC)
        .and_then(|enc| serde_json::from_slice::<Value>(&enc.body).ok())
        .and_then(|v| v["source"].as_str().map(str::to_string));
    Status {
        apura: env!("CARGO_PKG_VERSION"),
        generated_at: rfc3339(now).unwrap_or_default(),
        ready: hub.is_ready() && !s.shutdown.is_cancelled(),
        data: Data {
            source,
            version: hub.complete().load(Relaxed),
            topics: hub.len(),
            published_at: rfc3339(newest),
            age_seconds: age(newest, now),
            kinds: freshness
                .iter()
                .filter(|k| k.1 > 0)
                .map(|&(kind, topics, version, at)| KindFreshness {
                    kind: kind.label(),
                    topics,
                    version,
                    published_at: rfc3339(at),
                    age_seconds: age(at, now),
                })
                .collect(),
        },
        bus: Bus {
            up: s.metrics.bus_up.load(Relaxed) == 1,
        },
        connections: Connections {
            sse: s.metrics.sse_connections.load(Relaxed),
            ws: s.metrics.ws_connections.load(Relaxed),
            open: s.metrics.open_connections.load(Relaxed),
        },
        audience: AudienceReport {
            subscriptions: audience.subscriptions,
            by_kind: audience.kinds,
            top: audience
                .top
                .into_iter()
                .map(|(topic, subscribers)| TopicCount {
                    topic: topic.to_string(),
                    subscribers,
                })
                .collect(),
        },
        quarantined: quarantined(hub),
    }
}

/// The cities the state documents mark `held`, with the reason their mayor document gives.
fn quarantined(hub: &Hub) -> Vec<QuarantinedCity> {
    let mut out = Vec::new();
    for state in hub.starting_with("state-") {
        let Ok(doc) = serde_json::from_slice::<Value>(&state.body) else {
            continue;
        };
        let uf = doc["uf"].as_str().unwrap_or_default().to_ascii_lowercase();
        let Some(cities) = doc["cities"].as_array() else {
            continue;
        };
        for city in cities.iter().filter(|c| c["held"] == true) {
            let slug = city["slug"].as_str().unwrap_or_default();
            let topic = format!("mayors-{uf}-{slug}");
            let held = hub
                .get(&topic)
                .and_then(|enc| serde_json::from_slice::<Value>(&enc.body).ok())
                .map(|v| v["held"].clone())
                .unwrap_or(Value::Null);
            out.push(QuarantinedCity {
                name: city["name"].as_str().unwrap_or_default().to_string(),
                uf: uf.clone(),
                since: held["since"].as_str().map(str::to_string),
                reason: held["reason"].as_str().map(str::to_string),
                topic,
            });
        }
    }
    out.sort_by(|a, b| a.topic.cmp(&b.topic));
    out
}

/// Whether `Accept` prefers JSON to HTML: it names `application/json` and not `text/html`
/// (a browser names both, with `*/*`).
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// `GET /status`: the HTML page, or JSON to a client that asks for it.
pub async fn page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if wants_json(&headers) {
        return json(State(s)).await;
    }
    let body = html(&*s.reports.current(&s).await);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `GET /status.json`.
pub async fn json(State(s): State<AppState>) -> Response {
    let mut resp = axum::Json(&*s.reports.current(&s).await).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `text` with the characters HTML gives a meaning escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn or_dash(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "–".to_string(), escape)
}

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |s| format!("{s:.1} s"))
}

/// The page: self-contained (no script, no external asset), every string escaped.
pub fn html(st: &Status) -> String {
    use std::fmt::Write;
    let mut h = String::with_capacity(8192);
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>apura · status</title>
<style>
body {{ margin: 0; background: #f5f3ee; color: #16181d; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }}
header {{ background: #16181d; color: #fff; border-bottom: 4px solid #b3141c; padding: 14px 20px; }}
h1 {{ margin: 0; font: 700 20px/1.2 Georgia, "Times New Roman", serif; }}
h2 {{ font: 700 16px/1.2 Georgia, "Times New Roman", serif; margin: 0 0 8px; }}
main {{ max-width: 1100px; margin: 0 auto; padding: 16px 20px; display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); }}
section {{ background: #fff; border: 1px solid #e3e1da; padding: 12px 14px; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 3px 6px; border-bottom: 1px solid #e3e1da; }}
td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ color: #18864b; font-weight: 700; }} .bad {{ color: #b3141c; font-weight: 700; }}
.muted {{ color: #7b808a; }}
</style></head><body>
<header><h1>apura · status</h1><div class="muted">apura {} · {} · refreshes every {REFRESH_SECONDS} s</div></header>
<main>
"#,
        escape(st.apura),
        escape(&st.generated_at),
    );
    let flag = |b: bool| {
        format!(
            r#"<span class="{}">{}</span>"#,
            if b { "ok" } else { "bad" },
            yes_no(b)
        )
    };
    let _ = write!(
        h,
        r#"<section id="gateway"><h2>Gateway</h2><table>
<tr><th>Ready</th><td id="ready">{}</td></tr>
<tr><th>Bus up</th><td id="bus-up">{}</td></tr>
<tr><th>Source</th><td id="source">{}</td></tr>
<tr><th>Version</th><td class="n" id="version">{}</td></tr>
<tr><th>Topics</th><td class="n" id="topics">{}</td></tr>
<tr><th>Last published</th><td id="published-at">{}</td></tr>
<tr><th>Data age</th><td class="n" id="age">{}</td></tr>
<tr><th>SSE connections</th><td class="n" id="sse">{}</td></tr>
<tr><th>WebSocket connections</th><td class="n" id="ws">{}</td></tr>
<tr><th>Subscriptions</th><td class="n" id="subscriptions">{}</td></tr>
</table></section>
"#,
        flag(st.ready),
        flag(st.bus.up),
        or_dash(&st.data.source),
        st.data.version,
        st.data.topics,
        or_dash(&st.data.published_at),
        seconds(st.data.age_seconds),
        st.connections.sse,
        st.connections.ws,
        st.audience.subscriptions,
    );
    h.push_str(
        r#"<section id="kinds"><h2>By kind of topic</h2><table>
<tr><th>Kind</th><th class="n">Topics</th><th class="n">Subscriptions</th><th class="n">Version</th><th class="n">Age</th></tr>
"#,
    );
    for k in &st.audience.by_kind {
        let fresh = st.data.kinds.iter().find(|f| f.kind == k.kind.label());
        let _ = writeln!(
            h,
            r#"<tr data-kind="{kind}"><td>{kind}</td><td class="n">{}</td><td class="n subs">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            k.topics,
            k.subscriptions,
            fresh.map_or(0, |f| f.version),
            seconds(fresh.and_then(|f| f.age_seconds)),
            kind = escape(k.kind.label()),
        );
    }
    h.push_str("</table></section>\n");
    let _ = write!(
        h,
        r#"<section id="top"><h2>Top topics</h2>{}<table>
<tr><th>Topic</th><th class="n">Subscribers</th></tr>
"#,
        if st.audience.top.is_empty() {
            r#"<p class="muted">No subscriber.</p>"#
        } else {
            ""
        }
    );
    for t in &st.audience.top {
        let _ = writeln!(
            h,
            r#"<tr data-topic="{topic}"><td>{topic}</td><td class="n subs">{}</td></tr>"#,
            t.subscribers,
            topic = escape(&t.topic),
        );
    }
    h.push_str("</table></section>\n");
    let _ = writeln!(
        h,
        r#"<section id="quarantined"><h2>Quarantined cities ({})</h2>{}<table>"#,
        st.quarantined.len(),
        if st.quarantined.is_empty() {
            r#"<p class="muted">None.</p>"#
        } else {
            "<tr><th>City</th><th>UF</th><th>Since</th><th>Reason</th></tr>"
        }
    );
    for q in &st.quarantined {
        let _ = writeln!(
            h,
            r#"<tr data-topic="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(&q.topic),
            escape(&q.name),
            escape(&q.uf.to_ascii_uppercase()),
            or_dash(&q.since),
            or_dash(&q.reason),
        );
    }
    h.push_str("</table></section>\n</main></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_is_escaped() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
