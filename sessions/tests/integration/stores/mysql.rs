//! The MySQL store on a real server (MariaDB in CI): the conformance suite,
//! two stores on one table excluding each other, leases that run out and
//! are renewed, damaged rows, migrations, and settings refused.

#![cfg(feature = "mysql")]

use sessions_test_support as common;

use std::time::{Duration, Instant};

use common::records::{key, record};
use common::stores::{mysql_admin, mysql_drop_table, mysql_store, Fixture, Kind};
use common::temp::unique_table;
use server_sessions::store::now_millis;
use server_sessions::store::{Error, MysqlStore, SaveIf, SessionAdmin, SessionStore};

server_sessions::store_conformance!(async {
    sessions_test_support::stores::Fixture::new(sessions_test_support::stores::Kind::Mysql).await
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_table_exclude_each_other() {
    let Some(f) = Fixture::new(Kind::Mysql).await else {
        return;
    };
    let table = f.table.clone().unwrap();
    let (a, b) = (mysql_store(&table), mysql_store(&table));
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
    f.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_run_out_and_are_renewed() {
    let Some(f) = Fixture::new(Kind::Mysql).await else {
        return;
    };
    let table = f.table.clone().unwrap();
    let store = mysql_store(&table).with_lease(Duration::from_millis(600));
    store.ready().await.unwrap();
    let (dead, live) = (key(), key());
    // Leases left by processes that died: one ran out, one has not yet.
    let now = now_millis() as i64;
    let sql =
        "INSERT INTO {t}_locks (id, owner, lease_expires) VALUES (?, 'gone', ?), (?, 'gone', ?)";
    let sql = sql.replace("{t}_locks", &format!("`{table}_locks`"));
    f.mysql_run(
        &sql,
        vec![
            dead.to_string().into(),
            (now - 1).into(),
            live.to_string().into(),
            (now + 60_000).into(),
        ],
    )
    .await;
    drop(store.lock(&dead, Duration::from_millis(500)).await.unwrap());
    assert!(matches!(
        store.lock(&live, Duration::from_millis(200)).await,
        Err(Error::LockTimeout(_))
    ));

    // A held lock outlives its lease because it is renewed.
    let other = mysql_store(&table);
    let held = store.lock(&dead, Duration::from_secs(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(matches!(
        other.lock(&dead, Duration::from_millis(200)).await,
        Err(Error::LockTimeout(_))
    ));
    drop(held);
    drop(other.lock(&dead, Duration::from_secs(2)).await.unwrap());

    // Clean-up removes leases that ran out, and only those.
    let sql = format!("UPDATE `{table}_locks` SET lease_expires = ? WHERE id = ?");
    f.mysql_run(&sql, vec![(now - 1).into(), live.to_string().into()])
        .await;
    store.clean_up().await.unwrap();
    let count = format!("SELECT count(*) FROM `{table}_locks`");
    assert_eq!(f.mysql_run(&count, vec![]).await.0, ["0"]);
    f.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_saves_nothing() {
    let Some(f) = Fixture::new(Kind::Mysql).await else {
        return;
    };
    let table = f.table.clone().unwrap();
    let store = mysql_store(&table);
    let key = key();
    assert!(store
        .save(&key, &record("before", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let guard = store.lock(&key, Duration::from_secs(2)).await.unwrap();
    // Another process took the row over (as if our lease had run out).
    let sql = format!("UPDATE `{table}_locks` SET owner = 'thief' WHERE id = ?");
    let (_, n) = f.mysql_run(&sql, vec![key.to_string().into()]).await;
    assert_eq!(n, 1);
    let err = guard
        .save_and_release(&record("after", 60_000), SaveIf::Live)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(store.load(&key).await.unwrap().unwrap().data, b"before");
    f.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_missing() {
    let Some(f) = Fixture::new(Kind::Mysql).await else {
        return;
    };
    let key = key();
    assert!(f
        .save(&key, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let sql = "UPDATE {t} SET timeout_ms = -5 WHERE id = ?";
    f.mysql_run(sql, vec![key.to_string().into()]).await;
    assert_eq!(f.load(&key).await.unwrap(), None);
    f.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_and_concurrently() {
    let Some(admin) = mysql_admin().await else {
        return;
    };
    let table = unique_table();
    let stores: Vec<MysqlStore> = (0..4)
        .map(|_| mysql_store(&table).with_auto_migrate(false))
        .collect();
    let applied = futures_util::future::join_all(stores.iter().map(MysqlStore::migrate)).await;
    let applied: Vec<u32> = applied.into_iter().map(Result::unwrap).collect();
    assert_eq!(applied.iter().sum::<u32>(), 2, "{applied:?}");
    assert_eq!(stores[0].migrate().await.unwrap(), 0);
    assert_eq!(stores[0].count().await.unwrap(), 0);
    mysql_drop_table(&admin, &table).await;
}

#[tokio::test]
async fn bad_settings_are_refused() {
    for bad in [
        "mysql://root@127.0.0.1:3306",
        "mysql://u@h/db?bogus=1",
        "http://h/db",
    ] {
        let err = MysqlStore::new(bad).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    setting: "storage_url",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
    }
    let store = MysqlStore::new("mariadb://root@127.0.0.1:3306/test").unwrap();
    for bad in ["a-b", "a.b.c", &"t".repeat(57)] {
        let err = store.clone().with_table(bad).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    setting: "table",
                    ..
                }
            ),
            "{bad}"
        );
    }
    // Never connected: a server that is not there fails the operation.
    let gone = MysqlStore::new("mysql://root@127.0.0.1:1/test")
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    assert!(matches!(gone.ready().await, Err(Error::Unavailable { .. })));
}
