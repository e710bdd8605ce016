//! Locks and races, end to end: no update lost under each locking mode, a
//! lock wait bounded by `lock_timeout`, the lock released on every path
//! (a panic, a dropped request), and saves that race deletes, regenerates,
//! expiry and released locks without resurrecting or overwriting anything
//! — the RAM store for the first, every store for the races.

use sessions_test_support as common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::app::{config, cookie, serve_app, start_session};
use common::client::Client;
use common::stores::Fixture;
use common::watched::Watched;
use server_sessions::store::{MemoryStore, SessionAdmin, SessionStore};
use server_sessions::{Locking, SessionConfig};

stores!(
    save_never_resurrects_deleted_regenerated_or_expired,
    parallel_requests_during_regenerate_lose_nothing,
    release_lock_then_end_save_overwrites_nothing,
    a_log_in_never_carries_a_deleted_session_on,
);

/// 5 clients × 30 requests on one session at once, under `locking`: the
/// counter ends at exactly 1 + 150 + 1, every update counted once.
async fn concurrency(locking: Locking) {
    let mut c = SessionConfig::default();
    c.locking = locking;
    let addr = serve_app(c, MemoryStore::new()).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/").await.body, "1");
    let replies = client.hammer("/", 5, 30).await;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let highest = replies.iter().map(|r| r.body.parse::<u64>().unwrap()).max();
    assert_eq!(highest, Some(151), "updates were lost");
    assert_eq!(client.get("/").await.body, "152");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_updates_with_implicit_locking() {
    concurrency(Locking::Implicit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_updates_with_early_locking() {
    concurrency(Locking::Early).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_updates_with_explicit_locking() {
    concurrency(Locking::Explicit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_wait_is_bounded_by_lock_timeout() {
    let mut c = SessionConfig::default();
    c.lock_timeout = Duration::from_millis(300);
    let addr = serve_app(c, MemoryStore::new()).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let holder = client.fresh();
    let held =
        tokio::spawn(async move { holder.get_with("/hold", holder.cookie.as_deref()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client.get_with("/", client.cookie.as_deref()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert_eq!(held.await.unwrap().body, "held");
    // Once free, the session works and lost nothing.
    assert_eq!(client.get("/").await.body, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_releases_the_lock_and_saves_nothing() {
    let mut c = SessionConfig::default();
    c.lock_timeout = Duration::from_secs(2);
    let addr = serve_app(c, MemoryStore::new()).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let boom = client.fresh();
    // The connection dies with the handler's task; that is an error here.
    let _ = boom
        .try_request(reqwest::Method::GET, "/boom", client.cookie.as_deref())
        .await;
    let r = client.get("/").await;
    assert_eq!(r.status, 200, "lock not released after a panic");
    assert_eq!(r.body, "2", "a panicking handler's changes were saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_releases_the_lock() {
    let mut c = SessionConfig::default();
    c.lock_timeout = Duration::from_millis(800);
    let addr = serve_app(c, MemoryStore::new()).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let cookie = client.cookie.clone().unwrap();
    // A client that gives up 200 ms into a 1.5 s handler: hyper drops the
    // request's future when the connection closes.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = impatient
        .get(format!("http://{addr}/hold"))
        .header("cookie", &cookie)
        .send()
        .await;
    assert!(err.is_err());
    drop(impatient);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Well inside the handler's 1.5 s, and with a wait shorter than it.
    let r = client.get("/").await;
    assert_eq!(r.status, 200, "lock still held by a dropped request");
    assert_eq!(r.body, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_never_resurrects_a_session_deleted_meanwhile() {
    let store = MemoryStore::new();
    let addr = serve_app(SessionConfig::default(), store.clone()).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let key = common::records::key_of(&client.id().unwrap());
    let writer = client.fresh();
    let slow = tokio::spawn(async move {
        writer
            .get_with("/slow-write?ms=500", writer.cookie.as_deref())
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An admin logs the user out while the request runs.
    store.delete(&key).await.unwrap();
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.set_cookie, None, "a cookie for a deleted session");
    assert_eq!(
        store.load(&key).await.unwrap(),
        None,
        "deleted session resurrected"
    );
}

/// A save never brings back a session that was deleted (by an admin),
/// regenerated (by a parallel request that did not wait for a lock) or
/// expired while the request ran.
async fn save_never_resurrects_deleted_regenerated_or_expired(f: &Fixture) {
    let deleted = async {
        let watched = Watched::new(f.store.clone());
        let addr = serve_app(config(), watched.clone()).await;
        let id = start_session(addr).await;
        let slow = tokio::spawn({
            let id = id.clone();
            async move {
                Client::new(addr)
                    .get_with("/slow-put?key=late&ms=600", Some(&cookie(&id)))
                    .await
            }
        });
        watched.wait_for("loaded", &id).await;
        // An admin logs the session out while a request on it runs.
        f.store.delete(&common::records::key_of(&id)).await.unwrap();
        let r = slow.await.unwrap();
        assert_eq!((r.status, r.set_cookie.as_deref()), (200, None), "{r:?}");
        assert!(!f.holds(&id).await, "a deleted session came back");
    };
    let regenerated = async {
        // Explicit locking, and a handler that takes no lock: the slow
        // request's view goes stale while another logs in.
        let mut config = config();
        config.locking = Locking::Explicit;
        let watched = Watched::new(f.store.clone());
        let addr = serve_app(config, watched.clone()).await;
        let old = start_session(addr).await;
        let slow = tokio::spawn({
            let old = old.clone();
            async move {
                Client::new(addr)
                    .get_with("/slow-put?key=late&ms=600", Some(&cookie(&old)))
                    .await
            }
        });
        watched.wait_for("loaded", &old).await;
        let r = Client::new(addr)
            .get_with("/regen", Some(&cookie(&old)))
            .await;
        let new = r.cookie_value().unwrap();
        let r = slow.await.unwrap();
        assert_eq!((r.status, r.set_cookie.as_deref()), (200, None), "{r:?}");
        assert!(!f.holds(&old).await, "a regenerated-away id came back");
        assert_eq!(f.data(&new).await.unwrap(), serde_json::json!({"n": 1}));
    };
    let expired = async {
        let mut config = config();
        config.timeout = Duration::from_millis(1_000);
        let addr = serve_app(config, f.store.clone()).await;
        let id = start_session(addr).await;
        let r = Client::new(addr)
            .get_with("/slow-put?key=late&ms=1600", Some(&cookie(&id)))
            .await;
        assert_eq!((r.status, r.set_cookie.as_deref()), (200, None), "{r:?}");
        assert!(!f.holds(&id).await, "an expired session came back");
    };
    tokio::join!(deleted, regenerated, expired);
}

/// A log-in (regenerate) racing a delete of its session — an admin's
/// `sessions delete`, a log-out everywhere — while the new id is not saved
/// yet: the new id must not carry the deleted session on. The request
/// answers, the client is told to drop its cookie, and the store holds
/// nothing of it.
async fn a_log_in_never_carries_a_deleted_session_on(f: &Fixture) {
    let watched = Watched::new(f.store.clone());
    let addr = serve_app(config(), watched.clone()).await;
    let id = start_session(addr).await;
    let slow = tokio::spawn({
        let id = id.clone();
        async move {
            Client::new(addr)
                .get_with("/slow-regen?ms=600", Some(&cookie(&id)))
                .await
        }
    });
    watched.wait_for("loaded", &id).await;
    f.store.delete(&common::records::key_of(&id)).await.unwrap();
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.set_cookie
            .as_deref()
            .is_some_and(|c| c.contains("Max-Age=0")),
        "the client keeps a cookie: {r:?}"
    );
    assert!(!f.holds(&id).await, "the deleted id came back");
    // (memcached cannot count: the cookie above is its check.)
    if let Ok(n) = f.store.count().await {
        assert_eq!(n, 0, "the deleted session lives on under a new id");
    }
}

/// Requests on the old id while another request regenerates it. "Lose no
/// data" means: every request that answered on the old session (`false n`)
/// did so in turn — the answers are exactly n0+1, n0+2, … with no
/// duplicate — and all of them are in the regenerated session; every
/// request that came after the old id was gone was told so (`true 1`: a
/// fresh session of its own, under a new id); the old id is gone.
async fn parallel_requests_during_regenerate_lose_nothing(f: &Fixture) {
    let addr = serve_app(config(), f.store.clone()).await;
    let old = start_session(addr).await;
    let client = Client::new(addr);
    for _ in 0..4 {
        client.get_with("/count", Some(&cookie(&old))).await;
    }
    let n0 = 5;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let old = old.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::new(addr);
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
            if i == 5 {
                (
                    "regen",
                    client.get_with("/regen", Some(&cookie(&old))).await,
                )
            } else {
                (
                    "count",
                    client.get_with("/count?ms=15", Some(&cookie(&old))).await,
                )
            }
        }));
    }
    let mut on_old = Vec::new();
    let mut fresh = BTreeSet::new();
    let mut new = None;
    for t in tasks {
        let (what, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "{what}: {r:?}");
        let id = r.cookie_value().unwrap();
        if what == "regen" {
            new = Some(id);
            continue;
        }
        let (missing, n) = r.body.split_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        if missing == "false" {
            assert_eq!(id, old, "{r:?}");
            on_old.push(n);
        } else {
            assert_eq!(n, 1, "{r:?}");
            assert_ne!(id, old);
            fresh.insert(id);
        }
    }
    let new = new.unwrap();
    on_old.sort_unstable();
    let expected: Vec<u64> = (n0 + 1..=n0 + on_old.len() as u64).collect();
    assert_eq!(
        on_old, expected,
        "updates on the old id were lost or doubled"
    );
    assert_eq!(
        f.data(&new).await.unwrap()["n"],
        n0 + on_old.len() as u64,
        "the regenerated session lost updates"
    );
    assert!(!f.holds(&old).await);
    assert!(!fresh.contains(&new));
    assert_eq!(fresh.len() + on_old.len(), 11);
}

/// CherryPy issue 1027: with explicit locking, a request that released its
/// lock and then keeps using the session (reading, or writing more) must
/// not, at its end-of-request save, overwrite what another request wrote
/// under the lock meanwhile.
async fn release_lock_then_end_save_overwrites_nothing(f: &Fixture) {
    let mut config = config();
    config.locking = Locking::Explicit;
    let addr = serve_app(config, f.store.clone()).await;
    let id = start_session(addr).await;
    for then in ["read", "write", "none"] {
        let (a, b) = (format!("a_{then}"), format!("b_{then}"));
        let slow = tokio::spawn({
            let (id, a) = (id.clone(), a.clone());
            async move {
                Client::new(addr)
                    .get_with(
                        &format!("/explicit?key={a}&ms=500&then={then}"),
                        Some(&cookie(&id)),
                    )
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = Client::new(addr)
            .get_with(&format!("/explicit?key={b}"), Some(&cookie(&id)))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = slow.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let data = f.data(&id).await.unwrap();
        assert_eq!(
            data[&b], true,
            "{then}: the other request's change was overwritten: {data}"
        );
        assert_eq!(data[&a], true, "{then}: {data}");
        if then == "write" {
            assert_eq!(data[&format!("{a}_after")], true, "{data}");
        }
    }
    // Implicit locking: a request that logs in and then releases the lock
    // has given up the old id before another request can take its lock.
    let addr = serve_app(self::config(), f.store.clone()).await;
    let old = start_session(addr).await;
    let login = tokio::spawn({
        let old = old.clone();
        async move {
            Client::new(addr)
                .get_with("/regen-release?ms=500", Some(&cookie(&old)))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = Client::new(addr)
        .get_with("/count", Some(&cookie(&old)))
        .await;
    assert_eq!(
        r.body, "true 1",
        "the old id was still alive after regenerate + release_lock"
    );
    let r = login.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "1"), "{r:?}");
    let new = r.cookie_value().unwrap();
    assert_eq!(f.data(&new).await.unwrap()["n"], 1);
    assert!(!f.holds(&old).await);
}
