//! What a request answers when its session cannot be kept: a session over
//! `max_size` is refused (500) with the stored data left as it was, on
//! every store; a store that is down answers 503 and recovers, and a
//! handler that swallows the store's error still answers 503.

use sessions_test_support as common;

use std::sync::Arc;

use common::app::{config, cookie, serve_app, start_session};
use common::client::Client;
use common::stores::{memcached, redis, Fixture, Kind};
use common::watched::Watched;
use server_sessions::store::{MemoryStore, SessionAdmin, SessionStore};
use server_sessions::{SessionConfig, SessionId};

stores!(oversized_session_is_refused_and_old_data_kept);

/// A session over `max_size` is refused with a 500 (and a log line naming
/// the limit, checked by `logs_never_carry_a_full_session_id`): no cookie,
/// and whatever the store held before is still there, byte for byte.
async fn oversized_session_is_refused_and_old_data_kept(f: &Fixture) {
    let mut config = config();
    config.max_size = 1024;
    let addr = serve_app(config, f.store.clone()).await;
    let client = Client::new(addr);
    let id = start_session(addr).await;
    let sent = cookie(&id);
    let r = client.get_with("/put?key=a&len=500", Some(&sent)).await;
    assert_eq!(r.status, 200);
    let before = f
        .store
        .load(&common::records::key_of(&id))
        .await
        .unwrap()
        .unwrap();
    for len in [1_000, 100_000] {
        let r = client
            .get_with(&format!("/put?key=b&len={len}"), Some(&sent))
            .await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (500, "session error\n"),
            "{len}"
        );
        assert_eq!(r.set_cookie, None);
        let after = f
            .store
            .load(&common::records::key_of(&id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.data, before.data, "the stored data changed");
    }
    // Just under the limit is fine, and the session carries on.
    let r = client.get_with("/count", Some(&sent)).await;
    assert_eq!(r.body, "false 2");
    // A new session over the limit stores nothing at all.
    let count = f.count().await.unwrap();
    let r = client.get_with("/put?key=b&len=2000", None).await;
    assert_eq!((r.status, r.set_cookie), (500, None));
    assert_eq!(f.count().await.unwrap(), count);
    // The layer's max_size above the store's own read limit (Redis and
    // memcached read at most their `with_max_size`): the store refuses
    // what it could not read back, rather than keep a session that then
    // loads as missing.
    let small: Option<Arc<dyn SessionAdmin>> = match (f.kind, &f.prefix) {
        (Kind::Redis, Some(prefix)) => {
            Some(Arc::new(redis(prefix).await.unwrap().with_max_size(2048)))
        }
        (Kind::Memcached, Some(prefix)) => Some(Arc::new(
            memcached(prefix).await.unwrap().with_max_size(2048),
        )),
        _ => None,
    };
    if let Some(small) = small {
        let mut config = self::config();
        config.max_size = 100_000;
        let addr = serve_app(config, small).await;
        let client = Client::new(addr);
        let id = start_session(addr).await;
        let r = client
            .get_with("/put?key=b&len=5000", Some(&cookie(&id)))
            .await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (500, "session error\n"),
            "{r:?}"
        );
        assert_eq!(f.data(&id).await.unwrap(), serde_json::json!({"n": 1}));
        let r = client.get_with("/count", Some(&cookie(&id))).await;
        assert_eq!(r.body, "false 2", "the session was lost");
    }
}

#[tokio::test]
async fn an_oversized_session_is_refused_and_the_old_data_kept() {
    let mut c = SessionConfig::default();
    c.max_size = 1024;
    let store = MemoryStore::new();
    let addr = serve_app(c, store.clone()).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let r = client.get("/put?key=blob&len=100000").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, "session error\n");
    assert_eq!(client.get("/").await.body, "2");
}

#[tokio::test]
async fn a_store_that_is_down_answers_503_and_recovers() {
    let flaky = Watched::new(MemoryStore::new());
    let addr = serve_app(SessionConfig::default(), flaky.clone()).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/").await.body, "1");
    flaky.set_down(true);
    let r = client.get_with("/", client.cookie.as_deref()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "session store unavailable\n");
    assert_eq!(r.set_cookie, None);
    // Routes that do not use the session are unaffected.
    assert_eq!(client.get_with("/plain", None).await.status, 200);
    flaky.set_down(false);
    assert_eq!(client.get("/").await.body, "2", "data lost in the outage");
}

#[tokio::test]
async fn a_handler_that_swallows_a_store_error_still_answers_503() {
    let flaky = Watched::new(MemoryStore::new());
    flaky.set_down(true);
    let addr = serve_app(SessionConfig::default(), flaky).await;
    // A new session whose first save fails, and an existing id whose load
    // fails: neither may look like success.
    assert_eq!(
        Client::new(addr).get_with("/swallow", None).await.status,
        503
    );
    let r = Client::new(addr)
        .get_with(
            "/swallow",
            Some(&format!("session_id={}", SessionId::generate().unwrap())),
        )
        .await;
    assert_eq!(r.status, 503, "a failed write was silently dropped");
}
