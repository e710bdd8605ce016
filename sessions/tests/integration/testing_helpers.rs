//! The helpers for an app's own tests (`server_sessions::testing`): a
//! session without a server, a router driven with its cookies kept; and
//! `?` on `UserId::new` in a handler answering 400 over HTTP.

use sessions_test_support as common;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use common::browser::Browser;
use common::client::serve;
use server_sessions::store::MemoryStore;
use server_sessions::testing::{self, TestClient};
use server_sessions::{InvalidUser, Session, SessionLayer, UserId};

/// The handler logic an app would unit-test, taking a `Session`.
async fn add_to_cart(session: &Session, item: &str) -> Result<usize, server_sessions::Error> {
    let mut cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    cart.push(item.into());
    session.insert("cart", &cart).await?;
    Ok(cart.len())
}

#[tokio::test]
async fn a_session_for_a_unit_test() {
    let session = testing::session();
    assert_eq!(add_to_cart(&session, "tea").await.unwrap(), 1);
    assert_eq!(add_to_cart(&session, "cup").await.unwrap(), 2);
    session.set_user(UserId::new("ann").unwrap()).await.unwrap();
    assert_eq!(session.user().await.unwrap().unwrap().as_str(), "ann");
    // Each helper session is its own visitor.
    assert!(testing::session()
        .get::<Vec<String>>("cart")
        .await
        .unwrap()
        .is_none());
}

fn shop() -> Router {
    Router::new()
        .route(
            "/add/{item}",
            post(|s: Session, Path(item): Path<String>| async move {
                add_to_cart(&s, &item).await.map(|n| n.to_string())
            }),
        )
        .route(
            "/logout",
            post(|s: Session| async move { s.logout().await.map(|()| "bye") }),
        )
        .route(
            "/login/{name}",
            post(|s: Session, Path(name): Path<String>| async move {
                // `?` on a client's bad id answers 400 with the reason.
                let user = UserId::new(name)?;
                s.set_user(user.clone()).await?;
                Ok::<_, server_sessions::Error>(format!("hello {user}"))
            }),
        )
        .route(
            "/check/{name}",
            get(|Path(name): Path<String>| async move {
                // The same where the handler's error is `InvalidUser` itself.
                Ok::<_, InvalidUser>(UserId::new(name)?.to_string())
            }),
        )
        .route("/", get(|| async { "shop" }))
        .layer(SessionLayer::new(MemoryStore::new()))
}

#[tokio::test]
async fn a_router_driven_with_its_cookies() {
    let mut client = TestClient::new(shop());
    assert_eq!(client.get("/").await.text(), "shop");
    assert_eq!(
        client.cookie("session_id"),
        None,
        "a page without the session sets none"
    );
    assert_eq!(client.post_form("/add/tea", "").await.text(), "1");
    assert!(client.cookie("session_id").is_some());
    assert_eq!(
        client.post_form("/add/cup", "").await.text(),
        "2",
        "same visitor"
    );
    let mut other = client.fresh();
    assert_eq!(
        other.post_form("/add/pot", "").await.text(),
        "1",
        "another visitor"
    );
    let bye = client.post_form("/logout", "").await;
    assert_eq!(bye.text(), "bye");
    assert_eq!(
        client.cookie("session_id"),
        None,
        "a log-out drops the cookie"
    );
    assert_eq!(
        client.post_form("/add/tea", "").await.text(),
        "1",
        "a new session"
    );
}

#[tokio::test]
async fn a_bad_user_id_from_a_client_is_a_400() {
    let browser = Browser::new(serve(shop()).await);
    let ok = browser.post("/login/ann", "").await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "hello ann"));
    let bad = browser.post("/login/a%0Ab", "").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body, "a user id may not hold control characters\n");
    let long = browser
        .post(&format!("/login/{}", "x".repeat(300)), "")
        .await;
    assert_eq!(long.status, 400);
}
