//! The PostgreSQL store: sessions in one table, shared by any number of
//! server instances, locked with lease rows that hold no connection.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use server_sessions::{store::PostgresStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, server_sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
//! let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
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
//! use server_sessions::store::PostgresStore;
//!
//! # #[tokio::main] async fn main() -> Result<(), server_sessions::store::Error> {
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
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, Row};

use super::{check_size, decode, live_or_missing, timeout_column, to_sql_ms, user_column, Table};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::lease;
use crate::store::{
    BoxError, Error, Keep, LockGuard, LockWaits, SaveIf, SessionAdmin, SessionStore,
};
use crate::task::AbortOnDrop;
use crate::user::UserId;
use naming::Naming;
use statements::Sql;

mod admin;
mod conn;
mod listen;
mod locks;
mod migrate;
mod naming;
mod statements;

const DEFAULT_MAX_CONNECTIONS: usize = 16;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default lease: how long a lock outlives a holder that vanished.
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Renewals come every third of the lease; below this they would be busy.
const MIN_LEASE: Duration = Duration::from_millis(30);

/// Sessions in a PostgreSQL table, shared by every instance that uses it.
///
/// Cloning is cheap and shares the connection pool.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), server_sessions::store::Error> {
/// let store = server_sessions::store::PostgresStore::connect("postgres://postgres@127.0.0.1/app").await?;
/// # Ok(()) }
/// ```
///
/// # Design
///
/// - **Tables.** `<table> (id text PRIMARY KEY, data bytea, created_at
///   bigint, expires_at bigint, timeout_ms bigint, user_id text)`
///   (milliseconds since the epoch, UTC; `timeout_ms` a session's own idle
///   timeout, or null; `user_id` its user, the user index) with indexes on
///   `expires_at` and `user_id`, and `<table>_locks (id, owner, lease_expires,
///   waiters)` for the locks. Both keep CherryPy's column name `id`, but it
///   holds the session's [`StoreKey`] (64 hex characters), never the id
///   itself. [`PostgresStore::migrate`] creates or upgrades them in
///   numbered steps recorded in `<table>_schema`, inside one transaction
///   that holds an advisory lock, so instances starting together apply each
///   step once; a table of an older version keeps its sessions.
/// - **Lock.** A lease row, not a server session: a held lock costs no
///   connection while the handler runs, so a process serves as many
///   requests at once as it likes with a small pool. Tasks of one process
///   queue in memory first; the front one inserts the row (or takes over
///   one whose lease ran out) and reads the record in the same round trip,
///   one transaction. While held, the lease is renewed every third of its
///   length ([`with_lease`](PostgresStore::with_lease), default 10 s);
///   a holder that vanished frees its lock one lease later.
///   [`save_and_release`](crate::store::LockGuard::save_and_release) deletes the row and
///   writes the session in one statement, and writes nothing if the row was
///   no longer ours (the lease ran out and was taken): that save fails with
///   [`Error::Unavailable`] instead of overwriting another holder's work.
/// - **Wake-ups.** A waiter that finds the lock held by another process
///   marks the row; the holder's release then sends `NOTIFY` on a channel
///   of the table, with the session's key as payload, which one `LISTEN`
///   connection per store (opened on the first such wait, reconnecting by
///   itself) turns into a wake-up of this process's waiter. A missed
///   notification costs at most a backoff step.
/// - **PgBouncer.** Every step is one statement, so the store works
///   through PgBouncer in `pool_mode = transaction`. Statements are
///   prepared once per connection and their plans cached when the server
///   says it was reached at the address and port the store dials; through
///   a pooler (which the server sees at an address of its own) they are
///   sent unnamed with their parameter types, as a bouncer before 1.21,
///   or with `max_prepared_statements = 0`, may run the next transaction
///   on a server connection that lacks the statement — or has another of
///   its name. A prepared statement lost all the same turns preparing off
///   for good and is sent again unnamed: it had not run.
///   [`with_prepared_statements`](PostgresStore::with_prepared_statements)
///   decides it either way. `LISTEN` needs a session of its own, which
///   transaction pooling cannot give: behind PgBouncer point
///   [`with_listen_url`](PostgresStore::with_listen_url) at the server
///   itself, or waiters of different processes poll on the backoff.
/// - **Keeping.** By default ([`with_keep`](PostgresStore::with_keep)) a
///   process keeps a session's lease and the record it just saved or read
///   after the request, so that the session's next request here takes
///   neither: one round trip if it changes the session (the save, which
///   keeps the lease), none if it only reads it. A take that finds the
///   lock held sends `NOTIFY` with `w` and the key, and the keeping
///   process gives the session back (at once when idle, after the request
///   in flight otherwise); a session asked back is not kept for ten
///   seconds. Sessions are kept only while the `LISTEN` connection is up
///   and reaches the server directly (not through a pooler, which would
///   lose the notifications). A kept lease is used only while it surely
///   is still ours; deletes from outside a request
///   ([`end`](SessionStore::end)) take the lock first; an idle kept
///   session is released after [`Keep::idle`].
/// - **Saves** carry their precondition in SQL: a new session is inserted or
///   overwrites only an expired row, an existing one is updated only while
///   live; the affected-row count says whether it was written. Every instant
///   compared is this process's [`now_millis`](crate::store::now_millis).
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
    /// Where the `LISTEN` connection goes, if not to `pg`.
    listen: Option<tokio_postgres::Config>,
    table: Table,
    auto_migrate: bool,
    max_connections: usize,
    timeout: Duration,
    lease: Duration,
    /// What a process keeps of the sessions it used; `None`: nothing.
    keep: Option<Keep>,
    /// Whether statements are prepared and cached per connection: always,
    /// never, or (`None`) as `naming.rs` finds out.
    prepared: Option<bool>,
}

