//! The PostgreSQL store: sessions in one table, shared by any number of
//! server instances, locked with PostgreSQL advisory locks.
//!
//! ```no_run
//! use std::time::Duration;
//! use sessions::store::PostgresStore;
//!
//! # #[tokio::main] async fn main() -> Result<(), sessions::store::Error> {
//! // Defaults: table `sessions`, created or upgraded on connect.
//! let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
//!
//! // Or configured first; nothing is touched until `ready` or first use.
//! let store = PostgresStore::new("postgres://app@db.internal/app")?
//!     .with_table("web.sessions")?
//!     .with_max_connections(32)
//!     .with_timeout(Duration::from_secs(2));
//! store.ready().await?;
//! # Ok(()) }
//! ```
//!
//! The table, lock and failure design is described on [`PostgresStore`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::stream::BoxStream;
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{
    check_size, decode, in_batches, live_or_missing, to_sql_ms, Migrations, Page, Statements,
    Table, CLEAN_BATCH, IDS_PAGE,
};
use crate::id::SessionId;
use crate::record::{now_millis, Millis, Record};
use crate::store::LocalGuard;
use crate::store::{BoxError, Error, LocalLocks, LockGuard, SaveIf, SessionAdmin, SessionStore};

const DEFAULT_MAX_CONNECTIONS: usize = 16;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a migration may wait for another instance's migration.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Sessions in a PostgreSQL table, shared by every instance that uses it.
///
/// Cloning is cheap and shares the connection pool.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), sessions::store::Error> {
/// let store = sessions::store::PostgresStore::connect("postgres://postgres@127.0.0.1/app").await?;
/// # Ok(()) }
/// ```
///
/// # Design
///
/// - **Table.** `id text PRIMARY KEY, data bytea, created_at bigint,
///   expires_at bigint` (milliseconds since the epoch, UTC) with an index on
///   `expires_at`. [`PostgresStore::migrate`] creates or upgrades it in
///   numbered steps recorded in `<table>_schema`, inside one transaction
///   that holds an advisory lock, so instances starting together apply each
///   step once.
/// - **Lock.** Tasks of one process first queue on an in-memory per-id lock,
///   so waiters cost no connection. The front task then takes
///   `pg_advisory_lock(key)` on a pooled connection that the [`LockGuard`]
///   owns until it is dropped; `key` is 64 bits of the id mixed with a hash of
///   the table name, so two tables never share locks. The server does the
///   waiting (`lock_timeout` set for that one statement), which hands the lock
///   over the moment it is released, in arrival order, instead of polling.
///   Dropping the guard spawns `pg_advisory_unlock` on its connection and
///   returns it to the pool; if that cannot run, or anything on a
///   lock-holding connection fails or is cancelled, the connection is closed
///   instead of pooled, and the server frees its locks with it.
/// - **Round trips.** `lock_and_load` pipelines the lock and the read on
///   the locked connection, `save_and_unlock` the write and the unlock: one
///   round trip each. They are separate statements on purpose: the read takes
///   its snapshot after the lock is granted, and the unlock runs after the
///   write has committed.
/// - **Saves** carry their precondition in SQL: a new session is inserted or
///   overwrites only an expired row, an existing one is updated only while
///   live; the affected-row count says whether it was written. Every instant
///   compared is this process's [`now_millis`](crate::now_millis).
/// - **Failures.** Connecting, waiting for a pooled connection and every query
///   are bounded ([`with_timeout`](PostgresStore::with_timeout)); a database
///   that is down answers [`Error::Unavailable`] and the pool reconnects by
///   itself when it is back.
///
/// Connections are made without TLS.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

/// What `with_*` changes; the rest of [`Inner`] is derived from it.
#[derive(Clone)]
struct Options {
    pg: tokio_postgres::Config,
    table: Table,
    auto_migrate: bool,
    max_connections: usize,
    timeout: Duration,
}

