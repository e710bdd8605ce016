//! The RAM store's bound: what a session costs, the default bound on
//! memory, and the claim of room a save makes, refused when the store is
//! full (see "A bound on memory" on [`MemoryStore`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::table::Shard;
use super::{Inner, MemoryStore};
use crate::record::Millis;
use crate::store::Error;

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

impl MemoryStore {
    /// Takes room for a change of `sessions` entries and `bytes` of cost,
    /// or says the store is full.
    pub(super) fn claim(
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
}

/// Adds `n` to `count` if the sum stays within `max`; whether it did.
fn add_within(count: &AtomicUsize, n: usize, max: usize) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            c.checked_add(n).filter(|&sum| sum <= max)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::table::HEADER;
    use super::super::tests::{record, sized};
    use super::super::SHARDS;
    use super::*;
    use crate::id::{shard_of, StoreKey};
    use crate::record::now_millis;
    use crate::store::{SaveIf, SessionAdmin, SessionStore};
    use std::time::Duration;

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
}
