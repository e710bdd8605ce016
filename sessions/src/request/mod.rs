//! The request core: one request's session — what it knows of its
//! session, which lock it holds, every store call of the request path, and
//! every operation the [`Session`](crate::Session) handle asks for (load,
//! regenerate, delete, expire, log out, a user's sessions, explicit locks).
//! It knows no framework: an adapter (the tower layer in `middleware/`)
//! hands it the id the client sent ([`ClientId`]) and, once the handler
//! returned, asks it to [`finish`](RequestSession::finish) and writes the
//! [`Outcome`] into its response — cookie, id header or failure.
//!
//! The state is split in two on purpose. [`Phase`] is the session as this
//! request sees it — not read yet, loaded, or finished — and is replaced
//! whole by `delete`, so a new field never needs a decision there. The
//! rest belongs to the request and outlives a delete: the lock, the ids
//! to delete, the id to carry or to drop, the failure to report.

mod loaded;
mod save;
mod shared;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::Instrument;

use crate::config::{Locking, SessionConfig};
use crate::error::{Error, Failure};
use crate::events::{Events, SessionEvent};
use crate::id::{SessionId, StoreKey};
use crate::measure;
use crate::record::{millis, now_millis, Millis, Record};
use crate::store::{self, LockGuard, SessionStore};
use crate::store::{end_sessions_of, user_sessions, UserSession};
use crate::user::UserId;

/// The session's data as loaded: a JSON object.
pub(crate) type Data = Map<String, Value>;

pub(crate) use loaded::Loaded;
pub(crate) use shared::Shared;

/// What the client sent as its session id, in the cookie or the id header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientId {
    /// Nothing.
    NotSent,
    /// Something, but not a well-formed id.
    Malformed,
    /// A well-formed id.
    Valid(SessionId),
}

impl ClientId {
    /// The well-formed id, if that is what was sent.
    pub(crate) fn id(self) -> Option<SessionId> {
        match self {
            ClientId::Valid(id) => Some(id),
            _ => None,
        }
    }
}

/// One request's view of its session.
pub(crate) struct RequestSession {
    /// Called as `store.as_ref()`: through the `Arc`'s own impl of the
    /// trait every call would box its future twice.
    store: Arc<dyn SessionStore>,
    config: Arc<SessionConfig>,
    phase: Phase,
    /// The one store lock this request holds, and the id it is for. After
    /// `regenerate` or `delete` it is the old id's, kept until the old
    /// record is gone, so that a request waiting on it never finds it alive.
    lock: Option<HeldLock>,
    /// Ids given up by `regenerate` or `delete`, or found dead: deleted
    /// before the lock is released.
    doomed: Vec<Doomed>,
    /// The client sent an id that is not (or no longer) a live session.
    missing: bool,
    /// The client's id was there but not a well-formed one.
    client_malformed: bool,
    /// What this request saved last, for the cookie.
    saved: Option<Saved>,
    /// The client must drop its id.
    drop_id: bool,
    /// An operation failed: the response must say so, and nothing more may
    /// be written (the session's state is unknown).
    failed: Option<Failure>,
    /// Where this request's session events go, and those not sent yet:
    /// they are sent when the request ends, after its lock is released.
    events: Events,
    pending: Vec<SessionEvent>,
}

/// A session to delete before the lock is released, and why.
struct Doomed {
    id: SessionId,
    why: Doom,
    user: Option<UserId>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Doom {
    /// Replaced by its regenerated self: no event of its own.
    Replaced,
    /// Deleted by the handler.
    Deleted,
    /// Found past its absolute timeout, or unreadable.
    Dead,
}

/// The session as this request sees it.
enum Phase {
    /// The store was not read yet, or was released by `release_lock` and
    /// must be read again. `id` is what to load: the client's id, the
    /// session's own after `release_lock`, none after `delete` or when the
    /// client sent none.
    Unloaded { id: Option<SessionId> },
    /// The data is in hand.
    Loaded(Loaded),
    /// The response was written; every operation is refused.
    Finished,
}

struct HeldLock {
    id: SessionId,
    guard: LockGuard,
}

/// A save this request made: the client carries `id` until `expires`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Saved {
    pub(crate) id: SessionId,
    pub(crate) expires: Millis,
}

