//! The memcached store: CherryPy's `MemcachedSession`, locked across
//! processes.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use server_sessions::{store::MemcachedStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, server_sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
//! let store = MemcachedStore::connect(&["10.0.0.1:11211", "10.0.0.2:11211"]).await?;
//! let app: Router = Router::new()
//!     .route("/cart", get(cart))
//!     .layer(SessionLayer::new(store));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! The store on its own, through its trait:
//!
//! ```no_run
//! use server_sessions::store::{MemcachedStore, SessionStore, SaveIf};
//! use server_sessions::{SessionId, store::{now_millis, Record}};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
//! let store = MemcachedStore::connect(&["127.0.0.1:11211"]).await?;
//! let key = SessionId::generate().unwrap().store_key();
//! let now = now_millis();
//! let record = Record { data: b"{}".to_vec(), created: now, expires: now + 60_000, timeout: None, user: None };
//! assert!(store.save(&key, &record, SaveIf::Absent).await?);
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::{Error, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::{checked_entries, lease};
use crate::user::UserId;

mod expiry;
mod locks;
mod proto;
mod users;

use self::expiry::{check_lifetime, exptime};
use self::proto::{Mode, Outcome, Server};
use self::users::{parse_index, INDEX_LIMIT};

const DEFAULT_PREFIX: &str = "session:";
const DEFAULT_MAX_SIZE: usize = 64 * 1024;
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// memcached counts expiry in whole seconds: a shorter lease could end
/// before its first renewal.
const MIN_LEASE: Duration = Duration::from_secs(3);
/// How often a save retries when its compare-and-swap meets another write.
const CAS_TRIES: usize = 8;

/// Sessions in memcached, shared by every instance that uses the same
/// servers.
///
/// # Layout and expiry
///
/// `<prefix><key>` holds the session's record (the framed, checksummed
/// format of [`Record::encode`]), `<prefix><key>:lock` its lock,
/// `<prefix><key>:turn` another process's claim on the lock's next turn
/// while it waits, `<prefix>user:<user>` the user index (one line `<key> <expires ms>` per
/// session of the user). `<key>` is the session's [`StoreKey`], `<user>` the
/// user id's [`index_key`](crate::UserId::index_key): nothing in memcached
/// opens a session. Every item expires by memcached's own expiry (spans
/// over 30 days are sent as Unix times, as memcached wants them); clean-up
/// has nothing to do.
///
/// memcached's Unix times end at 2038-01-19 03:14:07 UTC (a signed 32-bit
/// number; a later one it takes, answers as stored and drops at once). A
/// save, refresh or lock whose item would have to live past that instant,
/// more than 30 days ahead, writes nothing and answers
/// [`Error::ExpiresTooLate`] (a 500): a session this long cannot be kept,
/// and must not look kept. [`open`](crate::store::open) refuses a
/// `timeout` (or `absolute_timeout`) over 30 days that would reach it
/// within a year. A user index entry, kept a little past its session for
/// servers whose clocks disagree, is kept no later than that instant.
///
/// With several servers, each session (its record and its lock together)
/// and each user index lives on one of them, chosen by rendezvous hashing
/// of its key: every instance picks the same, and a server added or
/// removed moves only its share of the sessions.
///
/// # Locks
///
/// A lock is a lease (the rules of the SQL stores': taken when free,
/// renewed every third of it, released by its holder): `add` of the lock
/// item with this holder's token, which expires with the lease; renewal
/// and release compare the token and then write or delete only that
/// version of the item (compare-and-swap). A save under the lock first
/// checks that the lease is still this holder's and writes nothing
/// otherwise; the record is written with compare-and-swap against the
/// version it checked, so a session deleted, regenerated or expired
/// meanwhile is never brought back. Waiters in other processes poll; one
/// that finds the lock held claims the next turn (the `:turn` item, a
/// second unless renewed), and no other process takes the lock while
/// that claim lives (`lease.rs`, "Turns").
///
/// # What memcached loses
///
/// memcached keeps everything in memory and evicts items when it is full:
/// a restart loses every session, an eviction one (its visitor gets a new,
/// empty session — never an error). A user index evicted or lost forgets
/// that user's sessions for listing and ending; they still end by their
/// own expiry. memcached cannot list its keys: [`SessionAdmin::count`] and
/// [`keys`](SessionAdmin::keys) answer [`Error::Unsupported`], while a
/// session named by its id or key can be read and deleted.
#[derive(Clone)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    servers: Arc<[Server]>,
    prefix: String,
    lease: Duration,
    max_size: usize,
    waits: Arc<LockWaits>,
}

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<&str> = self.inner.servers.iter().map(|s| s.addr.as_str()).collect();
        f.debug_struct("MemcachedStore")
            .field("servers", &servers)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// A server address that is not `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not host:port")]
