//! The Redis store on a real Redis Cluster (3 masters, 3 replicas, started
//! by the test on loopback and shared by this file's tests): the
//! conformance suite, two instances on one session, a session's keys on
//! one slot, the admin listing across every master, both URL forms, and
//! `redis_wait_replicas` met and not met.
//!
//! Without `redis-server` the tests are skipped, except under `CI=true`,
//! where that is a failure.

#![cfg(feature = "redis")]

use sessions_test_support as common;

use std::collections::BTreeMap;

use common::records::key;
use common::redis_checks::{self, record, store_at};
use common::redis_topology::{shared_cluster, Cluster};
use futures_util::StreamExt;
use server_sessions::store::StoreKey;
use server_sessions::store::{RedisStore, SaveIf, SessionAdmin, SessionStore};
use std::time::Duration;

/// A store on the shared cluster with a prefix of its own, that prefix,
/// and the deployment.
async fn store() -> Option<(RedisStore, String, &'static Cluster)> {
    let cluster = shared_cluster()?;
    let (store, prefix) = store_at(&cluster.url()).await;
    Some((store, prefix, cluster))
}

server_sessions::store_conformance!(async { store().await.map(|(s, ..)| s) });

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_no_update() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    redis_checks::two_instances_lose_no_update(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_met_and_not_met() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    redis_checks::wait_replicas_met_and_not_met(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_release_wakes_the_other_instance() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    // Any node delivers a Cluster's publishes; the store subscribes at the
    // first one its URL lists.
    let first = format!("redis://127.0.0.1:{}", cluster.nodes[0].port);
    redis_checks::a_contended_release_wakes_the_other_instance(&cluster.url(), &first).await;
}

/// `CLUSTER KEYSLOT` of `key`, asked of the cluster itself.
fn slot(cluster: &Cluster, key: &str) -> u16 {
    cluster.nodes[0]
        .cli(&["cluster", "keyslot", key])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Session keys are spread over every master, and the listing finds them
/// all; a session's data and lock keys share a slot (the hash tag), so its
/// single-key scripts never cross slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_every_master_and_all_are_listed() {
    let Some((store, prefix, cluster)) = store().await else {
        return;
    };
    let keys: Vec<StoreKey> = (0..60).map(|_| key()).collect();
    for key in &keys {
        assert!(store
            .save(key, &record("{}"), SaveIf::Absent)
            .await
            .unwrap());
    }
    let guard = store.lock(&keys[0], Duration::from_secs(5)).await;
    let guard = guard.unwrap();

    // Where the data keys are, by master.
    let mut per_master = BTreeMap::new();
    for port in cluster.masters() {
        let keys = cluster
            .nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap()
            .cli(&["--scan", "--pattern", &format!("{prefix}*")])
            .unwrap();
        let data_keys = keys.lines().filter(|k| !k.ends_with(":lock")).count();
        per_master.insert(port, data_keys);
    }
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    assert!(per_master.values().all(|n| *n > 0), "{per_master:?}");
    assert_eq!(per_master.values().sum::<usize>(), 60, "{per_master:?}");

    let data = format!("{prefix}{{{}}}", keys[0]);
    assert_eq!(slot(cluster, &data), slot(cluster, &format!("{data}:lock")));

    // The listing scans every master and skips lock keys.
    assert_eq!(store.count().await.unwrap(), 60);
    let mut listed: Vec<StoreKey> = store.keys().map(|r| r.unwrap()).collect().await;
    listed.sort_by_key(|key| key.to_string());
    let mut expected = keys.clone();
    expected.sort_by_key(|key| key.to_string());
    assert_eq!(listed, expected);
    drop(guard);
    // Expiry is Redis' own: nothing to clean.
    assert_eq!(store.clean_up().await.unwrap(), 0);
}

/// `redis+cluster://host:port,…` names the same cluster as the list of
/// node URLs; one reachable seed is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_url_forms_reach_the_cluster() {
    let Some((store, prefix, cluster)) = store().await else {
        return;
    };
    let key = key();
    assert!(store
        .save(&key, &record("1"), SaveIf::Absent)
        .await
        .unwrap());
    let seed = cluster.nodes[cluster.nodes.len() - 1].port;
    for url in [
        format!("redis+cluster://127.0.0.1:{seed}"),
        format!("redis+cluster://127.0.0.1:1,127.0.0.1:{seed}"),
    ] {
        let other = RedisStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .with_prefix(prefix.clone());
        assert_eq!(other.load(&key).await.unwrap().unwrap().data, b"1");
        assert!(format!("{other:?}").contains("Cluster"), "{other:?}");
    }
}

/// Each Cluster master announces only the keys it expired itself: the
/// store subscribes on every master, so sessions expired by TTL on any of
/// them are told (with `notify-keyspace-events Ex` on each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_masters_ttl_expiries_are_told() {
    let Some((store, _prefix, cluster)) = store().await else {
        return;
    };
    let masters = cluster.masters();
    assert!(masters.len() >= 3, "{masters:?}");
    for port in &masters {
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = ::redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("Ex")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let mut expired = store.expirations().expect("Redis announces expiries");
    // Time to subscribe on every master before anything expires.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Twelve keys: spread over the slots, so over every master but with
    // odds of 3 in 3^12 against.
    let mut keys: Vec<StoreKey> = (0..12).map(|_| key()).collect();
    for k in &keys {
        let short = common::records::record("{}", 1_500);
        assert!(store.save(k, &short, SaveIf::Absent).await.unwrap());
    }
    let mut told = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while told.len() < keys.len() {
        match tokio::time::timeout_at(deadline, expired.next()).await {
            Ok(Some(k)) => told.push(k),
            _ => break,
        }
    }
    keys.sort();
    told.sort();
    assert_eq!(told, keys, "every session's expiry is told, once");
}
