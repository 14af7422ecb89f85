//! The web page and its JS client: node's test runner for `web-demo/apura.js`, the browser
//! test in headless Chromium against the real `apura demo` (`tests/browser/`), and the contract's
//! OpenAPI and AsyncAPI descriptions checked against the demo (`tests/contract/`).
//!
//! They need Node.js 20+ and Chromium (`tools/setup-debian` installs them); a missing one fails
//! the test with that advice rather than skipping it.

mod common;

use std::process::Command;

use common::process::{repo, require};

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

#[test]
fn the_js_client_passes_its_unit_tests() {
    require("node");
    run(
        Command::new("node")
            .arg("--test")
            .arg(repo().join("web-demo/test/")),
        "node --test web-demo/test/",
    );
}

#[test]
fn the_page_works_in_a_real_browser() {
    require("node");
    require("npm");
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: tools/setup-debian installs it"
    );
    node_package_tests("tests/browser", "playwright-core");
}

/// The contract's descriptions (`docs/openapi.yaml`, `docs/asyncapi.yaml`) pass their
/// validators, and every GET document, SSE event and WebSocket message of a real `apura demo`
/// validates against their schemas (`tests/contract/`).
#[test]
fn the_demo_follows_the_openapi_and_asyncapi_descriptions() {
    require("node");
    require("npm");
    node_package_tests("tests/contract", "@asyncapi/parser");
}

/// `npm ci` in a test package of this repository unless `marker` is installed already, then its
/// `node --test` against this build's `apura`.
fn node_package_tests(folder: &str, marker: &str) {
    let dir = repo().join(folder);
    if !dir.join("node_modules").join(marker).is_dir() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            &format!("npm ci in {folder}"),
        );
    }
    run(
        Command::new("node")
            .arg("--test")
            .current_dir(&dir)
            .env("APURA_BIN", env!("CARGO_BIN_EXE_apura")),
        &format!("node --test in {folder}"),
    );
}
