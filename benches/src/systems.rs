//! The systems under test and the stores they run on: one table says which
//! system runs on which store, and one function per system builds its app.
//!
//! Every app serves the same routes: `/` reads `counter`, adds one and
//! writes it back; `/slow` does the same but waits [`SLOW_HANDLER`] between
//! the read and the write, as a handler that calls another service does;
//! `/read` answers the counter without changing it.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use futures_util::{StreamExt, TryStreamExt};
use server_sessions::store::SessionAdmin;
use server_sessions::{Config, SessionConfig, SessionLayer, StorageConfig, StorageType};
use tower_sessions::{Expiry, SessionManagerLayer};
use tower_sessions_redis_store::fred;
use tower_sessions_redis_store::fred::interfaces::{ClientLike, KeysInterface};
use tower_sessions_sqlx_store::sqlx;

/// A backend that sessions are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Store {
    Ram,
    Redis,
    /// Redis Cluster: [`Env::redis_cluster_url`], or one the benchmark
    /// starts (3 masters on loopback).
    RedisCluster,
    Postgres,
    /// MySQL or MariaDB at `SESSIONS_BENCH_MYSQL_URL`.
    Mysql,
    File,
    Sqlite,
    /// memcached at `SESSIONS_BENCH_MEMCACHED` (default 127.0.0.1:11211).
    Memcached,
}

impl Store {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Store::Ram => "ram",
            Store::Redis => "redis",
            Store::RedisCluster => "redis-cluster",
            Store::Postgres => "postgres",
            Store::Mysql => "mysql",
            Store::File => "file",
            Store::Sqlite => "sqlite",
            Store::Memcached => "memcached",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Store> {
        STORES.iter().map(|r| r.store).find(|s| s.name() == name)
    }

    /// Whether two server processes can share it (a RAM store lives in one).
    pub(crate) fn shared_between_processes(self) -> bool {
        self != Store::Ram
    }
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    /// axum without sessions: the ceiling.
    Bare,
    /// This project.
    Ours,
    /// tower-sessions 0.14 with the store crates of its generation.
    TowerSessions,
    /// This project through actix-web (`server-sessions-actix`).
    OursActix,
    /// actix-session with its Redis store (on Redis) or its cookie store
    /// (on the `ram` row: nothing is kept on the server).
    ActixSession,
}

impl System {
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Bare => "bare axum",
            System::Ours => "sessions",
            System::TowerSessions => "tower-sessions",
            System::OursActix => "sessions actix",
            System::ActixSession => "actix-session",
        }
    }

    /// The spelling on the command line (`--systems`, and the
    /// subcommands the benchmark runs itself with).
    pub(crate) fn flag(self) -> &'static str {
        match self {
            System::Bare => "bare",
            System::Ours => "ours",
            System::TowerSessions => "tower-sessions",
            System::OursActix => "ours-actix",
            System::ActixSession => "actix-session",
        }
    }

    pub(crate) fn from_flag(flag: &str) -> Option<System> {
        match flag {
            "bare" => Some(System::Bare),
            "ours" | "sessions" => Some(System::Ours),
            "tower-sessions" => Some(System::TowerSessions),
            "ours-actix" => Some(System::OursActix),
            "actix-session" => Some(System::ActixSession),
            _ => None,
        }
    }
}

/// Which system runs on which store.
#[derive(Debug)]
pub(crate) struct StoreRow {
    pub(crate) store: Store,
    /// Our store, opened through `server_sessions::store::open` from a config.
    pub(crate) ours: bool,
    /// The tower-sessions store for it.
    pub(crate) tower_sessions: bool,
    /// Ours through actix-web, beside actix-session's store for it.
    pub(crate) actix: bool,
}

