//! The simulated municipalities: the 27 real capitals, 5,543 invented towns, and their electorates.
//!
//! The invented geography does not depend on the election seed: the towns, their codes and their
//! URLs stay the same whatever night is played, so bookmarks and load-test scripts keep working.

use std::collections::HashSet;

use rand::RngExt;
use rand::seq::IndexedRandom;

use super::{SimRng, normal, rng_for};
use apura_formats::feed::municipalities::MunicipalityList;
use apura_formats::model::{Municipality, slug};

/// Seed of the invented geography (the ASCII of "apura").
const GEOGRAPHY_SEED: u64 = 0x61_7075_7261;

/// Each state's two-digit IBGE prefix and its number of municipalities (IBGE, 2024):
/// 5,570 in all.
pub const STATES: [(&str, u32, usize); 27] = [
    ("AC", 12, 22),
    ("AL", 27, 102),
    ("AM", 13, 62),
    ("AP", 16, 16),
    ("BA", 29, 417),
    ("CE", 23, 184),
    ("DF", 53, 1),
    ("ES", 32, 78),
    ("GO", 52, 246),
    ("MA", 21, 217),
    ("MG", 31, 853),
    ("MS", 50, 79),
    ("MT", 51, 141),
    ("PA", 15, 144),
    ("PB", 25, 223),
    ("PE", 26, 185),
    ("PI", 22, 224),
    ("PR", 41, 399),
    ("RJ", 33, 92),
    ("RN", 24, 167),
    ("RO", 11, 52),
    ("RR", 14, 15),
    ("RS", 43, 497),
    ("SC", 42, 295),
    ("SE", 28, 75),
    ("SP", 35, 645),
    ("TO", 17, 139),
];

/// The capitals under their real names and codes, with roughly their real electorates (TSE,
/// 2024, rounded).
pub const CAPITALS: [(u32, &str, &str, u64); 27] = [
    (1200401, "AC", "Rio Branco", 290_000),
    (2704302, "AL", "Maceió", 650_000),
    (1302603, "AM", "Manaus", 1_520_000),
    (1600303, "AP", "Macapá", 340_000),
    (2927408, "BA", "Salvador", 1_980_000),
    (2304400, "CE", "Fortaleza", 1_800_000),
    (5300108, "DF", "Brasília", 2_200_000),
    (3205309, "ES", "Vitória", 300_000),
    (5208707, "GO", "Goiânia", 1_080_000),
    (2111300, "MA", "São Luís", 730_000),
    (3106200, "MG", "Belo Horizonte", 1_990_000),
    (5002704, "MS", "Campo Grande", 650_000),
    (5103403, "MT", "Cuiabá", 440_000),
    (1501402, "PA", "Belém", 1_040_000),
    (2507507, "PB", "João Pessoa", 560_000),
    (2611606, "PE", "Recife", 1_190_000),
    (2211001, "PI", "Teresina", 620_000),
    (4106902, "PR", "Curitiba", 1_360_000),
    (3304557, "RJ", "Rio de Janeiro", 5_010_000),
    (2408102, "RN", "Natal", 560_000),
    (1100205, "RO", "Porto Velho", 360_000),
    (1400100, "RR", "Boa Vista", 300_000),
    (4314902, "RS", "Porto Alegre", 1_100_000),
    (4205407, "SC", "Florianópolis", 400_000),
    (2800308, "SE", "Aracaju", 450_000),
    (3550308, "SP", "São Paulo", 9_320_000),
    (1721000, "TO", "Palmas", 230_000),
];

/// São Paulo: the largest race, the last to finish.
pub const SAO_PAULO: u32 = 3550308;
/// Brasília: the Federal District elects no mayor and no councillors.
pub const BRASILIA: u32 = 5300108;
/// Fernando de Noronha (PE): a state district with no municipal election.
pub const NORONHA: u32 = 2605459;
const NORONHA_NAME: &str = "Fernando de Noronha";
/// A town's electorate when the list tells nothing else about it: Fernando de Noronha's order
/// of magnitude.
const NORONHA_ELECTORATE: u64 = 2_500;

/// Whether a municipality holds a municipal election: all but Brasília and Fernando de Noronha
/// (known by its code or, in a list with other codes, by its name in PE).
pub fn has_election(m: &Municipality) -> bool {
    !(m.ibge == BRASILIA || m.ibge == NORONHA || (m.uf == "PE" && m.slug == "fernando-de-noronha"))
}

