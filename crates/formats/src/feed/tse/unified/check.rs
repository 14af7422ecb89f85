//! The identities of `docs/tse-format.md` that a consistent unified result satisfies.

use super::super::Scope;
use super::Unified;

/// `a == b + c + …` over values that must all be present to be compared.
fn identity(name: &str, lhs: Option<u64>, rhs: &[Option<u64>], out: &mut Vec<String>) {
    let Some(lhs) = lhs else { return };
    let mut sum: u128 = 0;
    for v in rhs {
        match v {
            Some(v) => sum += u128::from(*v),
            None => return,
        }
    }
    if u128::from(lhs) != sum {
        out.push(format!("{name}: {lhs} ≠ {sum}"));
    }
}

impl Unified {
    /// The scope as an error names it (`mu 99001`).
    pub(super) fn scope_label(&self) -> &'static str {
        match self.scope {
            Some(Scope::Country) => "br",
            Some(Scope::State) => "uf",
            Some(Scope::Municipality) => "mu",
            Some(Scope::Zone) => "zona",
            None => "",
        }
    }

    /// Every identity of `docs/tse-format.md` that fails, in words; empty when the file is
    /// consistent. Each is tested only where the file has every figure it needs:
    ///
    /// - `tv = vvc + vb + tvn` (votes cast are computed, blank and null);
    /// - `tvn = vn + vnt`, `vvc = vv + van + vansj`, `vv = vnom + vl`;
    /// - the valid candidates' `vap` add up to `vnom` (to `vv` where there is no `vnom`:
    ///   majoritarian offices have no list votes, so the two are equal);
    /// - the parties' list votes (`tvtl`) add up to `vl`.
    ///
    /// The candidate sums need the file to hold one office, as a city's file does: a city's
    /// file that holds none or several, or any file that lists an office twice, fails too
    /// (its totals would check one office's candidates, and the race be read from another's).
    pub fn check(&self) -> Vec<String> {
        let v = &self.votes;
        let mut out = Vec::new();
        identity(
            "tv = vvc + vb + tvn",
            v.total,
            &[v.computed, v.blank, v.null_total],
            &mut out,
        );
        identity(
            "tvn = vn + vnt",
            v.null_total,
            &[v.null, v.null_technical],
            &mut out,
        );
        if v.annulled.is_some() || v.annulled_sub_judice.is_some() {
            identity(
                "vvc = vv + van + vansj",
                v.computed,
                &[
                    v.valid,
                    Some(v.annulled.unwrap_or(0)),
                    Some(v.annulled_sub_judice.unwrap_or(0)),
                ],
                &mut out,
            );
        }
        if v.nominal.is_some() {
            identity(
                "vv = vnom + vl",
                v.valid,
                &[v.nominal, Some(v.list.unwrap_or(0))],
                &mut out,
            );
        }
        for (i, office) in self.offices.iter().enumerate() {
            if self.offices[..i].iter().any(|o| o.code == office.code) {
                out.push(format!("office {} is listed twice in carg", office.code));
            }
        }
        if self.scope == Some(Scope::Municipality) && self.offices.len() != 1 {
            out.push(format!(
                "a city's file holds {} offices in carg, not one",
                self.offices.len()
            ));
        }
        if let [office] = self.offices.as_slice() {
            let nominal: u128 = office
                .candidates
                .iter()
                .filter(|c| c.candidate.valid)
                .map(|c| u128::from(c.candidate.votes))
                .sum();
            let (name, target) = match v.nominal {
                Some(n) => ("vnom", Some(n)),
                None => ("vv", v.valid),
            };
            if let Some(target) = target
                && nominal != u128::from(target)
            {
                out.push(format!(
                    "the valid candidates' votes add up to {nominal}, {name} is {target}"
                ));
            }
            if let Some(vl) = v.list
                && office.parties.iter().any(|p| p.list.is_some())
            {
                let lists: u128 = office
                    .parties
                    .iter()
                    .map(|p| u128::from(p.list.unwrap_or(0)))
                    .sum();
                if lists != u128::from(vl) {
                    out.push(format!(
                        "the parties' list votes add up to {lists}, vl is {vl}"
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{COUNCIL, MAYOR};
    use super::super::{parse, parse_validated};

    #[test]
    fn broken_identities_are_rejected_naming_them() {
        let bad = MAYOR.replace(r#""tv" : "11000""#, r#""tv" : "11001""#);
        let err = parse_validated(bad.as_bytes(), "mayor.json").unwrap_err();
        assert_eq!(err.kind(), "invalid");
        assert!(err.to_string().contains("tv = vvc + vb + tvn"), "{err}");
        assert!(err.to_string().contains("mu 99001"), "{err}");
        // The parse alone still reads it: the identities are a separate step.
        assert!(parse(bad.as_bytes(), "mayor.json").is_ok());

        let bad = MAYOR.replace(r#""vap" : "4300""#, r#""vap" : "4301""#);
        let err = parse_validated(bad.as_bytes(), "mayor.json").unwrap_err();
        assert!(err.to_string().contains("add up to 10001"), "{err}");

        let bad = COUNCIL.replace(r#""tvtl":"100""#, r#""tvtl":"90""#);
        let err = parse_validated(bad.as_bytes(), "council.json").unwrap_err();
        assert!(err.to_string().contains("list votes"), "{err}");

        let bad = MAYOR.replace(r#""vn" : "280""#, r#""vn" : "281""#);
        let err = parse_validated(bad.as_bytes(), "mayor.json").unwrap_err();
        assert!(err.to_string().contains("tvn = vn + vnt"), "{err}");
    }

    /// A city's file whose `carg` holds a forged copy of its office before the real one: the
    /// sums would check one and the race be read from the other. Refused, as is a city's file
    /// with a second office.
    #[test]
    fn an_office_listed_twice_or_a_second_office_in_a_city_file_is_rejected() {
        let mut file: serde_json::Value = serde_json::from_str(MAYOR).unwrap();
        let real = file["carg"][0].clone();
        let mut forged = real.clone();
        for party in forged["agr"].as_array_mut().unwrap() {
            for group in party["par"].as_array_mut().unwrap() {
                for c in group["cand"].as_array_mut().unwrap() {
                    c["vap"] = "999999".into();
                }
            }
        }
        file["carg"] = serde_json::json!([forged, real]);
        let err = parse_validated(file.to_string().as_bytes(), "mayor.json").unwrap_err();
        assert_eq!(err.kind(), "invalid");
        assert!(
            err.to_string().contains("office 11 is listed twice"),
            "{err}"
        );

        let mut other = real.clone();
        other["cd"] = "13".into();
        file["carg"] = serde_json::json!([real, other]);
        let err = parse_validated(file.to_string().as_bytes(), "mayor.json").unwrap_err();
        assert!(err.to_string().contains("holds 2 offices"), "{err}");
    }
}