/// The stores, one line each. When one of our stores lands (and
/// `server_sessions::store::open` knows it), turning on its `ours` flag is all the
/// benchmark needs: the config for it (URL, directory, table) is already
/// made by [`our_config`], and its cargo feature is on in Cargo.toml.
#[rustfmt::skip]
pub(crate) const STORES: &[StoreRow] = &[
    // actix-session's stores are Redis and the cookie (run on the `ram` row).
    StoreRow { store: Store::Ram, ours: true, tower_sessions: true, actix: true },
    StoreRow { store: Store::Redis, ours: true, tower_sessions: true, actix: true },
    StoreRow { store: Store::RedisCluster, ours: true, tower_sessions: true, actix: false },
    StoreRow { store: Store::Postgres, ours: true, tower_sessions: true, actix: false },
    StoreRow { store: Store::Mysql, ours: true, tower_sessions: true, actix: false },
    StoreRow { store: Store::File, ours: true, tower_sessions: false, actix: false },
    StoreRow { store: Store::Sqlite, ours: true, tower_sessions: true, actix: false },
    // No tower-sessions store for memcached is published for 0.14.
    StoreRow { store: Store::Memcached, ours: true, tower_sessions: false, actix: false },
];

/// How long the `/slow` handler waits between reading and writing the
/// session.
pub(crate) const SLOW_HANDLER: Duration = Duration::from_millis(10);

/// Sessions of both systems idle out after this, so anything a clean-up
/// misses goes away by itself soon after the run.
pub(crate) const SESSION_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Where a Redis Cluster is, if the benchmark is not to start its own;
/// server processes are given the one it started the same way.
pub(crate) const REDIS_CLUSTER_URL_VAR: &str = "SESSIONS_BENCH_REDIS_CLUSTER_URL";

/// How long reaching a store may take before it counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the shared stores are, and the names this run uses in them.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) redis_url: String,
    /// The Cluster's node URLs, comma-separated (our `storage_url` form);
    /// `None` until the benchmark started one, if it was not given.
    pub(crate) redis_cluster_url: Option<String>,
    pub(crate) postgres_url: String,
    pub(crate) mysql_url: String,
    /// Unique to this run: a Redis key prefix, table names, directories.
    /// The server processes of the two-process workload are given it, so
    /// that they open the same stores.
    tag: String,
    file_dir: PathBuf,
    /// Where both systems' SQLite files are.
    sqlite_dir: PathBuf,
    /// Stores that could not be reached, with why.
    unreachable: HashMap<Store, String>,
    /// memcached's `host:port`.
    memcached: String,
}

