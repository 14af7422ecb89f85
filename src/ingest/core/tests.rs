//! The core alone: its state rules, its diff and its cadence, on an embedded bus.

use super::*;
use crate::bus::embedded::EmbeddedBus;
use crate::feed::tse::unified::{self, fixtures::COUNCIL, fixtures::MAYOR};
use crate::model::Municipality;

const CITY: u32 = 3500001;

fn core() -> Core {
    let city = Municipality::new(CITY, Some("99001".into()), "Vila Exemplo", "SP", false);
    let list = MunicipalityList::new(vec![city], "t").unwrap();
    Core::new(
        Arc::new(list),
        Arc::new(EmbeddedBus::new()),
        Arc::new(Metrics::default()),
    )
}

fn race(text: &str, office: Office) -> Race {
    unified::parse_validated(text.as_bytes(), "f")
        .unwrap()
        .race(CITY, office)
        .unwrap()
}

/// The mayor fixture with one more vote for its first candidate: a new version of the race.
fn mayor_moved(step: u32) -> Race {
    let mut r = race(MAYOR, Office::Mayor);
    r.candidates[0].votes += u64::from(step);
    r.totals.valid += u64::from(step);
    r
}

fn topics(cycle: &Cycle) -> Vec<&str> {
    cycle.documents.iter().map(|d| d.topic.as_ref()).collect()
}

