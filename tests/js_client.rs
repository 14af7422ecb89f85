//! The JS client as a package (`clients/js/`): `npm pack` makes a tarball that installs into an
//! empty folder; there a TypeScript program importing it type-checks with `tsc --strict`, while
//! a misspelt option and a transport that does not exist fail the check; the client's unit tests
//! (`web-demo/test/`) pass against the installed package, and its script-tag build defines the
//! global `Apura`.
//!
//! Needs Node.js 20+ and npm; `typescript` comes from the package's own lock file (`npm ci`).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::process::{repo, require};

fn output(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!(
        "$ {what} -> {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = output(cmd, what);
    assert!(out.status.success(), "{what} failed ({})", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tsc --strict` on `file` in `dir`, resolving `apura-client` from `dir/node_modules`.
fn tsc(dir: &Path, file: &str) -> Output {
    let tsc = repo().join("clients/js/node_modules/typescript/bin/tsc");
    output(
        Command::new("node")
            .arg(tsc)
            .args(["--strict", "--noEmit", "--module", "nodenext"])
            .args(["--moduleResolution", "nodenext", "--target", "es2022"])
            .args(["--lib", "es2022,dom", file])
            .current_dir(dir),
        &format!("tsc --strict {file}"),
    )
}

#[test]
fn the_packed_client_installs_type_checks_and_passes_its_tests() {
    require("node");
    require("npm");
    let package = repo().join("clients/js");
    if !package.join("node_modules/typescript").is_dir() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&package),
            "npm ci in clients/js",
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(package.join("package.json")).unwrap()).unwrap();
    let version = manifest["version"].as_str().unwrap();
    assert_eq!(manifest["name"], "apura-client");

    // npm pack runs the build (prepack) and names the tarball it wrote.
    let tmp = tempfile::tempdir().unwrap();
    let packed = run(
        Command::new("npm")
            .args(["pack", "--pack-destination"])
            .arg(tmp.path())
            .current_dir(&package),
        "npm pack",
    );
    let tarball = tmp.path().join(packed.lines().last().unwrap().trim());
    assert_eq!(
        tarball.file_name().unwrap().to_string_lossy(),
        format!("apura-client-{version}.tgz")
    );

    // An empty folder: install the tarball alone.
    let app = tmp.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("package.json"),
        r#"{"name": "consumer", "private": true, "type": "module"}"#,
    )
    .unwrap();
    run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .arg(&tarball)
            .current_dir(&app),
        "npm install apura-client tarball",
    );
    let installed = app.join("node_modules/apura-client");
    for file in [
        "dist/apura.mjs",
        "dist/apura.iife.js",
        "apura.d.ts",
        "package.json",
    ] {
        assert!(installed.join(file).is_file(), "{file} in the package");
    }

    // TypeScript: the consumer passes --strict; a misspelt option and a wrong value fail it.
    for file in ["ok.ts", "misspelt.ts", "wrong-value.ts"] {
        std::fs::copy(package.join("test/consumer").join(file), app.join(file)).unwrap();
    }
    let ok = tsc(&app, "ok.ts");
    assert!(ok.status.success(), "ok.ts type-checks with --strict");
    let misspelt = tsc(&app, "misspelt.ts");
    assert!(
        !misspelt.status.success(),
        "misspelt.ts must fail the check"
    );
    let said = String::from_utf8_lossy(&misspelt.stdout);
    assert!(
        said.contains("'transprot' does not exist in type 'ApuraOptions'"),
        "tsc names the misspelt option: {said}"
    );
    let wrong = tsc(&app, "wrong-value.ts");
    assert!(
        !wrong.status.success(),
        "wrong-value.ts must fail the check"
    );
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("\"websocket\""));

    // The client's unit tests, importing the installed package instead of the source file, and
    // the script-tag build.
    let tests = app.join("test");
    std::fs::create_dir(&tests).unwrap();
    for entry in std::fs::read_dir(repo().join("web-demo/test")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("'../apura.js'", "'apura-client'");
        std::fs::write(tests.join(path.file_name().unwrap()), text).unwrap();
    }
    std::fs::copy(
        package.join("test/script-tag.test.mjs"),
        tests.join("script-tag.test.mjs"),
    )
    .unwrap();
    let out = run(
        Command::new("node")
            .args(["--test", "test/"])
            .current_dir(&app),
        "node --test (unit tests against the installed package)",
    );
    assert!(out.contains("# fail 0"), "every test passes");
    assert!(!out.contains("# pass 0"), "tests ran");
}
