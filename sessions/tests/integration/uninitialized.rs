//! `save_uninitialized`, on every store: off, a new visitor whose request
//! only read the session leaves nothing in the store and gets no cookie,
//! until something is put in the session; on (the default, CherryPy's),
//! the first read stores it.

use sessions_test_support as common;

use axum::routing::get;
use axum::Router;
use common::app::config;
use common::browser::Browser;
use common::client::serve;
use common::stores::Fixture;
use server_sessions::{Session, SessionLayer};

stores!(
    a_read_only_visit_stores_nothing,
    the_default_stores_a_read_only_visit
);

fn app(f: &Fixture, save_uninitialized: bool) -> Router {
    let mut c = config();
    c.save_uninitialized = save_uninitialized;
    Router::new()
        .route(
            "/read",
            get(|s: Session| async move {
                let n: Option<u64> = s.get("n").await?;
                let _ = s.user_sessions().await?;
                Ok::<_, server_sessions::Error>(format!("{n:?}"))
            }),
        )
        .route(
            "/write",
            get(|s: Session| async move {
                s.insert("n", 1).await?;
                Ok::<_, server_sessions::Error>("written")
            }),
        )
        .layer(SessionLayer::new(f.store.clone()).with_config(c))
}

async fn a_read_only_visit_stores_nothing(f: &Fixture) {
    let browser = Browser::new(serve(app(f, false)).await);
    for _ in 0..3 {
        let page = browser.get("/read").await;
        assert_eq!((page.status, page.body.as_str()), (200, "None"));
        assert!(
            page.set_cookie.is_empty(),
            "no cookie: {:?}",
            page.set_cookie
        );
    }
    assert_count(f, 0).await;
    // Something put in: stored and cookied as always, and kept after.
    assert!(!browser.get("/write").await.set_cookie.is_empty());
    assert_count(f, 1).await;
    assert_eq!(browser.get("/read").await.body, "Some(1)");
    assert_count(f, 1).await;
}

async fn the_default_stores_a_read_only_visit(f: &Fixture) {
    let browser = Browser::new(serve(app(f, true)).await);
    let page = browser.get("/read").await;
    assert_eq!(page.body, "None");
    assert_eq!(
        page.set_cookie.len(),
        1,
        "CherryPy's way: stored on first load"
    );
    assert_count(f, 1).await;
}

/// The number of sessions in the store, where it can count them
/// (memcached cannot list its keys: there the cookie checks stand alone).
async fn assert_count(f: &Fixture, n: u64) {
    match f.store.count().await {
        Ok(count) => assert_eq!(count, n, "sessions in the store"),
        Err(server_sessions::store::Error::Unsupported(_)) => {}
        Err(e) => panic!("{e}"),
    }
}
