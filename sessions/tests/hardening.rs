//! Issue 8, end to end: hostile ids and cookies, forged expiry, the
//! absolute timeout, replayed cookies, the size limit, save races, floods
//! and what the logs say — each scenario against every store, over real
//! sockets (the floods of 100,000 requests go through the router in
//! process, `tower::ServiceExt::oneshot`, to stay fast).
//!
//! `stores!` expands every scenario into one test per store: `ram`,
//! `redis` (a key prefix of its own), `postgres` (a table
//! `test_<unix seconds>_<random>`, dropped afterwards or by the sweeper of
//! `store_postgres.rs`) and `sqlite` (a file in a directory of its own).
//! A store test skips only when its server is unreachable and `CI` is not
//! `"true"`.
//!
//! Run one store's scenarios with `cargo test -p sessions --test hardening redis::`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use common::{serve, Client};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sessions::store::{self, LockGuard, MemoryStore, SaveIf, SessionAdmin, SessionStore};
use sessions::{Locking, Millis, Record, Session, SessionConfig, SessionId, SessionLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------
// The stores
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ram,
    Redis,
    Postgres,
    Sqlite,
    File,
}

/// A fresh, empty store of one kind, and what to remove afterwards.
struct Fixture {
    kind: Kind,
    store: Arc<dyn SessionAdmin>,
    /// The SQLite database's directory.
    dir: Option<PathBuf>,
    /// The PostgreSQL table.
    table: Option<String>,
    /// The Redis key prefix.
    prefix: Option<String>,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `None` (skip) when a store's server is unreachable outside CI; a
/// failure under `CI=true`.
fn unreachable<T>(what: &str, e: impl std::fmt::Display) -> Option<T> {
    assert!(!in_ci(), "CI=true and {what} is unreachable: {e}");
    eprintln!("skipping: {what} is unreachable: {e}");
    None
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn postgres_url() -> String {
    std::env::var("SESSIONS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn random_hex(n: usize) -> String {
    SessionId::generate().unwrap().to_string()[..n].to_owned()
}

impl Fixture {
    async fn new(kind: Kind) -> Option<Fixture> {
        logs::install();
        let mut fixture = Fixture {
            kind,
            store: Arc::new(MemoryStore::new()),
            dir: None,
            table: None,
            prefix: None,
        };
        match kind {
            Kind::Ram => {}
            Kind::Redis => {
                let store = match store::RedisStore::connect(&redis_url()).await {
                    Ok(s) => s,
                    Err(e) => return unreachable(&format!("redis at {}", redis_url()), e),
                };
                let prefix = format!("test:hard:{}:", random_hex(12));
                fixture.store = Arc::new(store.with_prefix(prefix.clone()));
                fixture.prefix = Some(prefix);
            }
            Kind::Postgres => {
                let mut config: tokio_postgres::Config = postgres_url().parse().unwrap();
                config.connect_timeout(Duration::from_secs(3));
                if let Err(e) = config.connect(tokio_postgres::NoTls).await {
                    return unreachable(&format!("postgres at {}", postgres_url()), e);
                }
                // The sweeper of store_postgres.rs drops `test_<secs>_…`
                // tables a while after their time, should this test fail
                // before dropping its own.
                let table = format!("test_{}_{}", unix_secs(), random_hex(10));
                let store = store::PostgresStore::new(&postgres_url())
                    .unwrap()
                    .with_table(&table)
                    .unwrap();
                store.ready().await.unwrap();
                fixture.store = Arc::new(store);
                fixture.table = Some(table);
            }
            Kind::File => {
                let dir = std::env::temp_dir().join(format!(
                    "sessions-test-file-{}-hard-{}",
                    std::process::id(),
                    random_hex(12)
                ));
                fixture.store = Arc::new(store::FileStore::open(dir.join("sessions")).unwrap());
                fixture.dir = Some(dir);
            }
            Kind::Sqlite => {
                // The directory store_sqlite.rs sweeps of stale leftovers.
                let dir = std::env::temp_dir()
                    .join("sessions-test-sqlite")
                    .join(format!("{}-hard-{}", std::process::id(), random_hex(12)));
                std::fs::create_dir_all(&dir).unwrap();
                let store = store::SqliteStore::open(dir.join("sessions.db"))
                    .await
                    .unwrap();
                fixture.store = Arc::new(store);
                fixture.dir = Some(dir);
            }
        }
        Some(fixture)
    }

    /// Removes what the store left: keys, the table, the directory.
    async fn clean(self) {
        if self.kind == Kind::Redis {
            let ids: Vec<_> = self.store.ids().collect().await;
            for id in ids.into_iter().flatten() {
                let _ = self.store.delete(&id).await;
            }
        }
        drop(self.store);
        if let Some(table) = self.table {
            if let Ok((client, conn)) = postgres_url()
                .parse::<tokio_postgres::Config>()
                .unwrap()
                .connect(tokio_postgres::NoTls)
                .await
            {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!(
                        "DROP TABLE IF EXISTS \"{table}\"; DROP TABLE IF EXISTS \"{table}_schema\""
                    ))
                    .await;
            }
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Whether the store holds a live record under `id`.
    async fn holds(&self, id: &str) -> bool {
        let id: SessionId = id.parse().unwrap();
        self.store.load(&id).await.unwrap().is_some()
    }

    /// The session's data as the store has it.
    async fn data(&self, id: &str) -> Option<serde_json::Value> {
        let id: SessionId = id.parse().unwrap();
        let record = self.store.load(&id).await.unwrap()?;
        Some(serde_json::from_slice(&record.data).unwrap())
    }
}

/// One `#[tokio::test]` per scenario and store.
macro_rules! stores {
    ($($scenario:ident),* $(,)?) => {
        stores!(@kind ram, Ram, $($scenario),*);
        stores!(@kind redis, Redis, $($scenario),*);
        stores!(@kind postgres, Postgres, $($scenario),*);
        stores!(@kind sqlite, Sqlite, $($scenario),*);
        stores!(@kind file, File, $($scenario),*);
    };
    (@kind $module:ident, $kind:ident, $($scenario:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(fixture) = crate::Fixture::new(crate::Kind::$kind).await {
                        crate::$scenario(&fixture).await;
                        fixture.clean().await;
                    }
                }
            )*
        }
    };
}

stores!(
    hostile_ids_and_cookies_get_a_fresh_session,
    raw_control_bytes_never_reach_a_store,
    cookie_injection_is_never_echoed,
    forged_far_future_expiry_is_ignored,
    absolute_timeout_ends_a_busy_session,
    replay_after_logout_idle_or_absolute_timeout_opens_nothing,
    oversized_session_is_refused_and_old_data_kept,
    save_never_resurrects_deleted_regenerated_or_expired,
    parallel_requests_during_regenerate_lose_nothing,
    release_lock_then_end_save_overwrites_nothing,
    flood_of_untouched_requests_stores_nothing,
    flood_of_new_sessions_is_reclaimed_by_clean_up,
    logs_never_carry_a_full_session_id,
);

// ---------------------------------------------------------------------------
// A store wrapper that records every id it is given, and can be switched off
// ---------------------------------------------------------------------------

/// Wraps a store: records which operation saw which id, and fails every
/// call while `down` is set.
#[derive(Debug, Clone)]
struct Watched {
    inner: Arc<dyn SessionAdmin>,
    seen: Arc<Mutex<Vec<(&'static str, SessionId)>>>,
    calls: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

impl Watched {
    fn new(inner: Arc<dyn SessionAdmin>) -> Self {
        Watched {
            inner,
            seen: Arc::default(),
            calls: Arc::default(),
            down: Arc::default(),
        }
    }

    fn note(&self, op: &'static str, id: &SessionId) -> Result<(), store::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push((op, *id));
        if self.down.load(Ordering::SeqCst) {
            return Err(store::Error::unavailable(
                "test store",
                std::io::Error::other("switched off"),
            ));
        }
        Ok(())
    }

    /// The ids the store was asked about, by operation.
    fn ids(&self, op: &str) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, id)| id.to_string())
            .collect()
    }

    /// Waits until the store was asked to `op` on `id` (a request reached
    /// its store call), at most five seconds.
    async fn wait_for(&self, op: &str, id: &str) {
        for _ in 0..500 {
            if self.ids(op).contains(id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {op} of the session within 5 s");
    }

    fn all_ids(&self) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(_, id)| id.to_string()).collect()
    }
}

#[async_trait]
impl SessionStore for Watched {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>, store::Error> {
        self.note("load", id)?;
        self.inner.load(id).await
    }
    async fn save(&self, id: &SessionId, r: &Record, w: SaveIf) -> Result<bool, store::Error> {
        self.note(if w == SaveIf::Absent { "new" } else { "save" }, id)?;
        self.inner.save(id, r, w).await
    }
    async fn touch(&self, id: &SessionId, e: Millis) -> Result<bool, store::Error> {
        self.note("touch", id)?;
        self.inner.touch(id, e).await
    }
    async fn delete(&self, id: &SessionId) -> Result<(), store::Error> {
        self.note("delete", id)?;
        self.inner.delete(id).await
    }
    async fn exists(&self, id: &SessionId) -> Result<bool, store::Error> {
        self.note("load", id)?;
        self.inner.exists(id).await
    }
    async fn lock(&self, id: &SessionId, wait: Duration) -> Result<LockGuard, store::Error> {
        self.note("lock", id)?;
        self.inner.lock(id, wait).await
    }
    async fn lock_and_load(
        &self,
        id: &SessionId,
        wait: Duration,
    ) -> Result<(LockGuard, Option<Record>), store::Error> {
        self.note("lock", id)?;
        self.note("load", id)?;
        self.inner.lock_and_load(id, wait).await
    }
    async fn save_and_unlock(
        &self,
        id: &SessionId,
        r: &Record,
        w: SaveIf,
        guard: LockGuard,
    ) -> Result<bool, store::Error> {
        self.note(if w == SaveIf::Absent { "new" } else { "save" }, id)?;
        self.inner.save_and_unlock(id, r, w, guard).await
    }
}

#[async_trait]
impl SessionAdmin for Watched {
    async fn count(&self) -> Result<u64, store::Error> {
        self.inner.count().await
    }
    fn ids(&self) -> BoxStream<'_, Result<SessionId, store::Error>> {
        self.inner.ids()
    }
    async fn clean_up(&self) -> Result<u64, store::Error> {
        self.inner.clean_up().await
    }
}

