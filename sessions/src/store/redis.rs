//! The Redis store: sessions shared by any number of server instances.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use server_sessions::{store::RedisStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, server_sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379/")
//!     .await?
//!     .with_prefix("shop:session:");
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
//! use std::time::Duration;
//! use server_sessions::store::{RedisStore, SessionStore, SaveIf};
//! use server_sessions::{SessionId, store::{now_millis, Record}};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379/")
//!     .await?
//!     .with_prefix("shop:session:")
//!     .with_lease(Duration::from_secs(10));
//!
//! let key = SessionId::generate().unwrap().store_key();
//! let now = now_millis();
//! let record = Record { data: br#"{"cart":[]}"#.to_vec(), created: now, expires: now + 3_600_000, timeout: None, user: None };
//! assert!(store.save(&key, &record, SaveIf::Absent).await?);
//!
//! // A request on that session: lock and load in one round trip, then
//! // save and unlock in one more.
//! let (guard, loaded) = store.lock_and_load(&key, Duration::from_secs(30)).await?;
//! let mut record = loaded.expect("just saved");
//! record.data = br#"{"cart":[42]}"#.to_vec();
//! assert!(guard.save_and_release(&record, SaveIf::Live).await?);
//! # Ok(()) }
//! ```
//!
//! The same store runs on a Redis Cluster (several comma-separated node
//! URLs, or `redis+cluster://host:port,host:port`) and on the master that
//! Sentinel names (`redis+sentinel://host:port,host:port/MASTER`); see
//! [`RedisStore::connect`]. The key layout, expiry, lock design and what a
//! failover can lose are described on [`RedisStore`].

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::redis::RedisResult;
use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::OnceCell;

use self::conn::{Conn, Wait};
use self::locks::LockKeys;
use self::scripts::Scripts;
use self::target::{Target, Topology};
use self::watch::{listen, watch_expiry, EXPIRED_QUEUE};

