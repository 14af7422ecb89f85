//! A mutation fuzzer for every feed parser, runnable on stable Rust (cargo-fuzz needs nightly
//! and libFuzzer, which this toolchain lacks). Valid fixtures are mutated (truncations, byte
//! flips, insertions, deletions, duplications, number and string swaps, splices, deep nesting)
//! and fed to the parsers; any panic fails the test and saves the input under
//! `target/fuzz-crashes/`. Not coverage-guided: random mutations of structured seeds.
//!
//! Short run (CI, inside `cargo test`): 20 s by default.
//! Long run, with overflow checks on (they found the one crash so far; release turns them off):
//! `FUZZ_SECONDS=1800 CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true cargo test --release \
//!  --test fuzz_parsers -- --nocapture` (or the same without `--release`: ~37,000 execs/s).
//! Reproduce: `FUZZ_SEED=<seed> ...` (the seed is printed).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use apura::feed::municipalities::MunicipalityList;
use apura::feed::number::{parse_count, parse_decimal};
use apura::feed::{consolidated, zones};
use apura::model::Office;
use common::*;

/// xorshift64*: small, fast, reproducible from one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NUMBERS: &[&str] = &[
    "",
    "0",
    "-0",
    "-1",
    "1",
    "007",
    "1.000",
    "1.000.000",
    "1..0",
    ".5",
    "5.",
    "1,5",
    "0,001",
    "-12,5%",
    "100,00%",
    "100,01%",
    "1e309",
    "NaN",
    "inf",
    "18446744073709551615",
    "18.446.744.073.709.551.615",
    "18446744073709551616",
    "99999999999999999999999",
    "4294967296",
    "255",
    "256",
    "2",
    "3",
    "13",
    "1.2.3",
    "1,2,3",
    "%",
    " 1 ",
    "١٢٣",
];

const VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1e999",
    "[]",
    "{}",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "[[[[[[[[[[]]]]]]]]]]",
    "{\"a\":{\"a\":{\"a\":{}}}}",
    "\"São Paulo\"",
    "\"💩\"",
    "18446744073709551616",
    "\"06/10/2024\"",
    "\"99/99/9999\"",
    "\"25:61:61\"",
];

const STRUCTURE: &[u8] = b"{}[]\",:-.0123456789%\\ \n\0\xff\xc3";

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    let len = input.len();
    match rng.below(10) {
        0 => input.truncate(rng.below(len + 1)),
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        2 => {
            let i = rng.below(len + 1);
            input.insert(i, *rng.pick(STRUCTURE));
        }
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            input.drain(a..b);
        }
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(256)).min(len);
            let copy = input[a..b].to_vec();
            let at = rng.below(input.len() + 1);
            input.splice(at..at, copy);
        }
        5 => {
            // A run of digits (with dots and commas) replaced by an interesting number.
            let starts: Vec<usize> = (0..len)
                .filter(|&i| {
                    input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit())
                })
                .collect();
            if let Some(&a) = starts.get(rng.below(starts.len())) {
                let mut b = a;
                while b < len && (input[b].is_ascii_digit() || b".,".contains(&input[b])) {
                    b += 1;
                }
                input.splice(a..b, rng.pick(NUMBERS).bytes());
            }
        }
        6 => {
            // A quoted string replaced by another JSON value (wrong types).
            let quotes: Vec<usize> = (0..len).filter(|&i| input[i] == b'"').collect();
            if quotes.len() >= 2 {
                let q = rng.below(quotes.len() - 1);
                let (a, b) = (quotes[q], quotes[q + 1] + 1);
                input.splice(a..b, rng.pick(VALUES).bytes());
            }
        }
        7 => {
            let other = rng.pick(seeds);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        8 => {
            let depth = 1 + rng.below(3000);
            let i = rng.below(len + 1);
            let open = if rng.below(2) == 0 { b'[' } else { b'{' };
            input.splice(i..i, std::iter::repeat_n(open, depth));
        }
        _ => {
            let i = rng.below(len + 1);
            let s = rng.pick(VALUES);
            input.splice(i..i, s.bytes());
        }
    }
}

