//! The [`Session`] handle that handlers use.
//!
//! The handle only records what the handler asks for — reads, writes,
//! delete, regenerate, expire, explicit locks — on the request's session
//! state, which loads lazily. It never touches a store: the request core
//! (`request/`) does, and saves, deletes and releases after the handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::config::SessionConfig;
use crate::error::Error;
use crate::id::SessionId;
use crate::record::{system_time, Millis};
use crate::request::{Loaded, RequestSession};
use crate::store::UserSession;
use crate::user::UserId;

/// A visitor's session, as seen by a handler.
///
/// Cloning is cheap; all clones are the same session. Every data method
/// loads the session on first use (taking its lock first, in the default
/// `implicit` locking mode); the middleware saves it after the handler.
///
/// ```
/// # async fn handler(session: server_sessions::Session) -> Result<String, server_sessions::Error> {
/// let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
/// session.insert("visits", visits).await?;
/// Ok(format!("visit number {visits}"))
/// # }
/// ```
#[derive(Clone)]
pub struct Session(Arc<Shared>);

struct Shared {
    config: Arc<SessionConfig>,
    original_id: Option<SessionId>,
    state: Mutex<RequestSession>,
    /// A [`SessionData`] guard is alive: the state's mutex is held by the
    /// handler itself, so a call that waits for it would wait forever.
    data_held: AtomicBool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("original_id", &self.original_id())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(state: RequestSession, original_id: Option<SessionId>) -> Self {
        Session(Arc::new(Shared {
            config: Arc::clone(state.config()),
            original_id,
            state: Mutex::new(state),
            data_held: AtomicBool::new(false),
        }))
    }

    /// A guard that ends the request's hold on the session when dropped,
    /// for an adapter to keep across the handler: whatever ends the
    /// request — the response, an error, a panic in the handler, the
    /// client going away — then releases its lock.
    pub(crate) fn end_on_drop(&self) -> EndOnDrop {
        EndOnDrop(self.clone())
    }

    /// The request's session state, for the middleware.
    pub(crate) fn request_state(&self) -> &Mutex<RequestSession> {
        &self.0.state
    }

    /// The well-formed id the client sent, if any, whether or not it turned
    /// out to be a live session.
    pub fn original_id(&self) -> Option<SessionId> {
        self.0.original_id
    }

    /// The settings this request's session runs under.
    pub fn config(&self) -> &SessionConfig {
        &self.0.config
    }

