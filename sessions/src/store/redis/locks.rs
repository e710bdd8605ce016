//! The Redis store's locks, on the lease rules every remote store shares
//! (`store/lease.rs`: the wait, the take, the renewal, the hand-over to the
//! next request of this process, the save that writes only under our
//! lease). What is Redis's own is here: each step is one script, a release
//! wakes another process's waiter (the `waiting` mark and the publish, see
//! "Locks" on [`RedisStore`]), and with `redis_wait_replicas` a save waits
//! for its replicas before it counts as done.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::conn::Conn;
use super::conn::LuaCall;
use super::scripts::Scripts;
use super::target::Topology;
use super::{bounded, mode, ttl_ms, RedisStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::lease::{LeaseBackend, Released, Taken};
use crate::store::{Error, Keep, LockWaits, SaveIf};

/// Milliseconds from now until `until`, at least 1 (Redis refuses a zero
/// expiry).
fn ms_until(until: Millis) -> u64 {
    until.saturating_sub(now_millis()).max(1)
}

#[async_trait]
impl LeaseBackend for RedisStore {
    async fn lease_site(&self) -> Result<(&Arc<LockWaits>, Duration), Error> {
        Ok((&self.locks, self.lease))
    }

    fn on_busy(&self) {
        // A waiter that finds the lock held listens for its release.
        self.listen();
    }

    fn check(&self, record: &Record) -> Result<(), Error> {
        self.check_size(record)
    }

    fn keep(&self) -> Option<Keep> {
        // One node only. On a Cluster and with Sentinel a failover can lose
        // a lease that was not yet replicated while this process's
        // subscription (on another node, or on the demoted master, which
        // goes on receiving) stays up: another process then takes the
        // session and writes it, and what this process kept would be
        // served until its next renewal finds the lease gone. A lock held
        // through a request has that gap only for the request in flight.
        if self.target.topology() != Topology::Node {
            return None;
        }
        // Another process's request to give a session back comes on the
        // wake-up channel: nothing is kept while it is not subscribed.
        self.keep?;
        self.listen();
        self.subscribed
            .load(Ordering::Relaxed)
            .then_some(self.keep?)
    }

    async fn take(
        &self,
        key: &StoreKey,
        owner: &str,
        until: Millis,
        load: bool,
    ) -> Result<Taken, Error> {
        let keys = self.lock_keys(key);
        let mut conn = self.conn.clone();
        if !load {
            let mut call = self.scripts.lock.prepare_invoke();
            call.key(&keys.lock)
                .key(&keys.waiting)
                .arg(owner)
                .arg(ms_until(until))
                .arg(&*self.channel)
                .arg(&keys.tag);
            let taken: i64 = bounded("taking a session lock", call.invoke_async(&mut conn)).await?;
            return Ok(if taken == 1 {
                Taken::Ours(None)
            } else {
                Taken::Busy
            });
        }
        let mut call = self.scripts.lock_and_load.prepare_invoke();
        call.key(self.data_key(key))
            .key(&keys.lock)
            .key(&keys.waiting)
            .arg(owner)
            .arg(ms_until(until))
            .arg(self.read_limit())
            .arg(&*self.channel)
            .arg(&keys.tag);
        let (status, value, n): (i64, Option<Vec<u8>>, i64) = bounded(
            "locking and loading a session",
            call.invoke_async(&mut conn),
        )
        .await?;
        Ok(match status {
            -1 => Taken::Busy,
            _ => Taken::Ours(self.finish_read(key, status, value, n)),
        })
    }

    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error> {
        let mut call = self.scripts.renew.prepare_invoke();
        call.key(self.lock_keys(key).lock)
            .arg(owner)
            .arg(ms_until(until));
        let mut conn = self.conn.clone();
        let moved: i64 = bounded("renewing a session lock", call.invoke_async(&mut conn)).await?;
        Ok(moved == 1)
    }

    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error> {
        let keys = self.lock_keys(key);
        release(
            self.conn.clone(),
            &self.scripts,
            &self.channel,
            &keys,
            owner,
        )
        .await
        .map(drop)
    }

    async fn save_and_keep(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        until: Millis,
    ) -> Result<Released, Error> {
        self.index(key, record).await?;
        let keys = self.lock_keys(key);
        let mut call = self.scripts.save_and_keep.prepare_invoke();
        call.key(self.data_key(key))
            .key(&keys.lock)
            .arg(owner)
            .arg(record.encode())
            .arg(ttl_ms(record.expires))
            .arg(mode(only))
            .arg(ms_until(until));
        self.run_save(&call).await
    }

    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error> {
        self.index(key, record).await?;
        let keys = self.lock_keys(key);
        let mut call = self.scripts.save_and_unlock.prepare_invoke();
        call.key(self.data_key(key))
            .key(&keys.lock)
            .key(&keys.waiting)
            .arg(owner)
            .arg(record.encode())
            .arg(ttl_ms(record.expires))
            .arg(mode(only))
            .arg(&*self.channel)
            .arg(&keys.tag);
        self.run_save(&call).await
    }
}

impl RedisStore {
    /// Runs a save script (answering -1: the lease was not ours, nothing
    /// written; 0: the precondition failed; 1: written) and, with
    /// `redis_wait_replicas`, waits for the replicas on the same
    /// connection: a save they did not all acknowledge fails as
    /// unavailable, since a failover could lose it.
    async fn run_save(&self, call: &LuaCall<'_>) -> Result<Released, Error> {
        const CONTEXT: &str = "saving a session";
        let (outcome, acked): (i64, Option<u64>) = match self.wait() {
            None => {
                let mut conn = self.conn.clone();
                (bounded(CONTEXT, call.invoke_async(&mut conn)).await?, None)
            }
            Some(wait) => {
                let mut conn = self.durable().await?;
                let (outcome, acked) =
                    bounded(CONTEXT, call.invoke_and_wait(&mut conn, wait)).await?;
                (outcome, Some(acked))
            }
        };
        match outcome {
            -1 => Ok(Released::Lost),
            1 => {
                if let Some(acked) = acked {
                    self.check_replicated(acked)?;
                }
                Ok(Released::Saved(true))
            }
            _ => Ok(Released::Saved(false)),
        }
    }
}

/// The keys of one session's lock, which share the data key's hash tag
/// (one Cluster slot, so every script may touch them all), and the tag
/// that a release publishes.
#[derive(Clone, Default)]
pub(super) struct LockKeys {
    pub(super) lock: String,
    /// Set while another process waits for the lock.
    pub(super) waiting: String,
    pub(super) tag: String,
}

impl LockKeys {
    pub(super) fn tagged(prefix: &str, key: &StoreKey, suffix: &str) -> String {
        format!("{prefix}{{{}}}{suffix}", &*key.as_hex())
    }
}

/// Releases `token`'s lock (compare-and-delete: nothing happens to someone
/// else's lock), waking another process's waiter if one is marked.
pub(super) async fn release(
    mut conn: Conn,
    scripts: &Scripts,
    channel: &str,
    keys: &LockKeys,
    token: &str,
) -> Result<i64, Error> {
    let mut call = scripts.release.prepare_invoke();
    call.key(&keys.lock)
        .key(&keys.waiting)
        .arg(token)
        .arg(channel)
        .arg(&keys.tag);
    bounded("releasing a session lock", call.invoke_async(&mut conn)).await
}
