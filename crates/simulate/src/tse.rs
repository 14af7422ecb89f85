//! The official TSE layout of the simulated night (`docs/tse-format.md`): the election catalogue, the
//! municipality configuration, one progress file per state, and one unified result per city and
//! office (and per zone for the mayor race), rendered from the same count model as the
//! consolidated layout.
//!
//! What the authority's files say and the model does not is drawn here once from the seed: TSE
//! codes, coalitions and vices of mayor candidates, federations, a few candidates annulled sub
//! judice, and councillor list votes (two fifths of the model's councillor null votes, which the
//! consolidated layout has no other place for).
//!
//! Publication follows the authority: a city appears (its row in the state's progress file, its
//! files answering 200 instead of 404) once the night has gone half way to its count's start, so
//! its first files are the zeros published before counting. A file is rewritten only when its
//! sections change, and then its `idg` (served as the `ETag`) and its `dt`/`ht` change with it.
//!
//! With `second_round`, the night goes on for a second `duration` after the first count ends:
//! the cities whose mayor race went to a second round play it under [`ELECTION_ROUND2`].
//!
//! - `city`: what the files say of a city and the model does not, drawn once per city.
//! - `layout`: the night's TSE codes, states and second rounds ([`TseLayout`]).
//! - `race`: a race as a file shows it at a tick ([`RaceView`]).
//! - `night`: the clock of the layout, publication, and every race at any tick.
//! - `unified`, `progress`, `config`: the renderers of the authority's files.
//! - [`server`]: the authority's paths and rate limit over HTTP.

mod city;
mod config;
mod layout;
mod night;
mod progress;
mod race;
pub mod server;
mod unified;

pub use layout::TseLayout;
pub use race::{CandidateView, FinalRace, RaceKey, RaceView, VoteTotals};

/// The cycle's folder.
pub const CYCLE: &str = "ele2028";
/// First-round election code of the simulated night.
pub const ELECTION: &str = "9426";
/// Its second round.
pub const ELECTION_ROUND2: &str = "9427";
/// Where the cycle's folder is served: an ingest takes `--base-url http://<addr>/oficial/ele2028/`.
pub const BASE_PATH: &str = "/oficial/ele2028/";
/// Where the catalogue is served, beside the cycles' folders.
pub const CATALOGUE_PATH: &str = "/oficial/comum/config/ele-c.json";
/// Second rounds are held on the last Sunday of October (Constitution, art. 29 II).
const ROUND2_DATE: &str = "29/10/2028";

#[cfg(test)]
mod tests {
    use super::city::federation_of;
    use super::race::RaceKey;
    use super::unified::party_number;
    use super::*;
    use crate::{Layout, SimConfig, Simulator, TseOptions};
    use apura_formats::feed::tse::{config::MunicipalityConfig, progress, unified};
    use apura_formats::model::Office;