/// The synthetic list: the real number of municipalities in every state, the real capitals,
/// Fernando de Noronha, and invented towns with unique slugs and codes under the state prefix.
pub fn synthetic() -> MunicipalityList {
    let mut items = Vec::with_capacity(5_570);
    for (uf, prefix, count) in STATES {
        let mut rng = rng_for(&[GEOGRAPHY_SEED, u64::from(prefix)]);
        let mut fixed: Vec<Municipality> = CAPITALS
            .iter()
            .filter(|c| c.1 == uf)
            .map(|c| Municipality::new(c.0, None, c.2, uf, true))
            .collect();
        if uf == "PE" {
            fixed.push(Municipality::new(NORONHA, None, NORONHA_NAME, uf, false));
        }
        let mut slugs: HashSet<String> = fixed.iter().map(|m| m.slug.clone()).collect();
        let mut names = Vec::with_capacity(count - fixed.len());
        while names.len() + fixed.len() < count {
            let name = invent_name(&mut rng, uf);
            if slugs.insert(slug(&name)) {
                names.push(name);
            }
        }
        // Codes in alphabetical order, as the IBGE's roughly are.
        names.sort_by_key(|n| slug(n));
        let reserved: HashSet<u32> = fixed.iter().map(|m| m.ibge).collect();
        let mut used = reserved.clone();
        // Spread the codes over the state's five free digits: 10 × 853 (MG) < 9_000.
        let stride = (9_000 / names.len().max(1)) as u32;
        for (i, name) in names.iter().enumerate() {
            let base = prefix * 100_000 + 10 * (1 + i as u32 * stride);
            let mut digit = check_digit(base);
            while used.contains(&(base + digit)) {
                digit = (digit + 1) % 10;
            }
            used.insert(base + digit);
            items.push(Municipality::new(base + digit, None, name, uf, false));
        }
        items.extend(fixed);
    }
    MunicipalityList::new(items, "synthetic municipalities")
        .expect("the synthetic municipalities have unique slugs and codes")
}

/// A last digit that looks like a check digit (IBGE codes end in one).
fn check_digit(base: u32) -> u32 {
    let digits: u32 = (base / 10)
        .to_string()
        .bytes()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 1 } else { 2 })
        .sum();
    (10 - digits % 10) % 10
}

/// Registered voters of a municipality: the capitals' real order of magnitude, otherwise a
/// heavy-tailed draw fixed by the code. Most towns have 3,000 to 30,000 voters; about 1 in 80 is
/// a large city of 200,000 to 1.1 million (Brazil has ~75 such non-capital cities).
pub fn electorate(m: &Municipality) -> u64 {
    if let Some(c) = CAPITALS.iter().find(|c| c.0 == m.ibge) {
        return c.3;
    }
    if m.ibge == NORONHA {
        return NORONHA_ELECTORATE;
    }
    let mut rng = rng_for(&[GEOGRAPHY_SEED, u64::from(m.ibge), 1]);
    if m.capital {
        // A capital of a list with other codes: between Palmas and Belo Horizonte.
        return log_uniform(&mut rng, 250_000.0, 2_000_000.0);
    }
    if rng.random_bool(LARGE_CITY_SHARE) {
        return log_uniform(&mut rng, 200_001.0, 1_100_000.0);
    }
    // Log-normal around a median town of 8,500 voters; σ = 1.05 puts ~90 % of towns between
    // 2,200 and 33,000.
    let e = (TOWN_MEDIAN.ln() + 1.05 * normal(&mut rng)).exp();
    e.clamp(1_000.0, 190_000.0) as u64
}

/// Share of non-capital towns that are large cities: ~70 of 5,543.
const LARGE_CITY_SHARE: f64 = 0.0125;
/// The median town's electorate.
const TOWN_MEDIAN: f64 = 8_500.0;

fn log_uniform(rng: &mut SimRng, lo: f64, hi: f64) -> u64 {
    let u: f64 = rng.random();
    (lo.ln() + u * (hi.ln() - lo.ln())).exp() as u64
}

/// The name as the results provider spells it (`nm`): mostly the list's name, sometimes upper
/// case, sometimes abbreviated (`S. José do Norte`), never to be used for URLs.
pub fn feed_name(m: &Municipality) -> String {
    if m.capital {
        return m.name.clone();
    }
    let mut rng = rng_for(&[GEOGRAPHY_SEED, u64::from(m.ibge), 2]);
    let roll: f64 = rng.random();
    if roll < 0.15 {
        return m.name.to_uppercase();
    }
    if roll < 0.25 {
        for (full, short) in ABBREVIATIONS {
            if let Some(rest) = m.name.strip_prefix(full) {
                return format!("{short}{rest}");
            }
        }
    }
    m.name.clone()
}

