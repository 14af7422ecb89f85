//! The Redis bus: snapshot keys, one pub/sub channel of whole cycles, and the ingest leader lock.
//!
//! Everything apura keeps in Redis is built by the key functions of [`Keys`], under a prefix
//! (`apura` by default) so that several deployments or test runs can share one server:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `apura:seq` | string (integer) | the global version sequence, `INCR`ed once per cycle |
//! | `apura:doc:{topic}` | string | the latest document of a topic, stamped JSON, as served |
//! | `apura:topics` | hash | topic → version of its latest document: the snapshot index, no `SCAN` |
//! | `apura:leader` | string, with expiry | the ingest leader lock: the holder's token |
//! | `apura:cycles` | pub/sub channel | every cycle, whole (see [`RedisBus`] for the message) |
//! | `apura:audience` | hash | gateway token → its most-subscribed topics and when it said so |
//!
//! A cycle is written by one `MULTI`/`EXEC` transaction (the documents, the index and the
//! `PUBLISH`), which Redis runs as a unit: no reader ever sees half a cycle. The transaction is
//! sent after a `WATCH` of the lock and the version script's check that it holds this process's
//! token, and Redis
//! refuses the `EXEC` if the lock changed in between, so an ingest that lost the lock (paused,
//! partitioned, slow) can never publish over its successor: the lock's expiry is a liveness
//! device, the fencing of every write is what makes duplicates impossible.
//!
//! # Why one channel
//!
//! Every gateway needs every topic: GET never touches Redis, so a gateway must hold all ~17,000
//! documents whatever its own clients ask for. One channel for all cycles then costs one
//! `PUBLISH` per cycle and one subscription per gateway, and a cycle arrives as a unit, in version
//! order. The alternatives all pay per topic for nothing:
//!
//! - one channel per topic: 17,000 `SUBSCRIBE`s per gateway (17,000 × N entries in Redis), a
//!   cycle of K changed topics becomes K `PUBLISH`es and K × N messages each with its own framing,
//!   and a cycle no longer reaches a gateway as one unit (a disconnect can cut it in two);
//! - pattern subscriptions (`PSUBSCRIBE apura:doc:*`): Redis matches every published message
//!   against every pattern of every client, so K messages × N gateways glob matches per cycle;
//! - sharded pub/sub (`SSUBSCRIBE`, Redis 7): spreads channels over the slots of a cluster, which
//!   only helps when subscribers want a subset; every gateway would subscribe on every shard, and
//!   a cycle could no longer be written and announced by one transaction.
//!
//! Measured with `loadtest/redis-channels.sh` (redis-server 7 on a shared 2-core machine,
//! cycles of 3,000 documents of 1 KB, the same bytes sent to Redis in every layout), Redis CPU
//! per cycle: with 4 subscribers 6–8 ms on one channel, 11 ms on per-topic channels, 18–23 ms
//! with patterns; with 8 subscribers 11, 31 and 50 ms. Per-topic channels also take 2.5 MB of
//! Redis memory and ~11 ms of Redis CPU per gateway for each (re)subscription to 17,000
//! channels, which every gateway repeats at once when Redis comes back.

mod audience;
mod codec;
mod keys;
mod lock;
mod scripts;
mod server;
mod subscriber;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::ConnectionManagerConfig;
use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::{Bus, BusEvent, Cycle, Document, now_millis};
use crate::documents::Draft;
use crate::metrics::Metrics;
use codec::{encode, stamped};
pub use keys::{DEFAULT_PREFIX, Keys, check_options, redacted};
pub use lock::Renewal;
use scripts::{ACQUIRE_LUA, CONTINUE_LUA, NEXT_VERSION_LUA, RELEASE_LUA, RENEW_LUA};
use server::Commands;
pub use server::Server;
use subscriber::{follow_channel, open_subscription};

