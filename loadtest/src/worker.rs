//! One worker process: its share of the subscribers and pollers on a single-threaded runtime,
//! ramped at its share of the connect rate, held, stopped; progress lines and its report on
//! stdout for the parent.

use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::args::RunArgs;
use crate::net::{parse_sources, parse_target, share};
use crate::shared::{Shared, Subscriber};
use crate::stats::{Line, Progress, Ramp, Recorder, now_us};
use crate::topics::Sampler;

/// A worker process: its share of everything, on a single-threaded runtime (the parallelism is
/// the processes).
pub fn main(args: RunArgs, id: usize) -> anyhow::Result<()> {
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
    let sampler = Sampler::new(topics.len(), hot, args.hot_share, args.zipf_s);
    // Every worker's draws, to know the most-subscribed topics of the whole run.
    let per_worker = (0..n).map(|w| share(args.sse, n, w) + share(args.ws, n, w));
    let audience = crate::topics::audience(&sampler, topics.len(), args.seed, per_worker);
    let classes = crate::topics::classes(&audience, args.worker_capitals.min(topics.len()));
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
        sampler,
        classes,
        topics,
        sse_path: args.sse_path.clone(),
        ws_path: args.ws_path.clone(),
        ws_subscribe: Some(args.ws_subscribe.clone()).filter(|s| !s.is_empty()),
        compress: args.compress,
        get_path: args.get_path.clone(),
        seed: args.seed,
        handshake_timeout: args.handshake_timeout,
        cycle_by_version: args.cycle_key == crate::args::CycleKey::Version,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pace = args.read_pace;
    rt.block_on(async move {
        if !pace.is_zero() {
            tokio::spawn(read_in_rounds(pace));
        }
        run(plan, shared).await
    })
}

/// `--read-pace`: the runtime thread sleeps `pace`, then yields, which makes the scheduler poll
/// its sockets without blocking, run every task they woke, and come back here. The thread is
/// never parked in `epoll_wait`, so no server write has to wake it.
async fn read_in_rounds(pace: Duration) {
    loop {
        std::thread::sleep(pace);
        tokio::task::yield_now().await;
    }
}

/// What the parent tells one worker to do.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    pub worker: usize,
    pub sse: usize,
    pub ws: usize,
    pub get_conns: usize,
    /// Requests per second for each GET poller; `None`: back to back.
    pub get_period: Option<Duration>,
    /// New subscribers per second for this worker.
    pub connect_rate: f64,
    pub hold: Duration,
    pub max_duration: Duration,
}

/// Run one worker on the current thread and print progress and report lines on stdout.
pub async fn run(plan: WorkerPlan, mut shared: Shared) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    shared.stop = stop_rx;
    let shared = Arc::new(shared);
    let total = plan.sse + plan.ws;
    let deadline = tokio::time::Instant::now() + plan.max_duration;

    // Progress lines (4 a second) and the per-second open-connections sample.
    let reporter = {
        let shared = shared.clone();
        let ramp_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ramp_flag.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last_second = 0;
            loop {
                tick.tick().await;
                let now = now_us();
                let open = shared.open.load(Relaxed);
                let (attempted, established, errors, updates) = {
                    let mut rec = shared.rec.lock().expect("recorder lock");
                    if now / 1_000_000 != last_second {
                        last_second = now / 1_000_000;
                        rec.sample_open(now, open);
                    }
                    let c = &rec.counters;
                    (c.attempted, c.established, c.errors(), c.updates)
                };
                let p = Progress {
                    worker: shared.worker,
                    attempted,
                    established,
                    open,
                    errors,
                    updates,
                    ramp_done: flag.load(Relaxed),
                };
                emit(&Line::Progress(p));
            }
        });
        (handle, ramp_flag)
    };

    let mut tasks = tokio::task::JoinSet::new();
    let started_us = now_us();
    // Interleave SSE and WebSocket subscribers in proportion (Bresenham), so both kinds ramp
    // together and meet the same server load.
    let rate = plan.connect_rate.max(0.001);
    let start = tokio::time::Instant::now();
    let draws = crate::topics::draws(&shared.sampler, shared.seed, plan.worker, total);
    for (i, &topic) in draws.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due > deadline {
            break;
        }
        tokio::time::sleep_until(due).await;
        let is_sse = (i + 1) * plan.sse / total.max(1) != i * plan.sse / total.max(1);
        let sub = Subscriber {
            topic,
            source: shared.sources[(plan.worker + i) % shared.sources.len()],
        };
        shared.rec.lock().expect("recorder lock").counters.attempted += 1;
        let s = shared.clone();
        if is_sse {
            tasks.spawn(crate::sse::subscriber(s, sub));
        } else if shared.compress {
            tasks.spawn(crate::wsz::subscriber(s, sub));
        } else {
            tasks.spawn(crate::ws::subscriber(s, sub));
        }
        // Reap finished tasks so a failing run does not keep their results around.
        while tasks.try_join_next().is_some() {}
    }
    // The ramp ends when every attempt has settled (open, or failed), bounded by the deadline.
    let attempted = shared.rec.lock().expect("recorder lock").counters.attempted;
    while shared.settled.load(Relaxed) < attempted && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ramp = Ramp {
        started_us,
        done_us: now_us(),
        stopped_us: 0,
    };
    reporter.1.store(true, Relaxed);

    for i in 0..plan.get_conns {
        tasks.spawn(crate::get::poller(
            shared.clone(),
            plan.worker * 1_000 + i,
            plan.get_period,
        ));
    }
    let hold_end = (tokio::time::Instant::now() + plan.hold).min(deadline);
    tokio::time::sleep_until(hold_end).await;

    ramp.stopped_us = now_us();
    let _ = stop_tx.send(true);
    // Connections end at once on the stop signal; give stragglers a bounded moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    reporter.0.abort();
    let report = {
        let rec = shared.rec.lock().expect("recorder lock");
        let mut report = rec.report(plan.worker, ramp, shared.peak_open.load(Relaxed));
        report.by_topic = rec
            .by_topic
            .iter()
            .map(|(&t, &n)| (shared.topics[t].clone(), n))
            .collect();
        report
    };
    emit(&Line::Report(Box::new(report)));
    Ok(())
}

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
