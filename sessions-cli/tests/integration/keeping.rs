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

/// Where a test's two instances keep their sessions: a Redis server of the
/// test's own, or a table of its own on the shared PostgreSQL whose
/// notification connections carry a name of their own. Either way a test
/// that cuts notifications cuts only its own processes'.
struct Place {
    /// The Redis server, stopped when the test ends.
    redis: Option<server::redis_topology::Standalone>,
    /// The Redis prefix or the PostgreSQL table.
    name: String,
}

impl Store {
    /// The config of two instances, and their place; `None` (a skip,
    /// outside CI) when the store cannot be had.
    fn config(self, dir: &TempDir, extra: &str) -> Option<(std::path::PathBuf, Place)> {
        let (place, storage) = match self {
            Store::Redis => {
                let redis =
                    server::redis_topology::or_skip(server::redis_topology::Standalone::start())?;
                let prefix = unique_prefix();
                let storage = format!(
                    "tools.sessions.storage_type = 'redis'\n\
                     tools.sessions.storage_url = '{}'\n\
                     tools.sessions.redis_prefix = '{prefix}'",
                    redis.url()
                );
                let place = Place {
                    redis: Some(redis),
                    name: prefix,
                };
                (place, storage)
            }
            Store::Postgres => {
                if std::net::TcpStream::connect("127.0.0.1:5432").is_err() {
                    return server::ci::skip("127.0.0.1:5432 is not reachable");
                }
                let table = unique_table();
                let storage = format!(
                    "tools.sessions.storage_type = 'postgres'\n\
                     tools.sessions.storage_url = 'postgres://postgres@127.0.0.1:5432/test'\n\
                     tools.sessions.postgres_listen_url = \
                     'postgres://postgres@127.0.0.1:5432/test?application_name={table}'\n\
                     tools.sessions.table = '{table}'"
                );
                let place = Place {
                    redis: None,
                    name: table,
                };
                (place, storage)
            }
        };
        let config = dir.write(
            "site.conf",
            &cherrypy_config(&format!("{storage}\ntools.sessions.timeout = 1\n{extra}")),
        );
        Some((config, place))
    }

    /// `redis-cli` against the place's own Redis server.
    fn redis_cli(place: &Place) -> Command {
        let port = place
            .redis
            .as_ref()
            .expect("a Redis place has its server")
            .node
            .port;
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        cmd
    }

    /// `psql` on the shared PostgreSQL, running `sql`.
    fn psql(sql: &str) -> Command {
        let mut cmd = Command::new("psql");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-tAc",
            sql,
        ]);
        cmd
    }

    /// Whether the session of `cookie` (`name=id`) is locked in the store
    /// at `place` right now: after its request ended, that is, kept.
    fn locked(self, place: &Place, cookie: &str) -> bool {
        let key = server::key_of(cookie.split_once('=').unwrap().1);
        let mut cmd = match self {
            Store::Redis => {
                let mut cmd = Self::redis_cli(place);
                cmd.args(["EXISTS", &format!("{}{{{key}}}:lock", place.name)]);
                cmd
            }
            Store::Postgres => Self::psql(&format!(
                "SELECT count(*) FROM \"{}_locks\" WHERE id = '{key}' \
                 AND lease_expires > (extract(epoch from now()) * 1000)::bigint",
                place.name
            )),
        };
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Cuts the connections that bring this test's processes their
    /// notifications (the stopped one's among them), so that requests to
    /// give a session back cannot wait in its socket until it resumes.
    fn cut_notifications(self, place: &Place) {
        let mut cmd = match self {
            Store::Redis => {
                let mut cmd = Self::redis_cli(place);
                cmd.args(["CLIENT", "KILL", "TYPE", "pubsub"]);
                cmd
            }
            Store::Postgres => Self::psql(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = '{}'",
                place.name
            )),
        };
        let out = cmd.output().expect("run redis-cli or psql");
        assert!(out.status.success(), "{out:?}");
        // Both answer how many connections they cut: the stopped
        // process's at least.
        let cut: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        assert!(cut >= 1, "no notification connection was cut: {out:?}");
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
async fn given_back(store: Store) {
    let dir = TempDir::new("keep-give-back");
    let Some((config, _place)) = store.config(&dir, "tools.sessions.lock_timeout = 1") else {
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
    store.cut_notifications(&place);
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
