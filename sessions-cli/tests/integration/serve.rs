//! `sessions serve` beyond CherryPy's scenarios: a config it cannot use
//! (or with which no session would come back) fails with one clear line
//! naming the file, line and key (or the store),
//! and the file store as CherryPy lays it out on disk, also after a
//! `kill -9` under write load.

use crate::server;

use std::time::Duration;

use server::client::Client;
use server::temp::TempDir;
use server::{cherrypy_config, conformance_app, Server, FILE_STORE};

#[tokio::test]
async fn the_seed_config_is_understood() {
    // The example of CherryPy's session documentation (docs/spec.md
    // §2.2), indented as there, with its storage_path where no directory
    // can be made, so serving must fail with one clear line naming the
    // store.
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

/// Settings with which no session would ever come back fail `serve` at
/// start, naming the key: a cookie name that is not a token (a browser
/// reads `a=b` as the cookie `a`), a domain with a port, and a `timeout`
/// that memcached cannot keep (its expiry ends in 2038: a 19-year session
/// would be answered as stored and dropped at once).
#[tokio::test]
async fn settings_that_keep_no_session_fail_at_start() {
    let dir = TempDir::new("unkept");
    for (body, says) in [
        (
            "tools.sessions.name = 'a=b'\n",
            "bad.conf:3: tools.sessions.name: \"a=b\" is not a cookie name",
        ),
        (
            "tools.sessions.domain = 'example.com:8080'\n",
            "bad.conf:3: tools.sessions.domain: \"example.com:8080\" is not a cookie domain",
        ),
        (
            "tools.sessions.storage_type = 'memcached'\n\
             tools.sessions.servers = ['127.0.0.1:11211']\n\
             tools.sessions.timeout = 10000000\n",
            "cannot open the memcached store: invalid timeout: [/]: sessions of 6944 days",
        ),
    ] {
        let config = dir.write(
            "bad.conf",
            &format!("[/]\ntools.sessions.on = True\n{body}"),
        );
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sessions"))
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that starts would serve for ever: it gets ten seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{body}: served instead of failing");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{body}: {err}");
        assert!(err.contains(says), "{body}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
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

/// CherryPy's file-store checks, with the store key where CherryPy puts
/// the id: `session-<key>` appears, `/delete` removes it, and clean-up
/// removes expired files (with their lock files).
#[tokio::test]
async fn session_files_follow_cherrypys_layout() {
    let (server, dir) = conformance_app(FILE_STORE);
    let store = dir.path().join("sessions");
    let mut c = Client::new(server.addr);
    c.get("/testStr").await;
    let file = format!("session-{}", server::key_of(&c.id().unwrap()));
    assert!(session_files(&store).contains(&file));
    assert_eq!(c.get("/delete").await.body, "done");
    assert!(!session_files(&store).contains(&file));
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
#[tokio::test]
async fn a_server_killed_under_write_load_loses_no_told_session() {
    let dir = TempDir::new("kill9");
    let config = dir.write(
        "site.conf",
        &cherrypy_config(&format!(
            "tools.sessions.storage_type = 'file'\n\
             tools.sessions.storage_path = '{}/sessions'\n\
             tools.sessions.timeout = 60",
            dir.path().display()
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
