//! The ingest leader lock: one leader at a time, a standby taking over when the lock expires.
//! Used by `ingest::leader`; the fencing of every write by the same lock is in the scripts and
//! in the cycle's watched transaction (`write_cycle`).

use std::time::Duration;

use anyhow::Context;
use redis::Script;

use super::{RedisBus, fenced};

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

impl RedisBus {
    /// Take the leader lock for `ttl` if it is free (or already ours). Also reads the sequence,
    /// so that a standby keeps track of how far versions went.
    pub async fn acquire_leadership(&self, ttl: Duration) -> anyhow::Result<bool> {
        let (won, sequence): (i64, u64) = self
            .lock_script(&self.shared.acquire, ttl)
            .await
            .context("acquiring the leader lock")?;
        self.saw(sequence);
        Ok(won == 1)
    }

    /// Extend the leader lock by `ttl` if it is still ours.
    pub async fn renew_leadership(&self, ttl: Duration) -> anyhow::Result<Renewal> {
        let answer: i64 = self
            .lock_script(&self.shared.renew, ttl)
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
        let mut release = self.shared.release.key(self.shared.keys.leader());
        release.arg(&self.shared.token);
        let deleted: i64 = self
            .shared
            .commands
            .invoke(&release)
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
        let mut call = self.shared.continue_sequence.key(keys.leader());
        call.key(keys.sequence())
            .arg(&self.shared.token)
            .arg(self.highest_version());
        let before: i64 = self
            .shared
            .commands
            .invoke(&call)
            .await
            .map_err(fenced)
            .context("continuing the version sequence")?;
        Ok(u64::try_from(before).ok())
    }

    /// Run a lock script that takes the lock and sequence keys, this process's token and a ttl.
    async fn lock_script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        ttl: Duration,
    ) -> redis::RedisResult<T> {
        let keys = &self.shared.keys;
        let mut call = script.key(keys.leader());
        call.key(keys.sequence())
            .arg(&self.shared.token)
            .arg(ttl.as_millis() as u64);
        self.shared.commands.invoke(&call).await
    }
}
