//! The PostgreSQL store: sessions in one table, shared by any number of
//! server instances, locked with lease rows that hold no connection.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sessions::{store::PostgresStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sessions::store::Error> {
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
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::Either;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::OnceCell;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::{
    check_size, decode, expired_row, in_batches, live_or_missing, timeout_column, to_sql_ms,
    user_column, Migrations, Page, Statements, Table, CLEAN_BATCH, KEYS_PAGE, RECORD_COLUMNS,
};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::lease::{self, LeaseBackend, Released, Taken};
use crate::store::{
    BoxError, Error, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionStore,
};
use crate::task::AbortOnDrop;
use crate::user::UserId;
use naming::Naming;

mod naming;

const DEFAULT_MAX_CONNECTIONS: usize = 16;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a migration may wait for another instance's migration.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default lease: how long a lock outlives a holder that vanished.
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Renewals come every third of the lease; below this they would be busy.
const MIN_LEASE: Duration = Duration::from_millis(30);
/// How long the listener waits before connecting again after losing its
/// connection; waiters poll on the backoff meanwhile.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

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
    /// Where the `LISTEN` connection goes, if not to `pg`.
    listen: Option<tokio_postgres::Config>,
    table: Table,
    auto_migrate: bool,
    max_connections: usize,
    timeout: Duration,
    lease: Duration,
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
    /// process holds; aborted with the store.
    listener: OnceLock<AbortOnDrop>,
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

