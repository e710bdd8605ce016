//! The PostgreSQL store through PgBouncer in transaction pooling mode,
//! where consecutive transactions of one client may run on different server
//! connections, so no server-side state may outlive a transaction: the
//! conformance suite and two instances losing no update.
//!
//! The bouncer is `SESSIONS_TEST_PGBOUNCER_URL`, by default
//! `postgres://postgres@127.0.0.1:6432/test` (`.ci/run` starts one in front
//! of the test server). Outside CI a bouncer that does not answer skips the
//! tests; under `CI=true` it fails them.

#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::ci::skip;
use common::stores::postgres_admin;
use common::temp::unique_table;
use sessions::store::PostgresStore;

fn bouncer_url() -> String {
    std::env::var("SESSIONS_TEST_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/test".to_owned())
}

/// A fresh store for each conformance check, or `None` to skip.
async fn fresh_store() -> Option<PostgresStore> {
    store_through_bouncer(&unique_table()).await
}

/// A ready store through the bouncer on `table`, or `None` (skip) when
/// no bouncer answers.
async fn store_through_bouncer(table: &str) -> Option<PostgresStore> {
    postgres_admin().await?;
    // Debian's PgBouncer (1.18) keeps no prepared statement across
    // transactions.
    let store = PostgresStore::new(&bouncer_url())
        .unwrap()
        .with_table(table)
        .unwrap()
        .with_prepared_statements(false)
        .with_max_connections(8)
        .with_timeout(Duration::from_secs(3));
    match store.ready().await {
        Ok(()) => Some(store),
        Err(e) => skip(format!(
            "PgBouncer at {} is unreachable: {e:?}",
            bouncer_url()
        )),
    }
}

sessions::store_conformance!(async { super::fresh_store().await });

/// Two instances through one bouncer, 8 tasks alternating between them,
/// lose no update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_no_update() {
    let table = unique_table();
    let Some(a) = store_through_bouncer(&table).await else {
        return;
    };
    let Some(b) = store_through_bouncer(&table).await else {
        return;
    };
    sessions::store::conformance::no_lost_updates_between(&a, &b).await;
}
