//! The server's own view of delivery lag: the gateways' `apura_delivery_lag_seconds`
//! histogram, read from their `/metrics` once the ramp is done and again when the run ends,
//! so that a report sets the p99 the gateways saw beside the one the subscribers measured in
//! the same run (`--server-metrics`).
//!
//! The quantile is computed as Prometheus' `histogram_quantile` does: the bucket that holds the
//! rank, and a linear interpolation inside it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::net::parse_target;

/// The histogram read: `apura_delivery_lag_seconds`, every stream kind together.
pub const FAMILY: &str = "apura_delivery_lag_seconds";
/// The bus's share of it: a cycle's publication to its documents held in a gateway's hub.
pub const ARRIVAL: &str = "apura_cycle_arrival_seconds";

/// A cumulative histogram: `(upper bound, observations at or below it)` in increasing bound
/// order, the last bound `+Inf`.
pub type Buckets = Vec<(f64, f64)>;

/// `IP:PORT/PATH` (path `metrics` when left out) as an address and a path.
pub fn parse_spec(spec: &str) -> anyhow::Result<(SocketAddr, String)> {
    let (a, p) = spec.split_once('/').unwrap_or((spec, "metrics"));
    let addr = parse_target(a).with_context(|| format!("--server-metrics {spec:?}"))?;
    Ok((addr, format!("/{p}")))
}

/// The buckets of `family` in a text exposition, summed over every series (every label set
/// but `le`).
pub fn parse(text: &str, family: &str) -> anyhow::Result<Buckets> {
    let prefix = format!("{family}_bucket{{");
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let (labels, value) = rest
            .rsplit_once('}')
            .with_context(|| format!("unreadable bucket line {line:?}"))?;
        let le = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("le=\""))
            .and_then(|v| v.strip_suffix('"'))
            .with_context(|| format!("bucket line without le: {line:?}"))?;
        let le: f64 = match le {
            "+Inf" => f64::INFINITY,
            v => v.parse().with_context(|| format!("bad le in {line:?}"))?,
        };
        // A value may be followed by a timestamp.
        let count: f64 = value
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .with_context(|| format!("bad count in {line:?}"))?;
        match sums.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => sums.push((le, count)),
        }
    }
    if sums.is_empty() {
        bail!("no {family} histogram in the exposition");
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    if sums.last().map(|b| b.0) != Some(f64::INFINITY) {
        bail!("{family} has no +Inf bucket");
    }
    Ok(sums)
}

/// The sum of several servers' histograms, which must have the same bounds.
pub fn sum(all: &[Buckets]) -> anyhow::Result<Buckets> {
    let mut out = all.first().context("no histogram")?.clone();
    for b in &all[1..] {
        if b.len() != out.len() || b.iter().zip(&out).any(|(x, y)| x.0 != y.0) {
            bail!("the servers' histograms have different buckets");
        }
        for (o, x) in out.iter_mut().zip(b) {
            o.1 += x.1;
        }
    }
    Ok(out)
}

/// What was observed between two readings of the same histogram.
pub fn delta(after: &Buckets, before: &Buckets) -> anyhow::Result<Buckets> {
    if after.len() != before.len() || after.iter().zip(before).any(|(a, b)| a.0 != b.0) {
        bail!("the histogram's buckets changed between the two readings");
    }
    Ok(after
        .iter()
        .zip(before)
        .map(|(a, b)| (a.0, (a.1 - b.1).max(0.0)))
        .collect())
}

/// The `q` quantile as Prometheus' `histogram_quantile` computes it; `None` without
/// observations.
pub fn quantile(q: f64, b: &Buckets) -> Option<f64> {
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = b.iter().position(|(_, c)| *c >= rank)?;
    if b[i].0.is_infinite() {
        // Above the highest finite bound: Prometheus answers that bound.
        return Some(if i == 0 { 0.0 } else { b[i - 1].0 });
    }
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { b[i - 1] };
    let (upper, count) = b[i];
    if count == below {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / (count - below))
}

