//! `feed::tse::progress::parse`: a state's progress file (`-ab.json`).
#![no_main]

use std::collections::HashSet;

use apura_formats::feed::tse::Scope;
use apura_formats::feed::tse::progress;
use apura_fuzz::{check_code, check_percent, check_progress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = progress::parse(data, "ab.json") else {
        return;
    };
    assert!((1..=2).contains(&file.round));
    let mut seen = HashSet::new();
    for row in &file.rows {
        assert!(seen.insert((row.scope, row.code.as_str())), "{row:?}");
        check_progress(&row.progress);
        match row.scope {
            Scope::Municipality => check_code(&row.code, 5),
            Scope::Zone => check_code(&row.code, 4),
            Scope::State | Scope::Country => {}
        }
        if let Some(p) = row.municipalities_finished_percent {
            check_percent(p, row);
        }
        let _ = (row.fingerprint(), row.nothing_counted());
    }
    let towns = file.rows.iter().filter(|r| r.scope == Scope::Municipality);
    assert_eq!(file.municipalities().count(), towns.count());
    if let Some(state) = file.state() {
        assert_eq!(state.scope, Scope::State);
    }
});
