//! The one way a test gets a store: a fresh, empty store of each kind on
//! the servers CI runs (Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379/`; PostgreSQL at `SESSIONS_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`; MySQL or MariaDB at
//! `SESSIONS_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`)
//! or in a directory of
//! its own, and [`stores!`](crate::stores), which runs a scenario once per
//! kind. A server that cannot be reached skips the test outside CI and
//! fails it under `CI=true` ([`ci::skip`](super::ci::skip)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use server_sessions::store::{
    self, FileStore, LockGuard, MemcachedStore, MemoryStore, MysqlStore, PostgresStore, RedisStore,
    SaveIf, SessionAdmin, SessionStore, SqliteStore,
};
use server_sessions::store::{Millis, Record, StoreKey};

use super::ci::skip;
use super::temp::{unique_prefix, unique_table, TempDir};

/// One `#[tokio::test]` per scenario and store: `stores!(a, b)` makes
/// `ram::a`, `redis::a`, `postgres::a`, `sqlite::a`, `file::a`,
/// `memcached::a`, `mysql::a` and the same for `b`, each calling `a(&Fixture)` of the invoking module on a fresh
/// store of that kind, then checking that nothing logged so far carries a
/// full session id (the library must never log one, whatever it is doing).
/// Run one store's scenarios with `cargo test -p server-sessions --test integration redis::`.
#[macro_export]
macro_rules! stores {
    ($($scenario:ident),* $(,)?) => {
        $crate::stores!(@kind ram, Ram, $($scenario),*);
        $crate::stores!(@kind redis, Redis, $($scenario),*);
        $crate::stores!(@kind postgres, Postgres, $($scenario),*);
        $crate::stores!(@kind sqlite, Sqlite, $($scenario),*);
        $crate::stores!(@kind file, File, $($scenario),*);
        $crate::stores!(@kind memcached, Memcached, $($scenario),*);
        $crate::stores!(@kind mysql, Mysql, $($scenario),*);
    };
    (@kind $module:ident, $kind:ident, $($scenario:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    use $crate::stores::{Fixture, Kind};
                    if let Some(fixture) = Fixture::new(Kind::$kind).await {
                        super::$scenario(&fixture).await;
                        fixture.clean().await;
                        $crate::logs::assert_no_full_ids();
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
    Memcached,
    Mysql,
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
    /// The PostgreSQL or MySQL table, and a plain connection to look at it.
    pub table: Option<String>,
    pub admin: Option<tokio_postgres::Client>,
    pub mysql: Option<mysql_async::Pool>,
    /// The Redis (or memcached) key prefix.
    pub prefix: Option<String>,
    /// The RAM store itself (`store` is it too), to look inside.
    pub ram: Option<MemoryStore>,
}

impl Fixture {
    /// `None` (skip) when the kind's server is unreachable outside CI.
    pub async fn new(kind: Kind) -> Option<Fixture> {
        super::logs::install();
        let ram = MemoryStore::new();
        let mut fixture = Fixture {
            kind,
            store: Arc::new(ram.clone()),
            ram: Some(ram),
            dir: None,
            table: None,
            admin: None,
            mysql: None,
            prefix: None,
        };
        match kind {
            Kind::Ram => {}
            _ => fixture.ram = None,
        }
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
            Kind::Memcached => {
                let prefix = unique_prefix();
                fixture.store = Arc::new(memcached(&prefix).await?);
                fixture.prefix = Some(prefix);
            }
            Kind::Mysql => {
                let admin = mysql_admin().await?;
                let table = unique_table();
                fixture.store = Arc::new(mysql(&table).await);
                fixture.table = Some(table);
                fixture.mysql = Some(admin);
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
        if let (Some(pool), Some(table)) = (&self.mysql, &self.table) {
            mysql_drop_table(pool, table).await;
        }
    }

    /// The live sessions memcached holds under the fixture's prefix (it
    /// lists items it has not dropped yet, expired or not).
    async fn memcached_sessions(&self) -> Vec<StoreKey> {
        let prefix = self.prefix.as_deref().unwrap_or_default();
        let mut live = Vec::new();
        for name in memcached_keys(prefix).await {
            let Some(Ok(key)) = name.strip_prefix(prefix).map(str::parse::<StoreKey>) else {
                continue;
            };
            if matches!(self.store.load(&key).await, Ok(Some(_))) {
                live.push(key);
            }
        }
        live
    }

    /// Runs `sql` on the fixture's MySQL server behind the store's back
    /// (`{t}` is its table, quoted), and returns its rows' first columns
    /// as text and how many rows it found.
    pub async fn mysql_run(
        &self,
        sql: &str,
        params: Vec<mysql_async::Value>,
    ) -> (Vec<String>, u64) {
        use mysql_async::prelude::Queryable;
        let table = format!("`{}`", self.table.as_ref().unwrap());
        let sql = sql.replace("{t}", &table);
        let mut conn = self.mysql.as_ref().unwrap().get_conn().await.unwrap();
        let mut result = conn.exec_iter(sql, params).await.unwrap();
        let n = result.affected_rows();
        let rows: Vec<mysql_async::Row> = result.collect().await.unwrap();
        let text = rows
            .into_iter()
            .map(|row| match row.as_ref(0) {
                Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(v) => v.as_sql(true),
                None => String::new(),
            })
            .collect();
        (text, n)
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
    async fn end(&self, key: &StoreKey) -> Result<(), store::Error> {
        self.store.end(key).await
    }
    async fn exists(&self, key: &StoreKey) -> Result<bool, store::Error> {
        self.store.exists(key).await
    }
    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), store::Error> {
        self.store.acquire(key, wait, load).await
    }
    async fn sessions_of(
        &self,
        user: &server_sessions::UserId,
    ) -> Result<Vec<(StoreKey, Record)>, store::Error> {
        self.store.sessions_of(user).await
    }
    fn expirations(&self) -> Option<BoxStream<'static, StoreKey>> {
        self.store.expirations()
    }
}

#[async_trait]
impl SessionAdmin for Fixture {
    /// For memcached, which cannot list its keys, the tests count what the
    /// server itself lists (`lru_crawler metadump`): the live sessions
    /// under the fixture's prefix.
    async fn count(&self) -> Result<u64, store::Error> {
        if self.kind != Kind::Memcached {
            return self.store.count().await;
        }
        Ok(self.memcached_sessions().await.len() as u64)
    }
    fn keys(&self) -> BoxStream<'_, Result<StoreKey, store::Error>> {
        if self.kind == Kind::Memcached {
            return futures_util::stream::once(self.memcached_sessions())
                .flat_map(|keys| futures_util::stream::iter(keys.into_iter().map(Ok)))
                .boxed();
        }
        self.store.keys()
    }
    async fn clean_up_and_report(
        &self,
        expired: server_sessions::store::OnExpired<'_>,
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

// ---- memcached -----------------------------------------------------------------

/// The memcached server CI runs (`SESSIONS_TEST_MEMCACHED`, default
/// `127.0.0.1:11211`).
pub fn memcached_addr() -> String {
    std::env::var("SESSIONS_TEST_MEMCACHED").unwrap_or_else(|_| "127.0.0.1:11211".to_owned())
}

/// A store on the shared server under `prefix`, or `None` (skip).
pub async fn memcached(prefix: &str) -> Option<MemcachedStore> {
    match MemcachedStore::connect(&[memcached_addr()]).await {
        Ok(store) => Some(store.with_prefix(prefix).unwrap()),
        Err(e) => skip(format!(
            "memcached at {} is unreachable: {e}",
            memcached_addr()
        )),
    }
}

/// One text command to the shared memcached server and everything it
/// answers up to `until` (a line that ends the reply, e.g. `END`), to look
/// behind a store's back.
pub async fn memcached_raw(command: &str, until: &[&str]) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(memcached_addr())
        .await
        .unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    stream
        .get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap() == 0 {
            return out;
        }
        let done = until.contains(&line.trim_end());
        out.push_str(&line);
        if done {
            return out;
        }
    }
}

/// The value memcached holds at `key`, read behind the store's back.
pub async fn memcached_value(key: &str) -> Option<Vec<u8>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(memcached_addr())
        .await
        .unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    let request = format!("mg {key} v\r\n");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut head = String::new();
    stream.read_line(&mut head).await.unwrap();
    let len: usize = head.strip_prefix("VA ")?.trim().parse().unwrap();
    let mut value = vec![0; len + 2];
    stream.read_exact(&mut value).await.unwrap();
    value.truncate(len);
    Some(value)
}

/// Writes `value` at `key` for `secs` seconds, behind the store's back.
pub async fn memcached_set(key: &str, value: &[u8], secs: u64) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(memcached_addr())
        .await
        .unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    let mut request = format!("ms {key} {} T{secs}\r\n", value.len()).into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
    stream.get_mut().write_all(&request).await.unwrap();
    let mut reply = String::new();
    stream.read_line(&mut reply).await.unwrap();
    assert_eq!(reply, "HD\r\n");
}