/// Read every server's `family` histogram now.
pub fn read(specs: &[String], family: &str) -> anyhow::Result<Buckets> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut all = Vec::new();
    for spec in specs {
        let (addr, path) = parse_spec(spec)?;
        let (status, body) = rt
            .block_on(crate::http::fetch(addr, &path))
            .with_context(|| format!("reading {spec}"))?;
        if status != 200 {
            bail!("{spec} answered {status}");
        }
        let text = String::from_utf8_lossy(&body);
        all.push(parse(&text, family).with_context(|| format!("reading {spec}"))?);
    }
    sum(&all)
}

/// The audience the gateways report on `/status.json` (next to their metrics): every topic in
/// each gateway's top list with its subscribers summed over gateways, and how many gateways
/// listed it.
pub fn read_audience(specs: &[String]) -> anyhow::Result<Vec<(String, u64, usize)>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut sums: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for spec in specs {
        let (addr, _) = parse_spec(spec)?;
        let (status, body) = rt
            .block_on(crate::http::fetch(addr, "/status.json"))
            .with_context(|| format!("reading {addr}/status.json"))?;
        if status != 200 {
            bail!("{addr}/status.json answered {status}");
        }
        let v: Value = serde_json::from_slice(&body)
            .with_context(|| format!("{addr}/status.json is not JSON"))?;
        let top = v["audience"]["top"]
            .as_array()
            .with_context(|| format!("{addr}/status.json has no audience.top"))?;
        for t in top {
            let (Some(topic), Some(n)) = (t["topic"].as_str(), t["subscribers"].as_u64()) else {
                bail!("{addr}/status.json: unreadable top entry {t}");
            };
            let e = sums.entry(topic.to_string()).or_default();
            e.0 += n;
            e.1 += 1;
        }
    }
    Ok(sums.into_iter().map(|(t, (n, g))| (t, n, g)).collect())
}

/// The report's `status_audience` section: the gateways' top topics against the streams the
/// workers established on them. Only the topics every gateway lists are compared (a topic
/// below one gateway's top list has an unknown count there); with streams that ended or
/// failed, the counts cannot be equal and the section says so.
pub fn audience_section(
    reported: &[(String, u64, usize)],
    gateways: usize,
    clients: &BTreeMap<String, u64>,
    errors: u64,
) -> Value {
    let compared: Vec<_> = reported.iter().filter(|(_, _, g)| *g == gateways).collect();
    let mismatches: Vec<Value> = compared
        .iter()
        .filter(|(t, n, _)| clients.get(t).copied().unwrap_or(0) != *n)
        .map(|(t, n, _)| json!({"topic": t, "status": n, "clients": clients.get(t).copied().unwrap_or(0)}))
        .collect();
    json!({
        "gateways": gateways,
        "topics_compared": compared.len(),
        "topics_equal": compared.len() - mismatches.len(),
        "mismatches": mismatches.iter().take(10).collect::<Vec<_>>(),
        "client_errors": errors,
        "largest": compared.iter().max_by_key(|(_, n, _)| *n).map(|(t, n, _)| json!({"topic": t, "subscribers": n})),
    })
}

