//! What the logs say: with `debug = true` the whole life of a session and
//! every failure is logged, and no line carries a full session id — on
//! every store. (Every scenario of `stores!` checks the last part too, for
//! whatever it made the library log.)

use sessions_test_support as common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::app::{config, cookie, serve_app};
use common::client::Client;
use common::logs;
use common::stores::{memcached_set, memcached_value, redis_data_key, redis_raw, Fixture, Kind};
use common::watched::Watched;
use server_sessions::store::{SaveIf, SessionStore};
use server_sessions::{
    store::{Record, StoreKey},
    SessionId,
};

stores!(logs_never_carry_a_full_session_id);

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
    let addr = serve_app(config, watched.clone()).await;
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
    let guard = f
        .store
        .lock(&held.store_key(), Duration::from_secs(5))
        .await
        .unwrap();
    let r = client.get_with("/count", Some(&cookie(&second))).await;
    assert_eq!(r.status, 503);
    drop(guard);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The store down: 503.
    watched.set_down(true);
    assert_eq!(
        client
            .get_with("/count", Some(&cookie(&second)))
            .await
            .status,
        503
    );
    watched.set_down(false);
    // A record whose data is not a JSON object: treated as missing.
    let corrupt = SessionId::generate().unwrap();
    let now = server_sessions::store::now_millis();
    let garbage = Record {
        data: b"\x80\x04\x95pickle".to_vec(),
        created: now,
        expires: now + 60_000,
        timeout: None,
        user: None,
    };
    assert!(f
        .store
        .save(&corrupt.store_key(), &garbage, SaveIf::Absent)
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
        .save(&damaged.store_key(), &garbage, SaveIf::Absent)
        .await
        .unwrap());
    let tampered = damage(f, &damaged.store_key()).await;
    if tampered {
        let r = client
            .get_with("/count", Some(&cookie(&damaged.to_string())))
            .await;
        assert_eq!(r.body, "true 1");
    }
    ids.insert(damaged.to_string());
    client.get("/logout").await;
    // And the keys: the log names sessions by their short form only.
    ids.extend(watched.all_keys());

    let text = logs::text();
    for id in &ids {
        assert!(!text.contains(id.as_str()), "a full session id in the log");
    }
    logs::assert_no_full_ids();
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
            Kind::Memcached => "ignoring an unreadable session in memcached",
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
    // Every store call says, at debug level, what it was and how long it
    // took (for a lock: the wait), in a span naming the session's short key.
    let first_tag = short(&first);
    for op in ["lock_and_load", "save_and_unlock"] {
        assert!(
            text.lines().any(|l| l.contains("session store call")
                && l.contains(&format!("op=\"{op}\""))
                && l.contains("ms=")
                && l.contains(&first_tag)),
            "no timed {op} call of session {first_tag} in the log"
        );
    }
}

/// Damages the stored form of `id` behind the store's back, in a way only
/// that store can hold: a framed record with a wrong checksum (Redis, file),
/// a negative creation time (the SQL stores). Returns false for RAM, which
/// has no stored form of its own.
async fn damage(f: &Fixture, key: &StoreKey) -> bool {
    match f.kind {
        Kind::Ram => false,
        Kind::Redis => {
            let prefix = f.prefix.as_ref().unwrap();
            let mut conn = redis_raw().await;
            let now = server_sessions::store::now_millis();
            let mut bytes = Record {
                data: b"{}".to_vec(),
                created: now,
                expires: now + 60_000,
                timeout: None,
                user: None,
            }
            .encode();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            ::redis::cmd("SET")
                .arg(redis_data_key(prefix, key))
                .arg(bytes)
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(&mut conn)
                .await
                .unwrap();
            true
        }
        Kind::Postgres => {
            let table = f.table.as_ref().unwrap();
            let n = f
                .admin
                .as_ref()
                .unwrap()
                .execute(
                    &format!("UPDATE \"{table}\" SET created_at = -1 WHERE id = $1"),
                    &[&key.to_string()],
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
                .path()
                .join("sessions")
                .join(format!("session-{key}"));
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            std::fs::write(&path, bytes).unwrap();
            true
        }
        Kind::Memcached => {
            let data_key = format!("{}{key}", f.prefix.as_ref().unwrap());
            let mut bytes = memcached_value(&data_key).await.unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            memcached_set(&data_key, &bytes, 60).await;
            true
        }
        Kind::Mysql => {
            let sql = "UPDATE {t} SET created_at = -1 WHERE id = ?";
            let (_, n) = f.mysql_run(sql, vec![key.to_string().into()]).await;
            assert_eq!(n, 1);
            true
        }
        Kind::Sqlite => {
            let path = f.dir.as_ref().unwrap().path().join("sessions.db");
            let key = key.to_string();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                let n = conn
                    .execute("UPDATE sessions SET created_at = -1 WHERE id = ?1", [&key])
                    .unwrap();
                assert_eq!(n, 1);
            })
            .await
            .unwrap();
            true
        }
    }
}