impl Env {
    /// Reads the store locations (`SESSIONS_BENCH_REDIS_URL`,
    /// `SESSIONS_BENCH_POSTGRES_URL`, `SESSIONS_BENCH_MYSQL_URL`) and picks
    /// this run's names.
    pub(crate) fn new() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Env::with_tag(format!("{}_{}", std::process::id(), millis % 1_000_000_000))
    }

    /// The names of the run tagged `tag`: what a server process of the
    /// benchmark is started with.
    pub(crate) fn with_tag(tag: String) -> Self {
        Env {
            redis_url: std::env::var("SESSIONS_BENCH_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            redis_cluster_url: std::env::var(REDIS_CLUSTER_URL_VAR).ok(),
            postgres_url: std::env::var("SESSIONS_BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            mysql_url: std::env::var("SESSIONS_BENCH_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
            file_dir: std::env::temp_dir().join(format!("sessions-bench-{tag}")),
            sqlite_dir: std::env::temp_dir().join(format!("sessions-bench-{tag}-sqlite")),
            tag,
            unreachable: HashMap::new(),
            memcached: std::env::var("SESSIONS_BENCH_MEMCACHED")
                .unwrap_or_else(|_| "127.0.0.1:11211".into()),
        }
    }

    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// The `application_name` that `system`'s PostgreSQL connections in
    /// server `instance` carry, so that they can be counted in
    /// `pg_stat_activity`.
    pub(crate) fn application_name(&self, system: System, instance: &str) -> String {
        format!("sessions-bench_{}_{}_{instance}", self.tag, system.flag())
    }

    /// The PostgreSQL URL with that `application_name`.
    fn postgres_url_for(&self, system: System, instance: &str) -> String {
        let sep = if self.postgres_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}application_name={}",
            self.postgres_url,
            self.application_name(system, instance)
        )
    }

    fn sqlite_file(&self, system: System) -> PathBuf {
        self.sqlite_dir.join(format!("{}.db", system.flag()))
    }

    /// The URL of `store` (Redis or Redis Cluster) in our form.
    pub(crate) fn redis_url_of(&self, store: Store) -> String {
        match store {
            Store::RedisCluster => self.redis_cluster_url.clone().unwrap_or_default(),
            _ => self.redis_url.clone(),
        }
    }

    /// The same in fred's form: a Cluster is
    /// `redis-cluster://host:port?node=host:port&node=…`.
    fn fred_url_of(&self, store: Store) -> String {
        let url = self.redis_url_of(store);
        if store != Store::RedisCluster {
            return url;
        }
        let hosts: Vec<&str> = url
            .split(',')
            .map(|u| {
                u.trim()
                    .trim_start_matches("redis://")
                    .trim_end_matches('/')
            })
            .collect();
        let others: Vec<String> = hosts[1..].iter().map(|h| format!("node={h}")).collect();
        format!("redis-cluster://{}?{}", hosts[0], others.join("&"))
    }

    pub(crate) fn redis_prefix(&self) -> String {
        format!("sessions-bench:{}:", self.tag)
    }

    fn table(&self, system: System) -> String {
        match system {
            System::Ours => format!("bench_ours_{}", self.tag),
            _ => format!("bench_ts_{}", self.tag),
        }
    }

    /// Why `store` cannot be benchmarked, if it cannot.
    pub(crate) fn unreachable(&self, store: Store) -> Option<&str> {
        self.unreachable.get(&store).map(String::as_str)
    }

    /// Tries each shared store once; those that do not answer are skipped.
    /// Runs on the server runtime (connections spawn their tasks there).
    pub(crate) async fn probe(&mut self) {
        let urls = [
            (Store::Redis, Some(self.redis_url.clone())),
            (Store::RedisCluster, self.redis_cluster_url.clone()),
        ];
        for (store, url) in urls {
            let Some(url) = url else {
                self.unreachable.insert(
                    store,
                    format!("none given ({REDIS_CLUSTER_URL_VAR}) and none could be started"),
                );
                continue;
            };
            let redis = async {
                let store = server_sessions::store::RedisStore::connect(&url).await?;
                let id = server_sessions::SessionId::generate()?;
                server_sessions::store::SessionStore::exists(&store, &id.store_key()).await?;
                anyhow::Ok(())
            };
            if let Err(e) = within(redis).await {
                self.unreachable.insert(store, format!("{url}: {e:#}"));
            }
        }
        let postgres = async {
            let pool = postgres_pool(&self.postgres_url).await?;
            sqlx::query("select 1").execute(&pool).await?;
            pool.close().await;
            anyhow::Ok(())
        };
        if let Err(e) = within(postgres).await {
            self.unreachable
                .insert(Store::Postgres, format!("{}: {e:#}", self.postgres_url));
        }
        let mysql = async {
            let pool = mysql_pool(&self.mysql_url).await?;
            sqlx::query("select 1").execute(&pool).await?;
            pool.close().await;
            anyhow::Ok(())
        };
        if let Err(e) = within(mysql).await {
            self.unreachable
                .insert(Store::Mysql, format!("{}: {e:#}", self.mysql_url));
        }
        let servers = [self.memcached.as_str()];
        let memcached = server_sessions::store::MemcachedStore::connect(&servers);
        if let Err(e) = within(async { Ok(memcached.await?) }).await {
            self.unreachable
                .insert(Store::Memcached, format!("{}: {e:#}", self.memcached));
        }
    }

    /// Removes what this run left: the file store's directory and the
    /// SQLite files.
    pub(crate) fn remove_files(&self) {
        let _ = std::fs::remove_dir_all(&self.file_dir);
        let _ = std::fs::remove_dir_all(&self.sqlite_dir);
    }
}

