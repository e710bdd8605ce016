//! The RAM store: sessions in this process's memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::{Error, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionStore};
use crate::id::{shard_of, KeyMap, StoreKey};
use crate::record::{now_millis, Millis, Record};
use crate::user::{checked_entries, UserId};

const SHARDS: usize = 64;

/// What a session costs the RAM store beyond its data: the map slot, the
/// key, the times and the data's allocation (about 150 bytes, as the
/// benchmark's memory workload measures it), rounded up.
pub const ENTRY_OVERHEAD: usize = 256;

/// The default bound lets sessions at their largest take at most this
/// share of the memory the process may use: a quarter.
const MEMORY_SHARE: u64 = 4;

/// The memory assumed where it cannot be read (not Linux).
const ASSUMED_MEMORY: u64 = 4 << 30;

/// Sessions kept in RAM, for one process (CherryPy's `RamSession`).
///
/// The map is split into shards, each behind its own short-held mutex, so
/// requests on different sessions rarely meet. Data is kept as the encoded
/// bytes the session handle produced, which is both the smallest form and
/// the one a load hands back without re-encoding. Cloning the store is
/// cheap and shares the sessions.
///
/// # A bound on sessions
///
/// Every cookieless request that touches the session makes one, so a
/// flood of them would otherwise grow the map until the process dies. The
/// store holds at most [`max_sessions`](Self::with_max_sessions); at the
/// bound, after dropping what has expired in the shard at hand, a new
/// session is refused with [`Error::Unavailable`] (503 through the layer)
/// while the sessions already stored go on working, and room comes back as
/// sessions expire or end. Refusing the newcomer rather than dropping the
/// oldest idle session is deliberate: a flood must not be able to log out
/// the visitors who were there first. A regeneration (a log-in) stores its
/// new key before it deletes the old one, so that a failed save loses
/// nothing; at the bound it is refused too, like a new visitor.
///
/// The default, [`default_max_sessions`]`(64 KiB)`, keeps sessions at the
/// default `max_size` within a quarter of the memory the process may use
/// (its cgroup's `memory.max`, else the machine's `MemTotal`; 4 GiB where
/// neither can be read): `max_sessions × (max_size + ENTRY_OVERHEAD) ≤
/// memory / 4`. A machine sold as 24 GiB (23.5 GiB `MemTotal`) gets
/// 96,047 sessions, a 1 GiB container 4,080. [`store::open`](crate::store::open) sizes it for the
/// config's `max_size`, or takes `max_sessions` from the config.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<KeyMap<Entry>>]>,
    /// Entries in all shards, expired ones included until they are
    /// dropped; only changed under the shard lock of the entry.
    len: AtomicUsize,
    max_sessions: AtomicUsize,
    /// The lock of a RAM session is its place in this process's queue.
    locks: Arc<LockWaits>,
    /// Which stored sessions each user has: changed only under the shard
    /// lock of the session it names (shard first, then this), so that it
    /// always agrees with the shards. Expired sessions stay in it, as in
    /// their shard, until clean-up (or a full shard) drops them.
    users: Mutex<HashMap<UserId, KeyMap<()>>>,
}

/// One stored session, packed: the sessions of a busy site are most of
/// this store's memory.
#[derive(Debug)]
struct Entry {
    /// The user's id (the first `user_len` bytes, none without a user),
    /// then the data: one allocation.
    bytes: Box<[u8]>,
    created: Millis,
    expires: Millis,
    /// The session's own timeout in ms (0: none) in the low 48 bits, the
    /// user id's length in the top 16: 8 bytes where two fields would
    /// take 16.
    timeout_and_user_len: u64,
}

/// Timeouts are kept to 48 bits (8,900 years; sessions allow 400 days).
const TIMEOUT_BITS: u32 = 48;

impl Entry {
    fn new(record: &Record) -> Self {
        let user = record.user.as_ref().map_or("", UserId::as_str).as_bytes();
        let timeout = record.timeout.unwrap_or(0).min((1 << TIMEOUT_BITS) - 1);
        Entry {
            bytes: [user, &record.data].concat().into_boxed_slice(),
            created: record.created,
            expires: record.expires,
            // A user id is at most 256 bytes.
            timeout_and_user_len: timeout | (user.len() as u64) << TIMEOUT_BITS,
        }
    }