    /// One simulator of the TSE layout with a second round, shared by the tests of the layout.
    pub(super) fn sim() -> &'static Simulator {
        static SIM: std::sync::OnceLock<Simulator> = std::sync::OnceLock::new();
        SIM.get_or_init(|| {
            Simulator::new(SimConfig {
                layout: Layout::Tse,
                tse: TseOptions {
                    second_round: true,
                    ..TseOptions::default()
                },
                ..SimConfig::default()
            })
        })
    }

    /// The TSE code of a municipality of the simulated list.
    pub(super) fn code(sim: &Simulator, ibge: u32) -> String {
        sim.tse_code(ibge).unwrap().to_string()
    }

    #[test]
    fn every_file_parses_and_holds_its_identities() {
        let sim = sim();
        let mid = sim.last_tick() / 2;
        let config = sim.render_config(ELECTION).unwrap();
        let config = MunicipalityConfig::parse(&config, "cm").unwrap();
        let list = config.list("cm").unwrap();
        assert_eq!(list.len(), 5_570);
        assert_eq!(config.states.len(), 27);
        let sp = list.get(3550308).unwrap();
        assert_eq!(sp.name, "São Paulo");
        assert!(sp.capital);
        let mut checked = 0;
        for uf in ["sp", "rj", "ac", "df"] {
            let (body, idg, _) = sim.render_progress(ELECTION, uf, mid).unwrap();
            let p = progress::parse(&body, "ab").unwrap();
            assert_eq!(p.generation.as_deref(), Some(idg.as_str()));
            assert_eq!(p.state().unwrap().code, uf.to_uppercase());
            for row in p.municipalities() {
                for cargo in [11, 13] {
                    let (body, idg, _) = sim
                        .render_unified(ELECTION, &row.code, cargo, None, mid)
                        .unwrap();
                    let u = unified::parse_validated(&body, "u")
                        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&body)));
                    assert_eq!(u.generation.as_deref(), Some(idg.as_str()));
                    assert_eq!(u.progress.sections_counted, row.progress.sections_counted);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000, "{checked}");
        // Brasília has no municipal election: its state has a progress file with no city.
        let (body, _, _) = sim.render_progress(ELECTION, "df", mid).unwrap();
        assert_eq!(
            progress::parse(&body, "df")
                .unwrap()
                .municipalities()
                .count(),
            0
        );
    }

    #[test]
    fn the_night_has_coalitions_federations_annulled_candidates_and_second_rounds() {
        let sim = sim();
        let last = sim.last_tick();
        let (mut coalitions, mut feds, mut annulled, mut runoffs) = (0, 0, 0, 0);
        for (idx, _) in sim.election.cities().iter().enumerate() {
            let view = sim.tse_race(idx, RaceKey::Mayor, 1, last).unwrap();
            annulled += view.candidates.iter().filter(|c| !c.valid()).count();
            runoffs += usize::from(view.candidates.iter().any(|c| c.status == "2º turno"));
            coalitions += sim.tse_layout().cities[idx]
                .mayors
                .iter()
                .filter(|t| t.coalition.is_some())
                .count();
            feds += view
                .candidates
                .iter()
                .filter(|c| federation_of(party_number(c.party)).is_some())
                .count();
        }
        eprintln!(
            "{coalitions} coalitions, {feds} federation candidates, {annulled} annulled mayor candidates, {runoffs} second rounds"
        );
        assert!(coalitions > 1_000 && feds > 100 && annulled > 20);
        assert_eq!(runoffs, sim.tse_runoff_cities());
        assert!(runoffs >= 5);
        // Second rounds: 404 during the first night, then a two-candidate race that ends with
        // one elected.
        let (idx, _) = sim.tse_layout().runoffs.iter().next().unwrap();
        let code = sim.tse_layout().cities[*idx].tse.clone();
        assert!(
            sim.render_unified(ELECTION_ROUND2, &code, 11, None, last)
                .is_none()
        );
        assert!(sim.render_progress(ELECTION_ROUND2, "sp", last).is_none());
        let end = sim.final_tick();
        let (body, _, _) = sim
            .render_unified(ELECTION_ROUND2, &code, 11, None, end)
            .unwrap();
        let race = unified::parse_validated(&body, "r2")
            .unwrap()
            .race(1, Office::Mayor)
            .unwrap();
        assert_eq!(race.round, 2);
        assert_eq!(race.candidates.len(), 2);
        assert_eq!(race.candidates.iter().filter(|c| c.elected).count(), 1);
        assert!(
            sim.render_unified(ELECTION_ROUND2, &code, 13, None, end)
                .is_none()
        );
        let catalogue =
            apura_formats::feed::tse::catalogue::Catalogue::parse(&sim.render_catalogue(), "ele-c")
                .unwrap();
        assert_eq!(
            catalogue.election(ELECTION).unwrap().round2.as_deref(),
            Some(ELECTION_ROUND2)
        );
    }
}
