//! The RAM store: sessions in this process's memory.
//!
//! ```
//! use axum::{routing::get, Router};
//! use sessions::{store::MemoryStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, sessions::Error> {
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
use hashbrown::hash_table::{Entry as Slot, HashTable};

use super::{
    Error, LocalGuard, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionLock,
    SessionStore,
};
use crate::id::{shard_of, KeyMap, StoreKey, KEY_LEN};
use crate::record::{now_millis, Millis, Record};
use crate::store::checked_entries;
use crate::user::UserId;

const SHARDS: usize = 64;

/// What a session costs the RAM store beyond its entry's bytes (its key,
/// times, user and data): the table's slot and the share of its empty
/// slots, and the allocator's own due. 47 bytes as the benchmark's
/// memory workload measures it at a million sessions, rounded up.
pub const ENTRY_OVERHEAD: usize = 64;

/// The default bound lets sessions take at most this share of the memory
/// the process may use: a quarter.
const MEMORY_SHARE: u64 = 4;

/// The memory assumed where it cannot be read (not Linux).
const ASSUMED_MEMORY: u64 = 4 << 30;

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

/// One stored session in one allocation: the key, the times, the user's
/// id and the data, laid out as
///
/// `key (32) | created (8) | expires (8) | timeout and user length (8) |
/// user | data`,
///
/// numbers little-endian. The timeout (ms, 0: none) takes the low 48 bits
/// of its word (8,900 years; sessions allow 400 days), the user id's length
/// (at most 256) the top 16.
struct Entry(Box<[u8]>);

const CREATED: usize = KEY_LEN;
const EXPIRES: usize = CREATED + 8;
const TIMEOUT_AND_USER_LEN: usize = EXPIRES + 8;
const HEADER: usize = TIMEOUT_AND_USER_LEN + 8;
const TIMEOUT_BITS: u32 = 48;

impl Entry {
    fn new(key: &StoreKey, record: &Record) -> Self {
        let user = record.user.as_ref().map_or("", UserId::as_str).as_bytes();
        let timeout = record.timeout.unwrap_or(0).min((1 << TIMEOUT_BITS) - 1);
        let mut bytes = Vec::with_capacity(HEADER + user.len() + record.data.len());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(&record.created.to_le_bytes());
        bytes.extend_from_slice(&record.expires.to_le_bytes());
        let packed = timeout | (user.len() as u64) << TIMEOUT_BITS;
        bytes.extend_from_slice(&packed.to_le_bytes());
        bytes.extend_from_slice(user);
        bytes.extend_from_slice(&record.data);
        Entry(bytes.into_boxed_slice())
    }

    fn key(&self) -> StoreKey {
        let mut key = [0; KEY_LEN];
        key.copy_from_slice(&self.0[..KEY_LEN]);
        StoreKey::from_raw(key)
    }

    /// Its key's [`table_hash`], read in place (for rehashing).
    fn table_hash(&self) -> u64 {
        table_hash(&self.0[..KEY_LEN])
    }

    fn is(&self, key: &StoreKey) -> bool {
        self.0[..KEY_LEN] == key.as_bytes()[..]
    }

    fn word(&self, at: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }

    fn expires(&self) -> Millis {
        self.word(EXPIRES)
    }

    fn set_expires(&mut self, expires: Millis) {
        self.0[EXPIRES..EXPIRES + 8].copy_from_slice(&expires.to_le_bytes());
    }

    fn user_len(&self) -> usize {
        (self.word(TIMEOUT_AND_USER_LEN) >> TIMEOUT_BITS) as usize
    }

    fn user_bytes(&self) -> &[u8] {
        &self.0[HEADER..HEADER + self.user_len()]
    }

    /// The user, if any. The bytes were a `UserId` when stored.
    fn user(&self) -> Option<UserId> {
        let bytes = self.user_bytes();
        (!bytes.is_empty())
            .then(|| UserId::from_bytes(bytes).ok())
            .flatten()
    }

    fn record(&self) -> Record {
        let timeout = self.word(TIMEOUT_AND_USER_LEN) & ((1 << TIMEOUT_BITS) - 1);
        Record {
            data: self.0[HEADER + self.user_len()..].to_vec(),
            created: self.word(CREATED),
            expires: self.expires(),
            timeout: (timeout > 0).then_some(timeout),
            user: self.user(),
        }
    }

    /// What the entry counts against the store's `max_memory`.
    fn cost(&self) -> usize {
        self.0.len() + ENTRY_OVERHEAD
    }
}

/// The table's hash of a key's bytes: bytes the shard's choice does not
/// use, as keys are uniformly random (SHA-256).
fn table_hash(key: &[u8]) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&key[8..16]);
    u64::from_le_bytes(b)
}

/// One shard's table of entries, found by their key.
#[derive(Default)]
struct Shard(HashTable<Entry>);

