//! `feed::municipalities::MunicipalityList::parse`: the consolidated JSON list or the TSE CSV.
#![no_main]

use std::sync::Arc;

use apura_formats::feed::municipalities::{MunicipalityList, UFS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = MunicipalityList::parse(data, "list") else {
        return;
    };
    assert_eq!(list.iter().count(), list.len());
    for m in list.iter() {
        assert!((1_000_000..10_000_000).contains(&m.ibge), "{m:?}");
        assert!(UFS.contains(&m.uf.as_str()), "{m:?}");
        assert!(!m.slug.is_empty(), "{m:?}");
        assert!(Arc::ptr_eq(list.get(m.ibge).unwrap(), m), "{m:?}");
        if let Some(tse) = &m.tse {
            assert!(list.by_tse(tse).is_some(), "{m:?}");
        }
    }
    // Ordered by state and slug, and no slug twice in a state.
    let all: Vec<_> = list.iter().collect();
    for w in all.windows(2) {
        assert!((&w[0].uf, &w[0].slug) < (&w[1].uf, &w[1].slug), "{w:?}");
    }
});
