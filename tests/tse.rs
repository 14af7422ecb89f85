//! `--source tse` end to end against `apura simulate --layout tse` on port 0: a full count to the
//! simulator's final truth within the rate limit, a quiet cycle of 27 conditional requests, a
//! cycle of 500 changed cities within the budget, second rounds, and no storm of 404s.

mod common;
#[path = "tse/sim.rs"]
mod sim;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apura::bus::embedded::EmbeddedBus;
use apura::ingest::{FeedArgs, Ingest};
use apura::metrics::Metrics;
use apura::model::{Office, TopicKind};
use apura::simulate::tse::{ELECTION_ROUND2, FinalRace, RaceView};
use apura::simulate::{ManualClock, SimConfig, Simulator, TseOptions};
use common::*;
use serde_json::Value;
use sim::*;

/// `"elected"`, `"second_round"`, … as the documents spell the model's status.
fn status_name(view: &apura::simulate::tse::CandidateView) -> Value {
    serde_json::to_value(view.model_status()).unwrap()
}

/// Whether a city document shows exactly the simulator's race; the first difference otherwise.
fn differs(doc: &Value, truth: &RaceView) -> Option<String> {
    let totals = &truth.votes;
    let checks: [(&str, Value); 10] = [
        ("/round", truth.round.into()),
        ("/final", truth.finished.into()),
        ("/progress/sections_counted", truth.sections.into()),
        ("/progress/sections_total", truth.total_sections.into()),
        ("/totals/valid", totals.vv.into()),
        ("/totals/blank", totals.vb.into()),
        ("/totals/null", totals.tvn.into()),
        ("/totals/turnout", totals.tv.into()),
        ("/totals/electorate", truth.electorate.into()),
        ("/totals/abstentions", truth.abstentions.unwrap_or(0).into()),
    ];
    for (what, want) in checks {
        let got = doc.pointer(what).cloned().unwrap_or(Value::Null);
        if got != want {
            return Some(format!("{what}: {got} ≠ {want}"));
        }
    }
    let candidates = doc["candidates"].as_array()?;
    if candidates.len() != truth.candidates.len() {
        return Some(format!(
            "{} candidates ≠ {}",
            candidates.len(),
            truth.candidates.len()
        ));
    }
    let by_number: HashMap<u64, &Value> = candidates
        .iter()
        .map(|c| (c["number"].as_u64().unwrap(), c))
        .collect();
    for t in &truth.candidates {
        let Some(c) = by_number.get(&u64::from(t.number)) else {
            return Some(format!("candidate {} missing", t.number));
        };
        let got = (
            c["votes"].as_u64(),
            c["elected"].as_bool(),
            c["valid"].as_bool(),
            c["status"].clone(),
            c["name"].as_str(),
            c["party"].as_str(),
        );
        let want = (
            Some(t.votes),
            Some(t.elected),
            Some(t.valid()),
            status_name(t),
            Some(t.name.as_str()),
            Some(t.party),
        );
        if got != want {
            return Some(format!("candidate {}: {got:?} ≠ {want:?}", t.number));
        }
    }
    None
}

fn topic(sim: &Simulator, race: &FinalRace) -> String {
    let m = sim.municipalities().get(race.ibge).unwrap();
    m.topic(race.office.topic_kind())
}

