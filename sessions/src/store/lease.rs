//! Lease locks, the one lock machinery of every remote store (Redis, the
//! SQL stores, memcached): a row in `<table>_locks` (a key `<key>:lock` in
//! Redis and memcached) per held lock, taken when free or when its
//! holder's lease ran out, renewed while held, released by its owner, and
//! checked by the save that releases it.
//!
//! A lease holds no connection: the handler runs while the lock is a row
//! or a key, not a session on the server, so a process serves as many
//! requests at once as it likes with a small pool, and the SQL stores work
//! behind PgBouncer in transaction pooling mode. The rules are the same
//! for every store; each supplies its steps ([`LeaseBackend`]: statements,
//! scripts, meta commands) and what is its own (Redis publishes a release
//! to another process's waiter and may wait for replicas).
//!
//! - **Take**: insert the lock row, or take over one whose lease ran out
//!   (`lease_expires <= now`). A holder that vanished frees its lock one
//!   lease later.
//! - **Turns** (SQLite, memcached): a take that finds the lock held
//!   claims the next turn — a row `<key>~turn` (an item `<key>:turn`) with
//!   its owner token, lasting `wait::TURN` and renewed by each of its later
//!   attempts — unless another waiter's claim is live (first come, first
//!   served). A take succeeds only when no other owner's claim is live, and
//!   ends its own. Without this, a release lets the releasing process's
//!   next request take the lock again at once, while another process,
//!   which only polls, finds it held at every attempt and starves.
//!   PostgreSQL needs no turns: its `NOTIFY` wakes the other process's
//!   waiter at the release, which then races on equal terms.
//! - **Renew**: every third of the lease, while the guard lives.
//! - **Release**: delete the row if it is still ours.
//! - **Save and release**: in one atomic step, delete the row if it is
//!   still ours and write the session only if that deleted a row. A save
//!   whose lease was lost (taken over after it ran out) writes nothing and
//!   fails with [`Error::Unavailable`]: another request may hold the
//!   session by then, and two writers must never both succeed. (memcached
//!   has no such step: it checks the lease and then writes the record with
//!   compare-and-swap against the version it read with the check, so a
//!   write by anyone else in between makes the save fail the same way;
//!   what it cannot rule out is a lease that runs out between the check
//!   and the write, a round trip later, which takes a stall of seconds.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::task::AbortHandle;

use crate::id::{SessionId, StoreKey};
use crate::record::{millis, now_millis, Millis, Record};
use crate::store::{
    Entered, Error, Keep, Known, LocalGuard, LockGuard, LockWaits, Place, SaveIf, SessionLock,
    SessionStore, COURTESY, TURN,
};

mod writes;

use writes::Writes;

/// Until when a turn claimed at `now` lasts.
#[cfg_attr(not(any(feature = "sqlite", feature = "memcached")), allow(dead_code))]
pub(crate) fn turn_until(now: Millis) -> Millis {
    now.saturating_add(TURN.as_millis() as u64)
}

/// What a take found.
pub(crate) enum Taken {
    /// The lease is ours; the record if one was asked for and is live.
    Ours(Option<Record>),
    /// Someone else holds it.
    Busy,
}

/// What a save under the lease found (one that releases it, or keeps it).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Released {
    /// The lease was ours and is released; whether the save's precondition
    /// held and the record was written.
    Saved(bool),
    /// As `Saved`, and another process's waiter, which only polls, waits
    /// for the lock: this process lets its own next request wait a
    /// [`COURTESY`] first, or that waiter finds the lock taken again at
    /// every poll and starves (a pooler without notifications).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    SavedWhileWanted(bool),
    /// The lease was no longer ours: nothing was written.
    Lost,
}

impl Released {
    /// Whether the record was written.
    fn saved(self) -> bool {
        matches!(
            self,
            Released::Saved(true) | Released::SavedWhileWanted(true)
        )
    }
}

