//! The [`Session`] handle that handlers use, and the finishing step the
//! middleware runs after the handler.
//!
//! The handle only records what the handler asked for — reads, writes,
//! delete, regenerate, expire, explicit locks — and loads lazily. The
//! middleware owns the order: lock → load → handler → save → release →
//! cookie (SPEC §8).

use std::sync::{Arc, Mutex as StdMutex};

use http::{HeaderValue, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::config::{Locking, SessionConfig};
use crate::cookie::{self, ClientId};
use crate::id::{RandomError, SessionId};
use crate::record::{now_millis, Millis, Record};
use crate::store::{self, LockGuard, SaveIf, SessionAdmin};

/// The session's data as loaded: a JSON object.
type Data = Map<String, Value>;

/// An error from a [`Session`] operation. As an axum response it becomes a
/// 503 (store trouble, lock timeout) or a 500 (a programming error) with a
/// short body; the details go to the log, not to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed or its lock was not free in time.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The session would be larger than `max_size` once encoded.
    #[error("session of {size} bytes exceeds max_size of {max} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A value could not be converted to or from the requested type.
    #[error("session value {key:?} cannot be converted")]
    Value {
        /// The key.
        key: String,
        /// The conversion error.
        #[source]
        source: serde_json::Error,
    },
    /// No new id could be drawn.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The handle was used after its request was answered.
    #[error("the session was used after its request ended")]
    Finished,
}

/// What a failed request answers, kept apart from the error itself so that
/// the middleware can answer it even when the handler swallowed the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The lock was not free in time: 503, try again.
    Busy,
    /// The store is down: 503.
    Unavailable,
    /// A programming or data error: 500.
    Internal,
}

impl Error {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.failure().status()
    }

    pub(crate) fn failure(&self) -> Failure {
        match self {
            Error::Store(store::Error::LockTimeout(_)) => Failure::Busy,
            Error::Store(store::Error::TooLarge { .. }) => Failure::Internal,
            Error::Store(_) | Error::Random(_) => Failure::Unavailable,
            Error::TooLarge { .. } | Error::Value { .. } | Error::Finished => Failure::Internal,
        }
    }

    fn log(&self) {
        match self.failure() {
            Failure::Busy => tracing::warn!(error = %self, "session lock timeout"),
            Failure::Unavailable => tracing::error!(
                error = %self,
                // `Store` is transparent: its source is the backend's error.
                source = ?std::error::Error::source(self),
                "session store failed"
            ),
            Failure::Internal => tracing::error!(error = %self, "session error"),
        }
    }
}

