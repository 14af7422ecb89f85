//! What the authority's files say of a city and the count model does not, drawn once from the
//! seed: coalitions and vices of mayor candidates, a few candidates annulled sub judice, and
//! councillor list votes; and the federations of parties the files name.

use rand::RngExt;
use rand::seq::IndexedRandom;

use crate::SimRng;
use crate::candidates;
use crate::count::City;
use crate::shares::apportion;

/// Share of the model's final councillor null votes rendered as list (party) votes: with null
/// at 4–8 % of the turnout, list votes come to 1.6–3.2 %, about what parties get in real
/// municipal races.
const LIST_SHARE_OF_NULL: f64 = 0.4;
/// A mayor candidate heads a coalition this often (about half did in 2024).
const COALITION_RATE: f64 = 0.5;
/// In this share of races with three or more mayor candidates, the weakest is annulled sub
/// judice (registration refused on appeal): about sixty cities a night.
const ANNULLED_MAYOR_RATE: f64 = 0.02;
/// Share of councillor candidates annulled: about one in a hundred.
const ANNULLED_COUNCILLOR_RATE: f64 = 0.01;
/// Generator tag of the layout's draws.
pub(super) const TAG_TSE: u64 = 7;

/// Invented coalition names.
const COALITIONS: [&str; 12] = [
    "FRENTE AMPLA",
    "JUNTOS PELA CIDADE",
    "CORAGEM PARA MUDAR",
    "O TRABALHO CONTINUA",
    "UNIÃO E RECONSTRUÇÃO",
    "RENOVAÇÃO JÁ",
    "A FORÇA DO POVO",
    "CIDADE PARA TODOS",
    "SEGUE EM FRENTE",
    "NOVO TEMPO",
    "ALIANÇA POPULAR",
    "COMPROMISSO E EXPERIÊNCIA",
];

/// Invented federations of real party numbers: number, abbreviation, name, parties.
pub(super) const FEDERATIONS: [(u32, &str, &str, [u32; 3]); 3] = [
    (101, "FFP", "FEDERAÇÃO FRENTE POPULAR", [13, 65, 43]),
    (102, "FCD", "FEDERAÇÃO CENTRO DEMOCRÁTICO", [45, 23, 0]),
    (103, "FAL", "FEDERAÇÃO ALTERNATIVA", [50, 18, 0]),
];

pub(super) fn federation_of(
    party: u32,
) -> Option<&'static (u32, &'static str, &'static str, [u32; 3])> {
    FEDERATIONS
        .iter()
        .find(|f| party != 0 && f.3.contains(&party))
}

pub(super) struct TseCity {
    pub(super) tse: String,
    /// Its files appear once the night is this far (half way to its count's start).
    pub(super) published_from: f64,
    pub(super) mayors: Vec<Ticket>,
    /// Parallel to the council candidates: `""` valid, else the destination.
    pub(super) council_annulled: Vec<&'static str>,
    /// Final list votes by party number, in party-number order.
    pub(super) lists: Vec<(u32, u64)>,
    /// Final null votes once list votes are carved out of them.
    pub(super) council_null: u64,
}

/// What a mayor candidate's ticket adds to the model.
pub(super) struct Ticket {
    pub(super) annulled: bool,
    pub(super) coalition: Option<(&'static str, Vec<&'static str>)>,
    pub(super) vice: String,
    pub(super) vice_party: &'static str,
}

impl TseCity {
    pub(super) fn draw(rng: &mut SimRng, city: &City, tse: String) -> Self {
        let mayor_parties: Vec<u32> = city.mayors.iter().map(|c| c.party.number).collect();
        let weakest = (0..city.mayors.len())
            .min_by_key(|&i| city.zones.iter().map(|z| z.votes[i]).sum::<u64>());
        let annul_one = city.mayors.len() >= 3 && rng.random_bool(ANNULLED_MAYOR_RATE);
        let mayors = city
            .mayors
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let coalition =
                    (city.mayors.len() >= 2 && rng.random_bool(COALITION_RATE)).then(|| {
                        let name = *COALITIONS.choose(rng).expect("names");
                        let mut parties = vec![c.party.abbr];
                        for _ in 0..rng.random_range(1..=3) {
                            let p = candidates::random_party(rng);
                            if !mayor_parties.contains(&p.number) && !parties.contains(&p.abbr) {
                                parties.push(p.abbr);
                            }
                        }
                        (name, parties)
                    });
                let vice_party = coalition
                    .as_ref()
                    .and_then(|(_, parties)| parties.get(1).copied())
                    .unwrap_or(c.party.abbr);
                Ticket {
                    annulled: annul_one && Some(i) == weakest,
                    coalition,
                    vice: candidates::ballot_name(rng),
                    vice_party,
                }
            })
            .collect();
        let council = &city.council;
        let council_annulled: Vec<&'static str> = council
            .candidates
            .iter()
            .map(|_| {
                if rng.random_bool(ANNULLED_COUNCILLOR_RATE) {
                    *["Anulado", "Anulado sub judice"].choose(rng).expect("two")
                } else {
                    ""
                }
            })
            .collect();
        // List votes go to the parties in proportion to their candidates' votes.
        let mut parties: Vec<u32> = council.candidates.iter().map(|c| c.party.number).collect();
        parties.sort_unstable();
        parties.dedup();
        let weights: Vec<f64> = parties
            .iter()
            .map(|p| {
                1.0 + council
                    .candidates
                    .iter()
                    .zip(&council.votes)
                    .filter(|(c, _)| c.party.number == *p)
                    .map(|(_, v)| *v as f64)
                    .sum::<f64>()
            })
            .collect();
        let list_total = (council.null as f64 * LIST_SHARE_OF_NULL).round() as u64;
        let lists = parties
            .into_iter()
            .zip(apportion(list_total, &weights))
            .collect();
        TseCity {
            tse,
            published_from: city.count_starts() / 2.0,
            mayors,
            council_annulled,
            lists,
            council_null: council.null - list_total,
        }
    }
}
