//! The MySQL and MariaDB store: sessions in one table, shared by any number
//! of server instances, locked with lease rows that hold no connection.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use server_sessions::{store::MysqlStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, server_sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
//! let store = MysqlStore::connect("mysql://app:secret@db.internal:3306/app").await?;
//! let app: Router = Router::new()
//!     .route("/cart", get(cart))
//!     .layer(SessionLayer::new(store));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! The driver is [`mysql_async`]: pure Rust, on tokio, maintained for
//! years and the one MySQL driver of the ecosystem that is not part of a
//! larger framework (sqlx would bring its query machinery for the few
//! statements this store runs). It has its own connection pool, prepares
//! each statement once per connection, and speaks to MySQL and MariaDB
//! alike.
//!
//! The table, lock and failure design is described on [`MysqlStore`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, TxOpts, Value};
use tokio::sync::OnceCell;

use super::{check_size, live_or_missing, to_sql_ms, Dialect, Table};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::{lease, Error, LockGuard, LockWaits, SaveIf, SessionAdmin, SessionStore};
use crate::user::UserId;

mod admin;
mod conn;
mod locks;
mod migrate;
mod statements;

use self::conn::{decode_row, execute, key_value, named, record_params};
use self::statements::Sql;

const DEFAULT_MAX_CONNECTIONS: usize = 16;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
const MIN_LEASE: Duration = Duration::from_millis(30);

/// Sessions in a MySQL (8.0 and later) or MariaDB (10.6 and later)
/// database, shared by any number of server instances.
///
/// Cloning is cheap and shares the pool.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), server_sessions::store::Error> {
/// let store = server_sessions::store::MysqlStore::connect("mariadb://root@127.0.0.1/test").await?;
/// # Ok(()) }
/// ```
///
/// # Design
///
/// - **Tables.** `<table> (id, data LONGBLOB, created_at BIGINT,
///   expires_at BIGINT, timeout_ms BIGINT, user_id)` (InnoDB; milliseconds
///   since the epoch, UTC; `timeout_ms` a session's own idle timeout, or
///   null; `user_id` its user, indexed: the user index), with an index on
///   `expires_at`, and `<table>_locks (id, owner, lease_expires)` for the
///   locks. `id` keeps CherryPy's column name but holds the session's
///   [`StoreKey`] (64 hex characters, compared as bytes), never the id
///   itself. [`MysqlStore::migrate`] creates or upgrades them in numbered
///   steps recorded in `<table>_schema`, holding a named lock
///   (`GET_LOCK`) so that instances starting together apply each step
///   once. MySQL commits each `CREATE TABLE` by itself, so a step is one
///   statement that can be run again.
/// - **Lock.** A lease row, as in the PostgreSQL and SQLite stores
///   (`lease.rs`): no connection is held while the handler runs. Tasks of
///   one process queue in memory; the front one inserts the row, or takes
///   over one whose lease ran out, and reads the record once it holds it.
///   While held, the lease is renewed every third of its length
///   ([`with_lease`](MysqlStore::with_lease), default 10 s). A save that
///   releases the lock deletes our row and writes the session in one
///   transaction, and writes nothing if the row was no longer ours
///   ([`Error::Unavailable`]).
/// - **Wake-ups.** MySQL has no `LISTEN`/`NOTIFY`: a waiter in another
///   process polls on the crate's backoff (the one wait of `store/wait.rs`),
///   and claims the next turn while it waits (a `<key>~turn` row in
///   `<table>_locks`, lasting a second unless renewed), so that the
///   releasing process cannot keep taking the lock back. What it costs: a
///   waiter learns of a release up to one backoff step late, and each
///   poll is two or three statements.
/// - **Saves** carry their precondition in SQL, as on every store: a new
///   session is inserted or overwrites only an expired row, an existing
///   one is updated only while live. The connection reports rows found
///   rather than rows changed (`CLIENT_FOUND_ROWS`), so a save that
///   writes what the row held still counts as written.
/// - **SQL.** Only what MySQL 8 and MariaDB share: no `RETURNING`, no
///   `INSERT … AS` alias, no `VALUES()` in an upsert, no `IF NOT EXISTS`
///   on indexes. Transactions run at `READ COMMITTED`.
/// - **Failures.** Connecting, waiting for a pooled connection and every
///   statement are bounded ([`with_timeout`](MysqlStore::with_timeout)); a
///   server that is down answers [`Error::Unavailable`], and the pool
///   reconnects by itself when it is back.
#[derive(Clone)]
pub struct MysqlStore {
    inner: Arc<Inner>,
}

