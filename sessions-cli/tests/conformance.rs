//! CherryPy's `test_session.py` scenarios, against the real `sessions`
//! binary serving the conformance app over a real socket (SPEC §6), once
//! per store. The shared stores also run two instances on one store.

#[path = "../../sessions/tests/common/mod.rs"]
mod common;
mod server;

use std::time::Duration;

use common::Client;
use server::{cherrypy_config, Server, TempDir};

/// Starts the conformance app; `{dir}` in `extra` stands for a fresh
/// directory that lives as long as the returned guard.
fn start(extra: &str) -> (Server, TempDir) {
    let dir = TempDir::new("conformance");
    let extra = extra.replace("{dir}", dir.0.to_str().unwrap());
    let config = dir.write("site.conf", &cherrypy_config(&extra));
    (Server::conformance(&config), dir)
}

/// Runs each scenario against one store; `$extra` gives the store's config
/// lines, or `None` to skip (a server unreachable outside CI).
macro_rules! scenarios {
    ($store:ident, $extra:expr) => {
        mod $store {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn test_0_session() {
                if let Some(extra) = $extra {
                    crate::test_0_session(&extra).await;
                }
            }

            #[tokio::test]
            async fn data_is_json() {
                if let Some(extra) = $extra {
                    crate::data_is_json(&extra).await;
                }
            }

            #[tokio::test]
            async fn test_1_concurrency() {
                if let Some(extra) = $extra {
                    crate::concurrency(&format!("{extra}\ntools.sessions.timeout = 1")).await;
                }
            }

            #[tokio::test]
            async fn concurrency_with_early_locking() {
                if let Some(extra) = $extra {
                    crate::concurrency(&format!(
                        "{extra}\ntools.sessions.timeout = 1\ntools.sessions.locking = 'early'"
                    ))
                    .await;
                }
            }

            #[tokio::test]
            async fn concurrency_with_explicit_locking() {
                if let Some(extra) = $extra {
                    crate::concurrency(&format!(
                        "{extra}\ntools.sessions.timeout = 1\ntools.sessions.locking = 'explicit'"
                    ))
                    .await;
                }
            }

            #[tokio::test]
            async fn test_5_error_paths() {
                if let Some(extra) = $extra {
                    crate::test_5_error_paths(&extra).await;
                }
            }

            #[tokio::test]
            async fn test_6_regenerate() {
                if let Some(extra) = $extra {
                    crate::test_6_regenerate(&extra).await;
                }
            }

            #[tokio::test]
            async fn test_7_session_cookies() {
                if let Some(extra) = $extra {
                    crate::test_7_session_cookies(&extra).await;
                }
            }
        }
    };
}

/// Runs the two-instance scenario against one shared store.
macro_rules! shared {
    ($store:ident, $extra:expr) => {
        mod $store {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn two_instances_share_sessions_and_lose_no_update() {
                if let Some(extra) = $extra {
                    crate::two_instances(&extra).await;
                }
            }
        }
    };
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `None` (skip) when nothing listens at `addr`, unless in CI.
fn reachable(addr: &str, what: &str) -> Option<()> {
    if std::net::TcpStream::connect(addr).is_ok() {
        return Some(());
    }
    assert!(!in_ci(), "CI=true and {what} at {addr} is unreachable");
    eprintln!("skipping: {what} at {addr} is unreachable");
    None
}

fn unique(tag: &str) -> String {
    let id = sessions::SessionId::generate().unwrap().to_string();
    format!("{tag}{}", &id[..12])
}

fn ram() -> Option<String> {
    Some(String::new())
}

fn redis() -> Option<String> {
    reachable("127.0.0.1:6379", "redis")?;
    Some(format!(
        "tools.sessions.storage_type = 'redis'\n\
         tools.sessions.storage_url = 'redis://127.0.0.1:6379/'\n\
         tools.sessions.redis_prefix = '{}:'",
        unique("test-e2e-")
    ))
}

/// The Redis Cluster (3 masters, 3 replicas) or Sentinel set that this
/// test process starts on loopback and shares, each test on a prefix of its
/// own.
fn redis_at(url: String) -> String {
    format!(
        "tools.sessions.storage_type = 'redis'\n\
         tools.sessions.storage_url = '{url}'\n\
         tools.sessions.redis_prefix = '{}:'",
        unique("test-e2e-")
    )
}

fn redis_cluster() -> Option<String> {
    Some(redis_at(common::redis_topology::shared_cluster()?.url()))
}

fn redis_sentinel() -> Option<String> {
    Some(redis_at(common::redis_topology::shared_sentinels()?.url()))
}

/// Every save waits for its replica (each master has one).
fn waiting(extra: Option<String>) -> Option<String> {
    Some(format!(
        "{}\ntools.sessions.redis_wait_replicas = 1",
        extra?
    ))
}

fn postgres() -> Option<String> {
    reachable("127.0.0.1:5432", "postgres")?;
    // Named as the store tests name theirs, so their sweep drops it later.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Some(format!(
        "tools.sessions.storage_type = 'postgres'\n\
         tools.sessions.storage_url = 'postgres://postgres@127.0.0.1:5432/test'\n\
         tools.sessions.table = '{}'",
        unique(&format!("test_{secs}_"))
    ))
}

