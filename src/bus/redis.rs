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
//!
//! A cycle is written by one Lua script (the documents, the index and the `PUBLISH`), which Redis
//! runs atomically: no reader ever sees half a cycle. The same script first compares the lock
//! with this process's token and refuses to write otherwise, so an ingest that lost the lock
//! (paused, partitioned, slow) can never publish over its successor: the lock's expiry is a
//! liveness device, the fencing inside the script is what makes duplicates impossible.
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
//!   a cycle could no longer be written and announced by one atomic script.
//!
//! Measured with `loadtest/redis-channels.sh` (redis-server 7 on a shared 2-core machine,
//! cycles of 3,000 documents of 1 KB, the same bytes sent to Redis in every layout), Redis CPU
//! per cycle: with 4 subscribers 6–8 ms on one channel, 11 ms on per-topic channels, 18–23 ms
//! with patterns; with 8 subscribers 11, 31 and 50 ms. Per-topic channels also take 2.5 MB of
//! Redis memory and ~11 ms of Redis CPU per gateway for each (re)subscription to 17,000
//! channels, which every gateway repeats at once when Redis comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::{Bus, BusEvent, Cycle, Document, now_millis};
use crate::documents::Draft;
use crate::metrics::Metrics;

/// The key prefix when none is given.
pub const DEFAULT_PREFIX: &str = "apura";

/// Timeout of one command. The largest is the first cycle's publish: ~17,000 documents, tens of
/// MB, which loopback or a LAN carries in well under a second and the script applies in ~50 ms;
/// 5 s leaves room on a loaded host and still reports an outage within one 10 s poll interval.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one connection attempt: a reachable Redis answers in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys per `MGET` when loading documents. At ~2 KB a city document, 1,000 keys is a ~2 MB
/// reply: the 17,000-topic snapshot takes 17 round trips, and no single reply holds Redis'
/// one thread for more than a few milliseconds.
const MGET_BATCH: usize = 1_000;
/// Largest cycle sent inline on the channel. Redis disconnects a subscriber whose output buffer
/// passes 32 MB, or stays above 8 MB for 60 s (`client-output-buffer-limit pubsub 32mb 8mb 60`);
/// at 4 MiB a gateway a message behind stays under the soft limit. A bigger cycle (the first
/// one: ~17,000 documents, tens of MB; early count night when every city moves) is announced by
/// its list of topics (~40 bytes each, < 1 MB for all of them) and every gateway reads those
/// documents with `MGET`: ordinary replies, fetched in batches, with no output limit.
const INLINE_CYCLE_LIMIT: usize = 4 * 1024 * 1024;
/// Events buffered for a slow subscriber before it is told to resync, as on the embedded bus:
/// a cycle comes every few seconds and a gateway applies one in microseconds.
const SUBSCRIBER_CAPACITY: usize = 64;
/// First delay before reconnecting the subscription; doubled on every failure.
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest delay between reconnection attempts: a restarted Redis is picked up within 2 s, and
/// 2 s between attempts is no load on a server that is coming back.
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// How often the subscription connection is pinged. A closed connection is noticed at once; a
/// silently dead one (a cut network, no FIN or RST) within this interval plus [`PING_TIMEOUT`].
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may take before the subscription connection is considered dead.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of a read that failed on a lost connection, [`BACKOFF_START`] apart, then four
/// times that: 3 attempts span 250 ms, time for the connection manager to reconnect.
const RETRY_ATTEMPTS: usize = 3;

/// Message kinds on the cycles channel: the first byte of every message.
const KIND_CYCLE: u8 = 1;
const KIND_CHANGED: u8 = 2;
const KIND_RESYNC: u8 = 3;
/// Kind, version (u64) and publication time (i64), big-endian.
const MESSAGE_HEADER: usize = 1 + 8 + 8;