/// Timeout of one command. The largest is the first cycle's publish: ~17,000 documents, tens of
/// MB, which loopback or a LAN carries in well under a second and Redis applies in tens of ms;
/// 5 s leaves room on a loaded host and still reports an outage within one 10 s poll interval.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one connection attempt: a reachable Redis answers in milliseconds.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys per `MGET` when loading documents. At ~2 KB a city document, 1,000 keys is a ~2 MB
/// reply: the 17,000-topic snapshot takes 17 round trips, and no single reply holds Redis'
/// one thread for more than a few milliseconds.
const MGET_BATCH: usize = 1_000;
/// Largest cycle sent inline on the channel. Redis disconnects a subscriber whose output buffer
/// passes 32 MB, or stays above 8 MB for 60 s (`client-output-buffer-limit pubsub 32mb 8mb 60`);
/// at 4 MiB a gateway a message behind stays under the soft limit. The ingest's cycles are at
/// most 256 KiB (`crate::ingest::core::CYCLE_BYTES`: a larger change goes out as several
/// cycles), so they travel inline; a bigger cycle (the first publication of an ingest, which
/// goes out whole) is announced by its list of topics (~40 bytes each) and
/// every gateway reads those documents with `MGET`: ordinary replies, fetched in batches, with
/// no output limit. Sending a 6 MB cycle inline whole was measured slower than that, and the
/// bulk read slower than the same documents in 256 KiB cycles (BENCHMARKS.md, "Where a cycle's
/// time goes").
pub(super) const INLINE_CYCLE_LIMIT: usize = 4 * 1024 * 1024;
/// Events buffered for a slow subscriber before it is told to resync: a change of every city
/// comes as dozens of cycles of at most 256 KiB in a burst (a tick of every mayor is 25),
/// which a gateway applies in well under a millisecond each; 256 of them is at most 64 MiB
/// held, and a gateway that falls further behind than that reloads the snapshots instead.
const SUBSCRIBER_CAPACITY: usize = 256;
/// First delay before reconnecting the subscription; doubled on every failure.
pub(super) const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest delay between reconnection attempts: a restarted Redis is picked up within 2 s, and
/// 2 s between attempts is no load on a server that is coming back.
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Attempts of a read that failed on a lost connection, [`BACKOFF_START`] apart, then four
/// times that: 3 attempts span 250 ms, time for the connection manager to reconnect.
const RETRY_ATTEMPTS: usize = 3;

/// The bus and store on Redis.
///
/// Cycles go out on one channel, [`Keys::cycles`], as one binary message each, so a gateway
/// slices documents out of it without parsing any JSON: kind (1 byte), version (u64),
/// published_at (i64), count (u32), then for each document its topic and its JSON, each as a
/// u32 length and the bytes (all big-endian). A cycle over 4 MiB (`INLINE_CYCLE_LIMIT`) goes
/// out as its list of topics instead (kind 2), and subscribers read those documents from their
/// keys.
///
/// Commands go through a [`redis::aio::ConnectionManager`], which reconnects by itself (to the
/// new primary after a Sentinel failover: see [`Server`]); the subscription has its own
/// connection in a task with its own reconnect loop, and tells the subscriber to resync after
/// every reconnect: that is how what changed during an outage reaches the gateways.
pub struct RedisBus {
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    commands: Commands,
    keys: Keys,
    /// This process's identity in the leader lock.
    token: String,
    /// The highest version this process has seen: allocated, read in a snapshot, or read from
    /// the sequence. The floor of the sequence should Redis come back empty.
    highest: AtomicU64,
    metrics: Arc<Metrics>,
    /// The connection of [`write_cycle`], opened on first use and dropped when a write fails.
    writer: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    acquire: Script,
    renew: Script,
    release: Script,
    continue_sequence: Script,
}

