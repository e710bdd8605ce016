//! Floods: 100,000 requests that never touch their session cost no store
//! call and no cookie, and a flood of new sessions under ids the clients
//! chose stores only ids of the server's, all reclaimed once expired — on
//! every store; on the RAM store a flood of new sessions stops at
//! `max_sessions`. The requests go through the router in process
//! (`tower::ServiceExt::oneshot`) to stay fast.

use sessions_test_support as common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use common::app::{app, config, cookie};
use common::stores::{Fixture, Kind};
use common::watched::Watched;
use futures_util::StreamExt;
use server_sessions::store::SessionAdmin;
use server_sessions::SessionId;

stores!(
    flood_of_untouched_requests_stores_nothing,
    flood_of_new_sessions_is_reclaimed_by_clean_up,
);

const FLOOD: usize = 100_000;

/// Sends `n` GETs of `path` through the router in process, `cookie(i)`
/// giving each one's Cookie header, eight at a time; returns how many set
/// a cookie.
async fn flood(
    app: Router,
    path: &str,
    n: usize,
    cookie: impl Fn(usize) -> Option<String>,
) -> usize {
    use tower::ServiceExt;
    let cookies: Vec<Option<String>> = (0..n).map(cookie).collect();
    futures_util::stream::iter(cookies)
        .map(|c| {
            let app = app.clone();
            let mut req = http::Request::get(path);
            if let Some(c) = c {
                req = req.header("cookie", c);
            }
            let req = req.body(axum::body::Body::empty()).unwrap();
            async move {
                let response = app.oneshot(req).await.unwrap();
                assert!(response.status().is_success(), "{response:?}");
                response.headers().contains_key("set-cookie")
            }
        })
        .buffer_unordered(8)
        .filter(|set| std::future::ready(*set))
        .count()
        .await
}

/// 100,000 cookieless requests, and 100,000 with random well-formed ids,
/// to a route that never touches the session: not one store call, not one
/// cookie, nothing stored.
async fn flood_of_untouched_requests_stores_nothing(f: &Fixture) {
    let watched = Watched::new(f.store.clone());
    let app = app(config(), watched.clone());
    let started = std::time::Instant::now();
    assert_eq!(flood(app.clone(), "/plain", FLOOD, |_| None).await, 0);
    let ids: Vec<String> = (0..FLOOD)
        .map(|_| SessionId::generate().unwrap().to_string())
        .collect();
    assert_eq!(
        flood(app, "/plain", FLOOD, |i| Some(cookie(&ids[i]))).await,
        0
    );
    eprintln!(
        "{:?}: 2 × {FLOOD} untouched requests in {:?}",
        f.kind,
        started.elapsed()
    );
    assert_eq!(
        watched.calls.load(Ordering::SeqCst),
        0,
        "the store was called"
    );
    assert_eq!(f.count().await.unwrap(), 0);
}

/// Requests with random well-formed ids to a route that does use the
/// session: each gets a fresh session under an id of the server's — never
/// the one it sent — so the store grows by one per request, and once they
/// expire clean-up (or, for Redis, the keys' own TTL) reclaims them all.
async fn flood_of_new_sessions_is_reclaimed_by_clean_up(f: &Fixture) {
    let n = match f.kind {
        Kind::Ram => 20_000,
        // A write and a round trip each: enough to show growth and
        // reclaim, not a load test.
        Kind::Sqlite
        | Kind::Redis
        | Kind::Postgres
        | Kind::File
        | Kind::Memcached
        | Kind::Mysql => 2_000,
    };
    let timeout = Duration::from_millis(2_500);
    let mut config = config();
    config.timeout = timeout;
    let watched = Watched::new(f.store.clone());
    let app = app(config, watched.clone());
    let sent: Vec<String> = (0..n)
        .map(|_| SessionId::generate().unwrap().to_string())
        .collect();
    let started = std::time::Instant::now();
    let set = flood(app, "/count", n, |i| Some(cookie(&sent[i]))).await;
    let took = started.elapsed();
    eprintln!("{:?}: {n} new sessions in {took:?}", f.kind);
    // A cookie is only sent once its session was saved: the store grew by
    // one per request.
    assert_eq!(set, n, "every request gets its session's cookie");
    if took < Duration::from_millis(2_000) {
        assert_eq!(f.count().await.unwrap(), n as u64);
    } else {
        // On a loaded machine the first sessions may have expired already.
        eprintln!("{:?}: flood took {took:?}; count not checked", f.kind);
    }
    // The ids the clients sent were looked up, never written.
    let written: BTreeSet<String> = watched.keys_of("new");
    assert_eq!(written.len(), n);
    assert!(
        sent.iter()
            .all(|id| !written.contains(&common::records::key_of(id).to_string())),
        "a client-chosen id was stored"
    );
    tokio::time::sleep_until((started + took + timeout + Duration::from_millis(200)).into()).await;
    let removed = f.store.clean_up().await.unwrap();
    if matches!(f.kind, Kind::Redis | Kind::Memcached) {
        assert_eq!(removed, 0, "the server expires keys itself");
    } else {
        assert_eq!(removed, n as u64);
    }
    assert_eq!(f.count().await.unwrap(), 0, "not reclaimed");
    assert_eq!(f.keys().count().await, 0);
}

/// One request through the router in process: its status, body and the
/// session cookie it set, if any.
async fn send(app: &Router, path: &str, cookie: Option<&str>) -> (u16, String, Option<String>) {
    use tower::ServiceExt;
    let mut req = http::Request::get(path);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let response = app
        .clone()
        .oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let set = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    if status == 503 {
        assert!(
            response.headers().contains_key("retry-after"),
            "{response:?}"
        );
    }
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned(), set)
}

/// A flood of cookieless requests, each making a session, fills the RAM
/// store to its bound and not past it: the newcomers beyond it answer 503
/// (with `Retry-After`, no cookie), while a visitor from before the flood
/// goes on, and a place freed by a logout is taken by the next newcomer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_sessions_stops_at_the_ram_bound() {
    const BOUND: usize = 500;
    let store = server_sessions::store::MemoryStore::new().with_max_sessions(BOUND);
    let app = app(config(), store.clone());
    let (status, _, regular) = send(&app, "/count", None).await;
    assert_eq!(status, 200);
    let regular = regular.unwrap();

    let answers: Vec<(u16, bool)> = futures_util::stream::iter(0..10 * BOUND)
        .map(|_| {
            let app = app.clone();
            async move {
                let (status, _, set) = send(&app, "/count", None).await;
                (status, set.is_some())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let stored = answers.iter().filter(|a| **a == (200, true)).count();
    let refused = answers.iter().filter(|a| **a == (503, false)).count();
    assert_eq!((stored, refused), (BOUND - 1, 10 * BOUND - (BOUND - 1)));
    assert_eq!(store.count().await.unwrap(), BOUND as u64);

    // The regular visitor is unaffected.
    let (status, body, _) = send(&app, "/count", Some(&regular)).await;
    assert_eq!((status, body.as_str()), (200, "false 2"));
    // A logout frees a place; the next newcomer gets it.
    let (status, _, _) = send(&app, "/logout", Some(&regular)).await;
    assert_eq!(status, 200);
    assert_eq!(send(&app, "/count", None).await.0, 200);
    assert_eq!(send(&app, "/count", None).await.0, 503);
}