/// The names of everything apura keeps in Redis, under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `apura:seq`: the global version sequence.
    pub fn sequence(&self) -> String {
        format!("{}:seq", self.prefix)
    }

    /// `apura:doc:{topic}`: the latest document of a topic.
    pub fn document(&self, topic: &str) -> String {
        format!("{}:doc:{topic}", self.prefix)
    }

    /// `apura:topics`: hash of topic → version, the snapshot index.
    pub fn topics(&self) -> String {
        format!("{}:topics", self.prefix)
    }

    /// `apura:leader`: the ingest leader lock.
    pub fn leader(&self) -> String {
        format!("{}:leader", self.prefix)
    }

    /// `apura:cycles`: the pub/sub channel of every cycle.
    pub fn cycles(&self) -> String {
        format!("{}:cycles", self.prefix)
    }
}

/// Every problem with a Redis URL and key prefix, reported at once.
pub fn check_options(url: &str, prefix: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = redis::Client::open(url) {
        problems.push(format!("--redis {url:?}: {e}"));
    }
    if prefix.is_empty() || prefix.contains(char::is_whitespace) {
        problems.push(format!(
            "--redis-prefix {prefix:?} must be non-empty, without spaces"
        ));
    }
    problems
}

/// Write a cycle, fenced by the leader lock. KEYS: leader, topics index, then one document key
/// per document. ARGV: token, channel, message, version, then topic and JSON of each document.
const PUBLISH_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this process does not hold the leader lock')
end
for i = 1, #KEYS - 2 do
  redis.call('SET', KEYS[i + 2], ARGV[4 + 2 * i])
  redis.call('HSET', KEYS[2], ARGV[3 + 2 * i], ARGV[4])
end
return redis.call('PUBLISH', ARGV[2], ARGV[3])
"#;

/// Take the next version, fenced by the lock like the write itself: a process that lost the
/// lock cannot even create the sequence in a Redis that came back empty (the new leader starts
/// it, above every version gateways may hold). KEYS: leader, sequence. ARGV: token.
const NEXT_VERSION_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this process does not hold the leader lock')
end
return redis.call('INCR', KEYS[2])
"#;

/// Take the lock if it is free, or extend it if it is already ours (after a blip, without
/// waiting for it to expire); in both cases answer the current sequence, so a standby knows how
/// far versions went. KEYS: leader, sequence. ARGV: token, ttl in ms.
const ACQUIRE_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
local won = 0
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  won = 1
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  won = 1
end
return {won, tonumber(redis.call('GET', KEYS[2]) or '0')}
"#;

/// Extend the lock only if it is ours: 1 held, 0 lost, -1 ours but the sequence is gone (the
/// store was emptied under us). KEYS: leader, sequence. ARGV: token, ttl in ms.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Delete the lock only if it is ours. KEYS: leader. ARGV: token.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Raise the sequence to at least ARGV[2], fenced by the lock; answers the sequence before, or
/// -1 if it did not exist. A missing sequence starts at the server's Unix time in milliseconds,
/// not at 1: should Redis lose its data while every ingest restarts too (no process remembers
/// the versions gateways hold), versions still continue above them, as long as cycles averaged
/// fewer than a thousand a second (there is one per 10 s poll, plus zone cycles every 60 s).
/// The clock also covers a standby that takes over an emptied store: it knows the sequence
/// only as of its last try for the lock, a cycle or more behind the leader.
/// KEYS: leader, sequence. ARGV: token, floor.
const CONTINUE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this process does not hold the leader lock')
end
local current = tonumber(redis.call('GET', KEYS[2]) or '-1')
local floor = tonumber(ARGV[2])
if current < 0 then
  local now = redis.call('TIME')
  floor = math.max(floor, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
if current < floor then
  redis.call('SET', KEYS[2], string.format('%d', floor))
end
return current
"#;

/// What renewing the leader lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Ours, extended.
    Held,
    /// Expired or taken by another process.
    Lost,
    /// Ours, but the store was emptied (a Redis restarted without persistence kept the lock of
    /// a process that re-acquired it, or someone deleted the data): start a new term.
    StoreLost,
}

