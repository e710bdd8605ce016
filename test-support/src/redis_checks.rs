//! What the Redis Cluster and Sentinel tests check alike, each against its
//! deployment's URL: two instances losing no update, and
//! `redis_wait_replicas` with enough replicas and with too few (every master
//! of both deployments has exactly one replica).

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use server_sessions::store::Record;
use server_sessions::store::{Error, RedisStore, SaveIf, SessionStore};

use super::records::key;
use super::temp::unique_prefix;

/// A record that lives a minute.
pub fn record(data: &str) -> Record {
    super::records::record(data, 60_000)
}

/// A store at `url` with a key prefix of its own, and that prefix.
pub async fn store_at(url: &str) -> (RedisStore, String) {
    let prefix = unique_prefix();
    let store = RedisStore::connect(url).await.unwrap();
    (store.with_prefix(prefix.clone()), prefix)
}

/// Two instances on the same keys, 8 tasks alternating between them, lose
/// no update.
pub async fn two_instances_lose_no_update(url: &str) {
    let (a, prefix) = store_at(url).await;
    // A second instance: its own connections, the same keys.
    let b = RedisStore::connect(url).await.unwrap().with_prefix(prefix);
    server_sessions::store::conformance::no_lost_updates_between(&a, &b).await;
}

/// With `WAIT 1` saves, locked saves and deletes succeed; with `WAIT 2`
/// each answers unavailable, bounded in time, while the master has the
/// write and the lock is released.
pub async fn wait_replicas_met_and_not_met(url: &str) {
    let (store, _) = store_at(url).await;
    let one = store.clone().with_wait_replicas(1);
    let (a, b) = (key(), key());
    assert!(one.save(&a, &record("1"), SaveIf::Absent).await.unwrap());
    let (guard, loaded) = one.lock_and_load(&a, Duration::from_secs(5)).await.unwrap();
    let mut r = loaded.unwrap();
    r.data = b"2".to_vec();
    assert!(guard.save_and_release(&r, SaveIf::Live).await.unwrap());
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
    let err = guard
        .save_and_release(&record("2"), SaveIf::Live)
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

/// Two instances, one session: the instance that finds the lock held
/// subscribes to `{prefix}released` and marks that it waits, and the
/// holder's release publishes the session there — only then: an
/// uncontended release publishes nothing. `node` is a plain node URL where
/// the deployment's publishes arrive and where the waiting instance
/// subscribes (the first node of a Cluster URL; a Sentinel set's master).
pub async fn a_contended_release_wakes_the_other_instance(url: &str, node: &str) {
    // Neither instance keeps sessions between requests, so that the only
    // subscriber besides this test is the waiter (a keeping instance
    // subscribes too, at the same node, and the count below would race).
    let (a, prefix) = store_at(url).await;
    let a = a.with_keep(None);
    let b = RedisStore::connect(url)
        .await
        .unwrap()
        .with_prefix(prefix.clone())
        .with_keep(None);
    let channel = format!("{prefix}released");
    let client = redis::Client::open(node).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let mut messages = pubsub.into_on_message();
    let wait = Duration::from_secs(10);

    let (quiet, contended) = (key(), key());
    let (guard, _) = a.lock_and_load(&quiet, wait).await.unwrap();
    assert!(guard
        .save_and_release(&record("1"), SaveIf::Absent)
        .await
        .unwrap());

    let (held, _) = a.lock_and_load(&contended, wait).await.unwrap();
    let waiter = tokio::spawn(async move {
        let (guard, loaded) = b.lock_and_load(&contended, wait).await?;
        drop(guard);
        Ok::<_, Error>(loaded)
    });
    // The waiting instance subscribes after its first attempt found the
    // lock held (and marked it): two subscribers, this test and it.
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    loop {
        let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut raw)
            .await
            .unwrap();
        if subscribers == 2 {
            break;
        }
        assert!(
            started.elapsed() < wait,
            "the waiting instance never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held
        .save_and_release(&record("2"), SaveIf::Absent)
        .await
        .unwrap());
    // The waiter's attempts asked for the session back (`w<key>`); the
    // release then published the key itself.
    let mut asked = false;
    let released = loop {
        let message = tokio::time::timeout(wait, messages.next())
            .await
            .expect("the release published nothing")
            .unwrap();
        let payload = message.get_payload::<String>().unwrap();
        match payload.strip_prefix('w') {
            Some(wanted) => asked |= wanted == contended.to_string(),
            None => break payload,
        }
    };
    assert!(asked, "the waiter never asked for the session back");
    assert_eq!(released, contended.to_string());
    let loaded = waiter.await.unwrap().unwrap().unwrap();
    assert_eq!(loaded.data, b"2");
}