/// What the response must say once the request's session is finished, for
/// the framework's adapter to write: the id the client carries from now on
/// (cookie, id header), that it must drop its id, or that the request
/// failed.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The id to carry, and until when; `None` when nothing was saved.
    pub(crate) carry: Option<Saved>,
    /// The client must drop its id (the session was logged out or ended).
    pub(crate) drop_id: bool,
    /// A store call failed (or a lock wait timed out), whether or not the
    /// handler saw it: the response is replaced by this failure's.
    pub(crate) failure: Option<Failure>,
}

impl RequestSession {
    /// The request's session, not read yet: `client` is what the client
    /// sent as its id.
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        config: Arc<SessionConfig>,
        events: Events,
        client: ClientId,
    ) -> Self {
        RequestSession {
            store,
            config,
            phase: Phase::Unloaded { id: client.id() },
            lock: None,
            doomed: Vec::new(),
            missing: false,
            client_malformed: client == ClientId::Malformed,
            saved: None,
            drop_id: false,
            failed: None,
            events,
            pending: Vec::new(),
        }
    }

    /// The settings this request's session runs under.
    pub(crate) fn config(&self) -> &Arc<SessionConfig> {
        &self.config
    }

    /// Refuses every operation once the request was answered.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        match self.phase {
            Phase::Finished => Err(Error::Finished),
            _ => Ok(()),
        }
    }

    /// The session in hand, if it is loaded.
    pub(crate) fn loaded(&mut self) -> Option<&mut Loaded> {
        match &mut self.phase {
            Phase::Loaded(s) => Some(s),
            _ => None,
        }
    }

    /// The loaded session, read from the store on first use (taking its
    /// lock first in `implicit` mode), and marked used: it will be saved.
    pub(crate) async fn load(&mut self) -> Result<&mut Loaded, Error> {
        if let Phase::Unloaded { id } = self.phase {
            let loaded = self.fetch(id).await?;
            self.phase = Phase::Loaded(loaded);
        }
        match &mut self.phase {
            Phase::Loaded(s) => {
                s.used = true;
                Ok(s)
            }
            _ => Err(Error::Finished),
        }
    }

    /// [`load`](Self::load), once the saves it may have run on are in: for
    /// what reads the store beside the record (a user's index, written with
    /// the saves).
    async fn load_settled(&mut self) -> Result<&mut Loaded, Error> {
        self.load().await?;
        self.settle().await?;
        self.load().await
    }

    /// Reads `id`'s record, or starts a fresh session when there is none.
    async fn fetch(&mut self, id: Option<SessionId>) -> Result<Loaded, Error> {
        let now = now_millis();
        if let Some(id) = id {
            let key = id.store_key();
            let record = if self.config.locking == Locking::Implicit && !self.holds_lock(&id) {
                let (guard, record) = self.lock_and_load(&key).await?;
                self.lock = Some(HeldLock { id, guard });
                record
            } else {
                self.settle().await?;
                let r = timed("load", &key, self.store.as_ref().load(&key)).await;
                checked(&mut self.failed, r)?
            };
            if let Some(record) = record {
                if let Some(data) = self.accept(&id, &record, now) {
                    self.debug("loaded", &id);
                    return Ok(Loaded {
                        id,
                        key,
                        data,
                        created: record.created,
                        stored_expires: record.expires,
                        timeout: record.timeout.filter(|&t| t > 0).map(Duration::from_millis),
                        user: record.user,
                        replaces: None,
                        stored: true,
                        used: false,
                        changed: false,
                    });
                }
                // Past its absolute timeout, or unreadable: it is dead.
                self.doomed.push(Doomed {
                    id,
                    why: Doom::Dead,
                    user: record.user,
                });
            }
            // Unknown, expired or unreadable: a fresh session under a fresh
            // id, never the one the client chose (session fixation). The
            // unknown id's lock protects nothing.
            if self.holds_lock(&id) {
                self.lock = None;
            }
            self.missing = true;
        } else {
            self.missing = self.client_malformed;
        }
        let id = self.new_id()?;
        self.debug("created", &id);
        Ok(Loaded::fresh(id, now))
    }

    /// Takes the session's lock with its record. Without pipelined saves
    /// the handler runs only on what is in the store: a record handed over
    /// whose save the store then refused (the session had ended) is no
    /// session, and one whose save failed is given up — the lock is taken
    /// afresh, once.
    async fn lock_and_load(
        &mut self,
        key: &StoreKey,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        let timeout = self.config.lock_timeout;
        let mut retried = false;
        loop {
            let call = self.store.as_ref().lock_and_load(key, timeout);
            let r = timed("lock_and_load", key, call).await;
            let (mut guard, record) = checked(&mut self.failed, r)?;
            if self.config.pipelined_saves {
                return Ok((guard, record));
            }
            match guard.durable().await {
                Ok(true) => return Ok((guard, record)),
                Ok(false) => return Ok((guard, None)),
                // Dropped, the lock is released, not handed on.
                Err(_) if !retried => retried = true,
                Err(e) => return Err(failed(&mut self.failed, e.into())),
            }
        }
    }

    /// Checks a loaded record: its times are in range, the absolute
    /// timeout, and that the data is a JSON object. A record failing any is
    /// treated as missing.
    fn accept(&self, id: &SessionId, r: &Record, now: Millis) -> Option<Data> {
        // Stores that decode records checked this already; the RAM store,
        // a store of the app's own and Redis (whose TTL can replace the
        // expiry) did not.
        if let Err(e) = r.check_times() {
            tracing::warn!(session = %id.short(), error = %e, "damaged session treated as missing");
            return None;
        }
        if let Some(limit) = self.config.absolute_timeout {
            if r.created.saturating_add(millis(limit)) <= now {
                tracing::debug!(session = %id.short(), "absolute timeout reached");
                return None;
            }
        }
        // Opened whether or not sealing is on now, so that switching it
        // loses no session (`seal.rs`).
        let data = match crate::seal::open(id, &r.data) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(session = %id.short(), error = %e, "sealed session data treated as missing");
                return None;
            }
        };
        match serde_json::from_slice::<Data>(&data) {
            Ok(data) => Some(data),
            Err(e) => {
                tracing::warn!(session = %id.short(), error = %e, "unreadable session data treated as missing");
                None
            }
        }
    }

    /// A fresh id; a failing random source is logged and reported.
    fn new_id(&mut self) -> Result<SessionId, Error> {
        SessionId::generate().map_err(|e| failed(&mut self.failed, e.into()))
    }

    /// Waits until the saves made under the held lock before this request
    /// took it are in the store (pipelined saves, `store/lease/writes.rs`):
    /// before the store is read or written other than by this request's
    /// own save under the lock, and before answering from data handed on
    /// with the lock. `false`: the newest of them was refused, the session
    /// had ended.
    async fn settle(&mut self) -> Result<bool, Error> {
        let Some(lock) = &mut self.lock else {
            return Ok(true);
        };
        let r = lock.guard.durable().await;
        checked(&mut self.failed, r)
    }

    /// The failure of a request that answered from data handed over with
    /// its lock, whose save the store then refused: the session had ended,
    /// and the request has seen it as if it had not.
    fn ran_on_an_ended_session(&mut self) -> Error {
        let e = store::Error::unavailable("reading a session", SessionEnded);
        failed(&mut self.failed, e.into())
    }

    fn holds_lock(&self, id: &SessionId) -> bool {
        self.lock.as_ref().is_some_and(|l| l.id == *id)
    }

    /// Whether no other request can change the session under this one: it
    /// holds the store lock, or the session is new and nobody knows its id.
    fn is_locked(&self) -> bool {
        self.lock.is_some() || matches!(&self.phase, Phase::Loaded(s) if !s.stored)
    }

    /// Gives the session a new id, keeping its data. The old record is
    /// doomed; the old id's lock stays held until it is deleted.
    pub(crate) async fn regenerate(&mut self) -> Result<(), Error> {
        self.load().await?;
        let new = self.new_id()?;
        let Phase::Loaded(s) = &mut self.phase else {
            return Err(Error::Finished);
        };
        if s.stored {
            self.doomed.push(Doomed {
                id: s.id,
                why: Doom::Replaced,
                user: s.user.clone(),
            });
            s.replaces.get_or_insert(s.id);
        }
        s.id = new;
        s.key = new.store_key();
        s.stored = false;
        s.changed = true;
        self.debug("regenerated", &new);
        Ok(())
    }

    /// Before a delete: with event hooks, a session not read yet is read,
    /// so that its `Deleted` event can name its user.
    pub(crate) async fn load_for_event(&mut self) -> Result<(), Error> {
        if self.events.on() && matches!(self.phase, Phase::Unloaded { id: Some(_) }) {
            self.load().await?;
        }
        Ok(())
    }

    /// Dooms the stored session and forgets it: using the session again in
    /// this request starts a new, empty one. Only the phase is replaced;
    /// the lock stays until the doomed record is gone.
    pub(crate) fn delete(&mut self) {
        let (id, user) = match &self.phase {
            Phase::Loaded(s) if s.stored => (Some(s.id), s.user.clone()),
            Phase::Unloaded { id } => (*id, None),
            _ => (None, None),
        };
        self.doomed.extend(id.map(|id| Doomed {
            id,
            why: Doom::Deleted,
            user,
        }));
        self.phase = Phase::Unloaded { id: None };
        self.missing = false;
        self.saved = None;
        if let Some(id) = id {
            self.debug("deleted", &id);
        }
    }

    /// Takes the session's lock (`explicit` mode's `acquire_lock`, and
    /// `early` mode before the handler). Data read before the lock and not
    /// changed since is read again under it.
    pub(crate) async fn acquire_lock(&mut self) -> Result<(), Error> {
        let id = match &self.phase {
            // Nobody else knows a new session's id.
            Phase::Loaded(s) if !s.stored => return Ok(()),
            Phase::Loaded(s) => s.id,
            Phase::Unloaded { id: Some(id) } => *id,
            Phase::Unloaded { id: None } => return Ok(()),
            Phase::Finished => return Err(Error::Finished),
        };
        if self.holds_lock(&id) {
            return Ok(());
        }
        let key = id.store_key();
        let r = timed(
            "lock",
            &key,
            self.store.as_ref().lock(&key, self.config.lock_timeout),
        )
        .await;
        let guard = checked(&mut self.failed, r)?;
        self.lock = Some(HeldLock { id, guard });
        if matches!(&self.phase, Phase::Loaded(s) if !s.changed) {
            self.phase = Phase::Unloaded { id: Some(id) };
        }
        self.debug("locked", &id);
        Ok(())
    }

    /// Saves what the handler used, deletes the doomed ids, releases the
    /// lock and forgets the data. Forgetting is what keeps the end of the
    /// request from overwriting what another request wrote after the
    /// release (CherryPy issue 1027): the next use reads afresh.
    pub(crate) async fn release_lock(&mut self) -> Result<(), Error> {
        if !self.is_locked() {
            return Ok(());
        }
        self.save_if_used().await?;
        self.delete_doomed().await?;
        let next = match &self.phase {
            Phase::Loaded(s) => Some(s.id),
            Phase::Unloaded { id } => *id,
            Phase::Finished => None,
        };
        self.phase = Phase::Unloaded { id: next };
        self.lock = None;
        Ok(())
    }

    /// Saves the session if the handler used it — unless it is a new
    /// session with nothing in it and `save_uninitialized` is off.
    pub(crate) async fn save_if_used(&mut self) -> Result<(), Error> {
        let keep_empty = self.config.save_uninitialized;
        if matches!(&self.phase, Phase::Loaded(s) if s.used && (keep_empty || !s.uninitialized())) {
            self.save().await?;
        }
        Ok(())
    }

    /// The live sessions of this session's user.
    pub(crate) async fn user_sessions(&mut self) -> Result<Vec<UserSession>, Error> {
        let timeout = self.config.timeout;
        let s = self.load_settled().await?;
        let Some(user) = s.user.clone() else {
            return Ok(Vec::new());
        };
        let key = s.key;
        let r = timed(
            "sessions_of",
            &key,
            user_sessions(&*self.store, &user, timeout),
        )
        .await;
        let mut sessions = checked(&mut self.failed, r)?;
        for listed in &mut sessions {
            listed.current = listed.key == key;
        }
        Ok(sessions)
    }

    /// Ends the other sessions of this session's user, and says how many
    /// ended, counting this one if `this_too` (the caller deletes it).
    pub(crate) async fn end_user_sessions(&mut self, this_too: bool) -> Result<u64, Error> {
        let s = self.load_settled().await?;
        let Some(user) = s.user.clone() else {
            return Ok(0);
        };
        let (key, stored) = (s.key, s.stored);
        // This request's own: its session, and the ids it gave up (after a
        // `regenerate`), which it deletes itself.
        let mut ours: Vec<StoreKey> = self.doomed.iter().map(|d| d.id.store_key()).collect();
        ours.push(key);
        let call = end_sessions_of(&*self.store, &user, &ours);
        let r = timed("end_sessions_of", &key, call).await;
        let ended = checked(&mut self.failed, r)?;
        let count = ended.len() as u64 + u64::from(this_too && stored);
        if self.events.on() {
            let deleted = ended.into_iter().map(|key| SessionEvent::Deleted {
                key,
                user: Some(user.clone()),
            });
            self.pending.extend(deleted);
        }
        Ok(count)
    }

    /// Whether the client sent an id that is not (or no longer) a live
    /// session, so that this request started a fresh one. Loads the
    /// session.
    pub(crate) async fn missing(&mut self) -> Result<bool, Error> {
        self.load().await?;
        Ok(self.missing)
    }

    /// Makes the client drop its id when the request ends.
    pub(crate) fn expire(&mut self) {
        self.drop_id = true;
    }

    /// Deletes the stored session and makes the client drop its id.
    pub(crate) async fn logout(&mut self) -> Result<(), Error> {
        self.load_for_event().await?;
        self.delete();
        self.drop_id = true;
        Ok(())
    }

    /// Ends every session of this session's user, this one too, and says
    /// how many ended.
    pub(crate) async fn logout_everywhere(&mut self) -> Result<u64, Error> {
        let ended = self.end_user_sessions(true).await?;
        self.delete();
        self.drop_id = true;
        Ok(ended)
    }

    /// The finishing step, once the handler returned: saves what it used,
    /// deletes what it gave up, releases the lock — in that order — and
    /// says what the response must carry. A failure on the way, or one the
    /// handler saw and swallowed, is in the outcome; after a failure
    /// nothing more is written (the session's state is unknown).
    pub(crate) async fn finish(&mut self) -> Outcome {
        if matches!(self.phase, Phase::Finished) {
            return Outcome::default();
        }
        if self.failed.is_none() {
            // Save before deleting, so that a regenerated session whose
            // new record cannot be written keeps its old one.
            if self.save_if_used().await.is_ok() {
                let _ = self.delete_doomed().await;
            }
        }
        self.end();
        Outcome {
            carry: self.saved,
            drop_id: self.drop_id,
            failure: self.failed,
        }
    }

    /// Ends the request's hold on the session: releases the lock (for a
    /// remote store, the guard spawns the release) and refuses every later
    /// operation. Saves nothing.
    pub(crate) fn end(&mut self) {
        self.phase = Phase::Finished;
        self.lock = None;
        for event in self.pending.drain(..) {
            self.events.emit(event);
        }
    }

    pub(crate) fn debug(&self, what: &str, id: &SessionId) {
        if self.config.debug {
            tracing::info!(session = %id.short(), "session {what}");
        }
    }
}

