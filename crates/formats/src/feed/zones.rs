//! The zone ("session") file of one city: the mayor race broken down by electoral zone, refreshed
//! about every 60 s.
//!
//! ```text
//! {"atualizacao": {"data", "hora", "turno", "apuracao_total", "encerrado", ..},
//!  "total": {"brancos", "nulos", "total", "candidatos": [{"id_candidato", "total_votos_validos",
//!            "total_percentual"}]},
//!  "zonas": {"<zone>": {same shape as total}},
//!  "candidatos": {"<id>": {"numero_candidato", "nome_candidato", "sigla_partido", "eleito",
//!                 "segundo_turno", "cor_partido", "thumb_candidato"}}}
//! ```
//! The provider spells the city total's vote field `total_votos_validoss`; both are accepted.

use std::collections::HashMap;

use serde::Deserialize;

use super::FeedError;
use super::consolidated::{Entries, RawCount, check_counted, count, iso_local, status};
use super::number::{parse_decimal, percent};
use crate::model::{Candidate, ZoneBreakdown, ZoneResult, ZoneVotes};

#[derive(Deserialize)]
struct RawFile {
    atualizacao: RawHeader,
    total: RawBlock,
    zonas: Entries<RawBlock>,
    candidatos: HashMap<String, RawCandidate>,
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    hora: Option<String>,
    #[serde(flatten)]
    count: RawCount,
}

#[derive(Deserialize)]
struct RawBlock {
    #[serde(default)]
    brancos: String,
    #[serde(default)]
    nulos: String,
    total: String,
    candidatos: Vec<RawVotes>,
}

#[derive(Deserialize)]
struct RawVotes {
    id_candidato: String,
    #[serde(alias = "total_votos_validoss")]
    total_votos_validos: String,
    #[serde(default)]
    total_percentual: String,
}

#[derive(Deserialize)]
struct RawCandidate {
    #[serde(default)]
    numero_candidato: Option<String>,
    nome_candidato: String,
    #[serde(default)]
    sigla_partido: String,
    #[serde(default)]
    eleito: bool,
    #[serde(default)]
    segundo_turno: bool,
    #[serde(default)]
    cor_partido: Option<String>,
    #[serde(default)]
    thumb_candidato: Option<String>,
}

/// Parse and validate one zone file.
pub fn parse(bytes: &[u8], file: &str) -> Result<ZoneBreakdown, FeedError> {
    let raw: RawFile = serde_json::from_slice(bytes).map_err(|e| FeedError::malformed(file, e))?;
    let header = &raw.atualizacao.count;
    let finished = header.finished();
    let pct = header
        .percent()
        .map_err(|d| FeedError::invalid(file, "atualizacao.apuracao_total", d))?;
    let round = header.round();

    let mut numbers: HashMap<String, u32> = HashMap::new();
    for (id, c) in &raw.candidatos {
        let n = c.numero_candidato.as_deref().unwrap_or(id);
        let n = n.trim().parse::<u32>().map_err(|_| {
            FeedError::invalid(
                file,
                format!("candidatos.{id}"),
                format!("{n:?} is not a ballot number"),
            )
        })?;
        numbers.insert(id.clone(), n);
    }
    let total =
        block(&raw.total, "total", &numbers).map_err(|d| FeedError::invalid(file, "total", d))?;
    let mut zones = Vec::with_capacity(raw.zonas.0.len());
    let mut seen = std::collections::HashSet::new();
    for (zone, b) in &raw.zonas.0 {
        let at = format!("zonas.{zone}");
        if !seen.insert(zone.as_str()) {
            return Err(FeedError::invalid(file, at, "zone appears twice"));
        }
        zones.push(block(b, zone, &numbers).map_err(|d| FeedError::invalid(file, &at, d))?);
    }
    zones.sort_by(|a, b| a.zone.cmp(&b.zone));

    let votes_of: HashMap<u32, (u64, f64)> = total
        .results
        .iter()
        .map(|v| (v.number, (v.votes, v.percent)))
        .collect();
    let mut candidates: Vec<Candidate> = raw
        .candidatos
        .into_iter()
        .map(|(id, c)| {
            let number = numbers[&id];
            let (votes, percent) = votes_of.get(&number).copied().unwrap_or((0, 0.0));
            let status = status(c.eleito, c.segundo_turno, finished);
            Candidate {
                number: Some(number),
                name: c.nome_candidato,
                party: c.sigla_partido,
                coalition: None,
                votes,
                percent,
                elected: c.eleito,
                status,
                valid: true,
                color: c.cor_partido.filter(|s| !s.is_empty()),
                photo: c.thumb_candidato.filter(|s| !s.is_empty()),
            }
        })
        .collect();
    candidates.sort_by(|a, b| b.votes.cmp(&a.votes).then(a.number.cmp(&b.number)));
    Ok(ZoneBreakdown {
        round,
        source_time: iso_local(
            raw.atualizacao.data.as_deref(),
            raw.atualizacao.hora.as_deref(),
        ),
        finished,
        percent: pct,
        candidates,
        total,
        zones,
    })
}

