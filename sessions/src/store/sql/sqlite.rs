//! The SQLite store: sessions in one table of an embedded database file,
//! shared by the processes of one host that open the same file.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sessions::{store::SqliteStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sessions::store::Error> {
//! let store = SqliteStore::open("/var/lib/site/sessions.db").await?;
//! let app: Router = Router::new()
//!     .route("/cart", get(cart))
//!     .layer(SessionLayer::new(store));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! With the defaults, or configured first:
//!
//! ```no_run
//! use std::time::Duration;
//! use sessions::store::SqliteStore;
//!
//! # #[tokio::main] async fn main() -> Result<(), sessions::store::Error> {
//! // Defaults: table `sessions`, created or upgraded on open.
//! let store = SqliteStore::open("/var/lib/site/sessions.db").await?;
//!
//! // Or configured first; the file is opened by `ready` or on first use.
//! let store = SqliteStore::new("/var/lib/site/sessions.db")
//!     .with_table("web_sessions")?
//!     .with_busy_timeout(Duration::from_secs(2));
//! store.ready().await?;
//! # Ok(()) }
//! ```
//!
//! The table, lock and failure design is described on [`SqliteStore`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use super::{
    check_size, decode, expired_row, in_batches, live_or_missing, timeout_column, to_sql_ms,
    user_column, Migrations, Page, Statements, Table, CLEAN_BATCH, KEYS_PAGE,
};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::lease::{self, LeaseBackend, Released, Taken};
use crate::store::{
    BoxError, Error, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionStore,
};
use crate::user::UserId;

const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Sessions in an SQLite database file, shared by the processes of one host.
///
/// Cloning is cheap and shares the connection.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), sessions::store::Error> {
/// let store = sessions::store::SqliteStore::open("sessions.db").await?;
/// # Ok(()) }
/// ```
///
/// # Design
///
/// - **Table.** `id TEXT PRIMARY KEY, data BLOB, created_at INTEGER,
///   expires_at INTEGER, timeout_ms INTEGER, user_id TEXT` (milliseconds
///   since the epoch, UTC; `timeout_ms` a session's own idle timeout, or
///   null; `user_id` its user, indexed: the user index), a `STRICT` table
///   with an index on `expires_at`, and a `<table>_locks` table for the
///   session locks. Both keep CherryPy's column name `id`, but it holds
///   the session's [`StoreKey`] (64 hex characters), never the id itself.
///   [`SqliteStore::migrate`] creates or upgrades them in numbered steps
///   recorded in `<table>_schema`, inside an `IMMEDIATE` transaction, so
///   processes opening the file together apply each step once.
/// - **I/O.** Every database call runs on tokio's blocking pool, never on an
///   async worker thread, over one connection per store behind a mutex (SQLite
///   writes one transaction at a time anyway). The file is in WAL mode, so
///   other processes' readers and the writer do not block each other, and a
///   busy database is waited for up to the busy timeout, then answered with
///   [`Error::Unavailable`].
/// - **Lock.** A lease, with the rules the PostgreSQL store follows too:
///   tasks of one process queue in memory; the front task inserts a row
///   `(id, owner, lease_expires)` in `<table>_locks`, or takes over one whose
///   lease has run out, in one statement, with a random owner token. While
///   the guard lives a background task renews the lease; dropping the guard
///   deletes the row if the owner is still this guard (compare and delete),
///   and a save that releases the lock writes only if it deleted our row, in
///   the same transaction (a lost lease writes nothing: [`Error::Unavailable`]).
///   A process that dies stops renewing, and its leases run out. Other
///   processes poll for a taken lease on the crate's backoff until the wait
///   ends ([`Error::LockTimeout`]); a poller that finds the lock held
///   claims the next turn (a `<key>~turn` row in `<table>_locks`, lasting
///   a second unless its next attempt renews it), and no other process
///   takes the lock while that claim lives, so the releasing process
///   cannot keep taking it back (`lease.rs`, "Turns").
/// - **Saves** carry their precondition in SQL, as in the PostgreSQL store:
///   a new session may only replace an expired row, an existing one is only
///   updated while live.
/// - **Clean-up** deletes expired rows in batches, each its own short
///   transaction, and then leases that ran out. Locks are rows of their own
///   table, so deleting a session never frees a lock someone holds.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// What `with_*` changes; the rest of [`Inner`] is derived from it.
#[derive(Clone)]
struct Options {
    path: PathBuf,
    table: Table,
    auto_migrate: bool,
    busy_timeout: Duration,
    lease: Duration,
}

