//! One worker process: ramp its share of subscribers at its share of the connect rate, hold
//! them, stop, and print its report as the last line of stdout.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::sse::{Event, Failure};
use crate::stats::{Counters, Line, Progress, Ramp, Recorder, Stream, now_us};
use crate::topics::Sampler;

/// Everything the connection tasks of a worker share.
pub struct Shared {
    pub worker: usize,
    pub rec: Mutex<Recorder>,
    pub open: AtomicI64,
    pub peak_open: AtomicI64,
    /// Subscribers whose connect attempt has finished, one way or the other.
    pub settled: AtomicU64,
    pub stop: watch::Receiver<bool>,
    pub target: SocketAddr,
    pub sources: Vec<Ipv4Addr>,
    pub topics: Vec<String>,
    pub sampler: Sampler,
    pub sse_path: String,
    pub ws_path: String,
    pub ws_subscribe: Option<String>,
    pub get_path: String,
    pub seed: u64,
    pub handshake_timeout: Duration,
}

/// One subscriber to start.
#[derive(Debug, Clone, Copy)]
pub struct Subscriber {
    pub topic: usize,
    pub source: Ipv4Addr,
}

impl Shared {
    pub fn rng(&self, salt: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (self.worker as u64).rotate_left(32) ^ salt)
    }

    pub fn error(&self, f: impl FnOnce(&mut Counters)) {
        self.rec.lock().expect("recorder lock").error(now_us(), f);
    }

    pub fn failed(&self, f: Failure) {
        self.error(|c| match f {
            Failure::Connect => c.connect_failed += 1,
            Failure::Handshake => c.handshake_failed += 1,
        });
        self.settled.fetch_add(1, Relaxed);
    }

    /// The stream is accepted: count it open; returns the time, which separates snapshots
    /// (documents published before it) from the updates we time.
    pub fn established(&self, started_us: u64) -> u64 {
        let now = now_us();
        {
            let mut rec = self.rec.lock().expect("recorder lock");
            rec.opened(now);
            rec.counters.handshake_us_total += now.saturating_sub(started_us);
        }
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(open, Relaxed);
        self.settled.fetch_add(1, Relaxed);
        now
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// The server ended a stream: unexpected unless the run is stopping.
    pub fn closed_by_server(&self, stream: Stream, stop: &watch::Receiver<bool>) {
        if !*stop.borrow() {
            self.error(|c| {
                c.unexpected_close += 1;
                c.ended(stream);
            });
        }
    }

    /// A read or write on an established stream failed (reset, broken pipe).
    pub fn broken(&self, stream: Stream) {
        self.error(|c| {
            c.io_errors += 1;
            c.ended(stream);
        });
    }

    pub fn bytes(&self, n: usize) {
        self.rec.lock().expect("recorder lock").counters.bytes += n as u64;
    }

    /// A parsed event that arrived at `received_us` on a stream accepted at `connected_us`.
    pub fn event(&self, stream: Stream, ev: Event, connected_us: u64, received_us: u64) {
        let mut rec = self.rec.lock().expect("recorder lock");
        match ev {
            Event::Heartbeat => rec.counters.heartbeats += 1,
            Event::Doc {
                published_at: None, ..
            } => rec.error(received_us, |c| c.protocol_errors += 1),
            Event::Doc {
                snapshot,
                published_at: Some(p),
                version,
            } => {
                // A document published before we subscribed is a snapshot (apura says so; for
                // nchan it is a buffered message): its age is not a fan-out latency.
                if snapshot || (p.max(0) as u64) * 1_000 < connected_us {
                    rec.counters.snapshots += 1;
                } else {
                    rec.update(stream, p, version, received_us);
                }
            }
        }
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
    let mut rng = shared.rng(0x5eed);
    // Interleave SSE and WebSocket subscribers in proportion (Bresenham), so both kinds ramp
    // together and meet the same server load.
    let rate = plan.connect_rate.max(0.001);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due > deadline {
            break;
        }
        tokio::time::sleep_until(due).await;
        let is_sse = (i + 1) * plan.sse / total.max(1) != i * plan.sse / total.max(1);
        let sub = Subscriber {
            topic: shared.sampler.draw(&mut rng),
            source: shared.sources[(plan.worker + i) % shared.sources.len()],
        };
        shared.rec.lock().expect("recorder lock").counters.attempted += 1;
        let s = shared.clone();
        if is_sse {
            tasks.spawn(crate::sse::subscriber(s, sub));
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
    let report = shared.rec.lock().expect("recorder lock").report(
        plan.worker,
        ramp,
        shared.peak_open.load(Relaxed),
    );
    emit(&Line::Report(Box::new(report)));
    Ok(())
}

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
