//! Freshness: from a source file coming out to a subscriber holding a document built from it.
//!
//! The simulator lists its ticks (`GET /ticks` of `apura simulate`): the `source_time` the files
//! of each tick carry and when they came out. A subscriber holds the `source_time` of the last
//! document it received. When a document of a later `source_time` arrives, every tick after the
//! one it held, up to and including the new one, reaches it at that moment: a poll that skipped
//! ticks is charged for each tick it skipped, from when that tick came out. The document a
//! subscriber gets when it subscribes (its snapshot) sets what it holds and is no sample.
//!
//! In the TSE layout a city's file is rewritten only at the ticks where its count moved, so a
//! document skipping from one `source_time` to a later one skipped only that city's changes in
//! between: the tick list then also gives, per topic, the ticks at which its file was written
//! (`changes`), and only those are charged.
//!
//! Workers record arrivals grouped by (class of the topic, topic, source time held, source time
//! received); the parent, once it has the tick list, turns them into samples per tick.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound::{Excluded, Included};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{Pairs, hist};

/// Class flag: the topic is a state capital's.
pub const CAPITAL: u8 = 1;
/// Class flag: the topic is one of the [`TOP_TOPICS`] with the most subscribers in the run.
pub const TOP: u8 = 2;
/// How many of the most-subscribed topics make the `top50` class.
pub const TOP_TOPICS: usize = 50;
/// Share of the subscribers the coverage figure waits for.
pub const COVERAGE: f64 = 0.99;

/// What one subscriber holds: its topic (index in the run's list) and the topic's class, and
/// the source time of its last document.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub class: u8,
    pub topic: u32,
    pub source: Option<i64>,
}

impl Held {
    pub fn new(class: u8, topic: usize) -> Self {
        Held {
            class,
            topic: topic as u32,
            source: None,
        }
    }
}

/// Offsets are kept to this many µs: a tenth of a millisecond, far below any freshness.
const OFFSET_STEP_US: u64 = 100;

/// Arrivals of one move (a topic, from one source time to a later one): when each arrived, in
/// µs after the first of them, to [`OFFSET_STEP_US`]. One number per delivery: a histogram per
/// topic and move would cost ~190 KB each.
struct Arrivals {
    base_us: u64,
    offsets: Vec<u64>,
}

/// A worker's arrivals, by move: (class, topic, from, to).
#[derive(Default)]
pub struct Recorder(HashMap<(u8, u32, i64, i64), Arrivals>);

impl Recorder {
    /// A document of source time `source` arrived at `now_us` for a subscriber holding `held`.
    pub fn arrived(&mut self, held: &mut Held, source: i64, now_us: u64) {
        match held.source {
            // The first document of a stream: the snapshot.
            None => held.source = Some(source),
            Some(from) if source > from => {
                let a = self
                    .0
                    .entry((held.class, held.topic, from, source))
                    .or_insert_with(|| Arrivals {
                        base_us: now_us,
                        offsets: Vec::new(),
                    });
                let offset = now_us.saturating_sub(a.base_us);
                a.offsets.push(offset / OFFSET_STEP_US * OFFSET_STEP_US);
                held.source = Some(source);
            }
            // The same source time again (another change of the document), or an older one.
            Some(_) => {}
        }
    }

    pub fn report(&self) -> Vec<Move> {
        self.0
            .iter()
            .map(|(&(class, topic, from, to), a)| {
                let mut sorted = a.offsets.clone();
                sorted.sort_unstable();
                let mut offsets: Pairs = Vec::new();
                for v in sorted {
                    match offsets.last_mut() {
                        Some((last, n)) if *last == v => *n += 1,
                        _ => offsets.push((v, 1)),
                    }
                }
                Move {
                    class,
                    topic: Some(topic),
                    from,
                    to,
                    base_us: a.base_us,
                    offsets,
                }
            })
            .collect()
    }
}

/// Subscribers of one class moving from source time `from` to `to`: when each arrived,
/// `base_us` plus each offset (µs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Move {
    pub class: u8,
    /// The topic's index in the run's list.
    #[serde(default)]
    pub topic: Option<u32>,
    pub from: i64,
    pub to: i64,
    pub base_us: u64,
    pub offsets: Pairs,
}

