//! The keep-alive GET pollers of the load mix.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::http::{READ_CHUNK, read_body, read_head};
use crate::shared::Shared;
use crate::stats::now_us;

/// A keep-alive GET poller: every `period`, GET a drawn topic's document, revalidating with the
/// ETag it last saw for that topic. Counts 200 / 304 / errors and times each request.
pub async fn poller(shared: Arc<Shared>, id: usize, period: Option<Duration>) {
    let source = shared.sources[id % shared.sources.len()];
    let mut stop = shared.stop.clone();
    let mut etags: std::collections::HashMap<usize, String> = Default::default();
    let mut rng = shared.rng(id as u64 ^ 0x6e7);
    let mut ticker = period.map(|p| {
        let mut t = tokio::time::interval(p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    'reconnect: loop {
        if *stop.borrow() {
            return;
        }
        let mut s = match crate::net::connect_from(source, shared.target).await {
            Ok(s) => s,
            Err(_) => {
                shared.error(|c| c.get_errors += 1);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut buf = Vec::with_capacity(READ_CHUNK);
        loop {
            if let Some(t) = ticker.as_mut() {
                tokio::select! {
                    _ = t.tick() => {}
                    _ = stop.changed() => return,
                }
            }
            if *stop.borrow() {
                return;
            }
            let topic = shared.sampler.draw(&mut rng);
            let path = shared.get_path.replace("{topic}", &shared.topics[topic]);
            let inm = etags
                .get(&topic)
                .map(|e| format!("If-None-Match: {e}\r\n"))
                .unwrap_or_default();
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\n{inm}\r\n",
                shared.target
            );
            let started = now_us();
            let res = async {
                s.write_all(req.as_bytes()).await?;
                let head = read_head(&mut s, &mut buf).await?;
                read_body(&mut s, &mut buf, &head).await?;
                anyhow::Ok(head)
            };
            let head = tokio::select! {
                r = res => r,
                _ = stop.changed() => return,
            };
            match head {
                Ok(head) => {
                    let took = now_us().saturating_sub(started).max(1);
                    let mut rec = shared.rec.lock().expect("recorder lock");
                    rec.get_latency.saturating_record(took);
                    match head.status {
                        200 => rec.counters.get_ok += 1,
                        304 => rec.counters.get_not_modified += 1,
                        _ => rec.counters.get_errors += 1,
                    }
                    drop(rec);
                    if let Some(e) = head.etag.filter(|_| head.status == 200) {
                        etags.insert(topic, e);
                    }
                    if head.close {
                        continue 'reconnect;
                    }
                }
                Err(_) => {
                    shared.error(|c| c.get_errors += 1);
                    continue 'reconnect;
                }
            }
        }
    }
}