    fn user_len(&self) -> usize {
        (self.timeout_and_user_len >> TIMEOUT_BITS) as usize
    }

    fn user_bytes(&self) -> &[u8] {
        &self.bytes[..self.user_len()]
    }

    /// The user, if any. The bytes were a `UserId` when stored.
    fn user(&self) -> Option<UserId> {
        let bytes = self.user_bytes();
        (!bytes.is_empty())
            .then(|| UserId::from_bytes(bytes).ok())
            .flatten()
    }

    fn record(&self) -> Record {
        let timeout = self.timeout_and_user_len & ((1 << TIMEOUT_BITS) - 1);
        Record {
            data: self.bytes[self.user_len()..].to_vec(),
            created: self.created,
            expires: self.expires,
            timeout: (timeout > 0).then_some(timeout),
            user: self.user(),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store holding at most [`default_max_sessions`] for the
    /// default `max_size` (64 KiB).
    pub fn new() -> Self {
        Self::bounded(default_max_sessions(64 * 1024))
    }

    /// Sets the bound: at most `max_sessions` sessions (at least 1), for
    /// this store and its clones. Sessions already stored beyond a lowered
    /// bound stay; new ones wait for room.
    pub fn with_max_sessions(self, max_sessions: usize) -> Self {
        self.inner
            .max_sessions
            .store(max_sessions.max(1), Ordering::Relaxed);
        self
    }

    fn bounded(max_sessions: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                len: AtomicUsize::new(0),
                max_sessions: AtomicUsize::new(max_sessions.max(1)),
                locks: LockWaits::new(),
                users: Mutex::default(),
            }),
        }
    }

    /// The bound this store keeps.
    pub fn max_sessions(&self) -> usize {
        self.inner.max_sessions.load(Ordering::Relaxed)
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, KeyMap<Entry>> {
        lock_shard(&self.inner.shards[shard_of(key, SHARDS)])
    }

    /// Removes every session (CherryPy's `cache.clear()`).
    pub fn clear(&self) {
        for shard in self.inner.shards.iter() {
            let mut map = lock_shard(shard);
            self.inner.len.fetch_sub(map.len(), Ordering::Relaxed);
            for (key, entry) in map.drain() {
                self.inner.unindex(&key, &entry);
            }
        }
    }

    /// Takes a place for one more entry, or says the store is full.
    fn claim_place(&self, map: &mut KeyMap<Entry>, now: Millis) -> Result<(), Error> {
        let (len, max) = (&self.inner.len, self.max_sessions());
        if len.fetch_add(1, Ordering::Relaxed) < max {
            return Ok(());
        }
        // Full: what expired in this shard makes room before refusing.
        len.fetch_sub(1, Ordering::Relaxed);
        self.inner.drop_expired(map, now, None);
        if len.fetch_add(1, Ordering::Relaxed) < max {
            return Ok(());
        }
        len.fetch_sub(1, Ordering::Relaxed);
        Err(Error::unavailable("storing a new session", Full(max)))
    }
}

/// The store holds `max_sessions` already.
#[derive(Debug, thiserror::Error)]
#[error("the RAM store holds its max_sessions ({0}); new sessions wait for room")]
struct Full(usize);

/// The default bound for sessions of at most `max_size` bytes: see
/// "A bound on sessions" on [`MemoryStore`].
pub fn default_max_sessions(max_size: usize) -> usize {
    let memory = usable_memory().unwrap_or(ASSUMED_MEMORY);
    let per_session = (max_size.saturating_add(ENTRY_OVERHEAD)) as u64;
    usize::try_from(memory / MEMORY_SHARE / per_session.max(1)).unwrap_or(usize::MAX)
}

/// The memory this process may use: its cgroup's limit, or the machine's.
fn usable_memory() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let kib = s.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
        kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
    });
    match (cgroup, total.map(|kib| kib * 1024)) {
        (Some(limit), Some(total)) => Some(limit.min(total)),
        (limit, total) => limit.or(total),
    }
}

