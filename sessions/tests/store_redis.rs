//! The Redis store against a real Redis: the conformance suite, the key
//! layout, unreadable values, the lease lock, and an outage of a private
//! server.
//!
//! The shared server is `REDIS_URL` (default `redis://127.0.0.1:6379/`);
//! every test uses its own key prefix, so runs never collide. When it is
//! unreachable the tests are skipped, except under `CI=true`, where that
//! is a failure.

#![cfg(feature = "redis")]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::AsyncCommands;
use sessions::store::{Error, RedisStore, SaveIf, SessionAdmin, SessionStore};
use sessions::{now_millis, Record, SessionId};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns `None`) outside CI, fails in CI.
fn skip<T>(why: &str) -> Option<T> {
    assert!(!in_ci(), "CI=true and {why}");
    eprintln!("skipping: {why}");
    None
}

fn unique_prefix() -> String {
    format!("test:{}:", &id().to_string()[..16])
}

fn id() -> SessionId {
    SessionId::generate().expect("random source")
}

fn record(data: &str, ttl_ms: u64) -> Record {
    let now = now_millis();
    Record {
        data: data.as_bytes().to_vec(),
        created: now,
        expires: now + ttl_ms,
    }
}

/// A store on the shared server with a prefix of its own.
async fn store() -> Option<RedisStore> {
    store_with_prefix(unique_prefix()).await
}

async fn store_with_prefix(prefix: String) -> Option<RedisStore> {
    match RedisStore::connect(&url()).await {
        Ok(store) => Some(store.with_prefix(prefix)),
        Err(e) => skip(&format!("redis at {} is unreachable: {e}", url())),
    }
}

/// A plain connection, to look at and tamper with keys behind the store.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn data_key(prefix: &str, id: &SessionId) -> String {
    format!("{prefix}{{{id}}}")
}

fn lock_key(prefix: &str, id: &SessionId) -> String {
    format!("{prefix}{{{id}}}:lock")
}

sessions::store_conformance!(async { store().await });