/// The statements of one store, as the lease rules need them.
#[async_trait]
pub(crate) trait LeaseBackend: SessionStore + Clone {
    /// Inserts or takes over the lock row of `key` for `owner` until
    /// `until`, and with `load` reads the record after the take committed
    /// (so that it sees what the previous holder saved). A backend that
    /// keeps turns (see the module docs) claims the next one when the lock
    /// is held, and takes a free lock only if no other owner's turn is
    /// claimed.
    async fn take(
        &self,
        key: &StoreKey,
        owner: &str,
        until: Millis,
        load: bool,
    ) -> Result<Taken, Error>;

    /// Refuses a record this store would not write or read back (its size),
    /// before anything is written.
    fn check(&self, record: &Record) -> Result<(), Error>;

    /// This process's table of waits and hand-overs for the store, and the
    /// length of its leases, once the store is ready for a take (its
    /// schema made, where it makes one).
    async fn lease_site(&self) -> Result<(&Arc<LockWaits>, Duration), Error>;

    /// Called when a take found the lease held: a store that wakes waiters
    /// by a notification makes sure here that this process listens.
    fn on_busy(&self) {}

    /// Whether, and within which bounds, a process keeps the sessions its
    /// requests used ([`Keep`]). Only a store that tells a keeping
    /// process when another one wants a session may: the default keeps
    /// nothing.
    fn keep(&self) -> Option<Keep> {
        None
    }

    /// Moves the lease's end to `until` if it is still ours.
    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error>;

    /// Deletes the lock row if it is still ours.
    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error>;

    /// Saves `record` under its precondition if the lease is still ours,
    /// in the same atomic step moving the lease's end to `until` and
    /// keeping it: for a hand-over to this process's next request.
    async fn save_and_keep(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        until: Millis,
    ) -> Result<Released, Error>;

    /// Deletes the lock row if it is still ours and, in the same atomic
    /// step and only then, saves `record` under its precondition.
    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error>;
}

/// [`SessionStore::acquire`] of a store on leases: the lock of `key` as a
/// guard that saves and releases (or keeps) itself, with the record if
/// `load`.
pub(crate) async fn lock<B: LeaseBackend>(
    backend: &B,
    key: &StoreKey,
    wait: Duration,
    load: bool,
) -> Result<(LockGuard, Option<Record>), Error> {
    let (lease, record) = acquire(backend, key, wait, load).await?;
    Ok((LockGuard::new(lease), record))
}

/// Waits for and takes the lease of `key`: queued locally first, then
/// asking the backend until it is free or `wait` is over (the one wait of
/// `store::wait`; the backend may wake the waiter when a holder releases).
/// When the request before in this process handed its lease over, the
/// lease is taken from it instead, with no round trip for a known record.
async fn acquire<B: LeaseBackend>(
    backend: &B,
    key: &StoreKey,
    wait: Duration,
    load: bool,
) -> Result<(Lease<B>, Option<Record>), Error> {
    let (waits, length) = backend.lease_site().await?;
    let mut waiter = match waits.enter_or_take::<Handover<B>>(key, wait).await? {
        Entered::HandedOver(local, handover) => {
            let Handover { mut lease, record } = *handover;
            lease.place.take(local);
            // A lease kept or handed over is used only while it surely is
            // still ours: past that (a process paused past its lease, a
            // renewal that failed) the store says, before any read; and
            // not after a save under it failed. A record handed over may
            // still be on its way to the store (`writes.rs`): this request
            // runs on it, and answers only once it is acknowledged.
            if !lease.writes.failed() && (lease.confirmed.holds() || lease.reconfirm().await?) {
                let record = match record {
                    Known::Record(record) => Some(record.filter(|r| !r.is_expired(now_millis()))),
                    // Read only once what was saved before is in.
                    Known::Unknown if load => match lease.writes.settled().await {
                        Ok(_) => Some(backend.load(key).await?),
                        Err(_) => None,
                    },
                    Known::Unknown => Some(None),
                };
                if let Some(record) = record {
                    lease.remember(&record);
                    return Ok((lease, record));
                }
            }
            // Lost, or a save under it failed: someone may have written
            // since. Ask afresh.
            let local = lease.forsake().await;
            waits.front(key, local, wait)
        }
        Entered::Front(waiter) => waiter,
    };
    let owner = SessionId::generate()
        .map(|t| t.to_string())
        .map_err(|e| Error::unavailable("drawing a lock owner token", e))?;
    loop {
        let sent = mono_ms();
        let until = now_millis().saturating_add(millis(length));
        match take_to_completion(backend, key, &owner, until, load).await? {
            Taken::Ours(record) => {
                let mut lease =
                    Lease::start(backend.clone(), *key, owner, length, waiter.granted(), sent);
                lease.remember(&record);
                return Ok((lease, record));
            }
            Taken::Busy => {
                backend.on_busy();
                waiter.pause().await?;
            }
        }
    }
}