impl Inner {
    /// Drops what expired in one shard (held by the caller), and says
    /// which sessions those were when `gone` is given.
    fn drop_expired(
        &self,
        map: &mut KeyMap<Entry>,
        now: Millis,
        mut gone: Option<&mut Vec<(StoreKey, Option<UserId>)>>,
    ) -> u64 {
        let before = map.len();
        map.retain(|key, e| {
            let live = e.expires > now;
            if !live {
                self.unindex(key, e);
                if let Some(gone) = gone.as_deref_mut() {
                    gone.push((*key, e.user()));
                }
            }
            live
        });
        let removed = before - map.len();
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed as u64
    }

    /// Keeps the user index in step with one entry of a shard the caller
    /// holds: `old` is what was stored under `key`, `new` what is now.
    fn reindex(&self, key: &StoreKey, old: Option<&Entry>, new: Option<&Entry>) {
        if old.map(Entry::user_bytes).unwrap_or_default()
            == new.map(Entry::user_bytes).unwrap_or_default()
        {
            return;
        }
        let (old, new) = (old.and_then(Entry::user), new.and_then(Entry::user));
        let mut users = lock(&self.users);
        if let Some(old) = old {
            if let Some(keys) = users.get_mut(&old) {
                keys.remove(key);
                if keys.is_empty() {
                    users.remove(&old);
                }
            }
        }
        if let Some(new) = new {
            users.entry(new).or_default().insert(*key, ());
        }
    }

    fn unindex(&self, key: &StoreKey, gone: &Entry) {
        if gone.user_len() > 0 {
            self.reindex(key, Some(gone), None);
        }
    }
}

fn lock_shard(shard: &Mutex<KeyMap<Entry>>) -> MutexGuard<'_, KeyMap<Entry>> {
    lock(shard)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while a shard or the index is held, but if something
    // ever did the maps would still be consistent: keep serving rather
    // than poison.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let now = now_millis();
        Ok(self
            .shard(key)
            .get(key)
            .and_then(|e| (e.expires > now).then(|| e.record())))
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        let now = now_millis();
        let mut shard = self.shard(key);
        let entry = shard.get(key);
        let live = entry.is_some_and(|e| e.expires > now);
        if live != (write == SaveIf::Live) {
            return Ok(false);
        }
        if entry.is_none() {
            self.claim_place(&mut shard, now)?;
        }
        let new = Entry::new(record);
        let old = shard.insert(*key, new);
        if old.as_ref().is_some_and(|e| e.user_len() > 0) || record.user.is_some() {
            self.inner.reindex(key, old.as_ref(), shard.get(key));
        }
        Ok(true)
    }

    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        let now = now_millis();
        Ok(match self.shard(key).get_mut(key) {
            Some(e) if e.expires > now => {
                e.expires = expires;
                true
            }
            _ => false,
        })
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        let mut shard = self.shard(key);
        if let Some(gone) = shard.remove(key) {
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
            self.inner.unindex(key, &gone);
        }
        Ok(())
    }

    async fn exists(&self, key: &StoreKey) -> Result<bool, Error> {
        let now = now_millis();
        Ok(self.shard(key).get(key).is_some_and(|e| e.expires > now))
    }

    async fn lock(&self, key: &StoreKey, wait: Duration) -> Result<LockGuard, Error> {
        let local = self.inner.locks.local(key, wait).await?;
        Ok(LockGuard::new(local))
    }

    async fn sessions_of(&self, user: &UserId) -> Result<Vec<(StoreKey, Record)>, Error> {
        let keys: Vec<StoreKey> = lock(&self.inner.users)
            .get(user)
            .map(|keys| keys.keys().copied().collect())
            .unwrap_or_default();
        checked_entries(self, user, keys).await
    }
}