// ---------------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------------

#[derive(serde::Deserialize, Default)]
struct Params {
    key: Option<String>,
    len: Option<usize>,
    ms: Option<u64>,
    then: Option<String>,
}

type Answer = Result<String, sessions::Error>;

/// `missing n`: the counter after this request, and whether the session
/// was new because the client's id was not (or no longer) one.
async fn count(s: Session, Query(p): Query<Params>) -> Answer {
    let missing = s.missing().await?;
    let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
    if let Some(ms) = p.ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    s.insert("n", n).await?;
    Ok(format!("{missing} {n}"))
}

fn app_routes(config: SessionConfig, store: impl SessionAdmin) -> Router {
    Router::new()
        .route("/plain", get(|| async { "no session here" }))
        .route("/count", get(count))
        .route(
            "/missing",
            get(|s: Session| async move {
                Ok::<_, sessions::Error>(format!(
                    "{} {}",
                    s.missing().await?,
                    s.original_id().is_some()
                ))
            }),
        )
        .route(
            "/data",
            get(|s: Session| async move { Ok::<_, sessions::Error>(s.to_json().await?.to_string()) }),
        )
        .route(
            "/put",
            get(|s: Session, Query(p): Query<Params>| async move {
                let key = p.key.unwrap_or_default();
                s.insert(&key, "x".repeat(p.len.unwrap_or(1))).await?;
                Ok::<_, sessions::Error>("stored")
            }),
        )
        .route(
            "/slow-put",
            get(|s: Session, Query(p): Query<Params>| async move {
                s.load().await?;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                s.insert(&p.key.unwrap_or_default(), true).await?;
                Ok::<_, sessions::Error>("written")
            }),
        )
        .route(
            "/regen",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, sessions::Error>("logged in")
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.delete().await?;
                s.expire().await?;
                Ok::<_, sessions::Error>("done")
            }),
        )
        .route(
            // Log in, then let other requests of the visitor through while
            // this one carries on.
            "/regen-release",
            get(|s: Session, Query(p): Query<Params>| async move {
                s.regenerate().await?;
                s.release_lock().await?;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                Ok::<_, sessions::Error>(format!("{}", s.get::<u64>("n").await?.unwrap_or(0)))
            }),
        )
        .route(
            // Explicit locking, CherryPy issue 1027's pattern: change under
            // the lock, release it, then keep working on the session.
            "/explicit",
            get(|s: Session, Query(p): Query<Params>| async move {
                let key = p.key.unwrap_or_default();
                s.acquire_lock().await?;
                s.insert(&key, true).await?;
                s.release_lock().await?;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                match p.then.as_deref() {
                    Some("read") => {
                        s.get::<bool>(&key).await?;
                    }
                    Some("write") => s.insert(&format!("{key}_after"), true).await?,
                    _ => {}
                }
                Ok::<_, sessions::Error>("ok")
            }),
        )
        .layer(SessionLayer::new(store).with_config(config))
}

/// The app on a real socket, over the fixture's store.
async fn serve_app(f: &Fixture, config: SessionConfig) -> SocketAddr {
    serve(app_routes(config, f.store.clone())).await
}