/// Ends a session from outside a request ([`SessionStore::end`]) on a
/// store that keeps sessions in processes: under its lease, so that a
/// process keeping it gives it back first (and one that stalled or died
/// loses it within a lease), and none serves it after the delete.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) async fn end<B: LeaseBackend>(backend: &B, key: &StoreKey) -> Result<(), Error> {
    let (_, length) = backend.lease_site().await?;
    // A keeper gives the session back at once, a request in flight at its
    // end. One that holds it longer (a long poll) is waited for one lease
    // and a tenth: by then any process that stopped meanwhile has seen its
    // lease run out and will ask the store before it serves what it kept,
    // so the delete goes ahead; the request's save finds the record gone.
    let wait = length + length / 10;
    match acquire(backend, key, wait, false).await {
        Ok((lease, _)) => {
            // After the saves a request of this process queued under the
            // lease before handing it over: they need the lease, and a
            // delete goes last.
            let _ = lease.writes.settled().await;
            let deleted = backend.delete(key).await;
            drop(lease);
            deleted
        }
        Err(Error::LockTimeout(_)) => backend.delete(key).await,
        Err(e) => Err(e),
    }
}

/// A lease handed from a finishing request to the next of this process,
/// or kept for it.
struct Handover<B: LeaseBackend> {
    lease: Lease<B>,
    record: Known,
}

/// This process's monotonic clock, in milliseconds since its first read.
/// Unlike the wall clock it never jumps, and it runs on while the process
/// is stopped (SIGSTOP, a stall), so a lease confirmed before a pause is
/// seen to have run out after it.
fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Until when, on [`mono_ms`], a lease is surely still ours: a fifth of
/// the lease short of its end as last confirmed (taken, renewed, saved
/// under it), counted from before the call that confirmed it, which
/// covers the round trip and the drift of two clocks.
#[derive(Debug, Default)]
struct Confirmed(AtomicU64);

impl Confirmed {
    fn set(&self, sent: u64, length: Duration) {
        let sure = millis(length).saturating_sub(millis(length) / 5);
        self.0.store(sent.saturating_add(sure), Ordering::Relaxed);
    }