/// How the provider shortens the first word of long names.
const ABBREVIATIONS: [(&str, &str); 9] = [
    ("São ", "S. "),
    ("Santa ", "Sta. "),
    ("Santo ", "Sto. "),
    ("Nova ", "N. "),
    ("Bom ", "B. "),
    ("Boa ", "B. "),
    ("Ribeirão ", "Rib. "),
    ("Cachoeira ", "Cach. "),
    ("Campo ", "C. "),
];

const MALE_SAINTS: [&str; 26] = [
    "José",
    "João",
    "Pedro",
    "Sebastião",
    "Francisco",
    "Miguel",
    "Bento",
    "Tomé",
    "Domingos",
    "Jerônimo",
    "Lourenço",
    "Gonçalo",
    "Vicente",
    "Mateus",
    "Joaquim",
    "Caetano",
    "Roque",
    "Félix",
    "Gabriel",
    "Luís",
    "Brás",
    "Simão",
    "Tiago",
    "Jorge",
    "Valentim",
    "Geraldo",
];

const FEMALE_SAINTS: [&str; 22] = [
    "Rita",
    "Luzia",
    "Bárbara",
    "Helena",
    "Inês",
    "Rosa",
    "Teresa",
    "Cecília",
    "Mônica",
    "Clara",
    "Isabel",
    "Maria",
    "Quitéria",
    "Filomena",
    "Efigênia",
    "Terezinha",
    "Cruz",
    "Lúcia",
    "Joana",
    "Gertrudes",
    "Sofia",
    "Edwiges",
];

const SANTOS: [&str; 9] = [
    "Antônio",
    "Amaro",
    "Inácio",
    "Expedito",
    "Estêvão",
    "André",
    "Agostinho",
    "Hipólito",
    "Ângelo",
];

/// Place nouns, with their gender for the adjective that follows.
const NOUNS: [(&str, Gender); 30] = [
    ("Rio", Gender::M),
    ("Lagoa", Gender::F),
    ("Serra", Gender::F),
    ("Campo", Gender::M),
    ("Porto", Gender::M),
    ("Monte", Gender::M),
    ("Vale", Gender::M),
    ("Barra", Gender::F),
    ("Ponte", Gender::F),
    ("Morro", Gender::M),
    ("Poço", Gender::M),
    ("Pedra", Gender::F),
    ("Cachoeira", Gender::F),
    ("Ribeirão", Gender::M),
    ("Vargem", Gender::F),
    ("Lajeado", Gender::M),
    ("Córrego", Gender::M),
    ("Capão", Gender::M),
    ("Chapada", Gender::F),
    ("Várzea", Gender::F),
    ("Mata", Gender::F),
    ("Ilha", Gender::F),
    ("Vila", Gender::F),
    ("Cruz", Gender::F),
    ("Jardim", Gender::M),
    ("Palmeira", Gender::F),
    ("Arroio", Gender::M),
    ("Passo", Gender::M),
    ("Campina", Gender::F),
    ("Vereda", Gender::F),
];

#[derive(Clone, Copy)]
enum Gender {
    M,
    F,
}

/// Adjectives, masculine and feminine.
const ADJECTIVES: [(&str, &str); 24] = [
    ("Alegre", "Alegre"),
    ("Verde", "Verde"),
    ("Grande", "Grande"),
    ("Bonito", "Bonita"),
    ("Novo", "Nova"),
    ("Claro", "Clara"),
    ("Branco", "Branca"),
    ("Preto", "Preta"),
    ("Azul", "Azul"),
    ("Dourado", "Dourada"),
    ("Fundo", "Funda"),
    ("Seco", "Seca"),
    ("Largo", "Larga"),
    ("Formoso", "Formosa"),
    ("Bravo", "Brava"),
    ("Redondo", "Redonda"),
    ("Limpo", "Limpa"),
    ("Rico", "Rica"),
    ("Vermelho", "Vermelha"),
    ("Fresco", "Fresca"),
    ("Real", "Real"),
    ("Feliz", "Feliz"),
    ("Alto", "Alta"),
    ("Velho", "Velha"),
];

const QUALIFIERS: [&str; 26] = [
    "do Norte",
    "do Sul",
    "do Oeste",
    "do Leste",
    "da Serra",
    "das Flores",
    "dos Campos",
    "da Mata",
    "das Pedras",
    "do Descoberto",
    "dos Dourados",
    "da Boa Vista",
    "das Palmeiras",
    "do Rio Claro",
    "da Estrela",
    "das Missões",
    "do Sertão",
    "da Várzea",
    "dos Pinhais",
    "do Ouro",
    "da Lapa",
    "do Paraíso",
    "das Graças",
    "dos Montes",
    "da Prata",
    "d'Oeste",
];

