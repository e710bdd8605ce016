//! The memcached store: CherryPy's `MemcachedSession`, locked across
//! processes.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sessions::{store::MemcachedStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sessions::store::Error> {
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
//! use sessions::store::{MemcachedStore, SessionStore, SaveIf};
//! use sessions::{now_millis, Record, SessionId};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sessions::store::Error> {
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

use super::lease::{self, LeaseBackend, Released, Taken};
use super::{Error, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::{checked_entries, INDEX_SLACK};
use crate::user::UserId;

mod proto;

use self::proto::{Mode, Op, Outcome, Server};

const DEFAULT_PREFIX: &str = "session:";
const DEFAULT_MAX_SIZE: usize = 64 * 1024;
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// memcached counts expiry in whole seconds: a shorter lease could end
/// before its first renewal.
const MIN_LEASE: Duration = Duration::from_secs(3);
/// memcached reads an expiry above 30 days as a Unix time, not a span.
const RELATIVE_LIMIT: u64 = 30 * 24 * 3600;
/// The largest Unix time memcached takes as an expiry: it reads the number
/// as a signed 32-bit one (2038-01-19 03:14:07 UTC). A larger one wraps:
/// below zero memcached answers the write as stored and drops the item at
/// once; from 2^32 on, it keeps the item for ever.
const LAST_EXPTIME: u64 = i32::MAX as u64;
/// How much of a configured lifetime must fit before memcached's last
/// expiry when the store is opened: a server started today keeps saving
/// its longest sessions for at least this long.
const OPEN_MARGIN: Duration = Duration::from_secs(365 * 24 * 3600);
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

    /// Lists the session in its user's index, before the record is
    /// written: a save that fails after this leaves an entry too many
    /// (which the index drops once it expires), never one too few.
    async fn index(&self, key: &StoreKey, record: &Record) -> Result<(), Error> {
        let Some(user) = &record.user else {
            return Ok(());
        };
        // Kept a while past the session: servers' clocks may disagree. But
        // no later than memcached can keep it: the record's expiry was
        // checked before (`exptime`), the slack may be lost at the limit.
        let until = record
            .expires
            .saturating_add(INDEX_SLACK)
            .min(latest_until(now_millis()));
        self.change_index(user, |entries| {
            match entries.iter_mut().find(|(k, _)| k == key) {
                // Far enough already: most saves of a session write nothing.
                Some((_, listed)) if *listed >= record.expires => return false,
                Some((_, listed)) => *listed = until,
                None => entries.push((*key, until)),
            }
            true
        })
        .await
    }

    /// Changes one user's index with compare-and-swap (`change` says
    /// whether it changed anything); what expired goes at each change, and
    /// the index expires with its last session.
    async fn change_index(
        &self,
        user: &UserId,
        change: impl Fn(&mut Vec<(StoreKey, Millis)>) -> bool,
    ) -> Result<(), Error> {
        const CONTEXT: &str = "indexing a user's session";
        let (server, user_key) = (self.user_server(user), self.user_key(user));
        let fail = |e| Error::unavailable(CONTEXT, e);
        for _ in 0..CAS_TRIES {
            let item = server.get(&user_key, INDEX_LIMIT).await.map_err(fail)?;
            let (mut entries, cas) = match &item {
                Some(item) => (parse_index(&item.value), Some(item.cas)),
                None => (Vec::new(), None),
            };
            let (now, listed) = (now_millis(), entries.len());
            entries.retain(|(_, expires)| *expires > now);
            if !change(&mut entries) && entries.len() == listed {
                return Ok(());
            }
            let outcome = match (entries.iter().map(|(_, e)| *e).max(), cas) {
                (None, Some(cas)) => server.delete(&user_key, Some(cas)).await,
                (None, None) => return Ok(()),
                (Some(last), cas) => {
                    let mode = if cas.is_some() { Mode::Set } else { Mode::Add };
                    let value = format_index(&entries);
                    server
                        .set(&user_key, &value, exptime(last)?, mode, cas)
                        .await
                }
            }
            .map_err(fail)?;
            if outcome == Outcome::Done || (outcome == Outcome::NotFound && entries.is_empty()) {
                return Ok(());
            }
        }
        Err(Error::unavailable(CONTEXT, Contended))
    }

    /// The lock's holder token and CAS, if it is locked.
    async fn lock_holder(&self, key: &StoreKey) -> Result<Option<(Vec<u8>, u64)>, Error> {
        let item = self
            .server(key)
            .get(&self.lock_key(key), 64)
            .await
            .map_err(|e| Error::unavailable("checking a session lock", e))?;
        Ok(item.map(|item| (item.value, item.cas)))
    }

    /// A save under `owner`'s lease in two round trips: the lock and the
    /// record read together (the lease must still be ours, the record meet
    /// the precondition), then the record written with compare-and-swap
    /// together with the lock's release — or, with `keep_until`, its
    /// renewal for a hand-over. Both are on the session's one server.
    async fn save_under_lease(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        keep_until: Option<Millis>,
    ) -> Result<Released, Error> {
        const CONTEXT: &str = "saving a session";
        let fail = |e| Error::unavailable(CONTEXT, e);
        self.check_record(record)?;
        self.index(key, record).await?;
        let (server, lock_key, data_key) =
            (self.server(key), self.lock_key(key), self.data_key(key));
        let reads = [
            Op::Get {
                key: &lock_key,
                limit: 64,
            },
            Op::Get {
                key: &data_key,
                limit: self.read_limit(),
            },
        ];
        let mut answers = server.batch(&reads).await.map_err(fail)?.into_iter();
        let (Some(lock), Some(data)) = (answers.next(), answers.next()) else {
            return Err(fail(io::Error::other("memcached answered too little")));
        };
        let lock_cas = match lock.item().map_err(fail)? {
            Some(item) if item.value == owner.as_bytes() => item.cas,
            _ => return Ok(Released::Lost),
        };
        let Some((mode, cas)) = precondition(only, self.stored(key, data.item())?) else {
            // Nothing to write; the lease goes (or stays) all the same.
            self.end_lease(key, owner, keep_until).await?;
            return Ok(Released::Saved(false));
        };
        let bytes = record.encode();
        let write = Op::Set {
            key: &data_key,
            value: &bytes,
            exptime: exptime(record.expires)?,
            mode,
            cas,
        };
        let lease = match keep_until {
            Some(until) => Op::Set {
                key: &lock_key,
                value: owner.as_bytes(),
                exptime: exptime(until)?,
                mode: Mode::Set,
                cas: Some(lock_cas),
            },
            None => Op::Delete {
                key: &lock_key,
                cas: Some(lock_cas),
            },
        };
        let mut answers = server
            .batch(&[write, lease])
            .await
            .map_err(fail)?
            .into_iter();
        let (Some(written), Some(leased)) = (answers.next(), answers.next()) else {
            return Err(fail(io::Error::other("memcached answered too little")));
        };
        let (written, leased) = (
            written.outcome().map_err(fail)?,
            leased.outcome().map_err(fail)?,
        );
        if leased == Outcome::Changed {
            // The renewal task moved the lease in between: still ours.
            self.end_lease(key, owner, keep_until).await?;
        }
        Ok(match written {
            Outcome::Done => Released::Saved(true),
            // Gone (deleted) or there (added) since the read: the
            // precondition no longer holds.
            Outcome::NotFound | Outcome::NotStored => Released::Saved(false),
            // Another write since the read: another holder after a lost
            // lease, or a writer without the lock. Never written over.
            Outcome::Changed => Released::Lost,
        })
    }

    /// Releases `owner`'s lease, or with `keep_until` renews it.
    async fn end_lease(
        &self,
        key: &StoreKey,
        owner: &str,
        keep_until: Option<Millis>,
    ) -> Result<(), Error> {
        match keep_until {
            Some(until) => self.renew(key, owner, until).await.map(drop),
            None => self.release(key, owner).await,
        }
    }

    async fn take_lease(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(lease::Lease<MemcachedStore>, Option<Record>), Error> {
        lease::acquire(
            self,
            &self.inner.waits,
            self.inner.lease,
            key,
            wait,
            load,
            || {},
        )
        .await
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

/// Index entries a user may have, as bytes: ample for thousands of
/// sessions of one user.
const INDEX_LIMIT: usize = 512 * 1024;

/// The lines `<key> <expires ms>` of a user index; lines that do not parse
/// are dropped.
fn parse_index(bytes: &[u8]) -> Vec<(StoreKey, Millis)> {
    std::str::from_utf8(bytes)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, expires) = line.split_once(' ')?;
            Some((key.parse().ok()?, expires.parse().ok()?))
        })
        .collect()
}

