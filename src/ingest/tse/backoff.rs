//! When to ask again for a file of the authority that answered not found.

use tokio::time::{Duration, Instant};

use crate::feed::tse::progress::Fingerprint;

/// First wait before asking again for a file not found; doubled every time up to
/// [`NOT_FOUND_MAX`]. A file late behind its progress row is picked up 10 s later; one that never
/// comes costs one request every five minutes.
pub const NOT_FOUND_FIRST: Duration = Duration::from_secs(10);
pub const NOT_FOUND_MAX: Duration = Duration::from_secs(300);

/// When a file may be asked for again after answers of not found.
#[derive(Debug, Default, Clone)]
pub(super) struct Backoff {
    /// Consecutive 404s.
    pub(super) misses: u32,
    /// Not before this.
    pub(super) until: Option<Instant>,
    /// Not until the city's progress row is other than this one.
    until_row_leaves: Option<Fingerprint>,
}

impl Backoff {
    pub(super) fn allows(&self, now: Instant, row: Option<&Fingerprint>) -> bool {
        let time_ok = self.until.is_none_or(|t| now >= t);
        let row_ok = match (&self.until_row_leaves, row) {
            (Some(waiting), Some(row)) => waiting != row,
            _ => true,
        };
        time_ok && row_ok
    }

    /// One more 404: wait for the row to move if nothing is counted yet, or for the doubling
    /// back-off.
    pub(super) fn miss(&mut self, now: Instant, row: Option<(&Fingerprint, bool)>) {
        self.misses += 1;
        match row {
            Some((fingerprint, true)) => {
                self.until_row_leaves = Some(fingerprint.clone());
                self.until = None;
            }
            _ => {
                let wait = NOT_FOUND_FIRST
                    .saturating_mul(1 << (self.misses - 1).min(10))
                    .min(NOT_FOUND_MAX);
                self.until = Some(now + wait);
                self.until_row_leaves = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::tse::progress;

    fn fp(text: &str) -> Fingerprint {
        let body = format!(
            r#"{{"abr":[{{"tpabr":"mun","cdabr":"1","dt":"01/10/2028","ht":"{text}","s":{{"st":"1","ts":"2"}}}}]}}"#
        );
        progress::parse(body.as_bytes(), "fp").unwrap().rows[0]
            .fingerprint()
            .clone()
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_backs_off_by_time_or_until_the_row_moves() {
        let now = Instant::now();
        let (a, b) = (fp("18:00:00"), fp("18:00:10"));
        let mut backoff = Backoff::default();
        assert!(backoff.allows(now, Some(&a)));
        // Something counted: a doubling wait, whatever the row does.
        backoff.miss(now, Some((&a, false)));
        assert!(!backoff.allows(now, Some(&b)));
        assert!(backoff.allows(now + NOT_FOUND_FIRST, Some(&b)));
        backoff.miss(now, Some((&a, false)));
        assert!(!backoff.allows(now + NOT_FOUND_FIRST, Some(&a)));
        assert!(backoff.allows(now + 2 * NOT_FOUND_FIRST, Some(&a)));
        for _ in 0..20 {
            backoff.miss(now, Some((&a, false)));
        }
        assert_eq!(backoff.until, Some(now + NOT_FOUND_MAX));
        // Nothing counted yet: no time-based retry, only a new row.
        let mut backoff = Backoff::default();
        backoff.miss(now, Some((&a, true)));
        assert!(!backoff.allows(now + NOT_FOUND_MAX * 10, Some(&a)));
        assert!(backoff.allows(now, Some(&b)));
    }
}
