//! The PostgreSQL store against the shared server: the conformance suite,
//! and what only a real database shows — cancelled lock waits, a large
//! clean-up under load, concurrent migrations, table names and schemas,
//! damaged rows, paged listing. Lost connections and a crashed server are
//! in `faults/postgres_outage.rs`.
//!
//! Each test uses tables of its own ([`unique_table`]), dropped at its end
//! or, should it fail first, by a later run's sweep.

#![cfg(feature = "postgres")]

use sessions_test_support as common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::records::{key, record};
use common::stores::{chain, drop_table, postgres_admin, postgres_store, postgres_url};
use common::temp::unique_table;
use futures_util::StreamExt;
use server_sessions::store::{now_millis, StoreKey};
use server_sessions::store::{Error, PostgresStore, SaveIf, SessionAdmin, SessionStore};

server_sessions::store_conformance!(async {
    sessions_test_support::stores::Fixture::new(sessions_test_support::stores::Kind::Postgres).await
});

/// A ready store on `table`, with a pool smaller than the default.
async fn store_on(table: &str) -> PostgresStore {
    let store = postgres_store(table).with_max_connections(8);
    store.ready().await.unwrap();
    store
}

/// With the defaults, a store that reaches the server itself prepares its
/// statements: the server answers from the address and port it dials.
/// (Through a bouncer it does not: `postgres_pgbouncer.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_prepared_on_a_direct_connection() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let store = store_on(&table).await;
    assert!(store.load(&key()).await.unwrap().is_none());
    let shown = format!("{store:?}");
    drop_table(&admin, &table).await;
    assert!(
        shown.contains("prepared: None") && shown.contains("named: true"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_leaves_no_lock_behind() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let (a, b) = (store_on(&table).await, store_on(&table).await);
    let key = key();
    let held = a.lock(&key, Duration::from_secs(5)).await.unwrap();
    // Each cancelled wait closes its connection, whose server process is
    // still queued for the lock.
    for _ in 0..5 {
        let wait = b.lock(&key, Duration::from_secs(5));
        assert!(tokio::time::timeout(Duration::from_millis(50), wait)
            .await
            .is_err());
    }
    drop(held);
    let started = Instant::now();
    drop(b.lock(&key, Duration::from_secs(3)).await.unwrap());
    drop(a.lock(&key, Duration::from_secs(3)).await.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop_table(&admin, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_of_a_large_backlog_runs_in_batches_under_load() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let store = store_on(&table).await;
    admin
        .execute(
            &format!(
                "INSERT INTO \"{table}\" (id, data, created_at, expires_at) \
                 SELECT lpad(to_hex(g), 64, '0'), '\\x7b7d'::bytea, 0, 1 \
                 FROM generate_series(1, 100000) AS g"
            ),
            &[],
        )
        .await
        .unwrap();
    let live: Vec<StoreKey> = (0..10).map(|_| key()).collect();
    for key in &live {
        assert!(store
            .save(key, &record("0", 600_000), SaveIf::Absent)
            .await
            .unwrap());
    }

    let done = AtomicBool::new(false);
    let clean = async {
        let started = Instant::now();
        let removed = store.clean_up().await.unwrap();
        done.store(true, Ordering::SeqCst);
        (removed, started.elapsed())
    };
    let traffic = async {
        let (mut ops, mut slowest) = (0u32, Duration::ZERO);
        while !done.load(Ordering::SeqCst) {
            for key in &live {
                let started = Instant::now();
                let (guard, r) = store
                    .lock_and_load(key, Duration::from_secs(5))
                    .await
                    .unwrap();
                let mut r = r.expect("live session");
                let n: u64 = std::str::from_utf8(&r.data).unwrap().parse().unwrap();
                r.data = (n + 1).to_string().into_bytes();
                assert!(guard.save_and_release(&r, SaveIf::Live).await.unwrap());
                slowest = slowest.max(started.elapsed());
                ops += 1;
            }
        }
        (ops, slowest)
    };
    let ((removed, took), (ops, slowest)) = tokio::join!(clean, traffic);
    eprintln!(
        "clean-up of 100000 rows took {took:?}; {ops} requests meanwhile, slowest {slowest:?}"
    );
    assert_eq!(removed, 100_000);
    assert!(ops > 0);
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited {slowest:?}"
    );
    assert_eq!(store.count().await.unwrap(), live.len() as u64);
    let total: i64 = admin
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, live.len() as i64);
    drop_table(&admin, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_even_when_concurrent() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let make = || postgres_store(&table).with_auto_migrate(false);
    let (a, b) = (make(), make());
    // Without automatic migration, `ready` only checks the connection.
    a.ready().await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.min(rb) == 0 && ra.max(rb) > 0, "{ra} {rb}");
    assert_eq!(a.migrate().await.unwrap(), 0);
    assert_eq!(b.migrate().await.unwrap(), 0);
    let row = admin
        .query_one(
            &format!("SELECT count(*), max(version) FROM \"{table}_schema\""),
            &[],
        )
        .await
        .unwrap();
    let (count, max): (i64, i32) = (row.get(0), row.get(1));
    assert_eq!((count, i64::from(max)), (i64::from(ra.max(rb)), count));

    // The automatic migration finds nothing to do and the table works.
    let c = store_on(&table).await;
    let key = key();
    assert!(c
        .save(&key, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert!(a.exists(&key).await.unwrap());
    drop_table(&admin, &table).await;
}

#[tokio::test]
async fn bad_table_names_and_urls_are_refused() {
    let base = || PostgresStore::new(&postgres_url()).unwrap();
    let long = "t".repeat(57);
    for bad in [
        "",
        "1sessions",
        "ses-sions",
        "sessions; DROP TABLE users",
        "\"sessions\"",
        "a.b.c",
        ".sessions",
        "public.",
        "sessions ",
        "séssions",
        long.as_str(),
    ] {
        let err = base().with_table(bad).expect_err(bad);
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
    let longest = "t".repeat(56);
    let schema = "s".repeat(63);
    for good in [
        "sessions",
        "_s",
        "Web_Sessions_2",
        "public.sessions",
        longest.as_str(),
        &format!("{schema}.{longest}"),
    ] {
        base().with_table(good).expect(good);
    }
    assert!(PostgresStore::new("postgres://host:notaport/db").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_do_not_share_locks_and_schemas_work() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let schema = unique_table();
    admin
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap();
    let a = store_on(&format!("{schema}.sessions")).await;
    let b = store_on(&format!("{schema}.other")).await;
    let key = key();
    let _held = a.lock(&key, Duration::from_secs(5)).await.unwrap();
    drop(b.lock(&key, Duration::from_millis(500)).await.unwrap());
    assert!(a
        .save(&key, &record("a", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert_eq!(b.load(&key).await.unwrap(), None);
    drop(_held);
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_missing_not_errors() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let store = store_on(&table).await;
    let (negative, good) = (key(), key());
    let far = (now_millis() + 600_000) as i64;
    admin
        .execute(
            &format!(
                "INSERT INTO \"{table}\" (id, data, created_at, expires_at) VALUES \
                 ($1, '\\x7b7d', -5, $3), \
                 ('NOT-AN-ID', '\\x7b7d', 0, $3), \
                 ($2, '\\x7b7d', 0, $3)"
            ),
            &[&negative.to_string(), &good.to_string(), &far],
        )
        .await
        .unwrap();
    assert_eq!(store.load(&negative).await.unwrap(), None);
    let (guard, loaded) = store
        .lock_and_load(&negative, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(loaded, None);
    drop(guard);
    assert!(store.load(&good).await.unwrap().is_some());
    let listed: Vec<StoreKey> = store.keys().map(|r| r.unwrap()).collect().await;
    assert!(listed.contains(&good));
    assert_eq!(listed.len(), 2, "the malformed id is skipped");
    drop_table(&admin, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_paged_through_everything() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let store = store_on(&table).await;
    let far = (now_millis() + 600_000) as i64;
    admin
        .execute(
            &format!(
                "INSERT INTO \"{table}\" (id, data, created_at, expires_at) \
                 SELECT lpad(to_hex(g), 64, '0'), '\\x7b7d'::bytea, 0, \
                        CASE WHEN g % 10 = 0 THEN 1 ELSE $1::bigint END \
                 FROM generate_series(1, 1234) AS g"
            ),
            &[&far],
        )
        .await
        .unwrap();
    let listed: Vec<StoreKey> = store.keys().map(|r| r.unwrap()).collect().await;
    assert_eq!(listed.len(), 1234 - 123, "live ids only, each once");
    assert!(listed.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.count().await.unwrap(), 1234 - 123);
    drop_table(&admin, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_never_printed() {
    // Nothing listens on port 1: no server is needed for this test.
    let url = "postgres://user:secret@127.0.0.1:1/db";
    let wait = Duration::from_secs(1);
    let store = PostgresStore::new(url).unwrap().with_timeout(wait);
    let shown = format!("{store:?}");
    assert!(
        shown.starts_with("PostgresStore") && !shown.contains("secret"),
        "{shown}"
    );
    let lazy = PostgresStore::new(url)
        .unwrap()
        .with_timeout(wait)
        .with_auto_migrate(false);
    let mut errors = vec![
        store.ready().await.expect_err("no server"),
        store.migrate().await.expect_err("no server"),
        lazy.ready().await.expect_err("no server"),
        lazy.load(&key()).await.expect_err("no server"),
        lazy.lock(&key(), wait).await.expect_err("no server"),
    ];
    for bad in [
        "postgres://user:secret@127.0.0.1:notaport/db",
        "postgres://user:secret@127.0.0.1:1/db?sslmode=sometimes",
        "postgres://user:secret@[::1/db",
        "postgres://user:secret@127.0.0.1:1/db?connect_timeout",
        "host=127.0.0.1 user=user password=secret port=notaport",
        "host=127.0.0.1 user=user password='secret",
    ] {
        let err = PostgresStore::new(bad).expect_err(bad);
        assert!(
            matches!(
                err,
                Error::Config {
                    setting: "storage_url",
                    ..
                }
            ),
            "{err:?}"
        );
        errors.push(err);
    }
    for err in &errors {
        for text in [format!("{err:?}"), chain(err)] {
            assert!(!text.contains("secret"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_over_the_read_limit_are_refused() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    server_sessions::store::conformance::refuses_saves_over(&store_on(&table).await, 16 << 20)
        .await;
    drop_table(&admin, &table).await;
}

/// A save whose lease was lost — taken over by another holder, as a lease
/// that ran out during a stall allows (here the lock row is deleted behind
/// the holder's back) — writes nothing and answers unavailable; the other
/// holder's save stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_refuses_the_save() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let (a, b) = (store_on(&table).await, store_on(&table).await);
    let key = key();
    assert!(a
        .save(&key, &record("0", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let (held, _) = a.lock_and_load(&key, Duration::from_secs(5)).await.unwrap();
    admin
        .batch_execute(&format!("DELETE FROM \"{table}_locks\""))
        .await
        .unwrap();
    let (taken, _) = b.lock_and_load(&key, Duration::from_secs(5)).await.unwrap();
    let err = held
        .save_and_release(&record("a", 60_000), SaveIf::Live)
        .await
        .expect_err("a lost lease must refuse the save");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(taken
        .save_and_release(&record("b", 60_000), SaveIf::Live)
        .await
        .unwrap());
    assert_eq!(a.load(&key).await.unwrap().unwrap().data, b"b".to_vec());
    drop_table(&admin, &table).await;
}

/// A take that has to wait for the previous holder's save-and-release
/// (which deletes the lock row and writes the session in one transaction)
/// reads what that save wrote, not the version from before it: otherwise
/// the next save would overwrite an update. The previous holder is played
/// here by a transaction that stays open for a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_that_waited_reads_the_save_it_waited_for() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let store = store_on(&table).await;
    let key = key();
    assert!(store
        .save(&key, &record("old", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let far = (now_millis() + 60_000) as i64;
    admin
        .execute(
            &format!(
                "INSERT INTO \"{table}_locks\" (id, owner, lease_expires) VALUES ($1, 'x', $2)"
            ),
            &[&key.to_string(), &far],
        )
        .await
        .unwrap();
    let holder = tokio::spawn({
        let table = table.clone();
        async move {
            let Some(mut client) = postgres_admin().await else {
                return;
            };
            let tx = client.transaction().await.unwrap();
            tx.execute(
                &format!("DELETE FROM \"{table}_locks\" WHERE id = $1"),
                &[&key.to_string()],
            )
            .await
            .unwrap();
            tx.execute(
                &format!("UPDATE \"{table}\" SET data = 'new' WHERE id = $1"),
                &[&key.to_string()],
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.commit().await.unwrap();
        }
    });
    // Let the holder's transaction take its row locks first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (guard, loaded) = store
        .lock_and_load(&key, Duration::from_secs(5))
        .await
        .unwrap();
    holder.await.unwrap();
    assert_eq!(loaded.map(|r| r.data), Some(b"new".to_vec()));
    drop(guard);
    drop_table(&admin, &table).await;
}
