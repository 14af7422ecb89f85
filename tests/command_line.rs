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

/// Logs as a log shipper and a pipe want them: `--log-format json` writes one JSON object per
/// line; text written to a pipe carries no colour codes; a log filter tracing cannot read is a
/// usage error, not a silent change of level.
#[test]
fn logs_are_json_on_demand_plain_in_a_pipe_and_a_bad_filter_is_refused() {
    let failing = ["ingest", "--once", "--feed", "/nonexistent/mayors.json"];
    let missing_list = ["--municipalities", "/nonexistent/municipalities.json"];
    let json = Command::new(BIN)
        .args(["--log-format", "json"])
        .args(failing)
        .args(missing_list)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&json.stderr);
    assert!(!err.trim().is_empty());
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(err.contains("municipality list not found"), "{err}");

    let text = Command::new(BIN)
        .args(failing)
        .args(missing_list)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&text.stderr);
    assert!(err.contains("ERROR"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");

    let bad = Command::new(BIN)
        .args(failing)
        .args(missing_list)
        .env("APURA_LOG", "apura=loud")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("'apura=loud' for '--log"), "{err}");
}
