//! The Redis store against the shared Redis: the conformance suite, the
//! key layout and native TTLs, unreadable values, and the lease lock.
//! Outages of a server of the tests' own are in `faults/redis_outage.rs`.
//!
//! Every test uses its own key prefix, so runs never collide.

#![cfg(feature = "redis")]

use sessions_test_support as common;

use std::time::{Duration, Instant};

use common::records::{key, record};
use common::stores::{redis, redis_data_key, redis_lock_key, redis_raw, redis_url};
use common::temp::unique_prefix;
use futures_util::StreamExt;
use redis::AsyncCommands;
use server_sessions::store::{now_millis, StoreKey};
use server_sessions::store::{Error, RedisStore, SaveIf, SessionAdmin, SessionStore};

server_sessions::store_conformance!(async {
    sessions_test_support::stores::Fixture::new(sessions_test_support::stores::Kind::Redis).await
});

/// Clean-up removes nothing itself (the expired record is already gone by
/// its TTL) and never touches a held lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_is_a_no_op_and_keeps_held_locks() {
    let Some(store) = redis(&unique_prefix()).await else {
        return;
    };
    let (live, dead) = (key(), key());
    assert!(store
        .save(&live, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert!(store
        .save(&dead, &record("{}", 200), SaveIf::Absent)
        .await
        .unwrap());
    let held = store.lock(&dead, Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.clean_up().await.unwrap(), 0);
    assert!(store.exists(&live).await.unwrap());
    assert_eq!(store.load(&dead).await.unwrap(), None);
    assert!(
        matches!(
            store.lock(&dead, Duration::from_millis(200)).await,
            Err(Error::LockTimeout(_))
        ),
        "clean-up released a held lock"
    );
    drop(held);
    drop(store.lock(&dead, Duration::from_secs(2)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_layout_and_native_ttl() {
    let prefix = unique_prefix();
    let Some(store) = redis(&prefix).await else {
        return;
    };
    let mut raw = redis_raw().await;
    let key = key();
    let r = record(r#"{"a":1}"#, 60_000);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());

    let stored: Vec<u8> = raw.get(redis_data_key(&prefix, &key)).await.unwrap();
    assert_eq!(stored, r.encode());
    let ttl: i64 = raw.pttl(redis_data_key(&prefix, &key)).await.unwrap();
    assert!((55_000..=60_000).contains(&ttl), "pttl {ttl}");

    let store = store.with_lease(Duration::from_secs(3));
    let guard = store.lock(&key, Duration::from_secs(1)).await.unwrap();
    let ttl: i64 = raw.pttl(redis_lock_key(&prefix, &key)).await.unwrap();
    assert!((1..=3_000).contains(&ttl), "lock pttl {ttl}");
    drop(guard);
    // The release is spawned by the guard's drop.
    let deadline = Instant::now() + Duration::from_secs(2);
    while raw
        .exists::<_, bool>(redis_lock_key(&prefix, &key))
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "lock key not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_moves_the_ttl_and_keeps_the_value() {
    let prefix = unique_prefix();
    let Some(store) = redis(&prefix).await else {
        return;
    };
    let mut raw = redis_raw().await;
    let key = key();
    let r = record(r#"{"k":"v"}"#, 5_000);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    let before: Vec<u8> = raw.get(redis_data_key(&prefix, &key)).await.unwrap();

    let later = now_millis() + 600_000;
    assert!(store.touch(&key, later).await.unwrap());
    let after: Vec<u8> = raw.get(redis_data_key(&prefix, &key)).await.unwrap();
    assert_eq!(before, after, "touch rewrote the value");
    let ttl: i64 = raw.pttl(redis_data_key(&prefix, &key)).await.unwrap();
    assert!(ttl > 590_000, "pttl {ttl}");

    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!((&loaded.data, loaded.created), (&r.data, r.created));
    assert!(loaded.expires.abs_diff(later) <= 1_000, "{loaded:?}");
    // Touching a missing session creates nothing.
    let other = self::key();
    assert!(!store.touch(&other, later).await.unwrap());
    assert!(!raw
        .exists::<_, bool>(redis_data_key(&prefix, &other))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_values_load_as_missing() {
    let prefix = unique_prefix();
    let Some(store) = redis(&prefix).await else {
        return;
    };
    let store = store.with_max_size(100);
    let mut raw = redis_raw().await;

    let garbage = key();
    let _: () = raw
        .set_ex(redis_data_key(&prefix, &garbage), b"\x80\x04pickled", 60)
        .await
        .unwrap();
    let truncated = key();
    let bytes = record("{}", 60_000).encode();
    let _: () = raw
        .set_ex(
            redis_data_key(&prefix, &truncated),
            &bytes[..bytes.len() - 1],
            60,
        )
        .await
        .unwrap();
    let empty = key();
    let _: () = raw
        .set_ex(redis_data_key(&prefix, &empty), b"", 60)
        .await
        .unwrap();
    let wrong_type = key();
    let _: () = raw
        .hset(redis_data_key(&prefix, &wrong_type), "f", "v")
        .await
        .unwrap();
    let _: () = raw
        .expire(redis_data_key(&prefix, &wrong_type), 60)
        .await
        .unwrap();
    let oversized = key();
    let big = record(&format!("\"{}\"", "x".repeat(10_000)), 60_000);
    let _: () = raw
        .set_ex(redis_data_key(&prefix, &oversized), big.encode(), 60)
        .await
        .unwrap();

    for key in [garbage, truncated, empty, wrong_type, oversized] {
        assert_eq!(store.load(&key).await.unwrap(), None, "{key:?}");
        assert!(!store.exists(&key).await.unwrap(), "{key:?}");
        let (guard, loaded) = store
            .lock_and_load(&key, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(loaded, None, "{key:?}");
        drop(guard);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_and_keys_skip_locks_and_foreign_keys() {
    let prefix = unique_prefix();
    let Some(store) = redis(&prefix).await else {
        return;
    };
    let mut raw = redis_raw().await;
    let (a, b, locked_only) = (key(), key(), key());
    for key in [&a, &b] {
        assert!(store
            .save(key, &record("{}", 60_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    let g1 = store.lock(&a, Duration::from_secs(1)).await.unwrap();
    let g2 = store
        .lock(&locked_only, Duration::from_secs(1))
        .await
        .unwrap();
    for foreign in ["other", "{not-an-id}", "{0123}"] {
        let _: () = raw
            .set_ex(format!("{prefix}{foreign}"), "x", 60)
            .await
            .unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 2);
    let mut listed: Vec<StoreKey> = store.keys().map(|r| r.unwrap()).collect().await;
    listed.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(store.clean_up().await.unwrap(), 0);
    drop((g1, g2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_frees_the_lock_of_a_vanished_holder() {
    let prefix = unique_prefix();
    let Some(waiter) = redis(&prefix).await else {
        return;
    };
    let key = key();
    let lease = Duration::from_secs(1);
    // The holder lives in a runtime of its own; dropping that runtime is
    // the crash: the guard was forgotten (no release) and its renewal task
    // dies with the runtime.
    let holder = {
        let (url, prefix) = (redis_url(), prefix.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = RedisStore::connect(&url)
                    .await
                    .unwrap()
                    .with_prefix(prefix)
                    .with_lease(lease);
                let guard = store.lock(&key, Duration::from_secs(1)).await.unwrap();
                // Renewed past its first lease while the holder lives.
                tokio::time::sleep(lease * 2).await;
                std::mem::forget(guard);
            });
        })
    };
    holder.join().unwrap();

    assert!(matches!(
        waiter.lock(&key, Duration::from_millis(100)).await,
        Err(Error::LockTimeout(_))
    ));
    let started = Instant::now();
    let guard = waiter.lock(&key, Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < lease + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_lock_past_its_lease() {
    let prefix = unique_prefix();
    let Some(store) = redis(&prefix).await else {
        return;
    };
    let Some(other) = redis(&prefix).await else {
        return;
    };
    let lease = Duration::from_millis(500);
    let store = store.with_lease(lease);
    let key = key();
    assert!(store
        .save(&key, &record(r#"{"n":1}"#, 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let (guard, loaded) = store
        .lock_and_load(&key, Duration::from_secs(1))
        .await
        .unwrap();
    let mut r = loaded.unwrap();
    // A slow request: five leases long.
    tokio::time::sleep(lease * 5).await;
    assert!(
        matches!(
            other.lock(&key, Duration::from_millis(100)).await,
            Err(Error::LockTimeout(_))
        ),
        "lock lost while held"
    );
    r.data = br#"{"n":2}"#.to_vec();
    assert!(guard.save_and_release(&r, SaveIf::Live).await.unwrap());
    let (g, loaded) = other
        .lock_and_load(&key, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(loaded.unwrap().data, br#"{"n":2}"#.to_vec());
    drop(g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_refuses_the_save() {
    let prefix = unique_prefix();
    let Some(store) = redis(&prefix).await else {
        return;
    };
    let mut raw = redis_raw().await;
    let key = key();
    let r = record(r#"{"v":1}"#, 60_000);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    let (guard, _) = store
        .lock_and_load(&key, Duration::from_secs(1))
        .await
        .unwrap();
    // The lease ran out and someone else took the lock.
    let _: () = raw
        .set(redis_lock_key(&prefix, &key), "someone else")
        .await
        .unwrap();
    let err = guard
        .save_and_release(&record(r#"{"v":2}"#, 60_000), SaveIf::Live)
        .await
        .expect_err("save without the lock");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(store.load(&key).await.unwrap().unwrap().data, r.data);
    // The other holder's lock was left alone.
    let holder: String = raw.get(redis_lock_key(&prefix, &key)).await.unwrap();
    assert_eq!(holder, "someone else");
    let _: () = raw.del(redis_lock_key(&prefix, &key)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contended_release_wakes_the_other_instance() {
    if redis(&unique_prefix()).await.is_none() {
        return;
    }
    let url = redis_url();
    common::redis_checks::a_contended_release_wakes_the_other_instance(&url, &url).await;
}

/// The mark a waiting instance leaves goes with the release that answers
/// it, and an uncontended lock leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_mark_goes_with_the_release() {
    let prefix = unique_prefix();
    let (Some(a), Some(b)) = (redis(&prefix).await, redis(&prefix).await) else {
        return;
    };
    let mut raw = redis_raw().await;
    let (quiet, contended) = (key(), key());
    let mark = |key: &StoreKey| format!("{prefix}{{{key}}}:waiting");
    drop(a.lock(&quiet, Duration::from_secs(1)).await.unwrap());
    assert!(!raw.exists::<_, bool>(mark(&quiet)).await.unwrap());

    let held = a.lock(&contended, Duration::from_secs(1)).await.unwrap();
    assert!(matches!(
        b.lock(&contended, Duration::from_millis(100)).await,
        Err(Error::LockTimeout(_))
    ));
    assert!(raw.exists::<_, bool>(mark(&contended)).await.unwrap());
    drop(held);
    drop(b.lock(&contended, Duration::from_secs(5)).await.unwrap());
    assert!(!raw.exists::<_, bool>(mark(&contended)).await.unwrap());
}
