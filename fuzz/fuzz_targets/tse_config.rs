//! `feed::tse::config::MunicipalityConfig::parse`, then `list` on what it accepts.
#![no_main]

use apura_formats::feed::tse::config::MunicipalityConfig;
use apura_fuzz::check_code;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = MunicipalityConfig::parse(data, "cm.json") else {
        return;
    };
    for (_, city) in config.cities() {
        check_code(&city.tse, 5);
        assert!((1_000_000..10_000_000).contains(&city.ibge), "{city:?}");
        assert!(!city.name.is_empty(), "{city:?}");
        for zone in &city.zones {
            check_code(zone, 4);
        }
    }
    // A list may still be refused (two cities of a state with one slug).
    let Ok(list) = config.list("cm.json") else {
        return;
    };
    assert_eq!(list.len(), config.cities().count());
    for (_, city) in config.cities() {
        let m = list.get(city.ibge).unwrap();
        assert_eq!(m.tse.as_ref(), Some(&city.tse), "{city:?}");
        assert_eq!(list.by_tse(&city.tse).unwrap().ibge, city.ibge, "{city:?}");
    }
});
