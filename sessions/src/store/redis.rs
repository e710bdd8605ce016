//! The Redis store: sessions shared by any number of server instances.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sessions::{store::RedisStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sessions::store::Error> {
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
//! use sessions::store::{RedisStore, SessionStore, SaveIf};
//! use sessions::{now_millis, Record, SessionId};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sessions::store::Error> {
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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::redis::RedisResult;
use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use self::conn::{Conn, ScanNode, Wait};
use self::locks::LockKeys;
use self::scripts::Scripts;
use self::target::{Target, Topology};
use self::watch::{listen, watch_expiry, EXPIRED_QUEUE};

use super::{lease, Error, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::{checked_entries, INDEX_SLACK};
use crate::task::AbortOnDrop;
use crate::user::UserId;

mod conn;
mod locks;
mod scripts;
mod target;
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

const DEFAULT_PREFIX: &str = "session:";
const DEFAULT_MAX_SIZE: usize = 64 * 1024;
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Shorter leases would be renewed more often than a round trip takes.
const MIN_LEASE: Duration = Duration::from_millis(30);
/// The largest stored value the read scripts hand back: the record limit
/// plus room for its header. `Record::decode` does the exact check.
const HEADER_ROOM: usize = Record::MAX_HEADER;
/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 1_000;

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
    prefix: Arc<str>,
    /// `{prefix}released`, where releases of contended locks publish.
    channel: Arc<str>,
    max_size: usize,
    lease: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.target.topology())
            .field("prefix", &self.prefix)
            .field("max_size", &self.max_size)
            .field("lease", &self.lease)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis that `url` names:
    ///
    /// - `redis://[user:password@]host[:port][/db]`: one node;
    /// - `redis://host:7000,redis://host:7001,…` (several node URLs,
    ///   comma-separated) or `redis+cluster://[user:password@]host:port[,host:port…]`:
    ///   a Redis Cluster, discovered from whichever listed node answers;
    /// - `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/db]`:
    ///   the master that the Sentinels at those addresses (port 26379 if
    ///   left out) monitor as `MASTER`. The credentials and database are
    ///   the master's; the Sentinels are asked without a password.
    ///
    /// Fails with [`Error::Config`] (`storage_url`) if the URL does not
    /// parse, and with [`Error::Unavailable`] if Redis (for Sentinel: a
    /// master) cannot be reached within a few seconds. Once connected, the
    /// store reconnects by itself whenever a connection drops.
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        let target = Target::parse(url)?;
        let conn = bounded("connecting to redis", target.connect()).await?;
        Ok(RedisStore {
            conn,
            target: Arc::new(target),
            durable: Arc::new(OnceCell::new()),
            wait_replicas: 0,
            scripts: Arc::new(Scripts::new()),
            locks: LockWaits::new(),
            listener: Arc::default(),
            prefix: DEFAULT_PREFIX.into(),
            channel: release_channel(DEFAULT_PREFIX),
            max_size: DEFAULT_MAX_SIZE,
            lease: DEFAULT_LEASE,
        })
    }

    /// Sets the prefix of every key (default `"session:"`), so that several
    /// applications can share one Redis. Keep braces out of it: they would
    /// make a cluster put every session on one slot.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self.channel = release_channel(&self.prefix);
        // Other keys: this store queues its requests and subscribes on its
        // own, and never takes a lock handed over under the old prefix.
        self.locks = LockWaits::new();
        self.listener = Arc::default();
        self
    }

    /// Sets the largest encoded session a load accepts (default 64 KiB).
    /// Larger values are logged and treated as missing, and a save of a
    /// larger session is refused with [`Error::TooLarge`] (a 500 through
    /// the layer, the stored session unchanged). Keep it at least the
    /// layer's `max_size`; [`store::open`](crate::store::open) does.
    pub fn with_max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// Sets the lock lease (default 10 s, at least 30 ms): how long a lock
    /// outlives a holder that vanished without releasing it. A live holder
    /// renews it every third of the lease, however long it holds the lock.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(MIN_LEASE);
        self
    }

    /// After every save and delete, waits (at most a second) until
    /// `replicas` replicas have it, and answers [`Error::Unavailable`] if
    /// fewer did (default 0: no waiting). See "Failover" above for what
    /// this does and does not promise.
    pub fn with_wait_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
        self
    }

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

    /// `{prefix}user:{<user's index key>}`: the user's own slot.
    fn user_key(&self, user: &UserId) -> String {
        format!("{}user:{{{}}}", self.prefix, &*user.index_key())
    }

    /// Lists the session under its record's user, before the record is
    /// written: a save that fails after this leaves an entry too many
    /// (which expires with the session), never one too few. Waited for
    /// like the save, with `redis_wait_replicas`.
    async fn index(&self, key: &StoreKey, record: &Record) -> Result<(), Error> {
        match &record.user {
            Some(user) => self.index_entry(key, user, record.expires).await,
            None => Ok(()),
        }
    }

    /// Takes a removed record out of its user's index: `head` is the
    /// record's header as the removing script answered it. The record went
    /// first, so the index never lacks a live session.
    async fn unindex(
        &self,
        key: &StoreKey,
        head: &[u8],
        context: &'static str,
    ) -> Result<(), Error> {
        if let Some(user) = Record::user_in_header(head) {
            let mut conn = self.conn.clone();
            let mut zrem = ::redis::cmd("ZREM");
            zrem.arg(self.user_key(&user)).arg(&*key.as_hex());
            let _: i64 = bounded(context, zrem.query_async(&mut conn)).await?;
        }
        Ok(())
    }

    /// Lists `key` under `user` until `expires` (and [`INDEX_SLACK`] more).
    async fn index_entry(
        &self,
        key: &StoreKey,
        user: &UserId,
        expires: Millis,
    ) -> Result<(), Error> {
        const CONTEXT: &str = "indexing a user's session";
        let mut call = self.scripts.index.prepare_invoke();
        call.key(self.user_key(user))
            .arg(&*key.as_hex())
            .arg(expires.saturating_add(INDEX_SLACK))
            .arg(now_millis());
        match self.wait() {
            None => {
                let mut conn = self.conn.clone();
                let _: i64 = bounded(CONTEXT, call.invoke_async(&mut conn)).await?;
            }
            Some(wait) => {
                let mut conn = self.durable().await?;
                let (_, acked): (i64, u64) =
                    bounded(CONTEXT, call.invoke_and_wait(&mut conn, wait)).await?;
                self.check_replicated(acked)?;
            }
        }
        Ok(())
    }

    fn lock_keys(&self, key: &StoreKey) -> LockKeys {
        LockKeys {
            lock: LockKeys::tagged(&self.prefix, key, ":lock"),
            waiting: LockKeys::tagged(&self.prefix, key, ":waiting"),
            tag: key.as_hex().to_string(),
        }
    }

    /// Starts the wake-up subscription once, at the first wait for a lock
    /// that another process holds: a store that never meets one never
    /// opens the extra connection.
    fn listen(&self) {
        self.listener.get_or_init(|| {
            let task = tokio::spawn(listen(
                Arc::clone(&self.target),
                Arc::clone(&self.channel),
                Arc::downgrade(&self.locks),
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

    /// One `SCAN` step on `node`: the next cursor and the sessions' keys on
    /// this page.
    async fn scan_page(&self, node: &ScanNode, cursor: u64) -> Result<(u64, Vec<StoreKey>), Error> {
        let mut conn = self.conn.clone();
        let mut scan = ::redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(scan_pattern(&self.prefix))
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<Vec<u8>>) =
            bounded("listing sessions", conn.run_on(node, scan)).await?;
        let prefix = self.prefix.as_bytes();
        let keys = keys
            .iter()
            .filter_map(|key| {
                let tagged = key.strip_prefix(prefix)?;
                let hex = tagged.strip_prefix(b"{")?.strip_suffix(b"}")?;
                StoreKey::from_bytes(hex).ok()
            })
            .collect();
        Ok((next, keys))
    }

    /// The keys of the sessions stored on one node, a page at a time.
    fn node_keys(&self, node: ScanNode) -> BoxStream<'_, Result<StoreKey, Error>> {
        stream::unfold(Some(0u64), move |cursor| {
            let node = node.clone();
            async move {
                let page = match self.scan_page(&node, cursor?).await {
                    Ok((0, keys)) => (keys.into_iter().map(Ok).collect::<Vec<_>>(), None),
                    Ok((next, keys)) => (keys.into_iter().map(Ok).collect(), Some(next)),
                    Err(e) => (vec![Err(e)], None),
                };
                Some(page)
            }
        })
        .flat_map(stream::iter)
        .boxed()
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

fn release_channel(prefix: &str) -> Arc<str> {
    format!("{prefix}released").into()
}

/// The `SCAN MATCH` pattern of data keys: the prefix with glob characters
/// escaped, then a 64-character hash tag. Lock keys end in `:lock` or
/// `:waiting` and do not match.
fn scan_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 48);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('{');
    p.extend(std::iter::repeat_n('?', 64));
    p.push('}');
    p
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

impl RedisStore {
    /// The Redis store a config describes: [`connect`](Self::connect) to
    /// its `storage_url`, with its `redis_prefix` and
    /// `redis_wait_replicas`, holding sessions up to the largest
    /// `max_size` of any section (what [`store::open`](crate::store::open)
    /// builds for `storage_type = "redis"`).
    pub async fn from_config(config: &crate::Config) -> Result<RedisStore, super::OpenError> {
        let storage = config.storage();
        Ok(Self::connect(super::open::url(storage)?)
            .await?
            .with_prefix(storage.redis_prefix.clone())
            .with_max_size(config.largest_max_size())
            .with_wait_replicas(storage.redis_wait_replicas))
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
        // A waiter that finds the lock held listens for its release.
        let on_busy = || self.listen();
        let (lease, record) =
            lease::acquire(self, &self.locks, self.lease, key, wait, load, on_busy).await?;
        Ok((LockGuard::new(lease), record))
    }
}

#[async_trait]
impl SessionAdmin for RedisStore {
    async fn count(&self) -> Result<u64, Error> {
        self.keys()
            .try_fold(0, |n, _| async move { Ok(n + 1) })
            .await
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        // SCAN, never KEYS: one page at a time, without blocking a server;
        // a cursor belongs to one server, so a Cluster is scanned master
        // by master.
        stream::once(async move {
            let mut conn = self.conn.clone();
            bounded("listing sessions", conn.scan_nodes()).await
        })
        .flat_map(move |nodes| match nodes {
            Ok(nodes) => stream::iter(nodes)
                .flat_map(move |node| self.node_keys(node))
                .boxed(),
            Err(e) => stream::iter([Err(e)]).boxed(),
        })
        .boxed()
    }

    async fn clean_up_and_report(&self, _: OnExpired<'_>) -> Result<u64, Error> {
        // Redis expires keys by itself.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_pattern_escapes_globs() {
        let p = scan_pattern("a*b?[c]\\:");
        assert!(p.starts_with(r"a\*b\?\[c\]\\:{"), "{p}");
        assert!(p.ends_with("?}"));
        assert_eq!(p.matches('?').count(), 65);
    }

    #[test]
    fn ttl_is_never_zero() {
        assert_eq!(ttl_ms(0), 1);
        let t = ttl_ms(now_millis() + 60_000);
        assert!((59_000..=60_000).contains(&t), "{t}");
    }
}