impl Failure {
    fn status(self) -> StatusCode {
        match self {
            Failure::Busy | Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A response with a short body, for any body type that can be made
    /// from a string. The details are in the log, not in the body.
    pub(crate) fn response<B: From<&'static str>>(self) -> Response<B> {
        let body = match self {
            Failure::Busy => "session busy, try again\n",
            Failure::Unavailable => "session store unavailable\n",
            Failure::Internal => "session error\n",
        };
        let mut response = Response::new(B::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self != Failure::Internal {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A visitor's session, as seen by a handler.
///
/// Cloning is cheap; all clones are the same session. Every data method
/// loads the session on first use (taking its lock first, in the default
/// `implicit` locking mode); the middleware saves it after the handler.
///
/// ```
/// # async fn handler(session: sessions::Session) -> Result<String, sessions::Error> {
/// let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
/// session.insert("visits", visits).await?;
/// Ok(format!("visit number {visits}"))
/// # }
/// ```
#[derive(Clone)]
pub struct Session(Arc<Inner>);

struct Inner {
    store: Arc<dyn SessionAdmin>,
    config: Arc<SessionConfig>,
    /// The cookie path for this request (`path`, or `path_header`'s value).
    cookie_path: Option<String>,
    client: ClientId,
    state: Mutex<State>,
    /// Kept apart from `state` so the middleware can always release it,
    /// even from `Drop` while a handler's task still holds the state.
    lock: StdMutex<Option<(SessionId, LockGuard)>>,
}

#[derive(Default)]
struct State {
    /// Loaded (or created) and usable.
    loaded: bool,
    /// The current id, once decided by loading.
    id: Option<SessionId>,
    data: Data,
    /// When the session was created.
    created: Millis,
    /// A live record exists in the store under `id`.
    exists: bool,
    /// The handler read or wrote the session: save or refresh it.
    used: bool,
    /// The data differs from what is stored.
    changed: bool,
    /// The client sent an id that is not (or no longer) a session.
    missing: bool,
    /// A save of this request succeeded: the client gets the cookie.
    saved: bool,
    /// Whether this request holds the lock (a real one in `lock`, or the
    /// trivial one of a session nobody else knows yet).
    locked: bool,
    /// Ids whose records must be deleted when the request ends.
    doomed: Vec<SessionId>,
    expire_cookie: bool,
    /// The client's id was deleted in this request: never load it again.
    forget_client: bool,
    /// An operation failed: the response must say so.
    failed: Option<Failure>,
    finished: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("original_id", &self.original_id())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        store: Arc<dyn SessionAdmin>,
        config: Arc<SessionConfig>,
        client: ClientId,
        cookie_path: Option<String>,
    ) -> Self {
        Session(Arc::new(Inner {
            store,
            config,
            cookie_path,
            client,
            state: Mutex::new(State::default()),
            lock: StdMutex::new(None),
        }))
    }

    /// The well-formed id the client sent, if any, whether or not it turned
    /// out to be a live session.
    pub fn original_id(&self) -> Option<SessionId> {
        match self.0.client {
            ClientId::Id(id) => Some(id),
            _ => None,
        }
    }

    /// The settings this request's session runs under.
    pub fn config(&self) -> &SessionConfig {
        &self.0.config
    }

    /// The session's id. Loads the session: a client's unknown or expired id
    /// is replaced by a fresh one here.
    pub async fn id(&self) -> Result<SessionId, Error> {
        self.with(|s| Ok(s.id.expect("a loaded session has an id")))
            .await
    }

    /// Loads the session now (the data methods do it on first use).
    pub async fn load(&self) -> Result<(), Error> {
        self.with(|_| Ok(())).await
    }

    /// Whether the client sent an id (well-formed or not) that is not a live
    /// session, so this request started a fresh one.
    pub async fn missing(&self) -> Result<bool, Error> {
        self.with(|s| Ok(s.missing)).await
    }

    /// When the session was created, in milliseconds since the epoch.
    pub async fn created(&self) -> Result<Millis, Error> {
        self.with(|s| Ok(s.created)).await
    }

    /// When the session will expire if nothing uses it after this request:
    /// now + `timeout`, or the absolute timeout if that comes first.
    pub async fn expires(&self) -> Result<Millis, Error> {
        let mut s = self.state().await?;
        self.ensure_loaded(&mut s).await?;
        s.used = true;
        Ok(self.expiry(&s, now_millis()))
    }

    /// The value under `key`, converted to `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.with(|s| {
            s.data
                .get(key)
                .map(|v| {
                    T::deserialize(v).map_err(|source| Error::Value {
                        key: key.into(),
                        source,
                    })
                })
                .transpose()
        })
        .await
    }

    /// Stores `value` under `key`, returning nothing; the old value is
    /// replaced.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), Error> {
        let value = serde_json::to_value(value).map_err(|source| Error::Value {
            key: key.into(),
            source,
        })?;
        self.with(|s| {
            if s.data.get(key) != Some(&value) {
                s.data.insert(key.into(), value);
                s.changed = true;
            }
            Ok(())
        })
        .await
    }

    /// Removes `key`, returning its value if it was there.
    pub async fn remove(&self, key: &str) -> Result<Option<Value>, Error> {
        self.with(|s| {
            let old = s.data.remove(key);
            s.changed |= old.is_some();
            Ok(old)
        })
        .await
    }

    /// Whether `key` is set.
    pub async fn contains_key(&self, key: &str) -> Result<bool, Error> {
        self.with(|s| Ok(s.data.contains_key(key))).await
    }

