//! The command line as a newcomer meets it: options a command cannot run without are a usage
//! error (message, usage line, exit code 2) for `apura run` as for every other command, and
//! `--listen` takes a host name.

mod common;

use std::process::Command;

use common::process::{BIN, Process, args, free_addr};
use common::wait_ready;

#[test]
fn run_without_a_feed_is_a_usage_error_like_the_other_commands() {
    let out = Command::new(BIN)
        .arg("run")
        .env_remove("APURA_FEED")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--feed is required with --source consolidated"),
        "{err}"
    );
    assert!(err.contains("--municipalities is required"), "{err}");
    assert!(err.contains("Usage: apura run"), "{err}");
    assert!(
        !err.contains("ERROR"),
        "a usage error, not a log line: {err}"
    );

    // As clap itself answers a command missing a required argument.
    let gateway = Command::new(BIN).arg("gateway").output().unwrap();
    assert_eq!(gateway.status.code(), Some(2));
}

#[test]
fn a_listen_address_that_does_not_resolve_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["demo", "--listen", "no-such-host.invalid:8080"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-host.invalid:8080"), "{err}");
}

#[tokio::test]
async fn listen_takes_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let _demo = Process::spawn(
        dir.path(),
        "demo",
        &args(&["demo", "--listen", &format!("localhost:{port}")]),
    );
    // localhost is 127.0.0.1 first: the demo serves there.
    wait_ready(format!("127.0.0.1:{port}").parse().unwrap()).await;
}