/// Acceptance 2: a whole night through `apura run`'s pipeline (ingest, embedded bus, gateway)
/// ends with every mayor and councillor document equal to the simulator's last files, and the
/// simulator saw the ingest keep under the limit and never blocked it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_count_ends_with_every_document_equal_to_the_final_files() {
    let list = cut_list(160, &["SP", "RJ", "AC", "AL", "MG", "RS"]);
    let config = SimConfig {
        duration: Duration::from_secs(5),
        interval: Duration::from_millis(250),
        ..tse_config(list, None)
    };
    let sim = TseSim::start(config).await;
    let feed = FeedArgs {
        interval: Duration::from_millis(250),
        zones_interval: Duration::from_secs(1),
        fetch_timeout: Duration::from_secs(5),
        ..sim.feed()
    };
    let (addr, _stop) = serve_embedded(feed).await;

    let truth = sim.sim.tse_final();
    let cities = truth.iter().filter(|r| r.office == Office::Mayor).count();
    assert!(cities >= 40, "{cities} cities");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_difference = String::new();
    loop {
        let mut equal = 0;
        for race in &truth {
            let t = topic(&sim.sim, race);
            let resp = client
                .get(format!("http://{addr}/cities/{t}.json"))
                .send()
                .await
                .unwrap();
            if resp.status() != 200 {
                last_difference = format!("{t}: {}", resp.status());
                continue;
            }
            let doc: Value = resp.json().await.unwrap();
            match differs(&doc, &race.view) {
                None => equal += 1,
                Some(d) => last_difference = format!("{t}: {d}"),
            }
        }
        if equal == truth.len() && sim.sim.finished() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{equal} of {} documents equal the final files; {last_difference}",
            truth.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // São Paulo's councillor race: about a thousand candidates, the seats elected.
    let sp: Value = get_json_with(
        &client,
        format!("http://{addr}/cities/councillors-sp-sao-paulo.json"),
    )
    .await;
    let candidates = sp["candidates"].as_array().unwrap();
    assert!(candidates.len() >= 800, "{}", candidates.len());
    assert!(candidates.iter().any(|c| c["status"] == "substitute"));
    // The zone sweep covers the capitals' zones.
    let zones = async {
        loop {
            let r = client
                .get(format!("http://{addr}/cities/zones-sp-sao-paulo.json"))
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                return r.json::<Value>().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let zones = tokio::time::timeout(Duration::from_secs(60), zones)
        .await
        .expect("zones-sp-sao-paulo is published");
    assert!(!zones["zones"].as_array().unwrap().is_empty());
    assert_eq!(zones["total"]["zone"], "total");

    let status = sim.status().await;
    eprintln!(
        "full count: {} requests ({} 200, {} 304, {} 404), highest rate {} requests/s",
        status["requests"],
        status["ok"],
        status["not_modified"],
        status["not_found"],
        status["max_rate"]
    );
    assert_eq!(status["blocked"], false, "{status}");
    assert_eq!(status["over_limit"], false, "{status}");
    assert_eq!(status["refused"], 0, "{status}");
    let max_rate = status["max_rate"].as_u64().unwrap();
    // At most 50 starts in any second at the client; arrivals at the server may bunch a few
    // more into one second (scheduling on a busy machine), far below the limit of 100.
    assert!(
        max_rate <= 60,
        "the ingest keeps to its 50 requests/s: {max_rate}"
    );
}

fn counters(status: &Value) -> [u64; 6] {
    [
        status["requests"].as_u64().unwrap(),
        status["kinds"]["progress"].as_u64().unwrap(),
        status["not_modified"].as_u64().unwrap(),
        status["conditional"].as_u64().unwrap(),
        status["kinds"]["unified"].as_u64().unwrap(),
        status["not_found"].as_u64().unwrap(),
    ]
}

fn delta(after: [u64; 6], before: [u64; 6]) -> [u64; 6] {
    std::array::from_fn(|i| after[i] - before[i])
}

/// Acceptance 3: a cycle in which nothing changed makes the 27 progress requests only, each
/// conditional and answered 304; a cycle after one tick fetches only the cities that moved.
#[tokio::test]
async fn a_quiet_cycle_makes_only_the_27_conditional_progress_requests() {
    let clock = ManualClock::new();
    let sim = TseSim::start(tse_config(cut_list(400, &[]), Some(clock.clone()))).await;
    let mid = sim.sim.last_tick() / 3;
    clock.set(mid);
    let mut ingest = ingest(&sim.feed()).await;
    let first = ingest.poll().await.unwrap();
    assert!(first.rejected.is_empty(), "{:?}", first.rejected);
    assert!(first.cycle.is_some());

    let before = counters(&sim.status().await);
    let report = ingest.poll().await.unwrap();
    assert!(report.cycle.is_none(), "nothing changed, nothing published");
    let [
        requests,
        progress,
        not_modified,
        conditional,
        unified,
        not_found,
    ] = delta(counters(&sim.status().await), before);
    assert_eq!(requests, 27, "one progress file per state");
    assert_eq!(progress, 27);
    assert_eq!(conditional, 27, "every request conditional");
    assert_eq!(not_modified, 27, "every answer 304");
    assert_eq!((unified, not_found), (0, 0));

    // One tick later: the progress files, and two files of each city whose row moved.
    clock.set(mid + 1);
    let before = counters(&sim.status().await);
    let report = ingest.poll().await.unwrap();
    let [requests, progress, _, _, unified, not_found] =
        delta(counters(&sim.status().await), before);
    let changed: usize = report
        .cycles
        .iter()
        .map(|c| {
            c.documents
                .iter()
                .filter(|d| d.topic.starts_with("mayors-"))
                .count()
        })
        .sum();
    eprintln!("one tick: {requests} requests, {unified} city files, {changed} mayor documents");
    assert_eq!(progress, 27);
    assert_eq!(not_found, 0);
    assert_eq!(requests, 27 + unified);
    assert!(unified > 0 && unified % 2 == 0, "{unified}");
    assert_eq!(
        changed as u64,
        unified / 2,
        "each moved city's mayor document"
    );
}

/// Acceptance 4: a night's update in which more than 500 cities changed is fetched, parsed and
/// published within the rate budget, capitals and the largest cities first. Each cycle fetches
/// at most what one interval's budget allows (250 files at 50 requests/s every 5 s) and the
/// next one starts at once, reading the progress files again first, as the run loop does. The
/// figures are printed (run with `--nocapture`); what is asserted is that the rate never went
/// over the limit and every city was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_of_500_changed_cities_is_published_within_the_budget() {
    let clock = ManualClock::new();
    let list = cut_list(11, &[]);
    let sim = TseSim::start(tse_config(list, Some(clock.clone()))).await;
    let mut ingest = ingest(&sim.feed()).await;
    // Tick 0: polls closed, no city published yet: the progress files only.
    let report = ingest.poll().await.unwrap();
    assert!(report.rejected.is_empty());
    assert_eq!(ingest.tse_stats().unwrap().file_requests, 0);
    // A tenth of the night later every city is out and counting.
    clock.set(sim.sim.last_tick() / 10);
    let before = sim.status().await;
    let started = Instant::now();
    let started_ms = apura::bus::now_millis();
    let mut cycles = Vec::new();
    let mut polls = Vec::new();
    loop {
        let report = ingest.poll().await.unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        cycles.extend(report.cycles);
        let stats = ingest.tse_stats().unwrap();
        polls.push(stats.file_requests);
        if stats.backlog == 0 {
            break;
        }
    }
    let elapsed = started.elapsed();
    let after = sim.status().await;
    let requests = after["requests"].as_u64().unwrap() - before["requests"].as_u64().unwrap();
    let mut mayors = std::collections::HashSet::new();
    let mut councillors = std::collections::HashSet::new();
    let mut first_seen: HashMap<String, i64> = HashMap::new();
    for cycle in &cycles {
        for doc in &cycle.documents {
            first_seen
                .entry(doc.topic.to_string())
                .or_insert(cycle.published_at);
            if doc.topic.starts_with("mayors-") {
                mayors.insert(doc.topic.clone());
            } else if doc.topic.starts_with("councillors-") {
                councillors.insert(doc.topic.clone());
            }
        }
    }
    let at = |t: &str| first_seen.get(t).map(|p| p - started_ms);
    let list = ingest.municipalities().clone();
    let capital_last = list
        .iter()
        .filter(|m| m.capital)
        .filter_map(|m| at(&m.topic(TopicKind::Councillors)))
        .max()
        .unwrap();
    let town_last = list
        .iter()
        .filter(|m| !m.capital)
        .filter_map(|m| at(&m.topic(TopicKind::Councillors)))
        .max()
        .unwrap();
    eprintln!(
        "500-city update: {} cities changed, {requests} requests in {elapsed:.1?} ({:.1} requests/s) over {} cycles of {polls:?} files, {} publications; \
         on the bus after the update began: São Paulo's mayor at +{} ms, every capital (both offices) by +{capital_last} ms, the last town at +{town_last} ms; \
         highest rate seen by the simulator {} requests/s",
        mayors.len(),
        requests as f64 / elapsed.as_secs_f64(),
        polls.len(),
        cycles.len(),
        at("mayors-sp-sao-paulo").unwrap(),
        after["max_rate"],
    );
    assert!(mayors.len() >= 500, "{} cities", mayors.len());
    assert_eq!(councillors.len(), mayors.len());
    assert_eq!(
        requests,
        27 * polls.len() as u64 + 2 * mayors.len() as u64,
        "the progress files each cycle, two files per changed city, nothing else"
    );
    assert!(cycles.len() > 5, "published as the cities came in");
    assert!(capital_last < town_last, "capitals first");
    assert_eq!(after["blocked"], false);
    assert_eq!(after["refused"], 0);
    let max_rate = after["max_rate"].as_u64().unwrap();
    assert!(max_rate <= 60, "{max_rate} requests in one second");
}

/// Second round: with the second election code, the cities that have one show their round-2
/// mayor race (and keep their first-round councillors); the others keep round 1. Before round
/// 2 is published its progress files answer 404 once, not every cycle.
#[tokio::test]
async fn a_second_election_code_gives_round_two_documents() {
    let clock = ManualClock::new();
    let config = SimConfig {
        tse: TseOptions {
            second_round: true,
            ..TseOptions::default()
        },
        ..tse_config(cut_list(400, &[]), Some(clock.clone()))
    };
    let sim = TseSim::start(config).await;
    assert!(
        sim.sim.tse_runoff_cities() >= 2,
        "{}",
        sim.sim.tse_runoff_cities()
    );
    let feed = FeedArgs {
        election_round2: Some(ELECTION_ROUND2.to_string()),
        ..sim.feed()
    };

    // The first night is over, the second not begun: round 2 is not published.
    clock.set(sim.sim.last_tick());
    let mut early = ingest(&feed).await;
    let before = counters(&sim.status().await);
    early.poll().await.unwrap();
    let [_, progress, _, _, _, not_found] = delta(counters(&sim.status().await), before);
    assert_eq!(
        (progress, not_found),
        (54, 27),
        "27 of each round, round 2's not found"
    );
    let before = counters(&sim.status().await);
    early.poll().await.unwrap();
    let [requests, progress, _, _, _, not_found] = delta(counters(&sim.status().await), before);
    assert_eq!(
        (requests, progress, not_found),
        (27, 27, 0),
        "round 2 is asked again only after a back-off"
    );

    // The second night is over.
    clock.set(sim.sim.final_tick());
    let mut ingest = ingest(&feed).await;
    let report = ingest.poll().await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let truth = sim.sim.tse_final();
    let mut round2 = 0;
    for race in &truth {
        let got = ingest.race(race.ibge, race.office).unwrap();
        assert_eq!(got.round, race.view.round);
        round2 += usize::from(got.round == 2);
        let doc = apura::documents::city(ingest.municipalities().get(race.ibge).unwrap(), got);
        let doc: Value = serde_json::from_slice(&doc.body).unwrap();
        assert_eq!(differs(&doc, &race.view), None, "{}", topic(&sim.sim, race));
    }
    assert_eq!(round2, sim.sim.tse_runoff_cities());
    // A first-round file fetched later does not take a round-2 city back.
    let runoff = truth.iter().find(|r| r.view.round == 2).unwrap();
    let before = ingest.race(runoff.ibge, Office::Mayor).unwrap().clone();
    let mut old = before.clone();
    old.round = 1;
    ingest.accept_race(old);
    assert_eq!(ingest.race(runoff.ibge, Office::Mayor), Some(&before));
}

/// Start-up problems are all reported at once.
#[tokio::test]
async fn bad_options_are_reported_together() {
    let args = FeedArgs {
        source: apura::ingest::SourceKind::Tse,
        feed: Some("mayors.json".into()),
        election: Some("x1".into()),
        rate_limit: 500,
        ..FeedArgs::default()
    };
    let err = Ingest::connect(
        &args,
        Arc::new(EmbeddedBus::new()),
        Arc::new(Metrics::default()),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    for needle in [
        "--base-url",
        "--feed does not apply",
        "--election",
        "--rate-limit",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

/// `apura demo --layout tse`: simulator, TSE ingest and gateway in one process; the capitals
/// come first, so São Paulo's documents are out within seconds of its first files.
#[tokio::test]
async fn apura_demo_runs_the_tse_pipeline() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_apura"))
        .args([
            "demo",
            "--layout",
            "tse",
            "--duration",
            "60s",
            "--interval",
            "1s",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(addr).await;
    let client = reqwest::Client::new();
    let mut found = None;
    for _ in 0..900 {
        let r = client
            .get(format!(
                "http://{addr}/cities/councillors-sp-sao-paulo.json"
            ))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            found = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let doc = found.expect("São Paulo's councillors are published");
    assert_eq!(doc["city"]["name"], "São Paulo");
    assert_eq!(doc["city"]["tse"].as_str().map(str::len), Some(5));
    assert!(doc["candidates"].as_array().unwrap().len() >= 800);
    let mayors: Value = get_json_with(
        &client,
        format!("http://{addr}/cities/mayors-sp-sao-paulo.json"),
    )
    .await;
    assert_eq!(mayors["round"], 1);
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("blocked"), "{log}");
}

/// A city's mayor file cut short in transfer, under the whole file's `ETag`, quarantines the
/// city as malformed; at the next poll the file is asked for in full, not with `If-None-Match`
/// (which the simulator would answer 304), and the city's results go through.
#[tokio::test]
async fn a_city_file_cut_short_is_asked_for_in_full_at_the_next_poll() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let clock = ManualClock::new();
    let sim = TseSim::start(tse_config(cut_list(400, &[]), Some(clock.clone()))).await;
    clock.set(sim.sim.last_tick() / 3);
    // In front of the simulator: the first mayor file asked for once armed is cut in half.
    let armed = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(std::sync::Mutex::new(None::<String>));
    let proxy = FaultyProxy::start(sim.addr, {
        let (armed, cut) = (armed.clone(), cut.clone());
        move |path: &str, status| {
            if status == 200 && is_mayor_file(path) && armed.swap(false, SeqCst) {
                *cut.lock().unwrap() = Some(path.to_string());
                return Fault::Cut;
            }
            Fault::None
        }
    })
    .await;
    let feed = proxy.feed();
    let mut ingest = ingest(&feed).await;
    assert!(ingest.poll().await.unwrap().cycle.is_some());

    // The next tick moves cities; the first mayor file of them comes cut short.
    armed.store(true, SeqCst);
    clock.set(sim.sim.last_tick() / 3 + 1);
    let report = ingest.poll().await.unwrap();
    let path = cut
        .lock()
        .unwrap()
        .clone()
        .expect("no mayor file was asked for");
    assert!(
        report.rejected.iter().any(|r| r.contains("not valid JSON")),
        "{:?}",
        report.rejected
    );
    // mayors-<uf>-<slug> of the cut file: its code is in the path (`<uf><mun5>-c0011`).
    let held = |ingest: &Ingest| -> Vec<u32> {
        ingest
            .municipalities()
            .iter()
            .filter(|m| ingest.held(m.ibge, Office::Mayor).is_some())
            .map(|m| m.ibge)
            .collect()
    };
    let quarantined = held(&ingest);
    assert_eq!(quarantined.len(), 1, "{path}: {quarantined:?}");

    // Nothing moved since: only the cut file is due, asked for in full, and taken.
    let report = ingest.poll().await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(held(&ingest).is_empty(), "{path}: still held");
    let published: Vec<String> = report
        .cycles
        .iter()
        .flat_map(|c| c.documents.iter().map(|d| d.topic.to_string()))
        .collect();
    assert!(
        published.iter().any(|t| t.starts_with("mayors-")),
        "{path}: {published:?}"
    );
}

/// A city's round-1 mayor file (`…<uf><mun5>-c0011-e<ele6>-u.json`).
fn is_mayor_file(path: &str) -> bool {
    path.ends_with("-u.json") && path.contains("-c0011-")
}

fn mayor_topics(report: &apura::ingest::CycleReport) -> Vec<String> {
    report
        .cycles
        .iter()
        .flat_map(|c| c.documents.iter().map(|d| d.topic.to_string()))
        .filter(|t| t.starts_with("mayors-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_city_file_delays_no_other_city() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    // Under the default `--fetch-timeout` of 10 s. The cycle's other requests take about 2 s
    // at the default budget of 50 a second; the last is then waited for PATIENCE.
    const STALL: Duration = Duration::from_secs(9);
    const PATIENCE: Duration = Duration::from_secs(1);
    let clock = ManualClock::new();
    let sim = TseSim::start(tse_config(cut_list(400, &[]), Some(clock.clone()))).await;
    clock.set(sim.sim.last_tick() / 3);
    // Once armed, the first mayor file asked for is answered after STALL; every request for a
    // file is counted.
    let armed = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(std::sync::Mutex::new(None::<String>));
    let asked = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let proxy = FaultyProxy::start(sim.addr, {
        let (armed, stalled, asked) = (armed.clone(), stalled.clone(), asked.clone());
        move |path: &str, _| {
            *asked.lock().unwrap().entry(path.to_string()).or_default() += 1;
            if is_mayor_file(path) && armed.swap(false, SeqCst) {
                *stalled.lock().unwrap() = Some(path.to_string());
                return Fault::Stall(STALL);
            }
            Fault::None
        }
    })
    .await;
    let mut ingest = ingest(&proxy.feed()).await;
    assert!(ingest.poll().await.unwrap().cycle.is_some());

    // The next tick moves cities; the first mayor file of them is slow.
    armed.store(true, SeqCst);
    clock.set(sim.sim.last_tick() / 3 + 1);
    let started = Instant::now();
    let report = ingest.poll_within(PATIENCE).await.unwrap();
    let took = started.elapsed();
    let path = stalled
        .lock()
        .unwrap()
        .clone()
        .expect("no mayor file was asked for");
    assert!(
        took < STALL - Duration::from_secs(3),
        "the cycle waited {took:?} for {path}"
    );
    let first = mayor_topics(&report);
    assert!(
        !first.is_empty(),
        "no other city's mayor was published: {:?}",
        report.cycles.len()
    );
    assert_eq!(ingest.tse_stats().unwrap().in_flight, 1);

    // The slow file is taken by a later cycle when it lands, and never asked for twice.
    let mut later = Vec::new();
    let deadline = Instant::now() + STALL * 2;
    while ingest.tse_stats().unwrap().in_flight > 0 && Instant::now() < deadline {
        let report = ingest.poll_within(PATIENCE).await.unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        later.extend(mayor_topics(&report));
    }
    assert_eq!(
        ingest.tse_stats().unwrap().in_flight,
        0,
        "{path} never landed"
    );
    assert_eq!(
        asked.lock().unwrap()[&path],
        2,
        "{path}: asked for again while in flight"
    );
    let landed: Vec<&String> = later.iter().filter(|t| !first.contains(t)).collect();
    assert_eq!(landed.len(), 1, "{path}: {later:?}");
}