/// A councillor race read again unchanged (a rewrite with a new `idg`, say) costs no
/// slicing and publishes nothing; a changed one is sliced once and is the only document.
#[test]
fn an_unchanged_race_is_neither_sliced_nor_published_again() {
    let mut core = core();
    let race = |text: &str| race(text, Office::Councillor);
    core.accept_race(race(COUNCIL));
    let first = core.changed();
    let topics: Vec<&str> = first.iter().map(|d| d.topic.as_str()).collect();
    assert_eq!(topics, ["councillors-sp-vila-exemplo", "cities"]);
    core.mark_published(&first);
    let body = first[0].body.clone();

    core.accept_race(race(&COUNCIL.replace("700002", "700003")));
    assert!(core.changed().is_empty());
    let cached = core.drafts().into_iter().next().unwrap();
    assert_eq!(
        cached.body.as_ptr(),
        body.as_ptr(),
        "the slice is reused, not rebuilt"
    );

    let moved = COUNCIL
        .replace(r#""vap":"900""#, r#""vap":"901""#)
        .replace(r#""vnom":"2200""#, r#""vnom":"2201""#)
        .replace(r#""vv":"2450""#, r#""vv":"2451""#)
        .replace(r#""vvc":"2530""#, r#""vvc":"2531""#)
        .replace(r#""tv":"2900""#, r#""tv":"2901""#);
    core.accept_race(race(&moved));
    let changed = core.changed();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].topic, "councillors-sp-vila-exemplo");
}

/// The cadence: the first race goes out at once; races that follow within a second wait
/// for that second and go out together; the end of a poll flushes what is pending.
#[tokio::test(start_paused = true)]
async fn the_first_race_goes_out_at_once_the_rest_at_most_every_second() {
    let mut core = core();
    let (tx, mut rx) = mpsc::channel(16);
    let sender = tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        tx.send(Accepted::Race(mayor_moved(1))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(Accepted::Race(mayor_moved(2))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(Accepted::Race(mayor_moved(3))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        tx.send(Accepted::Race(race(COUNCIL, Office::Councillor)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(Accepted::Race(mayor_moved(4))).await.unwrap();
        tx.send(Accepted::EndOfPoll).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        t0
    });
    let mut seen = Vec::new();
    core.follow(&mut rx, |cs| {
        assert_eq!(cs.len(), 1, "a small change is one cycle");
        seen.push((tokio::time::Instant::now(), cs[0].clone()))
    })
    .await
    .unwrap();
    let t0 = sender.await.unwrap();
    let at: Vec<u128> = seen.iter().map(|(t, _)| (*t - t0).as_millis()).collect();
    // At once; at 1 s the two races of 0.2 and 0.3 s together; the councillors at once at
    // 2.1 s (more than a second after the last cycle); the mayor of 2.2 s at the end of the
    // poll, without waiting for 3.1 s.
    assert_eq!(at, [0, 1_000, 2_100, 2_200]);
    assert!(topics(&seen[1].1).contains(&"mayors-sp-vila-exemplo"));
    assert_eq!(
        topics(&seen[2].1),
        ["councillors-sp-vila-exemplo", "cities"]
    );
    let last = core.race(CITY, Office::Mayor).unwrap();
    assert_eq!(*last, mayor_moved(4));
}

/// A race of an earlier round never replaces a later one; a quarantine marks the city's
/// document `held`, is not ended by an earlier round's race, and is ended by a valid race of
/// its round.
#[tokio::test]
async fn rounds_and_quarantine_decide_what_a_city_shows() {
    let mut core = core();
    let mut second = race(MAYOR, Office::Mayor);
    second.round = 2;
    core.accept_race(second.clone());
    core.accept_race(mayor_moved(7));
    assert_eq!(core.race(CITY, Office::Mayor), Some(&second));

    let error = FeedError::invalid("f", "vap", "negative");
    core.hold(CITY, Office::Mayor, 2, &error);
    let held = core.publish_changes().await.unwrap().pop().unwrap();
    let doc = held
        .documents
        .iter()
        .find(|d| d.topic.as_ref() == "mayors-sp-vila-exemplo");
    let body: serde_json::Value = serde_json::from_slice(&doc.unwrap().json).unwrap();
    assert_eq!(body["held"]["reason"], error.reason(), "{body}");
    assert_eq!(
        core.race(CITY, Office::Mayor),
        Some(&second),
        "last good race kept"
    );

    core.accept_race(mayor_moved(8));
    assert!(
        core.held(CITY, Office::Mayor).is_some(),
        "round 1 ends nothing"
    );
    core.accept_race(second);
    assert!(core.held(CITY, Office::Mayor).is_none());
    let released = core.publish_changes().await.unwrap().pop().unwrap();
    let doc = released
        .documents
        .iter()
        .find(|d| d.topic.as_ref() == "mayors-sp-vila-exemplo");
    let body: serde_json::Value = serde_json::from_slice(&doc.unwrap().json).unwrap();
    assert!(body.get("held").is_none(), "{body}");
}

/// A change larger than [`CYCLE_BYTES`] (after the first publication) goes out as consecutive cycles, each under the limit,
/// that share one publication time and hold every changed document once: the roll-ups first,
/// then the capitals, then the other cities, the index last. Subscribers on the bus see the
/// same cycles, in version order.
#[tokio::test]
async fn a_large_change_goes_out_as_consecutive_cycles_the_most_watched_first() {
    // 1,200 cities of SP, the last one the capital: its documents come right after the
    // roll-ups, not at the end of the list.
    let n = 1_200u32;
    let cities: Vec<Municipality> = (0..n)
        .map(|i| {
            let name = format!("Cidade {i}");
            Municipality::new(
                3500001 + i,
                Some(format!("{:05}", 90000 + i)),
                &name,
                "SP",
                i == n - 1,
            )
        })
        .collect();
    let list = Arc::new(MunicipalityList::new(cities, "t").unwrap());
    use futures_util::StreamExt;
    let bus = Arc::new(EmbeddedBus::new());
    let mut heard = bus.subscribe().await.unwrap();
    let mut core = Core::new(list.clone(), bus.clone(), Arc::new(Metrics::default()));
    let race_of = |ibge| {
        let mut r = race(MAYOR, Office::Mayor);
        r.ibge = ibge;
        r
    };
    // The first publication goes out whole, however large: a gateway that waited for it turns
    // ready on it. Here it is one city.
    core.accept_race(race_of(3500001));
    let first = core.publish_changes().await.unwrap();
    assert_eq!(first.len(), 1);
    match heard.next().await {
        Some(crate::bus::BusEvent::Cycle(h)) => assert_eq!(h.version, first[0].version),
        other => panic!("{other:?}"),
    }
    for m in list.iter().skip(1) {
        core.accept_race(race_of(m.ibge));
    }
    let expected: HashSet<String> = core.changed().into_iter().map(|d| d.topic).collect();
    let total: usize = core
        .changed()
        .iter()
        .map(|d| d.topic.len() + d.body.len())
        .sum();
    assert!(
        total > 3 * CYCLE_BYTES,
        "the change is {total} bytes: too small to split"
    );

    let cycles = core.publish_changes().await.unwrap();
    assert!(cycles.len() >= 3, "{} cycles", cycles.len());
    let mut seen = HashSet::new();
    for (i, c) in cycles.iter().enumerate() {
        let size: usize = c
            .documents
            .iter()
            .map(|d| d.topic.len() + d.json.len())
            .sum();
        // A stamped document is its body plus `"version":…,"published_at":…,`: ~50 bytes.
        assert!(
            size <= CYCLE_BYTES + 60 * c.documents.len(),
            "cycle {i}: {size} bytes"
        );
        assert_eq!(c.published_at, cycles[0].published_at, "cycle {i}");
        if i > 0 {
            assert!(c.version > cycles[i - 1].version, "versions grow");
        }
        for d in &c.documents {
            assert!(seen.insert(d.topic.to_string()), "{} twice", d.topic);
        }
    }
    assert_eq!(seen, expected, "every changed document, once");
    let first = topics(&cycles[0]);
    assert_eq!(&first[..2], ["state-sp", "brazil"], "the roll-ups first");
    assert_eq!(first[2], "mayors-sp-cidade-1199", "the capital third");
    assert_eq!(topics(cycles.last().unwrap()).last(), Some(&"cities"));
    for c in &cycles {
        match heard.next().await {
            Some(crate::bus::BusEvent::Cycle(h)) => assert_eq!(h.version, c.version),
            other => panic!("{other:?}"),
        }
    }
    assert!(core.changed().is_empty(), "all of it is the reference now");
}

/// An end of poll with nothing new publishes nothing; a store found empty (`forget_published`)
/// has every document published again at the next one with no new item, and a city
/// quarantined by the next file has its document republished, marked held.
#[tokio::test]
async fn nothing_is_published_again_until_the_results_or_the_reference_change() {
    let mut core = core();
    core.accept_race(race(MAYOR, Office::Mayor));
    let first = core.publish_changes().await.unwrap();
    let all: HashSet<&str> = first.iter().flat_map(|c| topics(c)).collect();
    assert!(all.contains("mayors-sp-vila-exemplo") && all.contains("cities"));
    assert!(core.publish_changes().await.unwrap().is_empty());
    core.accept_race(race(MAYOR, Office::Mayor));
    assert!(
        core.publish_changes().await.unwrap().is_empty(),
        "the same race again"
    );

    core.forget_published();
    let again = core.publish_changes().await.unwrap();
    let republished: HashSet<&str> = again.iter().flat_map(|c| topics(c)).collect();
    assert_eq!(republished, all, "every document, with no new item");
    assert!(again[0].version > first[0].version);

    core.hold(
        CITY,
        Office::Mayor,
        1,
        &FeedError::invalid("f", "vap", "negative"),
    );
    let held = core.publish_changes().await.unwrap();
    let doc = held
        .iter()
        .flat_map(|c| &c.documents)
        .find(|d| &*d.topic == "mayors-sp-vila-exemplo")
        .expect("the quarantined city's document");
    let v: serde_json::Value = serde_json::from_slice(&doc.json).unwrap();
    assert!(v["held"].is_object(), "{v}");
    assert!(core.publish_changes().await.unwrap().is_empty());
}

/// An older copy of a city's file (a cache serving it late) does not take the city back: the
/// race it holds is not taken, nothing is published, and it does not end a quarantine.
#[tokio::test]
async fn an_older_copy_of_a_city_file_is_not_taken() {
    let mut core = core();
    let at = |t: &str, step| Race {
        source_time: Some(t.to_string()),
        ..mayor_moved(step)
    };
    core.accept_race(at("2028-10-01T21:30:00", 5));
    assert!(!core.publish_changes().await.unwrap().is_empty());
    core.accept_race(at("2028-10-01T20:00:00", 1));
    assert!(
        core.publish_changes().await.unwrap().is_empty(),
        "an older copy published"
    );
    assert_eq!(
        core.race(CITY, Office::Mayor),
        Some(&at("2028-10-01T21:30:00", 5))
    );
    core.accept_race(at("2028-10-01T21:35:00", 6));
    assert_eq!(
        core.publish_changes().await.unwrap().len(),
        1,
        "a newer one is"
    );
}
