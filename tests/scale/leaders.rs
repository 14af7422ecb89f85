//! Which ingest says it leads, sampled through a test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::deployment::Deployment;
use crate::common::process::{metric, scrape};

/// Which ingest says it leads, every 200 ms.
pub(crate) struct LeaderWatch {
    pub(crate) samples: Arc<Mutex<Vec<[Option<bool>; 2]>>>,
    pub(crate) stop: tokio_util::sync::CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

impl LeaderWatch {
    pub(crate) fn start(d: &Deployment) -> LeaderWatch {
        let addrs = [d.ingests[0].metrics, d.ingests[1].metrics];
        let http = d.http.clone();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (s, st) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.is_cancelled() {
                let mut sample = [None, None];
                for (i, addr) in addrs.iter().enumerate() {
                    if let Some(text) = scrape(&http, *addr).await {
                        sample[i] = Some(metric(&text, "apura_ingest_leader") == Some(1.0));
                    }
                }
                s.lock().unwrap().push(sample);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        LeaderWatch {
            samples,
            stop,
            task,
        }
    }

    pub(crate) async fn stop(self) -> Vec<[Option<bool>; 2]> {
        self.stop.cancel();
        self.task.await.unwrap();
        self.samples.lock().unwrap().clone()
    }
}
