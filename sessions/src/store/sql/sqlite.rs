//! The SQLite store: sessions in one table of an embedded database file,
//! shared by the processes of one host that open the same file.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use server_sessions::{store::SqliteStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, server_sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
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
//! use server_sessions::store::SqliteStore;
//!
//! # #[tokio::main] async fn main() -> Result<(), server_sessions::store::Error> {
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
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use super::{check_size, decode, live_or_missing, timeout_column, to_sql_ms, user_column, Table};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::{
    lease, BoxError, Error, LockGuard, LockWaits, SaveIf, SessionAdmin, SessionStore,
};
use crate::user::UserId;

mod admin;
mod locks;
mod migrate;
mod statements;

use self::migrate::{migrate, MIGRATIONS};
use self::statements::Sql;

const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Sessions in an SQLite database file, shared by the processes of one host.
///
/// Cloning is cheap and shares the connection.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), server_sessions::store::Error> {
/// let store = server_sessions::store::SqliteStore::open("sessions.db").await?;
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
        lease::lock(self, key, wait, load).await
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

/// What [`SqliteStore::with_table`] accepts, for its error.
const TABLE_RULE: &str = "a letter or '_' then letters, digits or '_', \
     at most 56 characters, not starting with 'sqlite_'";