/// The lease statements, for the rules in `sql/lease.rs`.
#[async_trait]
impl LeaseBackend for PostgresStore {
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
        let inner = self.prepared().await?;
        let hex = key.as_hex();
        let hex: &str = &hex;
        let (until, now) = (to_sql_ms(until), to_sql_ms(now_millis()));
        let params: [(&(dyn ToSql + Sync), Type); 4] = [
            (&hex, Type::TEXT),
            (&owner, Type::TEXT),
            (&until, Type::INT8),
            (&now, Type::INT8),
        ];
        let sql = match load {
            true => &inner.sql.take_and_load,
            false => &inner.sql.take,
        };
        let rows = inner.query("postgres: lock", sql, &params).await?;
        let row = rows.first();
        let ours = row
            .map(|row| row.try_get::<_, bool>(0))
            .transpose()
            .map_err(|e| Error::unavailable("postgres: lock", e))?
            .unwrap_or(false);
        if !ours {
            return Ok(Taken::Busy);
        }
        // Without a session row the read's columns are NULL.
        let record = match (load, row) {
            (true, Some(row)) if row.try_get::<_, Option<&[u8]>>(2).ok().flatten().is_some() => {
                inner.record_at(key, row, 2)
            }
            _ => None,
        };
        Ok(Taken::Ours(record))
    }

    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error> {
        let hex = key.as_hex();
        let hex: &str = &hex;
        let until = to_sql_ms(until);
        let rows = self
            .inner
            .query(
                "postgres: renew lock",
                &self.inner.sql.renew,
                &[
                    (&hex, Type::TEXT),
                    (&owner, Type::TEXT),
                    (&until, Type::INT8),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error> {
        let hex = key.as_hex();
        let hex: &str = &hex;
        let channel: &str = &self.inner.sql.channel;
        self.inner
            .query(
                "postgres: unlock",
                &self.inner.sql.release,
                &[
                    (&hex, Type::TEXT),
                    (&owner, Type::TEXT),
                    (&channel, Type::TEXT),
                ],
            )
            .await?;
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
        let sql = match only {
            SaveIf::Absent => &self.inner.sql.insert_and_keep,
            SaveIf::Live => &self.inner.sql.update_and_keep,
        };
        let until = to_sql_ms(until);
        self.save_under_lease(sql, key, owner, record, (&until, Type::INT8))
            .await
    }

    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error> {
        let sql = match only {
            SaveIf::Absent => &self.inner.sql.insert_and_release,
            SaveIf::Live => &self.inner.sql.update_and_release,
        };
        let channel: &str = &self.inner.sql.channel;
        self.save_under_lease(sql, key, owner, record, (&channel, Type::TEXT))
            .await
    }
}

impl PostgresStore {
    /// Runs one of the statements that save under the lease, whose `$7` is
    /// `last` (the channel, or the lease's new end).
    async fn save_under_lease(
        &self,
        sql: &str,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        last: (&(dyn ToSql + Sync), Type),
    ) -> Result<Released, Error> {
        let hex = key.as_hex();
        let hex: &str = &hex;
        let (created, expires) = (to_sql_ms(record.created), to_sql_ms(record.expires));
        let (now, timeout) = (to_sql_ms(now_millis()), timeout_column(record));
        let user = user_column(record);
        let rows = self
            .inner
            .query(
                "postgres: save",
                sql,
                &[
                    (&hex, Type::TEXT),
                    (&record.data, Type::BYTEA),
                    (&created, Type::INT8),
                    (&expires, Type::INT8),
                    (&now, Type::INT8),
                    (&owner, Type::TEXT),
                    last,
                    (&timeout, Type::INT8),
                    (&user, Type::TEXT),
                ],
            )
            .await?;
        let counts = rows
            .first()
            .map(|row| {
                Ok::<_, tokio_postgres::Error>((
                    row.try_get::<_, i64>(0)?,
                    row.try_get::<_, i64>(1)?,
                ))
            })
            .transpose()
            .map_err(|e| Error::unavailable("postgres: save", e))?;
        Ok(match counts {
            Some((1, written)) => Released::Saved(written == 1),
            _ => Released::Lost,
        })
    }
}

impl PostgresStore {
    /// Takes the session's lease, reading the record with it if `load`.
    async fn take_lease(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(lease::Lease<PostgresStore>, Option<Record>), Error> {
        let inner = self.prepared().await?;
        lease::acquire(
            self,
            &inner.waits,
            inner.opts.lease,
            key,
            wait,
            load,
            || self.listen(),
        )
        .await
    }

    /// Starts the `LISTEN` task once, at the first wait for a lock that
    /// another process holds: a store that never meets one never opens the
    /// extra connection.
    fn listen(&self) {
        let inner = &self.inner;
        inner.listener.get_or_init(|| {
            let mut pg = inner
                .opts
                .listen
                .clone()
                .unwrap_or_else(|| inner.opts.pg.clone());
            if pg.get_connect_timeout().is_none() {
                pg.connect_timeout(inner.opts.timeout);
            }
            if pg.get_application_name().is_none() {
                pg.application_name("sessions-listen");
            }
            let task = tokio::spawn(listen(
                pg,
                inner.sql.channel.clone(),
                Arc::downgrade(&inner.waits),
            ));
            AbortOnDrop(task.abort_handle())
        });
    }
}

/// Holds one `LISTEN` connection and wakes this process's waiter for each
/// key another process released (the payload); connects again after a
/// loss. Ends when the store (its waits) is gone.
async fn listen(pg: tokio_postgres::Config, channel: String, waits: Weak<LockWaits>) {
    loop {
        match pg.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let waits = waits.clone();
                // The connection delivers notifications only while it is
                // polled for them, so it is driven here, not spawned away.
                let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let wake = messages.for_each(|message| {
                    if let Ok(AsyncMessage::Notification(n)) = message {
                        if let (Some(waits), Ok(key)) = (waits.upgrade(), n.payload().parse()) {
                            waits.wake(&key);
                        }
                    }
                    async {}
                });
                let listen = format!("LISTEN {channel}");
                let subscribe = client.batch_execute(&listen);
                futures_util::pin_mut!(subscribe, wake);
                match futures_util::future::select(subscribe, wake).await {
                    // Subscribed: deliver until the connection ends.
                    Either::Left((Ok(()), wake)) => wake.await,
                    Either::Left((Err(error), _)) => {
                        tracing::warn!(%error, "session lock wake-ups unavailable; waiters poll")
                    }
                    Either::Right(((), _)) => {}
                }
            }
            Err(error) => {
                tracing::debug!(%error, "session lock listener cannot connect; waiters poll")
            }
        }
        if waits.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(LISTEN_RETRY).await;
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

    /// Runs one statement on a pooled connection (`naming.rs`: prepared or
    /// unnamed) and returns its rows.
    async fn query(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        Ok(self.run(context, sql, params).await?.0)
    }

    /// Runs one statement as [`query`](Self::query) does and returns how
    /// many rows it changed.
    async fn execute(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, Error> {
        Ok(self.run(context, sql, params).await?.1)
    }

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
                tx.query_typed("SELECT pg_advisory_xact_lock($1)", &[(&key, Type::INT8)])
                    .await?;
                tx.batch_execute(&MIGRATIONS.create_bookkeeping(table))
                    .await?;
                let current: Option<i32> = match tx
                    .query_typed(&MIGRATIONS.read_version(table), &[])
                    .await?
                    .first()
                {
                    Some(row) => row.try_get(0)?,
                    None => None,
                };
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
}

impl PostgresStore {
    /// The PostgreSQL store a config describes, not yet connected (as
    /// [`new`](Self::new)): its `storage_url`, `table`, `auto_migrate`,
    /// `postgres_prepared` and `postgres_listen_url`.
    /// [`store::open`](crate::store::open) builds it so for `storage_type =
    /// "postgres"` and then calls [`ready`](Self::ready).
    pub fn from_config(config: &crate::Config) -> Result<Self, crate::store::OpenError> {
        let storage = config.storage();
        let mut store = Self::new(crate::store::open::url(storage)?)?
            .with_table(&storage.table)?
            .with_auto_migrate(storage.auto_migrate);
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
        let (lease, record) = self.take_lease(key, wait, load).await?;
        Ok((LockGuard::new(lease), record))
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

#[async_trait]
impl SessionAdmin for PostgresStore {
    async fn count(&self) -> Result<u64, Error> {
        let inner = self.prepared().await?;
        let now = to_sql_ms(now_millis());
        let rows = inner
            .query(
                "postgres: count",
                &inner.sql.table.count,
                &[(&now, Type::INT8)],
            )
            .await?;
        let n: i64 = match rows.first() {
            Some(row) => row
                .try_get(0)
                .map_err(|e| Error::unavailable("postgres: count", e))?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        super::keys(move |after| self.keys_page(after))
    }

    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error> {
        let inner = self.prepared().await?;
        let now = to_sql_ms(now_millis());
        // One short statement per batch, each on a connection taken afresh,
        // so a large backlog neither holds row locks for long nor keeps a
        // connection from the requests. Locks are rows of their own table:
        // deleting an expired session never frees or breaks a held lock,
        // and a request that still holds one finds its row gone and does
        // not save (the `Live` precondition). Lock rows whose lease ran out
        // are taken over anyway; removing them only keeps the table small.
        let params: [(&(dyn ToSql + Sync), Type); 2] =
            [(&now, Type::INT8), (&CLEAN_BATCH, Type::INT8)];
        let removed = in_batches(|| async {
            let rows = inner
                .query("postgres: clean-up", &inner.sql.clean, &params)
                .await?;
            for row in &rows {
                let (id, user) = (row.try_get(0).ok(), row.try_get(1).ok().flatten());
                if let Some((key, user)) = expired_row(id, user) {
                    expired(key, user);
                }
            }
            Ok(rows.len() as u64)
        })
        .await?;
        in_batches(|| inner.execute("postgres: clean-up", &inner.sql.clean_locks, &params)).await?;
        Ok(removed)
    }
}

impl PostgresStore {
    /// One page of live keys after `after`.
    async fn keys_page(&self, after: String) -> Result<Page, Error> {
        let inner = self.prepared().await?;
        let now = to_sql_ms(now_millis());
        let after: &str = &after;
        let rows = inner
            .query(
                "postgres: list",
                &inner.sql.table.keys,
                &[
                    (&after, Type::TEXT),
                    (&now, Type::INT8),
                    (&KEYS_PAGE, Type::INT8),
                ],
            )
            .await?;
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

/// The database did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer from PostgreSQL within {0:?}")]
struct TimedOut(Duration);

/// A pooled connection that goes back to the pool only when the code using
/// it says so with [`release`](Conn::release). Dropped otherwise — after an
/// error, a timeout or a cancelled future — it is closed instead: it may be
/// mid-answer or inside a transaction, and closing it makes the server roll
/// that back.
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

/// The table's schema history. Append only: a released step is never
/// edited.
const MIGRATIONS: Migrations = Migrations {
    bookkeeping: "(version integer PRIMARY KEY, applied_at bigint NOT NULL)",
    steps: &[
        |t| {
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
        },
        |t| {
            // Version 2: locks are lease rows instead of advisory locks, which
            // held a pooled connection for a whole request.
            format!(
                "CREATE TABLE IF NOT EXISTS {locks} (\
               id text COLLATE \"C\" PRIMARY KEY, \
               owner text NOT NULL, \
               lease_expires bigint NOT NULL, \
               waiters boolean NOT NULL DEFAULT false)",
                locks = t.sql("_locks"),
            )
        },
        // Version 3: a session's own idle timeout (`Session::set_timeout`).
        |t| {
            format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS timeout_ms bigint",
                t.sql("")
            )
        },
        // Version 4: the user a session belongs to, indexed: the user index.
        |t| {
            format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS user_id text; \
                 CREATE INDEX IF NOT EXISTS {index} ON {table} (user_id) \
                 WHERE user_id IS NOT NULL;",
                table = t.sql(""),
                index = t.index("_user"),
            )
        },
    ],
};

/// What [`PostgresStore::with_table`] accepts, for its error.
const TABLE_RULE: &str = "[schema.]table, each a letter or '_' then letters, digits or '_', \
     the schema at most 63 and the table at most 56 characters";

/// The statements, with the table name filled in once.
struct Sql {
    table: Statements,
    clean: String,
    clean_locks: String,
    take: String,
    take_and_load: String,
    renew: String,
    release: String,
    insert_and_release: String,
    update_and_release: String,
    insert_and_keep: String,
    update_and_keep: String,
    /// The `NOTIFY` channel of this table's lock releases.
    channel: String,
}

impl Sql {
    fn new(table: &Table) -> Self {
        let t = table.sql("");
        let l = table.sql("_locks");
        // A released lock row stays, its lease ended, for the next take to
        // reuse: an update of a row in place instead of a delete and an
        // insert (and their index entries) per request. Clean-up removes
        // the rows of sessions no longer used. `waiters` is left as it was,
        // for the release to see whether to notify; a take resets it.
        // The owner goes too, so that a renewal already on its way when the
        // lease was released finds nothing to extend.
        let release = format!("UPDATE {l} SET lease_expires = 0, owner = ''");
        // A save under the lease: the lease step (`held`: our lock row
        // released, or kept with a new end) and the write are one
        // statement, and the write happens only if the lease step found our
        // row. Both counts come back: lock rows (0: the lease was lost) and
        // rows written. Releasing a lock someone waits for tells them in the
        // same transaction (a notification is sent at commit). `$1` is the
        // key, `$6` the owner, `$7` the channel or the lease's new end.
        let released =
            format!("held AS ({release} WHERE id = $1 AND owner = $6 RETURNING waiters)");
        let kept = format!(
            "held AS (UPDATE {l} SET lease_expires = $7 WHERE id = $1 AND owner = $6 \
             RETURNING waiters)"
        );
        let insert = format!(
            "written AS (\
               INSERT INTO {t} AS s (id, data, created_at, expires_at, timeout_ms, user_id) \
               SELECT $1, $2, $3, $4, $8, $9 WHERE EXISTS (SELECT 1 FROM held) \
               ON CONFLICT (id) DO UPDATE \
               SET data = excluded.data, created_at = excluded.created_at, \
                   expires_at = excluded.expires_at, timeout_ms = excluded.timeout_ms, \
                   user_id = excluded.user_id \
               WHERE s.expires_at <= $5 RETURNING 1)"
        );
        let update = format!(
            "written AS (\
               UPDATE {t} SET data = $2, created_at = $3, expires_at = $4, timeout_ms = $8, \
                 user_id = $9 \
               WHERE id = $1 AND expires_at > $5 AND EXISTS (SELECT 1 FROM held) \
               RETURNING 1)"
        );
        let counts = "SELECT (SELECT count(*) FROM held), (SELECT count(*) FROM written)";
        // Taken when there is no row or its lease ran out; otherwise the row
        // records that someone waits, so that its release notifies. Every
        // right-hand side sees the row as it was. One row comes back either
        // way: whether the lease is now ours.
        let taken = format!(
            "taken AS (\
               INSERT INTO {l} AS l (id, owner, lease_expires) VALUES ($1, $2, $3) \
               ON CONFLICT (id) DO UPDATE SET \
                 owner = CASE WHEN l.lease_expires <= $4 THEN excluded.owner ELSE l.owner END, \
                 lease_expires = CASE WHEN l.lease_expires <= $4 \
                   THEN excluded.lease_expires ELSE l.lease_expires END, \
                 waiters = l.lease_expires > $4 \
               RETURNING owner = $2 AS ours)"
        );
        // Only the lock row changes in a take, so its commit need not wait
        // for a WAL flush: should the server crash before the flush, the
        // row is simply gone after recovery — as if the lease had run out —
        // and the save that would release it finds it gone and writes
        // nothing. (`true`: for this statement's transaction only.)
        let async_commit = "set_config('synchronous_commit', 'off', true)";
        let notify = "(SELECT count(pg_notify($7, $1)) FROM held WHERE waiters)";
        Sql {
            table: Statements::new(table, '$'),
            // Rows a save is writing right now are skipped, not waited for;
            // the next clean-up takes them if they are still expired.
            clean: format!(
                "DELETE FROM {t} WHERE id IN (\
                   SELECT id FROM {t} WHERE expires_at <= $1 \
                   LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, user_id"
            ),
            clean_locks: format!(
                "DELETE FROM {l} WHERE id IN (\
                   SELECT id FROM {l} WHERE lease_expires <= $1 \
                   LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
            take: format!("WITH {taken} SELECT ours, {async_commit} FROM taken"),
            // The read locks the session row (`FOR NO KEY UPDATE`), which
            // makes it return the row as last committed, not as of the
            // statement's start: a take that had to wait for the previous
            // holder's save-and-release (which deletes the lock row and
            // writes the session in one transaction) reads what that save
            // wrote. A plain read would see the version from before it, and
            // the next save would overwrite an update. The row lock ends
            // with the statement.
            take_and_load: format!(
                "WITH {taken} \
                 SELECT taken.ours, {async_commit}, s.data, s.created_at, s.expires_at, \
                   s.timeout_ms, s.user_id \
                 FROM taken LEFT JOIN LATERAL (\
                   SELECT {RECORD_COLUMNS} FROM {t} \
                   WHERE id = $1 AND taken.ours FOR NO KEY UPDATE) AS s ON true"
            ),
            // A lock-only write: see `async_commit` for why it need not be
            // flushed.
            renew: format!(
                "UPDATE {l} SET lease_expires = $3 \
                 FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
                 WHERE id = $1 AND owner = $2 RETURNING 1"
            ),
            release: format!(
                "WITH released AS ({release} WHERE id = $1 AND owner = $2 RETURNING waiters) \
                 SELECT set_config('synchronous_commit', 'off', true), \
                   (SELECT count(pg_notify($3, $1)) FROM released WHERE waiters)"
            ),
            insert_and_release: format!("WITH {released}, {insert} {counts}, {notify}"),
            update_and_release: format!("WITH {released}, {update} {counts}, {notify}"),
            insert_and_keep: format!("WITH {kept}, {insert} {counts}"),
            update_and_keep: format!("WITH {kept}, {update} {counts}"),
            channel: format!(
                "sessions_{:016x}",
                fnv1a(b"sessions-lock:", table.text().as_bytes())
            ),
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
