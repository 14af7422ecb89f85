//! The ingest's core: what the sources accepted becomes the current results, sliced into
//! documents, diffed against what was last published, and published as whole cycles.
//!
//! It knows nothing of where results come from. A source sends [`Accepted`] items over a
//! channel: a validated file of one office (consolidated), one city race (TSE), one city whose
//! file failed validation, a batch of zone results, the end of a poll. The core decides:
//!
//! - **State.** A race of an earlier round never replaces a later one; a city dropped from a
//!   file keeps its last results; a city whose latest results failed validation is quarantined:
//!   it keeps its last good race, its documents say since when and why they are `held`, the
//!   roll-ups count its last good race, and one WARN says when it enters and when it leaves.
//! - **Diff.** City documents are sliced again only when their results change; a topic is
//!   published only when its body differs from what was last published.
//! - **Cadence.** What was accepted is published at once when nothing was published for
//!   [`PUBLISH_EVERY`], else at most that much later, and at the end of every poll: the first
//!   city of a long TSE cycle (the most watched) does not wait for the last, and a burst of
//!   cities makes one cycle a second, not one cycle per city.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::{Bus, Cycle};
use crate::documents::{self, Draft};
use crate::feed::FeedError;
use crate::feed::consolidated::ConsolidatedFeed;
use crate::feed::municipalities::MunicipalityList;
use crate::metrics::Metrics;
use crate::model::{Office, Race, TopicKind, ZoneBreakdown};

/// What a cycle accepted is published at least this often (its first race at once): a capital
/// fetched in the first second of a 10-second TSE cycle is on screen then, not 9 s later, and
/// each intermediate publication republishes only the changed cities and the few roll-ups.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// What a source hands to the core.
#[derive(Debug)]
pub enum Accepted {
    /// Validated files, each the current results of its office: its valid cities' races, its
    /// invalid cities (`invalid_cities`) to quarantine. Files of one poll come together, so
    /// they make one cycle.
    Files(Vec<(Office, ConsolidatedFeed)>),
    /// One city race, as its file says now.
    Race(Race),
    /// The results of `office` in the city `ibge`, of round `round`, failed validation.
    Invalid {
        ibge: u32,
        office: Office,
        round: u8,
        error: FeedError,
    },
    /// Zone results of some cities.
    Zones(Vec<(u32, ZoneBreakdown)>),
    /// A poll ended: publish whatever differs from what was last published.
    EndOfPoll,
}

/// A city race whose latest results failed validation.
struct Quarantined {
    /// The round of the refused results: a race of an earlier round does not release it.
    round: u8,
    held: documents::Held,
    since: Instant,
}

/// The ingest state: the latest accepted results and the last published body of every topic.
pub struct Core {
    list: Arc<MunicipalityList>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    mayors: HashMap<u32, Race>,
    councillors: HashMap<u32, Race>,
    zones: HashMap<u32, ZoneBreakdown>,
    /// Sliced city documents, kept until the city's results change: most cities do not
    /// change in a given cycle, and slicing all 17,000 documents again would cost more than
    /// parsing the file.
    sliced: HashMap<(u32, TopicKind), Draft>,
    /// The `/cities.json` index, kept until a city gains or loses a topic.
    index: Option<Draft>,
    /// Body of every topic as last published: the diff's reference.
    published: HashMap<String, Bytes>,
    /// Something was taken, or the reference changed, since a publication last left nothing
    /// to publish: the next one slices and diffs. Without it, every end of poll (each second,
    /// and right after the change it published, while the gateways write it) would build
    /// every draft and the roll-ups again only to find them all published.
    unsettled: bool,
    /// Set by [`Core::hold_for_zones`]: publish nothing until the first zone results are
    /// in, or this deadline.
    zones_hold: Option<Instant>,
    /// City races whose latest results failed validation, by city and office.
    quarantine: HashMap<(u32, Office), Quarantined>,
    /// When the last cycle went out.
    last_publication: Option<tokio::time::Instant>,
    /// What feeds this ingest, as the `brazil` document says.
    data_source: documents::DataSource,
}

