//! `apura simulate --write DIR`: the consolidated files of one moment of the night, written to
//! a folder for `apura run` to read as recorded files.

use std::path::Path;

use anyhow::Context;

use super::{SimConfig, Simulator};
use apura_formats::model::Office;

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub tick: u64,
    pub files: usize,
}

/// The tick at `percent` of the night (0 to 100), rounded up: 100 is the final result.
pub fn tick_at(last_tick: u64, percent: f64) -> u64 {
    ((percent.clamp(0.0, 100.0) / 100.0) * last_tick as f64).ceil() as u64
}

/// Write `mayors.json`, `councillors.json`, `municipalities.json` and `zones/zone-{uf}-{slug}.json`
/// as the simulator serves them at `percent` of the night, into `dir` (made if missing).
pub fn write(config: SimConfig, dir: &Path, percent: f64) -> anyhow::Result<Snapshot> {
    let sim = Simulator::new(config);
    let tick = tick_at(sim.last_tick(), percent);
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).with_context(|| format!("creating {}", zones.display()))?;
    let mut files = vec![
        (
            "mayors.json".to_string(),
            sim.render_tick(tick, Office::Mayor),
        ),
        (
            "councillors.json".to_string(),
            sim.render_tick(tick, Office::Councillor),
        ),
        (
            "municipalities.json".to_string(),
            sim.render_municipalities(),
        ),
    ];
    for (uf, slug) in sim.zone_cities() {
        let body = sim
            .render_zone(tick, &uf, &slug)
            .expect("a city with zones");
        files.push((format!("zones/zone-{uf}-{slug}.json"), body));
    }
    for (name, body) in &files {
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Snapshot {
        tick,
        files: files.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_of_the_night_is_a_tick() {
        assert_eq!(tick_at(60, 100.0), 60);
        assert_eq!(tick_at(60, 50.0), 30);
        assert_eq!(tick_at(60, 0.0), 0);
        assert_eq!(tick_at(60, 1.0), 1);
        assert_eq!(tick_at(60, 250.0), 60);
    }
}
