//! Sealed records (`seal_records`), on every store, over HTTP: a session
//! is written with sealing on, then everything the store's server holds is
//! read back raw, behind the store's back (Redis keys, the PostgreSQL
//! table, the SQLite database and the file store's directory byte for
//! byte, memcached's items; for the RAM store, which has no outside, the
//! record as it keeps it), and neither a data value nor the id appears in
//! it. What stays readable is what stores act on without the id: the
//! times and the user (its index finds the session); the data opens with
//! the id only. A record written before sealing was on still loads, and is
//! sealed at its next save.

use sessions_test_support as common;

use std::path::Path;

use axum::routing::get;
use axum::Router;
use common::app::config;
use common::client::{serve, Client};
use common::stores::{Fixture, Kind};
use server_sessions::store::SaveIf;
use server_sessions::{Session, SessionConfig, SessionId, SessionLayer, UserId};

stores!(
    a_dump_shows_no_data_and_no_id,
    an_unsealed_record_still_loads,
    without_sealing_the_dump_shows_the_data
);

/// What the handler stores: nothing of it may reach the store in clear.
const SECRET: &str = "card-4111-1111-1111-1111";
const USER: &str = "alice@example.com";

fn sealing() -> SessionConfig {
    let mut c = config();
    c.seal_records = true;
    c
}

fn app(f: &Fixture) -> Router {
    app_with(f, sealing())
}

fn app_with(f: &Fixture, config: SessionConfig) -> Router {
    Router::new()
        .route(
            "/login",
            get(|s: Session| async move {
                s.insert("card", SECRET).await?;
                s.set_user(UserId::new(USER).unwrap()).await?;
                Ok::<_, server_sessions::Error>("in")
            }),
        )
        .route(
            "/card",
            get(|s: Session| async move {
                Ok::<_, server_sessions::Error>(s.get::<String>("card").await?.unwrap_or_default())
            }),
        )
        .route(
            "/count",
            get(|s: Session| async move {
                let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
                s.insert("n", n).await?;
                Ok::<_, server_sessions::Error>(n.to_string())
            }),
        )
        .layer(SessionLayer::new(f.store.clone()).with_config(config))
}

async fn a_dump_shows_no_data_and_no_id(f: &Fixture) {
    let addr = serve(app(f)).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/login").await.status, 200);
    let id = client.id().unwrap();
    assert_eq!(
        client.get("/card").await.body,
        SECRET,
        "the session reads back"
    );

    let dump = dump(f).await;
    assert!(
        dump.len() >= SECRET.len() + server_sessions::seal::OVERHEAD,
        "the dump holds the session: {} bytes",
        dump.len()
    );
    let contains = |needle: &[u8]| dump.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(SECRET.as_bytes()), "a data value is in the dump");
    assert!(!contains(b"card"), "a data key is in the dump");
    assert!(!contains(id.as_bytes()), "the id is in the dump");
    assert!(
        !contains(hex(SECRET.as_bytes()).as_bytes()),
        "the data, as hex"
    );

    // What stays readable: the times and the user; the data is sealed, and
    // only the id opens it.
    let id: SessionId = id.parse().unwrap();
    let record = f.store.load(&id.store_key()).await.unwrap().unwrap();
    assert!(record.is_sealed());
    assert_eq!(record.user.as_ref().map(UserId::as_str), Some(USER));
    assert!(record.created > 0 && record.expires > record.created);
    let opened = record.open_data(&id).unwrap();
    let data: serde_json::Value = serde_json::from_slice(&opened).unwrap();
    assert_eq!(data["card"], SECRET);
    let other = SessionId::generate().unwrap();
    assert!(record.open_data(&other).is_err());
    // The user index still finds the session.
    let found = f
        .store
        .sessions_of(&UserId::new(USER).unwrap())
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, id.store_key());
}