/// The bus and store on Redis.
///
/// Cycles go out on one channel, [`Keys::cycles`], as one binary message each, so a gateway
/// slices documents out of it without parsing any JSON: kind (1 byte), version (u64),
/// published_at (i64), count (u32), then for each document its topic and its JSON, each as a
/// u32 length and the bytes (all big-endian). A cycle over 4 MiB (`INLINE_CYCLE_LIMIT`) goes
/// out as its list of topics instead (kind 2), and subscribers read those documents from their
/// keys.
///
/// Commands go through a [`ConnectionManager`], which reconnects by itself; the subscription has
/// its own connection in a task with its own reconnect loop, and tells the subscriber to resync
/// after every reconnect: that is how what changed during an outage reaches the gateways.
pub struct RedisBus {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    commands: ConnectionManager,
    keys: Keys,
    /// This process's identity in the leader lock.
    token: String,
    /// The highest version this process has seen: allocated, read in a snapshot, or read from
    /// the sequence. The floor of the sequence should Redis come back empty.
    highest: AtomicU64,
    metrics: Arc<Metrics>,
    next_version: Script,
    publish: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    continue_sequence: Script,
}

impl RedisBus {
    /// Connect to `url` and use keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("Redis URL {url:?}"))?;
        let commands = client
            .get_connection_manager_with_config(manager_config())
            .await
            .with_context(|| format!("connecting to Redis at {}", redacted(url)))?;
        Ok(Self::with(client, commands, prefix, metrics))
    }

    /// A bus on `url` that connects on first use: what a gateway needs, which must answer
    /// (503 until it is ready) whether Redis is up or not. Fails only on an invalid URL; a
    /// Redis that cannot be reached makes [`Bus::subscribe`] and [`Bus::snapshot`] fail, and
    /// they connect again when called again.
    pub fn connect_lazy(url: &str, prefix: &str, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("Redis URL {url:?}"))?;
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())
            .with_context(|| format!("Redis at {}", redacted(url)))?;
        Ok(Self::with(client, commands, prefix, metrics))
    }

    fn with(
        client: redis::Client,
        commands: ConnectionManager,
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        let token = format!(
            "{}-{}-{:016x}",
            hostname(),
            std::process::id(),
            rand::random::<u64>()
        );
        RedisBus {
            shared: Arc::new(Shared {
                client,
                commands,
                keys: Keys::new(prefix),
                token,
                highest: AtomicU64::new(0),
                metrics,
                next_version: Script::new(NEXT_VERSION_LUA),
                publish: Script::new(PUBLISH_LUA),
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

    /// Take the leader lock for `ttl` if it is free (or already ours). Also reads the sequence,
    /// so that a standby keeps track of how far versions went.
    pub async fn acquire_leadership(&self, ttl: Duration) -> anyhow::Result<bool> {
        let keys = &self.shared.keys;
        let mut con = self.shared.commands.clone();
        let (won, sequence): (i64, u64) = self
            .shared
            .acquire
            .key(keys.leader())
            .key(keys.sequence())
            .arg(&self.shared.token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut con)
            .await
            .context("acquiring the leader lock")?;
        self.saw(sequence);
        Ok(won == 1)
    }

    /// Extend the leader lock by `ttl` if it is still ours.
    pub async fn renew_leadership(&self, ttl: Duration) -> anyhow::Result<Renewal> {
        let keys = &self.shared.keys;
        let mut con = self.shared.commands.clone();
        let answer: i64 = self
            .shared
            .renew
            .key(keys.leader())
            .key(keys.sequence())
            .arg(&self.shared.token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut con)
            .await
            .context("renewing the leader lock")?;
        Ok(match answer {
            1 => Renewal::Held,
            -1 => Renewal::StoreLost,
            _ => Renewal::Lost,
        })
    }

    /// Give the leader lock up if it is ours, so a standby takes over at once.
    pub async fn release_leadership(&self) -> anyhow::Result<bool> {
        let mut con = self.shared.commands.clone();
        let deleted: i64 = self
            .shared
            .release
            .key(self.shared.keys.leader())
            .arg(&self.shared.token)
            .invoke_async(&mut con)
            .await
            .context("releasing the leader lock")?;
        Ok(deleted == 1)
    }

    /// At the start of a leader term: make sure the sequence exists and is at least the highest
    /// version this process has seen, so versions never go backwards for gateways that still
    /// hold them, even if Redis came back empty (a missing sequence starts at the Unix time in
    /// milliseconds: see `CONTINUE_LUA`). Answers the sequence as it was, `None` if it did not
    /// exist (an empty store). Fenced: only the lock holder may do it.
    pub async fn continue_sequence(&self) -> anyhow::Result<Option<u64>> {
        let keys = &self.shared.keys;
        let mut con = self.shared.commands.clone();
        let before: i64 = self
            .shared
            .continue_sequence
            .key(keys.leader())
            .key(keys.sequence())
            .arg(&self.shared.token)
            .arg(self.highest_version())
            .invoke_async(&mut con)
            .await
            .map_err(fenced)
            .context("continuing the version sequence")?;
        Ok(u64::try_from(before).ok())
    }

    fn saw(&self, version: u64) {
        self.shared.highest.fetch_max(version, Relaxed);
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, drafts: Vec<Draft>) -> anyhow::Result<Arc<Cycle>> {
        let keys = &self.shared.keys;
        let mut con = self.shared.commands.clone();
        // A version taken by a publish that then fails (the lock lost in between, or Redis
        // gone) is never used: versions only need to increase, not to be contiguous.
        let version: u64 = self
            .shared
            .next_version
            .key(keys.leader())
            .key(keys.sequence())
            .arg(&self.shared.token)
            .invoke_async(&mut con)
            .await
            .map_err(fenced)
            .context("taking the next version")?;
        self.saw(version);
        let published_at = now_millis();
        let documents: Vec<Document> = drafts
            .iter()
            .map(|d| Document::stamp(d, version, published_at))
            .collect();
        drop(drafts);
        let message = encode(version, published_at, &documents, INLINE_CYCLE_LIMIT);
        let mut call = self.shared.publish.prepare_invoke();
        call.key(keys.leader()).key(keys.topics());
        for doc in &documents {
            call.key(keys.document(&doc.topic));
        }
        call.arg(&self.shared.token)
            .arg(keys.cycles())
            .arg(&message[..])
            .arg(version);
        for doc in &documents {
            call.arg(&*doc.topic).arg(&doc.json[..]);
        }
        let _receivers: i64 = call
            .invoke_async(&mut con)
            .await
            .map_err(fenced)
            .with_context(|| format!("publishing cycle {version}"))?;
        Ok(Arc::new(Cycle {
            version,
            published_at,
            documents,
        }))
    }

    async fn snapshot(&self) -> anyhow::Result<Vec<Document>> {
        let docs = with_retry(|| async {
            let mut con = self.shared.commands.clone();
            let topics: Vec<String> = con.hkeys(self.shared.keys.topics()).await?;
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
                self.shared.client.get_connection_info().addr()
            )
        })?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let span = tracing::info_span!("bus_subscription", channel = %self.shared.keys.cycles());
        tokio::spawn(follow_channel(self.shared.clone(), pubsub, tx).instrument(span));
        Ok(ReceiverStream::new(rx).boxed())
    }
}

/// The lock check inside the scripts, as an error that says what happened.
fn fenced(e: redis::RedisError) -> anyhow::Error {
    if e.to_string().contains("FENCED") {
        anyhow::anyhow!("fenced: this process does not hold the leader lock")
    } else {
        e.into()
    }
}

/// Run `attempt` again, after a pause, when it failed on a lost connection: the
/// [`ConnectionManager`] reconnects in the background but fails the first command after an
/// outage, and a gateway resyncing right after Redis came back must not give up on that one.
async fn with_retry<T, F, Fut>(mut attempt: F) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let mut pause = BACKOFF_START;
    for _ in 1..RETRY_ATTEMPTS {
        match attempt().await {
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
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
async fn read_documents(
    shared: &Shared,
    topics: &[impl AsRef<str>],
) -> redis::RedisResult<Vec<Document>> {
    let mut con = shared.commands.clone();
    let mut docs = Vec::with_capacity(topics.len());
    for batch in topics.chunks(MGET_BATCH) {
        let keys: Vec<String> = batch
            .iter()
            .map(|t| shared.keys.document(t.as_ref()))
            .collect();
        let values: Vec<Option<Bytes>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut con).await?;
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

/// A document read back from its key: version and time come from the stamped JSON itself.
fn stamped(topic: &str, json: Bytes) -> Option<Document> {
    fn number(s: &[u8]) -> Option<(u64, &[u8])> {
        let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let n = std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
        Some((n, &s[digits..]))
    }
    let rest = json.strip_prefix(b"{\"version\":")?;
    let (version, rest) = number(rest)?;
    let rest = rest.strip_prefix(b",\"published_at\":")?;
    let (negative, rest) = match rest.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (at, _) = number(rest)?;
    let at = i64::try_from(at).ok()?;
    let doc = Document {
        topic: Arc::from(topic),
        version,
        published_at: if negative { -at } else { at },
        json,
    };
    // The header must be exactly what `Document::stamp` writes.
    doc.content().is_some().then_some(doc)
}

/// What a message on the cycles channel says.
#[derive(Debug)]
enum Message {
    /// The whole cycle.
    Cycle(Cycle),
    /// A cycle too big to send inline: its version and the topics it changed.
    Changed {
        version: u64,
        published_at: i64,
        topics: Vec<String>,
    },
    /// Something was published that this message does not describe: reload the snapshots.
    Resync,
}

/// The message announcing a cycle: the cycle itself if it fits in `limit`, else its topics,
/// else a bare resync notice.
fn encode(version: u64, published_at: i64, documents: &[Document], limit: usize) -> Bytes {
    let inline = MESSAGE_HEADER
        + 4
        + documents
            .iter()
            .map(|d| 8 + d.topic.len() + d.json.len())
            .sum::<usize>();
    let listed = MESSAGE_HEADER + 4 + documents.iter().map(|d| 4 + d.topic.len()).sum::<usize>();
    let (kind, size) = if inline <= limit {
        (KIND_CYCLE, inline)
    } else if listed <= limit {
        (KIND_CHANGED, listed)
    } else {
        (KIND_RESYNC, MESSAGE_HEADER)
    };
    let mut b = BytesMut::with_capacity(size);
    b.put_u8(kind);
    b.put_u64(version);
    b.put_i64(published_at);
    if kind != KIND_RESYNC {
        b.put_u32(documents.len() as u32);
        for d in documents {
            b.put_u32(d.topic.len() as u32);
            b.put_slice(d.topic.as_bytes());
            if kind == KIND_CYCLE {
                b.put_u32(d.json.len() as u32);
                b.put_slice(&d.json);
            }
        }
    }
    b.freeze()
}

/// Read a message; documents are slices of `payload`, not copies.
fn decode(mut payload: Bytes) -> Result<Message, String> {
    fn need(b: &Bytes, n: usize, what: &str) -> Result<(), String> {
        if b.remaining() < n {
            Err(format!("truncated at {what}"))
        } else {
            Ok(())
        }
    }
    fn field(b: &mut Bytes, what: &str) -> Result<Bytes, String> {
        need(b, 4, what)?;
        let len = b.get_u32() as usize;
        need(b, len, what)?;
        Ok(b.split_to(len))
    }
    fn text(b: Bytes) -> Result<String, String> {
        String::from_utf8(b.to_vec()).map_err(|_| "topic is not UTF-8".to_string())
    }
    need(&payload, MESSAGE_HEADER, "header")?;
    let kind = payload.get_u8();
    let version = payload.get_u64();
    let published_at = payload.get_i64();
    let message = match kind {
        KIND_RESYNC => Message::Resync,
        KIND_CYCLE | KIND_CHANGED => {
            need(&payload, 4, "count")?;
            let count = payload.get_u32() as usize;
            // Every entry takes at least 4 bytes: a count the payload cannot hold is corrupt,
            // and must not size an allocation.
            if count > payload.remaining() / 4 {
                return Err(format!("count {count} beyond the message"));
            }
            if kind == KIND_CYCLE {
                let mut documents = Vec::with_capacity(count);
                for _ in 0..count {
                    let topic = text(field(&mut payload, "topic")?)?;
                    let json = field(&mut payload, "document")?;
                    documents.push(Document {
                        topic: Arc::from(topic),
                        version,
                        published_at,
                        json,
                    });
                }
                Message::Cycle(Cycle {
                    version,
                    published_at,
                    documents,
                })
            } else {
                let mut topics = Vec::with_capacity(count);
                for _ in 0..count {
                    topics.push(text(field(&mut payload, "topic")?)?);
                }
                Message::Changed {
                    version,
                    published_at,
                    topics,
                }
            }
        }
        other => return Err(format!("unknown message kind {other}")),
    };
    if payload.has_remaining() {
        return Err(format!("{} bytes after the message", payload.remaining()));
    }
    Ok(message)
}

/// A connection subscribed to the cycles channel.
async fn open_subscription(shared: &Shared) -> anyhow::Result<PubSub> {
    let channel = shared.keys.cycles();
    let subscribe = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    Ok(
        tokio::time::timeout(CONNECT_TIMEOUT + COMMAND_TIMEOUT, subscribe)
            .await
            .context("timed out")??,
    )
}

/// Why the subscription connection stopped.
enum Stopped {
    /// The subscriber is gone: nothing more to do.
    Unsubscribed,
    /// The connection was lost.
    Lost(String),
}

/// The subscription task: relay messages to `tx` as events; on a lost connection reconnect with
/// backoff, then tell the subscriber to resync. Ends when the subscriber drops its stream.
async fn follow_channel(shared: Arc<Shared>, mut pubsub: PubSub, tx: mpsc::Sender<BusEvent>) {
    loop {
        let reason = match relay(&shared, pubsub, &tx).await {
            Stopped::Unsubscribed => return,
            Stopped::Lost(reason) => reason,
        };
        tracing::warn!(%reason, "bus subscription lost; reconnecting");
        let mut delay = BACKOFF_START;
        pubsub = loop {
            // Equal jitter: between half the delay and the delay, so gateways that lost the
            // same Redis do not all come back in the same millisecond.
            let ms = delay.as_millis() as u64;
            let pause = Duration::from_millis(rand::random_range(ms / 2..=ms));
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            match open_subscription(&shared).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::debug!(error = format!("{e:#}"), "bus reconnect failed");
                    delay = (delay * 2).min(BACKOFF_CAP);
                }
            }
        };
        shared.metrics.bus_reconnects.fetch_add(1, Relaxed);
        tracing::info!("bus subscription restored; resyncing");
        // Cycles published while we were away are in the snapshot keys.
        if tx.send(BusEvent::Resync).await.is_err() {
            return;
        }
    }
}

/// Relay messages until the connection is lost or the subscriber is gone.
async fn relay(shared: &Shared, pubsub: PubSub, tx: &mpsc::Sender<BusEvent>) -> Stopped {
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    // Set when an event could not be queued: events are dropped until there is room for a
    // resync, which covers them all (their documents are in the snapshot keys).
    let mut lagged = false;
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => return Stopped::Unsubscribed,
            permit = tx.reserve(), if lagged => match permit {
                Ok(permit) => {
                    permit.send(BusEvent::Resync);
                    lagged = false;
                    continue;
                }
                Err(_) => return Stopped::Unsubscribed,
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return Stopped::Lost(format!("ping failed: {e}")),
                    Err(_) => return Stopped::Lost("ping timed out".into()),
                }
            }
            msg = messages.next() => match msg {
                Some(msg) => msg,
                None => return Stopped::Lost("connection closed".into()),
            },
        };
        let event = match decode(Bytes::copy_from_slice(msg.get_payload_bytes())) {
            Ok(Message::Cycle(cycle)) => BusEvent::Cycle(Arc::new(cycle)),
            Ok(Message::Changed {
                version,
                published_at,
                topics,
            }) => match with_retry(|| read_documents(shared, &topics)).await {
                Ok(documents) => BusEvent::Cycle(Arc::new(Cycle {
                    version,
                    published_at,
                    documents,
                })),
                Err(e) => {
                    tracing::warn!(
                        version,
                        error = %e,
                        "could not read a cycle's documents; resyncing"
                    );
                    BusEvent::Resync
                }
            },
            Ok(Message::Resync) => BusEvent::Resync,
            Err(reason) => {
                shared.metrics.bus_decode_errors.fetch_add(1, Relaxed);
                tracing::warn!(%reason, bytes = msg.get_payload_bytes().len(), "undecodable bus message skipped; resyncing");
                BusEvent::Resync
            }
        };
        if lagged {
            // Dropped: its documents are already in the keys the coming resync reads.
            continue;
        }
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => lagged = true,
            Err(mpsc::error::TrySendError::Closed(_)) => return Stopped::Unsubscribed,
        }
    }
}