/// A `source_time` (`YYYY-MM-DDThh:mm:ss`, local time without zone) as seconds since
/// 1970-01-01T00:00:00 of the same clock: only order and equality matter.
pub fn parse_source_time(s: &[u8]) -> Option<i64> {
    if s.len() != 19
        || s[4] != b'-'
        || s[7] != b'-'
        || s[10] != b'T'
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &s[r];
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, b| n * 10 + i64::from(b - b'0')))
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3_600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One tick of the simulator's list.
#[derive(Debug, Clone)]
pub struct Tick {
    pub tick: u64,
    /// Its `source_time`, as [`parse_source_time`] reads it.
    pub source: i64,
    /// When its files came out, Unix µs.
    pub came_out_us: u64,
    /// Another tick carries the same `source_time`: a document cannot say which it is from.
    pub ambiguous: bool,
}

#[derive(Deserialize)]
struct TickList {
    ticks: Vec<TickEntry>,
    /// TSE layout: per topic, the ticks its file was written at.
    #[serde(default)]
    changes: Option<HashMap<String, Vec<u64>>>,
}

/// The simulator's tick list and, in the TSE layout, the ticks each topic's file was written
/// at.
pub struct SourceTicks {
    pub ticks: Vec<Tick>,
    pub changes: Option<HashMap<String, BTreeSet<u64>>>,
}

#[derive(Deserialize)]
struct TickEntry {
    tick: u64,
    source_time: String,
    published_at: u64,
    #[serde(default)]
    ambiguous: bool,
}