fn config() -> SessionConfig {
    let mut c = SessionConfig::default();
    // Clean-up is run by the tests that want it, not in the background.
    c.storage.clean_freq = Duration::ZERO;
    c
}

/// Checks a `Set-Cookie` against the config: `name=<40 hex>`, then exactly
/// the configured attributes and nothing from the request. Returns the id.
fn checked_cookie(set_cookie: &str, config: &SessionConfig) -> String {
    let (first, rest) = set_cookie.split_once("; ").expect("attributes");
    let (name, id) = first.split_once('=').expect("name=value");
    assert_eq!(name, config.name, "{set_cookie}");
    assert!(id.parse::<SessionId>().is_ok(), "not an id: {set_cookie}");
    let mut attrs: Vec<&str> = rest.split("; ").collect();
    if config.persistent {
        let expires = attrs.remove(0);
        assert!(
            expires.starts_with("Expires=") && expires.ends_with(" GMT"),
            "{set_cookie}"
        );
        let max_age: u64 = attrs.remove(0)["Max-Age=".len()..].parse().unwrap();
        assert!(
            max_age <= config.timeout.as_secs() + 1,
            "Max-Age beyond the timeout: {set_cookie}"
        );
    }
    let mut expected = vec![format!("Path={}", config.path)];
    expected.extend(config.domain.iter().map(|d| format!("Domain={d}")));
    if config.secure {
        expected.push("Secure".into());
    }
    if config.httponly {
        expected.push("HttpOnly".into());
    }
    if let Some(same_site) = config.samesite {
        expected.push(format!("SameSite={same_site:?}"));
    }
    assert_eq!(attrs, expected, "{set_cookie}");
    id.to_owned()
}

fn cookie(id: &str) -> String {
    format!("session_id={id}")
}

/// Starts a session with `n` = 1 and returns its id.
async fn start_session(addr: SocketAddr) -> String {
    let r = Client::new(addr).get_with("/count", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "false 1"), "{r:?}");
    r.cookie_value().unwrap()
}

/// Sends raw bytes as one HTTP/1.1 exchange and returns the status and the
/// `Set-Cookie` headers (the status is 0 if the server closed without one).
async fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, Vec<String>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything (431, 400).
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let cookies = head
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().to_owned())
        })
        .collect();
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
    (status, cookies, body)
}