struct Inner {
    opts: Options,
    sql: Sql,
    /// Opened on first use.
    conn: OnceCell<Arc<Mutex<Connection>>>,
    /// Set once the automatic migration has succeeded.
    migrated: OnceCell<()>,
    /// This process's lock waits.
    waits: Arc<LockWaits>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.inner.opts;
        f.debug_struct("SqliteStore")
            .field("path", &o.path)
            .field("table", &o.table.text())
            .field("busy_timeout", &o.busy_timeout)
            .field("lease", &o.lease)
            .field("auto_migrate", &o.auto_migrate)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with the defaults —
    /// table `sessions`, created or upgraded now, 5 s busy timeout, 15 s
    /// lock lease. A file that cannot be opened or is not an SQLite database
    /// is an error here.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let store = Self::new(path);
        store.ready().await?;
        Ok(store)
    }

    /// A store for the database at `path` with the defaults, without opening
    /// it: that happens in [`ready`](Self::ready) or on first use, together
    /// with the automatic migration (if on).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self::from_options(Options {
            path: path.as_ref().to_owned(),
            table: Table::default(),
            auto_migrate: true,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            lease: DEFAULT_LEASE,
        })
    }

    /// Uses table `name` (default `sessions`): a letter or `_` followed by
    /// letters, digits and `_`, at most 56 characters, not starting with
    /// `sqlite_`. Names are case-insensitive, as in SQL.
    pub fn with_table(self, name: &str) -> Result<Self, Error> {
        // Another schema would be another attached file; `sqlite_` names
        // are SQLite's own.
        let table = Table::setting(name, TABLE_RULE, |t| {
            t.schema.is_none() && !t.name.starts_with("sqlite_")
        })?;
        Ok(self.reconfigure(|o| o.table = table))
    }

    /// Whether to create or upgrade the tables before first use (default
    /// true).
    pub fn with_auto_migrate(self, on: bool) -> Self {
        self.reconfigure(|o| o.auto_migrate = on)
    }

    /// How long a call waits while another process writes (default 5 s),
    /// before failing with [`Error::Unavailable`].
    pub fn with_busy_timeout(self, timeout: Duration) -> Self {
        self.reconfigure(|o| o.busy_timeout = timeout)
    }

    /// How long a session lock outlives a process that died holding it
    /// (default 15 s). Held locks are renewed every third of it.
    pub fn with_lease(self, lease: Duration) -> Self {
        self.reconfigure(|o| o.lease = lease.max(Duration::from_millis(300)))
    }

    /// Opens the database now and, with automatic migration on, brings the
    /// tables up to date, so that a bad path or a damaged file shows at
    /// start-up rather than on the first request.
    pub async fn ready(&self) -> Result<(), Error> {
        self.connection().await?;
        if self.inner.opts.auto_migrate {
            self.inner
                .migrated
                .get_or_try_init(|| async { self.run_migrate().await.map(drop) })
                .await?;
        }
        Ok(())
    }

    /// Creates the tables or upgrades them to this version's schema, and
    /// returns how many schema steps it applied (0 when up to date).
    ///
    /// Safe to run from many processes at once: each step is applied once.
    pub async fn migrate(&self) -> Result<u32, Error> {
        self.connection().await?;
        self.run_migrate().await
    }

    fn from_options(opts: Options) -> Self {
        let sql = Sql::new(&opts.table);
        SqliteStore {
            inner: Arc::new(Inner {
                opts,
                sql,
                conn: OnceCell::new(),
                migrated: OnceCell::new(),
                waits: LockWaits::new(),
            }),
        }
    }

    /// A new store (new connection, new lock table) with changed options:
    /// the `with_*` methods are meant for before first use.
    fn reconfigure(self, change: impl FnOnce(&mut Options)) -> Self {
        let mut opts = self.inner.opts.clone();
        change(&mut opts);
        Self::from_options(opts)
    }

    async fn connection(&self) -> Result<&Arc<Mutex<Connection>>, Error> {
        self.inner
            .conn
            .get_or_try_init(|| async {
                let (path, busy) = (self.inner.opts.path.clone(), self.inner.opts.busy_timeout);
                let conn = tokio::task::spawn_blocking(move || {
                    open(&path, busy).map_err(|source| OpenError { path, source })
                })
                .await
                .map_err(|e| Error::unavailable("sqlite: open", e))?
                .map_err(|e| Error::unavailable("sqlite: open", e))?;
                Ok(Arc::new(Mutex::new(conn)))
            })
            .await
    }

    async fn run_migrate(&self) -> Result<u32, Error> {
        let applied = self
            .blocking("sqlite: migrate", |inner, conn| {
                migrate(conn, &inner.opts.table)
            })
            .await?;
        MIGRATIONS.applied(&self.inner.opts.table, applied);
        Ok(applied)
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let handle = self.spawn_blocking(f).await?;
        joined(context, handle.await)
    }

    /// Starts `f` with the connection on the blocking pool.
    async fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<JoinHandle<rusqlite::Result<T>>, Error> {
        let conn = Arc::clone(self.connection().await?);
        Ok(self.spawn_on(conn, f))
    }

    /// Starts `f` with `conn` on the blocking pool, without awaiting.
    fn spawn_on<T: Send + 'static>(
        &self,
        conn: Arc<Mutex<Connection>>,
        f: impl FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> JoinHandle<rusqlite::Result<T>> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner, &mut lock_conn(&conn)))
    }

    /// Opens and migrates on first use.
    async fn prepared(&self) -> Result<(), Error> {
        if self.inner.conn.initialized()
            && (!self.inner.opts.auto_migrate || self.inner.migrated.initialized())
        {
            return Ok(());
        }
        self.ready().await
    }
}

