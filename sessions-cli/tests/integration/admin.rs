//! The admin commands against a real store (SQLite, which needs no server)
//! filled through the real server.

use crate::server;

use std::process::Output;

use server::client::Client;
use server::temp::TempDir;
use server::{key_of, run as sessions, text, Server};

fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// A failure is one line on stderr and a non-zero exit, never a panic.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "succeeded: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("sessions: ") && err.contains(needle),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn list_show_stats_delete_clean_migrate() {
    let dir = TempDir::new("admin");
    let store = format!(
        "tools.sessions.storage_type = 'sqlite'\ntools.sessions.storage_path = '{}'\n",
        dir.path().join("s.db").display()
    );
    admin_commands(&dir, &store).await;
}

/// The same on MySQL (MariaDB in CI), on a table of its own.
#[tokio::test]
async fn list_show_stats_delete_clean_migrate_on_mysql() {
    if std::net::TcpStream::connect("127.0.0.1:3306").is_err() {
        server::ci::skip::<()>("mysql at 127.0.0.1:3306 is unreachable");
        return;
    }
    let dir = TempDir::new("admin-mysql");
    let store = format!(
        "tools.sessions.storage_type = 'mysql'\n\
         tools.sessions.storage_url = 'mysql://root@127.0.0.1:3306/test'\n\
         tools.sessions.table = '{}'\n",
        server::temp::unique_table()
    );
    admin_commands(&dir, &store).await;
}