const ZONES: &str = r##"{
  "atualizacao": {"hora": "20:10:00", "data": "06/10/2024", "turno": 1,
                  "apuracao_total": "55,50%", "encerrado": false},
  "total": {"brancos": "10", "nulos": "5", "total": "115",
            "candidatos": [{"id_candidato": "45", "total_votos_validoss": "60", "total_percentual": "60,00%"},
                           {"id_candidato": "13", "total_votos_validoss": "40", "total_percentual": "40,00%"}]},
  "zonas": {
    "0002": {"brancos": "4", "nulos": "1", "total": "45",
             "candidatos": [{"id_candidato": "13", "total_votos_validos": "25", "total_percentual": "62,50%"},
                            {"id_candidato": "45", "total_votos_validos": "15", "total_percentual": "37,50%"}]},
    "0001": {"brancos": "6", "nulos": "4", "total": "70",
             "candidatos": [{"id_candidato": "45", "total_votos_validos": "45", "total_percentual": "75,00%"},
                            {"id_candidato": "13", "total_votos_validos": "15", "total_percentual": "25,00%"}]}
  },
  "candidatos": {
    "45": {"numero_candidato": "45", "nome_candidato": "ANA", "sigla_partido": "AAA", "eleito": false, "segundo_turno": false},
    "13": {"numero_candidato": "13", "nome_candidato": "BIA", "sigla_partido": "BBB", "eleito": false, "segundo_turno": false}
  }}"##;

const CSV: &str = "codigo_tse,uf,nome_municipio,capital,codigo_ibge\n\
                   1392,AC,RIO BRANCO,1,1200401\n\
                   35,RO,PORTO VELHO,1,1100205\n\
                   2704,AL,\"OLHO D'ÁGUA GRANDE\",0,2705903\n";

#[derive(Clone, Copy, Debug)]
enum Target {
    Consolidated,
    Zones,
    Municipalities,
    Numbers,
}

#[test]
fn no_parser_panics_on_mutated_feeds() {
    let secs: u64 = std::env::var("FUZZ_SECONDS").map_or(20, |v| v.parse().unwrap());
    let seed: u64 = std::env::var("FUZZ_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        },
        |v| v.parse().unwrap(),
    );
    eprintln!("fuzz: {secs} s, FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    let cs = cities();
    let list = MunicipalityList::parse(municipalities_json(&cs).as_bytes(), "list").unwrap();
    let mut finished = cs.clone();
    for c in &mut finished {
        c.finished = true;
    }
    let feeds: Vec<Vec<u8>> = vec![
        feed_json(&cs).into_bytes(),
        feed_json(&finished).into_bytes(),
        feed_json(&cs[..1]).into_bytes(),
    ];
    let zone_seeds = vec![ZONES.as_bytes().to_vec()];
    let list_seeds = vec![
        municipalities_json(&cs).into_bytes(),
        CSV.as_bytes().to_vec(),
    ];
    let number_seeds: Vec<Vec<u8>> = NUMBERS.iter().map(|n| n.as_bytes().to_vec()).collect();
    let targets = [
        (Target::Consolidated, &feeds),
        (Target::Zones, &zone_seeds),
        (Target::Municipalities, &list_seeds),
        (Target::Numbers, &number_seeds),
    ];
    let mut execs = [0u64; 4];
    let mut accepted = [0u64; 4];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut round = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            round += 1;
            let t = (round % 4) as usize;
            let (target, seeds) = targets[t];
            let mut input = rng.pick(seeds).clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, seeds, &mut input);
            }
            let result = catch_unwind(AssertUnwindSafe(|| match target {
                Target::Consolidated => {
                    let office = if rng.below(2) == 0 {
                        Office::Mayor
                    } else {
                        Office::Councillor
                    };
                    consolidated::parse(&input, "f.json", office, &list).is_ok()
                }
                Target::Zones => zones::parse(&input, "z.json").is_ok(),
                Target::Municipalities => MunicipalityList::parse(&input, "m").is_ok(),
                Target::Numbers => {
                    let s = String::from_utf8_lossy(&input);
                    if let Ok(Some(v)) = parse_count(&s) {
                        // A count reads back as itself.
                        assert_eq!(parse_count(&v.to_string()), Ok(Some(v)), "{s:?}");
                    }
                    if let Ok(Some(v)) = parse_decimal(&s) {
                        assert!(v.is_finite(), "{s:?} parsed to {v}");
                    }
                    parse_count(&s).is_ok()
                }
            }));
            execs[t] += 1;
            match result {
                Ok(ok) => accepted[t] += u64::from(ok),
                Err(_) => {
                    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("target")
                        .join("fuzz-crashes");
                    std::fs::create_dir_all(&dir).unwrap();
                    let path = dir.join(format!("{target:?}-{seed}-{round}.bin"));
                    std::fs::write(&path, &input).unwrap();
                    panic!("{target:?} panicked; input saved to {}", path.display());
                }
            }
        }
    }
    let total: u64 = execs.iter().sum();
    for (i, (t, _)) in targets.iter().enumerate() {
        eprintln!("fuzz: {t:?}: {} execs, {} accepted", execs[i], accepted[i]);
    }
    eprintln!("fuzz: {total} execs in {secs} s, no panic");
    assert!(execs.iter().all(|&n| n > 0));
}