fn format_index(entries: &[(StoreKey, Millis)]) -> Vec<u8> {
    let mut out = String::with_capacity(entries.len() * 80);
    for (key, expires) in entries {
        out.push_str(&key.as_hex());
        out.push(' ');
        out.push_str(&expires.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

/// memcached's expiry for an item that should live until `until`: a span
/// in whole seconds, or past 30 days the Unix time itself. One second
/// more than the span: memcached's clock ticks in whole seconds, so an
/// item may go up to a second before its span is over. A record's own
/// `expires` still decides when it is dead; a lock held by a process that
/// died frees up to a second later.
///
/// An item that would have to live past [`latest_until`] is refused: sent,
/// memcached would drop it (or keep it for ever).
fn exptime(until: Millis) -> Result<u64, Error> {
    let now = now_millis();
    let latest = latest_until(now);
    if until > latest {
        return Err(Error::ExpiresTooLate {
            expires: until,
            latest,
        });
    }
    let secs = until.saturating_sub(now).div_ceil(1000) + 1;
    Ok(if secs <= RELATIVE_LIMIT {
        secs
    } else {
        until.div_ceil(1000) + 1
    })
}

/// The latest instant an item written at `now` can live until: 30 days
/// ahead as a span, or memcached's last Unix time, whichever is later
/// (spans still work after 2038; Unix times do not). `exptime` sends
/// anything up to it as one or the other, each within its bound.
fn latest_until(now: Millis) -> Millis {
    let span = now.saturating_add((RELATIVE_LIMIT - 1) * 1000);
    span.max((LAST_EXPTIME - 1) * 1000)
}

/// Whether a session that lives `lifetime` (the `timeout` of the config
/// section `section`, or its `absolute_timeout` if shorter) can be kept by
/// memcached for a while:
/// up to 30 days always; longer, only if it ends a year
/// ([`OPEN_MARGIN`]) before memcached's last Unix time, counted from now.
/// Checked when a config's store is opened; saves are checked each time.
pub(crate) fn check_lifetime(section: &str, lifetime: Duration) -> Result<(), LifetimeTooLong> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let now = now_millis();
    let latest = latest_until(now);
    let ends = now.saturating_add(ms(lifetime));
    if ends <= now.saturating_add((RELATIVE_LIMIT - 1) * 1000)
        || ends.saturating_add(ms(OPEN_MARGIN)) <= latest
    {
        return Ok(());
    }
    Err(LifetimeTooLong {
        section: section.to_owned(),
        days: lifetime.as_secs() / 86_400,
        max_days: latest.saturating_sub(now).saturating_sub(ms(OPEN_MARGIN)) / 86_400_000,
    })
}

/// A configured lifetime memcached cannot keep (see [`check_lifetime`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "[{section}]: sessions of {days} days would outlive what memcached can keep: its expiry \
     is a 32-bit Unix time, which ends on 2038-01-19 03:14:07 UTC, and a \
     server started now must keep saving for a year; at most {max_days} days \
     (or 30 days, which it always keeps)"
)]
pub(crate) struct LifetimeTooLong {
    section: String,
    days: u64,
    max_days: u64,
}

