//! Every `curl` line of the README, pasted as is into a shell (with the real `curl`) against a
//! running `apura demo`, prints what its comment says after `→`: each piece between `…` is in
//! the output, a piece starting with `no ` is not (case-insensitive). Lines without `→` set
//! variables for the lines after them (the ETag), and must succeed. A streaming line (`curl -N`)
//! is read for a few seconds, as a reader would before pressing Ctrl-C.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{Process, args, free_addr};
use common::{ready_within, wait_ready};

/// How long a streaming example is read.
const STREAM_FOR: Duration = Duration::from_secs(3);
/// How long any other example may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

struct Example {
    line: usize,
    command: String,
    expect: String,
}

/// One shell block of the README: its setup lines (line number, text) and its examples, each
/// with how many setup lines come before it.
type Block = (Vec<(usize, String)>, Vec<(usize, Example)>);

/// The README's shell blocks, in order.
fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut inside = false;
    for (n, line) in readme.lines().enumerate() {
        let n = n + 1;
        if line.starts_with("```") {
            inside = !inside && line.trim() == "```sh";
            if inside {
                out.push((Vec::new(), Vec::new()));
            }
            continue;
        }
        let code = line.trim();
        if !inside || code.is_empty() || code.starts_with('#') || !code.contains("curl") {
            continue;
        }
        let (setup, examples) = out.last_mut().unwrap();
        match code.rfind("# →") {
            Some(at) => examples.push((
                setup.len(),
                Example {
                    line: n,
                    command: code[..at].trim().to_string(),
                    expect: code[at + "# →".len()..].trim().to_string(),
                },
            )),
            None => {
                assert!(
                    code.split_once('=').is_some_and(|(name, _)| name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')),
                    "README line {n}: a curl line that is neither an example (`# → …`) nor a \
                     variable for the next ones: {code}"
                );
                setup.push((n, code.to_string()));
            }
        }
    }
    out
}

/// Run `script` in bash; a streaming one for [`STREAM_FOR`] only, any other for at most
/// [`ANSWER_WITHIN`] (a line that hangs fails). Its output, without `\r`.
fn shell(script: &str, streaming: bool) -> (bool, String) {
    let limit = if streaming { STREAM_FOR } else { ANSWER_WITHIN };
    let out = Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .arg("bash")
        .args(["-euo", "pipefail", "-c", script])
        .output()
        .expect("bash runs");
    // `timeout` ends a stream that is still open with 124: what Ctrl-C would do.
    let ok = out.status.success() || (streaming && out.status.code() == Some(124));
    (
        ok,
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
            + &String::from_utf8_lossy(&out.stderr),
    )
}

/// What an example's output contradicts in its comment: each piece between `…` must be in it,
/// each piece starting with `no ` must not.
fn what_is_wrong(ex: &Example, ok: bool, output: &str) -> Vec<String> {
    let lower = output.to_lowercase();
    let mut wrong = Vec::new();
    if !ok {
        wrong.push("the command failed".to_string());
    }
    for piece in ex
        .expect
        .split('…')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let p = piece.to_lowercase();
        match p.strip_prefix("no ") {
            Some(absent) if lower.contains(absent) => wrong.push(format!("has `{absent}`")),
            Some(_) => {}
            None if !lower.contains(&p) => wrong.push(format!("lacks `{piece}`")),
            None => {}
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread")]
async fn every_curl_example_of_the_readme_does_what_its_comment_says() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = blocks(&readme);
    let examples: usize = blocks.iter().map(|(_, e)| e.len()).sum();
    assert!(
        examples >= 10,
        "the README's API examples are found ({examples})"
    );

    // The demo as the README runs it, on a free port; a new feed file a minute (not every 5 s)
    // so that the resume example's "current version" stays current while the examples run.
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let demo = Process::spawn(
        dir.path(),
        "demo",
        &args(&["demo", "--listen", &addr.to_string(), "--interval", "60s"]),
    );
    assert!(
        ready_within(addr).await,
        "the demo on {addr} not ready in 30 s; its log:\n{}",
        demo.log_tail(40)
    );
    let here = addr.to_string();

    let mut failures = Vec::new();
    for (setup, examples) in &blocks {
        for (known, ex) in examples {
            let mut script: Vec<String> = setup[..*known].iter().map(|(_, s)| s.clone()).collect();
            script.push(ex.command.clone());
            let script = script.join("\n").replace("localhost:8080", &here);
            let (ok, output) = shell(&script, ex.command.contains("curl -N"));
            let wrong = what_is_wrong(ex, ok, &output);
            let shown: String = output.chars().take(300).collect();
            if wrong.is_empty() {
                eprintln!("ok   README:{} {}  → {}", ex.line, ex.command, ex.expect);
            } else {
                eprintln!(
                    "FAIL README:{} {}: {}\n{shown}",
                    ex.line,
                    ex.command,
                    wrong.join(", ")
                );
                failures.push(format!("README line {}: {}", ex.line, wrong.join(", ")));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The README's recorded-files block, run as written in an empty folder with the built `apura`
/// first on the PATH: `apura simulate --write` writes the files, `apura run` serves them (on a
/// free port given by `APURA_LISTEN`), and the block's `curl` example holds against it.
#[tokio::test(flavor = "multi_thread")]
async fn the_recorded_files_example_of_the_readme_serves_documents() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block: Vec<&str> = readme
        .split("```sh")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|code| code.contains("apura simulate --write"))
        .expect("the README's recorded-files block")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let [write, run, example] = block[..] else {
        panic!("three lines, write, run and curl: {block:?}");
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_apura"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let bash = |line: &str| {
        let mut c = tokio::process::Command::new("bash");
        c.args(["-euo", "pipefail", "-c", line])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        c
    };
    let written = bash(write).output().await.unwrap();
    assert!(
        written.status.success(),
        "{write}: {}",
        String::from_utf8_lossy(&written.stderr)
    );

    let addr = free_addr();
    let command = run.strip_suffix('&').expect("run in the background").trim();
    let mut served = bash(&format!("exec {command}"))
        .env("APURA_LISTEN", addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(addr).await;
    let (command, expect) = example.split_once("# →").expect("an example");
    let ex = Example {
        line: 0,
        command: command.trim().to_string(),
        expect: expect.trim().to_string(),
    };
    let (ok, output) = shell(
        &ex.command.replace("localhost:8080", &addr.to_string()),
        false,
    );
    let wrong = what_is_wrong(&ex, ok, &output);
    served.kill().await.unwrap();
    assert!(wrong.is_empty(), "{}: {wrong:?}\n{output}", ex.command);
}
