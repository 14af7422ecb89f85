//! `apura-load run`: the parent spawns `--workers` copies of itself, each with a share of the
//! subscribers (under the 20,000 open files a process may hold here), shows progress, samples
//! the watched server processes, merges the workers' reports and writes JSON and SVG.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::net::{parse_sources, parse_target, share};
use crate::proc::Sample;
use crate::report::{self, Merged};
use crate::stats::{Line, Progress, Recorder, now_us};
use crate::topics::Sampler;
use crate::worker::{self, Shared, WorkerPlan};

/// Samples of the server and of the workers, in time order.
type Sampled = (Vec<(u64, Sample)>, Vec<(u64, Sample)>);

/// Most subscribers one worker may hold: the process limit is 20,000 open files, and a worker
/// also needs descriptors for its runtime, pipes and GET pollers.
pub const MAX_PER_WORKER: usize = 19_500;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Server to load (IPv4 loopback `IP:PORT`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub target: String,
    /// SSE subscribers, all workers together.
    #[arg(long, default_value_t = 1_000)]
    pub sse: usize,
    /// WebSocket subscribers, all workers together.
    #[arg(long, default_value_t = 1_000)]
    pub ws: usize,
    /// Keep-alive GET pollers, all workers together (started once the ramp is done).
    #[arg(long, default_value_t = 0)]
    pub get_conns: usize,
    /// GET requests per second of each poller; 0 sends them back to back.
    #[arg(long, default_value_t = 1.0)]
    pub get_rate: f64,
    /// Worker processes (each keeps at most 19,500 subscribers).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// New subscribers per second, all workers together.
    #[arg(long, default_value_t = 2_000.0)]
    pub connect_rate: f64,
    /// How long to hold the subscribers once the ramp is done.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Hard limit on a worker's whole run (ramp + hold); the run stops by itself then.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_duration: Duration,
    /// Loopback source addresses, a range and/or a list: `127.0.0.2-127.0.0.17,127.0.0.40`.
    #[arg(long, default_value = "127.0.0.2-127.0.0.17")]
    pub sources: String,
    /// SSE request path; `{topic}` is replaced by the topic.
    #[arg(long, default_value = "/events?topics={topic}")]
    pub sse_path: String,
    /// WebSocket path; `{topic}` is replaced by the topic.
    #[arg(long, default_value = "/ws")]
    pub ws_path: String,
    /// Text message sent once the WebSocket is open (`{topic}` replaced); empty sends none.
    #[arg(
        long,
        default_value = r#"{"type":"subscribe","topics":["{topic}"],"since":0}"#
    )]
    pub ws_subscribe: String,
    /// GET path of the pollers; `{topic}` is replaced by the topic.
    #[arg(long, default_value = "/cities/{topic}.json")]
    pub get_path: String,
    /// Cities index to take topics from, `IP:PORT/PATH` (default: the target's /cities.json).
    #[arg(long)]
    pub index: Option<String>,
    /// Topics from a file instead, one a line.
    #[arg(long)]
    pub topics_file: Option<PathBuf>,
    /// Only topics starting with this.
    #[arg(long, default_value = "mayors-")]
    pub topic_prefix: String,
    /// The hot topic (São Paulo is ~25 % of views on count night).
    #[arg(long, default_value = "mayors-sp-sao-paulo")]
    pub hot_topic: String,
    /// Share of clients on the hot topic.
    #[arg(long, default_value_t = 0.25)]
    pub hot_share: f64,
    /// Zipf exponent over the other topics (capitals ranked first).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// Time allowed for connect + handshake of one subscriber.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Seed of the topic draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server process ids to sample every second (RSS, PSS, CPU); comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub watch_pid: Vec<u32>,
    /// A name for this run in the report.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// JSON report.
    #[arg(long, default_value = "loadtest-result.json")]
    pub out: PathBuf,
    /// SVG plot (default: the JSON path with .svg).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub worker_id: Option<usize>,
    #[arg(long, hide = true)]
    pub worker_topics: Option<PathBuf>,
}

impl RunArgs {
    /// Every problem with the options, at once.
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = parse_target(&self.target) {
            p.push(format!("{e:#}"));
        }
        if let Err(e) = parse_sources(&self.sources) {
            p.push(format!("{e:#}"));
        } else if let Ok(s) = parse_sources(&self.sources) {
            for ip in s {
                if !ip.is_loopback() {
                    p.push(format!("source {ip} is not on loopback"));
                }
            }
        }
        if self.workers == 0 {
            p.push("--workers must be at least 1".into());
        }
        let per = (self.sse + self.ws + self.get_conns).div_ceil(self.workers.max(1));
        if per > MAX_PER_WORKER {
            p.push(format!(
                "{per} connections per worker is over {MAX_PER_WORKER} (20,000 open files per process): raise --workers"
            ));
        }
        if self.connect_rate <= 0.0 {
            p.push("--connect-rate must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.hot_share) {
            p.push("--hot-share must be within 0..1".into());
        }
        if self.max_duration > Duration::from_secs(3_600) {
            p.push("--max-duration is capped at 1h".into());
        }
        p
    }
}

pub fn main(args: RunArgs) -> anyhow::Result<()> {
    if let Some(id) = args.worker_id {
        return worker_main(args, id);
    }
    let problems = args.validate();
    if !problems.is_empty() {
        bail!("invalid options:\n  {}", problems.join("\n  "));
    }
    let target = parse_target(&args.target)?;
    let topics = load_topics(&args, target)?;
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
    let json = report::build(&args, topics.len(), &merged);
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

fn load_topics(args: &RunArgs, target: SocketAddr) -> anyhow::Result<Vec<String>> {
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
        return Ok(t);
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

/// A worker process: its share of everything, on a single-threaded runtime (the parallelism is
/// the processes).
fn worker_main(args: RunArgs, id: usize) -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
        eprintln!("apura-load worker: parent gone; exiting");
        std::process::exit(3);
    });
    let topics_path = args
        .worker_topics
        .clone()
        .context("worker without --worker-topics")?;
    let text = std::fs::read_to_string(&topics_path).context("reading the topic list")?;
    let topics: Vec<String> = text.lines().map(String::from).collect();
    let hot = topics
        .iter()
        .position(|t| *t == args.hot_topic)
        .unwrap_or(0);
    let n = args.workers;
    let plan = WorkerPlan {
        worker: id,
        sse: share(args.sse, n, id),
        ws: share(args.ws, n, id),
        get_conns: share(args.get_conns, n, id),
        get_period: (args.get_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.get_rate)),
        connect_rate: args.connect_rate / n as f64,
        hold: args.hold,
        max_duration: args.max_duration,
    };
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let shared = Shared {
        worker: id,
        rec: Mutex::new(Recorder::default()),
        open: AtomicI64::new(0),
        peak_open: AtomicI64::new(0),
        settled: AtomicU64::new(0),
        stop,
        target: parse_target(&args.target)?,
        sources: parse_sources(&args.sources)?,
        sampler: Sampler::new(topics.len(), hot, args.hot_share, args.zipf_s),
        topics,
        sse_path: args.sse_path.clone(),
        ws_path: args.ws_path.clone(),
        ws_subscribe: Some(args.ws_subscribe.clone()).filter(|s| !s.is_empty()),
        get_path: args.get_path.clone(),
        seed: args.seed,
        handshake_timeout: args.handshake_timeout,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(worker::run(plan, shared))
}