impl Core {
    pub fn new(list: Arc<MunicipalityList>, bus: Arc<dyn Bus>, metrics: Arc<Metrics>) -> Self {
        Core {
            list,
            bus,
            metrics,
            mayors: HashMap::new(),
            councillors: HashMap::new(),
            zones: HashMap::new(),
            sliced: HashMap::new(),
            index: None,
            published: HashMap::new(),
            unsettled: true,
            zones_hold: None,
            quarantine: HashMap::new(),
            last_publication: None,
            data_source: documents::DataSource::default(),
        }
    }

    /// The same core, its documents saying that `source` feeds it.
    pub fn labelled(mut self, source: documents::DataSource) -> Self {
        self.data_source = source;
        self
    }

    /// Take what arrives on `rx` and publish it on the cadence above until every sender is
    /// gone; then publish what is pending. `on_change` sees the cycles of every change published. Every end of
    /// poll publishes what differs from the reference, so a publication that failed is tried
    /// again then; the last one's error is the answer.
    pub async fn follow(
        &mut self,
        rx: &mut mpsc::Receiver<Accepted>,
        mut on_change: impl FnMut(&[Arc<Cycle>]),
    ) -> anyhow::Result<()> {
        let mut pending = false;
        // Set while something waits for the cadence; cleared by a failed publication, which
        // waits for the next end of poll rather than retrying every second.
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            let wait = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let publish_now = tokio::select! {
                item = rx.recv() => match item {
                    None => break,
                    // Always: the reference of the diff may have changed without an item (a
                    // new term's store, a publication that failed).
                    Some(Accepted::EndOfPoll) => true,
                    Some(item) => {
                        self.take(item);
                        pending = true;
                        let now = tokio::time::Instant::now();
                        let at = self.last_publication.map_or(now, |t| t + PUBLISH_EVERY);
                        due = Some(due.map_or(at, |d| d.min(at)));
                        at <= now
                    }
                },
                _ = wait => true,
            };
            if publish_now {
                due = None;
                match self.publish_changes().await {
                    Ok(cycles) => {
                        pending = false;
                        if !cycles.is_empty() {
                            on_change(&cycles);
                        }
                    }
                    Err(e) => {
                        pending = true;
                        tracing::error!(error = format!("{e:#}"), "publication failed; will retry")
                    }
                }
            }
        }
        if pending {
            let cycles = self.publish_changes().await?;
            if !cycles.is_empty() {
                on_change(&cycles);
            }
        }
        Ok(())
    }

    /// Take one item into the state, publishing nothing.
    pub fn take(&mut self, item: Accepted) {
        match item {
            Accepted::Files(files) => {
                for (office, feed) in files {
                    self.accept_office(office, feed);
                }
            }
            Accepted::Race(race) => self.accept_race(race),
            Accepted::Invalid {
                ibge,
                office,
                round,
                error,
            } => self.hold(ibge, office, round, &error),
            Accepted::Zones(batch) => self.take_zones(batch),
            Accepted::EndOfPoll => {}
        }
    }

    /// On a store found empty, when this process holds no zone results (a standby that never
    /// led, or a restart): publish nothing until the first zone results are in, for at most
    /// `patience`. Otherwise the first cycle would be the state without its zone documents,
    /// and with an index that lists no zones topic, though gateways still serve them. The
    /// zone poller hands results over in batches, capitals and the largest cities first, so
    /// the rest of a round follows within seconds.
    pub fn hold_for_zones(&mut self, patience: Duration) {
        if self.zones.is_empty() {
            self.zones_hold = Some(Instant::now() + patience);
        }
    }

    /// Take what the bus already holds as the reference for the diff, so a new leader (or a
    /// restart) does not publish again documents that have not changed.
    pub async fn seed_from_bus(&mut self) -> anyhow::Result<usize> {
        let docs = self
            .bus
            .snapshot()
            .await
            .context("reading the bus snapshot")?;
        for doc in &docs {
            if let Some(body) = doc.content() {
                self.published.insert(doc.topic.to_string(), body);
            }
        }
        // The index lists what the store holds (see `drafts`): build it again.
        self.index = None;
        self.unsettled = true;
        Ok(docs.len())
    }

    /// Forget what was published, so that the next cycle publishes every document again (the
    /// store was found empty: a restarted Redis without persistence).
    pub fn forget_published(&mut self) {
        self.published.clear();
        self.index = None;
        self.unsettled = true;
    }

    /// The municipalities of this deployment.
    pub fn municipalities(&self) -> &Arc<MunicipalityList> {
        &self.list
    }

    /// The current race of `office` in the city `ibge`, as last accepted.
    pub fn race(&self, ibge: u32, office: Office) -> Option<&Race> {
        self.races(office).get(&ibge)
    }

    fn races(&self, office: Office) -> &HashMap<u32, Race> {
        match office {
            Office::Mayor => &self.mayors,
            Office::Councillor => &self.councillors,
        }
    }

    /// Take zone results: a city's zone document is sliced again only if they changed.
    fn take_zones(&mut self, batch: Vec<(u32, ZoneBreakdown)>) {
        self.zones_hold = None;
        self.unsettled = true;
        for (ibge, z) in batch {
            if self.zones.get(&ibge) != Some(&z) {
                self.sliced.remove(&(ibge, TopicKind::Zones));
                if self.zones.insert(ibge, z).is_none() {
                    self.index = None;
                }
            }
        }
    }

    /// Take zone results and publish what changed.
    pub async fn apply_zones(
        &mut self,
        batch: Vec<(u32, ZoneBreakdown)>,
    ) -> anyhow::Result<Vec<Arc<Cycle>>> {
        self.take_zones(batch);
        self.publish_changes().await
    }

    /// Take a validated feed file as the current results of `office`: its valid cities'
    /// races; its invalid cities (`invalid_cities`) are quarantined and keep their last good
    /// race.
    pub fn accept_office(&mut self, office: Office, mut feed: ConsolidatedFeed) {
        self.unsettled = true;
        let invalid = std::mem::take(&mut feed.invalid_cities);
        for (ibge, err) in &invalid {
            self.hold(*ibge, office, feed.round, err);
        }
        for race in &feed.races {
            self.release(race.ibge, office, race.round);
        }
        let invalid: HashSet<u32> = invalid.iter().map(|(ibge, _)| *ibge).collect();
        self.take_file(office, feed, &invalid);
    }

    fn take_file(&mut self, office: Office, feed: ConsolidatedFeed, invalid: &HashSet<u32>) {
        let mut races: HashMap<u32, Race> = feed.races.into_iter().map(|r| (r.ibge, r)).collect();
        let kind = office.topic_kind();
        let old = match office {
            Office::Mayor => &mut self.mayors,
            Office::Councillor => &mut self.councillors,
        };
        // A quarantined city keeps its last good race, of whatever round; so does a city whose
        // race in this file is of an earlier round than the one held (a round-1 file read
        // again after the runoff has begun).
        for ibge in invalid {
            if let Some(race) = old.get(ibge) {
                races.insert(*ibge, race.clone());
            }
        }
        let mut earlier = 0;
        for (ibge, held) in old.iter() {
            if let Some(race) = races.get_mut(ibge)
                && race.round < held.round
            {
                *race = held.clone();
                earlier += 1;
            }
        }
        if earlier > 0 {
            self.metrics.feed_error("stale");
            tracing::warn!(
                ?office,
                cities = earlier,
                round = feed.round,
                "cities of a later round keep it: the file's races of an earlier round are not taken"
            );
        }
        // A city present before and absent now keeps its last results: results are state, and
        // a provider dropping a city from one file must not delete its page. Only a city of
        // this file's round counts as missing: a round-2 file lists only the cities with a
        // runoff, and the others keep their round-1 results.
        let absent: Vec<u32> = old
            .keys()
            .filter(|ibge| !races.contains_key(ibge) && !invalid.contains(ibge))
            .copied()
            .collect();
        let missing: Vec<u32> = absent
            .iter()
            .filter(|ibge| old.get(ibge).is_some_and(|r| r.round == feed.round))
            .copied()
            .collect();
        if !missing.is_empty() {
            self.metrics.feed_error("missing_cities");
            let names: Vec<&str> = missing
                .iter()
                .take(5)
                .filter_map(|c| self.list.get(*c).map(|m| m.name.as_str()))
                .collect();
            tracing::warn!(
                ?office,
                missing = missing.len(),
                first = ?names,
                "cities absent from the new file keep their last results"
            );
        }
        for ibge in absent {
            if let Some(race) = old.get(&ibge) {
                races.insert(ibge, race.clone());
            }
        }
        for (ibge, race) in old.iter() {
            if races.get(ibge) != Some(race) {
                self.sliced.remove(&(*ibge, kind));
            }
        }
        if old.len() != races.len() || races.keys().any(|k| !old.contains_key(k)) {
            self.index = None;
        }
        *old = races;
    }

    /// Take one race as the current result of its city and office. A race of an earlier round
    /// never replaces a later one (a first-round correction after the second round has begun
    /// stays out of the documents); an equal race changes nothing but ends a quarantine.
    pub fn accept_race(&mut self, race: Race) {
        self.unsettled = true;
        let key = (race.ibge, race.office.topic_kind());
        let races = match race.office {
            Office::Mayor => &mut self.mayors,
            Office::Councillor => &mut self.councillors,
        };
        match races.get(&race.ibge) {
            Some(old) if old.round > race.round => return,
            // An older copy of the city's file (a cache serving it late): the results it
            // holds were already replaced, and must not come back.
            Some(old)
                if old.round == race.round
                    && matches!((&race.source_time, &old.source_time), (Some(new), Some(held)) if new < held) =>
            {
                self.metrics.feed_error("stale");
                tracing::debug!(ibge = race.ibge, office = ?race.office, "an older copy of a city's file; not taken");
                return;
            }
            Some(old) if *old == race => {
                self.release(race.ibge, race.office, race.round);
                return;
            }
            Some(_) => {}
            None => self.index = None,
        }
        self.sliced.remove(&key);
        let (ibge, office, round) = (race.ibge, race.office, race.round);
        races.insert(ibge, race);
        self.release(ibge, office, round);
    }

    /// The results of `office` in the city `ibge`, of round `round`, failed validation (`err`):
    /// quarantine the city, which keeps its last good race, if it has one, marked as held.
    /// Logged when the city enters; counted every time, by reason.
    pub fn hold(&mut self, ibge: u32, office: Office, round: u8, err: &FeedError) {
        let reason = err.reason();
        self.metrics.city_rejected(reason);
        self.unsettled = true;
        let key = (ibge, office);
        let kind = office.topic_kind();
        if let Some(q) = self.quarantine.get_mut(&key) {
            q.round = q.round.max(round);
            // A new reason is worth republishing; the same reason with another value is not.
            if q.held.reason != reason {
                q.held.reason = reason.to_string();
                q.held.detail = err.what();
                self.sliced.remove(&(ibge, kind));
            }
            tracing::debug!(ibge, ?office, error = %err, "quarantined city still invalid");
            return;
        }
        let name = self.list.get(ibge).map_or("", |m| m.name.as_str());
        let has_race = self.race(ibge, office).is_some();
        tracing::warn!(
            city = %name,
            ibge,
            ?office,
            reason,
            error = %err,
            "city quarantined: {}",
            if has_race {
                "its last good documents stay current, marked as held"
            } else {
                "never valid yet, it is not published until it is"
            }
        );
        self.quarantine.insert(
            key,
            Quarantined {
                round,
                held: documents::Held {
                    since: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                        .to_string(),
                    reason: reason.to_string(),
                    detail: err.what(),
                },
                since: Instant::now(),
            },
        );
        self.sliced.remove(&(ibge, kind));
        self.count_quarantined();
    }

    /// Valid results of round `round` came for `office` in the city `ibge`: end its quarantine
    /// (not for an earlier round than the one refused).
    fn release(&mut self, ibge: u32, office: Office, round: u8) {
        let key = (ibge, office);
        let Some(q) = self.quarantine.get(&key) else {
            return;
        };
        if round < q.round {
            return;
        }
        let since = q.since;
        self.quarantine.remove(&key);
        let name = self.list.get(ibge).map_or("", |m| m.name.as_str());
        tracing::warn!(
            city = %name,
            ibge,
            ?office,
            held_for = ?since.elapsed(),
            "city out of quarantine: its documents follow the feed again"
        );
        self.sliced.remove(&(ibge, office.topic_kind()));
        self.count_quarantined();
    }

    fn count_quarantined(&self) {
        let cities: HashSet<u32> = self.quarantine.keys().map(|(ibge, _)| *ibge).collect();
        self.metrics
            .quarantined_cities
            .store(cities.len() as i64, Relaxed);
    }

    /// The quarantine of `office` in the city `ibge`, if it is quarantined: since when and why.
    pub fn held(&self, ibge: u32, office: Office) -> Option<&documents::Held> {
        self.quarantine.get(&(ibge, office)).map(|q| &q.held)
    }

    /// Every current document, built from the accepted results; none before the first results
    /// (an index of cities without results is no reason for a gateway to be ready).
    pub fn drafts(&mut self) -> Vec<Draft> {
        if self.mayors.is_empty() && self.councillors.is_empty() && self.zones.is_empty() {
            return Vec::new();
        }
        let mut drafts = Vec::with_capacity(self.mayors.len() * 2 + self.zones.len() + 30);
        let quarantine = &self.quarantine;
        let held = |ibge, office| quarantine.get(&(ibge, office)).map(|q| &q.held);
        for m in self.list.iter() {
            let key = |kind| (m.ibge, kind);
            if let Some(r) = self.mayors.get(&m.ibge) {
                let d = self
                    .sliced
                    .entry(key(TopicKind::Mayors))
                    .or_insert_with(|| documents::city_held(m, r, held(m.ibge, Office::Mayor)));
                drafts.push(d.clone());
            }
            if let Some(r) = self.councillors.get(&m.ibge) {
                let d = self
                    .sliced
                    .entry(key(TopicKind::Councillors))
                    .or_insert_with(|| {
                        documents::city_held(m, r, held(m.ibge, Office::Councillor))
                    });
                drafts.push(d.clone());
            }
            if let Some(z) = self.zones.get(&m.ibge) {
                let d = self
                    .sliced
                    .entry(key(TopicKind::Zones))
                    .or_insert_with(|| documents::zones(m, z));
                drafts.push(d.clone());
            }
        }
        if !self.mayors.is_empty() {
            drafts.extend(documents::rollups_held(
                &self.list,
                &self.mayors,
                self.data_source,
                |ibge| quarantine.contains_key(&(ibge, Office::Mayor)),
            ));
        }
        let (list, mayors, councillors, zones, published) = (
            &self.list,
            &self.mayors,
            &self.councillors,
            &self.zones,
            &self.published,
        );
        // A topic is listed while this process has its results, and also while the store holds
        // its document: a new leader has the mayor and councillor files after its first poll,
        // but the zone files only after its first zone round, and meanwhile the zone documents
        // its predecessor published are still served; an index without them would tell clients
        // they are gone, then come back a zone round later.
        let index = self.index.get_or_insert_with(|| {
            documents::index(list, |m, kind| {
                let held = match kind {
                    TopicKind::Mayors => mayors.contains_key(&m.ibge),
                    TopicKind::Councillors => councillors.contains_key(&m.ibge),
                    TopicKind::Zones => zones.contains_key(&m.ibge),
                };
                held || published.contains_key(&m.topic(kind))
            })
        });
        drafts.push(index.clone());
        drafts
    }

    /// The current documents whose body differs from what was last published: slice and diff.
    pub fn changed(&mut self) -> Vec<Draft> {
        let drafts = self.drafts();
        drafts
            .into_iter()
            .filter(|d| {
                !self
                    .published
                    .get(&d.topic)
                    .is_some_and(|p| same_bytes(p, &d.body))
            })
            .collect()
    }

    /// Make `drafts` the diff's reference, once they are published. A topic published before
    /// keeps its key: no copy of its name per topic and change.
    pub fn mark_published(&mut self, drafts: &[Draft]) {
        for d in drafts {
            match self.published.get_mut(&d.topic) {
                Some(body) => *body = d.body.clone(),
                None => {
                    self.published.insert(d.topic.clone(), d.body.clone());
                }
            }
        }
    }

    /// Publish every document that changed since the last publication (none while held for
    /// the first zone results): as one cycle when it fits in [`CYCLE_BYTES`] or is the first
    /// publication (of the process, or of a new term), else as consecutive cycles of at most
    /// that much, the most watched documents first (see
    /// [`publication_order`]), all stamped with the time the first went out. Answers the
    /// cycles published. Each cycle that was published becomes the diff's reference as soon
    /// as it is, so a failure part way leaves the rest for the next try, and loses nothing.
    pub async fn publish_changes(&mut self) -> anyhow::Result<Vec<Arc<Cycle>>> {
        if let Some(until) = self.zones_hold {
            if Instant::now() < until {
                return Ok(Vec::new());
            }
            tracing::warn!("no zone round in time; publishing without zone documents");
            self.zones_hold = None;
        }
        if !self.unsettled {
            self.metrics.cycles_unchanged.fetch_add(1, Relaxed);
            return Ok(Vec::new());
        }
        let mut changed = self.changed();
        if changed.is_empty() {
            self.unsettled = false;
            self.metrics.cycles_unchanged.fetch_add(1, Relaxed);
            return Ok(Vec::new());
        }
        publication_order(&mut changed, &self.list);
        let published_at = crate::bus::now_millis();
        // The first publication of a term goes out whole: a gateway that was waiting turns
        // ready on the first cycle it holds, and must then hold every topic and the index.
        let limit = if self.published.is_empty() {
            usize::MAX
        } else {
            CYCLE_BYTES
        };
        let mut cycles = Vec::new();
        for part in parts(changed, limit) {
            let started = std::time::Instant::now();
            let published = self.bus.publish_at(part.clone(), published_at).await;
            self.metrics
                .bus_call("publish", started.elapsed(), published.is_ok());
            let cycle = published.with_context(|| {
                format!(
                    "publishing a cycle ({} of this change's cycles were published)",
                    cycles.len()
                )
            })?;
            // Only a published cycle becomes the diff's reference: a failed one is retried.
            self.mark_published(&part);
            self.last_publication = Some(tokio::time::Instant::now());
            self.metrics.cycles_published.fetch_add(1, Relaxed);
            self.metrics
                .documents_published
                .fetch_add(cycle.documents.len() as u64, Relaxed);
            self.metrics.saw_published_at(cycle.published_at);
            cycles.push(cycle);
        }
        // Every part is published: the reference is the documents, until something is taken.
        self.unsettled = false;
        Ok(cycles)
    }
}

