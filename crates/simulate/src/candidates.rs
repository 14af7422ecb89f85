//! Who runs: the parties (real abbreviations and numbers, invented colours) and invented ballot
//! names.

use std::collections::HashSet;

use rand::RngExt;
use rand::seq::IndexedRandom;

use super::SimRng;

/// A party: abbreviation, ballot number, a colour for the screens, and how often it runs.
#[derive(Debug)]
pub struct Party {
    pub abbr: &'static str,
    /// The party's ballot number: a mayor candidate's number, and the first two digits of a
    /// councillor candidate's.
    pub number: u32,
    /// `#RRGGBB`, invented for the simulator.
    pub color: &'static str,
    /// Relative share of candidacies, about the parties' share of the 2024 mayor races.
    pub weight: u32,
}

const fn party(abbr: &'static str, number: u32, color: &'static str, weight: u32) -> Party {
    Party {
        abbr,
        number,
        color,
        weight,
    }
}

/// The parties registered for the municipal elections.
pub const PARTIES: [Party; 28] = [
    party("PSD", 55, "#E0A526", 120),
    party("MDB", 15, "#2F9E55", 110),
    party("PP", 11, "#3A6FB0", 100),
    party("PL", 22, "#1F3C88", 90),
    party("UNIÃO", 44, "#2468A8", 80),
    party("REPUBLICANOS", 10, "#2E5F80", 70),
    party("PT", 13, "#C8202F", 60),
    party("PSB", 40, "#E5A00D", 50),
    party("PSDB", 45, "#2C7CC4", 50),
    party("PDT", 12, "#D0413C", 40),
    party("PODE", 20, "#4A9A3A", 40),
    party("AVANTE", 70, "#E87722", 30),
    party("SOLIDARIEDADE", 77, "#F08A24", 30),
    party("CIDADANIA", 23, "#D6336C", 20),
    party("PV", 43, "#2BA84A", 20),
    party("PRD", 25, "#1B4F9C", 20),
    party("PSOL", 50, "#F2C230", 20),
    party("PCdoB", 65, "#9E1B24", 15),
    party("NOVO", 30, "#F47A20", 15),
    party("AGIR", 36, "#5B8C2A", 10),
    party("DC", 27, "#A67C2E", 10),
    party("MOBILIZA", 33, "#7B3FA0", 10),
    party("REDE", 18, "#3FA7A0", 10),
    party("PRTB", 28, "#2B4C7E", 10),
    party("PMB", 35, "#B5487E", 7),
    party("PCO", 29, "#8A3B12", 4),
    party("PSTU", 16, "#B33A3A", 4),
    party("UP", 80, "#6E1E2B", 4),
];

/// Pick a party by its weight.
pub fn random_party(rng: &mut SimRng) -> &'static Party {
    PARTIES
        .choose_weighted(rng, |p| p.weight)
        .expect("party weights are positive")
}

/// `k` distinct parties, by weight (at most the 28 there are).
pub fn distinct_parties(rng: &mut SimRng, k: usize) -> Vec<&'static Party> {
    let k = k.min(PARTIES.len());
    let mut out: Vec<&'static Party> = Vec::with_capacity(k);
    while out.len() < k {
        let p = random_party(rng);
        if !out.iter().any(|q| q.number == p.number) {
            out.push(p);
        }
    }
    out
}

const MEN: [&str; 40] = [
    "ANTÔNIO",
    "CARLOS",
    "PAULO",
    "MARCOS",
    "LUIZ",
    "JOSÉ",
    "FRANCISCO",
    "RAFAEL",
    "GUSTAVO",
    "RODRIGO",
    "FÁBIO",
    "SÉRGIO",
    "EDUARDO",
    "MÁRCIO",
    "RENATO",
    "GILSON",
    "VALDIR",
    "JOSIMAR",
    "ADEMIR",
    "OSMAR",
    "EDSON",
    "CLÁUDIO",
    "JÚLIO",
    "LEANDRO",
    "THIAGO",
    "DIEGO",
    "WELLINGTON",
    "ROBSON",
    "VAGNER",
    "JAIR",
    "ELIAS",
    "SAMUEL",
    "HÉLIO",
    "NILTON",
    "GERSON",
    "ROGÉRIO",
    "CRISTIANO",
    "DOUGLAS",
    "MATEUS",
    "IVANILDO",
];

const WOMEN: [&str; 36] = [
    "MARIA",
    "ANA",
    "FRANCISCA",
    "ADRIANA",
    "JULIANA",
    "MÁRCIA",
    "FERNANDA",
    "PATRÍCIA",
    "ALINE",
    "SANDRA",
    "CAMILA",
    "LÚCIA",
    "VERA",
    "ROSÂNGELA",
    "CLÁUDIA",
    "SIMONE",
    "DÉBORA",
    "TATIANE",
    "REGINA",
    "SILVANA",
    "ELIANE",
    "JOSEFA",
    "KÁTIA",
    "VANESSA",
    "LUCIANA",
    "CRISTINA",
    "DAIANE",
    "NEIDE",
    "IVONE",
    "SUELI",
    "GRAÇA",
    "RAQUEL",
    "PRISCILA",
    "JAQUELINE",
    "EDNA",
    "SOLANGE",
];

