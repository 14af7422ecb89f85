//! `feed::tse::paths::{parse_data_file, parse_config_file, election_code}` on any text: a name
//! read back is the name `TsePaths` writes, and an election code reads back as itself.
#![no_main]

use apura_formats::feed::tse::paths::{
    DataFile, TsePaths, election_code, parse_config_file, parse_data_file,
};
use libfuzzer_sys::fuzz_target;

/// The file name part of a URL that `TsePaths` built.
fn name(url: String) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

fn paths(election: &str) -> TsePaths {
    TsePaths::new("http://h/oficial/ele2028", election).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = election_code(s) {
        assert!(
            !code.starts_with('0') && (1..=6).contains(&code.len()),
            "{s:?}"
        );
        assert_eq!(election_code(&code).as_ref(), Ok(&code), "{s:?}");
    }
    if let Some(election) = parse_config_file(s) {
        assert_eq!(name(paths(&election).config()), s);
    }
    match parse_data_file(s) {
        Some(DataFile::Progress { uf, election }) => {
            assert_eq!(name(paths(&election).progress(&uf)), s);
        }
        Some(DataFile::Unified {
            uf,
            municipality,
            zone,
            cargo,
            election,
        }) => {
            let p = paths(&election);
            let url = match zone {
                Some(z) => p.zone(&uf, &municipality, &z, cargo),
                None => p.unified(&uf, &municipality, cargo),
            };
            assert_eq!(name(url), s);
        }
        None => {}
    }
    // Any text as the base folder.
    if let Ok(p) = TsePaths::new(s, "619") {
        let _ = (p.catalogue(), p.config(), p.progress("sp"));
    }
});