/// What `with_*` changes; the rest of [`Inner`] is derived from it.
#[derive(Clone)]
struct Options {
    url: Opts,
    table: Table,
    auto_migrate: bool,
    max_connections: usize,
    timeout: Duration,
    lease: Duration,
}

struct Inner {
    opts: Options,
    pool: Pool,
    sql: Sql,
    /// This process's lock waits.
    waits: Arc<LockWaits>,
    /// Set once the automatic migration has succeeded.
    migrated: OnceCell<()>,
}

impl fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.inner.opts;
        f.debug_struct("MysqlStore")
            .field("host", &o.url.ip_or_hostname())
            .field("port", &o.url.tcp_port())
            .field("database", &o.url.db_name())
            .field("table", &o.table.text())
            .field("max_connections", &o.max_connections)
            .field("timeout", &o.timeout)
            .field("lease", &o.lease)
            .field("auto_migrate", &o.auto_migrate)
            .finish_non_exhaustive()
    }
}

impl MysqlStore {
    /// Connects with the defaults — table `sessions`, created or upgraded
    /// now, 16 connections, 5 s timeouts — and checks that the server
    /// answers.
    ///
    /// `url` is `mysql://user:password@host:port/database` (or
    /// `mariadb://…`), with the driver's options as query parameters.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let store = Self::new(url)?;
        store.ready().await?;
        Ok(store)
    }

    /// A store for `url` with the defaults, without connecting: nothing is
    /// touched until [`ready`](Self::ready) or the first use, when the
    /// automatic migration (if on) runs.
    ///
    /// Fails only if `url` does not parse, or names no database.
    pub fn new(url: &str) -> Result<Self, Error> {
        let url = conn::parse_url(url)?;
        Ok(Self::from_options(Options {
            url,
            table: Table::default().in_dialect(Dialect::Mysql),
            auto_migrate: true,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout: DEFAULT_TIMEOUT,
            lease: DEFAULT_LEASE,
        }))
    }

    /// Uses table `name` (default `sessions`), optionally in another
    /// database (`database.table`). Each part is a letter or `_` followed
    /// by letters, digits and `_`; the database at most 63 characters and
    /// the table at most 56, so that the derived `<table>_schema` fits
    /// MySQL's 64-character names. Lower-cased, so that servers that
    /// compare table names by case and those that do not agree.
    pub fn with_table(self, name: &str) -> Result<Self, Error> {
        let table = Table::setting(name, TABLE_RULE, |_| true)?.in_dialect(Dialect::Mysql);
        Ok(self.reconfigure(|o| o.table = table))
    }

    /// Whether to create or upgrade the tables before first use (default
    /// true). Turn it off when the schema is managed elsewhere, and run
    /// [`migrate`](Self::migrate) there.
    pub fn with_auto_migrate(self, on: bool) -> Self {
        self.reconfigure(|o| o.auto_migrate = on)
    }

    /// The most connections the pool opens (default 16). A connection is
    /// taken for each statement or short transaction, never for a held
    /// lock, so this bounds the statements in flight, not the requests.
    pub fn with_max_connections(self, n: usize) -> Self {
        self.reconfigure(|o| o.max_connections = n.max(1))
    }

    /// Bounds every wait on the database other than for a session lock:
    /// connecting, waiting for a free pooled connection, and each statement
    /// (default 5 s). Past it the operation fails with
    /// [`Error::Unavailable`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.reconfigure(|o| o.timeout = timeout)
    }

    /// Sets the lock lease (default 10 s, at least 30 ms): how long a lock
    /// outlives a holder that vanished without releasing it. A live holder
    /// renews it every third of the lease, however long it holds the lock.
    pub fn with_lease(self, lease: Duration) -> Self {
        self.reconfigure(|o| o.lease = lease.max(MIN_LEASE))
    }

    /// Connects now and, with automatic migration on, brings the tables up
    /// to date, so that a wrong URL or a missing grant shows at start-up
    /// rather than on the first request.
    pub async fn ready(&self) -> Result<(), Error> {
        if self.inner.opts.auto_migrate {
            self.inner
                .migrated
                .get_or_try_init(|| async { self.inner.migrate().await.map(drop) })
                .await?;
            Ok(())
        } else {
            let inner = &self.inner;
            inner
                .timed("mysql: connection check", async {
                    inner.pool.get_conn().await?.ping().await
                })
                .await
        }
    }

    /// Creates the tables or upgrades them to this version's schema, and
    /// returns how many schema steps it applied (0 when they were up to
    /// date).
    ///
    /// Safe to run from many processes at once: they take turns on a named
    /// lock and each step is applied once.
    pub async fn migrate(&self) -> Result<u32, Error> {
        self.inner.migrate().await
    }

    /// The MySQL store a config describes, not yet connected (as
    /// [`new`](Self::new)): its `storage_url`, `table` and `auto_migrate`.
    /// [`store::open`](crate::store::open) builds it so for `storage_type =
    /// "mysql"` and then calls [`ready`](Self::ready).
    pub fn from_config(config: &crate::Config) -> Result<Self, crate::store::OpenError> {
        let storage = config.storage();
        Ok(Self::new(crate::store::open::url(storage)?)?
            .with_table(&storage.table)?
            .with_auto_migrate(storage.auto_migrate))
    }

    fn from_options(opts: Options) -> Self {
        let constraints = PoolConstraints::new(0, opts.max_connections)
            .unwrap_or_else(|| PoolConstraints::new(0, 1).expect("0 ≤ 1"));
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            // Idle connections are kept a minute: with the driver's
            // default (none) every connection above the pool's minimum
            // would be closed as it is given back, and each statement
            // would pay a new connection and its statements' preparation.
            .with_inactive_connection_ttl(Duration::from_secs(60))
            // Our connections keep no state between uses (every transaction
            // ends, every named lock is released), so the pool need not
            // reset them: that would cost a round trip per use.
            .with_reset_connection(false);
        let builder = OptsBuilder::from_opts(opts.url.clone())
            .pool_opts(pool_opts)
            .client_found_rows(true)
            .stmt_cache_size(64)
            // Each transaction sees what committed before each statement:
            // a take reads the save its predecessor committed, and
            // clean-up locks no gaps that would stall inserts.
            .setup(vec![
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            ]);
        let sql = Sql::new(&opts.table);
        MysqlStore {
            inner: Arc::new(Inner {
                pool: Pool::new(builder),
                opts,
                sql,
                waits: LockWaits::new(),
                migrated: OnceCell::new(),
            }),
        }
    }

    /// A new store (new pool, new lock table) with changed options: the
    /// `with_*` methods are meant for before first use.
    fn reconfigure(self, change: impl FnOnce(&mut Options)) -> Self {
        let mut opts = self.inner.opts.clone();
        change(&mut opts);
        Self::from_options(opts)
    }

    /// Runs the automatic migration once, before the first operation.
    async fn prepared(&self) -> Result<&Inner, Error> {
        if self.inner.opts.auto_migrate && !self.inner.migrated.initialized() {
            self.ready().await?;
        }
        Ok(&self.inner)
    }
}

