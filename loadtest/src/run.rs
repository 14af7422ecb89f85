//! `apura-load run`: the parent spawns `--workers` copies of itself, each with a share of the
//! subscribers (under the 20,000 open files a process may hold here), shows progress, samples
//! the watched server processes, merges the workers' reports and writes JSON and SVG.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::RunArgs;
use crate::net::{parse_target, share};
use crate::proc::Sample;
use crate::report::{self, Merged};
use crate::stats::{Line, Progress, now_us};
use crate::worker;

/// Samples of the server and of the workers, in time order.
type Sampled = (Vec<(u64, Sample)>, Vec<(u64, Sample)>);

pub fn main(args: RunArgs) -> anyhow::Result<()> {
    if let Some(id) = args.worker_id {
        return worker::main(args, id);
    }
    let problems = args.validate();
    if !problems.is_empty() {
        bail!("invalid options:\n  {}", problems.join("\n  "));
    }
    let target = parse_target(&args.target)?;
    let (topics, capitals) = load_topics(&args, target)?;
    let hot = topics.iter().position(|t| *t == args.hot_topic);
    if hot.is_none() {
        eprintln!(
            "note: hot topic {:?} not among the topics; using the first",
            args.hot_topic
        );
    }
    let topics_path =
        std::env::temp_dir().join(format!("apura-load-{}-topics.txt", std::process::id()));
    std::fs::write(&topics_path, topics.join("\n")).context("writing the topic list")?;

    let baseline = crate::proc::sample(&args.watch_pid, true);
    let started = now_us();
    let mut children = Vec::new();
    let (tx, rx) = mpsc::channel::<(usize, Line)>();
    for i in 0..args.workers {
        let mut cmd = Command::new(std::env::current_exe().context("finding our own binary")?);
        cmd.args(std::env::args_os().skip(1))
            .arg("--worker-id")
            .arg(i.to_string())
            .arg("--worker-topics")
            .arg(&topics_path)
            .arg("--worker-capitals")
            .arg(capitals.to_string())
            // The worker reads its stdin until end of file: when this process dies, however it
            // dies, the pipe closes and the worker exits instead of holding its connections.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting worker {i}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Line>(&line) {
                    Ok(l) => {
                        if tx.send((i, l)).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("worker {i}: unreadable line ({e}): {:.120}", line),
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    let child_pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    // Sampling /proc of big processes takes time (smaps_rollup walks their page tables): a thread
    // of its own, so the progress lines of the workers are always read promptly.
    let sampled: Arc<Mutex<Sampled>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampled, sampling) = (sampled.clone(), sampling.clone());
        let (server, client) = (args.watch_pid.clone(), child_pids.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while sampling.load(Relaxed) {
                let started = Instant::now();
                // PSS every 5th sample: it is the expensive part.
                let (a, b) = (
                    crate::proc::sample(&server, n.is_multiple_of(5)),
                    crate::proc::sample(&client, false),
                );
                let now = now_us();
                {
                    let mut g = sampled.lock().expect("samples lock");
                    g.0.push((now, a));
                    g.1.push((now, b));
                }
                n += 1;
                std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
            }
        })
    };

    let total = (args.sse + args.ws) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} subscribers {per_sec} {msg}",
        )
        .expect("valid template"),
    );
    let plain = bar.is_hidden();
    let mut progress = vec![Progress::default(); args.workers];
    let mut reports = Vec::new();
    let mut next_plain = Instant::now();
    // Workers stop by themselves at --max-duration; give them a minute more to report.
    let give_up = Instant::now() + args.max_duration + Duration::from_secs(60);
    let mut ramp_reported = false;
    // The gateways' lag histogram as the hold starts (read on a thread of its own).
    let mut lag_before = None;
    while reports.len() < args.workers && Instant::now() < give_up {
        // Everything that arrived, then the display.
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(first) => {
                for (i, line) in std::iter::once(first).chain(rx.try_iter()) {
                    match line {
                        Line::Progress(p) => progress[i] = p,
                        Line::Report(r) => reports.push(*r),
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let est: u64 = progress.iter().map(|p| p.established).sum();
        let open: i64 = progress.iter().map(|p| p.open).sum();
        let errors: u64 = progress.iter().map(|p| p.errors).sum();
        let updates: u64 = progress.iter().map(|p| p.updates).sum();
        let ramp_done = progress.iter().all(|p| p.ramp_done);
        bar.set_position(est);
        let rss = sampled
            .lock()
            .expect("samples lock")
            .0
            .last()
            .map(|s| s.1.rss_kib)
            .unwrap_or(0);
        let msg = format!(
            "open {open} errors {errors} updates {updates} server RSS {} MiB{}",
            rss / 1024,
            if ramp_done { " (holding)" } else { "" }
        );
        bar.set_message(msg.clone());
        if ramp_done && !ramp_reported {
            ramp_reported = true;
            if !args.server_metrics.is_empty() {
                let specs = args.server_metrics.clone();
                lag_before = Some(std::thread::spawn(move || {
                    let lag = crate::scrape::read(&specs, crate::scrape::FAMILY);
                    let arrival = crate::scrape::read(&specs, crate::scrape::ARRIVAL);
                    // The last WebSocket subscribe messages of the ramp are read by now.
                    std::thread::sleep(Duration::from_secs(2));
                    (lag, arrival, crate::scrape::read_audience(&specs))
                }));
            }
            bar.println(format!(
                "ramp done: {est} subscribers established, holding {:?}",
                args.hold
            ));
        }
        if plain && Instant::now() >= next_plain {
            next_plain += Duration::from_secs(10);
            eprintln!("[{}] established {est}/{total} {msg}", args.label);
        }
    }
    bar.finish_and_clear();
    // ... and as it ends: every worker has reported, so every delivery of the hold is written.
    let server_lag = lag_before.map(|before| {
        let (before, arrival_before, audience) = before.join().expect("metrics reader");
        let after = crate::scrape::read(&args.server_metrics, crate::scrape::FAMILY);
        let arrival_after = crate::scrape::read(&args.server_metrics, crate::scrape::ARRIVAL);
        (before, after, arrival_before, arrival_after, audience)
    });
    sampling.store(false, Relaxed);
    let _ = sampler.join();
    let (samples, client_samples) = std::mem::take(&mut *sampled.lock().expect("samples lock"));
    for mut c in children {
        reap(&mut c);
    }
    let _ = std::fs::remove_file(&topics_path);
    if reports.len() < args.workers {
        eprintln!(
            "warning: {} of {} workers reported",
            reports.len(),
            args.workers
        );
    }
    anyhow::ensure!(!reports.is_empty(), "no worker reported");

    let merged = Merged::new(&reports, baseline, samples, client_samples, started);
    let freshness = args.source_ticks.as_ref().map(|spec| {
        let hot = hot.unwrap_or(0);
        let sampler = crate::topics::Sampler::new(topics.len(), hot, args.hot_share, args.zipf_s);
        let n = args.workers;
        let per_worker = (0..n).map(|w| share(args.sse, n, w) + share(args.ws, n, w));
        let audience = crate::topics::audience(&sampler, topics.len(), args.seed, per_worker);
        report::FreshnessInput {
            source: spec.clone(),
            topics: topics.clone(),
            ticks: fetch_ticks(spec).map_err(|e| format!("{e:#}")),
            classes: crate::topics::classes(&audience, capitals),
            audience,
        }
    });
    if let Some(Err(e)) = freshness.as_ref().map(|f| &f.ticks) {
        eprintln!("warning: no freshness figures: {e}");
    }
    let mut json = report::build(&args, topics.len(), &merged, freshness.as_ref());
    if let Some((before, after, arrival_before, arrival_after, audience)) = server_lag {
        let client_p99 = json["fanout"]["latency_ms_hold_cycles"]["p99"].as_f64();
        json["server_lag"] = match (before, after) {
            (Ok(before), Ok(after)) => crate::scrape::section(&before, &after, client_p99),
            (Err(e), _) | (_, Err(e)) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        // One observation per cycle and gateway: the bus's share of the delivery lag.
        json["server_arrival"] = match (arrival_before, arrival_after) {
            (Ok(before), Ok(after)) => crate::scrape::section(&before, &after, None),
            (Err(e), _) | (_, Err(e)) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        json["status_audience"] = match audience {
            Ok(reported) => {
                let mut clients = std::collections::BTreeMap::<String, u64>::new();
                for r in &reports {
                    for (t, n) in &r.by_topic {
                        *clients.entry(t.clone()).or_default() += n;
                    }
                }
                crate::scrape::audience_section(
                    &reported,
                    args.server_metrics.len(),
                    &clients,
                    merged.counters.errors(),
                )
            }
            Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
        };
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| args.out.with_extension("svg"));
    std::fs::write(&svg_path, crate::plot::svg(&json))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    println!("{}", report::summary(&json));
    println!(
        "report: {}  plot: {}",
        args.out.display(),
        svg_path.display()
    );
    Ok(())
}

/// Wait a little for a worker to exit, then kill it.
fn reap(c: &mut Child) {
    for _ in 0..50 {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// The simulator's tick list of `--source-ticks` (`IP:PORT/PATH`).
fn fetch_ticks(spec: &str) -> anyhow::Result<crate::freshness::SourceTicks> {
    let (addr, path) = spec
        .split_once('/')
        .context("--source-ticks is IP:PORT/PATH")?;
    let addr = parse_target(addr)?;
    let path = format!("/{path}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = rt
        .block_on(crate::http::fetch(addr, &path))
        .with_context(|| format!("GET {path} from {addr}"))?;
    anyhow::ensure!(status == 200, "GET {path} from {addr}: status {status}");
    crate::freshness::parse_ticks(&body)
}

/// The topics, and how many of them (the first) are capitals'.
fn load_topics(args: &RunArgs, target: SocketAddr) -> anyhow::Result<(Vec<String>, usize)> {
    if let Some(f) = &args.topics_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let t: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && l.starts_with(&args.topic_prefix))
            .map(String::from)
            .collect();
        anyhow::ensure!(!t.is_empty(), "no topics in {}", f.display());
        return Ok((t, 0));
    }
    let (addr, path) = match &args.index {
        Some(spec) => {
            let (a, p) = spec
                .split_once('/')
                .unwrap_or((spec.as_str(), "cities.json"));
            (parse_target(a)?, format!("/{p}"))
        }
        None => (target, "/cities.json".to_string()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(crate::topics::from_index(addr, &path, &args.topic_prefix))
}
