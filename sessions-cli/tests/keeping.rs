//! Sessions kept in a process between requests (Redis): another process
//! gets a kept session back at once, and a process paused past its lease
//! while another took the session and wrote it serves nothing it kept.

mod server;

use std::process::Command;
use std::time::Duration;

use server::client::Client;
use server::temp::{unique_prefix, TempDir};
use server::{cherrypy_config, Server};

/// The config of two instances on the local Redis, or `None` (a skip,
/// outside CI) when it is down.
fn redis_config(dir: &TempDir, extra: &str) -> Option<std::path::PathBuf> {
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        return server::ci::skip("redis at 127.0.0.1:6379 is not reachable");
    }
    let prefix = unique_prefix();
    Some(dir.write(
        "site.conf",
        &cherrypy_config(&format!(
            "tools.sessions.storage_type = 'redis'\n\
             tools.sessions.storage_url = 'redis://127.0.0.1:6379/'\n\
             tools.sessions.redis_prefix = '{prefix}'\n\
             tools.sessions.timeout = 1\n{extra}"
        )),
    ))
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_is_given_back_when_another_process_asks() {
    let dir = TempDir::new("keep-give-back");
    let Some(config) = redis_config(&dir, "tools.sessions.lock_timeout = 1") else {
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_paused_past_its_lease_serves_nothing_it_kept() {
    let dir = TempDir::new("keep-paused");
    let Some(config) = redis_config(&dir, "tools.sessions.lock_timeout = 30") else {
        return;
    };
    let (one, two) = (Server::conformance(&config), Server::conformance(&config));
    let mut a = Client::new(one.addr);
    assert_eq!(a.get("/").await.body, "1");
    assert_eq!(a.get("/").await.body, "2");
    signal(&one, "-STOP");
    // Nor can it hear the other's requests to give the session back, which
    // would otherwise wait in its socket: this test is about the lease.
    let killed = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "6379",
            "CLIENT",
            "KILL",
            "TYPE",
            "pubsub",
        ])
        .output()
        .expect("run redis-cli");
    assert!(killed.status.success(), "{killed:?}");
    let mut b = Client::new(two.addr);
    b.cookie = a.cookie.clone();
    let taken = b.get("/").await;
    signal(&one, "-CONT");
    assert_eq!(taken.status, 200, "{taken:?}");
    assert_eq!(taken.body, "3", "the other process lost an update");
    // Resumed: what it kept (n = 2) is past its lease.
    assert_eq!(
        a.get("/").await.body,
        "4",
        "a paused process served a stale session"
    );
    assert_eq!(b.get("/").await.body, "5");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a.get("/").await.body, "6");
}
