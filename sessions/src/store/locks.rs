//! Per-id async locks for one process, in a table that holds an entry only
//! while someone holds or waits for that id's lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::id::SessionId;

/// Ids are uniformly random, so their first bytes are already a good hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `SessionId` hashes as its 20 bytes; take eight of them.
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

pub(crate) type IdMap<V> = HashMap<SessionId, V, BuildHasherDefault<IdHasher>>;

const SHARDS: usize = 32;

/// Picks the shard for an id from bytes the table hasher does not use.
pub(crate) fn shard_of(id: &SessionId, shards: usize) -> usize {
    (id.prefix_u64() >> 56) as usize % shards
}

type Slot = Arc<AsyncMutex<()>>;

/// A sharded table of per-id async mutexes.
///
/// The table never leaks: an entry is removed when the last holder or
/// waiter lets go of it. Every increase of an entry's reference count
/// happens under its shard's lock, so the holder that sees the count fall
/// to the table's own reference knows nobody else can be using it.
#[derive(Debug)]
pub(crate) struct LocalLocks {
    shards: Box<[Mutex<IdMap<Slot>>]>,
}

/// A held lock from [`LocalLocks`]; dropping it releases the lock and, if
/// nobody else wants the id, removes the table entry.
#[derive(Debug)]
pub(crate) struct LocalGuard {
    // Field order matters: the mutex guard (which holds a reference to the
    // slot) is released before `claim` tidies the table.
    _guard: Option<OwnedMutexGuard<()>>,
    _claim: Claim,
}

/// A reference to a slot that tidies the table when dropped.
#[derive(Debug)]
struct Claim {
    locks: Arc<LocalLocks>,
    id: SessionId,
    slot: Option<Slot>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut shard = self.locks.shard(&self.id);
        drop(self.slot.take());
        if shard
            .get(&self.id)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            shard.remove(&self.id);
        }
    }
}

impl LocalLocks {
    pub(crate) fn new() -> Self {
        LocalLocks {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, IdMap<Slot>> {
        // A poisoned shard only means a panic elsewhere while it was held;
        // the map itself is always consistent, so keep using it.
        self.shards[shard_of(id, SHARDS)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers interest in the id's lock: a claim on its table entry and
    /// the entry's mutex. The claim must outlive every other reference this
    /// caller takes to the slot, so that its drop sees the final count.
    fn claim(self: &Arc<Self>, id: &SessionId) -> (Claim, Slot) {
        let slot = Arc::clone(self.shard(id).entry(*id).or_default());
        let claim = Claim {
            locks: Arc::clone(self),
            id: *id,
            slot: Some(Arc::clone(&slot)),
        };
        (claim, slot)
    }

    /// Waits at most `wait` for the id's lock; `None` on timeout.
    pub(crate) async fn lock(
        self: &Arc<Self>,
        id: &SessionId,
        wait: Duration,
    ) -> Option<LocalGuard> {
        let (claim, slot) = self.claim(id);
        // Uncontended, the usual case: no timer to arm.
        let guard = match Arc::clone(&slot).try_lock_owned() {
            Ok(guard) => guard,
            // `slot` moves into the wait; on timeout or cancellation the
            // wait is dropped before `claim`, which then tidies the entry.
            Err(_) => tokio::time::timeout(wait, slot.lock_owned()).await.ok()?,
        };
        Some(LocalGuard {
            _guard: Some(guard),
            _claim: claim,
        })
    }

    /// Takes the lock if it is free right now.
    #[cfg_attr(not(all(feature = "file", unix)), allow(dead_code))]
    pub(crate) fn try_lock(self: &Arc<Self>, id: &SessionId) -> Option<LocalGuard> {
        let (claim, slot) = self.claim(id);
        let guard = slot.try_lock_owned().ok()?;
        Some(LocalGuard {
            _guard: Some(guard),
            _claim: claim,
        })
    }

    /// Whether the id's lock is held or awaited right now.
    #[cfg_attr(not(all(feature = "file", unix)), allow(dead_code))]
    pub(crate) fn is_busy(&self, id: &SessionId) -> bool {
        self.shard(id).contains_key(id)
    }

    /// Whether anyone holds or waits for a lock (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exclusion_timeout_and_no_leak() {
        let locks = Arc::new(LocalLocks::new());
        let id = SessionId::generate().unwrap();
        let g = locks.lock(&id, Duration::from_secs(1)).await.unwrap();
        assert!(locks.try_lock(&id).is_none());
        assert!(locks.lock(&id, Duration::from_millis(20)).await.is_none());
        assert_eq!(locks.len(), 1);
        drop(g);
        assert_eq!(locks.len(), 0);
        let g = locks.try_lock(&id).unwrap();
        drop(g);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_leave_nothing_behind() {
        let locks = Arc::new(LocalLocks::new());
        let id = SessionId::generate().unwrap();
        let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (locks, counter) = (locks.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                // Some waiters give up early, exercising the cancel path.
                let wait = if i % 5 == 0 { 1 } else { 5_000 };
                if let Some(_g) = locks.lock(&id, Duration::from_millis(wait)).await {
                    let n = counter.load(std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    counter.store(n + 1, std::sync::atomic::Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(counter.load(std::sync::atomic::Ordering::SeqCst) >= 40);
        assert_eq!(locks.len(), 0);
    }
}
