//! A session's own lifetime ("remember me"), over HTTP on every store:
//! `set_timeout` gives one session 30 days while others keep the
//! configured hour; the cookie's `Max-Age` follows; the timeout is read
//! back by a new layer over the same store (an application restart); and
//! `absolute_timeout` still bounds it.

use sessions_test_support as common;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::app::config;
use common::client::{serve, Client};
use common::stores::Fixture;
use server_sessions::{Session, SessionConfig, SessionLayer};

stores!(
    a_session_keeps_its_own_timeout,
    absolute_timeout_still_bounds_it
);

const MONTH: u64 = 30 * 24 * 3600;

/// `/remember` logs in for a month, `/` counts, `/timeout` says the
/// session's timeout in seconds.
fn app(config: SessionConfig, f: &Fixture) -> Router {
    Router::new()
        .route(
            "/remember",
            get(|s: Session| async move {
                s.set_timeout(Duration::from_secs(MONTH)).await?;
                s.insert("user", "alice").await?;
                Ok::<_, server_sessions::Error>("remembered")
            }),
        )
        .route(
            "/",
            get(|s: Session| async move {
                let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
                s.insert("n", n).await?;
                Ok::<_, server_sessions::Error>(n.to_string())
            }),
        )
        .route(
            "/slow",
            get(|s: Session| async move {
                let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.insert("n", n).await?;
                Ok::<_, server_sessions::Error>(n.to_string())
            }),
        )
        .route(
            "/forget",
            get(|s: Session| async move {
                s.clear_timeout().await?;
                Ok::<_, server_sessions::Error>("forgotten")
            }),
        )
        .route(
            "/timeout",
            get(|s: Session| async move {
                Ok::<_, server_sessions::Error>(s.timeout().await?.as_secs().to_string())
            }),
        )
        .layer(SessionLayer::new(f.store.clone()).with_config(config))
}

fn max_age(r: &common::client::Reply) -> u64 {
    r.cookie_attrs()["max-age"].parse().unwrap()
}

async fn a_session_keeps_its_own_timeout(f: &Fixture) {
    let addr = serve(app(config(), f)).await;
    let mut remembered = Client::new(addr);
    let r = remembered.get("/remember").await;
    assert_eq!(r.status, 200);
    assert!(max_age(&r).abs_diff(MONTH) <= 1, "{:?}", r.set_cookie);
    // Another visitor keeps the configured hour.
    let mut other = Client::new(addr);
    let r = other.get("/").await;
    assert!(max_age(&r).abs_diff(3600) <= 1, "{:?}", r.set_cookie);
    // Later requests of the remembered session keep its month, whether
    // they change the data or only refresh the expiry.
    let r = remembered.get("/").await;
    assert!(max_age(&r).abs_diff(MONTH) <= 1, "{:?}", r.set_cookie);
    let r = remembered.get("/timeout").await;
    assert_eq!(r.body, MONTH.to_string());
    assert!(max_age(&r).abs_diff(MONTH) <= 1, "{:?}", r.set_cookie);
    // A new layer over the same store (the application restarted) reads
    // it back from the record.
    let restarted = serve(app(config(), f)).await;
    let again = Client::new(restarted);
    let r = again
        .get_with("/timeout", remembered.cookie.as_deref())
        .await;
    assert_eq!(r.body, MONTH.to_string());
    assert_eq!(other.get("/timeout").await.body, "3600");
    // Requests that queue behind each other in one process get the lock
    // and the record handed over (no round trip), and save with the lock
    // kept: the timeout goes along every step.
    let replies = remembered.hammer("/slow", 4, 3).await;
    assert!(replies.iter().all(|r| r.status == 200));
    let r = remembered.get("/timeout").await;
    assert_eq!(r.body, MONTH.to_string());
    assert_eq!(remembered.get("/").await.body, "14");
    // And clearing it returns the session to the configured hour.
    let r = remembered.get("/forget").await;
    assert!(max_age(&r).abs_diff(3600) <= 1, "{:?}", r.set_cookie);
}

async fn absolute_timeout_still_bounds_it(f: &Fixture) {
    let mut c = config();
    c.absolute_timeout = Some(Duration::from_secs(2 * 3600));
    let addr = serve(app(c, f)).await;
    let mut client = Client::new(addr);
    let r = client.get("/remember").await;
    assert!(max_age(&r).abs_diff(2 * 3600) <= 1, "{:?}", r.set_cookie);
    assert_eq!(client.get("/timeout").await.body, MONTH.to_string());
}