struct Inner {
    opts: Options,
    pool: Pool,
    sql: Sql,
    /// Whether statements are sent prepared or unnamed (`naming.rs`).
    naming: Naming,
    /// This process's lock waits; the listener wakes them.
    waits: Arc<LockWaits>,
    /// The `LISTEN` task, started at the first wait for a lock another
    /// process holds or the first session kept; aborted with the store.
    listener: OnceLock<AbortOnDrop>,
    /// Whether that task listens, on a connection straight to the server:
    /// sessions are kept only then.
    listening: Arc<AtomicBool>,
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
            .field("lease", &o.lease)
            .field("keep", &o.keep)
            .field("prepared", &o.prepared)
            .field("named", &self.inner.naming.named())
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
            listen: None,
            table: Table::default(),
            auto_migrate: true,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout: DEFAULT_TIMEOUT,
            lease: DEFAULT_LEASE,
            keep: Some(Keep::default()),
            prepared: None,
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

    /// The most connections the pool opens (default 16). A connection is
    /// taken for each statement, never for a held lock, so this bounds the
    /// statements in flight, not the requests. The `LISTEN` connection, if
    /// one is opened, comes on top.
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

    /// Sets the lock lease (default 10 s, at least 30 ms): how long a lock
    /// outlives a holder that vanished without releasing it. A live holder
    /// renews it every third of the lease, however long it holds the lock.
    pub fn with_lease(self, lease: Duration) -> Self {
        self.reconfigure(|o| o.lease = lease.max(MIN_LEASE))
    }

    /// Keeps sessions in this process between requests within `keep`'s
    /// bounds (the default, [`Keep::default`]), or with `None` releases
    /// every lock at the end of its request. See "Keeping" above.
    pub fn with_keep(self, keep: Option<Keep>) -> Self {
        self.reconfigure(|o| o.keep = keep)
    }

