//! The one way a store waits for a session lock.
//!
//! Requests of one process queue on a per-session FIFO ([`LocalLocks`])
//! first: waiting there costs no thread, no connection and no round trip,
//! and a lock passes to the next local waiter the moment it is let go. Only
//! the request at the front of its session's queue asks the backend,
//! through a [`Waiter`]: it tries, and while the backend says the lock is
//! taken elsewhere it pauses until either the store
//! [wakes](LockWaits::wake) it (a backend notification that the lock was
//! released) or the one backoff of this crate runs out, and tries again,
//! until the caller's wait is used up. Stores whose backend cannot notify
//! simply never wake: the backoff alone then paces the polling.
//!
//! ```text
//! request ──► local FIFO (per key) ─► front: try backend ──taken──► pause ─┐
//!                                          ▲                               │
//!                                          └──── woken, or backoff over ◄──┘
//! ```

use std::any::Any;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, Notify, OwnedMutexGuard};
use tokio::time::Instant;

use super::Error;
use crate::id::{shard_of, KeyMap, StoreKey};
use crate::record::Record;

mod keep;
#[cfg(test)]
mod tests;

pub use keep::Keep;
use keep::Kept;

const SHARDS: usize = 32;

/// How long a waiter's claim on the next turn of a session's lock lasts
/// unless renewed, on the stores whose waiters poll (SQLite, memcached,
/// files): a waiter that finds the lock held claims the next turn, and
/// no other process takes the lock while that claim lives, so the process
/// that releases cannot take it straight back and starve the others. Far
/// above the longest pause between a waiter's attempts (the backoff's
/// 75 ms), so a waiter that keeps asking keeps its turn, and short enough
/// that one that gave up holds nobody up for long.
#[cfg_attr(
    not(any(all(feature = "file", unix), feature = "sqlite", feature = "memcached")),
    allow(dead_code)
)]
pub(crate) const TURN: Duration = Duration::from_secs(1);

/// How long a process that released a lock another process's polling
/// waiter waits for holds its own next request back: above the longest
/// pause between that waiter's attempts (the backoff's 50 ms and half
/// again), so that its next attempt finds the lock free.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const COURTESY: Duration = Duration::from_millis(100);

/// What a finishing request leaves for the next one of this process: the
/// store's backend lock, still held, and what it knows of the record.
pub(crate) type Handover = Box<dyn Any + Send>;

/// At most this many requests of one process in a row get a backend lock
/// handed over; then it is released, so that other processes get their
/// turn — on a store that cannot ask the holder for it back. One that can
/// ends the run when another process asks; [`MAX_HANDOVERS_ASKED`] is
/// then only the backstop for an ask that was lost.
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
const MAX_HANDOVERS: u32 = 8;

/// The bound of a run of hand-overs on a store that asks the holder for a
/// session back: an ask lost with a subscription that dropped unnoticed
/// (or not sent by an older release of this crate) delays the other
/// process by at most this many requests.
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
const MAX_HANDOVERS_ASKED: u32 = 64;

/// What a request that hands its lock over knows of the record it leaves.
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) enum Known {
    /// It saved this (or found the session gone: `None`).
    Record(Option<Record>),
    /// It saved nothing: the next request reads the record.
    Unknown,
}

/// The mutex of one session. Its content is empty but for the moment
/// between a holder handing its backend lock over and the next waiter
/// taking it.
type Slot = Arc<AsyncMutex<Option<Handover>>>;

/// A table entry: the session's mutex and how many claims (holder and
/// waiters) there are on it, counted under the shard's lock.
#[derive(Default)]
struct Entry {
    slot: Slot,
    claims: usize,
    /// Set while the slot holds a kept session (see [`Keep`]): the entry
    /// then outlives its last claim.
    kept: Option<Kept>,
    /// Another process asked for the session back while a request of this
    /// one held it: it is released at the end, neither kept nor handed on.
    wanted: bool,
}

/// A sharded table of per-session async mutexes, fair (first come, first
/// served).
///
/// The table never leaks: an entry is removed when the last holder or
/// waiter lets go of it. A hand-over nobody took (every waiter gave up) is
/// dropped with its entry, and its own `Drop` releases what it holds.
pub(crate) struct LocalLocks {
    shards: Box<[Mutex<KeyMap<Entry>>]>,
    /// How many sessions are kept, and the bytes of their records.
    kept_sessions: AtomicUsize,
    kept_bytes: AtomicUsize,
    /// Sessions recently asked back by another process, not kept until
    /// the instant given.
    bounced: Mutex<KeyMap<Instant>>,
    /// The task that releases kept sessions left idle, started at the
    /// first keep.
    sweeper: OnceLock<()>,
}