/// The lease statements, for the rules in `sql/lease.rs`. SQLite cannot
/// notify another process, so its waiters poll on the backoff.
#[async_trait]
impl LeaseBackend for SqliteStore {
    fn check(&self, record: &Record) -> Result<(), Error> {
        check_size(record)
    }

    async fn take(
        &self,
        key: &StoreKey,
        owner: &str,
        until: Millis,
        load: bool,
    ) -> Result<Taken, Error> {
        self.prepared().await?;
        let (key, owner) = (*key, owner.to_owned());
        self.blocking("sqlite: lock", move |inner, conn| {
            let (hex, now) = (key.as_hex(), now_millis());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let taken = tx.prepare_cached(&inner.sql.acquire)?.execute((
                &*hex,
                &owner,
                to_sql_ms(until),
                to_sql_ms(now),
            ))? == 1;
            if !taken {
                // Held (or another waiter's turn): ours comes next, unless
                // another waiter claimed it first.
                let until = to_sql_ms(lease::turn_until(now));
                tx.prepare_cached(&inner.sql.claim_turn)?.execute((
                    &*hex,
                    &owner,
                    until,
                    to_sql_ms(now),
                ))?;
                tx.commit()?;
                return Ok(Taken::Busy);
            }
            tx.prepare_cached(&inner.sql.end_turn)?
                .execute((&*hex, &owner))?;
            // SQLite writes one transaction at a time: the previous
            // holder's save committed before this take could.
            let record = if load { inner.load(&tx, &key)? } else { None };
            tx.commit()?;
            Ok(Taken::Ours(record))
        })
        .await
    }

    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error> {
        let (key, owner) = (*key, owner.to_owned());
        self.blocking("sqlite: renew lock", move |inner, conn| {
            Ok(conn.prepare_cached(&inner.sql.renew)?.execute((
                &*key.as_hex(),
                &owner,
                to_sql_ms(until),
            ))? == 1)
        })
        .await
    }

    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error> {
        let (key, owner) = (*key, owner.to_owned());
        self.blocking("sqlite: unlock", move |inner, conn| {
            inner.release(conn, &key, &owner).map(drop)
        })
        .await
    }

