//! A leaked store hands out no session: sessions are made over HTTP (new,
//! counted, regenerated, one held under its lock while the store is read),
//! then everything the backend holds is read behind the store's back —
//! file names and bytes, the SQLite file with its WAL, Redis keys and
//! values, memcached's keys and values, the SQL tables — and none of the ids is in it, as text or as
//! raw bytes, while every session's store key is (so the read saw them).
//!
//! The RAM store is left out: it holds what the process holds, and its
//! table is keyed by the same `StoreKey`s the type system hands every
//! store.

use sessions_test_support as common;

use std::time::Duration;

use common::app::{config, cookie, serve_app};
use common::client::Client;
use common::records::key_of;
use common::stores::{memcached_keys, memcached_value, redis_raw, Fixture, Kind};
use futures_util::StreamExt;
use redis::AsyncCommands;
use server_sessions::SessionId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_holds_no_id() {
    holds_no_id(Kind::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_holds_no_id() {
    holds_no_id(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_holds_no_id() {
    holds_no_id(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_holds_no_id() {
    holds_no_id(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_store_holds_no_id() {
    holds_no_id(Kind::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_store_holds_no_id() {
    holds_no_id(Kind::Memcached).await;
}

async fn holds_no_id(kind: Kind) {
    let Some(f) = Fixture::new(kind).await else {
        return;
    };
    let addr = serve_app(config(), f.store.clone()).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let client = Client::new(addr);
        let r = client.get_with("/count", None).await;
        assert_eq!(r.status, 200);
        let id = r.cookie_value().unwrap();
        let r = client.get_with("/count", Some(&cookie(&id))).await;
        assert_eq!(r.body, "false 2");
        ids.push(id);
    }
    // A regenerated session: the old id was in the store once.
    let client = Client::new(addr);
    let old = ids[0].clone();
    let r = client.get_with("/regen", Some(&cookie(&old))).await;
    assert_eq!(r.status, 200);
    let new = r.cookie_value().unwrap();
    assert_ne!(new, old);
    ids.push(new.clone());
    // One session in a request that holds its lock while the store is read.
    let held = ids[1].clone();
    let holder = tokio::spawn({
        let sent = cookie(&held);
        async move { Client::new(addr).get_with("/hold", Some(&sent)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let dump = dump(&f).await;
    assert_eq!(holder.await.unwrap().status, 200);
    for id in &ids {
        let raw = raw_bytes(id);
        assert!(
            !contains(&dump, id.as_bytes()),
            "the id {id} is in the {kind:?} store"
        );
        assert!(
            !contains(&dump, &raw),
            "the id {id}'s bytes are in the {kind:?} store"
        );
    }
    // The live sessions are there, under their keys: the read saw them.
    for id in &ids[1..] {
        let key = key_of(id).to_string();
        assert!(
            contains(&dump, key.as_bytes()),
            "no key of {id} in the dump"
        );
    }
    f.clean().await;
}

/// Everything the fixture's backend holds, concatenated.
async fn dump(f: &Fixture) -> Vec<u8> {
    let mut out = Vec::new();
    match f.kind {
        Kind::Ram => unreachable!("the RAM store has nothing outside the process"),
        Kind::File | Kind::Sqlite => {
            // Every name and every byte under the directory: the session
            // and lock files, or the database with its -wal and -shm.
            let mut stack = vec![f.dir.as_ref().unwrap().path().to_path_buf()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    out.extend(path.file_name().unwrap().as_encoded_bytes());
                    out.push(b'\n');
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        out.extend(std::fs::read(&path).unwrap_or_default());
                    }
                }
            }
        }
        Kind::Redis => {
            let mut raw = redis_raw().await;
            let pattern = format!("{}*", f.prefix.as_ref().unwrap());
            let keys: Vec<String> = raw
                .scan_match::<_, String>(&pattern)
                .await
                .unwrap()
                .map(Result::unwrap)
                .collect()
                .await;
            assert!(!keys.is_empty(), "no keys under the prefix");
            for key in keys {
                out.extend(key.as_bytes());
                out.push(b'\n');
                let value: Option<Vec<u8>> = raw.get(&key).await.unwrap_or(None);
                out.extend(value.unwrap_or_default());
            }
        }
        Kind::Memcached => {
            let keys = memcached_keys(f.prefix.as_ref().unwrap()).await;
            assert!(!keys.is_empty(), "no keys under the prefix");
            for key in keys {
                out.extend(key.as_bytes());
                out.push(b'\n');
                out.extend(memcached_value(&key).await.unwrap_or_default());
            }
        }
        Kind::Mysql => {
            // Every column of every row, as text (binary data included).
            let table = f.table.as_ref().unwrap();
            for t in [table.clone(), format!("{table}_locks")] {
                let sql = format!(
                    "SELECT CONCAT_WS('|', {}) FROM `{t}`",
                    if t == *table {
                        "id, HEX(data), data, created_at, expires_at, timeout_ms, user_id"
                    } else {
                        "id, owner, lease_expires"
                    }
                );
                for row in f.mysql_run(&sql, vec![]).await.0 {
                    out.extend(row.as_bytes());
                    out.push(b'\n');
                }
            }
        }
        Kind::Postgres => {
            let table = f.table.as_ref().unwrap();
            let admin = f.admin.as_ref().unwrap();
            for t in [table.clone(), format!("{table}_locks")] {
                let rows = admin
                    .query(&format!("SELECT r::text FROM \"{t}\" r"), &[])
                    .await
                    .unwrap();
                for row in rows {
                    out.extend(row.get::<_, String>(0).as_bytes());
                    out.push(b'\n');
                }
            }
        }
    }
    out
}

/// The 20 bytes an id's text stands for.
fn raw_bytes(id: &str) -> Vec<u8> {
    let parsed: SessionId = id.parse().unwrap();
    assert_eq!(parsed.to_string(), id);
    (0..20)
        .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