impl std::fmt::Debug for LocalLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLocks").finish_non_exhaustive()
    }
}

/// A held lock from [`LocalLocks`]; dropping it releases the lock and, if
/// nobody else wants the session, removes the table entry.
#[derive(Debug)]
pub(crate) struct LocalGuard {
    // Field order matters: the mutex guard is released before `claim`
    // tidies the table, so that a hand-over left in the mutex is dropped
    // with the entry when nobody waits for it.
    guard: Option<OwnedMutexGuard<Option<Handover>>>,
    claim: Claim,
}

/// A claim on a key's entry; dropping the last one removes the entry.
#[derive(Debug)]
struct Claim {
    locks: Arc<LocalLocks>,
    key: StoreKey,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut shard = self.locks.shard(&self.key);
        let last = shard.get_mut(&self.key).is_some_and(|entry| {
            entry.claims -= 1;
            // A kept session stays, unless it was asked back meanwhile.
            entry.claims == 0 && (entry.kept.is_none() || entry.wanted)
        });
        let removed = if last { shard.remove(&self.key) } else { None };
        // A hand-over in the removed mutex is dropped outside the shard's
        // lock: its `Drop` may spawn a release.
        drop(shard);
        self.locks.forget(removed);
    }
}

impl LocalGuard {
    /// Whether another request of this process waits for this session.
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
        allow(dead_code)
    )]
    pub(crate) fn has_waiters(&self) -> bool {
        let shard = self.claim.locks.shard(&self.claim.key);
        // Asked back by another process: let go, do not hand on.
        shard
            .get(&self.claim.key)
            .is_some_and(|e| e.claims > 1 && !e.wanted)
    }

    /// Lets go of the key, leaving `value` — the backend lock, still held —
    /// for the next waiter, which [`LockWaits::enter`] hands it to. Only
    /// worth it when [`has_waiters`](Self::has_waiters): should every
    /// waiter give up instead, the value is dropped with the entry.
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
        allow(dead_code)
    )]
    pub(crate) fn hand_over(mut self, value: Handover) {
        if let Some(guard) = self.guard.as_mut() {
            **guard = Some(value);
        }
    }
}