fn file() -> Option<String> {
    Some(
        "tools.sessions.storage_type = 'file'\n\
         tools.sessions.storage_path = '{dir}/sessions'"
            .to_string(),
    )
}

fn sqlite() -> Option<String> {
    Some(
        "tools.sessions.storage_type = 'sqlite'\n\
         tools.sessions.storage_path = '{dir}/sessions.db'"
            .to_string(),
    )
}

mod ram {
    scenarios!(scenarios, crate::ram());
}

mod file {
    scenarios!(scenarios, crate::file());
    shared!(shared, crate::file());

    #[tokio::test]
    async fn session_files_follow_cherrypys_layout() {
        crate::file_layout().await;
    }

    #[tokio::test]
    async fn a_server_killed_under_write_load_loses_no_told_session() {
        crate::killed_under_load().await;
    }
}

mod postgres {
    scenarios!(scenarios, crate::postgres());
    shared!(shared, crate::postgres());
}

mod sqlite {
    scenarios!(scenarios, crate::sqlite());
    shared!(shared, crate::sqlite());
}

mod redis {
    scenarios!(scenarios, crate::redis());
    shared!(shared, crate::redis());
}

mod redis_cluster {
    scenarios!(scenarios, crate::redis_cluster());
    shared!(shared, crate::redis_cluster());
    shared!(
        shared_waiting_for_replicas,
        crate::waiting(crate::redis_cluster())
    );
}

mod redis_sentinel {
    scenarios!(scenarios, crate::redis_sentinel());
    shared!(shared, crate::redis_sentinel());
    shared!(
        shared_waiting_for_replicas,
        crate::waiting(crate::redis_sentinel())
    );
}

/// Two `sessions` processes on one store: a session started on one
/// continues on the other, and 5 threads × 30 requests on each, all on one
/// session, lose no update.
async fn two_instances(extra: &str) {
    let dir = TempDir::new("shared");
    let extra = extra.replace("{dir}", dir.0.to_str().unwrap());
    let config = dir.write(
        "site.conf",
        &cherrypy_config(&format!("{extra}\ntools.sessions.timeout = 1")),
    );
    let (one, two) = (Server::conformance(&config), Server::conformance(&config));
    let mut a = Client::new(one.addr);
    assert_eq!(a.get("/").await.body, "1");
    let mut b = Client::new(two.addr);
    b.cookie = a.cookie.clone();
    assert_eq!(
        b.get("/").await.body,
        "2",
        "session did not continue on the other instance"
    );
    let (r1, r2) = tokio::join!(a.hammer("/", 5, 30), b.hammer("/", 5, 30));
    let replies: Vec<_> = r1.into_iter().chain(r2).collect();
    let errors: Vec<_> = replies.iter().filter(|r| r.status != 200).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let highest = replies.iter().map(|r| r.body.parse::<u64>().unwrap()).max();
    assert_eq!(
        highest,
        Some(2 + 300),
        "updates were lost between instances"
    );
    assert_eq!(a.get("/").await.body, "303");
}

