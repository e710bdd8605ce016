//! The PostgreSQL store through PgBouncer in transaction pooling mode,
//! where consecutive transactions of one client may run on different server
//! connections, so no server-side state may outlive a transaction: the
//! conformance suite and two instances losing no update, with the default
//! `postgres_prepared` (which finds the bouncer out by itself) and with
//! prepared statements off; the default under load; and a forced `true`,
//! which prepares all the same.
//!
//! The bouncer is `SESSIONS_TEST_PGBOUNCER_URL`, by default
//! `postgres://postgres@127.0.0.1:6432/test` (`.ci/run` starts one in front
//! of the test server). Outside CI a bouncer that does not answer skips the
//! tests; under `CI=true` it fails them.

#![cfg(feature = "postgres")]

use sessions_test_support as common;

use std::sync::Arc;
use std::time::Duration;

use common::ci::skip;
use common::records::{key, record};
use common::stores::{chain, drop_table, postgres_admin};
use common::temp::unique_table;
use server_sessions::store::{self, PostgresStore, SaveIf, SessionAdmin, SessionStore};

fn bouncer_url() -> String {
    std::env::var("SESSIONS_TEST_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/test".to_owned())
}

/// A fresh store for each conformance check, with the defaults, or `None`
/// to skip.
async fn fresh_store() -> Option<PostgresStore> {
    store_through_bouncer(&unique_table(), |store| store).await
}

/// A ready store through the bouncer on `table`, set up by `options`, or
/// `None` (skip) when no bouncer answers.
async fn store_through_bouncer(
    table: &str,
    options: impl FnOnce(PostgresStore) -> PostgresStore,
) -> Option<PostgresStore> {
    postgres_admin().await?;
    let store = PostgresStore::new(&bouncer_url())
        .unwrap()
        .with_table(table)
        .unwrap()
        .with_max_connections(8)
        .with_timeout(Duration::from_secs(3));
    let store = options(store);
    match store.ready().await {
        Ok(()) => Some(store),
        Err(e) => skip(format!(
            "PgBouncer at {} is unreachable: {e:?}",
            bouncer_url()
        )),
    }
}

server_sessions::store_conformance!(async { super::fresh_store().await });

/// Two instances through one bouncer, 8 tasks alternating between them,
/// lose no update: one with the defaults, one with prepared statements
/// off (Debian's PgBouncer, 1.18, keeps no prepared statement across
/// transactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_no_update() {
    let table = unique_table();
    let Some(a) = store_through_bouncer(&table, |store| store).await else {
        return;
    };
    let Some(b) = store_through_bouncer(&table, |s| s.with_prepared_statements(false)).await else {
        return;
    };
    server_sessions::store::conformance::no_lost_updates_between(&a, &b).await;
}

/// Tasks at once, each a run of requests: enough, over 16 connections, that
/// a bouncer in transaction mode hands statements prepared on one server
/// connection to others that never saw them.
const TASKS: usize = 64;
const REQUESTS: usize = 5;

/// What a request does to the store, as the middleware would: take the
/// lock and read, save and release, then once more on the session now
/// saved, then read it and delete it.
async fn requests(store: Arc<dyn SessionAdmin>) -> Result<(), store::Error> {
    for _ in 0..REQUESTS {
        let key = key();
        let (guard, found) = store.lock_and_load(&key, Duration::from_secs(5)).await?;
        assert!(found.is_none());
        guard
            .save_and_release(&record("1", 60_000), SaveIf::Absent)
            .await?;
        let (guard, found) = store.lock_and_load(&key, Duration::from_secs(5)).await?;
        assert_eq!(found.map(|r| r.data), Some(b"1".to_vec()));
        guard
            .save_and_release(&record("2", 60_000), SaveIf::Live)
            .await?;
        assert!(store.exists(&key).await?);
        store.delete(&key).await?;
    }
    Ok(())
}

/// The errors of [`TASKS`] tasks of [`requests`] at once on `store`.
async fn under_load(store: &Arc<dyn SessionAdmin>) -> Vec<store::Error> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| tokio::spawn(requests(store.clone())))
        .collect();
    let mut errors = Vec::new();
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            errors.push(e);
        }
    }
    errors
}

/// The store a config file names: `postgres` through the bouncer on
/// `table`, with the `extra` keys; or `None` (skip) when no bouncer
/// answers.
async fn opened_through_bouncer(table: &str, extra: &str) -> Option<Arc<dyn SessionAdmin>> {
    postgres_admin().await?;
    let config = server_sessions::Config::from_toml_str(
        &format!(
            "[\"/\"]\nsessions.on = true\nsessions.storage_type = \"postgres\"\n\
             sessions.storage_url = \"{}\"\nsessions.table = \"{table}\"\n{extra}",
            bouncer_url()
        ),
        "test.toml",
    )
    .unwrap();
    match server_sessions::store::open(&config).await {
        Ok(store) => Some(store),
        Err(e) => skip(format!(
            "PgBouncer at {} is unreachable: {e}",
            bouncer_url()
        )),
    }
}

/// Drops `table`, once the test is done with it.
async fn drop_test_table(table: &str) {
    if let Some(admin) = postgres_admin().await {
        drop_table(&admin, table).await;
    }
}

/// A config without `postgres_prepared`, as a user who points
/// `storage_url` at a bouncer writes it, works through the bouncer under
/// load: the store sees that the server was reached at another address
/// than the bouncer's, says so once, and sends every statement unnamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_defaults_work_under_load() {
    common::logs::install();
    let table = unique_table();
    let Some(store) = opened_through_bouncer(&table, "").await else {
        return;
    };
    let mut errors = under_load(&store).await;
    errors.extend(under_load(&store).await);
    drop_test_table(&table).await;
    let shown: Vec<String> = errors.iter().map(|e| chain(e)).collect();
    assert!(shown.is_empty(), "{} failed: {shown:#?}", shown.len());
    assert!(format!("{store:?}").contains("named: false"), "{store:?}");
    let switched = common::logs::text()
        .lines()
        .filter(|line| line.contains(&table) && line.contains("unnamed"))
        .count();
    assert_eq!(switched, 1, "the switch to unnamed statements, logged once");
}

/// `postgres_prepared = true` prepares statements even through a bouncer
/// that loses them: the setting forces it, and the errors show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_prepared_statements_stay_prepared() {
    let table = unique_table();
    let Some(store) = opened_through_bouncer(&table, "sessions.postgres_prepared = true\n").await
    else {
        return;
    };
    let mut errors = Vec::new();
    for _ in 0..10 {
        errors = under_load(&store).await;
        if !errors.is_empty() {
            break;
        }
    }
    drop_test_table(&table).await;
    let shown: Vec<String> = errors.iter().map(|e| chain(e)).collect();
    assert!(
        shown.iter().any(|e| e.contains("prepared statement")),
        "statements prepared on one server connection and missed on another: {shown:#?}"
    );
}