impl LocalLocks {
    pub(crate) fn new() -> Self {
        LocalLocks {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            kept_sessions: AtomicUsize::new(0),
            kept_bytes: AtomicUsize::new(0),
            bounced: Mutex::default(),
            sweeper: OnceLock::new(),
        }
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, KeyMap<Entry>> {
        // A poisoned shard only means a panic elsewhere while it was held;
        // the map itself is always consistent, so keep using it.
        self.shards[shard_of(key, SHARDS)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers interest in the session's lock: a claim on its table entry
    /// and the entry's mutex.
    fn claim(self: &Arc<Self>, key: &StoreKey) -> (Claim, Slot) {
        let mut shard = self.shard(key);
        let entry = shard.entry(*key).or_default();
        entry.claims += 1;
        let slot = Arc::clone(&entry.slot);
        drop(shard);
        let claim = Claim {
            locks: Arc::clone(self),
            key: *key,
        };
        (claim, slot)
    }

    /// Waits at most `wait` for the session's lock; `None` on timeout. With
    /// the lock comes what the previous holder handed over, if anything.
    pub(crate) async fn lock(
        self: &Arc<Self>,
        key: &StoreKey,
        wait: Duration,
    ) -> Option<(LocalGuard, Option<Handover>)> {
        let (claim, slot) = self.claim(key);
        // Uncontended, the usual case: no timer to arm.
        let mut guard = match Arc::clone(&slot).try_lock_owned() {
            Ok(guard) => guard,
            // On timeout or cancellation the wait is dropped before
            // `claim`, which then tidies the entry.
            Err(_) => tokio::time::timeout(wait, slot.lock_owned()).await.ok()?,
        };
        let handed = guard.take();
        if handed.is_some() {
            self.taken_out(key);
        }
        let local = LocalGuard {
            guard: Some(guard),
            claim,
        };
        Some((local, handed))
    }

    /// Takes the lock if it is free right now.
    #[cfg_attr(not(all(feature = "file", unix)), allow(dead_code))]
    pub(crate) fn try_lock(self: &Arc<Self>, key: &StoreKey) -> Option<LocalGuard> {
        let (claim, slot) = self.claim(key);
        let mut guard = slot.try_lock_owned().ok()?;
        // Clean-up takes no hand-over: dropping one releases it.
        if guard.take().is_some() {
            self.taken_out(key);
        }
        Some(LocalGuard {
            guard: Some(guard),
            claim,
        })
    }

    /// Whether the session's lock is held or awaited right now.
    #[cfg_attr(not(all(feature = "file", unix)), allow(dead_code))]
    pub(crate) fn is_busy(&self, key: &StoreKey) -> bool {
        self.shard(key).contains_key(key)
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

/// The lock waits of one store in one process: the local FIFO per session and
/// the wake-up signals of the waiters at the front of each queue.
#[derive(Debug)]
pub(crate) struct LockWaits {
    local: Arc<LocalLocks>,
    /// One entry per key whose front waiter is asking the backend right now
    /// (the local FIFO lets only one per key do so), removed when it stops.
    wakeups: Box<[Mutex<KeyMap<Arc<Notify>>>]>,
}

impl LockWaits {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(LockWaits {
            local: Arc::new(LocalLocks::new()),
            wakeups: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    /// Waits at most `wait` for the session's place at the front of this
    /// process's queue: all a store whose locks live in this process needs.
    pub(crate) async fn local(&self, key: &StoreKey, wait: Duration) -> Result<LocalGuard, Error> {
        // A store that waits only locally hands nothing over.
        let (local, _) = self.queue(key, wait).await?;
        Ok(local)
    }

    async fn queue(
        &self,
        key: &StoreKey,
        wait: Duration,
    ) -> Result<(LocalGuard, Option<Handover>), Error> {
        self.local
            .lock(key, wait)
            .await
            .ok_or(Error::LockTimeout(wait))
    }

    /// Takes the session's local place if it is free right now (for clean-up,
    /// which must never wait behind a request).
    #[cfg_attr(not(all(feature = "file", unix)), allow(dead_code))]
    pub(crate) fn try_local(&self, key: &StoreKey) -> Option<LocalGuard> {
        self.local.try_lock(key)
    }

    /// Whether a request of this process holds or awaits the session's lock.
    #[cfg_attr(not(all(feature = "file", unix)), allow(dead_code))]
    pub(crate) fn is_busy(&self, key: &StoreKey) -> bool {
        self.local.is_busy(key)
    }

    /// Queues for the session in this process, then hands back the [`Waiter`]
    /// through which the front of the queue asks the backend. The whole
    /// wait, queue and backend together, is bounded by `wait`.
    #[cfg_attr(not(all(feature = "file", unix)), allow(dead_code))]
    pub(crate) async fn enter(
        self: &Arc<Self>,
        key: &StoreKey,
        wait: Duration,
    ) -> Result<Waiter, Error> {
        // A store that never hands over finds nothing to take.
        match self.enter_or_take::<()>(key, wait).await? {
            Entered::Front(waiter) => Ok(waiter),
            Entered::HandedOver(local, _) => Ok(self.waiter(key, local, deadline(wait), wait)),
        }
    }

    /// Like [`enter`](Self::enter), for a store that hands its backend lock
    /// from a finishing request to the next of this process
    /// ([`LocalGuard::hand_over`]): the next one then gets it here, with no
    /// round trip.
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
        allow(dead_code)
    )]
    pub(crate) async fn enter_or_take<T: Any + Send>(
        self: &Arc<Self>,
        key: &StoreKey,
        wait: Duration,
    ) -> Result<Entered<T>, Error> {
        let deadline = deadline(wait);
        let (local, handed) = self.queue(key, wait).await?;
        if let Some(value) = handed {
            // Anything but this store's own hand-over is dropped, which
            // releases it.
            if let Ok(value) = value.downcast::<T>() {
                return Ok(Entered::HandedOver(local, value));
            }
        }
        Ok(Entered::Front(self.waiter(key, local, deadline, wait)))
    }

    fn waiter(
        self: &Arc<Self>,
        key: &StoreKey,
        local: LocalGuard,
        deadline: Instant,
        wait: Duration,
    ) -> Waiter {
        // Registered before the first attempt, so that a release the
        // backend reports between an attempt and the pause after it is
        // kept as a permit instead of lost.
        let notify = Arc::new(Notify::new());
        self.wakeups(key).insert(*key, Arc::clone(&notify));
        Waiter {
            local: Some(local),
            waits: Arc::clone(self),
            key: *key,
            notify,
            deadline,
            wait,
            step: Backoff::FIRST,
        }
    }

    /// Another process asks for the session (the store's notification): a
    /// session kept here idle is released now, one in use at the end of
    /// its request.
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn give_back(&self, key: &StoreKey) {
        self.local.give_back(key);
    }

    /// Releases every session kept idle: the notifications that ask for
    /// them back stopped coming (the store's subscription was lost), so
    /// another process might wait for one until it is idle long enough.
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn release_kept(&self) {
        self.local.sweep(Duration::ZERO);
    }

    /// The front of the queue for a request that holds `local` but whose
    /// hand-over turned out to be worthless (its lease was lost): it asks
    /// the backend as any front waiter does.
    #[cfg_attr(
        not(any(
            feature = "redis",
            feature = "postgres",
            feature = "sqlite",
            feature = "memcached"
        )),
        allow(dead_code)
    )]
    pub(crate) fn front(
        self: &Arc<Self>,
        key: &StoreKey,
        local: LocalGuard,
        wait: Duration,
    ) -> Waiter {
        self.waiter(key, local, deadline(wait), wait)
    }

    /// The backend says the session's lock was let go: the waiter of this
    /// process at the front of its queue, if any, tries again now.
    #[cfg_attr(
        not(any(test, feature = "redis", feature = "postgres")),
        allow(dead_code)
    )]
    pub(crate) fn wake(&self, key: &StoreKey) {
        if let Some(notify) = self.wakeups(key).get(key) {
            notify.notify_one();
        }
    }

    fn wakeups(&self, key: &StoreKey) -> MutexGuard<'_, KeyMap<Arc<Notify>>> {
        // As for the lock table: a poisoned shard is still consistent.
        self.wakeups[shard_of(key, SHARDS)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether anyone holds or waits for a lock (for tests).
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.local.len() == 0
            && self
                .wakeups
                .iter()
                .all(|s| s.lock().unwrap_or_else(|e| e.into_inner()).is_empty())
    }
}

/// This process's place at the front of a session's queue, as a store's lock
/// value holds it: let go once the backend lock is released, or passed on
/// with the backend lock to the next request of the process — a bounded
/// run of them ([`Place::hand_over_next`]), so that other processes get
/// their turn.
#[derive(Debug)]
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) struct Place {
    /// `None` while the lock waits in a hand-over, and after it was passed
    /// on.
    local: Option<LocalGuard>,
    /// How many requests in a row have had the lock handed over.
    handovers: u32,
    /// The backend lock is being released: no hand-over.
    releasing: bool,
}