async fn within<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(PROBE_TIMEOUT, f)
        .await
        .map_err(|_| anyhow!("no answer within {PROBE_TIMEOUT:?}"))?
}

pub(crate) async fn postgres_pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    Ok(sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(PROBE_TIMEOUT)
        .connect(url)
        .await?)
}

pub(crate) async fn mysql_pool(url: &str) -> anyhow::Result<sqlx::MySqlPool> {
    Ok(sqlx::mysql::MySqlPoolOptions::new()
        .acquire_timeout(PROBE_TIMEOUT)
        .connect(url)
        .await?)
}

/// An app ready to serve, and what to remove from its store afterwards.
pub(crate) struct App {
    pub(crate) server: Server,
    pub(crate) cleanup: Cleanup,
}

/// The framework an app is served with.
pub(crate) enum Server {
    Axum(Router),
    /// The routes (with their middleware) of an actix-web app; each worker
    /// builds its `App` from them.
    Actix(crate::actix::Routes),
}

impl Server {
    /// Serves on `listener` until the future is dropped (axum) or the
    /// process ends (actix-web's workers are threads of their own),
    /// actix-web with `threads` workers, as axum has runtime workers.
    pub(crate) async fn serve(self, listener: tokio::net::TcpListener, threads: usize) {
        match self {
            Server::Axum(router) => {
                let _ = axum::serve(listener, router).await;
            }
            Server::Actix(routes) => crate::actix::serve(routes, listener, threads).await,
        }
    }
}