    /// The loaded session, for reading and changing it without a `Result`
    /// per call: loads it first (taking its lock in `implicit` mode), then
    /// every method of [`SessionData`] works on what is in hand, with no
    /// I/O. The guard holds the request's session state: while it lives,
    /// the async methods of this handle (and a second `data()`) fail at
    /// once with [`Error::DataHeld`] instead of waiting for it; drop it
    /// first.
    ///
    /// ```
    /// # async fn handler(session: server_sessions::Session) -> Result<String, server_sessions::Error> {
    /// let mut data = session.data().await?;
    /// let visits: u64 = data.get("visits")?.unwrap_or(0) + 1;
    /// data.insert("visits", visits)?;
    /// data.remove_value("flash");
    /// Ok(format!("visit {visits}, {} keys", data.len()))
    /// # }
    /// ```
    pub async fn data(&self) -> Result<SessionData<'_>, Error> {
        let mut state = self.state().await?;
        state.load().await?;
        let session =
            MutexGuard::try_map(state, RequestSession::loaded).map_err(|_| Error::Finished)?;
        self.0.data_held.store(true, Ordering::Release);
        Ok(SessionData {
            session,
            config: &self.0.config,
            held: &self.0.data_held,
        })
    }

    /// The session's id. Loads the session: a client's unknown or expired id
    /// is replaced by a fresh one here.
    pub async fn id(&self) -> Result<SessionId, Error> {
        Ok(self.data().await?.id())
    }

    /// Loads the session now (the data methods do it on first use).
    pub async fn load(&self) -> Result<(), Error> {
        self.data().await.map(drop)
    }

    /// Whether the client sent an id (well-formed or not) that is not a live
    /// session, so this request started a fresh one.
    pub async fn missing(&self) -> Result<bool, Error> {
        self.state().await?.missing().await
    }

    /// When the session was created.
    pub async fn created(&self) -> Result<SystemTime, Error> {
        Ok(self.data().await?.created())
    }

    /// When the session will expire if nothing uses it after this request:
    /// now + its idle timeout, or the absolute timeout if that comes first.
    pub async fn expires(&self) -> Result<SystemTime, Error> {
        Ok(self.data().await?.expires())
    }

    /// Gives this session an idle timeout of its own: see
    /// [`SessionData::set_timeout`].
    pub async fn set_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.data().await?.set_timeout(timeout);
        Ok(())
    }

    /// Returns the session to the configured `timeout` (a log-in without
    /// "remember me" after one with it).
    pub async fn clear_timeout(&self) -> Result<(), Error> {
        self.data().await?.clear_timeout();
        Ok(())
    }

    /// The idle timeout this session has: its own
    /// ([`set_timeout`](Self::set_timeout)) or the configured one.
    pub async fn timeout(&self) -> Result<Duration, Error> {
        Ok(self.data().await?.timeout())
    }

    /// The value under `key`, converted to `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.data().await?.get(key)
    }

    /// The value under `key` as it is stored, raw JSON.
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>, Error> {
        Ok(self.data().await?.get_value(key).cloned())
    }

    /// Stores `value` under `key`, returning nothing; the old value is
    /// replaced.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), Error> {
        self.data().await?.insert(key, value)
    }

    /// Stores raw JSON under `key`; the old value is replaced.
    pub async fn insert_value(&self, key: &str, value: Value) -> Result<(), Error> {
        self.data().await?.insert_value(key, value);
        Ok(())
    }

    /// Removes `key`, returning its value, converted to `T`, if it was
    /// there. The key is removed even if the value is not a `T` (the error
    /// says so).
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.data().await?.remove(key)
    }

    /// Removes `key`, returning its raw JSON value if it was there.
    pub async fn remove_value(&self, key: &str) -> Result<Option<Value>, Error> {
        Ok(self.data().await?.remove_value(key))
    }

    /// Whether `key` is set.
    pub async fn contains_key(&self, key: &str) -> Result<bool, Error> {
        Ok(self.data().await?.contains_key(key))
    }

    /// The keys, in order.
    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        Ok(self.data().await?.keys().map(str::to_owned).collect())
    }

    /// The number of keys.
    pub async fn len(&self) -> Result<usize, Error> {
        Ok(self.data().await?.len())
    }

    /// Whether there are no keys.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.data().await?.is_empty())
    }

    /// Removes every key (the session itself stays).
    pub async fn clear(&self) -> Result<(), Error> {
        self.data().await?.clear();
        Ok(())
    }

    /// All data as a JSON object.
    pub async fn to_json(&self) -> Result<Value, Error> {
        Ok(self.data().await?.to_json())
    }

    /// Gives the session a new id, keeping its data (loaded first if it was
    /// not yet). The old record is deleted when the request ends and the
    /// new cookie keeps every configured attribute. Call it when a user logs
    /// in, against session fixation.
    pub async fn regenerate(&self) -> Result<(), Error> {
        self.state().await?.regenerate().await
    }

    /// Deletes the stored session when the request ends. Using the session
    /// again afterwards in this request starts a new, empty one.
    pub async fn delete(&self) -> Result<(), Error> {
        let mut state = self.state().await?;
        state.load_for_event().await?;
        state.delete();
        Ok(())
    }

    /// Makes the client drop its cookie: the response carries one that ends
    /// now. Pair it with [`delete`](Self::delete) to log out, or call
    /// [`logout`](Self::logout), which does both.
    pub async fn expire(&self) -> Result<(), Error> {
        self.state().await?.expire();
        Ok(())
    }

    /// Logs the visitor out: the stored session is deleted and the client
    /// told to drop its cookie (or id header), as [`delete`](Self::delete)
    /// and [`expire`](Self::expire) together (tower-sessions' `flush`).
    pub async fn logout(&self) -> Result<(), Error> {
        self.state().await?.logout().await
    }

    /// Ties the session to `user` (your id for the visitor who logged in),
    /// stored with it, so that [`user_sessions`](Self::user_sessions) and
    /// the `sessions` admin commands can find all of that user's sessions
    /// and end them. Call it at log-in, after
    /// [`regenerate`](Self::regenerate) (which keeps the user, as it keeps
    /// the data). [`logout`](Self::logout) ends the tie with the session.
    ///
    /// ```
    /// # async fn login(session: server_sessions::Session, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// let user: server_sessions::UserId = name.parse()?; // 1..=256 bytes, no control characters
    /// session.regenerate().await?;
    /// session.set_user(user).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_user(&self, user: UserId) -> Result<(), Error> {
        self.data().await?.set_user(user);
        Ok(())
    }

    /// Unties the session from its user, keeping the session and its data.
    pub async fn clear_user(&self) -> Result<(), Error> {
        self.data().await?.clear_user();
        Ok(())
    }

    /// The user the session is tied to, if any.
    pub async fn user(&self) -> Result<Option<UserId>, Error> {
        Ok(self.data().await?.user().cloned())
    }

    /// The live sessions of this session's user, most recently used first
    /// (this one among them once it was saved; compare
    /// [`UserSession::key`] with [`SessionId::store_key`] of
    /// [`id`](Self::id)). Empty if the session has no user.
    pub async fn user_sessions(&self) -> Result<Vec<UserSession>, Error> {
        self.state().await?.user_sessions().await
    }

    /// Ends every other session of this session's user ("log out my other
    /// devices", after a password change) and returns how many ended; this
    /// one stays. Requests in flight on them cannot save them back.
    pub async fn logout_other_sessions(&self) -> Result<u64, Error> {
        self.state().await?.end_user_sessions(false).await
    }

    /// Ends every session of this session's user, this one too (which is
    /// [`logout`](Self::logout)), and returns how many ended.
    pub async fn logout_everywhere(&self) -> Result<u64, Error> {
        self.state().await?.logout_everywhere().await
    }

    /// Takes the session's lock (in `explicit` mode; in the other modes the
    /// lock is taken for you and this does nothing more). Waits at most
    /// `lock_timeout`. Data read before the lock was taken, and not changed
    /// since, is read again under the lock.
    pub async fn acquire_lock(&self) -> Result<(), Error> {
        self.state().await?.acquire_lock().await
    }

    /// Saves what changed and releases the lock taken by
    /// [`acquire_lock`](Self::acquire_lock). Saving here, under the lock,
    /// and then forgetting the data, is what keeps the end-of-request save
    /// from overwriting what another request wrote after the release
    /// (CherryPy issue 1027): using the session again reads it afresh
    /// (without a lock in `explicit` mode — take it again before changing
    /// what other requests may change too).
    pub async fn release_lock(&self) -> Result<(), Error> {
        self.state().await?.release_lock().await
    }

    /// The request's session state, refused once the request was answered.
    async fn state(&self) -> Result<MutexGuard<'_, RequestSession>, Error> {
        // Waiting would be waiting for the caller itself. (Another task of
        // the request that holds the guard is refused too: the guard is
        // meant for short, synchronous use.)
        if self.0.data_held.load(Ordering::Acquire) {
            return Err(Error::DataHeld);
        }
        let state = self.0.state.lock().await;
        state.check_open()?;
        Ok(state)
    }
}