struct Inner {
    opts: Options,
    pool: Pool,
    sql: Sql,
    /// Mixed into every lock key, so that tables do not share locks.
    namespace: u64,
    locks: Arc<LocalLocks>,
    /// Set once the automatic migration has succeeded.
    migrated: OnceCell<()>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the connection config: it may carry a password.
        let o = &self.inner.opts;
        f.debug_struct("PostgresStore")
            .field("table", &o.table.text())
            .field("max_connections", &o.max_connections)
            .field("timeout", &o.timeout)
            .field("auto_migrate", &o.auto_migrate)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects with the defaults — table `sessions`, created or upgraded
    /// now, 16 connections, 5 s timeouts — and checks that the database
    /// answers.
    ///
    /// `url` is a `postgres://user:password@host:port/database?…` URL or a
    /// `key=value` connection string.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let store = Self::new(url)?;
        store.ready().await?;
        Ok(store)
    }

    /// A store for `url` with the defaults, without connecting: nothing is
    /// touched until [`ready`](Self::ready) or the first use, when the
    /// automatic migration (if on) runs. An application can so start while
    /// the database is still down.
    ///
    /// Fails only if `url` does not parse.
    pub fn new(url: &str) -> Result<Self, Error> {
        // The parse error names the part that is wrong, never its value: it
        // cannot show a password.
        let pg: tokio_postgres::Config =
            url.parse().map_err(|e| Error::config("storage_url", e))?;
        Ok(Self::from_options(Options {
            pg,
            table: Table::default(),
            auto_migrate: true,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout: DEFAULT_TIMEOUT,
        }))
    }

    /// Uses table `name` (default `sessions`), optionally schema-qualified
    /// (`schema.table`). Each part is a letter or `_` followed by letters,
    /// digits and `_`; the schema at most 63 characters and the table at most
    /// 56, so that the derived `<table>_schema` fits PostgreSQL's identifier
    /// limit. Names are case-insensitive, as unquoted names are in SQL.
    pub fn with_table(self, name: &str) -> Result<Self, Error> {
        let table = Table::setting(name, TABLE_RULE, |_| true)?;
        Ok(self.reconfigure(|o| o.table = table))
    }

    /// Whether to create or upgrade the table before first use (default
    /// true). Turn it off when the schema is managed elsewhere, and run
    /// [`migrate`](Self::migrate) there.
    pub fn with_auto_migrate(self, on: bool) -> Self {
        self.reconfigure(|o| o.auto_migrate = on)
    }

    /// The most connections the pool opens (default 16). A held session lock
    /// keeps one connection until the request ends.
    pub fn with_max_connections(self, n: usize) -> Self {
        self.reconfigure(|o| o.max_connections = n.max(1))
    }

    /// Bounds every wait on the database other than for a session lock:
    /// connecting, waiting for a free pooled connection, and each query
    /// (default 5 s). Past it the operation fails with
    /// [`Error::Unavailable`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.reconfigure(|o| o.timeout = timeout)
    }

    /// Connects now and, with automatic migration on, brings the table up to
    /// date, so that a wrong URL or a missing grant shows at start-up rather
    /// than on the first request.
    pub async fn ready(&self) -> Result<(), Error> {
        if self.inner.opts.auto_migrate {
            self.inner
                .migrated
                .get_or_try_init(|| async { self.inner.migrate().await.map(drop) })
                .await?;
            Ok(())
        } else {
            let conn = self.inner.conn().await?;
            self.inner
                .timed("postgres: connection check", conn.client().simple_query(""))
                .await?;
            conn.release();
            Ok(())
        }
    }

    /// Creates the table or upgrades it to this version's schema, and returns
    /// how many schema steps it applied (0 when it was up to date).
    ///
    /// Safe to run from many processes at once: they take turns on an
    /// advisory lock and each step is applied once.
    pub async fn migrate(&self) -> Result<u32, Error> {
        self.inner.migrate().await
    }

    fn from_options(opts: Options) -> Self {
        let mut pg = opts.pg.clone();
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(opts.timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("sessions");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.timeout))
            .create_timeout(Some(opts.timeout))
            .recycle_timeout(Some(opts.timeout))
            .build()
            // Only fails when timeouts are set without a runtime, and the
            // runtime is set just above.
            .expect("pool with a runtime");
        let sql = Sql::new(&opts.table);
        let namespace = fnv1a(b"sessions-lock:", opts.table.text().as_bytes());
        PostgresStore {
            inner: Arc::new(Inner {
                opts,
                pool,
                sql,
                namespace,
                locks: Arc::new(LocalLocks::new()),
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

/// Waiting for a session lock, in one function that
/// [`lock`](SessionStore::lock) and
/// [`lock_and_load`](SessionStore::lock_and_load) both call: this process's
/// tasks queue on [`LocalLocks`], then the front one has the server wait
/// for the advisory lock.
impl PostgresStore {
    /// Takes the id's lock and, if `load`, reads the record on the same
    /// connection in the same round trip.
    async fn acquire(
        &self,
        id: &SessionId,
        wait: Duration,
        load: bool,
    ) -> Result<(PgLock, Option<Record>), Error> {
        let inner = self.prepared().await?;
        let started = Instant::now();
        // Waiters of this process queue here, without holding a connection.
        let local = inner
            .locks
            .lock(id, wait)
            .await
            .ok_or(Error::LockTimeout(wait))?;
        let conn = inner.conn().await?;
        let remaining = wait.saturating_sub(started.elapsed());
        // lock_timeout 0 would mean "wait forever".
        let wait_ms = remaining.as_millis().clamp(1, i32::MAX as u128).to_string();
        let key = inner.key(id);
        let hex = id.as_hex();
        let hex: &str = &hex;
        let outcome = {
            let client = conn.client();
            let (lock_st, load_st) = inner
                .timed("postgres: prepare lock", async {
                    let lock_st = client.prepare_cached(&inner.sql.lock).await?;
                    let load_st = match load {
                        true => Some(client.prepare_cached(&inner.sql.table.load).await?),
                        false => None,
                    };
                    Ok((lock_st, load_st))
                })
                .await?;
            // Both requests are sent before either answer is awaited.
            let lock_fut = async { client.execute(&lock_st, &[&key, &wait_ms]).await };
            let load_fut = async {
                match &load_st {
                    Some(st) => client.query_opt(st, &[&hex]).await,
                    None => Ok(None),
                }
            };
            tokio::time::timeout(
                remaining.saturating_add(inner.opts.timeout),
                futures_util::future::join(lock_fut, load_fut),
            )
            .await
        };
        // On every error path below but the first, `conn` is dropped
        // un-released: it is closed, freeing any lock the server granted.
        let row = match outcome {
            Ok((Err(e), _)) if is_lock_timeout(&e) => {
                // Not granted, and the connection is in a clean state.
                conn.release();
                return Err(Error::LockTimeout(wait));
            }
            Ok((Err(e), _)) => return Err(Error::unavailable("postgres: lock", e)),
            Ok((Ok(_), Err(e))) => return Err(Error::unavailable("postgres: load", e)),
            Ok((Ok(_), Ok(row))) => row,
            Err(_) => {
                return Err(Error::unavailable(
                    "postgres: lock",
                    TimedOut(remaining.saturating_add(inner.opts.timeout)),
                ))
            }
        };
        let record = row.and_then(|row| inner.record(id, &row));
        Ok((
            PgLock {
                conn: Some(conn),
                local: Some(local),
                key,
                timeout: inner.opts.timeout,
            },
            record,
        ))
    }
}

impl Inner {
    async fn conn(&self) -> Result<Conn, Error> {
        match self.pool.get().await {
            Ok(obj) => Ok(Conn(Some(obj))),
            Err(e) => Err(Error::unavailable("postgres: no connection", e)),
        }
    }

    /// Bounds a query by the configured timeout.
    async fn timed<T>(
        &self,
        context: &'static str,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Error> {
        bounded(context, self.opts.timeout, fut).await
    }

    fn key(&self, id: &SessionId) -> i64 {
        // Ids are uniformly random, so 64 of their bits XOR a per-table
        // constant are a uniformly random key in that table's namespace.
        (id.prefix_u64() ^ self.namespace) as i64
    }

    /// The record in a row, or `None` (logged) if the row is damaged or has
    /// expired.
    fn record(&self, id: &SessionId, row: &Row) -> Option<Record> {
        let decoded = (|| -> Result<Record, BoxError> {
            decode(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)
        })();
        live_or_missing(decoded, id, &self.opts.table)
    }

    async fn migrate(&self) -> Result<u32, Error> {
        let mut conn = self.conn().await?;
        let key = fnv1a(b"sessions-migrate:", self.opts.table.text().as_bytes()) as i64;
        let table = &self.opts.table;
        let applied = bounded(
            "postgres: migrate",
            MIGRATE_TIMEOUT.max(self.opts.timeout),
            async {
                let tx = conn.client_mut().transaction().await?;
                // Held to the end of the transaction: concurrent migrations
                // queue here, and each then sees the versions committed
                // before it.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                    .await?;
                tx.batch_execute(&MIGRATIONS.create_bookkeeping(table))
                    .await?;
                let current: Option<i32> = tx
                    .query_one(&MIGRATIONS.read_version(table), &[])
                    .await?
                    .try_get(0)?;
                let plan = MIGRATIONS.plan(table, current.map(i64::from));
                for statement in &plan.statements {
                    tx.batch_execute(statement).await?;
                }
                tx.commit().await?;
                Ok(plan.applied)
            },
        )
        .await?;
        conn.release();
        MIGRATIONS.applied(table, applied);
        Ok(applied)
    }

    async fn save(
        &self,
        conn: &Conn,
        id: &SessionId,
        record: &Record,
        write: SaveIf,
    ) -> Result<bool, Error> {
        let hex = id.as_hex();
        let hex: &str = &hex;
        let (created, expires) = (to_sql_ms(record.created), to_sql_ms(record.expires));
        let now = to_sql_ms(now_millis());
        let n = self
            .timed("postgres: save", async {
                let st = conn
                    .client()
                    .prepare_cached(self.sql.table.save(write))
                    .await?;
                conn.client()
                    .execute(&st, &[&hex, &record.data, &created, &expires, &now])
                    .await
            })
            .await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Record>, Error> {
        let inner = self.prepared().await?;
        let conn = inner.conn().await?;
        let hex = id.as_hex();
        let hex: &str = &hex;
        let row = inner
            .timed("postgres: load", async {
                let st = conn.client().prepare_cached(&inner.sql.table.load).await?;
                conn.client().query_opt(&st, &[&hex]).await
            })
            .await?;
        conn.release();
        Ok(row.and_then(|row| inner.record(id, &row)))
    }

    async fn save(&self, id: &SessionId, record: &Record, write: SaveIf) -> Result<bool, Error> {
        check_size(record)?;
        let inner = self.prepared().await?;
        let conn = inner.conn().await?;
        let saved = inner.save(&conn, id, record, write).await?;
        conn.release();
        Ok(saved)
    }

    async fn touch(&self, id: &SessionId, expires: Millis) -> Result<bool, Error> {
        let inner = self.prepared().await?;
        let conn = inner.conn().await?;
        let hex = id.as_hex();
        let hex: &str = &hex;
        let (expires, now) = (to_sql_ms(expires), to_sql_ms(now_millis()));
        let n = inner
            .timed("postgres: touch", async {
                let st = conn.client().prepare_cached(&inner.sql.table.touch).await?;
                conn.client().execute(&st, &[&hex, &expires, &now]).await
            })
            .await?;
        conn.release();
        Ok(n == 1)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), Error> {
        let inner = self.prepared().await?;
        let conn = inner.conn().await?;
        let hex = id.as_hex();
        let hex: &str = &hex;
        inner
            .timed("postgres: delete", async {
                let st = conn
                    .client()
                    .prepare_cached(&inner.sql.table.delete)
                    .await?;
                conn.client().execute(&st, &[&hex]).await
            })
            .await?;
        conn.release();
        Ok(())
    }

    async fn exists(&self, id: &SessionId) -> Result<bool, Error> {
        let inner = self.prepared().await?;
        let conn = inner.conn().await?;
        let hex = id.as_hex();
        let hex: &str = &hex;
        let now = to_sql_ms(now_millis());
        let row = inner
            .timed("postgres: exists", async {
                let st = conn
                    .client()
                    .prepare_cached(&inner.sql.table.exists)
                    .await?;
                conn.client().query_opt(&st, &[&hex, &now]).await
            })
            .await?;
        conn.release();
        Ok(row.is_some())
    }

    async fn lock(&self, id: &SessionId, wait: Duration) -> Result<LockGuard, Error> {
        let (lock, _) = self.acquire(id, wait, false).await?;
        Ok(LockGuard::new(lock))
    }

    async fn lock_and_load(
        &self,
        id: &SessionId,
        wait: Duration,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        let (lock, record) = self.acquire(id, wait, true).await?;
        Ok((LockGuard::new(lock), record))
    }

    async fn save_and_unlock(
        &self,
        id: &SessionId,
        record: &Record,
        write: SaveIf,
        guard: LockGuard,
    ) -> Result<bool, Error> {
        // Refused before anything is sent; the guard, dropped, unlocks.
        check_size(record)?;
        let mut lock = match guard.downcast::<PgLock>() {
            Ok(lock) => lock,
            // Not one of ours: save, then let the guard release itself.
            Err(guard) => {
                let saved = self.save(id, record, write).await;
                drop(guard);
                return saved;
            }
        };
        // From here the lock is released by this function, not by `Drop`:
        // by a successful unlock, or by closing the connection.
        let (conn, local) = (lock.conn.take(), lock.local.take());
        drop(lock);
        let Some(conn) = conn else {
            return self.save(id, record, write).await;
        };
        let inner = &*self.inner;
        let key = inner.key(id);
        let hex = id.as_hex();
        let hex: &str = &hex;
        let (created, expires) = (to_sql_ms(record.created), to_sql_ms(record.expires));
        let now = to_sql_ms(now_millis());
        let outcome = {
            let client = conn.client();
            match inner
                .timed("postgres: prepare save", async {
                    let save_st = client.prepare_cached(inner.sql.table.save(write)).await?;
                    let unlock_st = client.prepare_cached(UNLOCK).await?;
                    Ok((save_st, unlock_st))
                })
                .await
            {
                Err(e) => Err(e),
                Ok((save_st, unlock_st)) => {
                    // Pipelined: the unlock runs after the write has
                    // committed, in the same round trip.
                    let save_fut = async {
                        let params: [&(dyn ToSql + Sync); 5] =
                            [&hex, &record.data, &created, &expires, &now];
                        client.execute(&save_st, &params).await
                    };
                    let unlock_fut = async {
                        client
                            .query_one(&unlock_st, &[&key])
                            .await?
                            .try_get::<_, bool>(0)
                    };
                    tokio::time::timeout(
                        inner.opts.timeout,
                        futures_util::future::join(save_fut, unlock_fut),
                    )
                    .await
                    .map_err(|_| Error::unavailable("postgres: save", TimedOut(inner.opts.timeout)))
                }
            }
        };
        let result = match outcome {
            Ok((saved, unlocked)) => {
                if matches!(unlocked, Ok(true)) {
                    conn.release();
                } else {
                    drop(conn);
                }
                saved
                    .map(|n| n == 1)
                    .map_err(|e| Error::unavailable("postgres: save", e))
            }
            Err(e) => {
                drop(conn);
                Err(e)
            }
        };
        drop(local);
        result
    }
}

#[async_trait]
impl SessionAdmin for PostgresStore {
    async fn count(&self) -> Result<u64, Error> {
        let inner = self.prepared().await?;
        let conn = inner.conn().await?;
        let now = to_sql_ms(now_millis());
        let n: i64 = inner
            .timed("postgres: count", async {
                let st = conn.client().prepare_cached(&inner.sql.table.count).await?;
                conn.client().query_one(&st, &[&now]).await?.try_get(0)
            })
            .await?;
        conn.release();
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn ids(&self) -> BoxStream<'_, Result<SessionId, Error>> {
        super::ids(move |after| self.ids_page(after))
    }

    async fn clean_up(&self) -> Result<u64, Error> {
        let inner = self.prepared().await?;
        let now = to_sql_ms(now_millis());
        // One short statement per batch, each on a connection taken afresh,
        // so a large backlog neither holds row locks for long nor keeps a
        // connection from the requests. Session locks are advisory locks,
        // which no row owns: deleting an expired row never frees or breaks a
        // held lock, and a request that still holds one finds its row gone
        // and does not save (the `Live` precondition).
        in_batches(|| async {
            let conn = inner.conn().await?;
            let n = inner
                .timed("postgres: clean-up", async {
                    let st = conn.client().prepare_cached(&inner.sql.clean).await?;
                    conn.client().execute(&st, &[&now, &CLEAN_BATCH]).await
                })
                .await?;
            conn.release();
            Ok(n)
        })
        .await
    }
}

impl PostgresStore {
    /// One page of live ids after `after`.
    async fn ids_page(&self, after: String) -> Result<Page, Error> {
        let inner = self.prepared().await?;
        let conn = inner.conn().await?;
        let now = to_sql_ms(now_millis());
        let rows = inner
            .timed("postgres: list", async {
                let st = conn.client().prepare_cached(&inner.sql.table.ids).await?;
                conn.client().query(&st, &[&after, &now, &IDS_PAGE]).await
            })
            .await?;
        conn.release();
        let column = rows
            .iter()
            .map(|row| row.try_get::<_, &str>(0).ok().map(str::as_bytes));
        Ok(Page::from_column(&inner.opts.table, column))
    }
}

async fn bounded<T>(
    context: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::unavailable(context, e)),
        Err(_) => Err(Error::unavailable(context, TimedOut(limit))),
    }
}

fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    // A deadlock (two requests each holding the other's next lock) is
    // broken by the server failing one of the waits: to the caller that is
    // a lock it could not get, like a timeout.
    matches!(
        e.code(),
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The database did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer from PostgreSQL within {0:?}")]
struct TimedOut(Duration);

/// A pooled connection that goes back to the pool only when the code using
/// it says so with [`release`](Conn::release). Dropped otherwise — after an
/// error, a timeout or a cancelled future — it is closed instead: it may be
/// mid-answer or hold an advisory lock, and closing it is what makes the
/// server free that lock.
struct Conn(Option<Object>);

impl Conn {
    fn client(&self) -> &Object {
        self.0.as_ref().expect("a connection until released")
    }

    fn client_mut(&mut self) -> &mut Object {
        self.0.as_mut().expect("a connection until released")
    }

    fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            // Detached from the pool and dropped: the socket closes.
            drop(Object::take(obj));
        }
    }
}

/// A held advisory lock: the connection it was taken on, and this process's
/// claim on the id.
struct PgLock {
    conn: Option<Conn>,
    local: Option<LocalGuard>,
    key: i64,
    timeout: Duration,
}

impl Drop for PgLock {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let local = self.local.take();
        let (key, timeout) = (self.key, self.timeout);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    unlock(conn, key, timeout).await;
                    // Only now may the next task of this process try.
                    drop(local);
                });
            }
            // No runtime to unlock on: closing the connection unlocks.
            Err(_) => drop(conn),
        }
    }
}