/// Clean-up removes nothing itself (the expired record is already gone by
/// its TTL) and never touches a held lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_is_a_no_op_and_keeps_held_locks() {
    let Some(store) = store().await else {
        return;
    };
    let (live, dead) = (id(), id());
    assert!(store
        .save(&live, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert!(store
        .save(&dead, &record("{}", 200), SaveIf::Absent)
        .await
        .unwrap());
    let held = store.lock(&dead, Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.clean_up().await.unwrap(), 0);
    assert!(store.exists(&live).await.unwrap());
    assert_eq!(store.load(&dead).await.unwrap(), None);
    assert!(
        matches!(
            store.lock(&dead, Duration::from_millis(200)).await,
            Err(Error::LockTimeout(_))
        ),
        "clean-up released a held lock"
    );
    drop(held);
    drop(store.lock(&dead, Duration::from_secs(2)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_and_native_ttl() {
    let prefix = unique_prefix();
    let Some(store) = store_with_prefix(prefix.clone()).await else {
        return;
    };
    let mut raw = raw().await;
    let id = id();
    let r = record(r#"{"a":1}"#, 60_000);
    assert!(store.save(&id, &r, SaveIf::Absent).await.unwrap());

    let stored: Vec<u8> = raw.get(data_key(&prefix, &id)).await.unwrap();
    assert_eq!(stored, r.encode());
    let ttl: i64 = raw.pttl(data_key(&prefix, &id)).await.unwrap();
    assert!((55_000..=60_000).contains(&ttl), "pttl {ttl}");

    let store = store.with_lease(Duration::from_secs(3));
    let guard = store.lock(&id, Duration::from_secs(1)).await.unwrap();
    let ttl: i64 = raw.pttl(lock_key(&prefix, &id)).await.unwrap();
    assert!((1..=3_000).contains(&ttl), "lock pttl {ttl}");
    drop(guard);
    // The release is spawned by the guard's drop.
    let deadline = Instant::now() + Duration::from_secs(2);
    while raw.exists::<_, bool>(lock_key(&prefix, &id)).await.unwrap() {
        assert!(Instant::now() < deadline, "lock key not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_moves_the_ttl_and_keeps_the_value() {
    let prefix = unique_prefix();
    let Some(store) = store_with_prefix(prefix.clone()).await else {
        return;
    };
    let mut raw = raw().await;
    let id = id();
    let r = record(r#"{"k":"v"}"#, 5_000);
    assert!(store.save(&id, &r, SaveIf::Absent).await.unwrap());
    let before: Vec<u8> = raw.get(data_key(&prefix, &id)).await.unwrap();

    let later = now_millis() + 600_000;
    assert!(store.touch(&id, later).await.unwrap());
    let after: Vec<u8> = raw.get(data_key(&prefix, &id)).await.unwrap();
    assert_eq!(before, after, "touch rewrote the value");
    let ttl: i64 = raw.pttl(data_key(&prefix, &id)).await.unwrap();
    assert!(ttl > 590_000, "pttl {ttl}");

    let loaded = store.load(&id).await.unwrap().unwrap();
    assert_eq!((&loaded.data, loaded.created), (&r.data, r.created));
    assert!(loaded.expires.abs_diff(later) <= 1_000, "{loaded:?}");
    // Touching a missing session creates nothing.
    let other = self::id();
    assert!(!store.touch(&other, later).await.unwrap());
    assert!(!raw
        .exists::<_, bool>(data_key(&prefix, &other))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_values_load_as_missing() {
    let prefix = unique_prefix();
    let Some(store) = store_with_prefix(prefix.clone()).await else {
        return;
    };
    let store = store.with_max_size(100);
    let mut raw = raw().await;

    let garbage = id();
    let _: () = raw
        .set_ex(data_key(&prefix, &garbage), b"\x80\x04pickled", 60)
        .await
        .unwrap();
    let truncated = id();
    let bytes = record("{}", 60_000).encode();
    let _: () = raw
        .set_ex(data_key(&prefix, &truncated), &bytes[..bytes.len() - 1], 60)
        .await
        .unwrap();
    let empty = id();
    let _: () = raw
        .set_ex(data_key(&prefix, &empty), b"", 60)
        .await
        .unwrap();
    let wrong_type = id();
    let _: () = raw
        .hset(data_key(&prefix, &wrong_type), "f", "v")
        .await
        .unwrap();
    let _: () = raw
        .expire(data_key(&prefix, &wrong_type), 60)
        .await
        .unwrap();
    let oversized = id();
    let big = record(&format!("\"{}\"", "x".repeat(10_000)), 60_000);
    let _: () = raw
        .set_ex(data_key(&prefix, &oversized), big.encode(), 60)
        .await
        .unwrap();

    for id in [garbage, truncated, empty, wrong_type, oversized] {
        assert_eq!(store.load(&id).await.unwrap(), None, "{id:?}");
        assert!(!store.exists(&id).await.unwrap(), "{id:?}");
        let (guard, loaded) = store
            .lock_and_load(&id, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(loaded, None, "{id:?}");
        drop(guard);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_and_ids_skip_locks_and_foreign_keys() {
    let prefix = unique_prefix();
    let Some(store) = store_with_prefix(prefix.clone()).await else {
        return;
    };
    let mut raw = raw().await;
    let (a, b, locked_only) = (id(), id(), id());
    for id in [&a, &b] {
        assert!(store
            .save(id, &record("{}", 60_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    let g1 = store.lock(&a, Duration::from_secs(1)).await.unwrap();
    let g2 = store
        .lock(&locked_only, Duration::from_secs(1))
        .await
        .unwrap();
    for foreign in ["other", "{not-an-id}", "{0123}"] {
        let _: () = raw
            .set_ex(format!("{prefix}{foreign}"), "x", 60)
            .await
            .unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 2);
    let mut listed: Vec<SessionId> = store.ids().map(|r| r.unwrap()).collect().await;
    listed.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(store.clean_up().await.unwrap(), 0);
    drop((g1, g2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_frees_the_lock_of_a_vanished_holder() {
    let prefix = unique_prefix();
    let Some(waiter) = store_with_prefix(prefix.clone()).await else {
        return;
    };
    let id = id();
    let lease = Duration::from_secs(1);
    // The holder lives in a runtime of its own; dropping that runtime is
    // the crash: the guard was forgotten (no release) and its renewal task
    // dies with the runtime.
    let holder = {
        let (url, prefix) = (url(), prefix.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = RedisStore::connect(&url)
                    .await
                    .unwrap()
                    .with_prefix(prefix)
                    .with_lease(lease);
                let guard = store.lock(&id, Duration::from_secs(1)).await.unwrap();
                // Renewed past its first lease while the holder lives.
                tokio::time::sleep(lease * 2).await;
                std::mem::forget(guard);
            });
        })
    };
    holder.join().unwrap();

    assert!(matches!(
        waiter.lock(&id, Duration::from_millis(100)).await,
        Err(Error::LockTimeout(_))
    ));
    let started = Instant::now();
    let guard = waiter.lock(&id, Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < lease + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_lock_past_its_lease() {
    let prefix = unique_prefix();
    let Some(store) = store_with_prefix(prefix.clone()).await else {
        return;
    };
    let Some(other) = store_with_prefix(prefix.clone()).await else {
        return;
    };
    let lease = Duration::from_millis(500);
    let store = store.with_lease(lease);
    let id = id();
    assert!(store
        .save(&id, &record(r#"{"n":1}"#, 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let (guard, loaded) = store
        .lock_and_load(&id, Duration::from_secs(1))
        .await
        .unwrap();
    let mut r = loaded.unwrap();
    // A slow request: five leases long.
    tokio::time::sleep(lease * 5).await;
    assert!(
        matches!(
            other.lock(&id, Duration::from_millis(100)).await,
            Err(Error::LockTimeout(_))
        ),
        "lock lost while held"
    );
    r.data = br#"{"n":2}"#.to_vec();
    assert!(store
        .save_and_unlock(&id, &r, SaveIf::Live, guard)
        .await
        .unwrap());
    let (g, loaded) = other
        .lock_and_load(&id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(loaded.unwrap().data, br#"{"n":2}"#.to_vec());
    drop(g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_refuses_the_save() {
    let prefix = unique_prefix();
    let Some(store) = store_with_prefix(prefix.clone()).await else {
        return;
    };
    let mut raw = raw().await;
    let id = id();
    let r = record(r#"{"v":1}"#, 60_000);
    assert!(store.save(&id, &r, SaveIf::Absent).await.unwrap());
    let (guard, _) = store
        .lock_and_load(&id, Duration::from_secs(1))
        .await
        .unwrap();
    // The lease ran out and someone else took the lock.
    let _: () = raw
        .set(lock_key(&prefix, &id), "someone else")
        .await
        .unwrap();
    let err = store
        .save_and_unlock(&id, &record(r#"{"v":2}"#, 60_000), SaveIf::Live, guard)
        .await
        .expect_err("save without the lock");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(store.load(&id).await.unwrap().unwrap().data, r.data);
    // The other holder's lock was left alone.
    let holder: String = raw.get(lock_key(&prefix, &id)).await.unwrap();
    assert_eq!(holder, "someone else");
    let _: () = raw.del(lock_key(&prefix, &id)).await.unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_fast() {
    let started = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{}/", free_port()))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "{started:?}");
    // A URL that does not parse is a wrong setting, not an outage.
    let err = RedisStore::connect("not a url").await.expect_err("bad url");
    assert!(
        matches!(
            err,
            Error::Config {
                setting: "storage_url",
                ..
            }
        ),
        "{err:?}"
    );
}

/// A redis-server of the test's own, killed when dropped (also when the
/// test fails).
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let server = match child {
            Ok(child) => PrivateRedis {
                child: Some(child),
                port,
            },
            Err(e) => return skip(&format!("cannot start redis-server: {e}")),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_unavailable_and_the_store_recovers() {
    let port = free_port();
    let Some(mut server) = PrivateRedis::start(port) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let id = id();
    let r = record(r#"{"up":true}"#, 60_000);
    assert!(store.save(&id, &r, SaveIf::Absent).await.unwrap());
    assert_eq!(store.load(&id).await.unwrap(), Some(r.clone()));
    let held = store.lock(&id, Duration::from_secs(1)).await.unwrap();

    server.kill();
    // Releasing a lock while Redis is down neither panics nor blocks.
    drop(held);
    let bound = Duration::from_secs(6);
    let started = Instant::now();
    let err = store.load(&id).await.expect_err("load while down");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    eprintln!("load while down: {err} after {:?}", started.elapsed());
    assert!(
        started.elapsed() < bound,
        "load took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = store
        .save(&id, &r, SaveIf::Live)
        .await
        .expect_err("save while down");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        started.elapsed() < bound,
        "save took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = store
        .lock_and_load(&id, Duration::from_secs(30))
        .await
        .expect_err("lock while down");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        started.elapsed() < bound,
        "lock took {:?}",
        started.elapsed()
    );
    assert!(store.count().await.is_err());

    // Back on the same port, empty (no persistence): the same store value
    // works again without being rebuilt.
    let _server = PrivateRedis::start(port).expect("restart");
    let id = self::id();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failures = 0;
    loop {
        match store.save(&id, &r, SaveIf::Absent).await {
            Ok(saved) => {
                assert!(saved);
                break;
            }
            Err(e) => {
                failures += 1;
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!("recovered after {failures} failed call(s)");
    assert!(failures <= 3, "{failures} failures after the restart");
    assert_eq!(store.load(&id).await.unwrap(), Some(r));
    let (g, _) = store
        .lock_and_load(&id, Duration::from_secs(1))
        .await
        .unwrap();
    drop(g);
}

fn signal(server: &PrivateRedis, sig: &str) {
    let pid = server.child.as_ref().expect("running").id().to_string();
    let status = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_answers_unavailable_in_bounded_time() {
    let Some(server) = PrivateRedis::start(free_port()) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let id = id();
    let r = record(r#"{"up":true}"#, 60_000);
    assert!(store.save(&id, &r, SaveIf::Absent).await.unwrap());

    // The connection stays open but nothing answers.
    signal(&server, "-STOP");
    let started = Instant::now();
    let err = store.load(&id).await.expect_err("load while hung");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let took = started.elapsed();
    eprintln!("load while hung: {err} after {took:?}");
    assert!(took < Duration::from_secs(6), "load took {took:?}");

    signal(&server, "-CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.load(&id).await {
            Ok(loaded) => {
                assert_eq!(loaded, Some(r));
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
