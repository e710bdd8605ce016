//! CherryPy's session test app (`cherrypy/test/test_session.py`): the same
//! routes and bodies, so its scenarios run against this crate unchanged
//! (docs/spec.md §6).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde::Deserialize;
use server_sessions::store::SessionAdmin;
use server_sessions::{Locking, Session};

pub(crate) type Result<T> = std::result::Result<T, server_sessions::Error>;

pub(crate) fn router(store: Arc<dyn SessionAdmin>) -> Router {
    Router::new()
        .route("/", any(index))
        .route("/testStr", any(test_str))
        .route("/data", any(data))
        .route("/keyin", any(keyin))
        .route("/delkey", any(delkey))
        .route("/delete", any(delete))
        .route("/regen", any(regen))
        .route("/length", any(length))
        .route("/session_cookie", any(session_cookie))
        .route("/restricted", any(restricted))
        .with_state(store)
}

/// In `explicit` locking mode the handler takes the lock itself, as a
/// CherryPy app in that mode must.
async fn lock_if_explicit(session: &Session) -> Result<()> {
    if session.config().locking == Locking::Explicit {
        session.acquire_lock().await?;
    }
    Ok(())
}

/// `/` and `/testStr`: the hit counter.
pub(crate) async fn count(session: &Session, pause: bool) -> Result<String> {
    lock_if_explicit(session).await?;
    let counter = session.get::<u64>("counter").await?.unwrap_or(0) + 1;
    if pause {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    session.insert("counter", counter).await?;
    if session.config().locking == Locking::Explicit {
        session.release_lock().await?;
    }
    Ok(counter.to_string())
}

async fn index(session: Session) -> Result<String> {
    count(&session, true).await
}

async fn test_str(session: Session) -> Result<String> {
    count(&session, false).await
}

async fn data(session: Session) -> Result<Response> {
    let body = data_json(&session).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize)]
pub(crate) struct Key {
    pub(crate) key: String,
}

async fn keyin(session: Session, Query(q): Query<Key>) -> Result<&'static str> {
    key_in(&session, &q.key).await
}

async fn delkey(session: Session, Query(q): Query<Key>) -> Result<&'static str> {
    del_key(&session, &q.key).await
}

async fn delete(session: Session) -> Result<&'static str> {
    delete_session(&session).await
}

async fn regen(session: Session) -> Result<&'static str> {
    regenerate(&session).await
}

async fn length(session: Session, State(store): State<Arc<dyn SessionAdmin>>) -> Result<String> {
    count_sessions(&session, &*store).await
}

async fn session_cookie(session: Session) -> Result<String> {
    session_id(&session).await
}

// What each route does, whatever the framework (the actix-web app in
// `conformance_actix.rs` calls these too).

/// `/data`: sets `aha` and answers the whole session as JSON.
pub(crate) async fn data_json(session: &Session) -> Result<String> {
    session.insert("aha", "foo").await?;
    Ok(session.to_json().await?.to_string())
}

/// `/keyin`: `True` or `False`, as Python prints them.
pub(crate) async fn key_in(session: &Session, key: &str) -> Result<&'static str> {
    let present = session.contains_key(key).await?;
    Ok(if present { "True" } else { "False" })
}

/// `/delkey`.
pub(crate) async fn del_key(session: &Session, key: &str) -> Result<&'static str> {
    session.remove_value(key).await?;
    Ok("OK")
}

/// `/delete`: the session is deleted and the client drops its cookie.
pub(crate) async fn delete_session(session: &Session) -> Result<&'static str> {
    session.delete().await?;
    session.expire().await?;
    Ok("done")
}

/// `/regen`.
pub(crate) async fn regenerate(session: &Session) -> Result<&'static str> {
    session.regenerate().await?;
    Ok("logged in")
}

/// `/length`: CherryPy's `len(session)` counts the sessions in the store;
/// using the session first makes this one count, as it does there.
pub(crate) async fn count_sessions(session: &Session, store: &dyn SessionAdmin) -> Result<String> {
    session.load().await?;
    Ok(store.count().await?.to_string())
}

/// `/session_cookie`: the session's id.
pub(crate) async fn session_id(session: &Session) -> Result<String> {
    session.load().await?;
    Ok(session.id().await?.to_string())
}

/// GET and HEAD only; other methods get 405 before any session code runs.
async fn restricted(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        method.as_str().to_string().into_response()
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "",
        )
            .into_response()
    }
}