    fn lost(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    fn holds(&self) -> bool {
        mono_ms() < self.0.load(Ordering::Relaxed)
    }
}

/// Runs one take on its own task, so that it completes even if the caller
/// is dropped meanwhile (the client went away): a take that committed is
/// then released at once instead of keeping the session locked for a
/// whole lease.
async fn take_to_completion<B: LeaseBackend>(
    backend: &B,
    key: &StoreKey,
    owner: &str,
    until: Millis,
    load: bool,
) -> Result<Taken, Error> {
    let (b, key, who) = (backend.clone(), *key, owner.to_owned());
    let handle = tokio::spawn(async move { b.take(&key, &who, until, load).await });
    let mut pending = PendingTake {
        handle: Some(handle),
        undo: Some((backend.clone(), key, owner.to_owned())),
    };
    let joined = match pending.handle.as_mut() {
        Some(handle) => handle.await,
        None => unreachable!("set just above"),
    };
    pending.handle = None;
    let taken = joined.map_err(|e| Error::unavailable("taking a session lock", e))?;
    if taken.is_err() {
        // Failed or timed out: the statement may have taken the lease all
        // the same. Releasing our owner's row is harmless if it did not.
        if let Some((backend, key, owner)) = pending.undo.take() {
            tokio::spawn(async move {
                let _ = backend.release(&key, &owner).await;
            });
        }
    }
    taken
}

/// A take in flight; if dropped before it was awaited, releases what the
/// take got once it finishes.
struct PendingTake<B: LeaseBackend> {
    handle: Option<tokio::task::JoinHandle<Result<Taken, Error>>>,
    undo: Option<(B, StoreKey, String)>,
}

impl<B: LeaseBackend> Drop for PendingTake<B> {
    fn drop(&mut self) {
        let (Some(handle), Some((backend, key, owner))) = (self.handle.take(), self.undo.take())
        else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(Taken::Ours(_))) = handle.await {
                    let _ = backend.release(&key, &owner).await;
                }
            });
        }
    }
}

/// A held lease: what the lease stores put in a [`LockGuard`]. Dropping it
/// stops the renewal and releases the row; this process's next waiter for
/// the session starts only after that, so its first take succeeds.
pub(crate) struct Lease<B: LeaseBackend> {
    backend: B,
    key: StoreKey,
    /// Empty once released (or lost): `Drop` then does nothing more.
    owner: String,
    length: Duration,
    renewal: AbortHandle,
    /// Until when the lease is surely ours; the renewal moves it on.
    confirmed: Arc<Confirmed>,
    /// The saves made under the lease, in order (`writes.rs`).
    writes: Arc<Writes<B>>,
    /// This process's place at the front of the session's queue.
    place: Place,
    /// The record the lease was taken with, when the store keeps sessions:
    /// what a request that changes nothing keeps.
    loaded: Option<Record>,
}

impl<B: LeaseBackend> Lease<B> {
    fn start(
        backend: B,
        key: StoreKey,
        owner: String,
        length: Duration,
        local: LocalGuard,
        sent: u64,
    ) -> Self {
        let confirmed = Arc::new(Confirmed::default());
        confirmed.set(sent, length);
        let writes = Writes::new(
            backend.clone(),
            key,
            owner.clone(),
            length,
            Arc::clone(&confirmed),
        );
        let renewal = renew(
            backend.clone(),
            key,
            owner.clone(),
            length,
            Arc::clone(&confirmed),
        );
        Lease {
            backend,
            key,
            owner,
            length,
            renewal: tokio::spawn(renewal).abort_handle(),
            confirmed,
            writes,
            place: Place::new(local),
            loaded: None,
        }
    }

    /// Remembers the record the lease starts with, if the store keeps
    /// sessions (otherwise nobody needs it).
    fn remember(&mut self, record: &Option<Record>) {
        if self.backend.keep().is_some() {
            self.loaded.clone_from(record);
        }
    }

    /// Asks the store whether the lease is still ours, moving its end on
    /// if so.
    async fn reconfirm(&mut self) -> Result<bool, Error> {
        let sent = mono_ms();
        let until = now_millis().saturating_add(millis(self.length));
        let ours = self.backend.renew(&self.key, &self.owner, until).await?;
        if ours {
            self.confirmed.set(sent, self.length);
        }
        Ok(ours)
    }

    /// Gives up a lease found lost, or under which a save failed: released
    /// if it still is ours (the owner check makes that harmless if not),
    /// and the queue's place goes back to the caller.
    async fn forsake(mut self) -> LocalGuard {
        self.renewal.abort();
        // Cleared only once released: cancelled before, `Drop` releases.
        let _ = self.backend.release(&self.key, &self.owner).await;
        self.owner.clear();
        self.place
            .let_go()
            .expect("a lease taken from a hand-over holds its place")
    }

