//! Redis going away, on a redis-server of the test's own: nothing to
//! connect to, a server killed (SIGKILL) or hung (SIGSTOP) under a store,
//! and killed and restarted under HTTP traffic. Calls answer unavailable
//! in bounded time, nothing panics, the same store value works again by
//! itself once the server is back, and no session saved before is lost.

#![cfg(feature = "redis")]

use sessions_test_support as common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::app::{app, outage_under_traffic};
use common::ci::skip;
use common::client::{free_port, serve, wait_for_port};
use common::records::{key, record};
use common::temp::TempDir;
use server_sessions::store::{Error, RedisStore, SaveIf, SessionAdmin, SessionStore};
use server_sessions::SessionConfig;

/// A redis-server of the test's own on a free port, killed when dropped
/// (also when the test fails).
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    /// Persist every write (an append-only file, fsync'ed each time), so a
    /// restart finds what was saved; otherwise a restart starts empty.
    persist: bool,
    dir: TempDir,
}

impl PrivateRedis {
    /// `None` (skip) where redis-server is not installed.
    fn start(persist: bool) -> Option<PrivateRedis> {
        let mut redis = PrivateRedis {
            child: None,
            port: free_port(),
            persist,
            dir: TempDir::new("redis"),
        };
        if let Err(e) = redis.spawn() {
            return skip(format!("redis-server cannot be started: {e}"));
        }
        Some(redis)
    }

    /// Starts the server (again, on the same port) and waits until it
    /// accepts connections.
    fn spawn(&mut self) -> std::io::Result<()> {
        let appendonly: &[&str] = if self.persist {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--daemonize", "no"])
            .args(appendonly)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10), "redis-server");
        Ok(())
    }

    /// SIGKILL: a crash, not a shutdown.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends the running server `sig` (`-STOP`, `-CONT`).
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_fast() {
    let started = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{}/", free_port()))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "{started:?}");
    let err = RedisStore::connect("not a url").await.expect_err("bad url");
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_unavailable_and_the_store_recovers() {
    let Some(mut server) = PrivateRedis::start(false) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let key = key();
    let r = record(r#"{"up":true}"#, 60_000);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));
    let held = store.lock(&key, Duration::from_secs(1)).await.unwrap();

    server.kill();
    // Releasing a lock while Redis is down neither panics nor blocks.
    drop(held);
    let bound = Duration::from_secs(6);
    let started = Instant::now();
    let err = store.load(&key).await.expect_err("load while down");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    eprintln!("load while down: {err} after {:?}", started.elapsed());
    assert!(
        started.elapsed() < bound,
        "load took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = store
        .save(&key, &r, SaveIf::Live)
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
        .lock_and_load(&key, Duration::from_secs(30))
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
    server.spawn().expect("restart");
    let key = self::key();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failures = 0;
    loop {
        match store.save(&key, &r, SaveIf::Absent).await {
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
    assert_eq!(store.load(&key).await.unwrap(), Some(r));
    let (g, _) = store
        .lock_and_load(&key, Duration::from_secs(1))
        .await
        .unwrap();
    drop(g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_answers_unavailable_in_bounded_time() {
    let Some(server) = PrivateRedis::start(false) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let key = key();
    let r = record(r#"{"up":true}"#, 60_000);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());

    // The connection stays open but nothing answers.
    server.signal("-STOP");
    let started = Instant::now();
    let err = store.load(&key).await.expect_err("load while hung");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let took = started.elapsed();
    eprintln!("load while hung: {err} after {took:?}");
    assert!(took < Duration::from_secs(6), "load took {took:?}");

    server.signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.load(&key).await {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_traffic() {
    let Some(mut redis) = PrivateRedis::start(true) else {
        return;
    };
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(app(SessionConfig::default(), store)).await;
    let redis = std::cell::RefCell::new(&mut redis);
    outage_under_traffic(
        addr,
        20,
        || redis.borrow_mut().kill(),
        || redis.borrow_mut().spawn().expect("restart redis-server"),
        Duration::from_secs(15),
    )
    .await;
}
