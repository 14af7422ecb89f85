//! A corpus of bad feeds: each is rejected with a clear error and a metric, and every document
//! published before stays exactly as it was (same bytes, same version).

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apura::bus::embedded::EmbeddedBus;
use apura::feed::municipalities::MunicipalityList;
use apura::fetch::Fetcher;
use apura::ingest::{FeedArgs, Ingest};
use apura::metrics::Metrics;
use bytes::Bytes;
use common::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every document the three-city fixture publishes.
const PATHS: &[&str] = &[
    "/cities/mayors-sp-sao-paulo.json",
    "/cities/mayors-al-olho-d-agua-grande.json",
    "/cities/mayors-rj-rio-de-janeiro.json",
    "/states/sp.json",
    "/states/al.json",
    "/states/rj.json",
    "/brazil.json",
    "/cities.json",
];

async fn documents(base: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in PATHS {
        let resp = reqwest::get(format!("{base}{p}")).await.unwrap();
        assert_eq!(resp.status(), 200, "{p}");
        out.push(resp.text().await.unwrap());
    }
    out
}

async fn feed_errors(base: &str, kind: &str) -> u64 {
    let text = get_text(&format!("{base}/metrics")).await;
    let prefix = format!("apura_feed_errors_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.parse().unwrap())
}

/// Wait (bounded) until the metric of `kind` exceeds `before`; then let two more polls pass.
async fn wait_error(base: &str, kind: &str, before: u64, within: Duration) -> Duration {
    let started = Instant::now();
    while feed_errors(base, kind).await <= before {
        assert!(
            started.elapsed() < within,
            "no {kind} error counted within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(150)).await;
    took
}

/// The corpus of bad files: (name, contents, metric kind, fragments the error must contain).
fn corpus() -> Vec<(&'static str, Vec<u8>, &'static str, Vec<&'static str>)> {
    let cs = cities();
    let good = feed_json(&cs);
    // Rio de Janeiro: candidates 100 and 300, total 400; "100" appears nowhere else.
    assert_eq!(good.matches(r#""v": "100""#).count(), 1);
    assert_eq!(good.matches(r#""t": "400""#).count(), 1);
    let rio = |old: &str, new: &str| good.replace(old, new).into_bytes();
    // Nesting where a city is expected, and where an unknown field is skipped: neither may
    // overflow the stack (serde_json stops at 128 levels).
    let deep = |n: usize| {
        format!(
            r#"{{"last_updated": {{"date": "06/10/2024", "time": "19:00:00"}}, "municipios": {{"3550308": {{"nm": "X", "t": "1", "c": [], "x": {}{}}}, "3304557": {}{}}}}}"#,
            "[".repeat(n),
            "]".repeat(n),
            "[".repeat(n),
            "]".repeat(n)
        )
        .into_bytes()
    };
    let mut moved_on = cs.clone();
    moved_on[0] = moved_on[0].clone().votes(&[700, 500], 20.0);
    let stale = feed_json(&moved_on).replace("19:00:00", "18:59:59");
    let dup = feed_json(&[cs[0].clone(), cs[0].clone(), cs[1].clone(), cs[2].clone()]);
    vec![
        (
            "truncated",
            good.as_bytes()[..good.len() / 2].to_vec(),
            "malformed",
            vec!["not valid JSON", "EOF"],
        ),
        ("empty", Vec::new(), "malformed", vec!["not valid JSON"]),
        (
            "not JSON",
            b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            "malformed",
            vec!["not valid JSON", "line 1 column 1"],
        ),
        (
            "deeply nested (100,000 levels)",
            deep(100_000),
            "malformed",
            vec!["not valid JSON"],
        ),
        (
            "no city at all",
            br#"{"last_updated": {"date": "06/10/2024", "time": "19:00:00"}, "municipios": {"9999999": {"t": "1", "c": []}}}"#
                .to_vec(),
            "invalid",
            vec!["municipios", "no city of the municipality list"],
        ),
        (
            "wrong type: a number where a string is expected",
            rio(r#""t": "400""#, r#""t": 400"#),
            "malformed",
            vec!["invalid type"],
        ),
        (
            "wrong type: a list of cities",
            br#"{"last_updated": {"date": "06/10/2024", "time": "19:00:00"}, "municipios": []}"#
                .to_vec(),
            "malformed",
            vec!["invalid type", "expected an object"],
        ),
        (
            "negative votes",
            rio(r#""v": "100""#, r#""v": "-100""#),
            "invalid",
            vec!["municipios.3304557 (Rio de Janeiro)", "c[0] (ANA LIMA).v", "negative"],
        ),
        (
            "overflowing votes",
            rio(r#""v": "100""#, r#""v": "99999999999999999999999""#),
            "invalid",
            vec!["municipios.3304557 (Rio de Janeiro)", "overflows"],
        ),
        (
            "votes whose sum overflows",
            rio(r#""v": "100""#, r#""v": "18.446.744.073.709.551.615""#),
            "invalid",
            vec!["municipios.3304557 (Rio de Janeiro)", "overflow"],
        ),
        (
            "abstentions overflowing the electorate",
            good.replace(r#""a": "0""#, r#""a": "18.446.744.073.709.551.615""#)
                .into_bytes(),
            "invalid",
            vec!["municipios.3550308 (São Paulo)", "overflows"],
        ),
        (
            "duplicated city",
            dup.into_bytes(),
            "invalid",
            vec!["municipios.3550308", "appears twice"],
        ),
        (
            "votes above the total",
            rio(r#""t": "400""#, r#""t": "300""#),
            "invalid",
            vec!["municipios.3304557 (Rio de Janeiro)", "exceed the total 300"],
        ),
        (
            "percentage above 100",
            good.replace(r#""pst": "5,00%""#, r#""pst": "500,00%""#)
                .into_bytes(),
            "invalid",
            vec!["municipios.3304557 (Rio de Janeiro)", "pst", "not a percentage"],
        ),
        (
            "timestamp going backwards",
            stale.into_bytes(),
            "stale",
            vec![
                "last_updated 2024-10-06T18:59:59",
                "older than",
                "2024-10-06T19:00:00",
            ],
        ),
    ]
}

/// Every case of the corpus against ingest + gateway on files: the metric counts it and every
/// document GET serves is byte for byte what it was.
#[tokio::test]
async fn every_bad_file_is_counted_and_keeps_every_previous_document() {
    let cs = cities();
    let stack = Stack::start(&cs).await;
    let base = stack.url("");
    let before = documents(&base).await;
    for (name, bytes, kind, _) in corpus() {
        let n = feed_errors(&base, kind).await;
        stack.write_raw_feed(&bytes);
        wait_error(&base, kind, n, Duration::from_secs(10)).await;
        assert_eq!(
            documents(&base).await,
            before,
            "documents changed after: {name}"
        );
    }

    // Over the default cap (128 MiB): refused from its size alone, never read. A sparse file,
    // so the test writes no 200 MB.
    let n = feed_errors(&base, "too_large").await;
    let tmp = stack.feed.with_extension("big");
    std::fs::File::create(&tmp)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    std::fs::rename(&tmp, &stack.feed).unwrap();
    wait_error(&base, "too_large", n, Duration::from_secs(10)).await;
    assert_eq!(
        documents(&base).await,
        before,
        "documents changed after: 200 MB"
    );

    // The good file again goes through; nothing stuck.
    let mut next = cs.clone();
    next[0] = next[0].clone().votes(&[650, 420], 12.0);
    stack.write_feed(&next);
    eventually_async(|| async { documents(&base).await[0] != before[0] }).await;
}

async fn eventually_async<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same corpus straight through [`Ingest::poll`]: the rejection says what and where, and
/// nothing is published.
#[tokio::test]
async fn every_rejection_says_what_and_where() {
    let cs = cities();
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("mayors.json");
    write_atomic(&feed, feed_json(&cs).as_bytes());
    let args = feed_args(feed.display().to_string(), "unused".into(), 1 << 20);
    let list = MunicipalityList::parse(municipalities_json(&cs).as_bytes(), "list").unwrap();
    let fetcher = Fetcher::new(args.fetch_timeout, args.max_feed_bytes).unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut ingest = Ingest::new(
        Arc::new(list),
        &args,
        fetcher,
        Arc::new(EmbeddedBus::new()),
        metrics.clone(),
    );
    let first = ingest.poll().await.unwrap();
    assert!(first.cycle.is_some() && first.rejected.is_empty());
    for (name, bytes, kind, fragments) in corpus() {
        let n = metrics.feed_errors(kind);
        write_atomic(&feed, &bytes);
        let report = ingest.poll().await.unwrap();
        assert!(report.cycle.is_none(), "{name}: published something");
        assert_eq!(report.rejected.len(), 1, "{name}: {:?}", report.rejected);
        let error = &report.rejected[0];
        assert!(
            error.starts_with(&feed.display().to_string()),
            "{name}: {error}"
        );
        for f in fragments {
            assert!(error.contains(f), "{name}: {error:?} lacks {f:?}");
        }
        assert_eq!(metrics.feed_errors(kind), n + 1, "{name}");
    }
}

/// One file dated a year ahead is refused and never holds the night back; a first file dated
/// ahead (the mark every later file is compared with) holds it for a bounded number of polls,
/// after which the feed's clock is believed.
#[tokio::test]
async fn a_wrongly_dated_file_never_freezes_the_night() {
    let cs = cities();
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("mayors.json");
    let args = feed_args(feed.display().to_string(), "unused".into(), 1 << 20);
    let list =
        Arc::new(MunicipalityList::parse(municipalities_json(&cs).as_bytes(), "list").unwrap());
    let metrics = Arc::new(Metrics::default());
    let ingest_on = |metrics: Arc<Metrics>| {
        let fetcher = Fetcher::new(args.fetch_timeout, args.max_feed_bytes).unwrap();
        Ingest::new(
            list.clone(),
            &args,
            fetcher,
            Arc::new(EmbeddedBus::new()),
            metrics,
        )
    };
    // Files are told apart by modification time and size: each one a different size (trailing
    // white space), so that files written within one clock tick still read as new.
    let moved = |n: u64, time: &str| {
        let mut next = cs.clone();
        next[0] = next[0].clone().votes(&[600 + n, 400], 10.0 + n as f64);
        let json = feed_json(&next).replace("19:00:00", time);
        format!("{json}{}", " ".repeat(n as usize + 1))
    };
    let next_year = |json: String| json.replace("06/10/2024", "06/10/2025") + "  \n";

    let mut ingest = ingest_on(metrics.clone());
    write_atomic(&feed, feed_json(&cs).as_bytes());
    assert!(ingest.poll().await.unwrap().cycle.is_some());
    write_atomic(&feed, next_year(moved(1, "19:00:05")).as_bytes());
    let report = ingest.poll().await.unwrap();
    assert!(report.cycle.is_none(), "a file a year ahead was published");
    assert!(
        report.rejected[0].contains("8760 h ahead"),
        "{:?}",
        report.rejected
    );
    assert_eq!(metrics.feed_errors("time_leap"), 1);
    write_atomic(&feed, moved(2, "19:00:10").as_bytes());
    assert!(
        ingest.poll().await.unwrap().cycle.is_some(),
        "the next good file waits behind the refused one"
    );

    // The very first file is the one dated ahead: later files look stale, for a while.
    let metrics = Arc::new(Metrics::default());
    let mut ingest = ingest_on(metrics.clone());
    write_atomic(&feed, next_year(feed_json(&cs)).as_bytes());
    assert!(ingest.poll().await.unwrap().cycle.is_some());
    let polls = apura::ingest::STAMP_DISAGREEMENT_POLLS as u64;
    for n in 1..polls {
        write_atomic(&feed, moved(n, &format!("19:00:{:02}", n)).as_bytes());
        let report = ingest.poll().await.unwrap();
        assert!(report.cycle.is_none(), "poll {n}: taken too early");
        assert_eq!(metrics.feed_errors("stale"), n);
    }
    write_atomic(&feed, moved(polls, "19:01:00").as_bytes());
    let report = ingest.poll().await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(report.cycle.is_some(), "still frozen after {polls} polls");
    write_atomic(&feed, moved(polls + 1, "19:01:10").as_bytes());
    assert!(
        ingest.poll().await.unwrap().cycle.is_some(),
        "the feed is followed again"
    );

    // A file without a date after dated ones cannot be placed after them: refused as stale.
    let stale = metrics.feed_errors("stale");
    let undated =
        moved(polls + 2, "19:01:20").replace(r#""date": "06/10/2024", "time": "19:01:20", "#, "");
    assert!(!undated.contains("19:01:20"));
    write_atomic(&feed, undated.as_bytes());
    let report = ingest.poll().await.unwrap();
    assert!(report.cycle.is_none(), "an undated file was published");
    assert!(
        report.rejected[0].contains("no date and time"),
        "{:?}",
        report.rejected
    );
    assert_eq!(metrics.feed_errors("stale"), stale + 1);
}

/// A city present in the previous file and absent now keeps its documents (results are state),
/// the rest of the file is taken, and a metric counts the file.
#[tokio::test]
async fn a_city_missing_from_a_file_keeps_its_last_documents() {
    let mut cs = cities();
    let stack = Stack::start(&cs).await;
    let base = stack.url("");
    let before = documents(&base).await;
    cs[0] = cs[0].clone().votes(&[650, 420], 12.0);
    // Without Rio de Janeiro.
    stack.write_feed(&cs[..2]);
    wait_error(&base, "missing_cities", 0, Duration::from_secs(10)).await;
    let after = documents(&base).await;
    assert_ne!(after[0], before[0], "São Paulo's change was taken");
    for i in [1, 2, 4, 5, 7] {
        // Alagoas, Rio, their states and the index: untouched.
        assert_eq!(after[i], before[i], "{}", PATHS[i]);
    }
}

/// A runoff file lists only the cities with a second round: the others keep their first-round
/// results, in their documents and in the roll-ups. A first-round file read again after it
/// (newer, as a retotalization is) never takes a city back to its first round.
#[tokio::test]
async fn a_runoff_file_keeps_the_other_cities_and_no_city_goes_back_a_round() {
    let mut cs = cities();
    let stack = Stack::start(&cs).await;
    let base = stack.url("");
    let before = documents(&base).await;
    let json = |path: &str, docs: &[String]| -> serde_json::Value {
        serde_json::from_str(&docs[PATHS.iter().position(|p| *p == path).unwrap()]).unwrap()
    };
    let capitals = |docs: &[String]| {
        json("/brazil.json", docs)["capitals"]
            .as_array()
            .unwrap()
            .len()
    };
    let round = |docs: &[String]| json("/cities/mayors-sp-sao-paulo.json", docs)["round"].clone();
    assert_eq!(round(&before), 1);
    cs[0] = cs[0].clone().votes(&[650, 420], 12.0);
    let runoff = feed_json(&cs[..1])
        .replace("\"turno\": 1", "\"turno\": 2")
        .replace("19:00:00", "19:05:00");
    stack.write_raw_feed(runoff.as_bytes());
    eventually_async(|| async { round(&documents(&base).await) == 2 }).await;
    let after = documents(&base).await;
    for i in [1, 2, 4, 5] {
        // Alagoas and Rio, and their states: untouched.
        assert_eq!(after[i], before[i], "{}", PATHS[i]);
    }
    assert_eq!(
        capitals(&after),
        capitals(&before),
        "the capitals of the brazil roll-up"
    );

    let stale = feed_errors(&base, "stale").await;
    let again = feed_json(&cs).replace("19:00:00", "19:10:00");
    stack.write_raw_feed(again.as_bytes());
    wait_error(&base, "stale", stale, Duration::from_secs(10)).await;
    let later = documents(&base).await;
    assert_eq!(round(&later), 2, "São Paulo stays in the runoff");
}

fn feed_args(feed: String, municipalities: String, max_feed_bytes: usize) -> FeedArgs {
    FeedArgs {
        interval: Duration::from_millis(50),
        fetch_timeout: Duration::from_millis(500),
        max_feed_bytes,
        ..FeedArgs::consolidated(feed, municipalities)
    }
}

/// What the test upstream answers for `/mayors.json`.
#[derive(Clone)]
enum Mode {
    Good(Bytes),
    Status(u16),
    /// Accept the request and never answer.
    Hang,
    /// Headers, then one byte a second.
    SlowLoris,
    /// 100 MB + 1 byte, streamed in 64 KiB chunks without a length.
    Huge,
    /// `body` under the ETag `etag`, 304 to a request that holds it; cut after `cut` bytes
    /// when given (a transfer cut short that still carries the whole file's ETag).
    Tagged {
        body: Bytes,
        etag: &'static str,
        cut: Option<usize>,
    },
}

#[derive(Clone)]
struct Upstream {
    mode: Arc<Mutex<Mode>>,
    requests: Arc<AtomicU64>,
    /// Bytes of the huge body actually produced (pulled by hyper), over every request.
    huge_bytes: Arc<AtomicU64>,
    huge_requests: Arc<AtomicU64>,
}

async fn mayors(
    axum::extract::State(up): axum::extract::State<Upstream>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::body::Body;
    use axum::response::IntoResponse;
    up.requests.fetch_add(1, Relaxed);
    let mode = up.mode.lock().unwrap().clone();
    match mode {
        Mode::Good(b) => b.into_response(),
        Mode::Tagged { body, etag, cut } => {
            if headers.get("if-none-match").is_some_and(|v| v == etag) {
                return axum::http::StatusCode::NOT_MODIFIED.into_response();
            }
            let body = match cut {
                Some(n) => body.slice(..n),
                None => body,
            };
            ([("etag", etag)], body).into_response()
        }
        Mode::Status(s) => axum::http::StatusCode::from_u16(s).unwrap().into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Mode::SlowLoris => {
            let s = futures_util::stream::unfold(0u32, |i| async move {
                if i >= 120 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), i + 1))
            });
            Body::from_stream(s).into_response()
        }
        Mode::Huge => {
            up.huge_requests.fetch_add(1, Relaxed);
            const CHUNK: usize = 64 << 10;
            const TOTAL: u64 = 100_000_001;
            let counter = up.huge_bytes.clone();
            let s = futures_util::stream::unfold(0u64, move |sent| {
                let counter = counter.clone();
                async move {
                    if sent >= TOTAL {
                        return None;
                    }
                    let n = (TOTAL - sent).min(CHUNK as u64);
                    counter.fetch_add(n, Relaxed);
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(vec![b' '; n as usize])),
                        sent + n,
                    ))
                }
            });
            Body::from_stream(s).into_response()
        }
    }
}

/// What keeps a test's upstream and apura running: dropped, both stop.
struct Running {
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
    _up_stop: tokio_util::sync::DropGuard,
}

/// The test upstream serving `cs` as `/mayors.json` (its mode settable), and `apura run`
/// following it, ready; answers the upstream, apura's base URL and what keeps both running.
async fn upstream_and_apura(cs: &[City]) -> (Upstream, String, Running) {
    let up = Upstream {
        mode: Arc::new(Mutex::new(Mode::Good(Bytes::from(feed_json(cs))))),
        requests: Arc::default(),
        huge_bytes: Arc::default(),
        huge_requests: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/mayors.json", axum::routing::get(mayors))
        .with_state(up.clone());
    let (up_addr, up_stop) = serve_app(app).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("municipalities.json");
    write_atomic(&list, municipalities_json(cs).as_bytes());
    let args = feed_args(
        format!("http://{up_addr}/mayors.json"),
        list.display().to_string(),
        1 << 20,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let running = Running {
        _dir: dir,
        _stop: shutdown.clone().drop_guard(),
        _up_stop: up_stop.drop_guard(),
    };
    tokio::spawn(apura::run::serve_embedded(
        args,
        gateway_args(),
        listener,
        shutdown,
    ));
    wait_ready(addr).await;
    (up, format!("http://{addr}"), running)
}

/// The HTTP failures: 500, an upstream that never answers, a slow-loris one, and a 100 MB body
/// over a 1 MiB cap. Each is counted by kind within the bounds the fetch options give, and no
/// document changes.
#[tokio::test]
async fn http_failures_are_bounded_in_time_and_bytes_and_keep_every_document() {
    let cs = cities();
    let (up, base, _running) = upstream_and_apura(&cs).await;
    let before = documents(&base).await;
    let set = |m: Mode| *up.mode.lock().unwrap() = m;

    // HTTP 500: retried (3 attempts), then counted.
    let n = feed_errors(&base, "http_status").await;
    let r = up.requests.load(Relaxed);
    set(Mode::Status(500));
    wait_error(&base, "http_status", n, Duration::from_secs(10)).await;
    assert!(up.requests.load(Relaxed) - r >= 3, "500 not retried");
    assert_eq!(documents(&base).await, before, "after HTTP 500");

    // Never answers: three attempts of 500 ms plus at most 750 ms of backoff, then `network`.
    let n = feed_errors(&base, "network").await;
    set(Mode::Hang);
    let took = wait_error(&base, "network", n, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(6), "hang took {took:?}");
    assert_eq!(documents(&base).await, before, "after a hang");

    // Slow loris: headers, then a byte a second. The whole-request timeout cuts it.
    let n = feed_errors(&base, "network").await;
    set(Mode::SlowLoris);
    let took = wait_error(&base, "network", n, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(6), "slow loris took {took:?}");
    assert_eq!(documents(&base).await, before, "after a slow loris");

    // 100 MB streamed without a length over a 1 MiB cap: cut off, not buffered. What hyper
    // pulled from the stream is the cap plus the socket buffers of both ends, far below 100 MB.
    let n = feed_errors(&base, "too_large").await;
    set(Mode::Huge);
    wait_error(&base, "too_large", n, Duration::from_secs(10)).await;
    set(Mode::Good(Bytes::from(feed_json(&cs))));
    let produced = up.huge_bytes.load(Relaxed) / up.huge_requests.load(Relaxed).max(1);
    assert!(
        produced < 32 << 20,
        "{produced} bytes produced per huge request"
    );
    assert_eq!(documents(&base).await, before, "after 100 MB");

    // The upstream recovers: a new file goes through.
    let mut next = cs.clone();
    next[0] = next[0].clone().votes(&[650, 420], 12.0);
    set(Mode::Good(Bytes::from(feed_json(&next))));
    eventually_async(|| async { documents(&base).await[0] != before[0] }).await;
}

/// A transfer cut short that carries the whole file's ETag is refused as malformed, and the
/// file is asked for in full at the next poll: the good copy under the same ETag goes through,
/// instead of a 304 that would keep the city on its previous results for the rest of the night.
#[tokio::test]
async fn a_file_cut_short_under_its_etag_is_fetched_again_in_full() {
    let cs = cities();
    let (up, base, _running) = upstream_and_apura(&cs).await;
    let before = documents(&base).await;

    let mut next = cs.clone();
    next[0] = next[0].clone().votes(&[650, 420], 12.0);
    let body = Bytes::from(feed_json(&next));
    let n = feed_errors(&base, "malformed").await;
    *up.mode.lock().unwrap() = Mode::Tagged {
        body: body.clone(),
        etag: "\"final\"",
        cut: Some(body.len() / 2),
    };
    wait_error(&base, "malformed", n, Duration::from_secs(10)).await;
    assert_eq!(documents(&base).await, before, "after the cut transfer");
    *up.mode.lock().unwrap() = Mode::Tagged {
        body,
        etag: "\"final\"",
        cut: None,
    };
    eventually_async(|| async { documents(&base).await[0] != before[0] }).await;
}
