//! Slicing: the domain model cut into the topic documents of the contract, and the roll-ups.
//!
//! Every function here returns [`Draft`]s: the canonical JSON body of a document without its
//! `version` and `published_at`, which the bus stamps on at publication. Two drafts with equal
//! bytes are the same document, which is what the diff relies on.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Serialize;

use crate::feed::municipalities::{MunicipalityList, UFS, uf_name};
use crate::feed::number::percent;
use crate::model::{
    Candidate, Municipality, Office, Progress, Race, Status, TopicKind, Totals, ZoneBreakdown,
    ZoneResult,
};

/// A document ready to publish: its topic and canonical body (a JSON object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub topic: String,
    pub body: Bytes,
}

/// The topic of the municipality index served at `/cities.json`.
pub const CITIES_TOPIC: &str = "cities";
/// The topic of the national roll-up.
pub const BRAZIL_TOPIC: &str = "brazil";

/// What fed the documents, as the `brazil` document says (`source`): a client labels simulated
/// data as such without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSource {
    /// The provider's consolidated files.
    #[default]
    Consolidated,
    /// The authority's per-city files.
    Tse,
    /// The built-in simulator (`apura demo`): not real results.
    Simulation,
}

/// The topic of a state roll-up, `state-sp`.
pub fn state_topic(uf: &str) -> String {
    format!("state-{}", uf.to_ascii_lowercase())
}

fn draft(topic: String, doc: &impl Serialize) -> Draft {
    let body = serde_json::to_vec(doc).expect("documents serialize");
    Draft {
        topic,
        body: Bytes::from(body),
    }
}

/// Why, and since when, a city's document shows its last good results rather than the feed's
/// latest: the feed's latest failed validation (the city is quarantined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// When the city's results were first refused (RFC 3339, UTC, to the second).
    pub since: String,
    /// A short, stable label: `negative`, `totals`, `malformed`, … (as in the metrics).
    pub reason: String,
    /// What was wrong, where: the city, the field, the value (never the feed's URL).
    pub detail: String,
}

#[derive(Serialize)]
struct CityDoc<'a> {
    topic: &'a str,
    kind: &'static str,
    office: Office,
    round: u8,
    city: &'a Municipality,
    source_time: Option<&'a str>,
    progress: &'a Progress,
    totals: &'a Totals,
    candidates: &'a [Candidate],
    #[serde(rename = "final")]
    finished: bool,
    /// Present only while the city is quarantined.
    #[serde(skip_serializing_if = "Option::is_none")]
    held: Option<&'a Held>,
}

/// The document of one city's race (`mayors-*` or `councillors-*`).
pub fn city(m: &Municipality, race: &Race) -> Draft {
    city_held(m, race, None)
}

/// The document of one city's race, marked `held` when `race` is the last good one of a
/// quarantined city.
pub fn city_held(m: &Municipality, race: &Race, held: Option<&Held>) -> Draft {
    let topic = m.topic(race.office.topic_kind());
    let doc = CityDoc {
        topic: &topic,
        kind: "city",
        office: race.office,
        round: race.round,
        city: m,
        source_time: race.source_time.as_deref(),
        progress: &race.progress,
        totals: &race.totals,
        candidates: &race.candidates,
        finished: race.finished,
        held,
    };
    draft(topic.clone(), &doc)
}

#[derive(Serialize)]
struct ZonesDoc<'a> {
    topic: &'a str,
    kind: &'static str,
    office: Office,
    round: u8,
    city: &'a Municipality,
    source_time: Option<&'a str>,
    progress: Progress,
    candidates: &'a [Candidate],
    total: &'a ZoneResult,
    zones: &'a [ZoneResult],
    #[serde(rename = "final")]
    finished: bool,
}

/// The document of one city's mayor race by zone (`zones-*`).
pub fn zones(m: &Municipality, z: &ZoneBreakdown) -> Draft {
    let topic = m.topic(TopicKind::Zones);
    let doc = ZonesDoc {
        topic: &topic,
        kind: "zones",
        office: Office::Mayor,
        round: z.round,
        city: m,
        source_time: z.source_time.as_deref(),
        progress: Progress {
            sections_counted: None,
            sections_total: None,
            percent: z.percent,
        },
        candidates: &z.candidates,
        total: &z.total,
        zones: &z.zones,
        finished: z.finished,
    };
    draft(topic.clone(), &doc)
}

