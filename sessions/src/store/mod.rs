//! Where sessions live: the [`SessionStore`] trait, its admin companion
//! [`SessionAdmin`], and the stores that come with the crate.
//!
//! [`MemoryStore`] is always built; every other store is behind the cargo
//! feature of its name: `file` (`FileStore`, Unix), `redis`
//! (`RedisStore`), `postgres` (`PostgresStore`), `sqlite` (`SqliteStore`),
//! `mysql` (`MysqlStore`, MySQL and MariaDB), `memcached` (`MemcachedStore`).
//! [`open`] builds the one a config file names.
//!
//! A store knows nothing of HTTP. It loads and saves [`Record`]s by
//! [`StoreKey`] — the SHA-256 of a session's id, never the id itself, so
//! nothing a store holds opens a session — hands out per-session locks as
//! [`LockGuard`] values, and checks
//! a [`SaveIf`] precondition on every save so that a request can never bring
//! back a session that was deleted, regenerated or expired while it ran.
//!
//! ```
//! use server_sessions::store::{MemoryStore, SessionStore, SaveIf};
//! use server_sessions::{SessionId, store::Record};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
//! let store = MemoryStore::new();
//! let key = SessionId::generate().unwrap().store_key();
//! let now = server_sessions::store::now_millis();
//! let record = Record { data: br#"{"n":1}"#.to_vec(), created: now, expires: now + 60_000, timeout: None, user: None };
//! assert!(store.save(&key, &record, SaveIf::Absent).await?);
//! assert_eq!(store.load(&key).await?, Some(record));
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

#[cfg(doc)]
use crate::id::SessionId;
use crate::user::UserId;

mod cookie;
mod memory;
mod open;
pub(crate) mod users;
mod wait;

#[cfg(all(feature = "file", unix))]
mod file;
#[cfg(any(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "memcached"
))]
mod lease;
#[cfg(feature = "memcached")]
mod memcached;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod sql;

#[cfg(feature = "test-suite")]
#[doc(hidden)]
pub mod conformance;

pub(crate) use cookie::InCookie;
#[doc(hidden)]
pub use cookie::{open_cookie, seal_cookie};
pub use cookie::{CookieStore, MAX_COOKIE};
pub use memory::{default_max_memory, MemoryStore, ENTRY_OVERHEAD};
pub use open::{migrate, open, OpenError};
pub(crate) use users::UserSession;
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) use users::INDEX_SLACK;
pub(crate) use users::{checked_entries, end_sessions_of};
pub use users::{end_user_sessions, user_sessions};
pub use wait::Keep;
// What a store is written with: its keys and its records. (The crate root
// holds what an app uses.)
pub use crate::id::{HexKey, InvalidKey, StoreKey};
pub use crate::record::{now_millis, DecodeError, Millis, Record};
pub(crate) use wait::LocalGuard;
pub(crate) use wait::LockWaits;
#[cfg(any(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "memcached"
))]
pub(crate) use wait::COURTESY;
#[cfg(any(
    all(feature = "file", unix),
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "memcached"
))]
pub(crate) use wait::TURN;
#[cfg(any(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "memcached"
))]
pub(crate) use wait::{Entered, Known, Place};

#[cfg(all(feature = "file", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "file", unix))))]
pub use file::FileStore;
#[cfg(feature = "memcached")]
#[cfg_attr(docsrs, doc(cfg(feature = "memcached")))]
pub use memcached::MemcachedStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisStore;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use sql::MysqlStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use sql::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sql::SqliteStore;

