//! The one way a test gets a store: a fresh, empty store of each kind on
//! the servers CI runs (Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379/`; PostgreSQL at `SESSIONS_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`) or in a directory of
//! its own, and [`stores!`](crate::stores), which runs a scenario once per
//! kind. A server that cannot be reached skips the test outside CI and
//! fails it under `CI=true` ([`ci::skip`](super::ci::skip)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sessions::store::{
    self, FileStore, LockGuard, MemoryStore, PostgresStore, RedisStore, SaveIf, SessionAdmin,
    SessionStore, SqliteStore,
};
use sessions::{Millis, Record, StoreKey};

use super::ci::skip;
use super::temp::{unique_prefix, unique_table, TempDir};

/// One `#[tokio::test]` per scenario and store: `stores!(a, b)` makes
/// `ram::a`, `redis::a`, `postgres::a`, `sqlite::a`, `file::a` and the same
/// for `b`, each calling `a(&Fixture)` of the invoking module on a fresh
/// store of that kind, then checking that nothing logged so far carries a
/// full session id (the library must never log one, whatever it is doing).
/// Run one store's scenarios with `cargo test -p sessions --test NAME redis::`.
#[macro_export]
macro_rules! stores {
    ($($scenario:ident),* $(,)?) => {
        $crate::stores!(@kind ram, Ram, $($scenario),*);
        $crate::stores!(@kind redis, Redis, $($scenario),*);
        $crate::stores!(@kind postgres, Postgres, $($scenario),*);
        $crate::stores!(@kind sqlite, Sqlite, $($scenario),*);
        $crate::stores!(@kind file, File, $($scenario),*);
    };
    (@kind $module:ident, $kind:ident, $($scenario:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    use $crate::common::stores::{Fixture, Kind};
                    if let Some(fixture) = Fixture::new(Kind::$kind).await {
                        super::$scenario(&fixture).await;
                        fixture.clean().await;
                        $crate::common::logs::assert_no_full_ids();
                    }
                }
            )*
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ram,
    Redis,
    Postgres,
    Sqlite,
    File,
}

/// A fresh, empty store of one kind, and what to remove afterwards. It is
/// itself a store (it passes every call on), so the conformance suite can
/// take it as it is.
#[derive(Debug)]
pub struct Fixture {
    pub kind: Kind,
    /// Dropped before `dir`, which goes with everything in it.
    pub store: Arc<dyn SessionAdmin>,
    /// The SQLite database's and the file store's directory: `sessions.db`
    /// or `sessions` in it.
    pub dir: Option<TempDir>,
    /// The PostgreSQL table, and a plain connection to look at it.
    pub table: Option<String>,
    pub admin: Option<tokio_postgres::Client>,
    /// The Redis key prefix.
    pub prefix: Option<String>,
}

impl Fixture {
    /// `None` (skip) when the kind's server is unreachable outside CI.
    pub async fn new(kind: Kind) -> Option<Fixture> {
        super::logs::install();
        let mut fixture = Fixture {
            kind,
            store: Arc::new(MemoryStore::new()),
            dir: None,
            table: None,
            admin: None,
            prefix: None,
        };
        match kind {
            Kind::Ram => {}
            Kind::Redis => {
                let prefix = unique_prefix();
                fixture.store = Arc::new(redis(&prefix).await?);
                fixture.prefix = Some(prefix);
            }
            Kind::Postgres => {
                let admin = postgres_admin().await?;
                let table = unique_table();
                fixture.store = Arc::new(postgres(&table).await);
                fixture.table = Some(table);
                fixture.admin = Some(admin);
            }
            Kind::File => {
                let dir = TempDir::new("file");
                fixture.store = Arc::new(FileStore::open(dir.path().join("sessions")).unwrap());
                fixture.dir = Some(dir);
            }
            Kind::Sqlite => {
                let dir = TempDir::new("sqlite");
                fixture.store = Arc::new(sqlite(&dir).await);
                fixture.dir = Some(dir);
            }
        }
        Some(fixture)
    }

    /// Removes what the store left on its server: the Redis keys, the
    /// table. (The directory goes when the fixture is dropped; a fixture
    /// never cleaned leaves keys that expire and a table the sweep of
    /// [`postgres_admin`] drops later.)
    pub async fn clean(self) {
        if self.kind == Kind::Redis {
            let keys: Vec<_> = self.store.keys().collect().await;
            for key in keys.into_iter().flatten() {
                let _ = self.store.delete(&key).await;
            }
        }
        if let (Some(admin), Some(table)) = (&self.admin, &self.table) {
            drop_table(admin, table).await;
        }
    }

    /// Whether the store holds a live record for the session `id`.
    pub async fn holds(&self, id: &str) -> bool {
        let key = super::records::key_of(id);
        self.store.load(&key).await.unwrap().is_some()
    }

    /// The data of the session `id` as the store has it.
    pub async fn data(&self, id: &str) -> Option<serde_json::Value> {
        let key = super::records::key_of(id);
        let record = self.store.load(&key).await.unwrap()?;
        Some(serde_json::from_slice(&record.data).unwrap())
    }
}

