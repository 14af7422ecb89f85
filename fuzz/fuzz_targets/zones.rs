//! `feed::zones::parse`: the zone breakdown of one city.
#![no_main]

use apura_formats::feed::zones;
use apura_fuzz::{check_by_votes, check_counts, check_percent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(z) = zones::parse(data, "zone.json") else {
        return;
    };
    check_percent(z.percent, &"apuracao_total");
    for block in std::iter::once(&z.total).chain(&z.zones) {
        let votes = block.results.iter().map(|r| r.votes);
        check_counts(
            votes,
            block.valid,
            block.blank,
            block.null,
            block.turnout,
            block,
        );
        assert!(
            block.results.windows(2).all(|w| w[0].votes >= w[1].votes),
            "{block:?}"
        );
    }
    // Sorted, and no zone twice.
    assert!(z.zones.windows(2).all(|w| w[0].zone < w[1].zone));
    check_by_votes(&z.candidates);
});