const TUPI_HEADS: [&str; 30] = [
    "Ita", "Ibi", "Ara", "Jacu", "Pira", "Guara", "Capi", "Tapi", "Itu", "Ubi", "Jabo", "Cara",
    "Cata", "Mara", "Para", "Aru", "Iga", "Uru", "Jaci", "Tau", "Ipo", "Itapi", "Tupi", "Jequi",
    "Mogi", "Bura", "Anhu", "Juru", "Bori", "Inda",
];

const TUPI_TAILS: [&str; 26] = [
    "tinga", "porã", "guaçu", "mirim", "rema", "tuba", "juba", "caí", "peva", "tiba", "randi",
    "quara", "coara", "nema", "poca", "tuva", "jara", "pema", "tama", "çuba", "piranga", "batã",
    "buçu", "pitã", "jaí", "tã",
];

const PLACE_ROOTS: [&str; 24] = [
    "Cristal", "Ouro", "Vera", "Ana", "Jaci", "Nilo", "Mauri", "Sereno", "Alvo", "Aurora",
    "Glória", "Ramal", "Camilo", "Dário", "Elói", "Heitor", "Otávio", "Rubi", "Safira", "Jade",
    "Coral", "Pérola", "Celso", "Ivo",
];

const DEVOTIONS: [&str; 24] = [
    "Bom Jesus",
    "Bom Sucesso",
    "Boa Esperança",
    "Nova Esperança",
    "Bela Vista",
    "Boa Vista",
    "Conceição",
    "Divino",
    "Glória",
    "Paz",
    "Aparecida",
    "Vitória",
    "Concórdia",
    "Harmonia",
    "Liberdade",
    "Independência",
    "Progresso",
    "Triunfo",
    "União",
    "Abadia",
    "Piedade",
    "Natividade",
    "Ascensão",
    "Consolação",
];

/// The qualifier some towns take from their state (`Nova Itatinga Paulista`).
fn state_qualifier(uf: &str) -> Option<&'static str> {
    Some(match uf {
        "SP" => "Paulista",
        "MG" => "de Minas",
        "GO" => "de Goiás",
        "PR" => "do Paraná",
        "BA" => "da Bahia",
        "PI" => "do Piauí",
        "MA" => "do Maranhão",
        "PA" => "do Pará",
        "TO" => "do Tocantins",
        "MT" => "do Mato Grosso",
        "PB" => "da Paraíba",
        "RN" => "do Potengi",
        "SC" => "Catarinense",
        "RS" => "das Missões",
        _ => return None,
    })
}

fn pick<'a>(rng: &mut SimRng, words: &[&'a str]) -> &'a str {
    words.choose(rng).copied().unwrap_or_default()
}

fn qualifier(rng: &mut SimRng, uf: &str) -> &'static str {
    match state_qualifier(uf) {
        Some(q) if rng.random_bool(0.15) => q,
        _ => pick(rng, &QUALIFIERS),
    }
}

fn tupi(rng: &mut SimRng) -> String {
    format!("{}{}", pick(rng, &TUPI_HEADS), pick(rng, &TUPI_TAILS))
}