    async fn save_and_keep(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        until: Millis,
    ) -> Result<Released, Error> {
        let (key, owner, record) = (*key, owner.to_owned(), record.clone());
        // One transaction: the session is written only if our lock row is
        // still there, and the row's lease is moved on with it.
        self.blocking("sqlite: save", move |inner, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let renewed = tx.prepare_cached(&inner.sql.renew)?.execute((
                &*key.as_hex(),
                &owner,
                to_sql_ms(until),
            ))? == 1;
            if !renewed {
                return Ok(Released::Lost);
            }
            let saved = inner.save(&tx, &key, &record, only)?;
            tx.commit()?;
            Ok(Released::Saved(saved))
        })
        .await
    }

    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error> {
        let (key, owner, record) = (*key, owner.to_owned(), record.clone());
        // One transaction: the session is written only if this deleted our
        // lock row. Once spawned it runs to the end even if the caller is
        // dropped, so the lease is released.
        self.blocking("sqlite: save", move |inner, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !inner.release(&tx, &key, &owner)? {
                return Ok(Released::Lost);
            }
            let saved = inner.save(&tx, &key, &record, only)?;
            tx.commit()?;
            Ok(Released::Saved(saved))
        })
        .await
    }
}

impl SqliteStore {
    /// Takes the session's lease, reading the record with it if `load`.
    async fn take_lease(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(lease::Lease<SqliteStore>, Option<Record>), Error> {
        self.prepared().await?;
        lease::acquire(
            self,
            &self.inner.waits,
            self.inner.opts.lease,
            key,
            wait,
            load,
            || {},
        )
        .await
    }
}

impl Inner {
    /// The live record, reading on the given connection.
    fn load(&self, conn: &Connection, key: &StoreKey) -> rusqlite::Result<Option<Record>> {
        let decoded = conn
            .prepare_cached(&self.sql.table.load)?
            .query_row([&*key.as_hex()], |row| Ok(decode_row(row)))
            .optional()?;
        Ok(decoded.and_then(|decoded| live_or_missing(decoded, key, &self.opts.table)))
    }

    fn save(
        &self,
        conn: &Connection,
        key: &StoreKey,
        record: &Record,
        write: SaveIf,
    ) -> rusqlite::Result<bool> {
        let n = conn.prepare_cached(self.sql.table.save(write))?.execute((
            &*key.as_hex(),
            &record.data,
            to_sql_ms(record.created),
            to_sql_ms(record.expires),
            to_sql_ms(now_millis()),
            timeout_column(record),
            user_column(record),
        ))?;
        Ok(n == 1)
    }