struct BadAddress(String);

/// A prefix memcached cannot take in a key.
#[derive(Debug, thiserror::Error)]
#[error("a memcached key prefix is at most 100 bytes without spaces or control characters")]
struct BadPrefix;

impl MemcachedStore {
    /// Connects to the memcached `servers` (`host:port` each) and checks
    /// that each answers.
    pub async fn connect(servers: &[impl AsRef<str>]) -> Result<Self, Error> {
        let mut list = Vec::new();
        for addr in servers {
            let addr = addr.as_ref().trim();
            let valid = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(Error::config("servers", BadAddress(addr.to_owned())));
            }
            list.push(Server::new(addr.to_owned()));
        }
        if list.is_empty() {
            return Err(Error::config("servers", BadAddress(String::new())));
        }
        for server in &list {
            server
                .ping()
                .await
                .map_err(|e| Error::unavailable("connecting to memcached", e))?;
        }
        Ok(MemcachedStore {
            inner: Arc::new(Inner {
                servers: list.into(),
                prefix: DEFAULT_PREFIX.to_owned(),
                lease: DEFAULT_LEASE,
                max_size: DEFAULT_MAX_SIZE,
                waits: LockWaits::new(),
            }),
        })
    }

    /// [`connect`](Self::connect) to the servers of a
    /// `memcache://host:port[,host:port…]` URL.
    pub async fn connect_url(url: &str) -> Result<Self, Error> {
        let Some(rest) = url.strip_prefix("memcache://") else {
            return Err(Error::config("storage_url", BadAddress(url.to_owned())));
        };
        let servers: Vec<&str> = rest.trim_end_matches('/').split(',').collect();
        Self::connect(&servers).await
    }

    /// Keys start with `prefix` (default `session:`), so that stores of
    /// several apps can share servers.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self, Error> {
        let prefix = prefix.into();
        if prefix.len() > 100 || prefix.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Error::config("prefix", BadPrefix));
        }
        self.inner_mut().prefix = prefix;
        Ok(self)
    }

    /// How long a lock lasts unless renewed (default 10 s, at least 3 s:
    /// memcached's expiry is in seconds). A holder that died frees its
    /// locks after this.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.inner_mut().lease = lease.max(MIN_LEASE);
        self
    }

    /// The largest session data, in bytes, the store writes or reads
    /// (default 64 KiB; memcached's own item limit is 1 MiB by default).
    pub fn with_max_size(mut self, max_size: usize) -> Self {
        self.inner_mut().max_size = max_size;
        self
    }

    /// For the builders: clones made before keep their settings.
    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    fn data_key(&self, key: &StoreKey) -> String {
        format!("{}{}", self.inner.prefix, &*key.as_hex())
    }

    fn lock_key(&self, key: &StoreKey) -> String {
        format!("{}{}:lock", self.inner.prefix, &*key.as_hex())
    }

    /// The claim on a session's next lock turn (`lease.rs`: turns).
    fn turn_key(&self, key: &StoreKey) -> String {
        format!("{}{}:turn", self.inner.prefix, &*key.as_hex())
    }

    fn user_key(&self, user: &UserId) -> String {
        format!("{}user:{}", self.inner.prefix, &*user.index_key())
    }

    /// The server of a session (its record and its lock).
    fn server(&self, key: &StoreKey) -> &Server {
        proto::pick(&self.inner.servers, key.as_hex().as_bytes())
    }

    fn user_server(&self, user: &UserId) -> &Server {
        proto::pick(&self.inner.servers, user.index_key().as_bytes())
    }

    fn read_limit(&self) -> usize {
        self.inner.max_size.saturating_add(Record::MAX_HEADER)
    }

    /// Refuses, before anything is written, a record larger than the
    /// store reads back, or one that expires later than memcached can keep
    /// it.
    fn check_record(&self, record: &Record) -> Result<(), Error> {
        if record.data.len() > self.inner.max_size {
            return Err(Error::TooLarge {
                size: record.data.len(),
                max: self.inner.max_size,
            });
        }
        exptime(record.expires).map(drop)
    }

    /// The stored record and its CAS token; an unreadable item is logged
    /// and reported as no record, with its token (so a save may replace
    /// it).
    async fn read(&self, key: &StoreKey) -> Result<Option<(Option<Record>, u64)>, Error> {
        let item = self
            .server(key)
            .get(&self.data_key(key), self.read_limit())
            .await;
        self.stored(key, item)
    }

    /// What a `get` of a session's item answered, as the stored record
    /// (`None` inside: an item that is no record of ours, logged) and the
    /// item's CAS token; `None` outside: no item. A value too large to be
    /// read is logged and counts as no record.
    fn stored(
        &self,
        key: &StoreKey,
        item: io::Result<Option<proto::Item>>,
    ) -> Result<Option<(Option<Record>, u64)>, Error> {
        let unreadable = |e: &dyn fmt::Display| {
            tracing::warn!(session = %key.short(), error = %e, "ignoring an unreadable session in memcached");
        };
        let item = match item {
            Ok(item) => item,
            Err(e) if proto::is_too_large(&e) => {
                unreadable(&e);
                return Ok(None);
            }
            Err(e) => return Err(Error::unavailable("loading a session", e)),
        };
        Ok(item.map(|item| {
            let record = Record::decode(&item.value, self.inner.max_size)
                .map_err(|e| unreadable(&e))
                .ok();
            (record, item.cas)
        }))
    }

    /// Writes `record` under its precondition: `Absent` adds, or replaces
    /// an item that holds no live record; `Live` replaces the version that
    /// was read live. A write that meets another one is read again.
    async fn write(&self, key: &StoreKey, record: &Record, only: SaveIf) -> Result<bool, Error> {
        const CONTEXT: &str = "saving a session";
        let (server, data_key) = (self.server(key), self.data_key(key));
        let (bytes, exptime) = (record.encode(), exptime(record.expires)?);
        let fail = |e| Error::unavailable(CONTEXT, e);
        for _ in 0..CAS_TRIES {
            let Some((mode, cas)) = precondition(only, self.read(key).await?) else {
                return Ok(false);
            };
            let outcome = server
                .set(&data_key, &bytes, exptime, mode, cas)
                .await
                .map_err(fail)?;
            match outcome {
                Outcome::Done => return Ok(true),
                // Written or removed by someone else since it was read.
                Outcome::NotStored | Outcome::Changed | Outcome::NotFound => continue,
            }
        }
        Err(Error::unavailable(CONTEXT, Contended))
    }
}

