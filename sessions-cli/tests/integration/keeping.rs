//! Sessions kept in a process between requests (Redis and PostgreSQL, the
//! stores that keep them): another process gets a kept session back at
//! once, and a process paused past its lease while another took the
//! session and wrote it serves nothing it kept.

use crate::server;

use std::process::Command;
use std::time::Duration;

use server::client::Client;
use server::temp::{unique_prefix, unique_table, TempDir};
use server::{cherrypy_config, Server};

/// A store that keeps sessions.
#[derive(Clone, Copy)]
enum Store {
    Redis,
    Postgres,
}

impl Store {
    /// The config of two instances on the local server, or `None` (a
    /// skip, outside CI) when it is down.
    /// `place` is the test's own Redis prefix or PostgreSQL table.
    fn config(self, dir: &TempDir, extra: &str) -> Option<(std::path::PathBuf, String)> {
        let (addr, place, storage) = match self {
            Store::Redis => {
                let prefix = unique_prefix();
                let storage = format!(
                    "tools.sessions.storage_type = 'redis'\n\
                     tools.sessions.storage_url = 'redis://127.0.0.1:6379/'\n\
                     tools.sessions.redis_prefix = '{prefix}'"
                );
                ("127.0.0.1:6379", prefix, storage)
            }
            Store::Postgres => {
                let table = unique_table();
                let storage = format!(
                    "tools.sessions.storage_type = 'postgres'\n\
                     tools.sessions.storage_url = 'postgres://postgres@127.0.0.1:5432/test'\n\
                     tools.sessions.table = '{table}'"
                );
                ("127.0.0.1:5432", table, storage)
            }
        };
        if std::net::TcpStream::connect(addr).is_err() {
            return server::ci::skip(format!("{addr} is not reachable"));
        }
        let config = dir.write(
            "site.conf",
            &cherrypy_config(&format!("{storage}\ntools.sessions.timeout = 1\n{extra}")),
        );
        Some((config, place))
    }

    /// Whether the session of `cookie` (`name=id`) is locked in the store
    /// at `place` right now: after its request ended, that is, kept.
    fn locked(self, place: &str, cookie: &str) -> bool {
        let key = server::key_of(cookie.split_once('=').unwrap().1);
        let (program, args) = match self {
            Store::Redis => (
                "redis-cli",
                vec![
                    "-h".to_owned(),
                    "127.0.0.1".to_owned(),
                    "EXISTS".to_owned(),
                    format!("{place}{{{key}}}:lock"),
                ],
            ),
            Store::Postgres => (
                "psql",
                vec![
                    "-h".to_owned(),
                    "127.0.0.1".to_owned(),
                    "-U".to_owned(),
                    "postgres".to_owned(),
                    "-d".to_owned(),
                    "test".to_owned(),
                    "-tAc".to_owned(),
                    format!(
                        "SELECT count(*) FROM \"{place}_locks\" WHERE id = '{key}' \
                         AND lease_expires > (extract(epoch from now()) * 1000)::bigint"
                    ),
                ],
            ),
        };
        let out = Command::new(program).args(&args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Cuts every connection that brings this store's notifications (a
    /// stopped process's among them), so that requests to give a session
    /// back cannot wait in its socket until it resumes.
    fn cut_notifications(self) {
        let (program, args): (&str, &[&str]) = match self {
            Store::Redis => (
                "redis-cli",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "6379",
                    "CLIENT",
                    "KILL",
                    "TYPE",
                    "pubsub",
                ],
            ),
            Store::Postgres => (
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "test",
                    "-tAc",
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = 'sessions-listen'",
                ],
            ),
        };
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(out.status.success(), "{out:?}");
    }
}

fn signal(server: &Server, which: &str) {
    let status = Command::new("kill")
        .args([which, &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {which} failed");
}

/// One process keeps the session after each request; the other asks for
/// it and gets it within a lock timeout far shorter than the idle time
/// after which a kept session is released anyway (2 s): the give-back
/// works. Each sees the other's last write.
/// The tests of this file one at a time: a paused test cuts every
/// process's notifications, those of another test's servers too.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn given_back(store: Store) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("keep-give-back");
    let Some((config, _)) = store.config(&dir, "tools.sessions.lock_timeout = 1") else {
        return;
    };
    let (one, two) = (Server::conformance(&config), Server::conformance(&config));
    let mut a = Client::new(one.addr);
    let mut b = Client::new(two.addr);
    let mut expected = 0;
    for round in 0..5 {
        for _ in 0..3 {
            expected += 1;
            let reply = a.get("/").await;
            assert_eq!(reply.status, 200, "round {round}: {reply:?}");
            assert_eq!(
                reply.body,
                expected.to_string(),
                "round {round}, first process"
            );
        }
        b.cookie = a.cookie.clone();
        for _ in 0..3 {
            expected += 1;
            let reply = b.get("/").await;
            assert_eq!(reply.status, 200, "round {round}: {reply:?}");
            assert_eq!(
                reply.body,
                expected.to_string(),
                "round {round}, second process"
            );
        }
    }
}

/// The process that keeps the session is stopped (SIGSTOP), and its
/// subscription cut: it can give nothing back nor learn of the other's
/// wish, so the other waits out its lease (10 s), then takes the
/// session and writes it. Resumed, the first must not serve the record
/// it kept: its next answer counts on from the other's write.
async fn paused(store: Store) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("keep-paused");
    let Some((config, place)) = store.config(&dir, "tools.sessions.lock_timeout = 30") else {
        return;
    };
    let (one, two) = (Server::conformance(&config), Server::conformance(&config));
    let mut a = Client::new(one.addr);
    // The first requests start the process's subscription, which keeping
    // waits for.
    for n in 1..=3 {
        assert_eq!(a.get("/").await.body, n.to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.get("/").await.body, "4");
    let cookie = a.cookie.clone().unwrap();
    assert!(
        store.locked(&place, &cookie),
        "the session is not kept after its request"
    );
    signal(&one, "-STOP");
    // Nor can it hear the other's requests to give the session back, which
    // would otherwise wait in its socket: this test is about the lease.
    store.cut_notifications();
    let mut b = Client::new(two.addr);
    b.cookie = a.cookie.clone();
    let taken = b.get("/").await;
    signal(&one, "-CONT");
    assert_eq!(taken.status, 200, "{taken:?}");
    assert_eq!(taken.body, "5", "the other process lost an update");
    // Resumed: what it kept (n = 4) is past its lease.
    assert_eq!(
        a.get("/").await.body,
        "6",
        "a paused process served a stale session"
    );
    assert_eq!(b.get("/").await.body, "7");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a.get("/").await.body, "8");
}

macro_rules! keeping {
    ($($store:ident: $kind:expr;)*) => {$(
        mod $store {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_kept_session_is_given_back_when_another_process_asks() {
                super::given_back($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_process_paused_past_its_lease_serves_nothing_it_kept() {
                super::paused($kind).await;
            }
        }
    )*};
}

keeping! {
    redis: crate::keeping::Store::Redis;
    postgres: crate::keeping::Store::Postgres;
}
