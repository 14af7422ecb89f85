//! `feed::tse::unified`: `parse`, then `check`, `finished` and the race of every office the file
//! holds (tests read races of files not validated too), and `parse_validated` (what the ingest
//! reads) accepting exactly the files whose identities hold.
#![no_main]

use apura_formats::feed::tse::unified;
use apura_formats::model::Office;
use apura_fuzz::check_progress;
use libfuzzer_sys::fuzz_target;

const IBGE: u32 = 3500001;

fuzz_target!(|data: &[u8]| {
    let Ok(u) = unified::parse(data, "u.json") else {
        return;
    };
    let consistent = u.check().is_empty();
    assert_eq!(unified::parse_validated(data, "u.json").is_ok(), consistent);
    let finished = u.finished();
    for office in [Office::Mayor, Office::Councillor] {
        assert_eq!(
            u.race(IBGE, office).is_some(),
            u.office(office.tse_code()).is_some()
        );
    }
    for o in &u.offices {
        let race = u.race_of(IBGE, o.code, Office::Councillor).unwrap();
        assert_eq!((race.round, race.finished), (u.round, finished));
        check_progress(&race.progress);
        assert_eq!(race.candidates.len(), o.candidates.len());
        for c in &race.candidates {
            assert!(c.percent.is_finite() && c.percent >= 0.0, "{c:?}");
        }
        // Valid candidates first, then most votes first.
        assert!(
            race.candidates
                .windows(2)
                .all(|w| (w[0].valid, w[0].votes) >= (w[1].valid, w[1].votes)),
            "{:?}",
            race.candidates
        );
    }
});