    /// The keys, in order.
    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        self.with(|s| Ok(s.data.keys().cloned().collect())).await
    }

    /// The number of keys.
    pub async fn len(&self) -> Result<usize, Error> {
        self.with(|s| Ok(s.data.len())).await
    }

    /// Whether there are no keys.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        self.with(|s| Ok(s.data.is_empty())).await
    }

    /// Removes every key (the session itself stays).
    pub async fn clear(&self) -> Result<(), Error> {
        self.with(|s| {
            s.changed |= !s.data.is_empty();
            s.data.clear();
            Ok(())
        })
        .await
    }

    /// All data as a JSON object.
    pub async fn to_json(&self) -> Result<Value, Error> {
        self.with(|s| Ok(Value::Object(s.data.clone()))).await
    }

    /// Gives the session a new id, keeping its data (loaded first if it was
    /// not yet). The old record is deleted when the request ends and the
    /// new cookie keeps every configured attribute. Call it when a user logs
    /// in, against session fixation.
    pub async fn regenerate(&self) -> Result<(), Error> {
        let mut s = self.state().await?;
        self.ensure_loaded(&mut s).await?;
        let new = SessionId::generate()?;
        if s.exists {
            let old = s.id.expect("a loaded session has an id");
            s.doomed.push(old);
        }
        // Nobody else can know the new id, so it needs no store lock; the
        // old id's lock (if held) stays held until the old record is gone.
        s.id = Some(new);
        s.exists = false;
        s.changed = true;
        s.used = true;
        self.debug("regenerated", &s);
        Ok(())
    }

    /// Deletes the stored session when the request ends. Using the session
    /// again afterwards in this request starts a new, empty one.
    pub async fn delete(&self) -> Result<(), Error> {
        let mut s = self.state().await?;
        if let Some(id) = s.id.filter(|_| s.exists).or_else(|| self.client_id(&s)) {
            s.doomed.push(id);
        }
        // Keep what concerns the request, not the session: the deleted id
        // stays locked until its record is gone at the end.
        *s = State {
            doomed: std::mem::take(&mut s.doomed),
            expire_cookie: s.expire_cookie,
            locked: s.locked,
            failed: s.failed,
            forget_client: true,
            ..State::default()
        };
        self.debug("deleted", &s);
        Ok(())
    }

    /// Makes the client drop its cookie: the response carries one that ends
    /// now. Pair it with [`delete`](Self::delete) to log out.
    pub async fn expire(&self) -> Result<(), Error> {
        self.state().await?.expire_cookie = true;
        Ok(())
    }

    /// Takes the session's lock (in `explicit` mode; in the other modes the
    /// lock is taken for you and this does nothing more). Waits at most
    /// `lock_timeout`. Data read before the lock was taken, and not changed
    /// since, is read again under the lock.
    pub async fn acquire_lock(&self) -> Result<(), Error> {
        let mut s = self.state().await?;
        if s.locked {
            return Ok(());
        }
        let id = if s.loaded {
            if !s.exists {
                // A new session: nobody else knows its id.
                s.locked = true;
                return Ok(());
            }
            s.id
        } else {
            self.client_id(&s)
        };
        let Some(id) = id else {
            s.locked = true;
            return Ok(());
        };
        let r = self.0.store.lock(&id, self.0.config.lock_timeout).await;
        let guard = fail(&mut s, r)?;
        *self.0.lock_slot() = Some((id, guard));
        s.locked = true;
        if s.loaded && !s.changed {
            s.loaded = false;
        }
        self.debug("locked", &s);
        Ok(())
    }

    /// Saves what changed and releases the lock taken by
    /// [`acquire_lock`](Self::acquire_lock). Saving here, under the lock,
    /// and then forgetting the data, is what keeps the end-of-request save
    /// from overwriting what another request wrote after the release
    /// (CherryPy issue 1027): using the session again reads it afresh
    /// (without a lock in `explicit` mode — take it again before changing
    /// what other requests may change too).
    pub async fn release_lock(&self) -> Result<(), Error> {
        let mut s = self.state().await?;
        if !s.locked {
            return Ok(());
        }
        if s.loaded && s.used {
            self.save(&mut s).await?;
            s.used = false;
        }
        // Ids given up by `regenerate` or `delete` go before their lock
        // does, or a request waiting on it would find them alive.
        for id in std::mem::take(&mut s.doomed) {
            let r = self.0.store.delete(&id).await;
            fail(&mut s, r)?;
        }
        s.loaded = false;
        s.locked = false;
        drop(self.0.lock_slot().take());
        Ok(())
    }

    /// Takes the lock before the handler runs (`early` mode).
    pub(crate) async fn lock_early(&self) -> Result<(), Error> {
        self.acquire_lock().await
    }

    fn client_id(&self, s: &State) -> Option<SessionId> {
        match self.0.client {
            ClientId::Id(id) if !s.forget_client => Some(id),
            _ => None,
        }
    }

    async fn state(&self) -> Result<tokio::sync::MutexGuard<'_, State>, Error> {
        let s = self.0.state.lock().await;
        if s.finished {
            return Err(Error::Finished);
        }
        Ok(s)
    }

    /// Runs `f` on the loaded state and marks the session used.
    async fn with<R>(&self, f: impl FnOnce(&mut State) -> Result<R, Error>) -> Result<R, Error> {
        let mut s = self.state().await?;
        self.ensure_loaded(&mut s).await?;
        s.used = true;
        f(&mut s)
    }

    async fn ensure_loaded(&self, s: &mut State) -> Result<(), Error> {
        if s.loaded {
            return Ok(());
        }
        let now = now_millis();
        let config = &self.0.config;
        if let Some(id) = s.id.or_else(|| self.client_id(s)) {
            let record = if config.locking == Locking::Implicit && !s.locked {
                let r = self.0.store.lock_and_load(&id, config.lock_timeout).await;
                let (guard, record) = fail(s, r)?;
                *self.0.lock_slot() = Some((id, guard));
                s.locked = true;
                record
            } else {
                let r = self.0.store.load(&id).await;
                fail(s, r)?
            };
            if let Some(record) = record {
                if let Some(data) = self.accept(&id, &record, now) {
                    s.id = Some(id);
                    s.data = data;
                    s.created = record.created;
                    s.exists = true;
                    s.loaded = true;
                    self.debug("loaded", s);
                    return Ok(());
                }
                // Past its absolute timeout, or unreadable: it is dead.
                s.doomed.push(id);
            }
            // Unknown, expired or unreadable: a fresh session under a fresh
            // id, never the one the client chose (session fixation). The
            // unknown id's lock protects nothing.
            drop(self.0.lock_slot().take());
            s.missing = true;
        } else {
            s.missing = matches!(self.0.client, ClientId::Malformed);
        }
        s.id = Some(SessionId::generate()?);
        s.data = Data::new();
        s.created = now;
        s.exists = false;
        s.changed = true;
        s.loaded = true;
        // A new id is known to nobody: this request has it to itself.
        s.locked = true;
        self.debug("created", s);
        Ok(())
    }

    /// Checks a loaded record: the absolute timeout, and that the data is a
    /// JSON object. A record failing either is treated as missing.
    fn accept(&self, id: &SessionId, r: &Record, now: Millis) -> Option<Data> {
        if let Some(limit) = self.0.config.absolute_timeout {
            if r.created.saturating_add(limit.as_millis() as u64) <= now {
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

    /// Writes the session now: a full save if the data changed or it is
    /// new, otherwise an expiry refresh. Returns whether the store took it.
    async fn save(&self, s: &mut State) -> Result<bool, Error> {
        let id = s.id.expect("a loaded session has an id");
        let config = &self.0.config;
        let now = now_millis();
        let expires = self.expiry(s, now);
        // The lock goes with the save only if it is this id's lock (after
        // `regenerate` it is the old id's, released once that is deleted).
        let guard = {
            let mut slot = self.0.lock_slot();
            match slot.take() {
                Some((locked, g)) if locked == id => Some(g),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        let saved = if s.changed || !s.exists {
            // A map of JSON values always encodes.
            let data = serde_json::to_vec(&s.data).unwrap_or_default();
            if data.len() > config.max_size {
                // Refuse before writing: the stored session stays as it was.
                if let Some(g) = guard {
                    *self.0.lock_slot() = Some((id, g));
                }
                let e = Error::TooLarge {
                    size: data.len(),
                    max: config.max_size,
                };
                s.failed.get_or_insert(e.failure());
                e.log();
                return Err(e);
            }
            let record = Record {
                data,
                created: s.created,
                expires,
            };
            let write = if s.exists {
                SaveIf::Live
            } else {
                SaveIf::Absent
            };
            let r = match guard {
                Some(g) => self.0.store.save_and_unlock(&id, &record, write, g).await,
                None => self.0.store.save(&id, &record, write).await,
            };
            fail(s, r)?
        } else {
            let r = self.0.store.touch(&id, expires).await;
            drop(guard);
            fail(s, r)?
        };
        if saved {
            s.exists = true;
            s.changed = false;
            s.saved = true;
        } else {
            tracing::warn!(
                session = %id.short(),
                "session was deleted, regenerated or expired while the request ran; not saved"
            );
            s.exists = false;
        }
        self.debug(if saved { "saved" } else { "save refused" }, s);
        Ok(saved)
    }

    /// The new expiry: now + timeout, but never past the absolute timeout.
    fn expiry(&self, s: &State, now: Millis) -> Millis {
        let config = &self.0.config;
        let idle = now.saturating_add(config.timeout.as_millis() as u64);
        match config.absolute_timeout {
            Some(limit) => idle.min(s.created.saturating_add(limit.as_millis() as u64)),
            None => idle,
        }
    }

    /// The middleware's finishing step: deletes, saves, releases the lock
    /// and sets the cookie. Runs once, after the handler returned.
    pub(crate) async fn finish<B: From<&'static str>>(&self, response: &mut Response<B>) {
        let mut s = self.0.state.lock().await;
        if s.finished {
            return;
        }
        // Errors were logged and recorded in `failed` where they happened.
        let _ = self.finish_inner(&mut s, response).await;
        s.finished = true;
        drop(self.0.lock_slot().take());
        if let Some(f) = s.failed {
            *response = f.response();
        }
    }

    async fn finish_inner<B>(
        &self,
        s: &mut State,
        response: &mut Response<B>,
    ) -> Result<(), Error> {
        if s.failed.is_some() {
            // The handler saw a failure (perhaps without reporting it): the
            // session's state is unknown, so write nothing.
            return Ok(());
        }
        // Save before deleting, so that a regenerated session whose new
        // record cannot be written keeps its old one.
        if s.loaded && s.used {
            self.save(s).await?;
        }
        for id in std::mem::take(&mut s.doomed) {
            let r = self.0.store.delete(&id).await;
            fail(s, r)?;
        }
        let path = self.0.cookie_path.as_deref().unwrap_or(&self.0.config.path);
        let mut cookie = None;
        if s.saved && s.exists {
            let id = s.id.expect("a loaded session has an id");
            let now = now_millis();
            let max_age = self.expiry(s, now).saturating_sub(now);
            cookie = Some(cookie::set_cookie(
                &self.0.config,
                path,
                &id,
                std::time::Duration::from_millis(max_age),
            ));
        }
        if s.expire_cookie {
            cookie = Some(cookie::expire_cookie(&self.0.config, path));
        }
        if let Some(c) = cookie {
            response.headers_mut().append(http::header::SET_COOKIE, c);
        }
        Ok(())
    }

    /// Releases the lock without saving: for a request that ended without
    /// a response (handler panic, dropped future).
    pub(crate) fn abandon(&self) {
        drop(self.0.lock_slot().take());
    }

    fn debug(&self, what: &str, s: &State) {
        if self.0.config.debug {
            if let Some(id) = s.id {
                tracing::info!(session = %id.short(), "session {what}");
            } else {
                tracing::info!("session {what}");
            }
        }
    }
}

/// Records a store failure so the response reports it even if the handler
/// swallows the error, logs it once, and hands it to the caller.
fn fail<T>(s: &mut State, r: Result<T, store::Error>) -> Result<T, Error> {
    r.map_err(|e| {
        let e = Error::Store(e);
        s.failed.get_or_insert(e.failure());
        e.log();
        e
    })
}

impl Inner {
    fn lock_slot(&self) -> std::sync::MutexGuard<'_, Option<(SessionId, LockGuard)>> {
        // Poisoning only means a panic elsewhere; the slot is still valid.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }
}