fn raw_get(path: &str, cookie_lines: &[&[u8]]) -> Vec<u8> {
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n").into_bytes();
    for c in cookie_lines {
        req.extend_from_slice(b"Cookie: ");
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

// ---------------------------------------------------------------------------
// Hostile ids and cookies
// ---------------------------------------------------------------------------

/// Ids of every hostile shape a client can send through an ordinary HTTP
/// client: each gets a fresh session under a new id — never its own, never
/// echoed — no 5xx, and the store never sees anything but ids the server
/// drew. A canary directory shows that nothing is written next to the
/// store on a path-shaped id.
async fn hostile_ids_and_cookies_get_a_fresh_session(f: &Fixture) {
    let watched = Watched::new(f.store.clone());
    let config = config();
    let addr = serve(app_routes(config.clone(), watched.clone())).await;
    let client = Client::new(addr);
    let live = start_session(addr).await;
    let canary = std::env::temp_dir().join(format!("sessions-canary-{}", random_hex(12)));
    std::fs::create_dir(&canary).unwrap();
    let canary_path = canary.display().to_string();
    let percent: String = live.bytes().map(|b| format!("%{b:02X}")).collect();
    let hostile: Vec<String> = vec![
        "../../../../../../etc/passwd".into(),
        format!("../../../../../../..{canary_path}/owned"),
        format!("{canary_path}/owned"),
        "..%2F..%2F..%2Fetc%2Fpasswd".into(),
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(),
        // The live id percent-encoded: not the id, and never decoded to it.
        percent,
        format!("{}%00", &live[..37]),
        format!("{live}%00"),
        format!("{live}%0d%0aSet-Cookie:%20evil=1"),
        live.to_uppercase(),
        format!("{live}0"),
        live[..39].to_owned(),
        format!(" {}", &live[1..]),
        format!("\"{live}"),
        "session:{*}".into(),
        "*".into(),
        "' OR '1'='1".into(),
        "1; DROP TABLE sessions; --".into(),
        "$(touch /tmp/owned)".into(),
        "KEYS *\r\n".replace("\r\n", ""),
        "é".repeat(20),
        "\u{0430}".repeat(40), // Cyrillic a: looks like hex, is not
        "ａ".repeat(40),       // fullwidth
        "a".repeat(10_240),
        format!("{live}{}", "0".repeat(10_200)),
    ];
    let mut issued = BTreeSet::from([live.clone()]);
    for bad in &hostile {
        let sent = format!("session_id={bad}");
        for path in ["/missing", "/count"] {
            let r = client.get_with(path, Some(&sent)).await;
            assert_eq!(r.status, 200, "{path} {bad:?}: {r:?}");
            let expected = if path == "/missing" {
                "true false"
            } else {
                "true 1"
            };
            assert_eq!(r.body, expected, "{path} {bad:?}");
            let set_cookie = r.set_cookie.as_deref().expect("a fresh session's cookie");
            let id = checked_cookie(set_cookie, &config);
            assert_ne!(id, live, "{bad:?} opened the live session");
            assert!(!sent.contains(&id), "{bad:?}: an id the client chose");
            issued.insert(id);
        }
        // A route that never touches the session: no store call, no cookie.
        let r = client.get_with("/plain", Some(&sent)).await;
        assert_eq!((r.status, r.set_cookie), (200, None), "{bad:?}");
    }
    // Duplicates: several session cookies, in one header or in several.
    // The first well-formed id wins (the most specific path comes first
    // from browsers); garbage around it changes nothing.
    let other = start_session(addr).await;
    issued.insert(other.clone());
    for (headers, winner) in [
        (
            vec![format!("session_id=garbage; session_id={live}")],
            &live,
        ),
        (
            vec![format!("session_id={live}; session_id={other}")],
            &live,
        ),
        (
            vec![format!("session_id={other}; session_id={live}")],
            &other,
        ),
        (
            vec![
                "session_id=../../x".to_owned(),
                format!("session_id={live}"),
            ],
            &live,
        ),
        (vec![format!("session_id={live}"), cookie(&other)], &live),
        (
            vec![format!("a=1; session_id=; session_id={live}; session_id=")],
            &live,
        ),
    ] {
        let lines: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
        let (status, cookies, body) = raw_request(addr, &raw_get("/missing", &lines)).await;
        assert_eq!((status, body.as_str()), (200, "false true"), "{headers:?}");
        assert_eq!(cookies.len(), 1, "{headers:?}");
        assert_eq!(&checked_cookie(&cookies[0], &config), winner, "{headers:?}");
    }
    // Both sessions are as they were: a duplicate never merged them.
    assert_eq!(f.data(&live).await.unwrap()["n"], 1);
    assert_eq!(f.data(&other).await.unwrap()["n"], 1);
    // The store saw only ids the server drew.
    let seen = watched.all_ids();
    assert!(seen.is_subset(&issued), "{:?}", seen.difference(&issued));
    // Nothing was loaded, locked or written under an id a client chose
    // except the two live sessions.
    for op in ["load", "lock", "save", "touch", "delete"] {
        let ids = watched.ids(op);
        assert!(
            ids.iter().all(|id| *id == live || *id == other),
            "{op} on a hostile client's id"
        );
    }
    assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);
    std::fs::remove_dir(&canary).unwrap();
    if let Some(dir) = &f.dir {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(
            names.iter().all(|n| [
                "sessions.db",
                "sessions.db-wal",
                "sessions.db-shm",
                "sessions"
            ]
            .contains(&n.as_str())),
            "{names:?}"
        );
        // The file store's directory holds only files named by ids the
        // server issued.
        if let Ok(entries) = std::fs::read_dir(dir.join("sessions")) {
            for entry in entries {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let id = name
                    .strip_prefix("session-")
                    .map(|rest| rest.trim_end_matches(".lock"))
                    .unwrap_or_else(|| panic!("unexpected file {name:?}"));
                assert!(
                    *id == *live || *id == *other || issued.contains(id),
                    "a file for an id the server did not issue: {name:?}"
                );
            }
        }
    }
}

/// Bytes an HTTP client refuses to send — NUL, bare CR and LF, raw
/// non-ASCII, an oversized header — over a raw socket: answered without a
/// 5xx (hyper refuses some with 400 or 431 before any session code runs),
/// never with an id from the request, and the server keeps serving.
async fn raw_control_bytes_never_reach_a_store(f: &Fixture) {
    let watched = Watched::new(f.store.clone());
    let config = config();
    let addr = serve(app_routes(config.clone(), watched.clone())).await;
    let live = start_session(addr).await;
    let l = live.as_bytes();
    let cases: Vec<Vec<u8>> = vec![
        [b"session_id=", &l[..20], b"\0", &l[21..]].concat(),
        [b"session_id=", l, b"\0"].concat(),
        [b"session_id=", l, b"\r; Domain=evil.example"].concat(),
        [b"session_id=", l, b"\nSet-Cookie: evil=1"].concat(),
        [b"session_id=", &l[..39], b"\r"].concat(),
        [b"session_id=", l, b"\r\nX-Injected: evil"].concat(),
        [b"session_id=", &l[..38], b"\xc3\xa9"].concat(),
        [b"session_id=\xff\xfe", &l[2..]].concat(),
        [b"session_id=", l, b"\x7f"].concat(),
        [b"session_\0id=", l].concat(),
        [b"session_id=", l, b"\t; x=\x01\x02\x1b[31m"].concat(),
        [b"session_id=".as_slice(), &vec![b'a'; 200 * 1024]].concat(),
    ];
    let mut issued = BTreeSet::from([live.clone()]);
    for case in &cases {
        for path in ["/count", "/plain"] {
            let (status, cookies, body) = raw_request(addr, &raw_get(path, &[case])).await;
            let shown = String::from_utf8_lossy(&case[..case.len().min(80)]).into_owned();
            assert!(
                status == 200 || status == 400 || status == 431,
                "{path} {shown:?}: {status} {body}"
            );
            assert!(cookies.len() <= 1, "{shown:?}: {cookies:?}");
            for c in &cookies {
                assert!(!c.contains("evil"), "{c}");
                issued.insert(checked_cookie(c, &config));
            }
            if status == 200 && path == "/count" {
                // A well-formed id followed by noise after a separator is
                // still that id (the tolerant parser); anything else is a
                // fresh session.
                let id = checked_cookie(&cookies[0], &config);
                if id == live {
                    assert!(body.starts_with("false "), "{shown:?}: {body}");
                } else {
                    assert_eq!(body, "true 1", "{shown:?}");
                }
            }
            if path == "/plain" {
                assert!(cookies.is_empty(), "{shown:?}");
            }
        }
    }
    let seen = watched.all_ids();
    assert!(seen.is_subset(&issued), "{:?}", seen.difference(&issued));
    // Still serving, the live session intact.
    let r = Client::new(addr)
        .get_with("/count", Some(&cookie(&live)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("false "), "{r:?}");
}

/// A cookie value that tries to add attributes (`; Domain=evil`), as a
/// quoted string, in the name, or through an encoded line break: the
/// response's Set-Cookie is always exactly the server's own.
async fn cookie_injection_is_never_echoed(f: &Fixture) {
    let mut config = config();
    config.domain = Some("app.example".into());
    config.secure = true;
    let addr = serve_app(f, config.clone()).await;
    let client = Client::new(addr);
    let live = start_session(addr).await;
    for sent in [
        format!("session_id={live}; Domain=evil.example; Path=/admin; Max-Age=99999999"),
        format!("session_id=\"{live}; Domain=evil.example\""),
        "session_id=\"; Domain=evil.example; Path=/".to_owned(),
        "session_id=x; Domain=evil.example; session_id=y".to_owned(),
        format!("session_id; Domain=evil.example={live}"),
        format!("Domain=evil.example; session_id={live}"),
        format!("session_id={live}%3B%20Domain%3Devil.example"),
        format!("session_id={live},Domain=evil.example"),
        "session_id=a\tDomain=evil.example".to_owned(),
    ] {
        for path in ["/count", "/logout", "/regen"] {
            let r = client.get_with(path, Some(&sent)).await;
            assert!(r.status < 500, "{sent}: {r:?}");
            let sc = r.set_cookie.clone().unwrap_or_default();
            assert!(
                !sc.contains("evil") && !sc.contains("admin"),
                "{sent} → {sc}"
            );
            if path == "/logout" {
                assert!(
                    sc.contains("Max-Age=0; Path=/; Domain=app.example;"),
                    "{sc}"
                );
            } else {
                let id = checked_cookie(&sc, &config);
                assert!(!sent.contains(&id) || id == live, "{sent} → {sc}");
            }
        }
    }
    // `path_header` takes the cookie's Path from a request header (set by
    // a proxy); a value that would add attributes falls back to `path`.
    let mut config = self::config();
    config.path_header = Some(http::HeaderName::from_static("x-script-name"));
    let addr = serve_app(f, config.clone()).await;
    let http = reqwest::Client::new();
    for (value, path) in [
        ("/app", "/app"),
        ("/app; Domain=evil.example", "/"),
        ("/app,Domain=evil.example", "/"),
        ("/app\tDomain=evil.example", "/"),
        ("app", "/"),
        ("/app/\u{e9}", "/"),
    ] {
        let r = http
            .get(format!("http://{addr}/count"))
            .header("x-script-name", value.as_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sc = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(!sc.contains("evil"), "{value:?} → {sc}");
        let mut expected = config.clone();
        expected.path = path.into();
        checked_cookie(&sc, &expected);
    }
}

/// A client that forges a far-future `Expires`/`Max-Age` on the cookie it
/// sends back gains nothing: the server's timeout alone decides, and the
/// cookie it sets never promises more than the timeout.
async fn forged_far_future_expiry_is_ignored(f: &Fixture) {
    let mut config = config();
    config.timeout = Duration::from_secs(1);
    let addr = serve_app(f, config.clone()).await;
    let client = Client::new(addr);
    let live = start_session(addr).await;
    let forged = format!(
        "session_id={live}; Expires=Fri, 31 Dec 9999 23:59:59 GMT; Max-Age=2147483647; expires=Fri, 31 Dec 9999 23:59:59 GMT"
    );
    let r = client.get_with("/count", Some(&forged)).await;
    assert_eq!(r.body, "false 2");
    let attrs = r.cookie_attrs();
    assert!(attrs["max-age"].parse::<u64>().unwrap() <= 1, "{attrs:?}");
    assert!(!attrs["expires"].contains("9999"), "{attrs:?}");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let r = client.get_with("/count", Some(&forged)).await;
    assert_eq!(r.body, "true 1", "the forged expiry kept a session alive");
    assert_ne!(r.cookie_value().unwrap(), live);
    assert!(!f.holds(&live).await);
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

/// A session used every 200 ms — so the idle timeout never bites — ends at
/// its absolute timeout, enforced by the server whatever the client keeps.
async fn absolute_timeout_ends_a_busy_session(f: &Fixture) {
    let mut config = config();
    config.absolute_timeout = Some(Duration::from_millis(1_500));
    let addr = serve_app(f, config).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/count").await.body, "false 1");
    let first = client.id().unwrap();
    let started = std::time::Instant::now();
    let mut ended = None;
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Always the first cookie, as a client that ignores new ones would.
        let r = client.get_with("/count", Some(&cookie(&first))).await;
        assert_eq!(r.status, 200);
        let max_age: u64 = r.cookie_attrs()["max-age"].parse().unwrap();
        if r.body == "true 1" {
            ended = Some(started.elapsed());
            break;
        }
        // The cookie never outlives the absolute timeout.
        assert!(max_age <= 2, "{r:?}");
    }
    let ended = ended.expect("the session outlived its absolute timeout");
    assert!(
        ended >= Duration::from_millis(1_200),
        "ended early: {ended:?}"
    );
    assert!(!f.holds(&first).await, "the store kept it");
}

/// A cookie replayed after logout, after the idle timeout and after the
/// absolute timeout opens nothing: each time a fresh, empty session under
/// a new id, and the old id stays gone from the store.
async fn replay_after_logout_idle_or_absolute_timeout_opens_nothing(f: &Fixture) {
    let logout = async {
        let addr = serve_app(f, config()).await;
        let mut client = Client::new(addr);
        client.get("/count").await;
        client.get("/count").await;
        let old = client.cookie.clone().unwrap();
        assert_eq!(client.get("/logout").await.body, "done");
        assert!(!f.holds(&old[11..]).await);
        old
    };
    let idle = async {
        let mut config = config();
        config.timeout = Duration::from_secs(1);
        let addr = serve_app(f, config).await;
        let mut client = Client::new(addr);
        client.get("/count").await;
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        client.cookie.clone().unwrap()
    };
    let absolute = async {
        let mut config = config();
        config.absolute_timeout = Some(Duration::from_millis(1_500));
        let addr = serve_app(f, config).await;
        let mut client = Client::new(addr);
        client.get("/count").await;
        let old = client.cookie.clone().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Still alive and used (its cookie now ends with the session).
        assert_eq!(client.get_with("/count", Some(&old)).await.body, "false 2");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        old
    };
    let (after_logout, after_idle, after_absolute) = tokio::join!(logout, idle, absolute);
    // Replayed against one app with default settings: the ids are as dead
    // there as in the app that issued them (one store).
    let addr = serve_app(f, config()).await;
    let client = Client::new(addr);
    for (what, old) in [
        ("logout", after_logout),
        ("idle timeout", after_idle),
        ("absolute timeout", after_absolute),
    ] {
        for _ in 0..2 {
            let r = client.get_with("/count", Some(&old)).await;
            assert_eq!(r.body, "true 1", "replay after {what} opened the session");
            assert_ne!(r.cookie_value().as_deref(), Some(&old[11..]));
            assert!(!f.holds(&old[11..]).await, "{what}: the old id came back");
        }
    }
}

// ---------------------------------------------------------------------------
// Size
// ---------------------------------------------------------------------------

/// A session over `max_size` is refused with a 500 (and a log line naming
/// the limit, checked by `logs_never_carry_a_full_session_id`): no cookie,
/// and whatever the store held before is still there, byte for byte.
async fn oversized_session_is_refused_and_old_data_kept(f: &Fixture) {
    let mut config = config();
    config.max_size = 1024;
    let addr = serve_app(f, config).await;
    let client = Client::new(addr);
    let id = start_session(addr).await;
    let sent = cookie(&id);
    let r = client.get_with("/put?key=a&len=500", Some(&sent)).await;
    assert_eq!(r.status, 200);
    let before = f.store.load(&id.parse().unwrap()).await.unwrap().unwrap();
    for len in [1_000, 100_000] {
        let r = client
            .get_with(&format!("/put?key=b&len={len}"), Some(&sent))
            .await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (500, "session error\n"),
            "{len}"
        );
        assert_eq!(r.set_cookie, None);
        let after = f.store.load(&id.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(after.data, before.data, "the stored data changed");
    }
    // Just under the limit is fine, and the session carries on.
    let r = client.get_with("/count", Some(&sent)).await;
    assert_eq!(r.body, "false 2");
    // A new session over the limit stores nothing at all.
    let count = f.store.count().await.unwrap();
    let r = client.get_with("/put?key=b&len=2000", None).await;
    assert_eq!((r.status, r.set_cookie), (500, None));
    assert_eq!(f.store.count().await.unwrap(), count);
    // The layer's max_size above the store's own read limit (Redis reads
    // at most its `with_max_size`): the store refuses what it could not
    // read back, rather than keep a session that then loads as missing.
    if let Some(prefix) = &f.prefix {
        let small = store::RedisStore::connect(&redis_url())
            .await
            .unwrap()
            .with_prefix(prefix.clone())
            .with_max_size(2048);
        let mut config = self::config();
        config.max_size = 100_000;
        let addr = serve(app_routes(config, small)).await;
        let client = Client::new(addr);
        let id = start_session(addr).await;
        let r = client
            .get_with("/put?key=b&len=5000", Some(&cookie(&id)))
            .await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (500, "session error\n"),
            "{r:?}"
        );
        assert_eq!(f.data(&id).await.unwrap(), serde_json::json!({"n": 1}));
        let r = client.get_with("/count", Some(&cookie(&id))).await;
        assert_eq!(r.body, "false 2", "the session was lost");
    }
}

// ---------------------------------------------------------------------------
// Races
// ---------------------------------------------------------------------------

/// A save never brings back a session that was deleted (by an admin),
/// regenerated (by a parallel request that did not wait for a lock) or
/// expired while the request ran.
async fn save_never_resurrects_deleted_regenerated_or_expired(f: &Fixture) {
    let deleted = async {
        let watched = Watched::new(f.store.clone());
        let addr = serve(app_routes(config(), watched.clone())).await;
        let id = start_session(addr).await;
        let slow = tokio::spawn({
            let id = id.clone();
            async move {
                Client::new(addr)
                    .get_with("/slow-put?key=late&ms=600", Some(&cookie(&id)))
                    .await
            }
        });
        watched.wait_for("load", &id).await;
        // An admin logs the session out while a request on it runs.
        f.store.delete(&id.parse().unwrap()).await.unwrap();
        let r = slow.await.unwrap();
        assert_eq!((r.status, r.set_cookie.as_deref()), (200, None), "{r:?}");
        assert!(!f.holds(&id).await, "a deleted session came back");
    };
    let regenerated = async {
        // Explicit locking, and a handler that takes no lock: the slow
        // request's view goes stale while another logs in.
        let mut config = config();
        config.locking = Locking::Explicit;
        let watched = Watched::new(f.store.clone());
        let addr = serve(app_routes(config, watched.clone())).await;
        let old = start_session(addr).await;
        let slow = tokio::spawn({
            let old = old.clone();
            async move {
                Client::new(addr)
                    .get_with("/slow-put?key=late&ms=600", Some(&cookie(&old)))
                    .await
            }
        });
        watched.wait_for("load", &old).await;
        let r = Client::new(addr)
            .get_with("/regen", Some(&cookie(&old)))
            .await;
        let new = r.cookie_value().unwrap();
        let r = slow.await.unwrap();
        assert_eq!((r.status, r.set_cookie.as_deref()), (200, None), "{r:?}");
        assert!(!f.holds(&old).await, "a regenerated-away id came back");
        assert_eq!(f.data(&new).await.unwrap(), serde_json::json!({"n": 1}));
    };
    let expired = async {
        let mut config = config();
        config.timeout = Duration::from_millis(1_000);
        let addr = serve_app(f, config).await;
        let id = start_session(addr).await;
        let r = Client::new(addr)
            .get_with("/slow-put?key=late&ms=1600", Some(&cookie(&id)))
            .await;
        assert_eq!((r.status, r.set_cookie.as_deref()), (200, None), "{r:?}");
        assert!(!f.holds(&id).await, "an expired session came back");
    };
    tokio::join!(deleted, regenerated, expired);
}

/// Requests on the old id while another request regenerates it. "Lose no
/// data" means: every request that answered on the old session (`false n`)
/// did so in turn — the answers are exactly n0+1, n0+2, … with no
/// duplicate — and all of them are in the regenerated session; every
/// request that came after the old id was gone was told so (`true 1`: a
/// fresh session of its own, under a new id); the old id is gone.
async fn parallel_requests_during_regenerate_lose_nothing(f: &Fixture) {
    let addr = serve_app(f, config()).await;
    let old = start_session(addr).await;
    let client = Client::new(addr);
    for _ in 0..4 {
        client.get_with("/count", Some(&cookie(&old))).await;
    }
    let n0 = 5;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let old = old.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::new(addr);
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            if i == 5 {
                (
                    "regen",
                    client.get_with("/regen", Some(&cookie(&old))).await,
                )
            } else {
                (
                    "count",
                    client.get_with("/count?ms=15", Some(&cookie(&old))).await,
                )
            }
        }));
    }
    let mut on_old = Vec::new();
    let mut fresh = BTreeSet::new();
    let mut new = None;
    for t in tasks {
        let (what, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "{what}: {r:?}");
        let id = r.cookie_value().unwrap();
        if what == "regen" {
            new = Some(id);
            continue;
        }
        let (missing, n) = r.body.split_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        if missing == "false" {
            assert_eq!(id, old, "{r:?}");
            on_old.push(n);
        } else {
            assert_eq!(n, 1, "{r:?}");
            assert_ne!(id, old);
            fresh.insert(id);
        }
    }
    let new = new.unwrap();
    on_old.sort_unstable();
    let expected: Vec<u64> = (n0 + 1..=n0 + on_old.len() as u64).collect();
    assert_eq!(
        on_old, expected,
        "updates on the old id were lost or doubled"
    );
    assert_eq!(
        f.data(&new).await.unwrap()["n"],
        n0 + on_old.len() as u64,
        "the regenerated session lost updates"
    );
    assert!(!f.holds(&old).await);
    assert!(!fresh.contains(&new));
    assert_eq!(fresh.len() + on_old.len(), 11);
}