/// A boxed error from a store's backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session's lock was not free within the configured wait.
    #[error("timed out after {0:?} waiting for the session lock")]
    LockTimeout(Duration),
    /// The record is larger than this store reads back, so it was not
    /// written; what the store held before is unchanged.
    #[error("session of {size} bytes exceeds the store's limit of {max} bytes")]
    TooLarge {
        /// The size of the record's data.
        size: usize,
        /// The store's limit.
        max: usize,
    },
    /// A setting the store was given is wrong (a URL that does not parse, a
    /// table name that is not a plain identifier). Reported when the store
    /// is built or opened, never while serving: retrying cannot help.
    #[error("invalid {setting}")]
    Config {
        /// The setting, as the config file names it (`storage_url`, `table`).
        setting: &'static str,
        /// What is wrong with it.
        #[source]
        source: BoxError,
    },
    /// The session would expire later than the store can keep anything
    /// (memcached: past 2038-01-19 03:14:07 UTC for a session of more than
    /// 30 days, the last instant its protocol can name), so it was not
    /// written: the store would have taken it and dropped it at once. What
    /// the store held before is unchanged. Retrying cannot help; a shorter
    /// timeout can.
    #[error("session expiring at {expires} ms since the epoch outlives what this store keeps (until {latest} ms)")]
    ExpiresTooLate {
        /// When the session would expire.
        expires: Millis,
        /// The latest expiry the store could have taken.
        latest: Millis,
    },
    /// The store cannot do this by its design (memcached cannot list its
    /// keys; a store of another crate may keep no user index). Retrying
    /// cannot help.
    #[error("this store cannot {0}")]
    Unsupported(&'static str),
    /// The backend failed or could not be reached (I/O, network, database).
    #[error("session store unavailable: {context}")]
    Unavailable {
        /// What the store was doing.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A wrong setting, named as the config file names it.
    pub fn config(setting: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Config {
            setting,
            source: source.into(),
        }
    }

    /// Wraps a backend error, saying what the store was doing.
    pub fn unavailable(context: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            context,
            source: source.into(),
        }
    }
}

/// When a save may write: its precondition, checked by the store in the
/// same step as the write, so that a save never resurrects a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveIf {
    /// A new session: written only if no live record has this key.
    Absent,
    /// A loaded session: written only if its record still exists and has not
    /// expired (it was not deleted, regenerated or expired meanwhile).
    Live,
}

/// A held session lock, as a store hands it out in a [`LockGuard`]: it
/// knows its session and its store, releases itself when dropped (stores
/// whose release needs I/O spawn it from `Drop`; their lease or connection
/// close is the backstop), and ends with a save in one step where the
/// store can.
#[async_trait]
pub trait SessionLock: Send + 'static {
    /// Writes `record` if the precondition `write` holds, then releases
    /// the lock — in one round trip where the store can. `Ok(false)`,
    /// writing nothing, when the precondition does not hold.
    async fn save_and_release(
        self: Box<Self>,
        record: &Record,
        write: SaveIf,
    ) -> Result<bool, Error>;

    /// Waits until what the lock was taken with is in the store: a store
    /// whose locks pass from one request to the next of the process before
    /// the first one's save is acknowledged (pipelined saves) says here
    /// whether that save, and every one before it, went in: `Ok(false)`
    /// when the store refused it because the session had ended meanwhile,
    /// so the record the lock came with is no longer the session's. A
    /// request waits for this before it reads the store or answers from
    /// data it did not write itself. The default has nothing to wait for.
    async fn durable(&mut self) -> Result<bool, Error> {
        Ok(true)
    }

    /// Ends a request that changed nothing and wrote nothing. The default
    /// releases (drops the lock); a store that keeps sessions in the
    /// process (see [`Keep`]) may keep this one, with the record the lock
    /// was taken with.
    fn release_unchanged(self: Box<Self>) {}
}

/// A held session lock. Dropping it releases the lock; so does
/// [`save_and_release`](Self::save_and_release), after its save.
///
/// Because releasing is dropping, a handler that returns early, panics, or
/// whose future is dropped when the client goes away releases the lock the
/// same way.
pub struct LockGuard(Box<dyn SessionLock>);

impl LockGuard {
    /// Wraps a store's lock value.
    pub fn new(lock: impl SessionLock) -> Self {
        LockGuard(Box::new(lock))
    }

    /// Saves `record` under its precondition and releases the lock: see
    /// [`SessionLock::save_and_release`].
    pub async fn save_and_release(self, record: &Record, write: SaveIf) -> Result<bool, Error> {
        self.0.save_and_release(record, write).await
    }

    /// Waits until what the lock was taken with is in the store: see
    /// [`SessionLock::durable`].
    pub async fn durable(&mut self) -> Result<bool, Error> {
        self.0.durable().await
    }