/// The ticks of the simulator's `GET /ticks` body.
pub fn parse_ticks(body: &[u8]) -> anyhow::Result<SourceTicks> {
    let list: TickList = serde_json::from_slice(body).context("parsing the tick list")?;
    let changes = list.changes.map(|c| {
        c.into_iter()
            .map(|(topic, ticks)| (topic, ticks.into_iter().collect()))
            .collect()
    });
    let ticks = list
        .ticks
        .into_iter()
        .map(|t| {
            let source = parse_source_time(t.source_time.as_bytes()).with_context(|| {
                format!(
                    "tick {}: source_time {:?} is not YYYY-MM-DDThh:mm:ss",
                    t.tick, t.source_time
                )
            })?;
            Ok(Tick {
                tick: t.tick,
                source,
                came_out_us: t.published_at.saturating_mul(1_000),
                ambiguous: t.ambiguous,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(SourceTicks { ticks, changes })
}

/// Freshness of the ticks that came out within a window, from the workers' moves.
pub struct Figures {
    /// Every subscriber, capitals, the most-subscribed topics, the rest (µs).
    pub all: Histogram<u64>,
    pub capitals: Histogram<u64>,
    pub top: Histogram<u64>,
    pub rest: Histogram<u64>,
    /// Per tick counted: when it came out, and the freshness of every subscriber that got it.
    pub ticks: BTreeMap<u64, (u64, Histogram<u64>)>,
    /// Ticks listed that another tick shares its `source_time` with, not counted.
    pub ambiguous: usize,
}

/// The samples of `moves` for the ticks that came out from `from_us` to `to_us` (Unix µs).
/// `written`, where given, says per topic index at which ticks its file was written: a move of
/// such a topic is charged only those ticks.
pub fn compute(
    moves: &[Move],
    ticks: &[Tick],
    written: Option<&HashMap<u32, &BTreeSet<u64>>>,
    from_us: u64,
    to_us: u64,
) -> Figures {
    let mut by_source: BTreeMap<i64, Vec<&Tick>> = BTreeMap::new();
    for t in ticks {
        by_source.entry(t.source).or_default().push(t);
    }
    let counted = |t: &Tick| !t.ambiguous && (from_us..=to_us).contains(&t.came_out_us);
    let mut f = Figures {
        all: hist(),
        capitals: hist(),
        top: hist(),
        rest: hist(),
        ticks: ticks
            .iter()
            .filter(|t| counted(t) && by_source[&t.source].len() == 1)
            .map(|t| (t.tick, (t.came_out_us, hist())))
            .collect(),
        ambiguous: ticks
            .iter()
            .filter(|t| t.ambiguous || by_source[&t.source].len() > 1)
            .count(),
    };
    for m in moves {
        for (_, same) in by_source.range((Excluded(m.from), Included(m.to))) {
            let [t] = same.as_slice() else { continue };
            if let (Some(written), Some(topic)) = (written, m.topic) {
                // A topic the simulator does not list was never written: nothing to charge.
                if !written.get(&topic).is_some_and(|w| w.contains(&t.tick)) {
                    continue;
                }
            }
            let Some((_, per_tick)) = f.ticks.get_mut(&t.tick) else {
                continue;
            };
            for &(offset, n) in &m.offsets {
                let fresh = (m.base_us + offset).saturating_sub(t.came_out_us).max(1);
                per_tick.saturating_record_n(fresh, n);
                f.all.saturating_record_n(fresh, n);
                if m.class & CAPITAL != 0 {
                    f.capitals.saturating_record_n(fresh, n);
                }
                if m.class & TOP != 0 {
                    f.top.saturating_record_n(fresh, n);
                }
                if m.class == 0 {
                    f.rest.saturating_record_n(fresh, n);
                }
            }
        }
    }
    f
}

/// When `share` of `expected` subscribers had a tick, from its freshness samples `h`: `None`
/// when fewer got it.
pub fn time_to_share(h: &Histogram<u64>, expected: u64, share: f64) -> Option<u64> {
    let needed = ((expected as f64 * share).ceil() as u64).max(1);
    if h.len() < needed {
        return None;
    }
    Some(h.value_at_quantile((needed as f64 / h.len() as f64).min(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000_000;

    /// µs to ms, to the nearest 10 ms: the histograms keep 3 significant figures.
    fn to_10ms(us: u64) -> u64 {
        (us + 5_000) / 10_000 * 10
    }

    fn tick(tick: u64, source: i64) -> Tick {
        Tick {
            tick,
            source,
            came_out_us: T0 + tick * 5_000_000,
            ambiguous: false,
        }
    }

    #[test]
    fn source_times_read_as_ordered_seconds() {
        let a = parse_source_time(b"2028-10-01T19:12:00").unwrap();
        assert_eq!(parse_source_time(b"2028-10-01T19:12:13"), Some(a + 13));
        assert_eq!(
            parse_source_time(b"2028-10-02T00:00:00"),
            Some(a + 4 * 3_600 + 48 * 60)
        );
        assert_eq!(parse_source_time(b"1970-01-01T00:00:01"), Some(1));
        assert_eq!(parse_source_time(b"2028-13-01T19:12:00"), None);
        assert_eq!(parse_source_time(b"2028-10-01 19:12:00"), None);
        assert_eq!(parse_source_time(b"2028-10-01T19:12"), None);
    }

    #[test]
    fn the_snapshot_is_no_sample_and_skipped_ticks_are_charged() {
        let mut rec = Recorder::default();
        let mut held = Held::new(CAPITAL | TOP, 0);
        // Snapshot of tick 1, at tick 2's time: no sample.
        rec.arrived(&mut held, 100, T0 + 10_000_000);
        assert!(rec.report().is_empty());
        // Tick 2, 1 s after it came out; the same source time again: nothing more.
        rec.arrived(&mut held, 200, T0 + 11_000_000);
        rec.arrived(&mut held, 200, T0 + 12_000_000);
        // Ticks 3 and 4 skipped, tick 5 arrives 0.5 s after it came out: 3, 4 and 5 charged.
        rec.arrived(&mut held, 500, T0 + 25_500_000);
        // Another subscriber of the long tail gets tick 2 at 2 s.
        let mut other = Held::new(0, 1);
        rec.arrived(&mut other, 100, T0 + 9_000_000);
        rec.arrived(&mut other, 200, T0 + 12_000_000);

        let ticks: Vec<Tick> = (0..=6).map(|t| tick(t, t as i64 * 100)).collect();
        let f = compute(&rec.report(), &ticks, None, T0, T0 + 30_000_000);
        let ms = |h: &Histogram<u64>| {
            let mut v: Vec<u64> = h
                .iter_recorded()
                .flat_map(|x| {
                    std::iter::repeat_n(to_10ms(x.value_iterated_to()), x.count_at_value() as usize)
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(ms(&f.all), vec![500, 1_000, 2_000, 5_500, 10_500]);
        assert_eq!(ms(&f.capitals), vec![500, 1_000, 5_500, 10_500]);
        assert_eq!(ms(&f.top), ms(&f.capitals));
        assert_eq!(ms(&f.rest), vec![2_000]);
        // Tick 1 (the snapshots') and 6 (never received) have no sample.
        assert_eq!(f.ticks[&1].1.len(), 0);
        assert_eq!(ms(&f.ticks[&2].1), vec![1_000, 2_000]);
        assert_eq!(ms(&f.ticks[&3].1), vec![10_500]);
        assert_eq!(f.ticks[&6].1.len(), 0);
        // Both of 2 subscribers had tick 2 after 2 s; 99 % of 2 is 2.
        assert_eq!(
            time_to_share(&f.ticks[&2].1, 2, COVERAGE).map(to_10ms),
            Some(2_000)
        );
        assert_eq!(time_to_share(&f.ticks[&3].1, 2, COVERAGE), None);
    }

    #[test]
    fn ticks_sharing_a_source_time_and_ticks_out_of_the_window_are_not_counted() {
        let mut rec = Recorder::default();
        let mut held = Held::new(0, 0);
        rec.arrived(&mut held, 100, T0);
        rec.arrived(&mut held, 300, T0 + 16_000_000);
        // Ticks 2 and 3 share a source time; tick 0 is before the window.
        let ticks = vec![tick(0, 0), tick(1, 100), tick(2, 300), tick(3, 300)];
        let f = compute(&rec.report(), &ticks, None, T0 + 1, T0 + 30_000_000);
        assert_eq!(f.ambiguous, 2);
        assert_eq!(f.all.len(), 0);
        assert!(f.ticks.keys().eq([1].iter()));
    }

    #[test]
    fn with_the_ticks_each_file_was_written_at_only_those_are_charged() {
        let mut rec = Recorder::default();
        // Topic 0's file was written at ticks 2 and 5 only; topic 1's at every tick.
        let mut quiet = Held::new(CAPITAL, 0);
        let mut busy = Held::new(0, 1);
        rec.arrived(&mut quiet, 100, T0 + 6_000_000);
        rec.arrived(&mut busy, 100, T0 + 6_000_000);
        // Both skip from tick 1 to tick 5, 0.5 s after it came out.
        rec.arrived(&mut quiet, 500, T0 + 25_500_000);
        rec.arrived(&mut busy, 500, T0 + 25_500_000);
        let ticks: Vec<Tick> = (0..=6).map(|t| tick(t, t as i64 * 100)).collect();
        let quiet_written: BTreeSet<u64> = [2, 5].into();
        let busy_written: BTreeSet<u64> = (0..=6).collect();
        let written = HashMap::from([(0, &quiet_written), (1, &busy_written)]);
        let f = compute(&rec.report(), &ticks, Some(&written), T0, T0 + 30_000_000);
        let mut capitals: Vec<u64> = f
            .capitals
            .iter_recorded()
            .map(|x| to_10ms(x.value_iterated_to()))
            .collect();
        capitals.sort();
        // Ticks 2 (15.5 s before) and 5 (0.5 s): not 3 and 4, where topic 0 did not change.
        // The histogram keeps about three significant digits.
        let expected = [500, 15_500];
        assert!(
            capitals.len() == 2
                && capitals
                    .iter()
                    .zip(expected)
                    .all(|(got, want)| got.abs_diff(want) <= want / 100),
            "{capitals:?}, not about {expected:?}"
        );
        assert_eq!(f.rest.len(), 4);
        assert_eq!(f.ticks[&3].1.len(), 1);
    }
}