/// Runs one store call in a `session.store` span (`op`, the session's short
/// key) and says, at debug level, how long it took: for the calls that
/// take a lock, that is how long the request waited for it; with the
/// `metrics` feature the duration is also measured (`measure.rs`). Costs
/// nothing when neither is on: no span, no clock read.
async fn timed<T>(
    op: &'static str,
    key: &StoreKey,
    call: impl std::future::Future<Output = Result<T, store::Error>>,
) -> Result<T, store::Error> {
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    if !debug && !measure::ON {
        return call.await;
    }
    let started = std::time::Instant::now();
    if !debug {
        let r = call.await;
        measure::store_call(op, started.elapsed(), &r);
        return r;
    }
    let span = tracing::debug_span!("session.store", op, session = %key.short());
    let r = call.instrument(span.clone()).await;
    let took = started.elapsed();
    measure::store_call(op, took, &r);
    let ms = took.as_secs_f64() * 1000.0;
    span.in_scope(|| tracing::debug!(ms, ok = r.is_ok(), "session store call"));
    r
}

/// A store call's result, with a failure logged once and remembered, so
/// that the response reports it even if the handler swallows the error.
fn checked<T>(failure: &mut Option<Failure>, r: Result<T, store::Error>) -> Result<T, Error> {
    r.map_err(|e| failed(failure, e.into()))
}

/// Logs `e` and remembers the first failure of the request.
fn failed(failure: &mut Option<Failure>, e: Error) -> Error {
    failure.get_or_insert(e.failure());
    e.log();
    e
}

/// A request ran on a save of its session that the store then refused:
/// the session had ended meanwhile (pipelined saves).
#[derive(Debug, thiserror::Error)]
#[error("the session ended while this request ran on a save of it not yet stored")]
struct SessionEnded;
