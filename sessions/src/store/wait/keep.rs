//! Keeping a session in the process between requests: the bounds a
//! process keeps within, and the table's side of it — a kept hand-over
//! outlives its last claim, is taken by the session's next request, given
//! back when another process asks, and released when idle too long.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Entry, Handover, LocalGuard, LocalLocks};
use crate::id::StoreKey;

/// When a kept session was left, and the size of the record kept with it.
#[derive(Clone, Copy)]
pub(super) struct Kept {
    since: Instant,
    bytes: usize,
}

/// What a process may keep of the sessions its requests used: a session's
/// backend lock (its lease) and the record it just saved stay in the
/// process after the request, so that the next request of that session
/// here starts with no round trip. Another process that wants the session
/// asks for it back (the store's notification), and gets it at once when
/// it is idle, or at the end of the request in flight. Bounded by these
/// limits: past them, a request releases as if keeping were off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// How long a kept session may sit unused before its lock is released
    /// (default 2 s).
    pub idle: Duration,
    /// At most this many sessions kept at once (default 10,000).
    pub sessions: usize,
    /// At most this many bytes of kept records (default 64 MiB).
    pub bytes: usize,
}

impl Default for Keep {
    fn default() -> Self {
        Keep {
            idle: Duration::from_secs(2),
            sessions: 10_000,
            bytes: 64 << 20,
        }
    }
}

/// How long a session another process asked back is not kept again: a
/// session that moves between processes (a round-robin balancer) would
/// otherwise cost a give-back at every request.
const BOUNCE: Duration = Duration::from_secs(10);

impl LocalGuard {
    /// Whether a session with a record of `bytes` may be kept: it was not
    /// asked back, lately or now, and the bounds leave room.
    pub(crate) fn may_keep(&self, bytes: usize, keep: &Keep) -> bool {
        let locks = &self.claim.locks;
        if locks.kept_sessions.load(Ordering::Relaxed) >= keep.sessions
            || locks
                .kept_bytes
                .load(Ordering::Relaxed)
                .saturating_add(bytes)
                > keep.bytes
            || locks.bounced(&self.claim.key)
        {
            return false;
        }
        let shard = locks.shard(&self.claim.key);
        shard.get(&self.claim.key).is_some_and(|e| !e.wanted)
    }

    /// Lets go of the key, leaving `value` — the backend lock, still held,
    /// and the record — in the table for the next request of the session,
    /// even if none waits now: kept until it is taken, asked back, or idle
    /// for `keep.idle`. Refused (and `value` dropped, which releases it)
    /// when the session was asked back meanwhile or no runtime runs.
    pub(crate) fn keep(mut self, value: Handover, bytes: usize, keep: &Keep) {
        let locks = Arc::clone(&self.claim.locks);
        if !locks.sweep_every(keep.idle) {
            return;
        }
        {
            let mut shard = locks.shard(&self.claim.key);
            let Some(entry) = shard.get_mut(&self.claim.key).filter(|e| !e.wanted) else {
                drop(shard);
                drop(value);
                return;
            };
            entry.kept = Some(Kept {
                since: Instant::now(),
                bytes,
            });
        }
        locks.kept_sessions.fetch_add(1, Ordering::Relaxed);
        locks.kept_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(guard) = self.guard.as_mut() {
            **guard = Some(value);
        }
    }
}

impl LocalLocks {
    /// Counts out what a removed entry kept, and drops it (outside every
    /// lock: a kept lease's `Drop` spawns its release).
    pub(super) fn forget(&self, removed: Option<Entry>) {
        if let Some(kept) = removed.as_ref().and_then(|e| e.kept) {
            self.uncount(kept);
        }
        drop(removed);
    }

    /// A hand-over was taken out of the session's slot: if it was kept
    /// there, it is no longer.
    pub(super) fn taken_out(&self, key: &StoreKey) {
        let kept = self.shard(key).get_mut(key).and_then(|e| e.kept.take());
        if let Some(kept) = kept {
            self.uncount(kept);
        }
    }

    pub(super) fn uncount(&self, kept: Kept) {
        self.kept_sessions.fetch_sub(1, Ordering::Relaxed);
        self.kept_bytes.fetch_sub(kept.bytes, Ordering::Relaxed);
    }

    /// Whether the session was asked back by another process lately.
    pub(super) fn bounced(&self, key: &StoreKey) -> bool {
        let bounced = self.bounced.lock().unwrap_or_else(|e| e.into_inner());
        bounced
            .get(key)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Another process wants the session: released now if it is kept
    /// idle, at the end of its request if one holds it; either way not
    /// kept again for [`BOUNCE`].
    pub(super) fn give_back(&self, key: &StoreKey) {
        let removed = {
            let mut shard = self.shard(key);
            match shard.get_mut(key) {
                Some(entry) if entry.claims == 0 => shard.remove(key),
                Some(entry) => {
                    entry.wanted = true;
                    None
                }
                None => return,
            }
        };
        {
            let now = Instant::now();
            let mut bounced = self.bounced.lock().unwrap_or_else(|e| e.into_inner());
            if bounced.len() >= 4096 {
                bounced.retain(|_, until| *until > now);
            }
            bounced.insert(*key, now + BOUNCE);
        }
        self.forget(removed);
    }

    /// Starts, once, the task that releases sessions kept idle for `idle`;
    /// false if no runtime runs to start it on.
    pub(super) fn sweep_every(self: &Arc<Self>, idle: Duration) -> bool {
        if self.sweeper.get().is_some() {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let weak = Arc::downgrade(self);
        self.sweeper.get_or_init(|| {
            runtime.spawn(async move {
                let period = (idle / 2).max(Duration::from_millis(10));
                loop {
                    tokio::time::sleep(period).await;
                    let Some(locks) = weak.upgrade() else { return };
                    locks.sweep(idle);
                }
            });
        });
        true
    }

    /// Releases every session kept unused for `idle` or longer.
    pub(super) fn sweep(&self, idle: Duration) {
        if self.kept_sessions.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let stale: Vec<StoreKey> = shard
                .iter()
                .filter(|(_, e)| e.claims == 0 && e.kept.is_some_and(|k| now - k.since >= idle))
                .map(|(key, _)| *key)
                .collect();
            let removed: Vec<Entry> = stale.iter().filter_map(|k| shard.remove(k)).collect();
            drop(shard);
            for entry in removed {
                self.forget(Some(entry));
            }
        }
    }
}