const SURNAMES: [&str; 44] = [
    "SILVA",
    "SANTOS",
    "OLIVEIRA",
    "SOUZA",
    "RODRIGUES",
    "FERREIRA",
    "ALVES",
    "PEREIRA",
    "LIMA",
    "GOMES",
    "COSTA",
    "RIBEIRO",
    "MARTINS",
    "CARVALHO",
    "ALMEIDA",
    "LOPES",
    "SOARES",
    "VIEIRA",
    "BARBOSA",
    "ROCHA",
    "DIAS",
    "NASCIMENTO",
    "ANDRADE",
    "MOREIRA",
    "MARQUES",
    "MACHADO",
    "MENDES",
    "FREITAS",
    "CARDOSO",
    "RAMOS",
    "GONÇALVES",
    "SANTANA",
    "TEIXEIRA",
    "ARAÚJO",
    "PINTO",
    "MEDEIROS",
    "FARIAS",
    "BEZERRA",
    "MONTEIRO",
    "BRANDÃO",
    "QUEIROZ",
    "SIQUEIRA",
    "TAVARES",
    "BORGES",
];

/// Titles a ballot name carries, masculine and feminine.
const TITLES: [(&str, &str); 8] = [
    ("PROFESSOR", "PROFESSORA"),
    ("DOUTOR", "DOUTORA"),
    ("PASTOR", "PASTORA"),
    ("IRMÃO", "IRMÃ"),
    ("ENFERMEIRO", "ENFERMEIRA"),
    ("SARGENTO", "SARGENTO"),
    ("TIO", "TIA"),
    ("SEU", "DONA"),
];

/// Where a nickname comes from: `ZÉ DA PADARIA`.
const TRADES: [&str; 10] = [
    "DA PADARIA",
    "DO POSTO",
    "DA FARMÁCIA",
    "DO AÇOUGUE",
    "DO GÁS",
    "DO LEITE",
    "DA SAÚDE",
    "DO SINDICATO",
    "DA FEIRA",
    "DO TÁXI",
];

const NICKNAMES: [&str; 8] = [
    "ZÉ", "TONHO", "CHICO", "NENÊ", "BIA", "DUDA", "BETO", "LULU",
];

/// An invented ballot name in the provider's upper case, as candidates register them: a first
/// name and surname, a first name alone, a title, or a nickname.
pub fn ballot_name(rng: &mut SimRng) -> String {
    let woman = rng.random_bool(0.35);
    let first = if woman {
        *WOMEN.choose(rng).expect("names")
    } else {
        *MEN.choose(rng).expect("names")
    };
    let surname = *SURNAMES.choose(rng).expect("names");
    match rng.random_range(0..100u32) {
        0..50 => format!("{first} {surname}"),
        50..62 => first.to_string(),
        62..77 => {
            let (m, f) = *TITLES.choose(rng).expect("titles");
            format!("{} {first}", if woman { f } else { m })
        }
        77..88 => {
            let second = *SURNAMES.choose(rng).expect("names");
            format!("{first} {second} {surname}")
        }
        _ => format!(
            "{} {}",
            NICKNAMES.choose(rng).expect("nicknames"),
            TRADES.choose(rng).expect("trades")
        ),
    }
}

/// A ballot name no other candidate of the race uses (the electoral court refuses homonyms).
pub fn unique_ballot_name(rng: &mut SimRng, taken: &mut HashSet<String>) -> String {
    const SUFFIXES: [&str; 4] = ["FILHO", "JÚNIOR", "NETO", "SOBRINHO"];
    for attempt in 0.. {
        let mut name = ballot_name(rng);
        if attempt >= 20 {
            name = format!("{name} {}", SUFFIXES[attempt % SUFFIXES.len()]);
        }
        if attempt >= 40 {
            name = format!("{name} {attempt}");
        }
        if taken.insert(name.clone()) {
            return name;
        }
    }
    unreachable!("an unbounded loop returns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng_for;

    #[test]
    fn parties_have_unique_two_digit_numbers_and_colours() {
        let mut numbers = HashSet::new();
        for p in &PARTIES {
            assert!((10..=99).contains(&p.number), "{}", p.abbr);
            assert!(numbers.insert(p.number), "{}", p.abbr);
            assert_eq!(p.color.len(), 7);
            assert!(p.color.starts_with('#'));
            assert!(p.color[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn names_are_unique_within_a_race() {
        let mut rng = rng_for(&[1, 2, 3]);
        let mut taken = HashSet::new();
        for _ in 0..2_000 {
            unique_ballot_name(&mut rng, &mut taken);
        }
        assert_eq!(taken.len(), 2_000);
        let parties = distinct_parties(&mut rng, 11);
        let numbers: HashSet<u32> = parties.iter().map(|p| p.number).collect();
        assert_eq!(numbers.len(), 11);
    }
}
