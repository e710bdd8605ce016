//! The request's session state: what this request knows of its session,
//! which lock it holds, and the store calls that move it from phase to
//! phase. The [`Session`](crate::Session) handle asks; this module talks to
//! the store.
//!
//! The state is split in two on purpose. [`Phase`] is the session as this
//! request sees it — not read yet, loaded, or finished — and is replaced
//! whole by `delete`, so a new field never needs a decision there. The
//! rest belongs to the request and outlives a delete: the lock, the ids
//! to delete, the cookie to send, the failure to report.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::Instrument;

use crate::config::{Locking, SessionConfig};
use crate::error::{Error, Failure};
use crate::events::{Events, FoundBy, SessionEvent};
use crate::id::{SessionId, StoreKey};
use crate::measure;
use crate::record::{millis, now_millis, Millis, Record};
use crate::store::{self, LockGuard, SaveIf, SessionStore};
use crate::user::{self, UserId, UserSession};

/// The session's data as loaded: a JSON object.
pub(crate) type Data = Map<String, Value>;

/// One request's view of its session.
pub(crate) struct RequestSession {
    /// Called as `store.as_ref()`: through the `Arc`'s own impl of the
    /// trait every call would box its future twice.
    store: Arc<dyn SessionStore>,
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) phase: Phase,
    /// The one store lock this request holds, and the id it is for. After
    /// `regenerate` or `delete` it is the old id's, kept until the old
    /// record is gone, so that a request waiting on it never finds it alive.
    lock: Option<HeldLock>,
    /// Ids given up by `regenerate` or `delete`, or found dead: deleted
    /// before the lock is released.
    doomed: Vec<Doomed>,
    /// The client sent an id that is not (or no longer) a live session.
    pub(crate) missing: bool,
    /// The client's cookie was there but not a well-formed id.
    client_malformed: bool,
    /// What this request saved last, for the cookie.
    pub(crate) saved: Option<Saved>,
    /// The response must make the client drop its cookie.
    pub(crate) expire_cookie: bool,
    /// An operation failed: the response must say so, and nothing more may
    /// be written (the session's state is unknown).
    pub(crate) failed: Option<Failure>,
    /// The cookie path for this request (`path`, or `path_header`'s value).
    pub(crate) cookie_path: Option<String>,
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
pub(crate) enum Phase {
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

/// A loaded (or newly created) session.
pub(crate) struct Loaded {
    pub(crate) id: SessionId,
    /// `id`'s store key, hashed once per request.
    key: StoreKey,
    pub(crate) data: Data,
    pub(crate) created: Millis,
    /// The session's own idle timeout, if it set one; kept in its record.
    pub(crate) timeout: Option<Duration>,
    /// The user the session is tied to, kept in its record.
    pub(crate) user: Option<UserId>,
    /// The stored session this one was regenerated from, until the new
    /// one is saved (for its event).
    replaces: Option<SessionId>,
    /// A live record under `id` is in the store. False for a new or
    /// regenerated session, whose id nobody else can know yet: it needs no
    /// store lock.
    stored: bool,
    /// The handler used the session: save it, or refresh its expiry.
    used: bool,
    /// The data differs from what is stored.
    pub(crate) changed: bool,
}

impl Loaded {
    /// The expiry the session gets if it is saved now.
    pub(crate) fn expires_now(&self, config: &SessionConfig) -> Millis {
        expiry(config, self, now_millis())
    }