async fn test_0_session(extra: &str) {
    let (server, _dir) = start(extra);
    let mut c = Client::new(server.addr);
    let r = c.get("/testStr").await;
    assert_eq!(r.body, "1");
    let attrs = r.cookie_attrs();
    let names: Vec<&str> = attrs.keys().map(String::as_str).collect();
    // CherryPy sends session_id, expires and Path; we add the integer
    // Max-Age and the secure defaults HttpOnly and SameSite=Lax.
    assert_eq!(
        names,
        ["expires", "httponly", "max-age", "path", "samesite"]
    );
    assert_eq!(attrs["max-age"], "1");
    assert_eq!(c.get("/testStr").await.body, "2");
    assert_eq!(c.get("/testStr").await.body, "3");
    assert_eq!(c.get("/length").await.body, "1");
    assert_eq!(c.get("/delkey?key=counter").await.status, 200);

    // Wait for the session timeout (1 second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.get("/").await.body, "1");
    assert_eq!(c.get("/length").await.body, "1");
    assert_eq!(c.get("/keyin?key=counter").await.body, "True");
    assert_eq!(c.get("/keyin?key=nothing").await.body, "False");
    let cookieset1 = c.cookie.clone();

    // A new session, and the length again.
    let mut c2 = Client::new(server.addr);
    c2.get("/").await;
    assert_eq!(c2.get("/length").await.body, "2");

    // Delete both.
    assert_eq!(c2.get("/delete").await.body, "done");
    let r = c.get_with("/delete", cookieset1.as_deref()).await;
    assert_eq!(r.body, "done");
    assert!(r.set_cookie.unwrap().contains("Max-Age=0"));
    // As in CherryPy, a new session counts once it has been saved.
    let mut c3 = Client::new(server.addr);
    assert_eq!(c3.get("/length").await.body, "0");
    assert_eq!(c3.get("/length").await.body, "1");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut c4 = Client::new(server.addr);
    assert_eq!(c4.get("/length").await.body, "0");
}

async fn data_is_json(extra: &str) {
    let (server, _dir) = start(extra);
    let mut c = Client::new(server.addr);
    c.get("/testStr").await;
    let r = c.get("/data").await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"aha": "foo", "counter": 1}));
}

async fn concurrency(extra: &str) {
    let (server, _dir) = start(extra);
    let mut c = Client::new(server.addr);
    assert_eq!(c.get("/").await.body, "1");
    let replies = c.hammer("/", 5, 30).await;
    let errors: Vec<_> = replies
        .iter()
        .filter(|r| r.status != 200 || r.body.parse::<u64>().is_err())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let hitcount = replies.iter().map(|r| r.body.parse::<u64>().unwrap()).max();
    assert_eq!(hitcount, Some(1 + 5 * 30));
}

async fn test_5_error_paths(extra: &str) {
    let (server, _dir) = start(extra);
    let mut c = Client::new(server.addr);
    c.get("/testStr").await;
    let r = c.get("/unknown/page").await;
    assert_eq!(r.status, 404);
    // 405 comes before any session code: no cookie, no session work.
    let r = c
        .request(reqwest::Method::POST, "/restricted", c.cookie.as_deref())
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.set_cookie, None);
    assert_eq!(c.get("/restricted").await.body, "GET");
}

async fn test_6_regenerate(extra: &str) {
    let (server, _dir) = start(extra);
    let mut c = Client::new(server.addr);
    c.get("/testStr").await;
    let id1 = c.id().unwrap();
    assert_eq!(c.get("/regen").await.body, "logged in");
    let id2 = c.id().unwrap();
    assert_ne!(id1, id2);
    assert_eq!(c.get("/testStr").await.body, "2");

    let id1 = c.id().unwrap();
    let r = c
        .get_with(
            "/testStr",
            Some("session_id=maliciousid; expires=Sat, 27 Oct 2017 04:18:28 GMT; Path=/;"),
        )
        .await;
    let id2 = r.cookie_value().unwrap();
    assert_ne!(id1, id2);
    assert_ne!(id2, "maliciousid");
    assert_eq!(r.body, "1");
}