#[async_trait]
impl SessionAdmin for MemoryStore {
    async fn count(&self) -> Result<u64, Error> {
        let now = now_millis();
        Ok(self
            .inner
            .shards
            .iter()
            .map(|s| lock_shard(s).values().filter(|e| e.expires > now).count() as u64)
            .sum())
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        // One shard at a time, so a large store is never copied whole.
        stream::iter(self.inner.shards.iter())
            .flat_map(|shard| {
                let keys: Vec<_> = lock_shard(shard).keys().copied().map(Ok).collect();
                stream::iter(keys)
            })
            .boxed()
    }

    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error> {
        let now = now_millis();
        let (mut removed, mut gone) = (0, Vec::new());
        for shard in self.inner.shards.iter() {
            // Held locks live in a separate table, so dropping expired data
            // here can never release or orphan a lock someone holds.
            removed += self
                .inner
                .drop_expired(&mut lock_shard(shard), now, Some(&mut gone));
            // Told with no shard held.
            for (key, user) in gone.drain(..) {
                expired(key, user);
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clean_up_removes_what_expired() {
        let store = MemoryStore::new();
        let now = now_millis();
        for (i, ttl) in [10_000u64, 0, 0].iter().enumerate() {
            let key = StoreKey::generate().unwrap();
            let r = Record {
                data: format!("{{\"i\":{i}}}").into_bytes(),
                created: now,
                expires: now + ttl,
                timeout: None,
                user: None,
            };
            assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
        }
        assert_eq!(store.clean_up().await.unwrap(), 2);
        assert_eq!(store.count().await.unwrap(), 1);
        assert_eq!(store.keys().count().await, 1);
    }

    fn record(ttl: u64) -> Record {
        let now = now_millis();
        Record {
            data: b"{}".to_vec(),
            created: now,
            expires: now + ttl,
            timeout: None,
            user: None,
        }
    }

    /// At the bound a new session is refused (unavailable), the stored
    /// ones still save, and room comes back by a delete or by expiry.
    #[tokio::test]
    async fn the_bound_refuses_new_sessions_only() {
        let store = MemoryStore::new().with_max_sessions(SHARDS * 2);
        let keys: Vec<StoreKey> = (0..SHARDS * 2)
            .map(|_| StoreKey::generate().unwrap())
            .collect();
        for key in &keys {
            assert!(store
                .save(key, &record(60_000), SaveIf::Absent)
                .await
                .unwrap());
        }
        let newcomer = StoreKey::generate().unwrap();
        let err = store
            .save(&newcomer, &record(60_000), SaveIf::Absent)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("max_sessions (128)"));
        // The stored sessions go on.
        assert!(store
            .save(&keys[0], &record(60_000), SaveIf::Live)
            .await
            .unwrap());
        assert!(store.touch(&keys[1], now_millis() + 60_000).await.unwrap());
        // A delete makes room.
        store.delete(&keys[2]).await.unwrap();
        assert!(store
            .save(&newcomer, &record(60_000), SaveIf::Absent)
            .await
            .unwrap());
        // So does expiry: a short-lived session in the newcomer's place...
        store.delete(&newcomer).await.unwrap();
        assert!(store
            .save(&newcomer, &record(1), SaveIf::Absent)
            .await
            .unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        // ...is dropped when the store is full, in the newcomer's shard.
        let in_its_shard = (0..)
            .map(|_| StoreKey::generate().unwrap())
            .find(|k| shard_of(k, SHARDS) == shard_of(&newcomer, SHARDS))
            .unwrap();
        assert!(store
            .save(&in_its_shard, &record(60_000), SaveIf::Absent)
            .await
            .unwrap());
        assert_eq!(store.count().await.unwrap(), (SHARDS * 2) as u64);
        store.clear();
        assert!(store
            .save(&newcomer, &record(60_000), SaveIf::Absent)
            .await
            .unwrap());
    }

    #[test]
    fn the_default_bound_keeps_a_quarter_of_memory() {
        let memory = usable_memory().unwrap_or(ASSUMED_MEMORY);
        let n = default_max_sessions(64 * 1024) as u64;
        let largest = n * (64 * 1024 + ENTRY_OVERHEAD) as u64;
        assert!(
            largest <= memory / 4 && largest > memory / 5,
            "{n} sessions, {memory} bytes"
        );
    }
}