#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
impl Place {
    pub(crate) fn new(local: LocalGuard) -> Self {
        Place {
            local: Some(local),
            handovers: 0,
            releasing: false,
        }
    }

    /// Whether the lock should go to the next request of this process
    /// instead of being released: one waits, and the run of hand-overs has
    /// not reached its bound — a longer one if the store `can_ask_back`:
    /// there another process that wants the session asks for it (the
    /// store's notification, [`LockWaits::give_back`]), which ends the run.
    pub(crate) fn hand_over_next(&self, can_ask_back: bool) -> bool {
        let bound = match can_ask_back {
            true => MAX_HANDOVERS_ASKED,
            false => MAX_HANDOVERS,
        };
        !self.releasing
            && self.handovers < bound
            && self.local.as_ref().is_some_and(LocalGuard::has_waiters)
    }

    /// No hand-over from here on: the backend lock is being released.
    pub(crate) fn release_only(&mut self) {
        self.releasing = true;
    }

    /// Whether the place was passed on with the lock.
    pub(crate) fn is_handed_over(&self) -> bool {
        self.local.is_none()
    }

    /// Passes the place on: `make` builds the hand-over around the next
    /// holder's place, which it fills in when it takes it ([`take`]).
    /// Nothing happens if the place was passed on already.
    ///
    /// [`take`]: Self::take
    pub(crate) fn hand_over<T: Any + Send>(&mut self, make: impl FnOnce(Place) -> T) {
        let Some(local) = self.local.take() else {
            return;
        };
        let next = Place {
            local: None,
            handovers: self.handovers.saturating_add(1),
            releasing: false,
        };
        local.hand_over(Box::new(make(next)));
    }

    /// Whether the session may be kept after this request, with a record
    /// of `bytes` (see [`Keep`]).
    pub(crate) fn may_keep(&self, bytes: usize, keep: &Keep) -> bool {
        self.local.as_ref().is_some_and(|l| l.may_keep(bytes, keep))
    }

    /// Keeps the session in this process after the request: `make` builds
    /// what is kept around the next holder's place, as for
    /// [`hand_over`](Self::hand_over). Nothing happens if the place was
    /// passed on already.
    pub(crate) fn keep<T: Any + Send>(
        &mut self,
        bytes: usize,
        keep: &Keep,
        make: impl FnOnce(Place) -> T,
    ) {
        let Some(local) = self.local.take() else {
            return;
        };
        // A kept session starts a new run of hand-overs: another process
        // that wants it asks for it back.
        let next = Place {
            local: None,
            handovers: 0,
            releasing: false,
        };
        local.keep(Box::new(make(next)), bytes, keep);
    }

