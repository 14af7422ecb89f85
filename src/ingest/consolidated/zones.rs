//! The zone poller: one file per city at the slower cadence, cities without one skipped quietly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::feed::zones;
use crate::fetch::{Fetched, Fetcher, Source};
use crate::ingest::Every;
use crate::ingest::core::Accepted;
use crate::metrics::Metrics;
use crate::model::ZoneBreakdown;

/// Zone requests in flight at once: enough to sweep ~5,600 cities well inside a 60 s round on a
/// fast upstream, few enough to stay far below the authority's 100 requests/s.
const CONCURRENCY: usize = 8;
/// Zone results handed to the ingest at once, at most: one publication cycle each.
const BATCH: usize = 64;
/// … or whatever has arrived after this long.
const BATCH_EVERY: Duration = Duration::from_secs(1);
/// A city whose zone file is absent is asked again only after this long: most cities never
/// have one, and a 404 storm can get the client blocked.
const ABSENT_BACKOFF: Duration = Duration::from_secs(30 * 60);

/// Poll every target every `interval`, sending each round's new results to the ingest loop.
pub async fn poll_loop(
    fetcher: Fetcher,
    targets: Vec<(u32, String)>,
    interval: Duration,
    tx: mpsc::Sender<Accepted>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut sources: Vec<(u32, Source)> = targets
        .into_iter()
        .map(|(ibge, url)| (ibge, Source::new(&url)))
        .collect();
    let mut absent_until: HashMap<u32, Instant> = HashMap::new();
    let mut every = Every::new(interval);
    while every.tick(&shutdown).await {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut sources)
            .into_iter()
            .partition(|(ibge, _)| absent_until.get(ibge).is_none_or(|t| *t <= now));
        sources = waiting;
        let mut results = futures_util::stream::iter(due)
            .map(|(ibge, mut source)| {
                let fetcher = fetcher.clone();
                let metrics = metrics.clone();
                async move {
                    let r = fetch_one(&fetcher, &mut source, &metrics).await;
                    (ibge, source, r)
                }
            })
            .buffered(CONCURRENCY);
        // Results go to the ingest as they come, in batches, so that the first cities (the
        // capitals and the largest) are published without waiting for the whole round.
        let (mut batch, mut fetched, mut absent) = (Vec::new(), 0usize, 0usize);
        let mut last_flush = Instant::now();
        while let Some((ibge, source, r)) = results.next().await {
            match r {
                Ok(Some(z)) => batch.push((ibge, z)),
                Ok(None) => {}
                Err(()) => {
                    absent += 1;
                    absent_until.insert(ibge, now + ABSENT_BACKOFF);
                }
            }
            sources.push((ibge, source));
            if !batch.is_empty() && (batch.len() >= BATCH || last_flush.elapsed() >= BATCH_EVERY) {
                fetched += batch.len();
                if tx
                    .send(Accepted::Zones(std::mem::take(&mut batch)))
                    .await
                    .is_err()
                {
                    return;
                }
                last_flush = Instant::now();
            }
        }
        drop(results);
        fetched += batch.len();
        tracing::debug!(fetched, absent, "zone round");
        if !batch.is_empty() && tx.send(Accepted::Zones(batch)).await.is_err() {
            return;
        }
    }
}

/// `Ok(Some)`: new data. `Ok(None)`: unchanged or rejected (logged). `Err(())`: no such file.
async fn fetch_one(
    fetcher: &Fetcher,
    source: &mut Source,
    metrics: &Metrics,
) -> Result<Option<ZoneBreakdown>, ()> {
    let name = source.name();
    let started = std::time::Instant::now();
    let fetched = fetcher.fetch(source).await;
    metrics.fetched("consolidated_zones", started.elapsed(), &fetched);
    match fetched {
        Ok(Fetched::Modified(bytes)) => match zones::parse(&bytes, &name) {
            Ok(z) => Ok(Some(z)),
            Err(e) => {
                metrics.feed_error(e.kind());
                tracing::error!(error = %e, "zone file rejected; previous document stays current");
                Ok(None)
            }
        },
        Ok(Fetched::NotModified) => Ok(None),
        Ok(Fetched::NotFound) => Err(()),
        Err(e) => {
            metrics.feed_error(e.kind());
            tracing::warn!(error = %e, "zone fetch failed");
            Ok(None)
        }
    }
}
