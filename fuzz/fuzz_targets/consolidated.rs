//! `feed::consolidated::parse` against a fixed list of the seeds' three cities, for the mayor
//! or the councillor office (picked by the input's length, so a saved input replays alike).
#![no_main]

use std::sync::LazyLock;

use apura_formats::feed::consolidated;
use apura_formats::feed::municipalities::MunicipalityList;
use apura_formats::model::{Municipality, Office};
use apura_fuzz::{check_by_votes, check_counts, check_percent, check_progress};
use libfuzzer_sys::fuzz_target;

static LIST: LazyLock<MunicipalityList> = LazyLock::new(|| {
    let cities = vec![
        Municipality::new(3550308, None, "São Paulo", "SP", true),
        Municipality::new(2705903, None, "Olho d'Água Grande", "AL", false),
        Municipality::new(3304557, None, "Rio de Janeiro", "RJ", true),
    ];
    MunicipalityList::new(cities, "fuzz").unwrap()
});

fuzz_target!(|data: &[u8]| {
    let office = if data.len().is_multiple_of(2) {
        Office::Mayor
    } else {
        Office::Councillor
    };
    let Ok(feed) = consolidated::parse(data, "fuzz.json", office, &LIST) else {
        return;
    };
    check_percent(feed.percent, &"apuracao_total");
    assert!((1..=2).contains(&feed.round));
    for race in &feed.races {
        assert!(LIST.get(race.ibge).is_some(), "{race:?}");
        assert_eq!((race.office, race.round), (office, feed.round));
        check_progress(&race.progress);
        let t = &race.totals;
        let votes = race.candidates.iter().map(|c| c.votes);
        check_counts(votes, t.valid, t.blank, t.null, t.turnout, race);
        if let Some(electorate) = t.electorate {
            assert_eq!(
                u128::from(electorate),
                u128::from(t.turnout) + u128::from(t.abstentions),
                "{race:?}"
            );
        }
        for c in &race.candidates {
            check_percent(c.percent, c);
        }
        check_by_votes(&race.candidates);
    }
});