use super::{lease, Error, Keep, LockGuard, LockWaits, SaveIf, SessionAdmin, SessionStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::checked_entries;
use crate::task::AbortOnDrop;
use crate::user::UserId;

mod admin;
mod conn;
mod locks;
mod open;
mod scripts;
mod target;
mod users;
mod watch;

/// The bound on any single store call, reconnection included: a Redis that
/// is down or hung answers `Unavailable` after this at the latest.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a save waits for its replicas (`redis_wait_replicas`): half the
/// connection's response timeout, so that `WAIT` answers, even with too few
/// replicas, before the connection gives up on it.
const WAIT_TIMEOUT: Duration = Duration::from_millis(conn::RESPONSE_TIMEOUT.as_millis() as u64 / 2);
/// How far the `expires` inside a stored record may be from the key's TTL
/// and still be reported as it is (see the module docs).
pub(crate) const EXPIRY_SLACK: Millis = 1_000;

/// The largest stored value the read scripts hand back: the record limit
/// plus room for its header. `Record::decode` does the exact check.
const HEADER_ROOM: usize = Record::MAX_HEADER;

/// Sessions in Redis, shared by every instance that points at the same
/// server (or Cluster, or Sentinel-watched master) and prefix.
///
/// Built by [`connect`](Self::connect) and adjusted with the `with_*`
/// methods. Cloning is cheap and shares the connection, which reconnects
/// by itself after an outage; while Redis is down every call answers
/// [`Error::Unavailable`] within a few seconds. Expired sessions are
/// removed by Redis itself, so [`clean_up`](SessionAdmin::clean_up) has
/// nothing to do.
///
/// # Deployments
///
/// The URL says which (see [`connect`](Self::connect)): one node; a Redis
/// Cluster, whose redirections (`MOVED`, `ASK`) and topology changes the
/// client follows by itself; or a master found through Sentinel, asked
/// again whenever the master stops answering or refuses a write as a
/// replica. The store runs the same commands and scripts on all three:
/// every script touches only one session's keys, which share a slot. The
/// admin listing (`count`, `keys`) scans every master of a Cluster.
///
/// # Layout
///
/// A session is one string key, `{prefix}{<key>}`, where `<key>` is its
/// [`StoreKey`] in hex (never the id), holding the bytes of
/// [`Record::encode`] with a native TTL (`PX`) of `expires - now`; its lock
/// is `{prefix}{<key>}:lock`, and `{prefix}{<key>}:waiting` marks a wait
/// for it. The braces are a cluster hash tag: all keys of a session hash
/// to the same slot, so every script below may touch them together (keep
/// braces out of the prefix, or all sessions share one slot).
///
/// # Expiry
///
/// The key's TTL is the truth. [`touch`](SessionStore::touch) moves it with
/// `PEXPIRE` (which does nothing to a missing key) and leaves the value
/// alone, so the `expires` inside the stored bytes can be stale. A load
/// therefore reads the value and its `PTTL` in one script and reports the
/// stored `expires` when the two agree to within one second (so a
/// record comes back exactly as saved) and `now + PTTL` when they do not
/// (it was touched). Only relative times travel to Redis, so its clock
/// never matters; only the instances' clocks do.
///
/// # Locks
///
/// A lock is a lease: `SET lock <random token> NX PX <lease>`. Requests of
/// one process queue in the process, so only the first asks Redis; it asks
/// again when the holder's release wakes it, or after a short backoff,
/// until the caller's wait runs out. The wake-up: an attempt that finds
/// the lock held marks `{prefix}{<key>}:waiting` (in the same script), and
/// the release that finds the mark deletes it and publishes the key on the
/// channel `{prefix}released`, to which a store subscribes at its first
/// such wait (one connection per store, reconnecting by itself; on a
/// Cluster to any node, which all deliver every `PUBLISH`). Uncontended
/// locks publish nothing, and a lost message costs only the backoff. While the guard lives,
/// a task renews the lease every third of it (compare-and-`PEXPIRE`), so a
/// slow request keeps its lock, while a crashed process's lock frees itself
/// one lease later. Dropping the guard stops the renewal and spawns a
/// compare-and-delete. [`lock_and_load`](SessionStore::lock_and_load) and
/// [`save_and_release`](crate::store::LockGuard::save_and_release) are single scripts,
/// so a locked request costs two round trips, as an unlocked one does.
/// A `save_and_release` whose lease was lost meanwhile (Redis unreachable
/// for most of a lease, or the process stalled) writes nothing and answers
/// [`Error::Unavailable`]: another holder may have the session by then.
/// A guard that is leaked rather than dropped keeps its renewal running
/// until the process ends, as a leaked mutex guard would.
///
/// # Keeping
///
/// By default ([`with_keep`](Self::with_keep)) a process keeps a session's
/// lock and the record it just saved (or read) after the request, so that
/// the next request of the session in this process takes neither: it
/// costs one round trip if it changes the session (the save, which keeps
/// the lease) and none if it only reads it (see the layer's
/// `refresh_after`). Another process that finds the lock held publishes
/// `w<key>` on the same channel when it marks its wait, and the keeping
/// process gives the session back: at once when it is idle, at the end of
/// the request in flight otherwise; a session asked back is not kept
/// again for ten seconds, so one that moves between processes (a
/// round-robin balancer) does not bounce. A kept lease is renewed as a
/// held one is, and used only while it surely is still ours (a fifth of
/// the lease short of its confirmed end, on the monotonic clock, which
/// runs on while a process is stopped): a process paused past its lease
/// asks Redis before it serves anything it kept. Deletes from outside a
/// request ([`end`](SessionStore::end): the logout of a user's other
/// sessions, the admin commands) take the lock first. A kept session left
/// idle for [`Keep::idle`] is released; a process that dies keeps its
/// sessions locked for at most one lease.
///
/// # Saves
///
/// [`SaveIf::Absent`] is `SET … PX <ttl> NX` and [`SaveIf::Live`] is
/// `SET … PX <ttl> XX`, so the precondition is checked by Redis in the
/// same command that writes: a save never brings back a session that was
/// deleted, regenerated or expired meanwhile. Values that are not records
/// of this crate, are damaged, or are larger than the
/// [`max size`](Self::with_max_size) load as missing and are logged with
/// the key's [`short`](StoreKey::short) form.
///
/// # Failover
///
/// When a master dies, calls on the sessions it held answer
/// [`Error::Unavailable`] (503), each within a few seconds, until a replica
/// takes over — about the Cluster's `cluster-node-timeout` or Sentinel's
/// `down-after-milliseconds`, plus the election — and then succeed again
/// by themselves. Every session keeps its id. On a Cluster the other
/// masters' sessions go on: in the second or two in which a Cluster with
/// `cluster-require-full-coverage yes` (the default) refuses every key,
/// their calls wait, up to 4 s, rather than fail.
///
/// Redis replicates asynchronously: what the master had acknowledged but
/// not yet sent to the replica that takes over is lost. That can be a
/// session's latest save (it comes back as it was one request earlier), a
/// new session (its visitor gets a fresh one), a delete (a logged-out
/// session comes back until it expires) or a refresh (the expiry moves
/// back). Locks cannot make two requests both write: a lock missing on
/// the new master lets a second request in, but the first one's save
/// checks its lease in the same script as the write and is refused
/// (503); a release that was lost keeps the session locked until the
/// lease runs out. A save that answers 503 because its connection failed
/// may or may not have been written: Redis may have taken it just before.
///
/// [`with_wait_replicas(n)`](Self::with_wait_replicas)
/// (`redis_wait_replicas = n`) closes the first gap: every save and delete
/// is followed by `WAIT n`, so a success means `n` replicas have it. If
/// fewer acknowledge within a second, the call answers
/// [`Error::Unavailable`] (503): the master has the write, which may or
/// may not survive a failover. `WAIT` is no consensus: an acknowledged
/// save survives a failover to a replica that acknowledged it, and Redis
/// promotes the most up to date replica it can reach, but with fewer
/// acknowledgements than replicas one that did not may still be promoted.
/// Refreshes (`touch`) are not waited for. Waited writes go over a
/// connection of their own, so that a `WAIT` holds up no other command;
/// they follow each other there at the pace of the replicas'
/// acknowledgements, and while fewer than `n` replicas are up every save
/// takes a second and fails.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    /// What the URL named, to open the connection for waited writes.
    target: Arc<Target>,
    /// Saves and deletes that `WAIT` go here, opened on first use: a `WAIT`
    /// blocks its connection's later commands until it answers, and the
    /// main connection is shared by every request.
    durable: Arc<OnceCell<Conn>>,
    /// `WAIT` for this many replicas after a save or delete; 0 = do not.
    wait_replicas: u32,
    scripts: Arc<Scripts>,
    /// Requests of this process queue here, in order, before the front one
    /// asks Redis: waiters of one process never poll Redis against each
    /// other, and a lock passes between them as soon as it is released.
    locks: Arc<LockWaits>,
    /// The subscription that wakes `locks`' waiters when another process
    /// releases, started at the first wait for such a lock.
    listener: Arc<OnceLock<AbortOnDrop>>,
    /// Whether that subscription is up: sessions are kept only then.
    subscribed: Arc<AtomicBool>,
    prefix: Arc<str>,
    /// `{prefix}released`, where releases of contended locks publish.
    channel: Arc<str>,
    max_size: usize,
    lease: Duration,
    /// What this process keeps of the sessions it used; `None`: nothing.
    keep: Option<Keep>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.target.topology())
            .field("prefix", &self.prefix)
            .field("max_size", &self.max_size)
            .field("lease", &self.lease)
            .field("wait_replicas", &self.wait_replicas)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The `WAIT` to follow writes with, if any.
    fn wait(&self) -> Option<Wait> {
        (self.wait_replicas > 0).then_some(Wait {
            replicas: self.wait_replicas,
            timeout: WAIT_TIMEOUT,
        })
    }

    /// The connection for waited writes, opened on first use.
    async fn durable(&self) -> Result<Conn, Error> {
        let conn = self
            .durable
            .get_or_try_init(|| bounded("connecting to redis", self.target.connect()))
            .await?;
        Ok(conn.clone())
    }

    /// Turns the count of replicas that acknowledged a write into an error
    /// when there were too few.
    fn check_replicated(&self, acked: u64) -> Result<(), Error> {
        if acked < u64::from(self.wait_replicas) {
            return Err(Error::unavailable(
                "waiting for redis replicas",
                NotReplicated {
                    acked,
                    wanted: self.wait_replicas,
                },
            ));
        }
        Ok(())
    }

    fn data_key(&self, key: &StoreKey) -> String {
        LockKeys::tagged(&self.prefix, key, "")
    }

    fn lock_keys(&self, key: &StoreKey) -> LockKeys {
        LockKeys {
            lock: LockKeys::tagged(&self.prefix, key, ":lock"),
            waiting: LockKeys::tagged(&self.prefix, key, ":waiting"),
            tag: key.as_hex().to_string(),
        }
    }

    /// Starts the wake-up subscription once, at the first wait for a lock
    /// that another process holds or the first session kept: a store that
    /// meets neither never opens the extra connection.
    fn listen(&self) {
        self.listener.get_or_init(|| {
            let task = tokio::spawn(listen(
                Arc::clone(&self.target),
                Arc::clone(&self.channel),
                Arc::downgrade(&self.locks),
                Arc::clone(&self.subscribed),
            ));
            AbortOnDrop(task.abort_handle())
        });
    }

    /// Refuses a record that a load would refuse, rather than write a
    /// session that could never be read back (the layer's `max_size` may
    /// be set higher than this store's).
    fn check_size(&self, record: &Record) -> Result<(), Error> {
        if record.data.len() > self.max_size {
            return Err(Error::TooLarge {
                size: record.data.len(),
                max: self.max_size,
            });
        }
        Ok(())
    }

    fn read_limit(&self) -> usize {
        self.max_size.saturating_add(HEADER_ROOM)
    }

    /// Turns what a read script answered into a record, or `None` for
    /// missing, expired and unreadable values (logged).
    fn finish_read(
        &self,
        key: &StoreKey,
        status: i64,
        value: Option<Vec<u8>>,
        n: i64,
    ) -> Option<Record> {
        match (status, value) {
            (1, Some(bytes)) => match Record::decode(&bytes, self.max_size) {
                Ok(mut record) => {
                    let now = now_millis();
                    if n >= 0 {
                        // The TTL is the truth; the stored instant is kept
                        // when it agrees (see "Expiry" on `RedisStore`).
                        let by_ttl = now.saturating_add(n as u64);
                        if record.expires.abs_diff(by_ttl) > EXPIRY_SLACK {
                            record.expires = by_ttl;
                        }
                    }
                    // A key without a TTL was not written by this store;
                    // its own instant decides.
                    (!record.is_expired(now)).then_some(record)
                }
                Err(e) => {
                    tracing::warn!(
                        session = %key.short(), error = %e,
                        "ignoring an unreadable session in redis"
                    );
                    None
                }
            },
            (2, _) => {
                tracing::warn!(
                    session = %key.short(),
                    "ignoring a foreign value at a session key in redis"
                );
                None
            }
            (3, _) => {
                tracing::warn!(
                    session = %key.short(), size = n, max = self.max_size,
                    "ignoring an oversized session in redis"
                );
                None
            }
            _ => None,
        }
    }
}

