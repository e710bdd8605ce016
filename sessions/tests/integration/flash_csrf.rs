//! Flash messages and CSRF tokens over HTTP, on every store: a message
//! is shown exactly once however many requests of the session run at
//! once, and none is lost when many are added at once; unsafe requests
//! need the session's token in the header or the form, a new token at
//! log-in retires the old one, and header-id API clients are not asked.

use sessions_test_support as common;

use axum::extract::Form;
use axum::routing::{get, post};
use axum::Router;
use common::app::config;
use common::browser::Browser;
use common::client::serve;
use common::stores::Fixture;
use server_sessions::flash::{Flash, Level};
use server_sessions::{csrf, Session, SessionLayer};
use std::collections::HashMap;

stores!(
    a_flash_message_is_shown_once_under_concurrency,
    flash_messages_added_at_once_are_all_kept,
    unsafe_requests_need_the_token,
);

fn flash_app(f: &Fixture) -> Router {
    Router::new()
        .route(
            "/push",
            get(|flash: Flash| async move {
                flash.push(Level::Success, "saved").await?;
                Ok::<_, server_sessions::Error>("pushed")
            }),
        )
        .route(
            "/take",
            get(|flash: Flash| async move {
                // A pause while the messages are in hand: a second request
                // that could read them now would show them twice.
                let taken = flash.take().await?;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok::<_, server_sessions::Error>(taken.len().to_string())
            }),
        )
        .layer(SessionLayer::new(f.store.clone()).with_config(config()))
}

async fn a_flash_message_is_shown_once_under_concurrency(f: &Fixture) {
    let browser = Browser::new(serve(flash_app(f)).await);
    assert_eq!(browser.get("/push").await.body, "pushed");
    let takers: Vec<_> = (0..12)
        .map(|_| {
            let browser = browser.clone();
            tokio::spawn(async move { browser.get("/take").await })
        })
        .collect();
    let mut shown = 0;
    for t in takers {
        let page = t.await.unwrap();
        assert_eq!(page.status, 200, "{page:?}");
        shown += page.body.parse::<u32>().unwrap();
    }
    assert_eq!(shown, 1, "the message was shown {shown} times");
}

async fn flash_messages_added_at_once_are_all_kept(f: &Fixture) {
    let browser = Browser::new(serve(flash_app(f)).await);
    // One request first, so that all the others share its session.
    browser.get("/take").await;
    assert!(browser.cookie("session_id").is_some());
    let pushers: Vec<_> = (0..10)
        .map(|_| {
            let browser = browser.clone();
            tokio::spawn(async move { browser.get("/push").await.status })
        })
        .collect();
    for p in pushers {
        assert_eq!(p.await.unwrap(), 200);
    }
    assert_eq!(browser.get("/take").await.body, "10", "a message was lost");
}

fn csrf_app(f: &Fixture, mut c: server_sessions::SessionConfig) -> Router {
    c.storage = config().storage;
    Router::new()
        .route(
            "/token",
            get(|s: Session| async move { csrf::token(&s).await }),
        )
        .route(
            "/login",
            post(|s: Session| async move {
                s.regenerate().await?;
                csrf::rotate(&s).await
            }),
        )
        .route(
            "/echo",
            post(|Form(form): Form<HashMap<String, String>>| async move {
                // The form reaches the handler whole after the check.
                form.get("text").cloned().unwrap_or_default()
            }),
        )
        .layer(csrf::CsrfLayer::new())
        .layer(SessionLayer::new(f.store.clone()).with_config(c))
}

async fn unsafe_requests_need_the_token(f: &Fixture) {
    let browser = Browser::new(serve(csrf_app(f, config())).await);
    let token = browser.get("/token").await.body;
    assert_eq!(token.len(), 40);

    assert_eq!(browser.post("/echo", "text=hi").await.status, 403);
    let wrong = format!("text=hi&csrf_token={}", "0".repeat(40));
    assert_eq!(browser.post("/echo", &wrong).await.status, 403);
    let field = browser
        .post("/echo", &format!("text=hi&csrf_token={token}"))
        .await;
    assert_eq!(
        (field.status, field.body.as_str()),
        (200, "hi"),
        "the form reaches the handler whole"
    );
    let header = browser.post_with("/echo", &[(csrf::HEADER, &token)]).await;
    assert_eq!(header.status, 200);
    let bad_header = browser.post_with("/echo", &[(csrf::HEADER, "nope")]).await;
    assert_eq!(bad_header.status, 403);
    let not_form = browser
        .post_with("/echo", &[("content-type", "application/json")])
        .await;
    assert_eq!(not_form.status, 403, "a JSON body must carry the header");
    // Another visitor cannot use this one's token.
    let stranger = browser.stranger();
    assert_eq!(
        stranger
            .post_with("/echo", &[(csrf::HEADER, &token)])
            .await
            .status,
        403
    );
    // GET is safe: never checked.
    assert_eq!(stranger.get("/token").await.status, 200);

    // Log-in rotates: the old token stops working, the new one works.
    let fresh = browser
        .post_with("/login", &[(csrf::HEADER, &token)])
        .await
        .body;
    assert_eq!(fresh.len(), 40);
    assert_ne!(fresh, token);
    assert_eq!(
        browser
            .post_with("/echo", &[(csrf::HEADER, &token)])
            .await
            .status,
        403
    );
    assert_eq!(
        browser
            .post_with("/echo", &[(csrf::HEADER, &fresh)])
            .await
            .status,
        200
    );
}

/// API clients that carry the id in a header only are not asked for a
/// token: no browser sends that header to another site on its own.
#[tokio::test]
async fn header_id_clients_are_not_asked_for_a_token() {
    let f = Fixture::new(common::stores::Kind::Ram).await.unwrap();
    let mut c = config();
    c.cookie = false;
    c.header = Some(http::HeaderName::from_static("x-session-id"));
    let addr = serve(csrf_app(&f, c)).await;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/echo"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "api");
}