impl Shard {
    fn get(&self, key: &StoreKey) -> Option<&Entry> {
        self.0.find(table_hash(key.as_bytes()), |e| e.is(key))
    }

    fn get_mut(&mut self, key: &StoreKey) -> Option<&mut Entry> {
        self.0.find_mut(table_hash(key.as_bytes()), |e| e.is(key))
    }

    /// Stores `entry`, answering what it replaced.
    fn insert(&mut self, key: &StoreKey, entry: Entry) -> Option<Entry> {
        match self
            .0
            .entry(table_hash(key.as_bytes()), |e| e.is(key), Entry::table_hash)
        {
            Slot::Occupied(mut slot) => Some(std::mem::replace(slot.get_mut(), entry)),
            Slot::Vacant(slot) => {
                slot.insert(entry);
                None
            }
        }
    }

    fn remove(&mut self, key: &StoreKey) -> Option<Entry> {
        let slot = self
            .0
            .find_entry(table_hash(key.as_bytes()), |e| e.is(key))
            .ok()?;
        Some(slot.remove().0)
    }

    /// Gives back the slots of a table left mostly empty (after a flood
    /// expired, or `clear`): a table never shrinks by itself, and its
    /// slots are outside what `max_memory` counts.
    fn shrink_if_sparse(&mut self) {
        if self.0.capacity() > 4 * self.0.len() + 64 {
            self.0.shrink_to_fit(Entry::table_hash);
        }
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

    /// Takes room for a change of `sessions` entries and `bytes` of cost,
    /// or says the store is full.
    fn claim(
        &self,
        shard: &mut Shard,
        now: Millis,
        sessions: usize,
        bytes: usize,
    ) -> Result<(), Error> {
        let inner = &*self.inner;
        if inner.try_claim(sessions, bytes).is_ok() {
            return Ok(());
        }
        // Full: what expired in this shard makes room before refusing.
        inner.drop_expired(shard, now, None);
        inner
            .try_claim(sessions, bytes)
            .map_err(|full| Error::unavailable("storing a session", full))
    }
}

/// The store is at one of its bounds.
#[derive(Debug, thiserror::Error)]
enum Full {
    #[error("the RAM store holds its max_sessions ({0}); new sessions wait for room")]
    Sessions(usize),
    #[error(
        "the RAM store's sessions take its max_memory ({0} bytes); new sessions wait for room"
    )]
    Memory(usize),
}