/// `migrate`, `list`, `show`, `stats`, `delete` and `clean` on the store
/// `store` (its config lines) fills through the real server.
async fn admin_commands(dir: &TempDir, store: &str) {
    let config = dir.write(
        "site.conf",
        &format!("[/]\ntools.sessions.on = True\n{store}"),
    );
    let conf = config.to_str().unwrap();

    let out = sessions(&["migrate", "--config", conf]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("schema step(s) applied"));
    let again = sessions(&["migrate", "--config", conf]);
    assert!(
        stdout(&again).contains(": 0 schema step(s)"),
        "{}",
        stdout(&again)
    );

    let server = Server::conformance(&config);
    let mut a = Client::new(server.addr);
    a.get("/data").await;
    let mut b = Client::new(server.addr);
    b.get("/testStr").await;
    drop(server);
    let (ida, idb) = (a.id().unwrap(), b.id().unwrap());

    let out = sessions(&["list", "--config", conf]);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    // Stores hold keys, never ids: the listing shows the keys' short form.
    assert!(!text.contains(&ida) && !text.contains(&idb), "an id listed");
    assert!(text.contains(&key_of(&ida)[..8]), "{text}");
    assert!(stderr(&out).contains("2 session(s)"));

    let out = sessions(&["list", "--config", conf, "--json", "--full"]);
    assert!(!stdout(&out).contains(&ida), "an id listed");
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys.sort_unstable();
    let (keya, keyb) = (key_of(&ida), key_of(&idb));
    let mut want = vec![keya.as_str(), keyb.as_str()];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert!(rows.iter().all(|r| r["bytes"].as_u64().unwrap() > 0));

    // A session is named by its id (hashed) or by the key the listing gave.
    for named in [&ida, &keya] {
        let out = sessions(&["show", named, "--config", conf]);
        let data: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(data, serde_json::json!({"aha": "foo"}));
    }
    assert_clean_failure(
        &sessions(&["show", &ida[..39], "--config", conf]),
        "neither a session id",
    );

    let out = sessions(&["stats", "--config", conf]);
    assert!(
        stdout(&out).contains("sessions       2"),
        "{}",
        stdout(&out)
    );

    let out = sessions(&["delete", &ida, "--config", conf]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_clean_failure(
        &sessions(&["delete", &ida, "--config", conf]),
        "no live session",
    );
    assert_clean_failure(
        &sessions(&["show", &ida, "--config", conf]),
        "no live session",
    );

    let out = sessions(&["clean", "--config", conf]);
    assert!(
        stdout(&out).starts_with("removed 0 expired"),
        "{}",
        stdout(&out)
    );
    let out = sessions(&["list", "--config", conf, "--json"]);
    assert_eq!(stdout(&out).lines().count(), 1);
}

#[test]
fn errors_are_one_line() {
    assert_clean_failure(
        &sessions(&["list", "--config", "/nonexistent/site.conf"]),
        "cannot read /nonexistent/site.conf",
    );
    let dir = TempDir::new("admin-errors");
    let config = dir.write(
        "r.conf",
        "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'redis'\n\
         tools.sessions.storage_url = 'redis://127.0.0.1:1/'\n",
    );
    assert_clean_failure(
        &sessions(&["stats", "--config", config.to_str().unwrap()]),
        "cannot open the redis store",
    );
    let ram = dir.write("ram.conf", "[/]\ntools.sessions.on = True\n");
    assert_clean_failure(
        &sessions(&[
            "show",
            "../../etc/passwd",
            "--config",
            ram.to_str().unwrap(),
        ]),
        "is neither a session id",
    );
    assert_clean_failure(
        &sessions(&["migrate", "--config", ram.to_str().unwrap()]),
        "has no schema to migrate",
    );
}

/// On memcached, which cannot list its keys, `list` and `stats` say so in
/// one line; `show`, `delete` and `logout --user` work by id, key or user.
#[tokio::test]
async fn memcached_says_what_it_cannot_list() {
    if std::net::TcpStream::connect("127.0.0.1:11211").is_err() {
        server::ci::skip::<()>("memcached at 127.0.0.1:11211 is unreachable");
        return;
    }
    let dir = TempDir::new("admin");
    let config = dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'memcached'\n\
             tools.sessions.servers = ['127.0.0.1:11211']\n\
             tools.sessions.memcached_prefix = '{}'\n",
            server::temp::unique_prefix()
        ),
    );
    let conf = config.to_str().unwrap();
    let server = Server::conformance(&config);
    let mut c = Client::new(server.addr);
    assert_eq!(c.get("/testStr").await.body, "1");
    let id = c.id().unwrap();
    for command in ["list", "stats"] {
        assert_clean_failure(
            &sessions(&[command, "--config", conf]),
            "memcached cannot list its keys",
        );
    }
    let shown = sessions(&["show", &id, "--config", conf]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(stdout(&shown).contains("counter"), "{}", stdout(&shown));
    let deleted = sessions(&["delete", &key_of(&id), "--config", conf]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert_eq!(c.get("/testStr").await.body, "1", "a fresh session");
}

/// Records no save writes, with times past the year 9999 (as if written
/// into the store by hand), are damaged: `show` says there is no live
/// session and why, `list` and `list --user` leave them out and go on —
/// where each used to panic formatting such a date.
#[tokio::test]
async fn show_and_list_survive_times_out_of_range() {
    use server_sessions::store::SaveIf;
    use server_sessions::{
        store::{now_millis, Record},
        SessionId, UserId,
    };

    let dir = TempDir::new("admin-range");
    let config = dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'sqlite'\n\
             tools.sessions.storage_path = '{}'\n",
            dir.path().join("s.db").display()
        ),
    );
    let conf = config.to_str().unwrap();
    let store = server_sessions::store::open(&server_sessions::Config::load(&config).unwrap())
        .await
        .unwrap();
    let now = now_millis();
    // 10000-01-01T00:00:00Z: one millisecond past the latest there is.
    let year_10000 = 253_402_300_800_000;
    let sound = Record {
        data: br#"{"n":1}"#.to_vec(),
        created: now,
        expires: now + 3_600_000,
        timeout: None,
        user: Some(UserId::new("alice").unwrap()),
    };
    let damaged = [
        Record {
            expires: year_10000,
            ..sound.clone()
        },
        Record {
            created: year_10000,
            ..sound.clone()
        },
    ];
    let id = || SessionId::generate().unwrap().to_string();
    let good = id();
    let bad: Vec<String> = damaged.iter().map(|_| id()).collect();
    for (id, record) in std::iter::once((&good, &sound)).chain(bad.iter().zip(&damaged)) {
        let key = key_of(id).parse().unwrap();
        assert!(store.save(&key, record, SaveIf::Absent).await.unwrap());
    }
    drop(store);

    for args in [
        &["list", "--config", conf][..],
        &["list", "--config", conf, "--json"],
        &["list", "--config", conf, "--user", "alice"],
    ] {
        let out = sessions(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains(&key_of(&good)[..8]), "{args:?}: {text}");
        for id in &bad {
            assert!(!text.contains(&key_of(id)[..8]), "{args:?}: {text}");
        }
    }
    let shown = sessions(&["show", &good, "--config", conf]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    for id in &bad {
        let out = sessions(&["show", id, "--config", conf]);
        let err = stderr(&out);
        assert!(!out.status.success() && !err.contains("panicked"), "{err}");
        assert!(err.contains("no live session"), "{err}");
        assert!(
            err.contains("out of range"),
            "the reason is not logged: {err}"
        );
    }
}