impl RedisBus {
    /// Connect to `url` and use keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        Self::connect_to(Server::open(url, None)?, prefix, metrics).await
    }

    /// Connect to `server` and use keys under `prefix`.
    pub async fn connect_to(
        server: Server,
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(Self::with(
            Commands::connect(server).await?,
            prefix,
            metrics,
        ))
    }

    /// A bus on `server` that connects on first use: what a gateway needs, which must answer
    /// (503 until it is ready) whether Redis is up or not. Fails only on an invalid URL; a
    /// Redis that cannot be reached makes [`Bus::subscribe`] and [`Bus::snapshot`] fail, and
    /// they connect again when called again.
    pub fn connect_lazy(
        server: Server,
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(Self::with(Commands::lazy(server)?, prefix, metrics))
    }

    fn with(commands: Commands, prefix: &str, metrics: Arc<Metrics>) -> Self {
        let token = format!(
            "{}-{}-{:016x}",
            hostname(),
            std::process::id(),
            rand::random::<u64>()
        );
        RedisBus {
            shared: Arc::new(Shared {
                commands,
                keys: Keys::new(prefix),
                token,
                highest: AtomicU64::new(0),
                metrics,
                writer: tokio::sync::Mutex::new(None),
                acquire: Script::new(ACQUIRE_LUA),
                renew: Script::new(RENEW_LUA),
                release: Script::new(RELEASE_LUA),
                continue_sequence: Script::new(CONTINUE_LUA),
            }),
        }
    }

    /// The key names in use.
    pub fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    /// This process's value in the leader lock.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The highest version this process has allocated or read.
    pub fn highest_version(&self) -> u64 {
        self.shared.highest.load(Relaxed)
    }
    /// How many times Redis Sentinel moved the primary under this process.
    pub fn failovers(&self) -> u64 {
        self.shared.commands.failovers()
    }

    pub(super) fn saw(&self, version: u64) {
        self.shared.highest.fetch_max(version, Relaxed);
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish_at(
        &self,
        drafts: Vec<Draft>,
        published_at: i64,
    ) -> anyhow::Result<Arc<Cycle>> {
        let cycle = write_cycle(&self.shared, drafts, published_at).await?;
        Ok(Arc::new(cycle))
    }

    async fn snapshot(&self) -> anyhow::Result<Vec<Document>> {
        let docs = with_retry(|| async {
            let commands = &self.shared.commands;
            let mut con = commands.connection().await?;
            let topics: Vec<String> = commands.check(con.hkeys(self.shared.keys.topics()).await)?;
            read_documents(&self.shared, &topics).await
        })
        .await
        .context("reading the snapshot")?;
        if let Some(max) = docs.iter().map(|d| d.version).max() {
            self.saw(max);
        }
        Ok(docs)
    }

    async fn subscribe(&self) -> anyhow::Result<BoxStream<'static, BusEvent>> {
        // Subscribed before returning, so that nothing published after this call is missed by a
        // caller that reads the snapshot next.
        let pubsub = open_subscription(&self.shared).await.with_context(|| {
            format!(
                "subscribing to the cycles channel on Redis at {}",
                self.shared.commands.server().shown()
            )
        })?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let span = tracing::info_span!("bus_subscription", channel = %self.shared.keys.cycles());
        tokio::spawn(follow_channel(self.shared.clone(), pubsub, tx).instrument(span));
        Ok(ReceiverStream::new(rx).boxed())
    }

    async fn report_audience(&self, top: &[(Arc<str>, u64)]) -> anyhow::Result<()> {
        let value = audience::encode(now_millis(), top);
        let commands = &self.shared.commands;
        let mut con = commands.connection().await?;
        let () = commands.check(
            con.hset(self.shared.keys.audience(), &self.shared.token, value)
                .await,
        )?;
        Ok(())
    }

    async fn audience(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let commands = &self.shared.commands;
        let mut con = commands.connection().await?;
        let key = self.shared.keys.audience();
        let all: Vec<(String, Vec<u8>)> = commands.check(con.hgetall(&key).await)?;
        let (live, gone) = audience::live(now_millis(), all);
        if !gone.is_empty() {
            // A gateway that stopped reporting (stopped, crashed): its entry is dropped here,
            // by whoever reads, so the hash never grows with restarts.
            let _: redis::RedisResult<i64> = con.hdel(&key, &gone).await;
        }
        Ok(super::sum_audience(live.iter().map(Vec::as_slice)))
    }
}
/// Times a cycle's write is tried again when its `EXEC` was aborted while the lock is still
/// this process's: the lock's own renewal (a `PEXPIRE` of the watched key, every third of a
/// ttl) touched it between the `WATCH` and the `EXEC`.
const WRITE_ATTEMPTS: usize = 3;

