//! A state's progress file: a row per published city of the state, and the state's own row.

use std::time::SystemTime;

use bytes::Bytes;

use super::race::{RaceKey, RaceView, VoteTotals, percent_text};
use crate::Simulator;
use crate::files::{Stamp, hundredths_floor, hundredths_round};

impl Simulator {
    /// The progress file of `uf` for `election` at `tick`: body, `idg`, when it was written.
    pub fn render_progress(
        &self,
        election: &str,
        uf: &str,
        tick: u64,
    ) -> Option<(Bytes, String, SystemTime)> {
        let layout = self.tse_layout();
        let round = layout.election_round(election)?;
        let cities = layout.states.get(uf)?;
        if round == 2 && tick < self.round_start(2) {
            return None;
        }
        let published: Vec<usize> = cities
            .iter()
            .copied()
            .filter(|&i| self.published(i, round, tick))
            .collect();
        let changed = published
            .iter()
            .map(|&i| self.last_change(i, RaceKey::Mayor, round, tick))
            .max()
            .unwrap_or(self.round_start(round));
        let stamp = self.tse_stamp(round, changed);
        let idg = self.idg(changed);
        let mut rows = String::with_capacity(published.len() * 400 + 800);
        let (mut st, mut ts, mut te, mut c, mut a, mut finished) = (0, 0, 0, 0, 0, 0);
        for &i in &published {
            let city = &self.election.cities()[i];
            let at = self.last_change(i, RaceKey::Mayor, round, tick);
            let view = self.tse_race(i, RaceKey::Mayor, round, at)?;
            let row_stamp = self.tse_stamp(round, at);
            st += view.sections;
            ts += view.total_sections;
            te += city.electorate;
            c += view.votes.tv;
            a += view.abstentions.unwrap_or(0);
            finished += usize::from(view.finished);
            write_row(
                &mut rows,
                "mun",
                &layout.cities[i].tse,
                &row_stamp,
                &view,
                city.electorate,
            );
            rows.push_str(", ");
        }
        let state = RaceView {
            round,
            sections: st,
            total_sections: ts,
            electorate: Some(te),
            abstentions: Some(a),
            candidates: Vec::new(),
            lists: Vec::new(),
            votes: VoteTotals {
                tv: c,
                ..VoteTotals::default()
            },
            finished: !published.is_empty() && finished == published.len(),
        };
        write_row(&mut rows, "uf", uf, &stamp, &state, te);
        let mut out = String::with_capacity(rows.len() + 200);
        out.push_str(&format!(
            r#"{{ "ele" : "{election}", "t" : "{round}", "f" : "s", "dg" : "{}", "hg" : "{}", "idg" : "{idg}", "abr" : [ "#,
            stamp.date, stamp.time
        ));
        out.push_str(&rows);
        out.push_str(" ] }");
        Some((Bytes::from(out), idg, self.tse_modified(changed)))
    }
}

/// One progress row (`mun` or `uf`).
fn write_row(out: &mut String, scope: &str, code: &str, stamp: &Stamp, view: &RaceView, te: u64) {
    let tv = view.votes.tv;
    let a = view.abstentions.unwrap_or(0);
    let counted_electorate = tv + a;
    let dt = if view.sections > 0 || scope == "uf" {
        (stamp.date, stamp.time.as_str())
    } else {
        ("", "")
    };
    out.push_str(&format!(
        r#"{{ "and" : "{}", "tpabr" : "{scope}", "cdabr" : "{code}", "dt" : "{}", "ht" : "{}", "s" : {{ "ts" : "{}", "st" : "{}", "pst" : "{}", "snt" : "{}" }}, "e" : {{ "te" : "{te}", "est" : "{counted_electorate}", "c" : "{tv}", "pc" : "{}", "a" : "{a}", "pa" : "{}" }} }}"#,
        if view.finished { "f" } else { "p" },
        dt.0,
        dt.1,
        view.total_sections,
        view.sections,
        percent_text(hundredths_floor(view.sections, view.total_sections)),
        view.total_sections - view.sections,
        percent_text(hundredths_round(tv, counted_electorate)),
        percent_text(hundredths_round(a, counted_electorate)),
    ));
}