/// The default bound on memory: see "A bound on memory" on
/// [`MemoryStore`].
pub fn default_max_memory() -> usize {
    let memory = usable_memory().unwrap_or(ASSUMED_MEMORY);
    usize::try_from(memory / MEMORY_SHARE).unwrap_or(usize::MAX)
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
    /// Counts `sessions` more entries and `bytes` more cost unless that
    /// would pass a bound. Only what grows is checked, so a save that
    /// needs no more room always goes through (also under a lowered bound);
    /// a refused claim never shows in the counts, where it could make
    /// another one fail.
    fn try_claim(&self, sessions: usize, bytes: usize) -> Result<(), Full> {
        let max_sessions = self.max_sessions.load(Ordering::Relaxed);
        if sessions > 0 && !add_within(&self.sessions, sessions, max_sessions) {
            return Err(Full::Sessions(max_sessions));
        }
        let max_memory = self.max_memory.load(Ordering::Relaxed);
        if bytes > 0 && !add_within(&self.bytes, bytes, max_memory) {
            self.sessions.fetch_sub(sessions, Ordering::Relaxed);
            return Err(Full::Memory(max_memory));
        }
        Ok(())
    }

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

/// Adds `n` to `count` if the sum stays within `max`; whether it did.
fn add_within(count: &AtomicUsize, n: usize, max: usize) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            c.checked_add(n).filter(|&sum| sum <= max)
        })
        .is_ok()
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
        assert_eq!(default_max_memory() as u64, memory / 4);
        let store = MemoryStore::new();
        assert_eq!(store.max_memory(), default_max_memory());
        assert_eq!(store.max_sessions(), usize::MAX);
    }

    fn sized(ttl: u64, len: usize) -> Record {
        Record {
            data: vec![b'x'; len],
            ..record(ttl)
        }
    }

    /// The memory bound counts each entry's bytes and overhead: a new
    /// session or one that grows past it is refused, one that keeps its
    /// size or shrinks is saved, and a delete or clear gives the room back.
    #[tokio::test]
    async fn the_memory_bound_refuses_what_needs_more_room() {
        let cost = |len: usize| HEADER + len + ENTRY_OVERHEAD;
        let store = MemoryStore::new().with_max_memory(cost(100) * 2);
        let (a, b, c) = (
            StoreKey::generate().unwrap(),
            StoreKey::generate().unwrap(),
            StoreKey::generate().unwrap(),
        );
        assert!(store
            .save(&a, &sized(60_000, 100), SaveIf::Absent)
            .await
            .unwrap());
        assert!(store
            .save(&b, &sized(60_000, 50), SaveIf::Absent)
            .await
            .unwrap());
        let err = store
            .save(&c, &sized(60_000, 100), SaveIf::Absent)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains(&format!("max_memory ({} bytes)", cost(100) * 2)));
        // b may grow into the room left, not past it.
        assert!(store
            .save(&b, &sized(60_000, 100), SaveIf::Live)
            .await
            .unwrap());
        assert!(store
            .save(&b, &sized(60_000, 101), SaveIf::Live)
            .await
            .is_err());
        assert_eq!(store.load(&b).await.unwrap().unwrap().data.len(), 100);
        // Shrinking gives room back, and so does a delete.
        assert!(store
            .save(&a, &sized(60_000, 10), SaveIf::Live)
            .await
            .unwrap());
        store.delete(&b).await.unwrap();
        assert!(store
            .save(&c, &sized(60_000, 90), SaveIf::Absent)
            .await
            .unwrap());
        assert_eq!(
            store.inner.bytes.load(Ordering::Relaxed),
            cost(10) + cost(90)
        );
        store.clear();
        assert_eq!(store.inner.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(store.inner.sessions.load(Ordering::Relaxed), 0);
    }

    /// Under a bound lowered below what is stored, a stored session still
    /// saves what needs no more room; new ones wait.
    #[tokio::test]
    async fn a_lowered_bound_keeps_stored_sessions_saving() {
        let store = MemoryStore::new();
        let keys: Vec<StoreKey> = (0..4).map(|_| StoreKey::generate().unwrap()).collect();
        for key in &keys {
            assert!(store
                .save(key, &sized(60_000, 50), SaveIf::Absent)
                .await
                .unwrap());
        }
        let store = store.with_max_sessions(2).with_max_memory(1);
        assert!(store
            .save(&keys[0], &sized(60_000, 50), SaveIf::Live)
            .await
            .unwrap());
        assert!(store
            .save(&keys[1], &sized(60_000, 10), SaveIf::Live)
            .await
            .unwrap());
        assert!(store
            .save(&keys[2], &sized(60_000, 51), SaveIf::Live)
            .await
            .is_err());
        let newcomer = StoreKey::generate().unwrap();
        assert!(store
            .save(&newcomer, &record(60_000), SaveIf::Absent)
            .await
            .is_err());
        assert_eq!(store.inner.sessions.load(Ordering::Relaxed), 4);
    }

    /// The tables give their slots back once a flood of sessions expired
    /// and clean-up dropped them.
    #[tokio::test]
    async fn clean_up_shrinks_what_a_flood_left_empty() {
        let store = MemoryStore::new();
        let slots = |store: &MemoryStore| -> usize {
            store
                .inner
                .shards
                .iter()
                .map(|s| lock(s).0.capacity())
                .sum()
        };
        for _ in 0..20_000 {
            let key = StoreKey::generate().unwrap();
            assert!(store.save(&key, &record(1), SaveIf::Absent).await.unwrap());
        }
        let flooded = slots(&store);
        assert!(flooded >= 20_000, "{flooded}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.clean_up().await.unwrap(), 20_000);
        assert!(
            slots(&store) < flooded / 10,
            "{} of {flooded}",
            slots(&store)
        );
    }

    /// A new record saved over an expired one under the same key counts
    /// once, even when the store is full and drops what expired.
    #[tokio::test]
    async fn an_expired_record_in_the_way_counts_once() {
        let cost = HEADER + 2 + ENTRY_OVERHEAD;
        let store = MemoryStore::new().with_max_memory(cost);
        let key = StoreKey::generate().unwrap();
        assert!(store.save(&key, &record(1), SaveIf::Absent).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(store
            .save(&key, &record(60_000), SaveIf::Absent)
            .await
            .unwrap());
        assert_eq!(store.inner.bytes.load(Ordering::Relaxed), cost);
        assert_eq!(store.inner.sessions.load(Ordering::Relaxed), 1);
        assert_eq!(store.count().await.unwrap(), 1);
    }

    /// An entry gives back what it was stored with, with and without a
    /// user and its own timeout.
    #[tokio::test]
    async fn an_entry_keeps_every_field() {
        let store = MemoryStore::new();
        let key = StoreKey::generate().unwrap();
        let with_all = Record {
            timeout: Some(86_400_000),
            user: Some(UserId::new("ada@example.org").unwrap()),
            ..sized(60_000, 7)
        };
        for r in [record(60_000), with_all] {
            store.delete(&key).await.unwrap();
            assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
            let back = store.load(&key).await.unwrap().unwrap();
            assert_eq!(
                (
                    back.data,
                    back.created,
                    back.expires,
                    back.timeout,
                    back.user
                ),
                (r.data, r.created, r.expires, r.timeout, r.user)
            );
        }
        let mut keys: Vec<_> = store.keys().collect().await;
        assert_eq!(keys.pop().unwrap().unwrap(), key);
    }
}