/// Every try of a compare-and-swap met another write.
#[derive(Debug, thiserror::Error)]
#[error("the item kept changing under the write; try again")]
struct Contended;

/// What memcached cannot do, for the admin side.
const CANNOT_LIST: &str = "list its sessions (memcached cannot list its keys; \
                           show and delete take a session's id or key)";

#[async_trait]
impl LeaseBackend for MemcachedStore {
    fn check(&self, record: &Record) -> Result<(), Error> {
        self.check_record(record)
    }

    async fn take(
        &self,
        key: &StoreKey,
        owner: &str,
        until: Millis,
        load: bool,
    ) -> Result<Taken, Error> {
        let fail = |e| Error::unavailable("taking a session lock", e);
        let (lock_key, data_key) = (self.lock_key(key), self.data_key(key));
        let turn_key = self.turn_key(key);
        // Whose turn it is, read in the same round trip as the take
        // (`lease.rs`: turns). memcached has no step that adds the lock
        // only if the turn is free: a take that lands on another waiter's
        // turn gives the lock straight back.
        let turn = Op::Get {
            key: &turn_key,
            limit: 64,
        };
        let take = Op::Set {
            key: &lock_key,
            value: owner.as_bytes(),
            exptime: exptime(until)?,
            mode: Mode::Add,
            cas: None,
        };
        // With the record in the same round trip: the lock and the record
        // are on one server, which answers in order, so the read sees what
        // the previous holder saved before it released.
        let read = Op::Get {
            key: &data_key,
            limit: self.read_limit(),
        };
        let ops: &[Op<'_>] = if load {
            &[turn, take, read]
        } else {
            &[turn, take]
        };
        let server = self.server(key);
        let mut answers = server.batch(ops).await.map_err(fail)?.into_iter();
        let turn = answers
            .next()
            .map(|a| a.item())
            .transpose()
            .map_err(fail)?
            .flatten();
        let added = answers
            .next()
            .map(|a| a.outcome())
            .transpose()
            .map_err(fail)?;
        let others_turn = turn.as_ref().is_some_and(|t| t.value != owner.as_bytes());
        if added == Some(Outcome::Done) && others_turn {
            self.release(key, owner).await?;
        }
        if added != Some(Outcome::Done) || others_turn {
            if !others_turn {
                // Ours comes next: claimed, or renewed.
                let (mode, cas) = match &turn {
                    Some(t) => (Mode::Set, Some(t.cas)),
                    None => (Mode::Add, None),
                };
                let until = exptime(lease::turn_until(now_millis()))?;
                server
                    .set(&turn_key, owner.as_bytes(), until, mode, cas)
                    .await
                    .map_err(fail)?;
            }
            return Ok(Taken::Busy);
        }
        if let Some(t) = turn {
            // Our turn came: it ends with the take.
            server.delete(&turn_key, Some(t.cas)).await.map_err(fail)?;
        }
        let Some(read) = answers.next() else {
            return Ok(Taken::Ours(None));
        };
        let now = now_millis();
        let record = self
            .stored(key, read.item())?
            .and_then(|(record, _)| record)
            .filter(|r| !r.is_expired(now));
        Ok(Taken::Ours(record))
    }

    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error> {
        let Some((holder, cas)) = self.lock_holder(key).await? else {
            return Ok(false);
        };
        if holder != owner.as_bytes() {
            return Ok(false);
        }
        let renewed = self
            .server(key)
            .set(
                &self.lock_key(key),
                owner.as_bytes(),
                exptime(until)?,
                Mode::Set,
                Some(cas),
            )
            .await
            .map_err(|e| Error::unavailable("renewing a session lock", e))?;
        Ok(renewed == Outcome::Done)
    }

    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error> {
        if let Some((holder, cas)) = self.lock_holder(key).await? {
            if holder == owner.as_bytes() {
                self.server(key)
                    .delete(&self.lock_key(key), Some(cas))
                    .await
                    .map_err(|e| Error::unavailable("releasing a session lock", e))?;
            }
        }
        Ok(())
    }