/// Take the next version and write a cycle under it, fenced by the leader lock: the
/// documents, the index and the `PUBLISH` in one `MULTI`/`EXEC`, which Redis runs as a unit.
/// The lock is `WATCH`ed first, then the version script checks that it holds this process's
/// token (in the same round trip): if the lock changes after the check, Redis refuses the
/// `EXEC` and nothing is written; if it changed before, the script refuses and nothing is sent.
/// So a process that lost the lock writes nothing. A Lua script could check and write in one
/// step, but Redis takes a seventh of the time this way for a cycle of every mayor document
/// (3 ms against 22: Lua's cost is taking 16,700 arguments; BENCHMARKS.md, "Where a cycle's
/// time goes").
///
/// A `WATCH` holds only on the connection that sent it, so the write has a connection of its
/// own that never reconnects by itself: one that broke after the `WATCH` fails the `EXEC`
/// instead of sending it unwatched on a new connection. A failed write drops the connection;
/// the next write opens a new one (on the current primary, under Sentinel). A version taken by
/// a write that then fails is never used: versions only need to increase, not to be
/// contiguous.
async fn write_cycle(
    shared: &Shared,
    drafts: Vec<Draft>,
    published_at: i64,
) -> anyhow::Result<Cycle> {
    let keys = &shared.keys;
    let mut writer = shared.writer.lock().await;
    let outcome = async {
        if writer.is_none() {
            let client = shared.commands.primary().await?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT));
            *writer = Some(
                shared.commands.check(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await,
                )?,
            );
        }
        let con = writer.as_mut().expect("just opened");
        let (_, version): ((), u64) = shared.commands.check(
            redis::pipe()
                .cmd("WATCH")
                .arg(keys.leader())
                .cmd("EVAL")
                .arg(NEXT_VERSION_LUA)
                .arg(2)
                .arg(keys.leader())
                .arg(keys.sequence())
                .arg(&shared.token)
                .arg(shared.highest.load(Relaxed))
                .query_async(con)
                .await,
        )?;
        shared.highest.fetch_max(version, Relaxed);
        let documents: Vec<Document> = drafts
            .iter()
            .map(|d| Document::stamp(d, version, published_at))
            .collect();
        drop(drafts);
        let message = encode(version, published_at, &documents, INLINE_CYCLE_LIMIT);
        let mut docs = redis::cmd("MSET");
        let mut index = redis::cmd("HSET");
        index.arg(keys.topics());
        for doc in &documents {
            docs.arg(keys.document(&doc.topic)).arg(&doc.json[..]);
            index.arg(&*doc.topic).arg(version);
        }
        let mut tx = redis::pipe();
        tx.atomic();
        if !documents.is_empty() {
            tx.add_command(docs).ignore().add_command(index).ignore();
        }
        tx.cmd("PUBLISH")
            .arg(keys.cycles())
            .arg(&message[..])
            .ignore();
        let cycle = Cycle {
            version,
            published_at,
            documents,
        };
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                // The lock changed since the last `WATCH`: watch it again, and go on only if
                // it is still ours (the change was our own renewal).
                let (_, holder): ((), Option<String>) = shared.commands.check(
                    redis::pipe()
                        .cmd("WATCH")
                        .arg(keys.leader())
                        .cmd("GET")
                        .arg(keys.leader())
                        .query_async(con)
                        .await,
                )?;
                if holder.as_deref() != Some(shared.token.as_str()) {
                    let _: () = shared
                        .commands
                        .check(redis::cmd("UNWATCH").query_async(con).await)?;
                    return Ok(Written::Fenced);
                }
            }
            let done: Option<()> = shared.commands.check(tx.query_async(con).await)?;
            if done.is_some() {
                return Ok(Written::Yes(cycle));
            }
        }
        Ok::<_, redis::RedisError>(Written::Aborted)
    }
    .await;
    match outcome {
        Ok(Written::Yes(cycle)) => Ok(cycle),
        Ok(Written::Fenced) => Err(fenced_error()),
        Ok(Written::Aborted) => anyhow::bail!(
            "the leader lock kept changing during the write ({WRITE_ATTEMPTS} attempts); nothing was written"
        ),
        Err(e) => {
            *writer = None;
            Err(fenced(e))
        }
    }
    .context("writing the cycle to Redis")
}

/// How [`write_cycle`] ended.
enum Written {
    Yes(Cycle),
    /// The lock is not this process's.
    Fenced,
    /// Every `EXEC` was refused.
    Aborted,
}

/// A write refused because the lock is not this process's.
fn fenced_error() -> anyhow::Error {
    anyhow::anyhow!("fenced: this process does not hold the leader lock")
}

/// The lock check inside the scripts, as an error that says what happened.
pub(super) fn fenced(e: redis::RedisError) -> anyhow::Error {
    if e.to_string().contains("FENCED") {
        fenced_error()
    } else {
        e.into()
    }
}

/// Run `attempt` again, after a pause, when it failed on a lost connection: the
/// [`redis::aio::ConnectionManager`] reconnects in the background but fails the first command after an
/// outage, and a gateway resyncing right after Redis came back must not give up on that one.
pub(super) async fn with_retry<T, F, Fut>(mut attempt: F) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let mut pause = BACKOFF_START;
    for _ in 1..RETRY_ATTEMPTS {
        match attempt().await {
            Err(e)
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.code() == Some("READONLY") =>
            {
                tracing::debug!(error = %e, "Redis command failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            done => return done,
        }
    }
    attempt().await
}

/// The documents of `topics`, read in batches; topics without a readable document are skipped.
pub(super) async fn read_documents(
    shared: &Shared,
    topics: &[impl AsRef<str>],
) -> redis::RedisResult<Vec<Document>> {
    let mut con = shared.commands.connection().await?;
    let mut docs = Vec::with_capacity(topics.len());
    for batch in topics.chunks(MGET_BATCH) {
        let keys: Vec<String> = batch
            .iter()
            .map(|t| shared.keys.document(t.as_ref()))
            .collect();
        let values: Vec<Option<Bytes>> = shared
            .commands
            .check(redis::cmd("MGET").arg(&keys).query_async(&mut con).await)?;
        for (topic, value) in batch.iter().zip(values) {
            let Some(json) = value else { continue };
            match stamped(topic.as_ref(), json) {
                Some(doc) => docs.push(doc),
                None => tracing::warn!(
                    topic = topic.as_ref(),
                    "unreadable document in Redis; skipped"
                ),
            }
        }
    }
    Ok(docs)
}

/// Timeouts and reconnection backoff of the command connection.
pub(super) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_max_delay(BACKOFF_CAP)
}

/// The host name, for a lock token a person can trace back to a process.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ingest".to_string())
}