#[derive(Serialize)]
struct IndexEntry<'a> {
    #[serde(flatten)]
    city: &'a Municipality,
    /// The topics this city has now.
    topics: Vec<String>,
}

#[derive(Serialize)]
struct IndexDoc<'a> {
    topic: &'static str,
    kind: &'static str,
    cities: Vec<IndexEntry<'a>>,
}

/// The index of municipalities at `/cities.json`: codes, name, UF, slug, capital flag, and the
/// topics each has (a city without a municipal election has none).
pub fn index(list: &MunicipalityList, has: impl Fn(&Municipality, TopicKind) -> bool) -> Draft {
    let cities = list
        .iter()
        .map(|m| IndexEntry {
            city: m,
            topics: [TopicKind::Mayors, TopicKind::Councillors, TopicKind::Zones]
                .into_iter()
                .filter(|k| has(m, *k))
                .map(|k| m.topic(k))
                .collect(),
        })
        .collect();
    draft(
        CITIES_TOPIC.to_string(),
        &IndexDoc {
            topic: CITIES_TOPIC,
            kind: "index",
            cities,
        },
    )
}

/// The leading (or winning) candidate of a city, as the roll-ups show it.
#[derive(Serialize, Clone)]
struct Leader<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<u32>,
    name: &'a str,
    party: &'a str,
    votes: u64,
    percent: f64,
    elected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    color: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    photo: Option<&'a str>,
}

impl<'a> Leader<'a> {
    fn of(c: &'a Candidate) -> Self {
        Leader {
            number: c.number,
            name: &c.name,
            party: &c.party,
            votes: c.votes,
            percent: c.percent,
            elected: c.elected,
            color: c.color.as_deref(),
            photo: c.photo.as_deref(),
        }
    }
}

/// The two candidates of a city going to a second round, most votes first; empty otherwise.
fn runoff(race: &Race) -> Vec<Leader<'_>> {
    let mut two: Vec<&Candidate> = race
        .candidates
        .iter()
        .filter(|c| c.status == Some(Status::SecondRound))
        .collect();
    two.sort_by_key(|c| std::cmp::Reverse(c.votes));
    two.into_iter().map(Leader::of).collect()
}

fn leader(race: &Race) -> Option<Leader<'_>> {
    let c = race.candidates.iter().filter(|c| c.valid).max_by(|a, b| {
        a.votes
            .cmp(&b.votes)
            .then(b.elected.cmp(&a.elected).reverse())
    })?;
    if c.votes == 0 && !c.elected {
        return None;
    }
    Some(Leader::of(c))
}

#[derive(Serialize)]
struct CityLine<'a> {
    ibge: u32,
    name: &'a str,
    slug: &'a str,
    capital: bool,
    percent: f64,
    #[serde(rename = "final")]
    finished: bool,
    leader: Option<Leader<'a>>,
    /// The two candidates of a second round, once the count sends the city to one (then no
    /// party counts the city as leading).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    second_round: Vec<Leader<'a>>,
    /// Present (`true`) only while the city is quarantined: its line shows its last good
    /// results.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    held: bool,
}

#[derive(Serialize, Default)]
struct RollupProgress {
    /// Municipalities with a mayor race in the feed.
    cities_total: usize,
    /// Of those, how many have finished counting.
    cities_final: usize,
    percent_cities_final: f64,
    /// Percent of sections counted: summed sections where the feed gives them, otherwise the
    /// mean of the cities' percentages weighted by votes cast.
    percent: f64,
}

#[derive(Serialize, Default, Clone)]
struct PartyLine {
    party: String,
    /// Mayors elected.
    elected: u32,
    /// Cities where the party's candidate leads and no one is elected yet (nor sent to a
    /// second round).
    leading: u32,
    /// Cities where one of the party's candidates goes to the second round.
    second_round: u32,
}