    async fn save_and_keep(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        until: Millis,
    ) -> Result<Released, Error> {
        self.save_under_lease(key, owner, record, only, Some(until))
            .await
    }

    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error> {
        self.save_under_lease(key, owner, record, only, None).await
    }
}

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
        let (lease, record) = self.take_lease(key, wait, load).await?;
        Ok((LockGuard::new(lease), record))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_past_thirty_days_is_a_unix_time() {
        let now = now_millis();
        let exptime = |until| exptime(until).unwrap();
        assert_eq!(exptime(now + 1), 2);
        assert!((90..=91).contains(&exptime(now + 90_000)));
        assert_eq!(exptime(now.saturating_sub(5_000)), 1);
        let far = now + 31 * 24 * 3_600_000;
        assert_eq!(exptime(far), far.div_ceil(1000) + 1);
    }

    /// memcached's last Unix time is sent as it is; a millisecond later is
    /// refused, never sent (memcached would drop the item). Spans of 30
    /// days stay spans, and so are never refused.
    #[test]
    fn expiry_ends_at_memcacheds_last_unix_time() {
        let last = (LAST_EXPTIME - 1) * 1000;
        assert_eq!(exptime(last).unwrap(), LAST_EXPTIME);
        for too_late in [last + 1, last + 400 * 86_400_000, u64::MAX] {
            let err = exptime(too_late).unwrap_err();
            assert!(
                matches!(err, Error::ExpiresTooLate { expires, latest } if expires == too_late && latest == last),
                "{err:?}"
            );
        }
        // After 2038, spans still work.
        let later = last + 10 * 86_400_000;
        assert_eq!(latest_until(later), later + (RELATIVE_LIMIT - 1) * 1000);
    }

    #[test]
    fn a_lifetime_must_end_a_year_before_the_last_unix_time() {
        let day = Duration::from_secs(86_400);
        assert!(check_lifetime("/", day * 30).is_ok());
        assert!(check_lifetime("/", day * 400).is_ok());
        // 19 years (`timeout = 10000000` minutes).
        let err = check_lifetime("/", Duration::from_secs(600_000_000)).unwrap_err();
        assert!(err.to_string().contains("2038-01-19"), "{err}");
        let left = (latest_until(now_millis()) - now_millis()) / 1000;
        let max = Duration::from_secs(left) - OPEN_MARGIN - day;
        assert!(check_lifetime("/", max).is_ok());
        assert!(check_lifetime("/", max + day * 2).is_err());
    }

    #[test]
    fn index_lines_round_trip() {
        let key = StoreKey::generate().unwrap();
        let entries = vec![(key, 1_700_000_000_000)];
        assert_eq!(parse_index(&format_index(&entries)), entries);
        assert_eq!(parse_index(b"junk\nmore junk 5\n"), vec![]);
    }
}
