//! Keys and seals through the binary: `sessions keygen`; `sessions show`
//! of a sealed record (`seal_records`) opens it by the session's id only,
//! and by its store key shows its times; every admin command over the
//! sealed cookie store says plainly that there is nothing on the server.

use crate::server;

use server::client::Client;
use server::temp::TempDir;
use server::{key_of, run, text, Server};

#[test]
fn keygen_prints_a_new_key() {
    let a = run(&["keygen"]);
    let b = run(&["keygen"]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let (a, b) = (text(&a.stdout), text(&b.stdout));
    assert_eq!(a.trim().len(), 43, "{a}");
    assert_ne!(a, b);
    let keys = server_sessions::Keys::parse(&format!("{a}{b}")).unwrap();
    assert_eq!(keys.len(), 2);
}

#[tokio::test]
async fn show_opens_a_sealed_record_by_its_id_only() {
    let dir = TempDir::new("sealed");
    let config = dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'file'\n\
             tools.sessions.storage_path = '{}/sessions'\ntools.sessions.seal_records = True\n",
            dir.path().display()
        ),
    );
    let conf = config.to_str().unwrap();
    let server = Server::conformance(&config);
    let mut c = Client::new(server.addr);
    assert_eq!(c.get("/testStr").await.body, "1");
    drop(server);
    let id = c.id().unwrap();

    let by_id = run(&["show", &id, "--config", conf]);
    assert!(by_id.status.success(), "{}", text(&by_id.stderr));
    let data: serde_json::Value = serde_json::from_slice(&by_id.stdout).unwrap();
    assert_eq!(data, serde_json::json!({"counter": 1}));

    let by_key = run(&["show", &key_of(&id), "--config", conf]);
    assert!(by_key.status.success(), "{}", text(&by_key.stderr));
    let (out, err) = (text(&by_key.stdout), text(&by_key.stderr));
    assert!(out.contains("created") && out.contains("expires"), "{out}");
    assert!(!out.contains("counter"), "{out}");
    assert!(err.contains("sealed"), "{err}");
}

#[test]
fn admin_commands_over_the_cookie_store_say_what_it_cannot_do() {
    let dir = TempDir::new("cookie");
    let keys = dir.write(
        "keys",
        &format!("{}\n", server_sessions::Keys::generate_line().unwrap()),
    );
    let config = dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'cookie'\n\
             tools.sessions.keys_file = '{}'\n",
            keys.display()
        ),
    );
    let conf = config.to_str().unwrap();
    let id = "0123456789abcdef0123456789abcdef01234567";
    for args in [
        vec!["list", "--config", conf],
        vec!["stats", "--config", conf],
        vec!["clean", "--config", conf],
        vec!["show", id, "--config", conf],
        vec!["delete", id, "--config", conf],
        vec!["logout", "--user", "alice", "--config", conf],
        vec!["list", "--user", "alice", "--config", conf],
    ] {
        let out = run(&args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("the cookie store keeps each session in its visitor's cookie"),
            "{args:?}: {err}"
        );
    }
}