#[derive(Serialize)]
struct StateDoc<'a> {
    topic: &'a str,
    kind: &'static str,
    uf: &'a str,
    name: &'static str,
    progress: RollupProgress,
    parties: Vec<PartyLine>,
    cities: Vec<CityLine<'a>>,
}

#[derive(Serialize)]
struct StateLine<'a> {
    uf: &'a str,
    name: &'static str,
    progress: RollupProgress,
}

#[derive(Serialize)]
struct CapitalLine<'a> {
    uf: &'a str,
    #[serde(flatten)]
    city: CityLine<'a>,
    topic: String,
}

#[derive(Serialize)]
struct BrazilDoc<'a> {
    topic: &'static str,
    kind: &'static str,
    source: DataSource,
    progress: RollupProgress,
    states: Vec<StateLine<'a>>,
    capitals: Vec<CapitalLine<'a>>,
    parties: Vec<PartyLine>,
}

#[derive(Default)]
struct Tally {
    cities_total: usize,
    cities_final: usize,
    sections_counted: u64,
    sections_total: u64,
    all_sections_known: bool,
    weighted_percent: f64,
    weight: f64,
    parties: HashMap<String, PartyLine>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            all_sections_known: true,
            ..Tally::default()
        }
    }

    fn add(&mut self, race: &Race) {
        self.cities_total += 1;
        self.cities_final += usize::from(race.finished);
        match (race.progress.sections_counted, race.progress.sections_total) {
            (Some(s), Some(t)) => {
                self.sections_counted += s;
                self.sections_total += t;
            }
            _ => self.all_sections_known = false,
        }
        // Votes cast so far grow with the count; the electorate, where known, is the better
        // weight because it does not.
        let w = race.totals.electorate.unwrap_or(race.totals.turnout).max(1) as f64;
        self.weighted_percent += race.progress.percent * w;
        self.weight += w;
        let elected: Vec<&Candidate> = race.candidates.iter().filter(|c| c.elected).collect();
        let runoff: Vec<&Candidate> = race
            .candidates
            .iter()
            .filter(|c| c.status == Some(Status::SecondRound))
            .collect();
        if !elected.is_empty() {
            for c in elected {
                self.parties.entry(c.party.clone()).or_default().elected += 1;
            }
        } else if !runoff.is_empty() {
            for c in runoff {
                self.parties
                    .entry(c.party.clone())
                    .or_default()
                    .second_round += 1;
            }
        } else if let Some(l) = leader(race) {
            self.parties.entry(l.party.to_string()).or_default().leading += 1;
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.cities_total += other.cities_total;
        self.cities_final += other.cities_final;
        self.sections_counted += other.sections_counted;
        self.sections_total += other.sections_total;
        self.all_sections_known &= other.all_sections_known;
        self.weighted_percent += other.weighted_percent;
        self.weight += other.weight;
        for (party, line) in &other.parties {
            let mine = self.parties.entry(party.clone()).or_default();
            mine.elected += line.elected;
            mine.leading += line.leading;
            mine.second_round += line.second_round;
        }
    }

    fn progress(&self) -> RollupProgress {
        let percent = if self.all_sections_known && self.sections_total > 0 {
            percent(self.sections_counted, self.sections_total)
        } else if self.weight > 0.0 {
            crate::feed::number::round2(self.weighted_percent / self.weight)
        } else {
            0.0
        };
        RollupProgress {
            cities_total: self.cities_total,
            cities_final: self.cities_final,
            percent_cities_final: percent_of(self.cities_final, self.cities_total),
            percent,
        }
    }

    fn parties(&self) -> Vec<PartyLine> {
        let mut lines: Vec<PartyLine> = self
            .parties
            .iter()
            .map(|(p, l)| PartyLine {
                party: p.clone(),
                ..l.clone()
            })
            .collect();
        lines.sort_by(|a, b| {
            (b.elected + b.leading + b.second_round, b.elected, &a.party).cmp(&(
                a.elected + a.leading + a.second_round,
                a.elected,
                &b.party,
            ))
        });
        lines
    }
}

