//! What the scale tests watch on the Redis channel: every cycle, as a gateway receives it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apura::bus::{Bus, BusEvent};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{PATIENCE, QUIET};
use crate::common::redis::{RedisServer, bus};

/// Every cycle on the Redis channel, as a gateway receives it. Clones share the log.
#[derive(Clone)]
pub(crate) struct Observer {
    pub(crate) log: Arc<Mutex<ObserverLog>>,
    pub(crate) _task: Arc<AbortOnDrop>,
}

/// Stops a task when the last handle goes.
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Default)]
pub(crate) struct ObserverLog {
    pub(crate) cycles: usize,
    pub(crate) resyncs: usize,
    pub(crate) max_version: u64,
    pub(crate) last: Option<Instant>,
    /// Body of every topic as last seen, until a resync (cycles may have been missed).
    pub(crate) latest: HashMap<String, bytes::Bytes>,
    /// Topics listed by the latest `/cities.json` seen: a city never loses one.
    pub(crate) indexed: usize,
    pub(crate) problems: Vec<String>,
}

impl Observer {
    pub(crate) async fn start(server: &RedisServer) -> Observer {
        let bus = bus(server).await;
        let mut events = bus.subscribe().await.unwrap();
        let log = Arc::new(Mutex::new(ObserverLog::default()));
        let l = log.clone();
        let task = tokio::spawn(async move {
            let _bus = bus;
            while let Some(event) = events.next().await {
                let mut log = l.lock().unwrap();
                match event {
                    BusEvent::Resync => {
                        log.resyncs += 1;
                        log.latest.clear();
                    }
                    BusEvent::Cycle(cycle) => log.record(&cycle),
                }
            }
        });
        Observer {
            log,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    pub(crate) fn cycles(&self) -> usize {
        self.log.lock().unwrap().cycles
    }

    pub(crate) fn resyncs(&self) -> usize {
        self.log.lock().unwrap().resyncs
    }

    pub(crate) fn max_version(&self) -> u64 {
        self.log.lock().unwrap().max_version
    }

    /// Wait until nothing has been published for [`QUIET`].
    pub(crate) async fn wait_quiet(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let last = self.log.lock().unwrap().last;
            if last.is_some_and(|t| t.elapsed() >= QUIET) {
                return;
            }
            assert!(Instant::now() < deadline, "publication never stopped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Versions strictly increasing, no document published twice unchanged, no index shrinking.
    pub(crate) fn assert_one_publisher_at_a_time(&self) {
        let log = self.log.lock().unwrap();
        assert!(log.cycles > 10, "only {} cycles seen", log.cycles);
        assert!(log.problems.is_empty(), "{:#?}", log.problems);
    }
}

impl ObserverLog {
    pub(crate) fn record(&mut self, cycle: &apura::bus::Cycle) {
        self.cycles += 1;
        self.last = Some(Instant::now());
        if cycle.version <= self.max_version {
            self.problems.push(format!(
                "cycle {} after cycle {}",
                cycle.version, self.max_version
            ));
        }
        self.max_version = self.max_version.max(cycle.version);
        for doc in &cycle.documents {
            let body = doc.content().expect("a stamped document");
            if self.latest.get(&*doc.topic) == Some(&body) {
                self.problems.push(format!(
                    "{} published again unchanged in cycle {}",
                    doc.topic, cycle.version
                ));
            }
            if &*doc.topic == "cities" {
                let index: Value = serde_json::from_slice(&doc.json).unwrap();
                let listed = index["cities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["topics"].as_array().unwrap().len())
                    .sum();
                if listed < self.indexed {
                    self.problems.push(format!(
                        "/cities.json went from {} topics to {listed} in cycle {}",
                        self.indexed, cycle.version
                    ));
                }
                self.indexed = listed;
            }
            self.latest.insert(doc.topic.to_string(), body);
        }
    }
}