    /// Fills in the place of a hand-over this request received.
    pub(crate) fn take(&mut self, local: LocalGuard) {
        self.local = Some(local);
    }

    /// The queue's guard, for the store to let go of once the backend lock
    /// is released.
    pub(crate) fn let_go(&mut self) -> Option<LocalGuard> {
        self.local.take()
    }
}

/// How a request reached the front of its session's queue in this process.
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) enum Entered<T> {
    /// The previous holder handed its backend lock over: it is held
    /// already, and `T` says what the store needs to know of it.
    HandedOver(LocalGuard, Box<T>),
    /// Ask the backend.
    Front(Waiter),
}

/// The front of a session's local queue, asking the backend for the lock:
///
/// ```text
/// let mut waiter = waits.enter(&key, wait).await?;
/// loop {
///     if let Some(lock) = try_backend().await? {
///         return Ok(StoreLock { lock, local: waiter.granted() });
///     }
///     waiter.pause().await?; // Err(LockTimeout) once `wait` is used up
/// }
/// ```
#[derive(Debug)]
#[cfg_attr(
    not(any(
        feature = "file",
        feature = "redis",
        feature = "postgres",
        feature = "sqlite"
    )),
    allow(dead_code)
)]
pub(crate) struct Waiter {
    local: Option<LocalGuard>,
    waits: Arc<LockWaits>,
    key: StoreKey,
    notify: Arc<Notify>,
    deadline: Instant,
    wait: Duration,
    step: Duration,
}

#[cfg_attr(
    not(any(
        feature = "file",
        feature = "redis",
        feature = "postgres",
        feature = "sqlite"
    )),
    allow(dead_code)
)]
impl Waiter {
    /// The lock timeout error for this wait.
    pub(crate) fn timed_out(&self) -> Error {
        Error::LockTimeout(self.wait)
    }

    /// Pauses before the next attempt: until the store wakes this waiter
    /// or the backoff step is over, whichever comes first. Fails with
    /// [`Error::LockTimeout`] once the caller's wait is used up.
    pub(crate) async fn pause(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(self.timed_out());
        }
        let until = (now + Backoff::jittered(self.step)).min(self.deadline);
        // Woken or not, the next attempt comes now.
        let _ = tokio::time::timeout_at(until, self.notify.notified()).await;
        self.step = Backoff::next(self.step);
        Ok(())
    }

    /// The backend granted the lock. The local place goes with it: the
    /// store keeps it in its lock value and lets it go with the backend
    /// lock, so the next waiter of this process starts only then.
    pub(crate) fn granted(mut self) -> LocalGuard {
        // Taken from the backend after finding it held elsewhere: whoever
        // asked for the session back has had it, so it may be handed on
        // (and kept) again. (A process still waiting asks again at its
        // next attempt.)
        if self.step != Backoff::FIRST {
            if let Some(entry) = self.waits.local.shard(&self.key).get_mut(&self.key) {
                entry.wanted = false;
            }
        }
        self.local
            .take()
            .expect("a waiter holds its local place until granted")
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut wakeups = self.waits.wakeups(&self.key);
        if wakeups
            .get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            wakeups.remove(&self.key);
        }
    }
}

/// The instant `wait` from now. A wait longer than the clock can add (a
/// `lock_timeout` of `Duration::MAX`, set in code) would panic; past 30
/// years, as for tokio's own timers, every wait is the same.
fn deadline(wait: Duration) -> Instant {
    const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    Instant::now() + wait.min(FOREVER)
}

/// The one backoff between lock attempts: short at first, so that a
/// hand-over between processes is quick, doubling to a cap, with jitter so
/// that waiters of several processes do not move in step. Where the
/// backend notifies, it is only the backstop for a missed notification.
struct Backoff;

impl Backoff {
    const FIRST: Duration = Duration::from_millis(2);
    const MAX: Duration = Duration::from_millis(50);

    fn next(step: Duration) -> Duration {
        (step * 2).min(Self::MAX)
    }

    /// `step` plus up to half of it again.
    fn jittered(step: Duration) -> Duration {
        // The clock's low bits are random enough to spread waiters; this
        // needs no cryptographic randomness.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let half = step.as_nanos() as u64 / 2 + 1;
        step + Duration::from_nanos(u64::from(nanos) % half)
    }
}