/// A plausible municipality name built from parts: saints, place nouns and adjectives, Tupi-like
/// words, `-lândia` and `-ópolis` towns, devotions, with an occasional qualifier.
fn invent_name(rng: &mut SimRng, uf: &str) -> String {
    let with_qualifier = |rng: &mut SimRng, base: String, p: f64| {
        if rng.random_bool(p) {
            format!("{base} {}", qualifier(rng, uf))
        } else {
            base
        }
    };
    match rng.random_range(0..100u32) {
        0..12 => {
            let base = format!("São {}", pick(rng, &MALE_SAINTS));
            with_qualifier(rng, base, 0.6)
        }
        12..22 => {
            let base = format!("Santa {}", pick(rng, &FEMALE_SAINTS));
            with_qualifier(rng, base, 0.6)
        }
        22..26 => {
            let base = format!("Santo {}", pick(rng, &SANTOS));
            with_qualifier(rng, base, 0.7)
        }
        26..44 => {
            let (noun, gender) = *NOUNS.choose(rng).expect("nouns");
            let (m, f) = *ADJECTIVES.choose(rng).expect("adjectives");
            let adjective = match gender {
                Gender::M => m,
                Gender::F => f,
            };
            with_qualifier(rng, format!("{noun} {adjective}"), 0.2)
        }
        44..54 => {
            let (noun, _) = *NOUNS.choose(rng).expect("nouns");
            format!("{noun} {}", qualifier(rng, uf))
        }
        54..74 => {
            let base = tupi(rng);
            with_qualifier(rng, base, 0.2)
        }
        74..79 => format!("Nova {}", tupi(rng)),
        79..88 => {
            let root = pick(rng, &PLACE_ROOTS);
            if rng.random_bool(0.6) {
                // Cristal + lândia = Cristalândia; Vera + lândia = Veralândia.
                match root.strip_suffix('l') {
                    Some(stem) => format!("{stem}lândia"),
                    None => format!("{root}lândia"),
                }
            } else {
                // Vera + ópolis = Verópolis: the root's last vowel gives way.
                let stem = root.trim_end_matches(['a', 'e', 'o', 'i']);
                format!("{stem}ópolis")
            }
        }
        _ => format!("{} {}", pick(rng, &DEVOTIONS), qualifier(rng, uf)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use apura_formats::feed::municipalities::{CAPITALS as CAPITAL_CODES, UFS};

    #[test]
    fn the_synthetic_list_has_the_real_counts_per_state() {
        let list = synthetic();
        assert_eq!(list.len(), 5_570);
        let mut per_state: HashMap<&str, usize> = HashMap::new();
        for m in list.iter() {
            *per_state.entry(m.uf.as_str()).or_default() += 1;
            let prefix = STATES.iter().find(|s| s.0 == m.uf).unwrap().1;
            assert_eq!(m.ibge / 100_000, prefix, "{} {}", m.name, m.ibge);
        }
        for (uf, _, count) in STATES {
            assert_eq!(per_state[uf], count, "{uf}");
        }
        assert_eq!(STATES.iter().map(|s| s.2).sum::<usize>(), 5_570);
        assert_eq!(UFS.len(), STATES.len());
    }

    #[test]
    fn capitals_keep_their_names_and_codes() {
        let list = synthetic();
        for code in CAPITAL_CODES {
            let m = list.get(code).unwrap();
            assert!(m.capital, "{}", m.name);
        }
        assert_eq!(list.iter().filter(|m| m.capital).count(), 27);
        let sp = list.get(SAO_PAULO).unwrap();
        assert_eq!((sp.name.as_str(), sp.uf.as_str()), ("São Paulo", "SP"));
        assert_eq!(
            sp.topic(apura_formats::model::TopicKind::Mayors),
            "mayors-sp-sao-paulo"
        );
        let noronha = list.get(NORONHA).unwrap();
        assert_eq!(noronha.uf, "PE");
        assert!(!has_election(noronha));
        assert!(!has_election(list.get(BRASILIA).unwrap()));
        assert_eq!(list.iter().filter(|m| has_election(m)).count(), 5_568);
    }

    #[test]
    fn the_list_is_the_same_every_time() {
        let a: Vec<_> = synthetic()
            .iter()
            .map(|m| (m.ibge, m.name.clone()))
            .collect();
        let b: Vec<_> = synthetic()
            .iter()
            .map(|m| (m.ibge, m.name.clone()))
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn electorates_are_heavy_tailed() {
        let list = synthetic();
        let mut towns: Vec<u64> = list
            .iter()
            .filter(|m| !m.capital)
            .map(|m| electorate(m))
            .collect();
        towns.sort_unstable();
        let median = towns[towns.len() / 2];
        assert!((5_000..15_000).contains(&median), "median {median}");
        let large = towns.iter().filter(|&&e| e > 200_000).count();
        assert!((30..150).contains(&large), "{large} large cities");
        let in_range = towns
            .iter()
            .filter(|&&e| (3_000..30_000).contains(&e))
            .count();
        assert!(
            in_range * 10 > towns.len() * 6,
            "{in_range} towns of 3k–30k"
        );
        assert_eq!(electorate(list.get(SAO_PAULO).unwrap()), 9_320_000);
        let total: u64 = list.iter().map(|m| electorate(m)).sum();
        eprintln!("median town {median}, {large} large cities, {total} voters");
    }

    #[test]
    fn feed_names_are_sometimes_abbreviated_but_never_for_capitals() {
        let list = synthetic();
        let changed = list.iter().filter(|m| feed_name(m) != m.name).count();
        assert!(changed > 500, "{changed}");
        assert_eq!(feed_name(list.get(SAO_PAULO).unwrap()), "São Paulo");
    }
}