/// What a system leaves in a shared store, removed after its runs.
pub(crate) enum Cleanup {
    Nothing,
    /// Our store: every session in it (the prefix, table or directory is
    /// this run's own), through the admin API that every store has.
    Ours(Arc<dyn SessionAdmin>, Store),
    /// tower-sessions' Redis keys are bare ids without a prefix: delete the
    /// ones the client was given (should one slip through, it idles out
    /// after [`SESSION_TIMEOUT`]).
    TowerRedis(fred::clients::Pool),
    /// tower-sessions' table, dropped.
    TowerPostgres(sqlx::PgPool, String),
    /// tower-sessions' MySQL table, dropped (in its own database,
    /// `tower_sessions`, which is left).
    TowerMysql(sqlx::MySqlPool, String),
    /// tower-sessions' SQLite table, dropped (the file goes at the end of
    /// the run).
    TowerSqlite(sqlx::SqlitePool, String),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Cleanup {
    /// Removes what the system stored. `cookies` are the `name=value`
    /// pairs the client was given.
    pub(crate) fn run<'a>(
        self,
        env: &'a Env,
        cookies: &'a [String],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            match self {
                Cleanup::Nothing => {}
                // Dropping the app drops a RAM store.
                Cleanup::Ours(_, Store::Ram) => {}
                // memcached cannot list its keys: the sessions handed out
                // are deleted by their ids (the rest expire by themselves).
                Cleanup::Ours(store, Store::Memcached) => {
                    let keys: Vec<server_sessions::store::StoreKey> = cookies
                        .iter()
                        .filter_map(|c| {
                            let id: server_sessions::SessionId =
                                c.split_once('=')?.1.parse().ok()?;
                            Some(id.store_key())
                        })
                        .collect();
                    futures_util::stream::iter(keys)
                        .map(|key| {
                            let store = &store;
                            async move { store.delete(&key).await }
                        })
                        .buffer_unordered(64)
                        .try_collect::<()>()
                        .await?;
                }
                Cleanup::Ours(store, kind) => {
                    let keys: Vec<_> = store.keys().try_collect().await?;
                    futures_util::stream::iter(keys)
                        .map(|key| {
                            let store = &store;
                            async move { store.delete(&key).await }
                        })
                        .buffer_unordered(64)
                        .try_collect::<()>()
                        .await?;
                    if kind == Store::Postgres {
                        let pool = postgres_pool(&env.postgres_url).await?;
                        let table = env.table(System::Ours);
                        // With its schema-version table, or the next run's
                        // migration would think the table is still there.
                        sqlx::raw_sql(&format!(
                            r#"drop table if exists "{table}"; drop table if exists "{table}_schema""#
                        ))
                        .execute(&pool)
                        .await?;
                    }
                    if kind == Store::Mysql {
                        let pool = mysql_pool(&env.mysql_url).await?;
                        let table = env.table(System::Ours);
                        sqlx::raw_sql(&format!(
                            "drop table if exists `{table}`, `{table}_schema`, `{table}_locks`"
                        ))
                        .execute(&pool)
                        .await?;
                        pool.close().await;
                    }
                }
                Cleanup::TowerRedis(pool) => {
                    let keys: Vec<String> = cookies
                        .iter()
                        .filter_map(|c| Some(c.split_once('=')?.1.to_string()))
                        .collect();
                    // One key per command: a Cluster refuses a DEL whose
                    // keys lie in different slots.
                    futures_util::stream::iter(keys)
                        .map(|key| {
                            let pool = &pool;
                            async move { pool.del::<i64, _>(key).await }
                        })
                        .buffer_unordered(64)
                        .try_collect::<Vec<_>>()
                        .await?;
                    pool.quit().await?;
                }
                Cleanup::TowerPostgres(pool, table) => {
                    sqlx::query(&format!(
                        r#"drop table if exists "tower_sessions"."{table}""#
                    ))
                    .execute(&pool)
                    .await?;
                    pool.close().await;
                }
                Cleanup::TowerMysql(pool, table) => {
                    sqlx::query(&format!("drop table if exists `tower_sessions`.`{table}`"))
                        .execute(&pool)
                        .await?;
                    pool.close().await;
                }
                Cleanup::TowerSqlite(pool, table) => {
                    sqlx::query(&format!(r#"drop table if exists "{table}""#))
                        .execute(&pool)
                        .await?;
                    pool.close().await;
                }
            }
            Ok(())
        })
    }
}

/// Builds `system`'s app on `store`, or says why it cannot run there.
/// Runs on the server runtime, so that store connections live there.
/// `instance` names the server in its PostgreSQL `application_name`.
pub(crate) async fn build(
    system: System,
    store: Store,
    env: &Env,
    instance: &str,
) -> anyhow::Result<App> {
    match system {
        System::Bare => Ok(App {
            server: Server::Axum(bare()),
            cleanup: Cleanup::Nothing,
        }),
        System::Ours => ours(store, env, instance).await,
        System::TowerSessions => tower(store, env, instance).await,
        System::OursActix => {
            let (layer, opened) = our_layer(store, env, instance).await?;
            Ok(App {
                server: Server::Actix(crate::actix::ours(layer)),
                cleanup: Cleanup::Ours(opened, store),
            })
        }
        System::ActixSession => crate::actix::actix_session(store, env).await,
    }
}

// --- bare axum ----------------------------------------------------------------

