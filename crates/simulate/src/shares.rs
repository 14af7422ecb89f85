//! Exact integer shares: a figure as the count shows it part way ([`partial`]), and a total
//! split in proportion to weights ([`apportion`]).

/// Scale of an early bias `beta`: thousandths, so a bias is below it in absolute value.
const BETA_SCALE: i128 = 1_000;

/// What a race shows when `s` of `ts` sections are in, for a figure that ends at `final_votes`:
/// `final × p × (1 + β (1 − p))` with `p = s / ts`, rounded down, in exact integer arithmetic.
///
/// It is 0 at `s = 0`, exactly `final_votes` at `s = ts`, and never decreases in `s`: the step
/// from `s` to `s + 1` is `K·ts + β(ts − 2s − 1) > 0` because `|β| < K`. Its bias relative to
/// the even share, `β (1 − p)`, shrinks to nothing as the count closes.
pub fn partial(final_votes: u64, beta: i32, s: u64, ts: u64) -> u64 {
    if s >= ts {
        return final_votes;
    }
    let (s, ts, beta) = (i128::from(s), i128::from(ts), i128::from(beta));
    let shown = s * (BETA_SCALE * ts + beta * (ts - s));
    (i128::from(final_votes) * shown / (BETA_SCALE * ts * ts)) as u64
}

/// Split `total` in proportion to `weights`, exactly: floors, then the remainder one by one to
/// the largest fractions (ties to the earlier).
pub fn apportion(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if sum <= 0.0 {
        let mut out = vec![0; weights.len()];
        out[0] = total;
        return out;
    }
    let quotas: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut out: Vec<u64> = quotas.iter().map(|q| q.floor() as u64).collect();
    let given: u64 = out.iter().sum();
    // Float rounding can leave the floors a little above the total in pathological cases.
    if given > total {
        let mut excess = given - total;
        for v in out.iter_mut().rev() {
            let take = excess.min(*v);
            *v -= take;
            excess -= take;
        }
        return out;
    }
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = quotas[a] - quotas[a].floor();
        let fb = quotas[b] - quotas[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take((total - given) as usize) {
        out[i] += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_counts_start_at_zero_end_exactly_and_never_go_down() {
        for (f, beta, ts) in [
            (9_999_999, 450, 30_000),
            (12, -450, 7),
            (1, 0, 1),
            (3_000_000, -450, 27_000),
        ] {
            assert_eq!(partial(f, beta, 0, ts), 0);
            assert_eq!(partial(f, beta, ts, ts), f);
            let mut last = 0;
            for s in 0..=ts {
                let v = partial(f, beta, s, ts);
                assert!(v >= last && v <= f, "{f} {beta} {s}/{ts}");
                last = v;
            }
        }
        // Halfway, a +45 % bias shows 45 % × ½ above the even share.
        assert_eq!(partial(1_000, 450, 50, 100), 612);
    }

    #[test]
    fn apportion_is_exact() {
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(apportion(0, &[1.0, 2.0]), vec![0, 0]);
        assert_eq!(apportion(7, &[0.0, 0.0]), vec![7, 0]);
        let w: Vec<f64> = (1..50).map(|i| f64::from(i).sqrt()).collect();
        assert_eq!(apportion(123_457, &w).iter().sum::<u64>(), 123_457);
    }
}
