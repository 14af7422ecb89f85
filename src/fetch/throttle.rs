//! A client-side request budget for one upstream, shared by every request to it, retries
//! included: requests start at most `rate` per second, evenly spaced, with at most
//! `max_in_flight` open at once; when the upstream refuses us (403, 429) everyone waits.
//!
//! The authority allows at most 100 requests per second per IP and blocks an IP above that for
//! ten minutes, restarting the block if it is retried (`docs/tse-format.md`). Even spacing rather than
//! a bucket with a burst is what makes "at most `rate` in any one second" hold for any window,
//! which is how the upstream counts; and since a task woken late could bunch with the next one
//! on time, the starts of the last second are also counted, and a start that would make more
//! than `rate` of them waits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long everyone waits after the upstream refused a request and did not say for how long:
/// the authority's block lasts ten minutes and restarts if retried during it, so the first
/// request after the pause must come after it has surely ended.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(10 * 60 + 30);

/// The budget: spacing between request starts, a cap on open requests, a pause.
#[derive(Debug)]
pub struct Throttle {
    rate: u32,
    spacing: Duration,
    in_flight: Arc<Semaphore>,
    state: Mutex<State>,
    started: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// The earliest start of the next request.
    next: Instant,
    /// Nobody starts before this (the upstream refused us).
    paused_until: Option<Instant>,
    /// The last `rate` starts.
    recent: VecDeque<Instant>,
}

/// Held for the length of one request: frees its in-flight slot when dropped.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Throttle {
    /// At most `rate` request starts per second (at least 1) and `max_in_flight` open requests
    /// (at least 1).
    pub fn new(rate: u32, max_in_flight: usize) -> Self {
        let rate = rate.max(1);
        Throttle {
            rate,
            spacing: Duration::from_secs(1) / rate,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            state: Mutex::new(State {
                next: Instant::now(),
                paused_until: None,
                recent: VecDeque::with_capacity(rate as usize + 1),
            }),
            started: AtomicU64::new(0),
        }
    }

    /// Request starts per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Requests let through so far.
    pub fn started(&self) -> u64 {
        self.started.load(Relaxed)
    }

    /// Wait for an in-flight slot, then for this request's turn. Turns are handed out in the
    /// order of the calls, `1/rate` apart; a pause moves every turn not yet taken past its end.
    pub async fn acquire(&self) -> Permit {
        let slot = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        'turn: loop {
            let turn = {
                let mut s = crate::lock(&self.state);
                let mut turn = s.next.max(Instant::now());
                if let Some(until) = s.paused_until {
                    turn = turn.max(until);
                }
                s.next = turn + self.spacing;
                turn
            };
            tokio::time::sleep_until(turn).await;
            loop {
                let free = {
                    let mut s = crate::lock(&self.state);
                    let now = Instant::now();
                    if s.paused_until.is_some_and(|until| until > now) {
                        // A pause that began while this request waited holds it too, and it
                        // takes a new turn after the pause.
                        continue 'turn;
                    }
                    // A start the last second already has `rate` of (a task woken late
                    // catching up with the next on time) waits for the oldest to age out.
                    match s.recent.front() {
                        Some(&oldest)
                            if s.recent.len() >= self.rate as usize
                                && oldest + Duration::from_secs(1) > now =>
                        {
                            oldest + Duration::from_secs(1)
                        }
                        _ => {
                            if s.recent.len() >= self.rate as usize {
                                s.recent.pop_front();
                            }
                            s.recent.push_back(now);
                            break 'turn;
                        }
                    }
                };
                tokio::time::sleep_until(free).await;
            }
        }
        self.started.fetch_add(1, Relaxed);
        Permit { _slot: slot }
    }

    /// Hold every request not yet started for `pause`.
    pub fn pause(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut s = crate::lock(&self.state);
        s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
    }

    /// Whether requests are held now.
    pub fn paused(&self) -> bool {
        let s = crate::lock(&self.state);
        s.paused_until.is_some_and(|u| u > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn starts_are_spaced_and_never_more_than_the_rate_in_any_second() {
        let throttle = Arc::new(Throttle::new(50, 8));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let t = throttle.clone();
            tasks.push(tokio::spawn(async move {
                let _p = t.acquire().await;
                let at = Instant::now();
                tokio::time::sleep(Duration::from_millis(30)).await;
                at
            }));
        }
        let mut starts = Vec::new();
        for t in tasks {
            starts.push(t.await.unwrap() - t0);
        }
        starts.sort();
        assert_eq!(throttle.started(), 200);
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(20), "{w:?}");
        }
        for (i, s) in starts.iter().enumerate() {
            let in_window = starts[i..]
                .iter()
                .take_while(|x| **x < *s + Duration::from_secs(1))
                .count();
            assert!(in_window <= 50, "{in_window} starts in one second");
        }
        // 200 requests at 50/s: the last starts at 3.98 s.
        assert_eq!(*starts.last().unwrap(), Duration::from_millis(3_980));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_are_capped() {
        let throttle = Arc::new(Throttle::new(1_000, 2));
        let open = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (t, open, most) = (throttle.clone(), open.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _p = t.acquire().await;
                let now = open.fetch_add(1, Relaxed) + 1;
                most.fetch_max(now, Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                open.fetch_sub(1, Relaxed);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_everyone_until_it_ends() {
        let throttle = Throttle::new(10, 4);
        let t0 = Instant::now();
        drop(throttle.acquire().await);
        throttle.pause(Duration::from_secs(5));
        assert!(throttle.paused());
        drop(throttle.acquire().await);
        assert!(Instant::now() - t0 >= Duration::from_secs(5));
        assert!(!throttle.paused());
        // And the spacing resumes after it.
        drop(throttle.acquire().await);
        assert!(Instant::now() - t0 >= Duration::from_millis(5_100));
    }
}
