//! What freshness is measured against: `apura simulate`'s tick list (`GET /ticks`) says, for
//! every tick out, the `source_time` its documents carry and when its files came out. Checked
//! against what a real `apura run` serves from the simulator's files, over real sockets.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::{Process, free_addr, run_command, simulate_command};
use common::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Every document fetched carries a `source_time` the tick list has, out no later than the
/// fetch; the list's ticks are consecutive, their `source_time`s distinct and increasing, and
/// they came out one interval apart.
#[tokio::test]
async fn the_tick_list_names_the_source_time_of_every_document_served() {
    let dir = tempfile::tempdir().unwrap();
    let (sim_addr, addr) = (free_addr(), free_addr());
    let _sim = Process::spawn(
        dir.path(),
        "simulate",
        &simulate_command(sim_addr, "10m", "1s"),
    );
    let run = Process::spawn(
        dir.path(),
        "run",
        &run_command(
            &format!("http://{sim_addr}/mayors.json"),
            &format!("http://{sim_addr}/municipalities.json"),
            "200ms",
            addr,
        ),
    );
    wait_ready(addr).await;

    let http = reqwest::Client::new();
    let mut seen = BTreeSet::new();
    // Bounded only so that a broken pipeline fails instead of hanging; nothing is timed.
    let give_up = Instant::now() + Duration::from_secs(180);
    while seen.len() < 3 {
        assert!(
            Instant::now() < give_up,
            "only {seen:?} seen; {}",
            run.log_tail(20)
        );
        for topic in ["mayors-sp-sao-paulo", "mayors-ac-rio-branco"] {
            let doc: serde_json::Value = http
                .get(format!("http://{addr}/cities/{topic}.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let fetched_ms = now_ms();
            let source_time = doc["source_time"].as_str().unwrap().to_string();
            // Asked after the document: the list has every tick out by then.
            let list = get_json(&format!("http://{sim_addr}/ticks")).await;
            let ticks = list["ticks"].as_array().unwrap();
            assert_eq!(list["interval_ms"], 1_000);
            let tick = ticks
                .iter()
                .find(|t| t["source_time"] == source_time.as_str())
                .unwrap_or_else(|| panic!("{topic}: {source_time} not in {list}"));
            let came_out = tick["published_at"].as_u64().unwrap();
            assert!(
                came_out <= fetched_ms,
                "{topic}: tick {tick} came out after the document was fetched ({fetched_ms})"
            );
            assert_eq!(tick["ambiguous"], false);
            for pair in ticks.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                assert_eq!(a["tick"].as_u64().unwrap() + 1, b["tick"].as_u64().unwrap());
                assert!(
                    a["source_time"].as_str() < b["source_time"].as_str(),
                    "{a} {b}"
                );
                assert_eq!(
                    b["published_at"].as_u64().unwrap() - a["published_at"].as_u64().unwrap(),
                    1_000
                );
            }
            seen.insert(source_time);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
