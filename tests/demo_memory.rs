//! `apura demo` with no client: its memory stays bounded while the simulated count goes on.

mod common;

use std::time::Duration;

use common::process::*;
use common::*;

/// How long the demo plays before the bound holds: 15 of its five-second ticks, each bringing
/// a new councillor file of the whole country.
const PLAYED: Duration = Duration::from_secs(75);

/// Generous: the demo peaked near 600 MB here; before it gave freed heap back it held 880 MB
/// after as many ticks, and kept growing to 1.2 GB over the night.
const BOUND_BYTES: u64 = 750 << 20;

async fn brazil_version(addr: std::net::SocketAddr) -> u64 {
    get_json(&format!("http://{addr}/brazil.json")).await["version"]
        .as_u64()
        .expect("a version")
}

#[tokio::test]
async fn the_demo_keeps_its_memory_bounded_while_the_count_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let demo = Process::spawn(
        dir.path(),
        "demo",
        &args(&["demo", "--listen", &addr.to_string()]),
    );
    wait_ready(addr).await;
    let first = brazil_version(addr).await;
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + PLAYED;
    while tokio::time::Instant::now() < deadline {
        peak = peak.max(rss_bytes(demo.pid()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let last = brazil_version(addr).await;
    assert!(
        last > first,
        "the count did not move on: version {first} then {last}\n{}",
        demo.log_tail(20)
    );
    eprintln!(
        "demo resident memory, peak over {PLAYED:?}: {} MB",
        peak >> 20
    );
    assert!(
        peak < BOUND_BYTES,
        "the demo held {} MB (bound {} MB)",
        peak >> 20,
        BOUND_BYTES >> 20
    );
}