fn block(b: &RawBlock, zone: &str, numbers: &HashMap<String, u32>) -> Result<ZoneResult, String> {
    let turnout = count(&b.total, "total")?;
    let blank = count(&b.brancos, "brancos")?;
    let null = count(&b.nulos, "nulos")?;
    let mut valid: u64 = 0;
    let mut results = Vec::with_capacity(b.candidatos.len());
    for v in &b.candidatos {
        let number = *numbers
            .get(v.id_candidato.as_str())
            .ok_or_else(|| format!("candidate {:?} is not in candidatos", v.id_candidato))?;
        let votes = count(&v.total_votos_validos, "total_votos_validos")?;
        valid = valid.checked_add(votes).ok_or("votes overflow")?;
        let pct =
            parse_decimal(&v.total_percentual).map_err(|e| format!("total_percentual: {e}"))?;
        results.push(ZoneVotes {
            number,
            votes,
            percent: pct.unwrap_or(f64::NAN),
        });
    }
    for r in &mut results {
        if r.percent.is_nan() {
            r.percent = percent(r.votes, valid);
        }
    }
    check_counted(valid, blank, null, turnout)?;
    results.sort_by(|a, b| b.votes.cmp(&a.votes).then(a.number.cmp(&b.number)));
    Ok(ZoneResult {
        zone: zone.to_string(),
        turnout,
        blank,
        null,
        valid,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r##"{
      "atualizacao": {"hora": "20:10:00", "data": "06/10/2024", "turno": 1,
                      "apuracao_total": "55,50%", "encerrado": false},
      "total": {"brancos": "10", "nulos": "5", "total": "115",
                "candidatos": [{"id_candidato": "45", "total_votos_validoss": "60", "total_percentual": "60,00%"},
                               {"id_candidato": "13", "total_votos_validoss": "40", "total_percentual": "40,00%"}]},
      "zonas": {
        "0002": {"brancos": "4", "nulos": "1", "total": "45",
                 "candidatos": [{"id_candidato": "13", "total_votos_validos": "25", "total_percentual": "62,50%"},
                                {"id_candidato": "45", "total_votos_validos": "15", "total_percentual": "37,50%"}]},
        "0001": {"brancos": "6", "nulos": "4", "total": "70",
                 "candidatos": [{"id_candidato": "45", "total_votos_validos": "45", "total_percentual": "75,00%"},
                                {"id_candidato": "13", "total_votos_validos": "15", "total_percentual": "25,00%"}]}
      },
      "candidatos": {
        "45": {"numero_candidato": "45", "nome_candidato": "ANA", "sigla_partido": "AAA", "eleito": false, "segundo_turno": false},
        "13": {"numero_candidato": "13", "nome_candidato": "BIA", "sigla_partido": "BBB", "eleito": false, "segundo_turno": false}
      }}"##;

    #[test]
    fn parses_zones_in_order_with_both_vote_spellings() {
        let z = parse(GOOD.as_bytes(), "zone.json").unwrap();
        assert_eq!(z.percent, 55.5);
        assert_eq!(z.total.valid, 100);
        assert_eq!(z.zones.len(), 2);
        assert_eq!(z.zones[0].zone, "0001");
        assert_eq!(z.zones[0].results[0].number, 45);
        assert_eq!(z.zones[0].results[0].votes, 45);
        assert_eq!(z.zones[1].results[0].number, 13);
        assert_eq!(z.candidates[0].name, "ANA");
        assert_eq!(z.candidates[0].votes, 60);
        assert_eq!(z.source_time.as_deref(), Some("2024-10-06T20:10:00"));
    }

    #[test]
    fn unknown_candidate_and_excess_votes_are_rejected() {
        let bad = GOOD.replacen(
            r#""id_candidato": "13", "total_votos_validos""#,
            r#""id_candidato": "99", "total_votos_validos""#,
            1,
        );
        let err = parse(bad.as_bytes(), "zone.json").unwrap_err();
        assert!(err.to_string().contains("zonas.0002"), "{err}");
        let bad = GOOD.replace(r#""total": "45""#, r#""total": "30""#);
        let err = parse(bad.as_bytes(), "zone.json").unwrap_err();
        assert!(err.to_string().contains("exceed"), "{err}");
        assert!(parse(&GOOD.as_bytes()[..200], "zone.json").is_err());
    }

    #[test]
    fn counts_whose_sum_overflows_are_rejected() {
        // Found writing the zones fuzz target's `votes + blank + null <= total` check: a
        // saturating sum let a sum past u64::MAX pass as equal to a total of u64::MAX.
        let bad = GOOD.replace(
            r#""brancos": "10", "nulos": "5", "total": "115""#,
            r#""brancos": "18446744073709551615", "nulos": "5", "total": "18446744073709551615""#,
        );
        assert_ne!(bad, GOOD);
        let err = parse(bad.as_bytes(), "zone.json").unwrap_err();
        assert!(err.to_string().contains("total: votes overflow"), "{err}");
    }
}
