//! Child processes of the built binary, killed when dropped, each with its log in a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_apura");
/// How long a process may take to exit after SIGTERM: its drain, on a slow and shared machine.
const EXIT_PATIENCE: Duration = Duration::from_secs(60);

/// One child process of the built binary, killed when dropped; its log kept in a file.
pub struct Process {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Run `apura <args>`, its log in `dir/<name>.log`.
    pub fn spawn(dir: &Path, name: &str, args: &[String]) -> Process {
        Self::spawn_command(dir, name, Command::new(BIN), args)
    }

    /// Run `apura <args>` with its open-file limit (soft and hard) at `files`, as
    /// `prlimit --nofile` sets it.
    pub fn spawn_with_file_limit(dir: &Path, name: &str, files: u64, args: &[String]) -> Process {
        let mut command = Command::new("prlimit");
        command.arg(format!("--nofile={files}:{files}")).arg(BIN);
        Self::spawn_command(dir, name, command, args)
    }

    fn spawn_command(dir: &Path, name: &str, mut command: Command, args: &[String]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        // Only what the test says: nothing from the environment the tests run in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("APURA_") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL, as a crash or the OOM killer would: no lock released, nothing flushed.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM, as an orchestrator stopping a container would, and wait for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(EXIT_PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit after SIGTERM", self.name))
            .unwrap()
    }

    /// The end of the log, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The repository's root.
pub fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter with Debian's modules (python3-websockets, python3-prometheus-client):
/// `APURA_PYTHON`, else /usr/bin/python3, else `python3`.
pub fn python() -> String {
    std::env::var("APURA_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    })
}

/// Fail, with the advice, when `program` is not on the PATH.
pub fn require(program: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} is missing: tools/setup-debian installs it"
    );
}

pub fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `apura simulate` serving on `addr` a count of `duration`, a new tick every `interval`.
pub fn simulate_command(addr: SocketAddr, duration: &str, interval: &str) -> Vec<String> {
    args(&[
        "simulate",
        "--listen",
        &addr.to_string(),
        "--duration",
        duration,
        "--interval",
        interval,
    ])
}

/// `apura run` on a consolidated feed: the mayors file and the municipality list (paths or
/// URLs), polled every `interval`, serving on `addr`.
pub fn run_command(
    feed: &str,
    municipalities: &str,
    interval: &str,
    addr: SocketAddr,
) -> Vec<String> {
    args(&[
        "run",
        "--feed",
        feed,
        "--municipalities",
        municipalities,
        "--interval",
        interval,
        "--listen",
        &addr.to_string(),
    ])
}

/// A free loopback port for a child process to listen on, never the same twice in one test
/// binary, and below the kernel's ephemeral range (32768–60999 by default). A port the kernel
/// handed out for `:0` is free again once checked, and another socket of the tests running in
/// parallel (a demo's own simulator listening on `:0`, any client connecting out) could take it
/// before the child binds it; the kernel never hands out these.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering::SeqCst};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Test binaries run one after the other; each starts at a place of its own anyway.
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    let _ = NEXT.compare_exchange(0, start, SeqCst, SeqCst);
    loop {
        let port = NEXT.fetch_add(1, SeqCst);
        assert!(port < 32_768, "no free port left below the ephemeral range");
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
}

/// The Prometheus text of `/metrics` at `addr`; `None` if it does not answer.
pub async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Option<String> {
    http.get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of an unlabelled metric in a Prometheus text page.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Resident memory of a process, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}