    /// Ends a request that changed nothing: see
    /// [`SessionLock::release_unchanged`].
    pub fn release_unchanged(self) {
        self.0.release_unchanged();
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Loads, saves and locks sessions. One implementation per backend; every
/// implementation passes the crate's conformance suite.
///
/// A store is given [`StoreKey`]s, never session ids: the layer hashes the
/// id a client presents ([`SessionId::store_key`]) and asks for that, so
/// whatever a store writes (files, keys, rows, logs of its own) names
/// sessions by a key that cannot be turned back into a cookie. Records are
/// already size-checked by the caller.
#[async_trait]
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// The live record, or `None` if there is none or it has expired.
    /// A record that cannot be decoded is logged and reported as `None`.
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error>;

    /// Writes `record` if the precondition `write` holds. Returns `false`,
    /// writing nothing, when it does not.
    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error>;

    /// Writes `record` under `key` in place of the live record under `old`:
    /// a regenerated session's first save. Written only if `old`'s record
    /// is still live and no live record has `key`, and `old`'s record is
    /// removed with it; `false`, writing nothing, when `old` is gone (it
    /// was deleted, its user logged out everywhere, or it expired while
    /// the request ran), so a session ended meanwhile never lives on under
    /// its new id.
    ///
    /// Stores that can check and write in one atomic step (a script, a
    /// statement, one lock over both) override this. The default checks
    /// first, then saves, then removes `old`: a delete of `old` that falls
    /// between the check and the save is not seen, and the session lives
    /// on under `key`.
    async fn replace(
        &self,
        old: &StoreKey,
        key: &StoreKey,
        record: &Record,
    ) -> Result<bool, Error> {
        replace_in_steps(self, old, key, record).await
    }

    /// Moves the expiry of an existing, live record without rewriting its
    /// data. Returns `false` if there is no such record.
    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error>;

    /// Removes the record, if any. For a request that holds the session's
    /// lock, or a store that keeps no session in a process; from outside,
    /// use [`end`](Self::end).
    async fn delete(&self, key: &StoreKey) -> Result<(), Error>;

    /// Ends a session from outside any request that holds its lock (the
    /// logout of a user's other sessions, the admin commands): a store
    /// that keeps sessions in processes ([`Keep`]) first takes the lock,
    /// so that a process keeping the session gives it back and can never
    /// serve it again; then the record is removed. The default deletes.
    async fn end(&self, key: &StoreKey) -> Result<(), Error> {
        self.delete(key).await
    }

    /// Whether a live record exists.
    async fn exists(&self, key: &StoreKey) -> Result<bool, Error> {
        Ok(self.load(key).await?.is_some())
    }

    /// Takes the session's lock, waiting at most `wait`
    /// ([`Error::LockTimeout`] after that), and with `load` reads the
    /// record under it, in the same round trip where the store can. The
    /// lock excludes every other holder of the same key that uses this
    /// store's backend — in other tasks, and for shared stores in other
    /// processes. The one lock operation a store implements; [`lock`] and
    /// [`lock_and_load`] call it.
    ///
    /// [`lock`]: Self::lock
    /// [`lock_and_load`]: Self::lock_and_load
    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), Error>;

    /// Takes the session's lock: [`acquire`](Self::acquire) without the
    /// read.
    async fn lock(&self, key: &StoreKey, wait: Duration) -> Result<LockGuard, Error> {
        Ok(self.acquire(key, wait, false).await?.0)
    }

    /// Takes the session's lock and reads its live record:
    /// [`acquire`](Self::acquire) with the read.
    async fn lock_and_load(
        &self,
        key: &StoreKey,
        wait: Duration,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        self.acquire(key, wait, true).await
    }

    /// The live sessions tied to `user` ([`Record::user`]), with their
    /// records, in no particular order.
    ///
    /// Every store keeps an index user → sessions, written with each save
    /// of a session that has a user and emptied as sessions end or expire
    /// (see each store's docs for how). A session that ends while this
    /// runs may still be listed; one that changed user is listed under its
    /// new user only. Stores of other crates that keep no index answer
    /// [`Error::Unsupported`], the default.
    async fn sessions_of(&self, user: &UserId) -> Result<Vec<(StoreKey, Record)>, Error> {
        let _ = user;
        Err(Error::Unsupported("list a user's sessions"))
    }

