//! The SQLite store on real files: the conformance suite, two stores on one
//! file excluding each other, leases, damaged files and rows, migrations.
//! Each test uses a database in a directory of its own.

#![cfg(feature = "sqlite")]

use sessions_test_support as common;

use std::time::{Duration, Instant};

use common::records::{key, record};
use common::stores::{chain, sqlite};
use common::temp::TempDir;
use futures_util::StreamExt;
use server_sessions::store::{now_millis, StoreKey};
use server_sessions::store::{Error, SaveIf, SessionAdmin, SessionStore, SqliteStore};

server_sessions::store_conformance!(async {
    sessions_test_support::stores::Fixture::new(sessions_test_support::stores::Kind::Sqlite).await
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_exclude_each_other() {
    let dir = TempDir::new("sqlite");
    let path = dir.path().join("sessions.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    let key = key();

    let held = a.lock(&key, Duration::from_secs(5)).await.unwrap();
    let started = Instant::now();
    assert!(matches!(
        b.lock(&key, Duration::from_millis(200)).await,
        Err(Error::LockTimeout(_))
    ));
    assert!(started.elapsed() >= Duration::from_millis(150));
    drop(held);
    drop(b.lock(&key, Duration::from_secs(2)).await.unwrap());

    // Counting under the lock through both, alternately: no update is lost.
    server_sessions::store::conformance::no_lost_updates_between(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_run_out_and_are_renewed() {
    let dir = TempDir::new("sqlite");
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path)
        .await
        .unwrap()
        .with_lease(Duration::from_millis(600));
    store.ready().await.unwrap();
    let (dead, live) = (key(), key());
    // Leases left by processes that died: one ran out, one has not yet.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let now = now_millis() as i64;
    raw.execute(
        "INSERT INTO sessions_locks (id, owner, lease_expires) VALUES (?1, 'gone', ?2), (?3, 'gone', ?4)",
        (dead.to_string(), now - 1, live.to_string(), now + 60_000),
    )
    .unwrap();
    drop(store.lock(&dead, Duration::from_millis(500)).await.unwrap());
    assert!(matches!(
        store.lock(&live, Duration::from_millis(200)).await,
        Err(Error::LockTimeout(_))
    ));

    // A held lock outlives its lease because it is renewed.
    let other = SqliteStore::open(&path).await.unwrap();
    let held = store.lock(&dead, Duration::from_secs(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(matches!(
        other.lock(&dead, Duration::from_millis(200)).await,
        Err(Error::LockTimeout(_))
    ));
    drop(held);
    drop(other.lock(&dead, Duration::from_secs(2)).await.unwrap());

    // Clean-up removes leases that ran out, and only those.
    raw.execute(
        "UPDATE sessions_locks SET lease_expires = ?1 WHERE id = ?2",
        (now - 1, live.to_string()),
    )
    .unwrap();
    let held = other.lock(&dead, Duration::from_secs(2)).await.unwrap();
    store.clean_up().await.unwrap();
    let left: Vec<String> = raw
        .prepare("SELECT id FROM sessions_locks")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(left, vec![dead.to_string()]);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_leaves_no_lock_behind() {
    let dir = TempDir::new("sqlite");
    let store = sqlite(&dir).await;
    let key = key();
    let held = store.lock(&key, Duration::from_secs(5)).await.unwrap();
    for _ in 0..5 {
        let wait = store.lock(&key, Duration::from_secs(5));
        assert!(tokio::time::timeout(Duration::from_millis(30), wait)
            .await
            .is_err());
    }
    drop(held);
    drop(store.lock(&key, Duration::from_secs(2)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_files_are_clear_errors_at_open() {
    let dir = TempDir::new("sqlite");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        b"this is not an SQLite database, just some text ".repeat(100),
    )
    .unwrap();
    let missing_parent = dir.path().join("no/such/dir/sessions.db");
    for path in [garbage, dir.path().to_path_buf(), missing_parent] {
        let err = SqliteStore::open(&path).await.expect_err("open must fail");
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        let chain = chain(&err);
        assert!(chain.contains("cannot open SQLite database"), "{chain}");
        eprintln!("{chain}");
    }
    // The garbage file is left as it was.
    assert!(std::fs::read(dir.path().join("garbage.db"))
        .unwrap()
        .starts_with(b"this is not"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_even_when_concurrent() {
    let dir = TempDir::new("sqlite");
    let path = dir.path().join("sessions.db");
    let make = || SqliteStore::new(&path).with_auto_migrate(false);
    let (a, b) = (make(), make());
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.min(rb) == 0 && ra.max(rb) > 0, "{ra} {rb}");
    assert_eq!(a.migrate().await.unwrap(), 0);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let (count, max): (i64, i64) = raw
        .query_row(
            "SELECT count(*), max(version) FROM sessions_schema",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((count, max), (i64::from(ra.max(rb)), count));
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let c = SqliteStore::open(&path).await.unwrap();
    let key = key();
    assert!(c
        .save(&key, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert!(a.exists(&key).await.unwrap());
}

#[tokio::test]
async fn bad_table_names_are_refused() {
    let long = "t".repeat(57);
    for bad in [
        "",
        "1sessions",
        "ses-sions",
        "sessions; DROP TABLE users",
        "\"sessions\"",
        "main.sessions",
        "sqlite_sessions",
        "séssions",
        long.as_str(),
    ] {
        let err = SqliteStore::new("unused.db")
            .with_table(bad)
            .expect_err(bad);
        assert!(
            matches!(
                err,
                Error::Config {
                    setting: "table",
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
        assert!(chain(&err).contains("table name"), "{bad:?}: {err}");
    }
    let dir = TempDir::new("sqlite");
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::new(&path).with_table("Select").unwrap();
    store.ready().await.unwrap();
    let key = key();
    assert!(store
        .save(&key, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    // Another table in the same file is another set of sessions and locks.
    let other = SqliteStore::open(&path).await.unwrap();
    assert_eq!(other.load(&key).await.unwrap(), None);
    let _held = store.lock(&key, Duration::from_secs(2)).await.unwrap();
    drop(other.lock(&key, Duration::from_millis(500)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_in_batches_and_damaged_rows() {
    let dir = TempDir::new("sqlite");
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    let far = now_millis() as i64 + 600_000;
    // 5,000 expired rows, and 1,233 live ones of which one is malformed.
    raw.execute_batch(&format!(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 6233) \
         INSERT INTO sessions (id, data, created_at, expires_at) \
         SELECT printf('%064x', n), x'7b7d', 0, CASE WHEN n <= 5000 THEN 1 ELSE {far} END FROM g; \
         UPDATE sessions SET id = 'NOT-AN-ID' WHERE id = printf('%064x', 6000);"
    ))
    .unwrap();
    let negative = key();
    raw.execute(
        "INSERT INTO sessions (id, data, created_at, expires_at) VALUES (?1, x'7b7d', -5, ?2)",
        (negative.to_string(), far),
    )
    .unwrap();

    assert_eq!(store.clean_up().await.unwrap(), 5_000);
    assert_eq!(store.load(&negative).await.unwrap(), None);
    let (g, r) = store
        .lock_and_load(&negative, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(r, None);
    drop(g);
    let listed: Vec<StoreKey> = store.keys().map(|r| r.unwrap()).collect().await;
    // 1,232 well-formed live rows, and the one with a negative creation
    // time (listed: its id is fine); not the malformed id.
    assert_eq!(listed.len(), 1_233);
    assert!(listed.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.count().await.unwrap(), 1_234);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_over_the_read_limit_are_refused() {
    let dir = TempDir::new("sqlite");
    let store = SqliteStore::open(dir.path().join("sessions.db"))
        .await
        .unwrap();
    server_sessions::store::conformance::refuses_saves_over(&store, 16 << 20).await;
}
