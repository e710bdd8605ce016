//! The Redis store on a real Redis Cluster (3 masters, 3 replicas, started
//! by the test on loopback and shared by this file's tests): the
//! conformance suite, two instances on one session, a session's keys on
//! one slot, the admin listing across every master, both URL forms, and
//! `redis_wait_replicas` met and not met.
//!
//! Without `redis-server` the tests are skipped, except under `CI=true`,
//! where that is a failure.

#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeMap;

use common::records::id;
use common::redis_topology::{shared_cluster, Cluster};
use common::temp::unique_prefix;
use futures_util::StreamExt;
use sessions::store::{Error, RedisStore, SaveIf, SessionAdmin, SessionStore};
use sessions::{Record, SessionId};
use std::time::{Duration, Instant};

/// A record that lives a minute.
fn record(data: &str) -> Record {
    common::records::record(data, 60_000)
}

/// A store on the shared cluster with a prefix of its own, that prefix,
/// and the cluster.
async fn store() -> Option<(RedisStore, String, &'static Cluster)> {
    let cluster = shared_cluster()?;
    let prefix = unique_prefix();
    let store = RedisStore::connect(&cluster.url()).await.unwrap();
    Some((store.with_prefix(prefix.clone()), prefix, cluster))
}

sessions::store_conformance!(async { store().await.map(|(s, ..)| s) });

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_lose_no_update() {
    let Some((a, prefix, cluster)) = store().await else {
        return;
    };
    // A second instance: its own connections, the same keys.
    let b = RedisStore::connect(&cluster.url())
        .await
        .unwrap()
        .with_prefix(prefix);
    sessions::store::conformance::no_lost_updates_between(&a, &b).await;
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
    let ids: Vec<SessionId> = (0..60).map(|_| id()).collect();
    for id in &ids {
        assert!(store.save(id, &record("{}"), SaveIf::Absent).await.unwrap());
    }
    let guard = store.lock(&ids[0], Duration::from_secs(5)).await;
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

    let data = format!("{prefix}{{{}}}", ids[0]);
    assert_eq!(slot(cluster, &data), slot(cluster, &format!("{data}:lock")));

    // The listing scans every master and skips lock keys.
    assert_eq!(store.count().await.unwrap(), 60);
    let mut listed: Vec<SessionId> = store.ids().map(|r| r.unwrap()).collect().await;
    listed.sort_by_key(|id| id.to_string());
    let mut expected = ids.clone();
    expected.sort_by_key(|id| id.to_string());
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
    let id = id();
    assert!(store.save(&id, &record("1"), SaveIf::Absent).await.unwrap());
    let seed = cluster.nodes[cluster.nodes.len() - 1].port;
    for url in [
        format!("redis+cluster://127.0.0.1:{seed}"),
        format!("redis+cluster://127.0.0.1:1,127.0.0.1:{seed}"),
    ] {
        let other = RedisStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .with_prefix(prefix.clone());
        assert_eq!(other.load(&id).await.unwrap().unwrap().data, b"1");
        assert!(format!("{other:?}").contains("Cluster"), "{other:?}");
    }
}

/// With one replica per master, waiting for one succeeds; waiting for two
/// cannot, so the save answers `Unavailable` — though the master has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_met_and_not_met() {
    let Some((store, ..)) = store().await else {
        return;
    };
    let one = store.clone().with_wait_replicas(1);
    let (a, b) = (id(), id());
    assert!(one.save(&a, &record("1"), SaveIf::Absent).await.unwrap());
    let (guard, loaded) = one.lock_and_load(&a, Duration::from_secs(5)).await.unwrap();
    let mut r = loaded.unwrap();
    r.data = b"2".to_vec();
    assert!(one
        .save_and_unlock(&a, &r, SaveIf::Live, guard)
        .await
        .unwrap());
    // A refused precondition is an answer, not a replication failure.
    assert!(!one.save(&b, &record("x"), SaveIf::Live).await.unwrap());

    let two = store.clone().with_wait_replicas(2);
    let started = Instant::now();
    let err = two
        .save(&b, &record("1"), SaveIf::Absent)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("1 of 2 replicas"), "{chain}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The master took the write; only its survival is in doubt.
    assert_eq!(store.load(&b).await.unwrap().unwrap().data, b"1");
    let (guard, _) = two.lock_and_load(&b, Duration::from_secs(5)).await.unwrap();
    let err = two
        .save_and_unlock(&b, &record("2"), SaveIf::Live, guard)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(matches!(
        two.delete(&b).await,
        Err(Error::Unavailable { .. })
    ));
    assert_eq!(store.load(&b).await.unwrap(), None);
    // The lock was released by the save's own script.
    drop(store.lock(&b, Duration::from_secs(1)).await.unwrap());
}