impl Inner {
    /// The live record of `key` read on `q` (a connection or a
    /// transaction), or `None`.
    async fn load_on<Q: Queryable + Send>(
        &self,
        q: &mut Q,
        key: &StoreKey,
    ) -> mysql_async::Result<Option<Record>> {
        let row: Option<Row> = q
            .exec_first(&self.sql.table.load, named([key_value(key)]))
            .await?;
        Ok(row.and_then(|row| live_or_missing(decode_row(&row, 0), key, &self.opts.table)))
    }

    /// Writes `record` under its precondition on `q`; whether it was.
    async fn save_on<Q: Queryable + Send>(
        &self,
        q: &mut Q,
        key: &StoreKey,
        record: &Record,
        write: SaveIf,
    ) -> mysql_async::Result<bool> {
        let found = execute(q, self.sql.table.save(write), record_params(key, record)).await?;
        Ok(found >= 1)
    }
}

#[async_trait]
impl SessionStore for MysqlStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let inner = self.prepared().await?;
        inner
            .timed("mysql: load", async {
                let mut conn = inner.pool.get_conn().await?;
                inner.load_on(&mut conn, key).await
            })
            .await
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        check_size(record)?;
        let inner = self.prepared().await?;
        inner
            .timed("mysql: save", async {
                let mut conn = inner.pool.get_conn().await?;
                inner.save_on(&mut conn, key, record, write).await
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
        let inner = self.prepared().await?;
        inner
            .timed("mysql: save", async {
                let mut conn = inner.pool.get_conn().await?;
                // One transaction: the old row is deleted only while live,
                // and the new one written only if that deleted it. Dropped
                // uncommitted, it is rolled back: nothing changed.
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                let now = to_sql_ms(now_millis());
                let params = named([key_value(old), now.into()]);
                let gone = execute(&mut tx, &inner.sql.table.delete_live, params).await? == 1;
                if !gone || !inner.save_on(&mut tx, key, record, SaveIf::Absent).await? {
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            })
            .await
    }

    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        let inner = self.prepared().await?;
        let params = named([
            key_value(key),
            to_sql_ms(expires).into(),
            to_sql_ms(now_millis()).into(),
        ]);
        inner
            .timed("mysql: touch", async {
                let mut conn = inner.pool.get_conn().await?;
                Ok(execute(&mut conn, &inner.sql.table.touch, params).await? == 1)
            })
            .await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        let inner = self.prepared().await?;
        inner
            .timed("mysql: delete", async {
                let mut conn = inner.pool.get_conn().await?;
                conn.exec_drop(&inner.sql.table.delete, named([key_value(key)]))
                    .await
            })
            .await
    }

    async fn exists(&self, key: &StoreKey) -> Result<bool, Error> {
        let inner = self.prepared().await?;
        let params = named([key_value(key), to_sql_ms(now_millis()).into()]);
        inner
            .timed("mysql: exists", async {
                let mut conn = inner.pool.get_conn().await?;
                let row: Option<Row> = conn.exec_first(&inner.sql.table.exists, params).await?;
                Ok(row.is_some())
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
        let inner = self.prepared().await?;
        let params = named([user.as_str().into(), to_sql_ms(now_millis()).into()]);
        let rows: Vec<Row> = inner
            .timed("mysql: sessions of a user", async {
                let mut conn = inner.pool.get_conn().await?;
                conn.exec(&inner.sql.table.sessions_of, params).await
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let Some(Value::Bytes(id)) = row.as_ref(5) else {
                    return None;
                };
                let key = StoreKey::from_bytes(id).ok()?;
                let record = live_or_missing(decode_row(row, 0), &key, &inner.opts.table)?;
                Some((key, record))
            })
            .collect())
    }
}

/// What [`MysqlStore::with_table`] accepts, for its error.
const TABLE_RULE: &str = "[database.]table, each a letter or '_' then letters, digits or '_', \
     the database at most 63 and the table at most 56 characters";