    /// Decides whether statements are prepared once per connection and
    /// their plans cached (`true`), or sent unnamed with their parameter
    /// types, parsed and planned each time (`false`).
    ///
    /// Unset (the default), they are prepared if the server says it was
    /// reached at the address and port the store dials, and unnamed
    /// otherwise: through a pooler, which reaches it at an address of its
    /// own — and also through a published container port or a Kubernetes
    /// service, where `true` gets them prepared again. A pooler in
    /// transaction mode before PgBouncer 1.21, or with its
    /// `max_prepared_statements = 0`, cannot keep a prepared statement from
    /// one transaction to the next, and its server connections may hold
    /// statements of the same name (`s0`, `s1`, … in every process) from
    /// other processes, which would run in place of ours. Should a prepared statement be lost all the same, the store
    /// sends statements unnamed from then on (logged once), the lost one
    /// again first.
    ///
    /// Set `true`, they stay prepared whatever the server answers: an error
    /// fails the operation and closes its connection.
    pub fn with_prepared_statements(self, on: bool) -> Self {
        self.reconfigure(|o| o.prepared = Some(on))
    }

    /// Opens the `LISTEN` connection, which wakes waiters when another
    /// process releases a lock, to `url` instead of the store's URL: the
    /// server itself when the store's URL goes through PgBouncer in
    /// transaction mode, which cannot keep a `LISTEN`.
    pub fn with_listen_url(self, url: &str) -> Result<Self, Error> {
        let listen: tokio_postgres::Config =
            url.parse().map_err(|e| Error::config("listen_url", e))?;
        Ok(self.reconfigure(|o| o.listen = Some(listen)))
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
        let naming = Naming::new(opts.prepared);
        PostgresStore {
            inner: Arc::new(Inner {
                opts,
                pool,
                sql,
                naming,
                waits: LockWaits::new(),
                listener: OnceLock::new(),
                listening: Arc::default(),
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
    /// The record in a row, or `None` (logged) if the row is damaged or has
    /// expired.
    fn record(&self, key: &StoreKey, row: &Row) -> Option<Record> {
        self.record_at(key, row, 0)
    }

    /// The record in a row's columns `at` to `at + 4` (`RECORD_COLUMNS`).
    fn record_at(&self, key: &StoreKey, row: &Row, at: usize) -> Option<Record> {
        let decoded = (|| -> Result<Record, BoxError> {
            decode(
                row.try_get(at)?,
                row.try_get(at + 1)?,
                row.try_get(at + 2)?,
                row.try_get(at + 3)?,
                row.try_get(at + 4)?,
            )
        })();
        live_or_missing(decoded, key, &self.opts.table)
    }
}
impl PostgresStore {
    /// The PostgreSQL store a config describes, not yet connected (as
    /// [`new`](Self::new)): its `storage_url`, `table`, `auto_migrate`,
    /// `postgres_prepared`, `postgres_listen_url` and the `keep_*` keys.
    /// [`store::open`](crate::store::open) builds it so for `storage_type =
    /// "postgres"` and then calls [`ready`](Self::ready).
    pub fn from_config(config: &crate::Config) -> Result<Self, crate::store::OpenError> {
        let storage = config.storage();
        let mut store = Self::new(crate::store::open::url(storage)?)?
            .with_table(&storage.table)?
            .with_auto_migrate(storage.auto_migrate)
            .with_keep(storage.keep);
        // Unset is the store's own default, auto: prepared only when the
        // server was reached at the address dialed (`postgres/naming.rs`).
        if let Some(on) = storage.postgres_prepared {
            store = store.with_prepared_statements(on);
        }
        match &storage.postgres_listen_url {
            Some(listen) => Ok(store.with_listen_url(listen.expose())?),
            None => Ok(store),
        }
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let inner = self.prepared().await?;
        let hex = key.as_hex();
        let hex: &str = &hex;
        let rows = inner
            .query(
                "postgres: load",
                &inner.sql.table.load,
                &[(&hex, Type::TEXT)],
            )
            .await?;
        Ok(rows.first().and_then(|row| inner.record(key, row)))
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        check_size(record)?;
        let inner = self.prepared().await?;
        let hex = key.as_hex();
        let hex: &str = &hex;
        let (created, expires) = (to_sql_ms(record.created), to_sql_ms(record.expires));
        let (now, timeout) = (to_sql_ms(now_millis()), timeout_column(record));
        let user = user_column(record);
        let n = inner
            .execute(
                "postgres: save",
                inner.sql.table.save(write),
                &[
                    (&hex, Type::TEXT),
                    (&record.data, Type::BYTEA),
                    (&created, Type::INT8),
                    (&expires, Type::INT8),
                    (&now, Type::INT8),
                    (&timeout, Type::INT8),
                    (&user, Type::TEXT),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn replace(
        &self,
        old: &StoreKey,
        key: &StoreKey,
        record: &Record,
    ) -> Result<bool, Error> {
        check_size(record)?;
        let inner = self.prepared().await?;
        let (hex, old) = (key.as_hex(), old.as_hex());
        let (hex, old): (&str, &str) = (&hex, &old);
        let (created, expires) = (to_sql_ms(record.created), to_sql_ms(record.expires));
        let (now, timeout) = (to_sql_ms(now_millis()), timeout_column(record));
        let user = user_column(record);
        // One statement, so one step: see `replace` in `sql/mod.rs`.
        let n = inner
            .execute(
                "postgres: save",
                &inner.sql.table.replace,
                &[
                    (&hex, Type::TEXT),
                    (&record.data, Type::BYTEA),
                    (&created, Type::INT8),
                    (&expires, Type::INT8),
                    (&now, Type::INT8),
                    (&timeout, Type::INT8),
                    (&user, Type::TEXT),
                    (&old, Type::TEXT),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        let inner = self.prepared().await?;
        let hex = key.as_hex();
        let hex: &str = &hex;
        let (expires, now) = (to_sql_ms(expires), to_sql_ms(now_millis()));
        let n = inner
            .execute(
                "postgres: touch",
                &inner.sql.table.touch,
                &[
                    (&hex, Type::TEXT),
                    (&expires, Type::INT8),
                    (&now, Type::INT8),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        let inner = self.prepared().await?;
        let hex = key.as_hex();
        let hex: &str = &hex;
        inner
            .execute(
                "postgres: delete",
                &inner.sql.table.delete,
                &[(&hex, Type::TEXT)],
            )
            .await?;
        Ok(())
    }

    async fn exists(&self, key: &StoreKey) -> Result<bool, Error> {
        let inner = self.prepared().await?;
        let hex = key.as_hex();
        let hex: &str = &hex;
        let now = to_sql_ms(now_millis());
        let rows = inner
            .query(
                "postgres: exists",
                &inner.sql.table.exists,
                &[(&hex, Type::TEXT), (&now, Type::INT8)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        lease::lock(self, key, wait, load).await
    }

    async fn end(&self, key: &StoreKey) -> Result<(), Error> {
        if self.inner.opts.keep.is_none() {
            return self.delete(key).await;
        }
        lease::end(self, key).await
    }

    async fn sessions_of(&self, user: &UserId) -> Result<Vec<(StoreKey, Record)>, Error> {
        let inner = self.prepared().await?;
        let (user, now) = (user.as_str(), to_sql_ms(now_millis()));
        let rows = inner
            .query(
                "postgres: sessions of a user",
                &inner.sql.table.sessions_of,
                &[(&user, Type::TEXT), (&now, Type::INT8)],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let key = StoreKey::from_bytes(row.try_get::<_, &str>(5).ok()?.as_bytes()).ok()?;
                Some((key, inner.record(&key, row)?))
            })
            .collect())
    }
}

/// What [`PostgresStore::with_table`] accepts, for its error.
const TABLE_RULE: &str = "[schema.]table, each a letter or '_' then letters, digits or '_', \
     the schema at most 63 and the table at most 56 characters";