async fn an_unsealed_record_still_loads(f: &Fixture) {
    let id = SessionId::generate().unwrap();
    let record = common::records::record(r#"{"n":5}"#, 60_000);
    assert!(f
        .store
        .save(&id.store_key(), &record, SaveIf::Absent)
        .await
        .unwrap());
    let addr = serve(app(f)).await;
    let client = Client::new(addr);
    let r = client
        .get_with("/count", Some(&format!("session_id={id}")))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "6"), "{r:?}");
    let record = f.store.load(&id.store_key()).await.unwrap().unwrap();
    assert!(record.is_sealed(), "sealed at its next save");
    assert_eq!(&record.open_data(&id).unwrap()[..], br#"{"n":6}"#);
}

/// The control: the dump does read what the store holds, so the checks
/// above would see the data if it were there.
async fn without_sealing_the_dump_shows_the_data(f: &Fixture) {
    let addr = serve(app_with(f, config())).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/login").await.status, 200);
    let dump = dump(f).await;
    assert!(dump.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything the store's server holds for this fixture, raw.
async fn dump(f: &Fixture) -> Vec<u8> {
    let mut out = Vec::new();
    match f.kind {
        Kind::Ram => {
            // No outside to read: the records as the store keeps them.
            use futures_util::StreamExt;
            let keys: Vec<_> = f.store.keys().collect().await;
            for key in keys.into_iter().flatten() {
                let r = f.store.load(&key).await.unwrap().unwrap();
                out.extend_from_slice(&r.data);
            }
        }
        Kind::Redis => {
            let mut conn = common::stores::redis_raw().await;
            let prefix = f.prefix.as_deref().unwrap();
            let keys: Vec<Vec<u8>> = ::redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut conn)
                .await
                .unwrap();
            for key in keys {
                out.extend_from_slice(&key);
                let kind: String = ::redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let values: Vec<Vec<u8>> = match kind.as_str() {
                    "string" => vec![::redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap()],
                    "zset" => ::redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    "hash" => ::redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    "set" => ::redis::cmd("SMEMBERS")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                    other => panic!("a Redis {other} the dump does not read"),
                };
                for v in values {
                    out.extend_from_slice(&v);
                }
            }
        }
        Kind::Postgres => {
            let admin = f.admin.as_ref().unwrap();
            let table = f.table.as_deref().unwrap();
            // Every column as text (bytea as hex), and the data column raw.
            for row in admin
                .query(&format!("SELECT t::text, t.data FROM {table} t"), &[])
                .await
                .unwrap()
            {
                out.extend_from_slice(row.get::<_, String>(0).as_bytes());
                out.extend_from_slice(&row.get::<_, Vec<u8>>(1));
            }
        }
        Kind::Mysql => {
            // Every column of every row, the data column raw (as the
            // server sends it).
            let columns = "CONCAT_WS(' ', id, created_at, expires_at, \
                 COALESCE(timeout_ms, ''), COALESCE(user_id, ''))";
            for sql in [
                format!("SELECT {columns} FROM {{t}}"),
                "SELECT data FROM {t}".into(),
            ] {
                for text in f.mysql_run(&sql, Vec::new()).await.0 {
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        Kind::Sqlite | Kind::File => read_tree(f.dir.as_ref().unwrap().path(), &mut out),
        Kind::Memcached => {
            let prefix = f.prefix.as_deref().unwrap();
            for key in common::stores::memcached_keys(prefix).await {
                out.extend_from_slice(key.as_bytes());
                out.extend(
                    common::stores::memcached_value(&key)
                        .await
                        .unwrap_or_default(),
                );
            }
        }
    }
    out
}

/// Every file under `dir`, byte for byte (the SQLite database with its
/// journal, the file store's records and index entries).
fn read_tree(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend_from_slice(path.to_string_lossy().as_bytes());
            read_tree(&path, out);
        } else {
            out.extend_from_slice(path.to_string_lossy().as_bytes());
            out.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
}
