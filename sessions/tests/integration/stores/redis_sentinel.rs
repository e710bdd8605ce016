//! The Redis store on a master found through Sentinel (a master, its
//! replica and three Sentinels, started by the test on loopback and shared
//! by this file's tests): the conformance suite, two instances on one
//! session, the URL's master name, and `redis_wait_replicas` met and not
//! met.
//!
//! Without `redis-server` the tests are skipped, except under `CI=true`,
//! where that is a failure.

#![cfg(feature = "redis")]

use sessions_test_support as common;

use std::time::{Duration, Instant};

use common::records::key;
use common::redis_checks::{self, record, store_at};
use common::redis_topology::{shared_sentinels, Sentinels};
use server_sessions::store::{Error, RedisStore, SaveIf, SessionAdmin, SessionStore};

/// A store on the shared Sentinel set with a prefix of its own, that prefix,
/// and the deployment.
async fn store() -> Option<(RedisStore, String, &'static Sentinels)> {
    let set = shared_sentinels()?;
    let (store, prefix) = store_at(&set.url()).await;
    Some((store, prefix, set))
}

server_sessions::store_conformance!(async { store().await.map(|(s, ..)| s) });

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_no_update() {
    let Some(set) = shared_sentinels() else {
        return;
    };
    redis_checks::two_instances_lose_no_update(&set.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_met_and_not_met() {
    let Some(set) = shared_sentinels() else {
        return;
    };
    redis_checks::wait_replicas_met_and_not_met(&set.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_release_wakes_the_other_instance() {
    let Some(set) = shared_sentinels() else {
        return;
    };
    let master = format!("redis://127.0.0.1:{}", set.master_port().unwrap());
    redis_checks::a_contended_release_wakes_the_other_instance(&set.url(), &master).await;
}

/// The data lands on the master the Sentinels name, and reaches its
/// replica; the listing and clean-up work there as on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_to_the_named_master() {
    let Some((store, prefix, set)) = store().await else {
        return;
    };
    let key = key();
    assert!(store
        .save(&key, &record("1"), SaveIf::Absent)
        .await
        .unwrap());
    let key = format!("{prefix}{{{key}}}");
    let master = set.master_port().expect("the sentinels name a master");
    assert_eq!(master, set.master.port);
    assert_eq!(set.master.cli(&["exists", &key]).unwrap().trim(), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while set.replica.cli(&["exists", &key]).unwrap().trim() != "1" {
        assert!(Instant::now() < deadline, "not replicated");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(format!("{store:?}").contains("Sentinel"), "{store:?}");
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.clean_up().await.unwrap(), 0);
}

/// A master name the Sentinels do not know fails at start, in seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_master_name_fails_at_start() {
    let Some(set) = shared_sentinels() else {
        return;
    };
    let url = set
        .url()
        .replace(&format!("/{}", set.name), "/no-such-master");
    let started = Instant::now();
    let err = RedisStore::connect(&url).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
}