    /// Sessions the backend itself expired, as it announces them (Redis
    /// with keyspace notifications on), for
    /// [`SessionEvent::Expired`](crate::SessionEvent::Expired) with
    /// [`FoundBy::Ttl`](crate::FoundBy::Ttl). `None`, the default: the
    /// backend announces nothing (clean-up reports what it removes).
    /// Called once, from inside the runtime; the stream ends with the
    /// store.
    fn expirations(&self) -> Option<BoxStream<'static, StoreKey>> {
        None
    }

    /// The store's admin side, if it has one: the layer's background
    /// clean-up uses it. A store that only serves requests keeps the
    /// default; one that implements [`SessionAdmin`] returns `Some(self)`.
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        None
    }
}

/// [`SessionStore::replace`] in three calls — check, save, delete — for a
/// store that has no one step for it: a delete of `old` between the check
/// and the save goes unseen.
pub(crate) async fn replace_in_steps<S: SessionStore + ?Sized>(
    store: &S,
    old: &StoreKey,
    key: &StoreKey,
    record: &Record,
) -> Result<bool, Error> {
    if !store.exists(old).await? {
        return Ok(false);
    }
    let saved = store.save(key, record, SaveIf::Absent).await?;
    if saved {
        store.delete(old).await?;
    }
    Ok(saved)
}

/// Operations over all sessions of a store: for clean-up and the admin
/// commands, not for the request path.
#[async_trait]
pub trait SessionAdmin: SessionStore {
    /// How many live sessions there are (expired ones not yet cleaned up
    /// may be counted by stores that cannot tell cheaply).
    async fn count(&self) -> Result<u64, Error>;

    /// The keys of stored sessions, streamed so that a large store is never
    /// held in memory at once.
    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>>;

    /// Removes expired sessions and returns how many were removed. Never
    /// removes or breaks a lock that is held.
    async fn clean_up(&self) -> Result<u64, Error> {
        self.clean_up_and_report(&|_, _| {}).await
    }

    /// [`clean_up`](Self::clean_up), telling `expired` of each session it
    /// removed (the layer turns these into
    /// [`SessionEvent::Expired`](crate::SessionEvent::Expired)). A store
    /// whose backend expires sessions by itself (Redis) removes nothing
    /// here and tells nothing.
    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error>;
}

/// Told of each session a clean-up removed: its key, and its user when the
/// store could still read it.
pub type OnExpired<'a> = &'a (dyn Fn(StoreKey, Option<UserId>) + Send + Sync);

/// Stores are shared between the layer, the clean-up task and the app.
#[async_trait]
impl<S: SessionStore + ?Sized> SessionStore for std::sync::Arc<S> {
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        (**self).load(key).await
    }
    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        (**self).save(key, record, write).await
    }
    async fn replace(
        &self,
        old: &StoreKey,
        key: &StoreKey,
        record: &Record,
    ) -> Result<bool, Error> {
        (**self).replace(old, key, record).await
    }
    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        (**self).touch(key, expires).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        (**self).delete(key).await
    }
    async fn end(&self, key: &StoreKey) -> Result<(), Error> {
        (**self).end(key).await
    }
    async fn exists(&self, key: &StoreKey) -> Result<bool, Error> {
        (**self).exists(key).await
    }
    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        (**self).acquire(key, wait, load).await
    }
    async fn sessions_of(&self, user: &UserId) -> Result<Vec<(StoreKey, Record)>, Error> {
        (**self).sessions_of(user).await
    }
    fn expirations(&self) -> Option<BoxStream<'static, StoreKey>> {
        (**self).expirations()
    }
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        (**self).as_admin()
    }
}

#[async_trait]
impl<S: SessionAdmin + ?Sized> SessionAdmin for std::sync::Arc<S> {
    async fn count(&self) -> Result<u64, Error> {
        (**self).count().await
    }
    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        (**self).keys()
    }
    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error> {
        (**self).clean_up_and_report(expired).await
    }
}
