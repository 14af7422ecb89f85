//! A unified result as the model's race.

use super::Unified;
use crate::feed::number::percent;
use crate::model::{Candidate, Office, Race, Totals};

impl Unified {
    /// The race of `office` as the model has it, for the city `ibge`; `None` if the file has no
    /// such office.
    ///
    /// Candidates are flattened from coalition → party → candidate, valid ones first, then by
    /// votes (most first) and ballot number; an annulled candidate is shown with `valid: false`
    /// and its votes stay out of the valid total. The percentage is the published `pvap`, or
    /// computed from `vv` where the file has none.
    pub fn race(&self, ibge: u32, office: Office) -> Option<Race> {
        self.race_of(ibge, office.tse_code(), office)
    }

    /// The race of TSE cargo `cargo` labelled as `office`: for offices the model does not name
    /// (a state's president or deputies file read as a majoritarian or proportional race).
    pub fn race_of(&self, ibge: u32, cargo: u32, office: Office) -> Option<Race> {
        let o = self.office(cargo)?;
        let v = &self.votes;
        // Saturating: without `vv` or `tvn` no identity bounds the sums, and a file of absurd
        // counts must not overflow them (found writing the tse_unified fuzz target).
        let valid = v.valid.unwrap_or_else(|| {
            o.candidates
                .iter()
                .filter(|c| c.candidate.valid)
                .fold(0, |sum, c| sum.saturating_add(c.candidate.votes))
        });
        let mut candidates: Vec<Candidate> = o
            .candidates
            .iter()
            .map(|c| {
                let mut c = c.candidate.clone();
                if c.percent.is_nan() {
                    c.percent = if c.valid {
                        percent(c.votes, valid)
                    } else {
                        0.0
                    };
                }
                c
            })
            .collect();
        candidates.sort_by(|a, b| {
            b.valid
                .cmp(&a.valid)
                .then(b.votes.cmp(&a.votes))
                .then(a.number.cmp(&b.number))
        });
        let null = v
            .null_total
            .or_else(|| Some(v.null?.saturating_add(v.null_technical.unwrap_or(0))))
            .unwrap_or(0);
        Some(Race {
            ibge,
            office,
            round: self.round,
            source_time: self
                .totalized_at
                .clone()
                .or_else(|| self.generated_at.clone()),
            progress: self.progress.clone(),
            totals: Totals {
                electorate: self.electorate.total,
                turnout: v.total.or(self.electorate.turnout).unwrap_or(0),
                abstentions: self.electorate.abstentions.unwrap_or(0),
                blank: v.blank.unwrap_or(0),
                null,
                valid,
            },
            candidates,
            finished: self.finished(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_validated;
    use crate::model::Office;

    #[test]
    fn absurd_counts_without_totals_do_not_overflow_the_race() {
        let file = r#"{"carg":[{"cd":"11","agr":[{"par":[{"n":"45","cand":[
            {"n":"45","vap":"18446744073709551615"},{"n":"13","vap":"1"}]}]}]}],
          "v":{"vn":"18446744073709551615","vnt":"1"}}"#;
        let u = parse_validated(file.as_bytes(), "u.json").unwrap();
        let race = u.race(1, Office::Mayor).unwrap();
        assert_eq!((race.totals.valid, race.totals.null), (u64::MAX, u64::MAX));
        assert_eq!(race.candidates[0].percent, 100.0);
    }
}
