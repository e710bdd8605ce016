//! How a session ends by time: the idle and the absolute timeout, which
//! the server enforces whatever expiry a client forges on its cookie, and
//! a cookie replayed after the end (or after logout) that opens nothing —
//! on every store, and the RAM store through a client that keeps up.

use sessions_test_support as common;

use std::time::Duration;

use common::app::{config, cookie, serve_app, start_session};
use common::client::Client;
use common::stores::Fixture;
use server_sessions::store::MemoryStore;
use server_sessions::SessionConfig;

stores!(
    forged_far_future_expiry_is_ignored,
    absolute_timeout_ends_a_busy_session,
    replay_after_logout_idle_or_absolute_timeout_opens_nothing,
    endless_timeouts_set_in_code_last_until_the_year_9999,
);

/// A client that forges a far-future `Expires`/`Max-Age` on the cookie it
/// sends back gains nothing: the server's timeout alone decides, and the
/// cookie it sets never promises more than the timeout.
async fn forged_far_future_expiry_is_ignored(f: &Fixture) {
    let mut config = config();
    config.timeout = Duration::from_secs(1);
    let addr = serve_app(config.clone(), f.store.clone()).await;
    let client = Client::new(addr);
    let live = start_session(addr).await;
    let forged = format!(
        "session_id={live}; Expires=Fri, 31 Dec 9999 23:59:59 GMT; Max-Age=2147483647; expires=Fri, 31 Dec 9999 23:59:59 GMT"
    );
    let r = client.get_with("/count", Some(&forged)).await;
    assert_eq!(r.body, "false 2");
    let attrs = r.cookie_attrs();
    assert!(attrs["max-age"].parse::<u64>().unwrap() <= 1, "{attrs:?}");
    assert!(!attrs["expires"].contains("9999"), "{attrs:?}");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let r = client.get_with("/count", Some(&forged)).await;
    assert_eq!(r.body, "true 1", "the forged expiry kept a session alive");
    assert_ne!(r.cookie_value().unwrap(), live);
    assert!(!f.holds(&live).await);
}

/// Timeouts set in code past any clock (the config's fields are public):
/// `timeout` and `lock_timeout` of `Duration::MAX`. The session lasts
/// until the latest time there is — the cookie says the last second of the
/// year 9999 — and the next request, which waits for its lock, finds it.
/// Each used to panic: the cookie's date, the lock's deadline.
async fn endless_timeouts_set_in_code_last_until_the_year_9999(f: &Fixture) {
    let mut config = config();
    config.timeout = Duration::MAX;
    config.lock_timeout = Duration::MAX;
    let addr = serve_app(config, f.store.clone()).await;
    let client = Client::new(addr);
    let r = client.get_with("/count", None).await;
    if matches!(f.kind, common::stores::Kind::Memcached) {
        // memcached keeps nothing past 2038-01-19: such a session is
        // refused (500), never accepted and then lost.
        assert_eq!(r.status, 500, "{r:?}");
        return;
    }
    assert_eq!((r.status, r.body.as_str()), (200, "false 1"));
    let attrs = r.cookie_attrs();
    assert_eq!(
        attrs["expires"], "Fri, 31 Dec 9999 23:59:59 GMT",
        "{attrs:?}"
    );
    let live = r.cookie_value().unwrap();
    let r = client.get_with("/count", Some(&cookie(&live))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "false 2"));
    assert!(f.holds(&live).await);
}

/// A session used every 200 ms — so the idle timeout never bites — ends at
/// its absolute timeout, enforced by the server whatever the client keeps.
async fn absolute_timeout_ends_a_busy_session(f: &Fixture) {
    let mut config = config();
    config.absolute_timeout = Some(Duration::from_millis(1_500));
    let addr = serve_app(config, f.store.clone()).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/count").await.body, "false 1");
    let first = client.id().unwrap();
    let started = std::time::Instant::now();
    let mut ended = None;
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Always the first cookie, as a client that ignores new ones would.
        let r = client.get_with("/count", Some(&cookie(&first))).await;
        assert_eq!(r.status, 200);
        let max_age: u64 = r.cookie_attrs()["max-age"].parse().unwrap();
        if r.body == "true 1" {
            ended = Some(started.elapsed());
            break;
        }
        // The cookie never outlives the absolute timeout.
        assert!(max_age <= 2, "{r:?}");
    }
    let ended = ended.expect("the session outlived its absolute timeout");
    assert!(
        ended >= Duration::from_millis(1_200),
        "ended early: {ended:?}"
    );
    assert!(!f.holds(&first).await, "the store kept it");
}

