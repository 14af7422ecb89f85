//! `feed::number::{parse_count, parse_decimal}` on any text.
#![no_main]

use apura_formats::feed::number::{parse_count, parse_decimal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(Some(v)) = parse_count(&s) {
        // A count reads back as itself, and as the same decimal.
        assert_eq!(parse_count(&v.to_string()), Ok(Some(v)), "{s:?}");
        assert_eq!(parse_decimal(&s), Ok(Some(v as f64)), "{s:?}");
    }
    if let Ok(Some(v)) = parse_decimal(&s) {
        assert!(v.is_finite(), "{s:?} parsed to {v}");
    }
});