/// Fewer replicas than `redis_wait_replicas` acknowledged a write in time.
#[derive(Debug, thiserror::Error)]
#[error("{acked} of {wanted} replicas acknowledged the write in time; it may or may not survive a failover")]
struct NotReplicated {
    acked: u64,
    wanted: u32,
}

/// Runs one Redis call under [`CALL_TIMEOUT`], turning every failure into
/// [`Error::Unavailable`] with `context`.
async fn bounded<T>(
    context: &'static str,
    call: impl std::future::Future<Output = RedisResult<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::unavailable(context, e)),
        Err(elapsed) => Err(Error::unavailable(context, elapsed)),
    }
}

/// Milliseconds from now until `expires`, at least 1 (Redis refuses a
/// zero TTL; a record already past its expiry lives one millisecond).
fn ttl_ms(expires: Millis) -> u64 {
    expires.saturating_sub(now_millis()).max(1)
}

fn mode(write: SaveIf) -> &'static str {
    match write {
        SaveIf::Absent => "NX",
        SaveIf::Live => "XX",
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.load.prepare_invoke();
        call.key(self.data_key(key)).arg(self.read_limit());
        let (status, value, n): (i64, Option<Vec<u8>>, i64) =
            bounded("loading a session", call.invoke_async(&mut conn)).await?;
        Ok(self.finish_read(key, status, value, n))
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        self.check_size(record)?;
        self.index(key, record).await?;
        let mut set = ::redis::cmd("SET");
        set.arg(self.data_key(key))
            .arg(record.encode())
            .arg("PX")
            .arg(ttl_ms(record.expires))
            .arg(mode(write));
        let Some(wait) = self.wait() else {
            let mut conn = self.conn.clone();
            let written: Option<String> =
                bounded("saving a session", set.query_async(&mut conn)).await?;
            return Ok(written.is_some());
        };
        let mut conn = self.durable().await?;
        let (written, acked): (Option<String>, u64) =
            bounded("saving a session", wait.after(set).query_async(&mut conn)).await?;
        if written.is_some() {
            self.check_replicated(acked)?;
        }
        Ok(written.is_some())
    }

    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.touch.prepare_invoke();
        call.key(self.data_key(key))
            .arg(ttl_ms(expires))
            .arg(Record::MAX_HEADER);
        // PEXPIRE does nothing to a missing (or expired) key.
        let answer: ::redis::Value =
            bounded("refreshing a session", call.invoke_async(&mut conn)).await?;
        let head = match answer {
            ::redis::Value::Int(moved) => return Ok(moved == 1),
            ::redis::Value::BulkString(head) => head,
            other => {
                let e = format!("the refresh script answered {other:?}");
                return Err(Error::unavailable("refreshing a session", e));
            }
        };
        // A user's session: its index entry moves first, then its TTL (the
        // TTL is the record's expiry on Redis, so its data stays as it is).
        let Some(user) = Record::user_in_header(&head) else {
            return Ok(false);
        };
        self.index_entry(key, &user, expires).await?;
        let mut pexpire = ::redis::cmd("PEXPIRE");
        pexpire.arg(self.data_key(key)).arg(ttl_ms(expires));
        let moved: i64 = bounded("refreshing a session", pexpire.query_async(&mut conn)).await?;
        Ok(moved == 1)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        const CONTEXT: &str = "deleting a session";
        // Only the data: the session's lock belongs to whoever holds it.
        let mut call = self.scripts.delete.prepare_invoke();
        call.key(self.data_key(key)).arg(Record::MAX_HEADER);
        let head: Vec<u8> = match self.wait() {
            None => {
                let mut conn = self.conn.clone();
                bounded(CONTEXT, call.invoke_async(&mut conn)).await?
            }
            Some(wait) => {
                // Waited for too: a lost delete brings a logged-out session
                // back.
                let mut conn = self.durable().await?;
                let (head, acked): (Vec<u8>, u64) =
                    bounded(CONTEXT, call.invoke_and_wait(&mut conn, wait)).await?;
                if !head.is_empty() {
                    self.check_replicated(acked)?;
                }
                head
            }
        };
        self.unindex(key, &head, CONTEXT).await
    }

    async fn replace(
        &self,
        old: &StoreKey,
        key: &StoreKey,
        record: &Record,
    ) -> Result<bool, Error> {
        const CONTEXT: &str = "saving a session";
        if self.target.topology() == Topology::Cluster {
            // Every session has a Cluster slot of its own, and no script
            // may touch two: checked, then saved (the window this leaves
            // is said on `RedisStore`).
            return super::replace_in_steps(self, old, key, record).await;
        }
        self.check_size(record)?;
        self.index(key, record).await?;
        let mut call = self.scripts.replace.prepare_invoke();
        call.key(self.data_key(old))
            .key(self.data_key(key))
            .arg(record.encode())
            .arg(ttl_ms(record.expires))
            .arg(Record::MAX_HEADER);
        let head: Option<Vec<u8>> = match self.wait() {
            None => {
                let mut conn = self.conn.clone();
                bounded(CONTEXT, call.invoke_async(&mut conn)).await?
            }
            Some(wait) => {
                let mut conn = self.durable().await?;
                let (head, acked): (Option<Vec<u8>>, u64) =
                    bounded(CONTEXT, call.invoke_and_wait(&mut conn, wait)).await?;
                if head.is_some() {
                    self.check_replicated(acked)?;
                }
                head
            }
        };
        match head {
            Some(head) => self.unindex(old, &head, CONTEXT).await.map(|()| true),
            None => Ok(false),
        }
    }

    fn expirations(&self) -> Option<BoxStream<'static, StoreKey>> {
        let channel = self.target.expiry_channel();
        let (tx, rx) = tokio::sync::mpsc::channel(EXPIRED_QUEUE);
        let task = tokio::spawn(watch_expiry(
            Arc::clone(&self.target),
            channel,
            self.prefix.clone(),
            tx,
        ));
        // The subscription ends when the stream is dropped.
        let guard = AbortOnDrop(task.abort_handle());
        Some(
            stream::unfold((rx, guard), |(mut rx, guard)| async move {
                rx.recv().await.map(|key| (key, (rx, guard)))
            })
            .boxed(),
        )
    }

    async fn sessions_of(&self, user: &UserId) -> Result<Vec<(StoreKey, Record)>, Error> {
        let mut conn = self.conn.clone();
        let mut range = ::redis::cmd("ZRANGE");
        range
            .arg(self.user_key(user))
            .arg(format!("({}", now_millis()))
            .arg("+inf")
            .arg("BYSCORE");
        let members: Vec<Vec<u8>> =
            bounded("listing a user's sessions", range.query_async(&mut conn)).await?;
        // A session deleted without its user known, or moved to another
        // user, stays in the index until its expiry but is not listed.
        // Nothing is removed here: an entry without its record may be a
        // save on its way.
        let keys: Vec<StoreKey> = members
            .iter()
            .filter_map(|m| StoreKey::from_bytes(m).ok())
            .collect();
        checked_entries(self, user, keys).await
    }

    // `exists` keeps the default (a load): a value that does not decode is
    // no live session, which `EXISTS` cannot tell.

    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        lease::lock(self, key, wait, load).await
    }

    async fn end(&self, key: &StoreKey) -> Result<(), Error> {
        match self.keep {
            None => self.delete(key).await,
            Some(_) => lease::end(self, key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_never_zero() {
        assert_eq!(ttl_ms(0), 1);
        let t = ttl_ms(now_millis() + 60_000);
        assert!((59_000..=60_000).contains(&t), "{t}");
    }
}
