//! The sealed cookie store (`storage_type = "cookie"`), over real HTTP:
//! the whole session travels in an encrypted, authenticated cookie; a
//! tampered, truncated or foreign cookie is a fresh session; keys rotate;
//! the expiry is inside the seal, so a kept or replayed cookie past it
//! opens nothing; a session too large for a cookie is refused (500) and
//! the visitor keeps the cookie they had. Also what it cannot do, stated
//! as tests: a copy of a cookie still opens its session after a logout
//! elsewhere, and the server lists nothing.

use sessions_test_support as common;

use std::time::Duration;

use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use common::app::config;
use common::client::{serve, Client};
use server_sessions::store::{CookieStore, SessionAdmin, SessionStore, MAX_COOKIE};
use server_sessions::{Keys, Session, SessionConfig, SessionLayer, StorageType};

#[derive(serde::Deserialize)]
struct Params {
    len: Option<usize>,
}

fn keys(list: &[u8]) -> Keys {
    let raw: Vec<[u8; 32]> = list.iter().map(|&b| [b; 32]).collect();
    Keys::new(&raw).unwrap()
}

fn in_cookie(keys: Keys) -> SessionConfig {
    let mut c = config();
    c.storage.kind = StorageType::Cookie;
    c.keys = Some(keys);
    c
}

/// `/` counts, `/big?len=N` stores N bytes, `/logout` deletes, `/regen`
/// regenerates and answers the id (the cookie is not the id here).
fn app(config: SessionConfig) -> Router {
    Router::new()
        .route(
            "/",
            get(|s: Session| async move {
                let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
                s.insert("n", n).await?;
                Ok::<_, server_sessions::Error>(format!("{} {n}", s.missing().await?))
            }),
        )
        .route(
            "/big",
            get(|s: Session, Query(p): Query<Params>| async move {
                s.insert("big", "x".repeat(p.len.unwrap_or(0))).await?;
                Ok::<_, server_sessions::Error>("stored")
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.delete().await?;
                s.expire().await?;
                Ok::<_, server_sessions::Error>("out")
            }),
        )
        .route(
            "/regen",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, server_sessions::Error>(s.id().await?.to_string())
            }),
        )
        .layer(SessionLayer::new(CookieStore).with_config(config))
}

async fn start(config: SessionConfig) -> Client {
    Client::new(serve(app(config)).await)
}

#[tokio::test]
async fn the_session_travels_sealed_in_the_cookie() {
    let mut c = start(in_cookie(keys(&[1]))).await;
    assert_eq!(c.get("/").await.body, "false 1");
    let first = c.cookie.clone().unwrap();
    assert!(!first.contains("\"n\""), "the data is sealed: {first}");
    assert_eq!(c.get("/").await.body, "false 2");
    assert_eq!(c.get("/").await.body, "false 3");
    // Every save seals afresh.
    assert_ne!(c.cookie.clone().unwrap(), first);
    // Regenerate: a new id inside, the data kept.
    let id = c.get("/regen").await.body;
    assert_eq!(id.len(), 40);
    assert_eq!(c.get("/").await.body, "false 4");
}

#[tokio::test]
async fn a_tampered_cut_or_foreign_cookie_is_a_fresh_session() {
    let mut c = start(in_cookie(keys(&[1]))).await;
    c.get("/").await;
    c.get("/").await;
    let good = c.cookie.clone().unwrap();
    let value = good.split_once('=').unwrap().1.to_string();
    let mut flipped = value.clone().into_bytes();
    let at = flipped.len() / 2;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let stranger = {
        let mut s = start(in_cookie(keys(&[9]))).await;
        s.get("/").await;
        s.cookie.unwrap().split_once('=').unwrap().1.to_string()
    };
    for bad in [
        String::from_utf8(flipped).unwrap(),
        value[..value.len() - 1].to_string(),
        value[..value.len() / 2].to_string(),
        stranger,
        "0123456789abcdef0123456789abcdef01234567".to_string(),
    ] {
        let r = c.get_with("/", Some(&format!("session_id={bad}"))).await;
        assert_eq!(r.body, "true 1", "{bad}");
    }
    assert_eq!(c.get_with("/", Some(&good)).await.body, "false 3");
}

#[tokio::test]
async fn keys_rotate() {
    let mut old = start(in_cookie(keys(&[1]))).await;
    old.get("/").await;
    let cookie = old.cookie.clone().unwrap();
    let mut rotated = start(in_cookie(keys(&[2, 1]))).await;
    rotated.cookie = Some(cookie.clone());
    assert_eq!(rotated.get("/").await.body, "false 2", "the old key opens");
    let resealed = rotated.cookie.clone().unwrap();
    let mut new = start(in_cookie(keys(&[2]))).await;
    assert_eq!(new.get_with("/", Some(&cookie)).await.body, "true 1");
    new.cookie = Some(resealed);
    assert_eq!(
        new.get("/").await.body,
        "false 3",
        "resealed by the new key"
    );
}

/// The expiry is inside the seal: a browser that keeps the cookie, or a
/// client that replays it, past the timeout gets a fresh session.
#[tokio::test]
async fn a_cookie_replayed_after_expiry_opens_nothing() {
    let mut config = in_cookie(keys(&[1]));
    config.timeout = Duration::from_millis(800);
    let mut c = start(config).await;
    c.get("/").await;
    let cookie = c.cookie.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(c.get_with("/", Some(&cookie)).await.body, "true 1");
}

/// Too large for a cookie: a 500, the cookie the visitor had kept (no
/// `Set-Cookie`), and the session goes on from it.
#[tokio::test]
async fn a_session_too_large_for_a_cookie_is_refused_and_the_old_cookie_kept() {
    let mut c = start(in_cookie(keys(&[1]))).await;
    c.get("/").await;
    let r = c.get("/big?len=1000").await;
    assert_eq!(r.status, 200);
    let r = c.get(&format!("/big?len={MAX_COOKIE}")).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.set_cookie, None, "the old cookie is kept");
    assert_eq!(c.get("/").await.body, "false 2");
}

/// What it cannot do, stated: the server keeps nothing, so a logout only
/// drops the cookie of the browser that logged out; a copy made before
/// still opens the session until its expiry. And there is nothing to list.
#[tokio::test]
async fn it_cannot_end_a_session_from_the_server() {
    let mut c = start(in_cookie(keys(&[1]))).await;
    c.get("/").await;
    let copy = c.cookie.clone().unwrap();
    let r = c.get("/logout").await;
    assert!(r.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(c.get_with("/", Some(&copy)).await.body, "false 2");
    let store = CookieStore;
    let e = store.count().await.unwrap_err().to_string();
    assert!(e.contains("cookie"), "{e}");
    assert!(store.as_admin().is_none(), "no clean-up task");
}

/// The cookie store needs keys, and carries the session in the cookie
/// only.
#[test]
fn it_needs_keys_and_the_cookie() {
    let mut c = config();
    c.storage.kind = StorageType::Cookie;
    assert_eq!(c.problem().map(|p| p.0), Some("storage_type"));
    c.keys = Some(keys(&[1]));
    assert_eq!(c.problem(), None);
    c.header = Some(http::HeaderName::from_static("x-session-id"));
    assert_eq!(c.problem().map(|p| p.0), Some("header"));
}
