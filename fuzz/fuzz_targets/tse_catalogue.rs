//! `feed::tse::catalogue::Catalogue::parse`: the election catalogue (`ele-c.json`).
#![no_main]

use apura_formats::feed::tse::catalogue::Catalogue;
use apura_formats::feed::tse::paths::election_code;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(catalogue) = Catalogue::parse(data, "ele-c.json") else {
        return;
    };
    for e in &catalogue.elections {
        // Codes are kept as the folder names them: no leading zeros.
        assert_eq!(election_code(&e.code).as_ref(), Ok(&e.code));
        if let Some(r2) = &e.round2 {
            assert_eq!(election_code(r2).as_ref(), Ok(r2));
        }
        assert!((1..=2).contains(&e.round), "{e:?}");
        assert!(catalogue.election(&e.code).is_some(), "{e:?}");
        for (i, o) in e.offices.iter().enumerate() {
            assert!(e.offices[..i].iter().all(|x| x.code != o.code), "{e:?}");
        }
    }
});