/// How a save under `only` may write over what the session's item holds
/// now (`stored`, as [`MemcachedStore::stored`] gives it): `Absent` adds,
/// or replaces an item that holds no live record (one memcached has not
/// dropped yet); `Live` replaces the version read, if it is live. `None`:
/// the precondition fails.
fn precondition(
    only: SaveIf,
    stored: Option<(Option<Record>, u64)>,
) -> Option<(Mode, Option<u64>)> {
    let now = now_millis();
    match (only, stored) {
        (SaveIf::Absent, None) => Some((Mode::Add, None)),
        (SaveIf::Absent, Some((Some(r), _))) if !r.is_expired(now) => None,
        (SaveIf::Absent, Some((_, cas))) => Some((Mode::Set, Some(cas))),
        (SaveIf::Live, Some((Some(r), cas))) if !r.is_expired(now) => Some((Mode::Set, Some(cas))),
        (SaveIf::Live, _) => None,
    }
}

/// Every try of a compare-and-swap met another write.
#[derive(Debug, thiserror::Error)]
#[error("the item kept changing under the write; try again")]
struct Contended;

/// What memcached cannot do, for the admin side.
const CANNOT_LIST: &str = "list its sessions (memcached cannot list its keys; \
                           show and delete take a session's id or key)";

impl MemcachedStore {
    /// The memcached store a config describes: [`connect`](Self::connect)
    /// to its `servers` (or [`connect_url`](Self::connect_url) to a
    /// `memcache://` `storage_url` when there are none), with its
    /// `memcached_prefix`, holding sessions up to the largest `max_size` of
    /// any section (what [`store::open`](crate::store::open) builds for
    /// `storage_type = "memcached"`).
    ///
    /// Refuses, before connecting, a section whose sessions would outlive
    /// what memcached can keep (its expiry ends in 2038): every save of
    /// them would fail. A session lives its `timeout`, or its
    /// `absolute_timeout` if that is shorter; the error names whichever
    /// decides.
    pub async fn from_config(config: &crate::Config) -> Result<Self, super::OpenError> {
        for (path, section) in config.sections().filter(|(_, c)| c.on) {
            let (key, lifetime) = match section.absolute_timeout {
                Some(absolute) if absolute < section.timeout => ("absolute_timeout", absolute),
                _ => ("timeout", section.timeout),
            };
            check_lifetime(path, lifetime).map_err(|e| Error::config(key, e))?;
        }
        let storage = config.storage();
        let store = match &storage.url {
            Some(url) if storage.servers.is_empty() => Self::connect_url(url.expose()).await?,
            _ => Self::connect(&storage.servers).await?,
        };
        let store = store.with_prefix(storage.memcached_prefix.clone())?;
        Ok(store.with_max_size(config.largest_max_size()))
    }
}

