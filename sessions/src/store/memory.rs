//! The RAM store: sessions in this process's memory.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::{Error, LockGuard, LockWaits, SaveIf, SessionAdmin, SessionStore};
use crate::id::{shard_of, KeyMap, StoreKey};
use crate::record::{now_millis, Millis, Record};

const SHARDS: usize = 64;

/// Sessions kept in RAM, for one process (CherryPy's `RamSession`).
///
/// The map is split into shards, each behind its own short-held mutex, so
/// requests on different sessions rarely meet. Data is kept as the encoded
/// bytes the session handle produced, which is both the smallest form and
/// the one a load hands back without re-encoding. Cloning the store is
/// cheap and shares the sessions.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<KeyMap<Entry>>]>,
    /// The lock of a RAM session is its place in this process's queue.
    locks: Arc<LockWaits>,
}

#[derive(Debug)]
struct Entry {
    data: Box<[u8]>,
    created: Millis,
    expires: Millis,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                locks: LockWaits::new(),
            }),
        }
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, KeyMap<Entry>> {
        lock_shard(&self.inner.shards[shard_of(key, SHARDS)])
    }

    /// Removes every session (CherryPy's `cache.clear()`).
    pub fn clear(&self) {
        for shard in self.inner.shards.iter() {
            lock_shard(shard).clear();
        }
    }
}

fn lock_shard(shard: &Mutex<KeyMap<Entry>>) -> MutexGuard<'_, KeyMap<Entry>> {
    // Nothing panics while a shard is held, but if something ever did the
    // map would still be consistent: keep serving rather than poison.
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let now = now_millis();
        Ok(self.shard(key).get(key).and_then(|e| {
            (e.expires > now).then(|| Record {
                data: e.data.to_vec(),
                created: e.created,
                expires: e.expires,
            })
        }))
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        let now = now_millis();
        let mut shard = self.shard(key);
        let live = shard.get(key).is_some_and(|e| e.expires > now);
        if live != (write == SaveIf::Live) {
            return Ok(false);
        }
        shard.insert(
            *key,
            Entry {
                data: record.data.as_slice().into(),
                created: record.created,
                expires: record.expires,
            },
        );
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
        self.shard(key).remove(key);
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

    async fn clean_up(&self) -> Result<u64, Error> {
        let now = now_millis();
        let mut removed = 0;
        for shard in self.inner.shards.iter() {
            // Held locks live in a separate table, so dropping expired data
            // here can never release or orphan a lock someone holds.
            let mut map = lock_shard(shard);
            let before = map.len();
            map.retain(|_, e| e.expires > now);
            removed += (before - map.len()) as u64;
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
            };
            assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
        }
        assert_eq!(store.clean_up().await.unwrap(), 2);
        assert_eq!(store.count().await.unwrap(), 1);
        assert_eq!(store.keys().count().await, 1);
    }
}
