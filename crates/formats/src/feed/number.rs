//! Brazilian number strings: `"8.441.886"` (dot thousands), `"39,81%"` (comma decimal), `""`.

/// Parse a count written with optional dot thousands separators. `""` is absent (`None`).
pub fn parse_count(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.starts_with('-') {
        return Err(format!("negative count {s:?}"));
    }
    let mut value: u64 = 0;
    let mut digits_in_group = 0usize;
    let mut saw_dot = false;
    for (i, c) in s.char_indices() {
        match c {
            '0'..='9' => {
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(c as u8 - b'0')))
                    .ok_or_else(|| format!("count {s:?} overflows"))?;
                digits_in_group += 1;
            }
            // A thousands dot must follow 1–3 digits and be followed by exactly three.
            '.' if i > 0 && (!saw_dot || digits_in_group == 3) && digits_in_group <= 3 => {
                saw_dot = true;
                digits_in_group = 0;
            }
            _ => return Err(format!("not a count: {s:?}")),
        }
    }
    if saw_dot && digits_in_group != 3 {
        return Err(format!("not a count: {s:?}"));
    }
    Ok(Some(value))
}

/// Parse a decimal with a comma (`"39,81"`), an optional `%` and optional dot thousands
/// separators. `""` is absent (`None`).
pub fn parse_decimal(s: &str) -> Result<Option<f64>, String> {
    let s = s.trim();
    let s = s.strip_suffix('%').unwrap_or(s).trim_end();
    if s.is_empty() {
        return Ok(None);
    }
    let (int, frac) = match s.split_once(',') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let negative = int.starts_with('-');
    let int_digits = int.strip_prefix('-').unwrap_or(int);
    let int_value = if int_digits.is_empty() && frac.is_some() {
        0
    } else {
        parse_count(int_digits)
            .map_err(|_| format!("not a decimal: {s:?}"))?
            .ok_or_else(|| format!("not a decimal: {s:?}"))?
    };
    // One decimal string parsed once gives the double nearest the written value; adding the
    // fraction to the integer part would not (1 + 0.93 is 1.9300000000000002).
    let text = match frac {
        Some(frac) if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!("not a decimal: {s:?}"));
        }
        Some(frac) => format!("{int_value}.{frac}"),
        None => int_value.to_string(),
    };
    let value: f64 = text.parse().map_err(|_| format!("not a decimal: {s:?}"))?;
    if !value.is_finite() {
        return Err(format!("not a finite decimal: {s:?}"));
    }
    Ok(Some(if negative { -value } else { value }))
}

/// Round a percentage to the two decimals the authority publishes.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `part / whole` as a percentage with two decimals; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round2(part as f64 * 100.0 / whole as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_thousands_dots() {
        assert_eq!(parse_count("8.441.886"), Ok(Some(8_441_886)));
        assert_eq!(parse_count("313"), Ok(Some(313)));
        assert_eq!(parse_count("216488"), Ok(Some(216_488)));
        assert_eq!(parse_count("0"), Ok(Some(0)));
        assert_eq!(parse_count(""), Ok(None));
        assert_eq!(parse_count("  "), Ok(None));
    }

    #[test]
    fn counts_reject_what_is_not_a_count() {
        for bad in [
            "-5",
            "12,5",
            "1.23",
            "1..234",
            ".123",
            "1.2345",
            "abc",
            "1 234",
            "99999999999999999999999",
        ] {
            assert!(parse_count(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn decimals_with_comma_and_percent() {
        assert_eq!(parse_decimal("39,81%"), Ok(Some(39.81)));
        assert_eq!(parse_decimal("100,00%"), Ok(Some(100.0)));
        assert_eq!(parse_decimal("64,41"), Ok(Some(64.41)));
        assert_eq!(parse_decimal("0,5"), Ok(Some(0.5)));
        assert_eq!(parse_decimal("12"), Ok(Some(12.0)));
        assert_eq!(parse_decimal("1.234,5"), Ok(Some(1234.5)));
        assert_eq!(parse_decimal("1,93"), Ok(Some(1.93)), "the nearest double");
        assert_eq!(parse_decimal(""), Ok(None));
        assert_eq!(parse_decimal("%"), Ok(None));
        assert!(parse_decimal("39.81%").is_err());
        assert!(parse_decimal("4,x").is_err());
        assert!(parse_decimal("4,").is_err());
    }

    #[test]
    fn percent_of_zero_is_zero() {
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(5, 0), 0.0);
    }
}