fn percent_of(part: usize, whole: usize) -> f64 {
    percent(part as u64, whole as u64)
}

fn city_line<'a>(m: &'a Municipality, race: &'a Race, held: bool) -> CityLine<'a> {
    CityLine {
        ibge: m.ibge,
        name: &m.name,
        slug: &m.slug,
        capital: m.capital,
        percent: race.progress.percent,
        finished: race.finished,
        leader: leader(race),
        second_round: runoff(race),
        held,
    }
}

/// The state roll-ups (`state-*`) and the national one (`brazil`), from the mayor races that
/// `source` fed.
pub fn rollups(
    list: &MunicipalityList,
    mayors: &HashMap<u32, Race>,
    source: DataSource,
) -> Vec<Draft> {
    rollups_held(list, mayors, source, |_| false)
}

/// The roll-ups, the lines of the cities `held` answers true for marked as held (their race is
/// the last good one of a quarantined city).
pub fn rollups_held(
    list: &MunicipalityList,
    mayors: &HashMap<u32, Race>,
    source: DataSource,
    held: impl Fn(u32) -> bool,
) -> Vec<Draft> {
    let mut by_uf: BTreeMap<&str, Vec<(&Municipality, &Race)>> = BTreeMap::new();
    for m in list.iter() {
        if let Some(race) = mayors.get(&m.ibge) {
            by_uf.entry(m.uf.as_str()).or_default().push((m, race));
        }
    }
    let mut drafts = Vec::with_capacity(UFS.len() + 1);
    let mut national = Tally::new();
    let mut states = Vec::new();
    let mut capitals = Vec::new();
    for (uf, cities) in &by_uf {
        let mut tally = Tally::new();
        for (_, race) in cities {
            tally.add(race);
        }
        let topic = state_topic(uf);
        let doc = StateDoc {
            topic: &topic,
            kind: "state",
            uf,
            name: uf_name(uf),
            progress: tally.progress(),
            parties: tally.parties(),
            cities: cities
                .iter()
                .map(|(m, r)| city_line(m, r, held(m.ibge)))
                .collect(),
        };
        drafts.push(draft(topic.clone(), &doc));
        national.merge(&tally);
        states.push(StateLine {
            uf,
            name: uf_name(uf),
            progress: tally.progress(),
        });
        for (m, race) in cities.iter().filter(|(m, _)| m.capital) {
            capitals.push(CapitalLine {
                uf,
                city: city_line(m, race, held(m.ibge)),
                topic: m.topic(TopicKind::Mayors),
            });
        }
    }
    let doc = BrazilDoc {
        topic: BRAZIL_TOPIC,
        kind: "brazil",
        source,
        progress: national.progress(),
        states,
        capitals,
        parties: national.parties(),
    };
    drafts.push(draft(BRAZIL_TOPIC.to_string(), &doc));
    drafts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn race(ibge: u32, votes: &[(&str, u64)], finished: bool) -> Race {
        let valid: u64 = votes.iter().map(|v| v.1).sum();
        Race {
            ibge,
            office: Office::Mayor,
            round: 1,
            source_time: None,
            progress: Progress {
                sections_counted: None,
                sections_total: None,
                percent: if finished { 100.0 } else { 50.0 },
            },
            totals: Totals {
                electorate: None,
                turnout: valid,
                abstentions: 0,
                blank: 0,
                null: 0,
                valid,
            },
            candidates: votes
                .iter()
                .enumerate()
                .map(|(i, (party, v))| Candidate {
                    number: None,
                    name: format!("C{i}"),
                    party: party.to_string(),
                    coalition: None,
                    votes: *v,
                    percent: percent(*v, valid),
                    elected: finished && i == 0,
                    status: (finished && i == 0).then_some(Status::Elected),
                    valid: true,
                    color: None,
                    photo: None,
                })
                .collect(),
            finished,
        }
    }

    fn list() -> MunicipalityList {
        MunicipalityList::new(
            vec![
                Municipality::new(3550308, None, "São Paulo", "SP", true),
                Municipality::new(3500105, None, "Adamantina", "SP", false),
                Municipality::new(2705903, None, "Olho d'Água Grande", "AL", false),
            ],
            "t",
        )
        .unwrap()
    }

    #[test]
    fn city_document_has_the_contract_fields() {
        let l = list();
        let d = city(
            l.get(3550308).unwrap(),
            &race(3550308, &[("A", 7), ("B", 3)], false),
        );
        assert_eq!(d.topic, "mayors-sp-sao-paulo");
        let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["topic"], "mayors-sp-sao-paulo");
        assert_eq!(v["city"]["slug"], "sao-paulo");
        assert_eq!(v["city"]["capital"], true);
        assert_eq!(v["candidates"][0]["votes"], 7);
        assert_eq!(v["candidates"][0]["percent"], 70.0);
        assert_eq!(v["final"], false);
        assert!(v.get("version").is_none());
    }

    #[test]
    fn rollups_count_finished_cities_and_parties() {
        let l = list();
        let mut mayors = HashMap::new();
        mayors.insert(3550308, race(3550308, &[("A", 7), ("B", 3)], false));
        mayors.insert(3500105, race(3500105, &[("B", 5), ("A", 1)], true));
        mayors.insert(2705903, race(2705903, &[("B", 2)], true));
        let drafts = rollups(&l, &mayors, DataSource::Simulation);
        let topics: Vec<&str> = drafts.iter().map(|d| d.topic.as_str()).collect();
        assert_eq!(topics, vec!["state-al", "state-sp", "brazil"]);
        let sp: serde_json::Value = serde_json::from_slice(&drafts[1].body).unwrap();
        assert_eq!(sp["progress"]["cities_total"], 2);
        assert_eq!(sp["progress"]["cities_final"], 1);
        assert_eq!(sp["progress"]["percent_cities_final"], 50.0);
        let br: serde_json::Value = serde_json::from_slice(&drafts[2].body).unwrap();
        assert_eq!(br["source"], "simulation");
        assert_eq!(br["progress"]["cities_final"], 2);
        assert_eq!(br["capitals"][0]["slug"], "sao-paulo");
        assert_eq!(br["capitals"][0]["leader"]["party"], "A");
        assert_eq!(br["parties"][0]["party"], "B");
        assert_eq!(br["parties"][0]["elected"], 2);
        assert_eq!(br["parties"][1]["leading"], 1);
    }

    #[test]
    fn a_second_round_city_shows_both_candidates_and_leads_for_no_party() {
        let l = list();
        let mut r = race(3550308, &[("A", 45), ("B", 40), ("C", 15)], true);
        for c in &mut r.candidates {
            c.elected = false;
            c.status = None;
        }
        r.candidates[0].status = Some(Status::SecondRound);
        r.candidates[1].status = Some(Status::SecondRound);
        let mayors = HashMap::from([(3550308, r)]);
        let drafts = rollups(&l, &mayors, DataSource::Tse);
        let br: serde_json::Value = serde_json::from_slice(&drafts[1].body).unwrap();
        assert_eq!(br["source"], "tse");
        let two = &br["capitals"][0]["second_round"];
        assert_eq!(two[0]["party"], "A");
        assert_eq!(two[1]["party"], "B");
        assert_eq!(two.as_array().unwrap().len(), 2);
        let parties = br["parties"].as_array().unwrap();
        assert!(
            parties
                .iter()
                .all(|p| p["leading"] == 0 && p["elected"] == 0)
        );
        assert_eq!(parties.iter().filter(|p| p["second_round"] == 1).count(), 2);
    }

    #[test]
    fn index_lists_only_existing_topics() {
        let l = list();
        let d = index(&l, |m, k| m.capital || k == TopicKind::Mayors);
        let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        let cities = v["cities"].as_array().unwrap();
        assert_eq!(cities.len(), 3);
        let sp = cities.iter().find(|c| c["slug"] == "sao-paulo").unwrap();
        assert_eq!(sp["topics"].as_array().unwrap().len(), 3);
        let ad = cities.iter().find(|c| c["slug"] == "adamantina").unwrap();
        assert_eq!(ad["topics"], serde_json::json!(["mayors-sp-adamantina"]));
    }
}