/// The counter without sessions: one process-wide atomic, the least a
/// counter can cost.
fn bare() -> Router {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    async fn count() -> String {
        (COUNTER.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }
    async fn slow() -> String {
        tokio::time::sleep(SLOW_HANDLER).await;
        count().await
    }
    async fn read() -> String {
        COUNTER.load(Ordering::Relaxed).to_string()
    }
    Router::new()
        .route("/", get(count))
        .route("/slow", get(slow))
        .route("/read", get(read))
}

// --- ours -----------------------------------------------------------------------

/// Read `counter`, add one, write it back.
async fn ours_count(session: server_sessions::Session) -> Result<String, server_sessions::Error> {
    let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
    session.insert("counter", n).await?;
    Ok(n.to_string())
}

async fn ours_slow(session: server_sessions::Session) -> Result<String, server_sessions::Error> {
    let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
    tokio::time::sleep(SLOW_HANDLER).await;
    session.insert("counter", n).await?;
    Ok(n.to_string())
}

async fn ours_read(session: server_sessions::Session) -> Result<String, server_sessions::Error> {
    let n: u64 = session.get("counter").await?.unwrap_or(0);
    Ok(n.to_string())
}

/// Our settings for `store`: the defaults (implicit locking) with this
/// run's own prefix, table or directory.
fn our_config(store: Store, env: &Env, instance: &str) -> SessionConfig {
    let mut storage = StorageConfig::default();
    // `SESSIONS_BENCH_KEEP=0`: nothing kept between requests (README,
    // "Keeping"), to see what keeping does to a workload.
    if std::env::var("SESSIONS_BENCH_KEEP").is_ok_and(|v| v == "0") {
        storage.keep = None;
    }
    match store {
        Store::Ram => storage.kind = StorageType::Ram,
        Store::Redis | Store::RedisCluster => {
            storage.kind = StorageType::Redis;
            storage.url = Some(env.redis_url_of(store).into());
            storage.redis_prefix = env.redis_prefix();
        }
        Store::Postgres => {
            storage.kind = StorageType::Postgres;
            storage.url = Some(env.postgres_url_for(System::Ours, instance).into());
            storage.table = env.table(System::Ours);
        }
        Store::Mysql => {
            storage.kind = StorageType::Mysql;
            storage.url = Some(env.mysql_url.clone().into());
            storage.table = env.table(System::Ours);
        }
        Store::File => {
            storage.kind = StorageType::File;
            storage.path = Some(env.file_dir.clone());
        }
        Store::Sqlite => {
            storage.kind = StorageType::Sqlite;
            storage.path = Some(env.sqlite_file(System::Ours));
            storage.table = env.table(System::Ours);
        }
        Store::Memcached => {
            storage.kind = StorageType::Memcached;
            storage.servers = vec![env.memcached.clone()];
            storage.memcached_prefix = env.redis_prefix();
        }
    }
    let mut config = SessionConfig::default();
    config.timeout = SESSION_TIMEOUT;
    config.storage = storage;
    // `SESSIONS_BENCH_PIPELINED=0`: a request waits for the save of the one
    // before it (README, "Pipelined saves").
    if std::env::var("SESSIONS_BENCH_PIPELINED").is_ok_and(|v| v == "0") {
        config.pipelined_saves = false;
    }
    config
}

async fn ours(store: Store, env: &Env, instance: &str) -> anyhow::Result<App> {
    let (layer, opened) = our_layer(store, env, instance).await?;
    let router = Router::new()
        .route("/", get(ours_count))
        .route("/slow", get(ours_slow))
        .route("/read", get(ours_read))
        .layer(layer);
    Ok(App {
        server: Server::Axum(router),
        cleanup: Cleanup::Ours(opened, store),
    })
}

/// Our store for `store`, opened, and the layer over it (any framework's).
async fn our_layer(
    store: Store,
    env: &Env,
    instance: &str,
) -> anyhow::Result<(SessionLayer, Arc<dyn SessionAdmin>)> {
    match store {
        Store::File => std::fs::create_dir_all(&env.file_dir)?,
        Store::Sqlite => std::fs::create_dir_all(&env.sqlite_dir)?,
        _ => {}
    }
    let config = Config::single(our_config(store, env, instance));
    let opened = server_sessions::store::open(&config)
        .await
        .with_context(|| format!("opening our {} store", store.name()))?;
    let layer = SessionLayer::from_arc(opened.clone()).with_file_config(config);
    Ok((layer, opened))
}

// --- tower-sessions -----------------------------------------------------------

async fn tower_count(session: tower_sessions::Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("counter")
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0)
        + 1;
    session
        .insert("counter", n)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(n.to_string())
}