#[async_trait]
impl SessionStore for MemcachedStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let now = now_millis();
        Ok(self
            .read(key)
            .await?
            .and_then(|(record, _)| record)
            .filter(|r| !r.is_expired(now)))
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        self.check_record(record)?;
        self.index(key, record).await?;
        self.write(key, record, write).await
    }

    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        const CONTEXT: &str = "refreshing a session";
        // The record says when it expires, so it is written again, with
        // compare-and-swap against the version read: a write that came in
        // between is read again, never overwritten with older data.
        let fail = |e| Error::unavailable(CONTEXT, e);
        // Refused before the index or the record is written.
        let exptime = exptime(expires)?;
        for _ in 0..CAS_TRIES {
            let Some((Some(record), cas)) = self.read(key).await? else {
                return Ok(false);
            };
            if record.is_expired(now_millis()) {
                return Ok(false);
            }
            let record = Record { expires, ..record };
            self.index(key, &record).await?;
            let outcome = self
                .server(key)
                .set(
                    &self.data_key(key),
                    &record.encode(),
                    exptime,
                    Mode::Set,
                    Some(cas),
                )
                .await
                .map_err(fail)?;
            match outcome {
                Outcome::Done => return Ok(true),
                Outcome::NotFound => return Ok(false),
                Outcome::Changed | Outcome::NotStored => continue,
            }
        }
        Err(Error::unavailable(CONTEXT, Contended))
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        let user = self.read(key).await?.and_then(|(r, _)| r?.user);
        self.server(key)
            .delete(&self.data_key(key), None)
            .await
            .map_err(|e| Error::unavailable("deleting a session", e))?;
        // The record is gone; its entry in its user's index goes after it.
        if let Some(user) = user {
            self.change_index(&user, |entries| {
                let before = entries.len();
                entries.retain(|(k, _)| k != key);
                entries.len() != before
            })
            .await?;
        }
        Ok(())
    }

    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        lease::lock(self, key, wait, load).await
    }

    async fn sessions_of(&self, user: &UserId) -> Result<Vec<(StoreKey, Record)>, Error> {
        let item = self
            .user_server(user)
            .get(&self.user_key(user), INDEX_LIMIT)
            .await
            .map_err(|e| Error::unavailable("listing a user's sessions", e))?;
        let entries = item.map(|i| parse_index(&i.value)).unwrap_or_default();
        // An entry without its record may be a save on its way, and is
        // left to expire.
        checked_entries(self, user, entries.into_iter().map(|(key, _)| key)).await
    }
}

#[async_trait]
impl SessionAdmin for MemcachedStore {
    async fn count(&self) -> Result<u64, Error> {
        Err(Error::Unsupported(CANNOT_LIST))
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        stream::iter([Err(Error::Unsupported(CANNOT_LIST))]).boxed()
    }

    async fn clean_up_and_report(&self, _: OnExpired<'_>) -> Result<u64, Error> {
        // memcached expires items by itself.
        Ok(0)
    }
}