/// The report's `server_lag` section: the gateways' quantiles over the hold, and the ratio of
/// their p99 to the subscribers' (`client_p99_ms`).
pub fn section(before: &Buckets, after: &Buckets, client_p99_ms: Option<f64>) -> Value {
    let d = match delta(after, before) {
        Ok(d) => d,
        Err(e) => return json!({ "error": format!("{e:#}") }),
    };
    let ms = |q: f64| quantile(q, &d).map(|s| (s * 1e5).round() / 100.0);
    let p99 = ms(0.99);
    let ratio = match (p99, client_p99_ms) {
        (Some(s), Some(c)) if c > 0.0 => Some((s / c * 1000.0).round() / 1000.0),
        _ => None,
    };
    json!({
        "observations": d.last().map(|b| b.1 as u64),
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": p99,
        "p99_over_client_p99": ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP apura_delivery_lag_seconds lag\n\
        # TYPE apura_delivery_lag_seconds histogram\n\
        apura_delivery_lag_seconds_bucket{kind=\"sse\",le=\"0.1\"} 10\n\
        apura_delivery_lag_seconds_bucket{kind=\"sse\",le=\"0.2\"} 60\n\
        apura_delivery_lag_seconds_bucket{kind=\"sse\",le=\"+Inf\"} 100\n\
        apura_delivery_lag_seconds_sum{kind=\"sse\"} 20\n\
        apura_delivery_lag_seconds_count{kind=\"sse\"} 100\n\
        apura_delivery_lag_seconds_bucket{kind=\"ws\",le=\"0.1\"} 0\n\
        apura_delivery_lag_seconds_bucket{kind=\"ws\",le=\"0.2\"} 40\n\
        apura_delivery_lag_seconds_bucket{kind=\"ws\",le=\"+Inf\"} 100\n\
        apura_delivery_lag_seconds_bucket_other{le=\"0.1\"} 7\n";

    #[test]
    fn kinds_are_summed_per_bound() {
        let b = parse(TEXT, FAMILY).unwrap();
        assert_eq!(b, vec![(0.1, 10.0), (0.2, 100.0), (f64::INFINITY, 200.0)]);
        assert!(parse("apura_other_bucket{le=\"1\"} 3\n", FAMILY).is_err());
        assert!(parse("apura_delivery_lag_seconds_bucket{le=\"1\"} 3\n", FAMILY).is_err());
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_as_prometheus_does() {
        let b = vec![
            (0.1, 10.0),
            (0.2, 100.0),
            (0.5, 190.0),
            (f64::INFINITY, 200.0),
        ];
        // Rank 100 is the top of the second bucket.
        assert_eq!(quantile(0.5, &b), Some(0.2));
        // Rank 5 is halfway into the first bucket, whose lower bound is 0.
        assert!((quantile(0.025, &b).unwrap() - 0.05).abs() < 1e-12);
        // Rank 145 is halfway into (0.2, 0.5].
        assert!((quantile(0.725, &b).unwrap() - 0.35).abs() < 1e-12);
        // Rank 198 lands in +Inf: the highest finite bound.
        assert_eq!(quantile(0.99, &b), Some(0.5));
        assert_eq!(
            quantile(0.99, &vec![(0.1, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
    }

    #[test]
    fn the_audience_is_compared_on_the_topics_every_gateway_lists() {
        let clients: BTreeMap<String, u64> = [
            ("sp".to_string(), 40),
            ("rj".to_string(), 7),
            ("bh".to_string(), 3),
        ]
        .into();
        // Two gateways: "bh" is in one top list only, so it is not compared.
        let reported = vec![
            ("sp".to_string(), 40, 2),
            ("rj".to_string(), 6, 2),
            ("bh".to_string(), 1, 1),
        ];
        let s = audience_section(&reported, 2, &clients, 0);
        assert_eq!(s["topics_compared"], 2);
        assert_eq!(s["topics_equal"], 1);
        assert_eq!(s["mismatches"][0]["topic"], "rj");
        assert_eq!(s["mismatches"][0]["clients"], 7);
        assert_eq!(s["largest"]["topic"], "sp");
    }

    #[test]
    fn the_hold_is_the_difference_of_two_readings() {
        let before = vec![(0.1, 10.0), (0.2, 20.0), (f64::INFINITY, 20.0)];
        let after = vec![(0.1, 10.0), (0.2, 120.0), (f64::INFINITY, 120.0)];
        let s = section(&before, &after, Some(200.0));
        assert_eq!(s["observations"], 100);
        // Every observation of the hold is in (0.1, 0.2]: p99 at 0.199 s.
        assert_eq!(s["p99_ms"], 199.0);
        assert_eq!(s["p99_over_client_p99"], 0.995);
        let moved = vec![(0.3, 1.0), (f64::INFINITY, 1.0)];
        assert!(section(&before, &moved, None)["error"].is_string());
    }
}