/// CherryPy issue 1027: with explicit locking, a request that released its
/// lock and then keeps using the session (reading, or writing more) must
/// not, at its end-of-request save, overwrite what another request wrote
/// under the lock meanwhile.
async fn release_lock_then_end_save_overwrites_nothing(f: &Fixture) {
    let mut config = config();
    config.locking = Locking::Explicit;
    let addr = serve_app(f, config).await;
    let id = start_session(addr).await;
    for then in ["read", "write", "none"] {
        let (a, b) = (format!("a_{then}"), format!("b_{then}"));
        let slow = tokio::spawn({
            let (id, a) = (id.clone(), a.clone());
            async move {
                Client::new(addr)
                    .get_with(
                        &format!("/explicit?key={a}&ms=500&then={then}"),
                        Some(&cookie(&id)),
                    )
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = Client::new(addr)
            .get_with(&format!("/explicit?key={b}"), Some(&cookie(&id)))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = slow.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let data = f.data(&id).await.unwrap();
        assert_eq!(
            data[&b], true,
            "{then}: the other request's change was overwritten: {data}"
        );
        assert_eq!(data[&a], true, "{then}: {data}");
        if then == "write" {
            assert_eq!(data[&format!("{a}_after")], true, "{data}");
        }
    }
    // Implicit locking: a request that logs in and then releases the lock
    // has given up the old id before another request can take its lock.
    let addr = serve_app(f, self::config()).await;
    let old = start_session(addr).await;
    let login = tokio::spawn({
        let old = old.clone();
        async move {
            Client::new(addr)
                .get_with("/regen-release?ms=500", Some(&cookie(&old)))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = Client::new(addr)
        .get_with("/count", Some(&cookie(&old)))
        .await;
    assert_eq!(
        r.body, "true 1",
        "the old id was still alive after regenerate + release_lock"
    );
    let r = login.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "1"), "{r:?}");
    let new = r.cookie_value().unwrap();
    assert_eq!(f.data(&new).await.unwrap()["n"], 1);
    assert!(!f.holds(&old).await);
}

// ---------------------------------------------------------------------------
// Floods
// ---------------------------------------------------------------------------

const FLOOD: usize = 100_000;

/// Sends `n` GETs of `path` through the router in process, `cookie(i)`
/// giving each one's Cookie header, eight at a time; returns how many set
/// a cookie.
async fn flood(
    app: Router,
    path: &str,
    n: usize,
    cookie: impl Fn(usize) -> Option<String>,
) -> usize {
    use tower::ServiceExt;
    let cookies: Vec<Option<String>> = (0..n).map(cookie).collect();
    futures_util::stream::iter(cookies)
        .map(|c| {
            let app = app.clone();
            let mut req = http::Request::get(path);
            if let Some(c) = c {
                req = req.header("cookie", c);
            }
            let req = req.body(axum::body::Body::empty()).unwrap();
            async move {
                let response = app.oneshot(req).await.unwrap();
                assert!(response.status().is_success(), "{response:?}");
                response.headers().contains_key("set-cookie")
            }
        })
        .buffer_unordered(8)
        .filter(|set| std::future::ready(*set))
        .count()
        .await
}

/// 100,000 cookieless requests, and 100,000 with random well-formed ids,
/// to a route that never touches the session: not one store call, not one
/// cookie, nothing stored.
async fn flood_of_untouched_requests_stores_nothing(f: &Fixture) {
    let watched = Watched::new(f.store.clone());
    let app = app_routes(config(), watched.clone());
    let started = std::time::Instant::now();
    assert_eq!(flood(app.clone(), "/plain", FLOOD, |_| None).await, 0);
    let ids: Vec<String> = (0..FLOOD)
        .map(|_| SessionId::generate().unwrap().to_string())
        .collect();
    assert_eq!(
        flood(app, "/plain", FLOOD, |i| Some(cookie(&ids[i]))).await,
        0
    );
    eprintln!(
        "{:?}: 2 × {FLOOD} untouched requests in {:?}",
        f.kind,
        started.elapsed()
    );
    assert_eq!(
        watched.calls.load(Ordering::SeqCst),
        0,
        "the store was called"
    );
    assert_eq!(f.store.count().await.unwrap(), 0);
}

/// Requests with random well-formed ids to a route that does use the
/// session: each gets a fresh session under an id of the server's — never
/// the one it sent — so the store grows by one per request, and once they
/// expire clean-up (or, for Redis, the keys' own TTL) reclaims them all.
async fn flood_of_new_sessions_is_reclaimed_by_clean_up(f: &Fixture) {
    let n = match f.kind {
        Kind::Ram => 20_000,
        // A write and a round trip each: enough to show growth and
        // reclaim, not a load test.
        Kind::Sqlite | Kind::Redis | Kind::Postgres | Kind::File => 2_000,
    };
    let timeout = Duration::from_millis(2_500);
    let mut config = config();
    config.timeout = timeout;
    let watched = Watched::new(f.store.clone());
    let app = app_routes(config, watched.clone());
    let sent: Vec<String> = (0..n)
        .map(|_| SessionId::generate().unwrap().to_string())
        .collect();
    let started = std::time::Instant::now();
    let set = flood(app, "/count", n, |i| Some(cookie(&sent[i]))).await;
    let took = started.elapsed();
    eprintln!("{:?}: {n} new sessions in {took:?}", f.kind);
    // A cookie is only sent once its session was saved: the store grew by
    // one per request.
    assert_eq!(set, n, "every request gets its session's cookie");
    if took < Duration::from_millis(2_000) {
        assert_eq!(f.store.count().await.unwrap(), n as u64);
    } else {
        // On a loaded machine the first sessions may have expired already.
        eprintln!("{:?}: flood took {took:?}; count not checked", f.kind);
    }
    // The ids the clients sent were looked up, never written.
    let written: BTreeSet<String> = watched.ids("new");
    assert_eq!(written.len(), n);
    assert!(
        sent.iter().all(|id| !written.contains(id)),
        "a client-chosen id was stored"
    );
    tokio::time::sleep_until((started + took + timeout + Duration::from_millis(200)).into()).await;
    let removed = f.store.clean_up().await.unwrap();
    if f.kind == Kind::Redis {
        assert_eq!(removed, 0, "Redis expires keys itself");
    } else {
        assert_eq!(removed, n as u64);
    }
    assert_eq!(f.store.count().await.unwrap(), 0, "not reclaimed");
    assert_eq!(f.store.ids().count().await, 0);
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

/// One log subscriber for the whole test binary, writing into a buffer, so
/// that every line any scenario makes the library log is checked.
mod logs {
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};

    static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    struct Sink;

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            LINES.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Installs the subscriber once: everything `sessions` logs, at every
    /// level, and warnings and errors of everything else.
    pub(crate) fn install() {
        static ONCE: OnceLock<()> = OnceLock::new();
        ONCE.get_or_init(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("sessions=trace,warn"))
                .with_writer(|| Sink)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
    }

    /// Everything logged so far.
    pub(crate) fn text() -> String {
        String::from_utf8_lossy(&LINES.lock().unwrap()).into_owned()
    }
}

/// The longest run of lowercase hex digits in `line`.
fn longest_hex_run(line: &str) -> usize {
    line.split(|c: char| !matches!(c, '0'..='9' | 'a'..='f'))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// With `debug = true`, the whole life cycle — create, load, save,
/// regenerate, delete, a lock timeout, a store failure, a corrupt record
/// (unreadable data for every store, and a damaged stored form where the
/// store has one), an oversized session — is logged, and no line carries a
/// full session id: only the 8-hex-digit short form.
async fn logs_never_carry_a_full_session_id(f: &Fixture) {
    let watched = Watched::new(f.store.clone());
    let mut config = config();
    config.debug = true;
    config.lock_timeout = Duration::from_millis(200);
    config.max_size = 2048;
    let addr = serve(app_routes(config, watched.clone())).await;
    let mut client = Client::new(addr);
    let mut ids = BTreeSet::new();
    // Create, load, save, regenerate, delete.
    client.get("/count").await;
    let first = client.id().unwrap();
    client.get("/count").await;
    client.get("/regen").await;
    let second = client.id().unwrap();
    client.get("/count").await;
    // Over max_size: a 500, and an error naming the limit.
    assert_eq!(client.get("/put?key=big&len=5000").await.status, 500);
    ids.extend([first.clone(), second.clone()]);
    // A lock held elsewhere: 503 after lock_timeout.
    let held: SessionId = second.parse().unwrap();
    let guard = f.store.lock(&held, Duration::from_secs(5)).await.unwrap();
    let r = client.get_with("/count", Some(&cookie(&second))).await;
    assert_eq!(r.status, 503);
    drop(guard);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The store down: 503.
    watched.down.store(true, Ordering::SeqCst);
    assert_eq!(
        client
            .get_with("/count", Some(&cookie(&second)))
            .await
            .status,
        503
    );
    watched.down.store(false, Ordering::SeqCst);
    // A record whose data is not a JSON object: treated as missing.
    let corrupt = SessionId::generate().unwrap();
    let now = sessions::now_millis();
    let garbage = Record {
        data: b"\x80\x04\x95pickle".to_vec(),
        created: now,
        expires: now + 60_000,
    };
    assert!(f
        .store
        .save(&corrupt, &garbage, SaveIf::Absent)
        .await
        .unwrap());
    let r = client
        .get_with("/count", Some(&cookie(&corrupt.to_string())))
        .await;
    assert_eq!(r.body, "true 1");
    ids.insert(corrupt.to_string());
    // A damaged stored form, where the store has one of its own.
    let damaged = SessionId::generate().unwrap();
    assert!(f
        .store
        .save(&damaged, &garbage, SaveIf::Absent)
        .await
        .unwrap());
    let tampered = damage(f, &damaged).await;
    if tampered {
        let r = client
            .get_with("/count", Some(&cookie(&damaged.to_string())))
            .await;
        assert_eq!(r.body, "true 1");
    }
    ids.insert(damaged.to_string());
    client.get("/logout").await;
    ids.extend(watched.all_ids());

    let text = logs::text();
    for id in &ids {
        assert!(!text.contains(id.as_str()), "a full session id in the log");
    }
    for line in text.lines() {
        assert!(
            longest_hex_run(line) < 40,
            "a full session id in the log: {line}"
        );
    }
    // And the log did say what happened, with the short forms.
    let short = |id: &str| id.parse::<SessionId>().unwrap().short().to_string();
    let said = |what: &str, id: &str| {
        let tag = short(id);
        assert!(
            text.lines().any(|l| l.contains(what) && l.contains(&tag)),
            "no {what:?} line for session {tag} in the log"
        );
    };
    said("session created", &first);
    said("session saved", &first);
    said("session loaded", &first);
    said("session regenerated", &second);
    said(
        "unreadable session data treated as missing",
        &corrupt.to_string(),
    );
    if tampered {
        let what = match f.kind {
            Kind::Redis => "ignoring an unreadable session in redis",
            Kind::File => "treating the session as missing",
            _ => "damaged session row treated as missing",
        };
        said(what, &damaged.to_string());
    }
    for what in [
        "exceeds max_size of 2048 bytes",
        "session lock timeout",
        "session store failed",
        // The backend's own error, not only the store's summary.
        "switched off",
    ] {
        assert!(text.contains(what), "no {what:?} in the log");
    }
}

/// Damages the stored form of `id` behind the store's back, in a way only
/// that store can hold: a framed record with a wrong checksum (Redis, file),
/// a negative creation time (the SQL stores). Returns false for RAM, which
/// has no stored form of its own.
async fn damage(f: &Fixture, id: &SessionId) -> bool {
    match f.kind {
        Kind::Ram => false,
        Kind::Redis => {
            let prefix = f.prefix.as_ref().unwrap();
            let client = ::redis::Client::open(redis_url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let now = sessions::now_millis();
            let mut bytes = Record {
                data: b"{}".to_vec(),
                created: now,
                expires: now + 60_000,
            }
            .encode();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            ::redis::cmd("SET")
                .arg(format!("{prefix}{{{id}}}"))
                .arg(bytes)
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(&mut conn)
                .await
                .unwrap();
            true
        }
        Kind::Postgres => {
            let (client, conn) = postgres_url()
                .parse::<tokio_postgres::Config>()
                .unwrap()
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let table = f.table.as_ref().unwrap();
            let n = client
                .execute(
                    &format!("UPDATE \"{table}\" SET created_at = -1 WHERE id = $1"),
                    &[&id.to_string()],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
            true
        }
        Kind::File => {
            let path = f
                .dir
                .as_ref()
                .unwrap()
                .join("sessions")
                .join(format!("session-{id}"));
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            std::fs::write(&path, bytes).unwrap();
            true
        }
        Kind::Sqlite => {
            let path = f.dir.as_ref().unwrap().join("sessions.db");
            let id = id.to_string();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                let n = conn
                    .execute("UPDATE sessions SET created_at = -1 WHERE id = ?1", [&id])
                    .unwrap();
                assert_eq!(n, 1);
            })
            .await
            .unwrap();
            true
        }
    }
}

// ---------------------------------------------------------------------------
// Cookie name and URLs (store-independent)
// ---------------------------------------------------------------------------

/// A `__Host-` cookie name with `Secure`, `Path=/` and no `Domain` (what
/// browsers demand of the prefix; ASVS 4.0.3 3.4.4, 5.0 3.3.1 and 3.3.3)
/// works like any other; and an id in the URL is never taken (ASVS 4.0.3
/// 3.1.1): the session travels in the cookie only.
#[tokio::test]
async fn host_prefixed_cookie_works_and_ids_in_urls_are_ignored() {
    logs::install();
    let mut config = config();
    config.name = "__Host-sid".into();
    config.secure = true;
    let store = MemoryStore::new();
    let addr = serve(app_routes(config.clone(), store.clone())).await;
    let client = Client::new(addr);
    let r = client.get_with("/count", None).await;
    let id = checked_cookie(r.set_cookie.as_deref().unwrap(), &config);
    let sent = format!("__Host-sid={id}");
    assert_eq!(client.get_with("/count", Some(&sent)).await.body, "false 2");
    // The default name is not this one: a `session_id` cookie is not read.
    let r = client.get_with("/count", Some(&cookie(&id))).await;
    assert_eq!(r.body, "false 1");
    assert_ne!(r.cookie_value().unwrap(), id);
    for url in [
        format!("/count?session_id={id}"),
        format!("/count?__Host-sid={id}"),
        format!("/count?sid={id}&session={id}"),
    ] {
        let r = client.get_with(&url, None).await;
        assert_eq!(r.body, "false 1", "{url} opened the session");
        let new = r.cookie_value().unwrap();
        assert_ne!(new, id);
        assert!(!r.body.contains(&id));
    }
    // The session in the store is untouched by all of that.
    let stored = store.load(&id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.data, br#"{"n":2}"#);
}