/// Ends the request's hold on its session when dropped, saving nothing:
/// what a response, a panic and a dropped future have in common.
#[derive(Debug)]
pub(crate) struct EndOnDrop(Session);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let state = self.0.request_state();
        if let Ok(mut state) = state.try_lock() {
            state.end();
            return;
        }
        // Only a task the handler spawned with a clone of the session can
        // hold the state now; end it as soon as that task lets go. Without
        // a runtime (it is shutting down) the lease or connection close
        // frees the lock, and the last clone's drop releases it anyway.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let session = self.0.clone();
            runtime.spawn(async move {
                session.request_state().lock().await.end();
            });
        }
    }
}

/// The bounds of [`Session::set_timeout`].
const MIN_OWN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_OWN_TIMEOUT: Duration = Duration::from_secs(400 * 24 * 3600);

/// A loaded session, in hand: what [`Session::data`] returns. Its methods
/// read and change the data this request loaded, with no I/O, so only a
/// conversion (a value that is not the type asked for, or a type that does
/// not serialize to JSON) can fail; the middleware saves what changed
/// after the handler, as it does for the handle's methods.
///
/// It holds the request's session state while it lives: the handle's
/// async methods fail with [`Error::DataHeld`] until it is dropped.
pub struct SessionData<'a> {
    session: MappedMutexGuard<'a, Loaded>,
    config: &'a SessionConfig,
    /// Cleared on drop: the handle may be called again.
    held: &'a AtomicBool,
}