    /// The idle timeout that applies: the session's own, or the config's.
    pub(crate) fn timeout(&self, config: &SessionConfig) -> Duration {
        self.timeout.unwrap_or(config.timeout)
    }
}

struct HeldLock {
    id: SessionId,
    guard: LockGuard,
}

/// A save this request made: the cookie carries `id` until `expires`.
#[derive(Clone, Copy)]
pub(crate) struct Saved {
    pub(crate) id: SessionId,
    pub(crate) expires: Millis,
}

impl RequestSession {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        config: Arc<SessionConfig>,
        events: Events,
        client: Option<SessionId>,
        client_malformed: bool,
        cookie_path: Option<String>,
    ) -> Self {
        RequestSession {
            store,
            config,
            phase: Phase::Unloaded { id: client },
            lock: None,
            doomed: Vec::new(),
            missing: false,
            client_malformed,
            saved: None,
            expire_cookie: false,
            failed: None,
            cookie_path,
            events,
            pending: Vec::new(),
        }
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

    /// Reads `id`'s record, or starts a fresh session when there is none.
    async fn fetch(&mut self, id: Option<SessionId>) -> Result<Loaded, Error> {
        let now = now_millis();
        if let Some(id) = id {
            let timeout = self.config.lock_timeout;
            let key = id.store_key();
            let record = if self.config.locking == Locking::Implicit && !self.holds_lock(&id) {
                let r = timed(
                    "lock_and_load",
                    &key,
                    self.store.as_ref().lock_and_load(&key, timeout),
                )
                .await;
                let (guard, record) = checked(&mut self.failed, r)?;
                self.lock = Some(HeldLock { id, guard });
                record
            } else {
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
        Ok(Loaded {
            id,
            key: id.store_key(),
            data: Data::new(),
            created: now,
            timeout: None,
            user: None,
            replaces: None,
            stored: false,
            used: false,
            changed: true,
        })
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
        match serde_json::from_slice::<Data>(&r.data) {
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

    /// Saves the session if the handler used it.
    pub(crate) async fn save_if_used(&mut self) -> Result<(), Error> {
        if matches!(&self.phase, Phase::Loaded(s) if s.used) {
            self.save().await?;
        }
        Ok(())
    }

    /// Writes the loaded session now: a full save if the data changed or it
    /// is new, otherwise an expiry refresh. A save the store refuses (the
    /// session was deleted, regenerated or expired meanwhile) is logged and
    /// leaves no cookie.
    async fn save(&mut self) -> Result<(), Error> {
        let Phase::Loaded(s) = &mut self.phase else {
            return Ok(());
        };
        let (id, key) = (s.id, s.key);
        let now = now_millis();
        let expires = expiry(&self.config, s, now);
        // The lock goes with the save only if it is this id's lock (after
        // `regenerate` it is the old id's, released once that is deleted).
        let guard = self.lock.take_if(|l| l.id == id).map(|l| l.guard);
        let saved = if s.changed || !s.stored {
            // A map of JSON values always encodes.
            let data = serde_json::to_vec(&s.data).unwrap_or_default();
            if data.len() > self.config.max_size {
                // Refuse before writing: the stored session stays as it was.
                if let Some(guard) = guard {
                    self.lock = Some(HeldLock { id, guard });
                }
                let e = Error::TooLarge {
                    size: data.len(),
                    max: self.config.max_size,
                };
                return Err(failed(&mut self.failed, e));
            }
            let record = Record {
                data,
                created: s.created,
                expires,
                timeout: s.timeout.map(millis),
                user: s.user.clone(),
            };
            let only = if s.stored {
                SaveIf::Live
            } else {
                SaveIf::Absent
            };
            // A regenerated session's first save takes the old record's
            // place in one step: written only if that record still lives.
            let replacing = s.replaces.filter(|_| !s.stored);
            let r = match (replacing, guard) {
                (Some(old), guard) => {
                    // The lock held is the old id's (if any): it stays until
                    // the request ends.
                    debug_assert!(guard.is_none(), "a regenerated id is never locked");
                    drop(guard);
                    let old = old.store_key();
                    let call = self.store.as_ref().replace(&old, &key, &record);
                    timed("replace", &key, call).await
                }
                (None, Some(g)) => {
                    let call = self.store.as_ref().save_and_unlock(&key, &record, only, g);
                    timed("save_and_unlock", &key, call).await
                }
                (None, None) => {
                    timed("save", &key, self.store.as_ref().save(&key, &record, only)).await
                }
            };
            let saved = checked(&mut self.failed, r)?;
            if let Some(old) = replacing {
                // Either way the old record is gone: nothing left to delete.
                self.doomed
                    .retain(|d| !(d.id == old && d.why == Doom::Replaced));
                if !saved {
                    // Deleted (or its user logged out everywhere, or
                    // expired) while this request regenerated it: the new
                    // id must not carry the session on.
                    tracing::warn!(
                        session = %old.short(),
                        "session ended while the request regenerated it; not saved"
                    );
                    self.delete();
                    self.expire_cookie = true;
                    return Ok(());
                }
            }
            saved
        } else {
            let r = timed("touch", &key, self.store.as_ref().touch(&key, expires)).await;
            drop(guard);
            checked(&mut self.failed, r)?
        };
        if saved && !s.stored {
            let replaced = s.replaces.take();
            if replaced.is_none() {
                measure::created();
            }
            if self.events.on() {
                let user = s.user.clone();
                self.pending.push(match replaced {
                    Some(from) => SessionEvent::Regenerated {
                        from: from.store_key(),
                        to: key,
                        user,
                    },
                    None => SessionEvent::Created { key, user },
                });
            }
        }
        s.stored = saved;
        if saved {
            s.changed = false;
            self.saved = Some(Saved { id, expires });
        } else {
            tracing::warn!(
                session = %id.short(),
                "session was deleted, regenerated or expired while the request ran; not saved"
            );
            self.saved = None;
        }
        self.debug(if saved { "saved" } else { "save refused" }, &id);
        Ok(())
    }

    /// The live sessions of this session's user.
    pub(crate) async fn user_sessions(&mut self) -> Result<Vec<UserSession>, Error> {
        let timeout = self.config.timeout;
        let s = self.load().await?;
        let Some(user) = s.user.clone() else {
            return Ok(Vec::new());
        };
        let key = s.key;
        let r = timed(
            "sessions_of",
            &key,
            user::user_sessions(&*self.store, &user, timeout),
        )
        .await;
        checked(&mut self.failed, r)
    }

    /// Ends the other sessions of this session's user, and says how many
    /// ended, counting this one if `this_too` (the caller deletes it).
    pub(crate) async fn end_user_sessions(&mut self, this_too: bool) -> Result<u64, Error> {
        let s = self.load().await?;
        let Some(user) = s.user.clone() else {
            return Ok(0);
        };
        let (key, stored) = (s.key, s.stored);
        // This request's own: its session, and the ids it gave up (after a
        // `regenerate`), which it deletes itself.
        let mut ours: Vec<StoreKey> = self.doomed.iter().map(|d| d.id.store_key()).collect();
        ours.push(key);
        let call = user::end_sessions_of(&*self.store, &user, &ours);
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

    /// Deletes the ids given up in this request.
    pub(crate) async fn delete_doomed(&mut self) -> Result<(), Error> {
        for doomed in std::mem::take(&mut self.doomed) {
            let key = doomed.id.store_key();
            let r = timed("delete", &key, self.store.as_ref().delete(&key)).await;
            checked(&mut self.failed, r)?;
            let user = doomed.user;
            if doomed.why == Doom::Dead {
                measure::expired(FoundBy::Load, 1);
            }
            match doomed.why {
                _ if !self.events.on() => {}
                Doom::Replaced => {}
                Doom::Deleted => self.pending.push(SessionEvent::Deleted { key, user }),
                Doom::Dead => self.pending.push(SessionEvent::Expired {
                    key,
                    user,
                    found_by: FoundBy::Load,
                }),
            }
        }
        Ok(())
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

/// When `session` expires if saved at `now`: its idle timeout from now
/// (its own, or the config's), or the absolute timeout if that comes first;
/// never past [`Record::MAX_TIME`], which a timeout set in code (the
/// config's fields are public) could otherwise reach, and the cookie's date
/// could not say.
fn expiry(config: &SessionConfig, session: &Loaded, now: Millis) -> Millis {
    let idle = now.saturating_add(millis(session.timeout(config)));
    let expires = match config.absolute_timeout {
        Some(limit) => idle.min(session.created.saturating_add(millis(limit))),
        None => idle,
    };
    expires.min(Record::MAX_TIME)
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