async fn test_7_session_cookies(extra: &str) {
    let (server, _dir) = start(extra);
    let mut c = Client::new(server.addr);
    let r = c.get("/session_cookie").await;
    let attrs = r.cookie_attrs();
    // No expires: a browser-session cookie. CherryPy's set is {temp, Path};
    // ours adds the secure defaults.
    assert_eq!(
        attrs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["httponly", "path", "samesite"]
    );
    assert_eq!(attrs["path"], "/session_cookie");
    assert!(r.set_cookie.as_ref().unwrap().starts_with("temp="));
    let id1 = r.cookie_value().unwrap();
    assert_eq!(r.body, id1);

    // Another request in the same "browser session".
    let r = c.get("/session_cookie").await;
    assert_eq!(r.body, id1);
    assert!(!r.cookie_attrs().contains_key("expires"));

    tokio::time::sleep(Duration::from_millis(500)).await;
    // A browser close: no cookie sent.
    let mut other = Client::new(server.addr);
    let id2 = other.get("/session_cookie").await.body;
    assert_ne!(id1, id2);

    // The first session times out after 1 s, the second a little later.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_ne!(
        c.get("/session_cookie").await.body,
        id1,
        "first session did not time out"
    );
    assert_eq!(
        other.get("/session_cookie").await.body,
        id2,
        "second session ended early"
    );
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_ne!(
        other.get("/session_cookie").await.body,
        id2,
        "second session did not time out"
    );
}

#[tokio::test]
async fn the_seed_config_is_understood() {
    // The seed document's example, verbatim. Its directory does not exist
    // here, so serving must fail with one clear line naming the store.
    let dir = TempDir::new("seed");
    let config = dir.write(
        "seed.conf",
        "\t[/]\n\ttools.sessions.on = True\n\ttools.sessions.storage_type = \"file\"\n\
         \ttools.sessions.storage_path = \"/proc/sessions-cannot-be-here\"\n\ttools.sessions.timeout = 60\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessions"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("file store"), "{err}");
}

#[tokio::test]
async fn config_errors_name_file_line_and_key() {
    let dir = TempDir::new("badconf");
    let config = dir.write(
        "bad.conf",
        "[/]\ntools.sessions.on = True\ntools.sessions.timout = 5\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessions"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf:3: tools.sessions.timout: unknown session key"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// The data files in a file store's directory, by name.
fn session_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("session-"))
                .collect()
        })
        .unwrap_or_default()
}

/// CherryPy's file-store checks: `session-<id>` appears, `/delete` removes
/// it, and clean-up removes expired files (with their lock files).
async fn file_layout() {
    let (server, dir) = start(&file().unwrap());
    let store = dir.0.join("sessions");
    let mut c = Client::new(server.addr);
    c.get("/testStr").await;
    let id = c.id().unwrap();
    assert!(session_files(&store).contains(&format!("session-{id}")));
    assert_eq!(c.get("/delete").await.body, "done");
    assert!(!session_files(&store).contains(&format!("session-{id}")));
    let mut d = Client::new(server.addr);
    d.get("/").await;
    assert!(!session_files(&store).is_empty());
    // Timeout 1 s, clean-up every second.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(session_files(&store), Vec::<String>::new());
}

/// kill -9 of a server under write load, then a restart on the same
/// directory: every session a client was told about (got a cookie for)
/// loads, with at least the count the client last saw.
async fn killed_under_load() {
    let dir = TempDir::new("kill9");
    let config = dir.write(
        "site.conf",
        &cherrypy_config(&format!(
            "tools.sessions.storage_type = 'file'\n\
             tools.sessions.storage_path = '{}/sessions'\n\
             tools.sessions.timeout = 60",
            dir.0.display()
        )),
    );
    let mut server = Server::conformance(&config);
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut told: Vec<(String, u64)> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // A new visitor, then a few updates of its session.
                    let mut c = Client::new(addr);
                    for _ in 0..5 {
                        match c
                            .try_request(reqwest::Method::GET, "/testStr", c.cookie.as_deref())
                            .await
                        {
                            Ok(r) if r.status == 200 => {
                                if let Some(v) = r.cookie_value() {
                                    c.cookie = Some(format!("session_id={v}"));
                                    let n: u64 = r.body.parse().unwrap();
                                    told.retain(|(id, _)| *id != v);
                                    told.push((v, n));
                                }
                            }
                            _ => return told,
                        }
                    }
                }
                told
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.kill();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut told = Vec::new();
    for w in writers {
        told.extend(w.await.unwrap());
    }
    assert!(
        told.len() > 20,
        "only {} sessions written before the kill",
        told.len()
    );
    let server = Server::conformance(&config);
    let probe = Client::new(server.addr);
    for (id, seen) in &told {
        let r = probe
            .get_with("/testStr", Some(&format!("session_id={id}")))
            .await;
        assert_eq!(r.status, 200);
        let n: u64 = r.body.parse().unwrap();
        assert!(n > *seen, "session {} lost: saw {seen}, now {n}", &id[..8]);
    }
}