    /// Builds, from this guard's lease, the lease the next request gets:
    /// still held and renewed; this guard then releases nothing.
    fn successor(&mut self) -> impl FnOnce(Place) -> Lease<B> {
        let (backend, key, length) = (self.backend.clone(), self.key, self.length);
        let (owner, renewal) = (std::mem::take(&mut self.owner), self.renewal.clone());
        let confirmed = Arc::clone(&self.confirmed);
        let writes = Arc::clone(&self.writes);
        move |place| Lease {
            backend,
            key,
            owner,
            length,
            renewal,
            confirmed,
            writes,
            place,
            loaded: None,
        }
    }

    /// Moves the lease into a hand-over for the next request, which waits.
    fn hand_over(&mut self, record: Known) {
        if self.place.is_handed_over() {
            return;
        }
        let next = self.successor();
        self.place.hand_over(|place| Handover {
            lease: next(place),
            record,
        });
    }

    /// Keeps the lease, and `record`, in this process for the session's
    /// next request, whenever it comes (see [`Keep`]).
    fn keep(&mut self, record: Record, keep: &Keep) {
        if self.place.is_handed_over() {
            return;
        }
        let bytes = record.data.len();
        let next = self.successor();
        self.place.keep(bytes, keep, |place| Handover {
            lease: next(place),
            record: Known::Record(Some(record)),
        });
    }

    /// Whether the lease goes to the next request of this process, which
    /// waits for it. Where the store keeps sessions it also tells this
    /// process when another one asks for the session back, which ends a
    /// run of hand-overs (bounded only as a backstop); elsewhere the run
    /// is short.
    fn hand_over_next(&self) -> bool {
        self.place.hand_over_next(self.backend.keep().is_some())
    }

    /// Whether the session may be kept after this request, with `record`.
    fn may_keep(&self, record: &Record) -> Option<Keep> {
        let keep = self.backend.keep()?;
        self.place
            .may_keep(record.data.len(), &keep)
            .then_some(keep)
    }

    /// Saves `record` and releases the lease in one step — or keeps it,
    /// for this process's next request of the session: one that waits now
    /// gets it at once, running on `record` while the save is on its way
    /// (`writes.rs`). `Ok(false)` when the precondition failed,
    /// [`Error::Unavailable`] when the lease was lost before the save
    /// (nothing written) or a save before it failed.
    async fn save_releasing(mut self, record: &Record, only: SaveIf) -> Result<bool, Error> {
        let hand_over = self.hand_over_next();
        let keep = if hand_over {
            None
        } else {
            self.may_keep(record)
        };
        let release = !hand_over && keep.is_none();
        if release {
            self.renewal.abort();
            // From here the lease is being released: should this future be
            // dropped mid-save, `Drop` must release it (owner-checked,
            // harmless if the save did), never hand a lease whose renewal
            // stopped to the next request.
            self.place.release_only();
        }
        let outcome = if hand_over {
            let answer = self.writes.queue(record.clone(), only, false);
            self.hand_over(Known::Record(Some(record.clone())));
            answer.await
        } else if self.writes.busy() {
            // Behind saves of earlier requests still on their way.
            self.writes.queue(record.clone(), only, release).await
        } else {
            self.writes.send_now(record, only, release).await
        };
        if release && !self.writes.failed() {
            // Released: never released again by `Drop`. (After a failure
            // — sent or refused unsent — `Drop` releases, owner-checked,
            // which is harmless if the lease is gone.)
            self.owner.clear();
        }
        match outcome? {
            Released::Lost => Err(self.lost()),
            Released::SavedWhileWanted(saved) if release => {
                // The queue's place is let go only after the courtesy.
                if let Some(local) = self.place.let_go() {
                    tokio::spawn(async move {
                        tokio::time::sleep(COURTESY).await;
                        drop(local);
                    });
                }
                Ok(saved)
            }
            Released::Saved(saved) | Released::SavedWhileWanted(saved) => {
                // Kept only as saved; a session found gone is released
                // (by `Drop`).
                if let Some(keep) = keep.filter(|_| saved) {
                    self.keep(record.clone(), &keep);
                }
                Ok(saved)
            }
        }
    }