#[async_trait]
impl SessionStore for Fixture {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, store::Error> {
        self.store.load(key).await
    }
    async fn save(&self, key: &StoreKey, r: &Record, w: SaveIf) -> Result<bool, store::Error> {
        self.store.save(key, r, w).await
    }
    async fn touch(&self, key: &StoreKey, e: Millis) -> Result<bool, store::Error> {
        self.store.touch(key, e).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), store::Error> {
        self.store.delete(key).await
    }
    async fn exists(&self, key: &StoreKey) -> Result<bool, store::Error> {
        self.store.exists(key).await
    }
    async fn lock(&self, key: &StoreKey, wait: Duration) -> Result<LockGuard, store::Error> {
        self.store.lock(key, wait).await
    }
    async fn lock_and_load(
        &self,
        key: &StoreKey,
        wait: Duration,
    ) -> Result<(LockGuard, Option<Record>), store::Error> {
        self.store.lock_and_load(key, wait).await
    }
    async fn save_and_unlock(
        &self,
        key: &StoreKey,
        r: &Record,
        w: SaveIf,
        guard: LockGuard,
    ) -> Result<bool, store::Error> {
        self.store.save_and_unlock(key, r, w, guard).await
    }
    async fn sessions_of(
        &self,
        user: &sessions::UserId,
    ) -> Result<Vec<(StoreKey, Record)>, store::Error> {
        self.store.sessions_of(user).await
    }
}

#[async_trait]
impl SessionAdmin for Fixture {
    async fn count(&self) -> Result<u64, store::Error> {
        self.store.count().await
    }
    fn keys(&self) -> BoxStream<'_, Result<StoreKey, store::Error>> {
        self.store.keys()
    }
    async fn clean_up_and_report(
        &self,
        expired: sessions::store::OnExpired<'_>,
    ) -> Result<u64, store::Error> {
        self.store.clean_up_and_report(expired).await
    }
}

// ---- Redis -------------------------------------------------------------------

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A store on the shared server under `prefix`, or `None` (skip).
pub async fn redis(prefix: &str) -> Option<RedisStore> {
    match RedisStore::connect(&redis_url()).await {
        Ok(store) => Some(store.with_prefix(prefix)),
        Err(e) => skip(format!("redis at {} is unreachable: {e}", redis_url())),
    }
}

/// A plain connection to the shared server, to look at and tamper with
/// keys behind a store's back.
pub async fn redis_raw() -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The Redis key of `id`'s data under `prefix`.
pub fn redis_data_key(prefix: &str, key: &StoreKey) -> String {
    format!("{prefix}{{{key}}}")
}

/// The Redis key of `id`'s lock under `prefix`.
pub fn redis_lock_key(prefix: &str, key: &StoreKey) -> String {
    format!("{prefix}{{{key}}}:lock")
}

// ---- PostgreSQL ----------------------------------------------------------------

/// Tables of earlier runs older than this are dropped.
const STALE_SECS: u64 = 15 * 60;

pub fn postgres_url() -> String {
    std::env::var("SESSIONS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A plain client for setting up and inspecting, or `None` (skip). The
/// first one in a process also drops the tables that runs which ended long
/// ago left behind.
pub async fn postgres_admin() -> Option<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = postgres_url().parse().expect("test URL");
    config.connect_timeout(Duration::from_secs(3));
    match config.connect(tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            drop_stale_tables(&client).await;
            Some(client)
        }
        Err(e) => skip(format!(
            "postgres at {} is unreachable: {e}",
            postgres_url()
        )),
    }
}

/// Drops the `test_<unix seconds>_…` tables older than [`STALE_SECS`]
/// (once per process).
async fn drop_stale_tables(client: &tokio_postgres::Client) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name LIKE 'test\\_%'",
            &[],
        )
        .await
        .unwrap();
    for row in rows {
        let name: String = row.get(0);
        let secs = name.split('_').nth(1).and_then(|s| s.parse::<u64>().ok());
        if secs.is_some_and(|s| s + STALE_SECS < now) {
            let _ = client
                .batch_execute(&format!("DROP TABLE IF EXISTS \"{name}\""))
                .await;
        }
    }
}

/// A store on `table` of the shared server, not yet connected: for the
/// tests that set more options before it is used.
pub fn postgres_store(table: &str) -> PostgresStore {
    PostgresStore::new(&postgres_url())
        .unwrap()
        .with_table(table)
        .unwrap()
}

/// A ready store on `table` of the shared server (made if need be).
pub async fn postgres(table: &str) -> PostgresStore {
    let store = postgres_store(table);
    store.ready().await.unwrap();
    store
}

/// Drops `table` and its schema and lock tables.
pub async fn drop_table(client: &tokio_postgres::Client, table: &str) {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS \"{table}\"; DROP TABLE IF EXISTS \"{table}_schema\"; \
             DROP TABLE IF EXISTS \"{table}_locks\""
        ))
        .await
        .unwrap();
}

// ---- SQLite ----------------------------------------------------------------------

/// A store on `sessions.db` in `dir`.
pub async fn sqlite(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("sessions.db"))
        .await
        .unwrap()
}

/// An error and its sources, as a log line shows them.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
