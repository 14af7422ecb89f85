//! The topics clients subscribe to, and how often each is drawn.
//!
//! Demand on count night is skewed: São Paulo alone is ~25 % of views and the long tail of small
//! towns is cold. A client draws the hot topic with probability `hot_share`,
//! else a topic of rank r (capitals first, then the index order) with weight 1/r^s.

use std::net::SocketAddr;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// The parts of `GET /cities.json` we need.
#[derive(Deserialize)]
struct Index {
    cities: Vec<IndexCity>,
}

#[derive(Deserialize)]
struct IndexCity {
    #[serde(default)]
    capital: bool,
    topics: Vec<String>,
}

/// Topic names from the gateway's index whose name starts with `prefix`, capitals first, and
/// how many of them are capitals'.
pub async fn from_index(
    target: SocketAddr,
    path: &str,
    prefix: &str,
) -> anyhow::Result<(Vec<String>, usize)> {
    let (status, body) = crate::http::fetch(target, path)
        .await
        .with_context(|| format!("GET {path} from {target}"))?;
    anyhow::ensure!(status == 200, "GET {path} from {target}: status {status}");
    let index: Index = serde_json::from_slice(&body).context("parsing the cities index")?;
    let (mut capitals, mut rest) = (Vec::new(), Vec::new());
    for c in index.cities {
        let list = if c.capital { &mut capitals } else { &mut rest };
        list.extend(c.topics.into_iter().filter(|t| t.starts_with(prefix)));
    }
    let n = capitals.len();
    capitals.extend(rest);
    anyhow::ensure!(
        !capitals.is_empty(),
        "no topic starts with {prefix:?} in {path}"
    );
    Ok((capitals, n))
}

/// Salt of the topic draws (see [`draws`]).
const DRAW_SALT: u64 = 0x5eed;

/// The topics of the `subscribers` subscribers worker `worker` starts, in order: the same for
/// the worker and for anyone who draws them again (to know every topic's audience before the
/// run).
pub fn draws(sampler: &Sampler, seed: u64, worker: usize, subscribers: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed ^ (worker as u64).rotate_left(32) ^ DRAW_SALT);
    (0..subscribers).map(|_| sampler.draw(&mut rng)).collect()
}

/// Subscribers of each topic over the whole run: every worker's draws.
pub fn audience(
    sampler: &Sampler,
    topics: usize,
    seed: u64,
    per_worker: impl Iterator<Item = usize>,
) -> Vec<u32> {
    let mut counts = vec![0u32; topics];
    for (worker, n) in per_worker.enumerate() {
        for t in draws(sampler, seed, worker, n) {
            counts[t] += 1;
        }
    }
    counts
}

/// Class flags of every topic: the first `capitals` are capitals'
/// ([`crate::freshness::CAPITAL`]); the [`crate::freshness::TOP_TOPICS`] with the most
/// subscribers, ties to the first, are the most subscribed ([`crate::freshness::TOP`]).
pub fn classes(audience: &[u32], capitals: usize) -> Vec<u8> {
    use crate::freshness::{CAPITAL, TOP, TOP_TOPICS};
    let mut ranked: Vec<usize> = (0..audience.len()).filter(|&t| audience[t] > 0).collect();
    ranked.sort_by_key(|&t| (std::cmp::Reverse(audience[t]), t));
    let mut classes: Vec<u8> = (0..audience.len())
        .map(|t| if t < capitals { CAPITAL } else { 0 })
        .collect();
    for &t in ranked.iter().take(TOP_TOPICS) {
        classes[t] |= TOP;
    }
    classes
}

/// Draws topic indices: `hot` with probability `hot_share`, else Zipf(s) over the others.
pub struct Sampler {
    hot: usize,
    hot_share: f64,
    /// Cumulative weights of every topic but `hot`, in rank order.
    cdf: Vec<f64>,
    /// Topic index of each entry of `cdf`.
    ranked: Vec<usize>,
}

impl Sampler {
    /// `topics[hot]` is the hot topic; the rest keep their order as ranks.
    pub fn new(n: usize, hot: usize, hot_share: f64, s: f64) -> Self {
        let ranked: Vec<usize> = (0..n).filter(|&i| i != hot).collect();
        let mut cdf = Vec::with_capacity(ranked.len());
        let mut acc = 0.0;
        for r in 1..=ranked.len() {
            acc += 1.0 / (r as f64).powf(s);
            cdf.push(acc);
        }
        let hot_share = if ranked.is_empty() {
            1.0
        } else {
            hot_share.clamp(0.0, 1.0)
        };
        Sampler {
            hot,
            hot_share,
            cdf,
            ranked,
        }
    }

    pub fn draw(&self, rng: &mut impl Rng) -> usize {
        if self.ranked.is_empty() || rng.random::<f64>() < self.hot_share {
            return self.hot;
        }
        let x = rng.random::<f64>() * self.cdf[self.cdf.len() - 1];
        let i = self
            .cdf
            .partition_point(|&c| c < x)
            .min(self.ranked.len() - 1);
        self.ranked[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hot_topic_gets_its_share_and_the_tail_is_skewed() {
        let s = Sampler::new(5_000, 42, 0.25, 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 5_000];
        for _ in 0..200_000 {
            counts[s.draw(&mut rng)] += 1;
        }
        let hot = f64::from(counts[42]) / 200_000.0;
        assert!((hot - 0.25).abs() < 0.01, "hot share {hot}");
        // Rank 1 of the tail (topic 0) is drawn far more often than rank 1,000.
        assert!(counts[0] > 20 * counts[1_000].max(1));
    }

    #[test]
    fn the_audience_is_every_worker_s_draws_and_ranks_the_most_subscribed() {
        use crate::freshness::{CAPITAL, TOP, TOP_TOPICS};
        let s = Sampler::new(500, 3, 0.25, 1.0);
        let audience = audience(&s, 500, 1, [700, 699].into_iter());
        assert_eq!(audience.iter().sum::<u32>(), 1_399);
        let mut again = vec![0u32; 500];
        for (w, n) in [(0, 700), (1, 699)] {
            for t in draws(&s, 1, w, n) {
                again[t] += 1;
            }
        }
        assert_eq!(audience, again);
        let classes = classes(&audience, 27);
        assert_eq!(
            classes.iter().filter(|&&c| c & TOP != 0).count(),
            TOP_TOPICS
        );
        assert_eq!(
            classes[3] & TOP,
            TOP,
            "the hot topic is the most subscribed"
        );
        assert!(classes[..27].iter().all(|&c| c & CAPITAL != 0));
        assert!(classes[27..].iter().all(|&c| c & CAPITAL == 0));
        let least_top = (0..500)
            .filter(|&t| classes[t] & TOP != 0)
            .map(|t| audience[t])
            .min()
            .unwrap();
        assert!((0..500).all(|t| classes[t] & TOP != 0 || audience[t] <= least_top));
    }
}