/// Every key the shared memcached server holds under `prefix`
/// (`lru_crawler metadump`, which lists keys URL-encoded).
pub async fn memcached_keys(prefix: &str) -> Vec<String> {
    memcached_raw("lru_crawler metadump all", &["END", "ERROR"])
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("key="))
        .map(|l| percent_decoded(l.split(' ').next().unwrap()))
        .filter(|k| k.starts_with(prefix))
        .collect()
}

/// `%XX` escapes undone (metadump's keys).
fn percent_decoded(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).unwrap());
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap()
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

// ---- MySQL / MariaDB ------------------------------------------------------------

pub fn mysql_url() -> String {
    std::env::var("SESSIONS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A plain pool for setting up and inspecting, or `None` (skip). The
/// first one in a process also drops the tables that runs which ended long
/// ago left behind.
pub async fn mysql_admin() -> Option<mysql_async::Pool> {
    use mysql_async::prelude::Queryable;
    let pool = mysql_async::Pool::new(mysql_url().as_str());
    let conn = tokio::time::timeout(Duration::from_secs(3), pool.get_conn()).await;
    let mut conn = match conn {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return skip(format!("mysql at {} is unreachable: {e}", mysql_url())),
        Err(_) => return skip(format!("mysql at {} does not answer", mysql_url())),
    };
    static DONE: AtomicBool = AtomicBool::new(false);
    if !DONE.swap(true, Ordering::SeqCst) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let names: Vec<String> = conn
            .query(
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name LIKE 'test\\_%'",
            )
            .await
            .unwrap();
        for name in names {
            let secs = name.split('_').nth(1).and_then(|s| s.parse::<u64>().ok());
            if secs.is_some_and(|s| s + STALE_SECS < now) {
                let _ = conn
                    .query_drop(format!("DROP TABLE IF EXISTS `{name}`"))
                    .await;
            }
        }
    }
    Some(pool)
}

/// A store on `table` of the shared server, not yet connected.
pub fn mysql_store(table: &str) -> MysqlStore {
    MysqlStore::new(&mysql_url())
        .unwrap()
        .with_table(table)
        .unwrap()
}

/// A ready store on `table` of the shared server (made if need be).
pub async fn mysql(table: &str) -> MysqlStore {
    let store = mysql_store(table);
    store.ready().await.unwrap();
    store
}

/// Drops `table` and its schema and lock tables.
pub async fn mysql_drop_table(pool: &mysql_async::Pool, table: &str) {
    use mysql_async::prelude::Queryable;
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS `{table}`, `{table}_schema`, `{table}_locks`"
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
