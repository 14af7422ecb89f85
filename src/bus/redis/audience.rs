//! A gateway's audience report as it is kept in Redis: one field per gateway in the
//! `apura:audience` hash, its value the time of the report (Unix ms) on the first line, then a
//! line per topic, `<subscriptions> <topic>`. Plain text: a person reading the hash with
//! `redis-cli hgetall` sees who listens to what.

use std::sync::Arc;

use crate::bus::{AUDIENCE_TTL, TopicCounts};

/// A report's value.
pub(super) fn encode(now_ms: i64, top: &[(Arc<str>, u64)]) -> String {
    let mut out = now_ms.to_string();
    for (topic, n) in top {
        out.push('\n');
        out.push_str(&n.to_string());
        out.push(' ');
        out.push_str(topic);
    }
    out
}

/// The reports of `all` (field, value) younger than [`AUDIENCE_TTL`], read; and the fields of
/// the others (too old, or unreadable), to delete.
pub(super) fn live(now_ms: i64, all: Vec<(String, Vec<u8>)>) -> (Vec<TopicCounts>, Vec<String>) {
    let ttl = AUDIENCE_TTL.as_millis() as i64;
    let mut live = Vec::new();
    let mut gone = Vec::new();
    for (field, value) in all {
        match decode(&value) {
            Some((at, top)) if now_ms - at < ttl => live.push(top),
            _ => gone.push(field),
        }
    }
    (live, gone)
}

fn decode(value: &[u8]) -> Option<(i64, TopicCounts)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut lines = text.split('\n');
    let at = lines.next()?.parse().ok()?;
    let top = lines
        .map(|line| {
            let (n, topic) = line.split_once(' ')?;
            Some((Arc::from(topic), n.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((at, top))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read_back_and_old_or_broken_ones_are_dropped() {
        let top: Vec<(Arc<str>, u64)> =
            vec![("mayors-sp-sao-paulo".into(), 40), ("brazil".into(), 2)];
        let value = encode(1_000_000, &top);
        assert_eq!(value, "1000000\n40 mayors-sp-sao-paulo\n2 brazil");
        let (live, gone) = live(
            1_000_000 + 14_000,
            vec![
                ("a".into(), value.clone().into_bytes()),
                ("b".into(), encode(1_000_000 - 2_000, &top).into_bytes()),
                ("c".into(), b"1000000\nforty topic".to_vec()),
                ("d".into(), encode(1_000_000, &[]).into_bytes()),
            ],
        );
        assert_eq!(live, vec![top, vec![]]);
        assert_eq!(gone, vec!["b".to_string(), "c".to_string()]);
    }
}
