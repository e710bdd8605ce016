//! The RAM store: sessions in this process's memory.
//!
//! ```
//! use axum::{routing::get, Router};
//! use server_sessions::{store::MemoryStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, server_sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = MemoryStore::new().with_max_sessions(100_000);
//! let app: Router = Router::new()
//!     .route("/cart", get(cart))
//!     .layer(SessionLayer::new(store));
//! # let _ = app;
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::{
    Error, LocalGuard, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionLock,
    SessionStore,
};
use crate::id::{shard_of, KeyMap, StoreKey};
use crate::record::{now_millis, Millis, Record};
use crate::store::checked_entries;
use crate::user::UserId;

mod bound;
mod table;

pub use self::bound::{default_max_memory, ENTRY_OVERHEAD};
use self::table::{Entry, Shard};

const SHARDS: usize = 64;

/// Sessions kept in RAM, for one process (CherryPy's `RamSession`).
///
/// The map is split into shards, each behind its own short-held mutex, so
/// requests on different sessions rarely meet. Data is kept as the encoded
/// bytes the session handle produced, which is both the smallest form and
/// the one a load hands back without re-encoding. Each session is one
/// allocation (key, times, user and data) behind a 16-byte slot: the
/// sessions of a busy site are most of this store's memory. Cloning the
/// store is cheap and shares the sessions.
///
/// # A bound on memory
///
/// Every cookieless request that touches the session makes one, so a
/// flood of them would otherwise grow the map until the process dies. The
/// store keeps its sessions within [`max_memory`](Self::with_max_memory)
/// bytes, each counted as its bytes (key, times, user, data) plus
/// [`ENTRY_OVERHEAD`], and, if set, within
/// [`max_sessions`](Self::with_max_sessions). At the bound, after dropping
/// what has expired in the shard at hand, a save that needs more room — a
/// new session, or one that grows — is refused with
/// [`Error::Unavailable`] (503 through the layer) while the other sessions
/// go on working, and room comes back as sessions expire or end. Refusing
/// the newcomer rather than dropping the oldest idle session is
/// deliberate: a flood must not be able to log out the visitors who were
/// there first. A regeneration (a log-in) stores its new key before it
/// deletes the old one, so that a failed save loses nothing; at the bound
/// it is refused too, like a new visitor.
///
/// The default, [`default_max_memory`], is a quarter of the memory the
/// process may use (its cgroup's `memory.max`, else the machine's
/// `MemTotal`; 4 GiB where neither can be read): about 6 GiB on a machine
/// sold as 24 GiB, room for some 50 million small sessions, or 90,000 at
/// the default `max_size` of 64 KiB.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Entries in all shards, expired ones included until they are
    /// dropped, and their cost in bytes (see [`Entry::cost`]); both only
    /// changed under the shard lock of the entry.
    sessions: AtomicUsize,
    bytes: AtomicUsize,
    max_sessions: AtomicUsize,
    max_memory: AtomicUsize,
    /// The lock of a RAM session is its place in this process's queue.
    locks: Arc<LockWaits>,
    /// Which stored sessions each user has: changed only under the shard
    /// lock of the session it names (shard first, then this), so that it
    /// always agrees with the shards. Expired sessions stay in it, as in
    /// their shard, until clean-up (or a full shard) drops them.
    users: Mutex<HashMap<UserId, KeyMap<()>>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("MemoryStore")
            .field("sessions", &inner.sessions.load(Ordering::Relaxed))
            .field("bytes", &inner.bytes.load(Ordering::Relaxed))
            .field("users", &lock(&inner.users).len())
            .field("max_sessions", &self.max_sessions())
            .field("max_memory", &self.max_memory())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store holding at most [`default_max_memory`].
    pub fn new() -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                sessions: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                max_sessions: AtomicUsize::new(usize::MAX),
                max_memory: AtomicUsize::new(default_max_memory()),
                locks: LockWaits::new(),
                users: Mutex::default(),
            }),
        }
    }

    /// Sets a bound on the number of sessions (at least 1; by default
    /// there is none but [`max_memory`](Self::with_max_memory)), for this
    /// store and its clones. Sessions already stored beyond a lowered bound
    /// stay; new ones wait for room.
    pub fn with_max_sessions(self, max_sessions: usize) -> Self {
        self.inner
            .max_sessions
            .store(max_sessions.max(1), Ordering::Relaxed);
        self
    }

    /// Sets the bound on memory: sessions take at most `max_memory` bytes
    /// as counted in "A bound on memory" above, for this store and its
    /// clones.
    pub fn with_max_memory(self, max_memory: usize) -> Self {
        self.inner.max_memory.store(max_memory, Ordering::Relaxed);
        self
    }

    /// The bound on sessions this store keeps (`usize::MAX`: none).
    pub fn max_sessions(&self) -> usize {
        self.inner.max_sessions.load(Ordering::Relaxed)
    }

    /// The bound on memory this store keeps, in bytes.
    pub fn max_memory(&self) -> usize {
        self.inner.max_memory.load(Ordering::Relaxed)
    }

    /// How many sessions the user index holds for `user`, expired ones
    /// included until clean-up drops them: the raw index, for tests and
    /// diagnostics ([`SessionStore::sessions_of`] answers the live ones).
    pub fn indexed_sessions_of(&self, user: &UserId) -> usize {
        lock(&self.inner.users)
            .get(user)
            .map_or(0, |keys| keys.len())
    }

    /// A live record's copy.
    fn read(&self, key: &StoreKey) -> Option<Record> {
        let now = now_millis();
        self.shard(key)
            .get(key)
            .and_then(|e| (e.expires() > now).then(|| e.record()))
    }

    /// [`SessionStore::save`], which has nothing to wait for.
    fn write(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        self.write_in(&mut self.shard(key), key, record, write)
    }

    /// [`SessionStore::replace`]: both shards are held across the check of
    /// `old`, the write and the removal, so no delete of `old` can fall in
    /// between. Two shards are always taken in index order (nothing else
    /// holds two), so two replaces cannot deadlock.
    fn replace_in_place(
        &self,
        old: &StoreKey,
        key: &StoreKey,
        record: &Record,
    ) -> Result<bool, Error> {
        let (from, to) = (shard_of(old, SHARDS), shard_of(key, SHARDS));
        let shards = &self.inner.shards;
        let (mut from_shard, mut to_shard) = match from.cmp(&to) {
            std::cmp::Ordering::Equal => (lock(&shards[from]), None),
            std::cmp::Ordering::Less => {
                let first = lock(&shards[from]);
                (first, Some(lock(&shards[to])))
            }
            std::cmp::Ordering::Greater => {
                let first = lock(&shards[to]);
                (lock(&shards[from]), Some(first))
            }
        };
        let now = now_millis();
        if from_shard.get(old).is_none_or(|e| e.expires() <= now) {
            return Ok(false);
        }
        let written = match to_shard.as_mut() {
            Some(shard) => self.write_in(shard, key, record, SaveIf::Absent)?,
            None => self.write_in(&mut from_shard, key, record, SaveIf::Absent)?,
        };
        if written {
            if let Some(gone) = from_shard.remove(old) {
                self.inner.forget(&gone);
            }
        }
        Ok(written)
    }

    /// A save into a shard the caller holds.
    fn write_in(
        &self,
        shard: &mut Shard,
        key: &StoreKey,
        record: &Record,
        write: SaveIf,
    ) -> Result<bool, Error> {
        let now = now_millis();
        let live = shard.get(key).is_some_and(|e| e.expires() > now);
        if live != (write == SaveIf::Live) {
            return Ok(false);
        }
        if !live {
            // An expired record in the way goes first, so that making room
            // (which drops what expired) cannot count it twice.
            if let Some(dead) = shard.remove(key) {
                self.inner.forget(&dead);
            }
        }
        let new = Entry::new(key, record);
        let (sessions, old_cost) = shard.get(key).map_or((1, 0), |e| (0, e.cost()));
        match new.cost().checked_sub(old_cost) {
            Some(0) if sessions == 0 => {}
            Some(more) => self.claim(shard, now, sessions, more)?,
            None => {
                let less = old_cost - new.cost();
                self.inner.bytes.fetch_sub(less, Ordering::Relaxed);
            }
        }
        let old = shard.insert(key, new);
        if old.as_ref().is_some_and(|e| e.user_len() > 0) || record.user.is_some() {
            self.inner.reindex(key, old.as_ref(), shard.get(key));
        }
        Ok(true)
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, Shard> {
        lock(&self.inner.shards[shard_of(key, SHARDS)])
    }

    /// Removes every session (CherryPy's `cache.clear()`).
    pub fn clear(&self) {
        for shard in self.inner.shards.iter() {
            let mut shard = lock(shard);
            for entry in shard.0.drain() {
                self.inner.forget(&entry);
            }
            shard.shrink_if_sparse();
        }
    }
}