    /// Deletes the lock row if it is still `owner`'s; whether it was.
    fn release(&self, conn: &Connection, key: &StoreKey, owner: &str) -> rusqlite::Result<bool> {
        Ok(conn
            .prepare_cached(&self.sql.release)?
            .execute((&*key.as_hex(), owner))?
            == 1)
    }
}

fn decode_row(row: &rusqlite::Row<'_>) -> Result<Record, BoxError> {
    let data = match row.get_ref(0)? {
        ValueRef::Blob(b) => b,
        other => return Err(format!("data of type {}", other.data_type()).into()),
    };
    let user = match row.get_ref(4)? {
        ValueRef::Null => None,
        ValueRef::Text(text) => Some(std::str::from_utf8(text)?),
        other => return Err(format!("user of type {}", other.data_type()).into()),
    };
    decode(data, row.get(1)?, row.get(2)?, row.get(3)?, user)
}

fn open(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    // Two processes opening a new file together can find it busy while the
    // other switches it to WAL, a moment the busy handler does not cover:
    // try again until the busy timeout is spent. (Runs on the blocking pool.)
    let started = Instant::now();
    loop {
        match open_once(path, busy) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < busy =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn open_once(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    // Reading the schema makes a file that is not a database fail here.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    // In WAL mode NORMAL never corrupts the file; a power cut may lose the
    // last few saves, which for sessions is an acceptable trade for speed.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, table: &Table) -> rusqlite::Result<u32> {
    // IMMEDIATE takes the write lock first: migrations of several processes
    // run one after the other, each seeing the versions the others recorded.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&MIGRATIONS.create_bookkeeping(table))?;
    let current: Option<i64> = tx.query_row(&MIGRATIONS.read_version(table), [], |r| r.get(0))?;
    let plan = MIGRATIONS.plan(table, current);
    for statement in &plan.statements {
        tx.execute_batch(statement)?;
    }
    tx.commit()?;
    Ok(plan.applied)
}

fn lock_conn(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while the connection was held left no transaction open
    // (rusqlite rolls back on drop), so the connection is still good.
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

fn joined<T>(
    context: &'static str,
    outcome: Result<rusqlite::Result<T>, tokio::task::JoinError>,
) -> Result<T, Error> {
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::unavailable(context, e)),
        Err(e) => Err(Error::unavailable(context, e)),
    }
}

/// The database file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open SQLite database {path:?}")]
struct OpenError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

impl SqliteStore {
    /// The SQLite store a config describes, not yet opened (as
    /// [`new`](Self::new)): its `storage_path`, `table` and
    /// `auto_migrate`. [`store::open`](crate::store::open) builds it so for
    /// `storage_type = "sqlite"` and then calls [`ready`](Self::ready).
    pub fn from_config(config: &crate::Config) -> Result<Self, crate::store::OpenError> {
        let storage = config.storage();
        Ok(Self::new(crate::store::open::path(storage)?)
            .with_table(&storage.table)?
            .with_auto_migrate(storage.auto_migrate))
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        self.prepared().await?;
        let key = *key;
        self.blocking("sqlite: load", move |inner, conn| inner.load(conn, &key))
            .await
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        check_size(record)?;
        self.prepared().await?;
        let (key, record) = (*key, record.clone());
        self.blocking("sqlite: save", move |inner, conn| {
            inner.save(conn, &key, &record, write)
        })
        .await
    }

    async fn replace(
        &self,
        old: &StoreKey,
        key: &StoreKey,
        record: &Record,
    ) -> Result<bool, Error> {
        check_size(record)?;
        self.prepared().await?;
        let (old, key, record) = (*old, *key, record.clone());
        // One transaction: the old row is deleted only while live, and the
        // new one written only if that deleted it.
        self.blocking("sqlite: save", move |inner, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let gone = tx
                .prepare_cached(&inner.sql.table.delete_live)?
                .execute((&*old.as_hex(), to_sql_ms(now_millis())))?
                == 1;
            if !gone || !inner.save(&tx, &key, &record, SaveIf::Absent)? {
                // Dropped uncommitted: nothing changed.
                return Ok(false);
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        self.prepared().await?;
        let key = *key;
        self.blocking("sqlite: touch", move |inner, conn| {
            Ok(conn.prepare_cached(&inner.sql.table.touch)?.execute((
                &*key.as_hex(),
                to_sql_ms(expires),
                to_sql_ms(now_millis()),
            ))? == 1)
        })
        .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        self.prepared().await?;
        let key = *key;
        self.blocking("sqlite: delete", move |inner, conn| {
            conn.prepare_cached(&inner.sql.table.delete)?
                .execute([&*key.as_hex()])?;
            Ok(())
        })
        .await
    }

    async fn exists(&self, key: &StoreKey) -> Result<bool, Error> {
        self.prepared().await?;
        let key = *key;
        self.blocking("sqlite: exists", move |inner, conn| {
            conn.prepare_cached(&inner.sql.table.exists)?
                .exists((&*key.as_hex(), to_sql_ms(now_millis())))
        })
        .await
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
        self.prepared().await?;
        let user = user.clone();
        self.blocking("sqlite: sessions of a user", move |inner, conn| {
            let mut st = conn.prepare_cached(&inner.sql.table.sessions_of)?;
            let mut rows = st.query((user.as_str(), to_sql_ms(now_millis())))?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                let ValueRef::Text(text) = row.get_ref(5)? else {
                    continue;
                };
                let Ok(key) = StoreKey::from_bytes(text) else {
                    continue;
                };
                if let Some(record) = live_or_missing(decode_row(row), &key, &inner.opts.table) {
                    found.push((key, record));
                }
            }
            Ok(found)
        })
        .await
    }
}

#[async_trait]
impl SessionAdmin for SqliteStore {
    async fn count(&self) -> Result<u64, Error> {
        self.prepared().await?;
        let n: i64 = self
            .blocking("sqlite: count", |inner, conn| {
                conn.prepare_cached(&inner.sql.table.count)?
                    .query_row([to_sql_ms(now_millis())], |r| r.get(0))
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        super::keys(move |after| self.keys_page(after))
    }

    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error> {
        self.prepared().await?;
        let now = to_sql_ms(now_millis());
        // One short transaction per batch, releasing the connection between
        // them, so requests go on while a large backlog is removed.
        let batch = |statement: fn(&Sql) -> &str| {
            self.blocking("sqlite: clean-up", move |inner, conn| {
                let mut st = conn.prepare_cached(statement(&inner.sql))?;
                st.execute((now, CLEAN_BATCH)).map(|n| n as u64)
            })
        };
        let removed = in_batches(|| async {
            let gone = self
                .blocking("sqlite: clean-up", move |inner, conn| {
                    let mut st = conn.prepare_cached(&inner.sql.clean)?;
                    let mut rows = st.query((now, CLEAN_BATCH))?;
                    let mut gone = Vec::new();
                    while let Some(row) = rows.next()? {
                        let id: Option<String> = row.get(0).ok();
                        let user: Option<String> = row.get(1).ok().flatten();
                        gone.push((id, user));
                    }
                    Ok(gone)
                })
                .await?;
            for (id, user) in &gone {
                if let Some((key, user)) = expired_row(id.as_deref(), user.as_deref()) {
                    expired(key, user);
                }
            }
            Ok(gone.len() as u64)
        })
        .await?;
        // Leases that ran out belong to nobody: their holder died or gave up.
        in_batches(|| batch(|sql| &sql.clean_leases)).await?;
        Ok(removed)
    }
}

impl SqliteStore {
    /// One page of live keys after `after`.
    async fn keys_page(&self, after: String) -> Result<Page, Error> {
        self.prepared().await?;
        self.blocking("sqlite: list", move |inner, conn| {
            let mut st = conn.prepare_cached(&inner.sql.table.keys)?;
            let mut rows = st.query((&after, to_sql_ms(now_millis()), KEYS_PAGE))?;
            let mut column = Vec::new();
            while let Some(row) = rows.next()? {
                column.push(match row.get_ref(0)? {
                    ValueRef::Text(text) => Some(text.to_vec()),
                    _ => None,
                });
            }
            Ok(Page::from_column(
                &inner.opts.table,
                column.iter().map(Option::as_deref),
            ))
        })
        .await
    }
}

/// The tables' schema history. Append only: a released step is never
/// edited.
const MIGRATIONS: Migrations = Migrations {
    bookkeeping: "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT",
    steps: &[
        |t| {
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
               id TEXT PRIMARY KEY NOT NULL, \
               data BLOB NOT NULL, \
               created_at INTEGER NOT NULL, \
               expires_at INTEGER NOT NULL) STRICT; \
             CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at); \
             CREATE TABLE IF NOT EXISTS {locks} (\
               id TEXT PRIMARY KEY NOT NULL, \
               owner TEXT NOT NULL, \
               lease_expires INTEGER NOT NULL) STRICT;",
                table = t.sql(""),
                index = t.index("_expires"),
                locks = t.sql("_locks"),
            )
        },
        // Version 2: a session's own idle timeout (`Session::set_timeout`).
        |t| format!("ALTER TABLE {} ADD COLUMN timeout_ms INTEGER", t.sql("")),
        // Version 3: the user a session belongs to, indexed: the user index.
        |t| {
            format!(
                "ALTER TABLE {table} ADD COLUMN user_id TEXT; \
                 CREATE INDEX IF NOT EXISTS {index} ON {table} (user_id) \
                 WHERE user_id IS NOT NULL;",
                table = t.sql(""),
                index = t.index("_user"),
            )
        },
    ],
};

/// What [`SqliteStore::with_table`] accepts, for its error.
const TABLE_RULE: &str = "a letter or '_' then letters, digits or '_', \
     at most 56 characters, not starting with 'sqlite_'";

/// What a lock row's id ends in when it is a claim on the next turn rather
/// than a lock (a key is hex digits only, so the two never meet).
const TURN_SUFFIX: &str = "~turn";

/// The statements, with the table name filled in once.
struct Sql {
    table: Statements,
    clean: String,
    clean_leases: String,
    acquire: String,
    claim_turn: String,
    end_turn: String,
    renew: String,
    release: String,
}

impl Sql {
    fn new(table: &Table) -> Self {
        let t = table.sql("");
        let l = table.sql("_locks");
        Sql {
            table: Statements::new(table, '?'),
            clean: format!(
                "DELETE FROM {t} WHERE rowid IN (\
                   SELECT rowid FROM {t} WHERE expires_at <= ?1 LIMIT ?2) RETURNING id, user_id"
            ),
            clean_leases: format!(
                "DELETE FROM {l} WHERE rowid IN (\
                   SELECT rowid FROM {l} WHERE lease_expires <= ?1 LIMIT ?2)"
            ),
            // Taken when free, or when its holder's lease ran out, unless
            // another waiter's turn is claimed (`lease.rs`: turns). A
            // turn's row is the key's with TURN_SUFFIX, in the same table,
            // so clean-up drops the lapsed ones with the lapsed leases.
            acquire: format!(
                "INSERT INTO {l} (id, owner, lease_expires) \
                 SELECT ?1, ?2, ?3 WHERE NOT EXISTS (\
                   SELECT 1 FROM {l} WHERE id = ?1 || '{TURN_SUFFIX}' \
                   AND owner <> ?2 AND lease_expires > ?4) \
                 ON CONFLICT (id) DO UPDATE \
                 SET owner = excluded.owner, lease_expires = excluded.lease_expires \
                 WHERE {l}.lease_expires <= ?4"
            ),
            // The next turn, claimed if nobody else's claim is live, and
            // renewed by its owner.
            claim_turn: format!(
                "INSERT INTO {l} (id, owner, lease_expires) VALUES (?1 || '{TURN_SUFFIX}', ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE \
                 SET owner = excluded.owner, lease_expires = excluded.lease_expires \
                 WHERE {l}.owner = excluded.owner OR {l}.lease_expires <= ?4"
            ),
            end_turn: format!("DELETE FROM {l} WHERE id = ?1 || '{TURN_SUFFIX}' AND owner = ?2"),
            renew: format!("UPDATE {l} SET lease_expires = ?3 WHERE id = ?1 AND owner = ?2"),
            release: format!("DELETE FROM {l} WHERE id = ?1 AND owner = ?2"),
        }
    }
}