/// Largest cycle the ingest publishes, in bytes of document bodies; a larger change goes out as
/// consecutive cycles of at most this much (one document larger than this is a cycle alone).
/// Each cycle travels whole on the Redis channel, so a gateway applies and sends the first
/// documents of a change while the rest are still being written, instead of reading the whole
/// change back from Redis once it is written: with 19,000 subscribers on one gateway, the first
/// delivery of a change of every mayor (5,570 documents, 6 MB) went from 60 ms to 6 ms, and
/// no gateway sends an `MGET` on the way (BENCHMARKS.md, "A large change in cycles of 256
/// KiB"). Smaller cycles cost a round trip each (19 of ~2.4 ms for that change, against one of
/// 28 ms for it whole).
pub const CYCLE_BYTES: usize = 256 * 1024;

/// The order in which a change is published: the roll-ups first (the national and state
/// totals, on most screens), then the capitals' documents, then every other city in the list's
/// order, then the rest (the index of cities, large and rarely changed).
fn publication_order(drafts: &mut [Draft], list: &MunicipalityList) {
    let capitals: HashSet<String> = list
        .iter()
        .filter(|m| m.capital)
        .flat_map(|m| {
            [TopicKind::Mayors, TopicKind::Councillors, TopicKind::Zones].map(|k| m.topic(k))
        })
        .collect();
    drafts.sort_by_cached_key(|d| {
        let topic = d.topic.as_str();
        if topic == "brazil" || topic.starts_with("state-") {
            0u8
        } else if capitals.contains(topic) {
            1
        } else if ["mayors-", "councillors-", "zones-"]
            .iter()
            .any(|p| topic.starts_with(p))
        {
            2
        } else {
            3
        }
    });
}

/// `drafts` cut, in order, into runs of at most `limit` bytes of bodies (a run holds at least
/// one draft).
fn parts(drafts: Vec<Draft>, limit: usize) -> Vec<Vec<Draft>> {
    let mut out: Vec<Vec<Draft>> = Vec::new();
    let mut size = 0;
    for d in drafts {
        let len = d.topic.len() + d.body.len();
        match out.last_mut() {
            Some(last) if size + len <= limit => {
                size += len;
                last.push(d);
            }
            _ => {
                size = len;
                out.push(vec![d]);
            }
        }
    }
    out
}

/// Equal bodies, answered without reading them when both are the same buffer (a cached slice).
fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

#[cfg(test)]
mod tests;