    /// The error of a save whose lease was lost; nothing is left to release.
    fn lost(&mut self) -> Error {
        self.owner.clear();
        self.confirmed.lost();
        tracing::warn!(
            session = %self.key.short(),
            "a session lock's lease was lost before its save; not saved"
        );
        Error::unavailable("saving a session", LeaseLost)
    }
}

impl<B: LeaseBackend> Drop for Lease<B> {
    fn drop(&mut self) {
        if !self.owner.is_empty() && self.hand_over_next() && !self.writes.failed() {
            // Nothing was saved, or the save's future was dropped (an
            // unchanged session, an error, a release without a save, a
            // client gone): the next request reads the record, once the
            // saves queued under the lease are in.
            self.hand_over(Known::Unknown);
            return;
        }
        if self.owner.is_empty() && self.place.is_handed_over() {
            // Handed over: the renewal now belongs to the next holder.
            return;
        }
        self.renewal.abort();
        let local = self.place.let_go();
        if self.owner.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to release on: the lease runs out by itself.
            return;
        };
        let (backend, key, owner) = (
            self.backend.clone(),
            self.key,
            std::mem::take(&mut self.owner),
        );
        let writes = Arc::clone(&self.writes);
        runtime.spawn(async move {
            // After the saves still on their way, which need the lease.
            let _ = writes.settled().await;
            if let Err(error) = backend.release(&key, &owner).await {
                tracing::debug!(session = %key.short(), %error, "lock release failed; its lease will free it");
            }
            drop(local);
        });
    }
}

#[async_trait]
impl<B: LeaseBackend> SessionLock for Lease<B> {
    async fn save_and_release(
        self: Box<Self>,
        record: &Record,
        write: SaveIf,
    ) -> Result<bool, Error> {
        // Refused before anything is written; the lease, dropped, releases.
        self.backend.check(record)?;
        self.save_releasing(record, write).await
    }

    async fn durable(&mut self) -> Result<bool, Error> {
        self.writes.settled().await
    }

    fn release_unchanged(mut self: Box<Self>) {
        // Without the record (a store that keeps nothing, a session not
        // read), `Drop` hands over or releases as for any guard.
        let Some(record) = self.loaded.take() else {
            return;
        };
        if self.hand_over_next() {
            self.hand_over(Known::Record(Some(record)));
        } else if let Some(keep) = self.may_keep(&record) {
            self.keep(record, &keep);
        }
    }
}

/// Extends the lease every third of it until aborted; stops when the lease
/// turns out to be someone else's.
async fn renew<B: LeaseBackend>(
    backend: B,
    key: StoreKey,
    owner: String,
    lease: Duration,
    confirmed: Arc<Confirmed>,
) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let sent = mono_ms();
        let until = now_millis().saturating_add(millis(lease));
        match backend.renew(&key, &owner, until).await {
            Ok(true) => confirmed.set(sent, lease),
            Ok(false) => {
                confirmed.lost();
                tracing::warn!(
                    session = %key.short(),
                    "a session lock's lease ran out while held; its save will be refused"
                );
                return;
            }
            // Try again at the next tick: two of them fit in a lease.
            Err(error) => {
                tracing::warn!(session = %key.short(), %error, "could not renew a session lock")
            }
        }
    }
}

/// The lease was taken over before the save.
#[derive(Debug, thiserror::Error)]
#[error("the session lock's lease was lost before the save")]
pub(crate) struct LeaseLost;