/// Releases the advisory lock and returns the connection to the pool, or
/// closes the connection if the unlock cannot be confirmed.
async fn unlock(conn: Conn, key: i64, timeout: Duration) {
    let unlocked = bounded("postgres: unlock", timeout, async {
        let st = conn.client().prepare_cached(UNLOCK).await?;
        conn.client()
            .query_one(&st, &[&key])
            .await?
            .try_get::<_, bool>(0)
    })
    .await;
    match unlocked {
        Ok(true) => conn.release(),
        Ok(false) => tracing::warn!("advisory lock was not held at unlock; closing its connection"),
        Err(error) => tracing::debug!(%error, "unlock failed; closing the lock's connection"),
    }
}

const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

/// The table's schema history. Append only: a released step is never
/// edited.
const MIGRATIONS: Migrations = Migrations {
    bookkeeping: "(version integer PRIMARY KEY, applied_at bigint NOT NULL)",
    steps: &[|t| {
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
               id text COLLATE \"C\" PRIMARY KEY, \
               data bytea NOT NULL, \
               created_at bigint NOT NULL, \
               expires_at bigint NOT NULL); \
             CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);",
            table = t.sql(""),
            index = t.index("_expires"),
        )
    }],
};

/// What [`PostgresStore::with_table`] accepts, for its error.
const TABLE_RULE: &str = "[schema.]table, each a letter or '_' then letters, digits or '_', \
     the schema at most 63 and the table at most 56 characters";

/// The statements, with the table name filled in once.
struct Sql {
    table: Statements,
    clean: String,
    lock: String,
}

impl Sql {
    fn new(table: &Table) -> Self {
        let t = table.sql("");
        Sql {
            table: Statements::new(table, '$'),
            // Rows a save is writing right now are skipped, not waited for;
            // the next clean-up takes them if they are still expired.
            clean: format!(
                "DELETE FROM {t} WHERE id IN (\
                   SELECT id FROM {t} WHERE expires_at <= $1 \
                   LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
            // The subquery runs first (a volatile subquery is not flattened),
            // so the timeout is in force when the lock wait starts; `true`
            // scopes it to this statement's transaction.
            lock: "SELECT pg_advisory_lock($1) \
                   FROM (SELECT set_config('lock_timeout', $2, true)) AS t"
                .to_owned(),
        }
    }
}

/// FNV-1a, 64 bits: stable across builds and processes, unlike std's
/// hasher, so every instance derives the same lock keys.
fn fnv1a(prefix: &[u8], text: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.iter().chain(text) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