impl Inner {
    /// Gives back the room of an entry that left its shard, and its place
    /// in the user index.
    fn forget(&self, gone: &Entry) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(gone.cost(), Ordering::Relaxed);
        if gone.user_len() > 0 {
            self.reindex(&gone.key(), Some(gone), None);
        }
    }

    /// Drops what expired in one shard (held by the caller), and says
    /// which sessions those were when `gone` is given.
    fn drop_expired(
        &self,
        shard: &mut Shard,
        now: Millis,
        mut gone: Option<&mut Vec<(StoreKey, Option<UserId>)>>,
    ) -> u64 {
        let mut removed = 0;
        shard.0.retain(|e| {
            let live = e.expires() > now;
            if !live {
                self.forget(e);
                removed += 1;
                if let Some(gone) = gone.as_deref_mut() {
                    gone.push((e.key(), e.user()));
                }
            }
            live
        });
        if removed > 0 {
            shard.shrink_if_sparse();
        }
        removed
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
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while a shard or the index is held, but if something
    // ever did the maps would still be consistent: keep serving rather
    // than poison.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A held lock of the RAM store: this process's place at the front of the
/// session's queue, which is all the lock there is.
struct MemoryLock {
    store: MemoryStore,
    key: StoreKey,
    _local: LocalGuard,
}

#[async_trait]
impl SessionLock for MemoryLock {
    async fn save_and_release(
        self: Box<Self>,
        record: &Record,
        write: SaveIf,
    ) -> Result<bool, Error> {
        // Written while the place is held; released when `self` drops.
        self.store.write(&self.key, record, write)
    }
}

impl MemoryStore {
    /// The RAM store a config describes: [`new`](Self::new), bounded by
    /// its `max_sessions` and `max_memory` where they are set (what
    /// [`store::open`](crate::store::open) builds for `storage_type =
    /// "ram"`).
    pub fn from_config(config: &crate::Config) -> Self {
        let storage = config.storage();
        let mut store = Self::new();
        if let Some(max) = storage.max_sessions {
            store = store.with_max_sessions(max);
        }
        if let Some(max) = storage.max_memory {
            store = store.with_max_memory(max);
        }
        store
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        Ok(self.read(key))
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        self.write(key, record, write)
    }

    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        let local = self.inner.locks.local(key, wait).await?;
        let lock = MemoryLock {
            store: self.clone(),
            key: *key,
            _local: local,
        };
        Ok((LockGuard::new(lock), load.then(|| self.read(key)).flatten()))
    }

    async fn replace(
        &self,
        old: &StoreKey,
        key: &StoreKey,
        record: &Record,
    ) -> Result<bool, Error> {
        self.replace_in_place(old, key, record)
    }

    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        let now = now_millis();
        Ok(match self.shard(key).get_mut(key) {
            Some(e) if e.expires() > now => {
                e.set_expires(expires);
                true
            }
            _ => false,
        })
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        if let Some(gone) = self.shard(key).remove(key) {
            self.inner.forget(&gone);
        }
        Ok(())
    }

    async fn exists(&self, key: &StoreKey) -> Result<bool, Error> {
        let now = now_millis();
        Ok(self.shard(key).get(key).is_some_and(|e| e.expires() > now))
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
            .map(|s| lock(s).0.iter().filter(|e| e.expires() > now).count() as u64)
            .sum())
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        // One shard at a time, so a large store is never copied whole.
        stream::iter(self.inner.shards.iter())
            .flat_map(|shard| {
                let keys: Vec<_> = lock(shard).0.iter().map(|e| Ok(e.key())).collect();
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
                .drop_expired(&mut lock(shard), now, Some(&mut gone));
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

    pub(super) fn record(ttl: u64) -> Record {
        let now = now_millis();
        Record {
            data: b"{}".to_vec(),
            created: now,
            expires: now + ttl,
            timeout: None,
            user: None,
        }
    }

    pub(super) fn sized(ttl: u64, len: usize) -> Record {
        Record {
            data: vec![b'x'; len],
            ..record(ttl)
        }
    }
}