/// Timeouts and reconnection backoff of the command connection.
fn manager_config() -> ConnectionManagerConfig {
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

/// A Redis URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(topic: &str, body: &str, version: u64) -> Document {
        let draft = Draft {
            topic: topic.into(),
            body: Bytes::from(body.to_string()),
        };
        Document::stamp(&draft, version, 1_700_000_000_000 + version as i64)
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let k = Keys::new("apura");
        assert_eq!(k.sequence(), "apura:seq");
        assert_eq!(
            k.document("mayors-sp-sao-paulo"),
            "apura:doc:mayors-sp-sao-paulo"
        );
        assert_eq!(k.topics(), "apura:topics");
        assert_eq!(k.leader(), "apura:leader");
        assert_eq!(k.cycles(), "apura:cycles");
        assert_eq!(Keys::new("test-7").sequence(), "test-7:seq");
    }

    #[test]
    fn a_small_cycle_travels_whole_and_its_documents_are_the_same_bytes() {
        let docs = vec![
            doc("brazil", r#"{"topic":"brazil","n":1}"#, 9),
            doc("state-sp", r#"{"topic":"state-sp","ç":"ã"}"#, 9),
        ];
        let bytes = encode(9, docs[0].published_at, &docs, INLINE_CYCLE_LIMIT);
        let Ok(Message::Cycle(cycle)) = decode(bytes) else {
            panic!("not a cycle")
        };
        assert_eq!(cycle.version, 9);
        assert_eq!(cycle.published_at, docs[0].published_at);
        assert_eq!(cycle.documents, docs);
    }

    #[test]
    fn a_cycle_over_the_limit_travels_as_its_topics_then_as_a_bare_resync() {
        let docs = vec![
            doc("a", &format!(r#"{{"pad":"{}"}}"#, "x".repeat(500)), 3),
            doc("b", r#"{}"#, 3),
        ];
        match decode(encode(3, 5, &docs, 100)).unwrap() {
            Message::Changed {
                version,
                published_at,
                topics,
            } => {
                assert_eq!((version, published_at), (3, 5));
                assert_eq!(topics, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(encode(3, 5, &docs, 20)).unwrap(),
            Message::Resync
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let docs = vec![doc("a", r#"{"n":1}"#, 1)];
        let good = encode(1, 2, &docs, INLINE_CYCLE_LIMIT);
        for cut in 0..good.len() {
            assert!(decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut extra = BytesMut::from(&good[..]);
        extra.put_u8(0);
        assert!(decode(extra.freeze()).is_err());
        let mut huge = BytesMut::from(&good[..MESSAGE_HEADER]);
        huge.put_u32(u32::MAX);
        assert!(decode(huge.freeze()).is_err());
        assert!(decode(Bytes::from_static(b"\x09\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0")).is_err());
        assert!(decode(Bytes::from_static(b"hello")).is_err());
    }

    #[test]
    fn stamped_json_reads_back_into_the_document() {
        let d = doc("brazil", r#"{"topic":"brazil","n":[1,2]}"#, 42);
        assert_eq!(stamped("brazil", d.json.clone()), Some(d));
        let empty = doc("t", "{}", 7);
        assert_eq!(stamped("t", empty.json.clone()), Some(empty));
        assert_eq!(stamped("t", Bytes::from_static(br#"{"topic":"t"}"#)), None);
        assert_eq!(
            stamped(
                "t",
                Bytes::from_static(br#"{"version":1,"published_at":x}"#)
            ),
            None
        );
    }

    #[test]
    fn options_are_checked_together_and_passwords_stay_out_of_logs() {
        assert!(check_options("redis://127.0.0.1:6379/0", "apura").is_empty());
        assert_eq!(check_options("http://nope", "").len(), 2);
        assert_eq!(
            redacted("redis://user:secret@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
    }
}