impl Drop for SessionData<'_> {
    fn drop(&mut self) {
        self.held.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for SessionData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionData")
            .field("id", &self.session.id().short())
            .field("keys", &self.session.data().len())
            .finish_non_exhaustive()
    }
}

impl SessionData<'_> {
    /// The session's id (a fresh one if the client's was unknown).
    pub fn id(&self) -> SessionId {
        self.session.id()
    }

    /// When the session was created.
    pub fn created(&self) -> SystemTime {
        system_time(self.session.created())
    }

    /// When the session will expire if nothing uses it after this request:
    /// now + its idle timeout, or the absolute timeout if that comes first.
    pub fn expires(&self) -> SystemTime {
        system_time(self.expires_millis())
    }

    fn expires_millis(&self) -> Millis {
        self.session.expires_now(self.config)
    }

    /// Gives this session an idle timeout of its own ("remember me": 30
    /// days for one visitor while the others keep the configured
    /// `timeout`). It is kept in the session's record, so it holds on every
    /// later request and after a restart; the cookie's `Expires` and
    /// `Max-Age` follow it, and the configured `absolute_timeout`, if any,
    /// still bounds the session. Between one second and 400 days (the
    /// longest cookie lifetime browsers keep).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.own_timeout(Some(timeout.clamp(MIN_OWN_TIMEOUT, MAX_OWN_TIMEOUT)));
    }

    /// Returns the session to the configured `timeout`.
    pub fn clear_timeout(&mut self) {
        self.own_timeout(None);
    }

    fn own_timeout(&mut self, timeout: Option<Duration>) {
        self.session.set_own_timeout(timeout);
    }

    /// The idle timeout this session has: its own or the configured one.
    pub fn timeout(&self) -> Duration {
        self.session.timeout(self.config)
    }

    /// The value under `key`, converted to `T`: `Ok(None)` if there is
    /// none, an error naming the key if it is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get_value(key).map(|v| typed(key, v)).transpose()
    }

    /// The value under `key` as it is stored, raw JSON.
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.session.data().get(key)
    }

    /// Stores `value` under `key`; the old value is replaced. Fails only if
    /// `value` does not serialize to JSON (a map with keys that are not
    /// strings, say), and then nothing changes.
    pub fn insert<T: Serialize>(&mut self, key: &str, value: T) -> Result<(), Error> {
        let value = serde_json::to_value(value).map_err(|source| Error::Value {
            key: key.into(),
            source,
        })?;
        self.insert_value(key, value);
        Ok(())
    }

    /// Stores raw JSON under `key`; the old value is replaced.
    pub fn insert_value(&mut self, key: &str, value: Value) {
        self.session.insert_value(key, value);
    }

    /// Removes `key`, returning its value, converted to `T`, if it was
    /// there. The key is removed even if the value is not a `T` (the error
    /// says so).
    pub fn remove<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, Error> {
        self.remove_value(key).map(|v| typed(key, &v)).transpose()
    }

    /// Removes `key`, returning its raw JSON value if it was there.
    pub fn remove_value(&mut self, key: &str) -> Option<Value> {
        self.session.remove_value(key)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.session.data().contains_key(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.session.data().keys().map(String::as_str)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.session.data().len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.session.data().is_empty()
    }

    /// Removes every key (the session itself stays).
    pub fn clear(&mut self) {
        self.session.clear();
    }

    /// All data as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.session.data().clone())
    }

    /// Ties the session to `user`: see [`Session::set_user`].
    pub fn set_user(&mut self, user: UserId) {
        self.session.set_user(Some(user));
    }

    /// Unties the session from its user, keeping the session and its data.
    pub fn clear_user(&mut self) {
        self.session.set_user(None);
    }

    /// The user the session is tied to, if any.
    pub fn user(&self) -> Option<&UserId> {
        self.session.user()
    }
}

/// A stored value converted to `T`, or the error naming its key.
fn typed<T: DeserializeOwned>(key: &str, value: &Value) -> Result<T, Error> {
    T::deserialize(value).map_err(|source| Error::Value {
        key: key.into(),
        source,
    })
}