async fn tower_slow(session: tower_sessions::Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("counter")
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0)
        + 1;
    tokio::time::sleep(SLOW_HANDLER).await;
    session
        .insert("counter", n)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(n.to_string())
}

async fn tower_read(session: tower_sessions::Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("counter")
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0);
    Ok(n.to_string())
}

/// tower-sessions as its documentation sets it up, with the same idle
/// timeout as ours.
fn tower_router<S>(store: S) -> Router
where
    S: tower_sessions::SessionStore + Clone,
{
    let expiry = Expiry::OnInactivity(time::Duration::seconds(SESSION_TIMEOUT.as_secs() as i64));
    Router::new()
        .route("/", get(tower_count))
        .route("/slow", get(tower_slow))
        .route("/read", get(tower_read))
        .layer(SessionManagerLayer::new(store).with_expiry(expiry))
}

async fn tower(store: Store, env: &Env, instance: &str) -> anyhow::Result<App> {
    match store {
        Store::Ram => Ok(App {
            server: Server::Axum(tower_router(tower_sessions::MemoryStore::default())),
            cleanup: Cleanup::Nothing,
        }),
        Store::Redis | Store::RedisCluster => {
            // As the crate's documentation does it: a pool of six.
            let config = fred::types::config::Config::from_url(&env.fred_url_of(store))?;
            let pool = fred::clients::Pool::new(config, None, None, None, 6)?;
            within(async {
                pool.init().await?;
                Ok(())
            })
            .await?;
            Ok(App {
                server: Server::Axum(tower_router(tower_sessions_redis_store::RedisStore::new(
                    pool.clone(),
                ))),
                cleanup: Cleanup::TowerRedis(pool),
            })
        }
        Store::Postgres => {
            let pool =
                postgres_pool(&env.postgres_url_for(System::TowerSessions, instance)).await?;
            let table = env.table(System::TowerSessions);
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool.clone())
                .with_table_name(&table)
                .map_err(|e| anyhow!(e))?;
            store.migrate().await?;
            Ok(App {
                server: Server::Axum(tower_router(store)),
                cleanup: Cleanup::TowerPostgres(pool, table),
            })
        }
        Store::Mysql => {
            let pool = mysql_pool(&env.mysql_url).await?;
            let table = env.table(System::TowerSessions);
            let store = tower_sessions_sqlx_store::MySqlStore::new(pool.clone())
                .with_table_name(&table)
                .map_err(|e| anyhow!(e))?;
            store.migrate().await?;
            Ok(App {
                server: Server::Axum(tower_router(store)),
                cleanup: Cleanup::TowerMysql(pool, table),
            })
        }
        Store::Sqlite => {
            std::fs::create_dir_all(&env.sqlite_dir)?;
            // The journal settings of our SQLite store (WAL, synchronous
            // NORMAL), so that the two differ in their session layer and
            // not in what a write costs on disk.
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(env.sqlite_file(System::TowerSessions))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .connect_with(options)
                .await?;
            let table = env.table(System::TowerSessions);
            let store = tower_sessions_sqlx_store::SqliteStore::new(pool.clone())
                .with_table_name(&table)
                .map_err(|e| anyhow!(e))?;
            store.migrate().await?;
            Ok(App {
                server: Server::Axum(tower_router(store)),
                cleanup: Cleanup::TowerSqlite(pool, table),
            })
        }
        Store::File => Err(anyhow!("tower-sessions has no file store")),
        Store::Memcached => Err(anyhow!("tower-sessions has no memcached store for 0.14")),
    }
}