/// A cookie replayed after logout, after the idle timeout and after the
/// absolute timeout opens nothing: each time a fresh, empty session under
/// a new id, and the old id stays gone from the store.
async fn replay_after_logout_idle_or_absolute_timeout_opens_nothing(f: &Fixture) {
    let logout = async {
        let addr = serve_app(config(), f.store.clone()).await;
        let mut client = Client::new(addr);
        client.get("/count").await;
        client.get("/count").await;
        let old = client.cookie.clone().unwrap();
        assert_eq!(client.get("/logout").await.body, "done");
        assert!(!f.holds(&old[11..]).await);
        old
    };
    let idle = async {
        let mut config = config();
        config.timeout = Duration::from_secs(1);
        let addr = serve_app(config, f.store.clone()).await;
        let mut client = Client::new(addr);
        client.get("/count").await;
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        client.cookie.clone().unwrap()
    };
    let absolute = async {
        let mut config = config();
        config.absolute_timeout = Some(Duration::from_millis(1_500));
        let addr = serve_app(config, f.store.clone()).await;
        let mut client = Client::new(addr);
        client.get("/count").await;
        let old = client.cookie.clone().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Still alive and used (its cookie now ends with the session).
        assert_eq!(client.get_with("/count", Some(&old)).await.body, "false 2");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        old
    };
    let (after_logout, after_idle, after_absolute) = tokio::join!(logout, idle, absolute);
    // Replayed against one app with default settings: the ids are as dead
    // there as in the app that issued them (one store).
    let addr = serve_app(config(), f.store.clone()).await;
    let client = Client::new(addr);
    for (what, old) in [
        ("logout", after_logout),
        ("idle timeout", after_idle),
        ("absolute timeout", after_absolute),
    ] {
        for _ in 0..2 {
            let r = client.get_with("/count", Some(&old)).await;
            assert_eq!(r.body, "true 1", "replay after {what} opened the session");
            assert_ne!(r.cookie_value().as_deref(), Some(&old[11..]));
            assert!(!f.holds(&old[11..]).await, "{what}: the old id came back");
        }
    }
}

#[tokio::test]
async fn idle_timeout_ends_the_session() {
    let mut c = SessionConfig::default();
    c.timeout = Duration::from_secs(1);
    let addr = serve_app(c, MemoryStore::new()).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/").await.body, "1");
    assert_eq!(client.get("/").await.body, "2");
    let old = client.id();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(client.get("/").await.body, "1");
    assert_ne!(client.id(), old);
}

/// The same as `absolute_timeout_ends_a_busy_session` on every store, for
/// a client that takes each new cookie (as browsers do) rather than keep
/// the first.
#[tokio::test]
async fn absolute_timeout_ends_a_busy_session_that_follows_its_cookie() {
    let mut c = SessionConfig::default();
    c.absolute_timeout = Some(Duration::from_millis(1_500));
    let addr = serve_app(c, MemoryStore::new()).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/").await.body, "1");
    let first = client.id();
    let mut last = 1;
    // Busy all along, so the idle timeout never bites; the absolute one must.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = client.get("/").await.body.parse().unwrap();
        if last == 1 {
            break;
        }
    }
    assert_eq!(last, 1, "session outlived its absolute timeout");
    assert_ne!(client.id(), first);
    // The cookie never outlives the absolute timeout either.
    let r = client.get("/").await;
    assert!(r.cookie_attrs()["max-age"].parse::<u64>().unwrap() <= 2);
}
