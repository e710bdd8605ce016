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

type Result<T> = std::result::Result<T, server_sessions::Error>;

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

async fn count(session: &Session, pause: bool) -> Result<String> {
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
    session.insert("aha", "foo").await?;
    let body = session.to_json().await?.to_string();
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize)]
struct Key {
    key: String,
}

async fn keyin(session: Session, Query(q): Query<Key>) -> Result<String> {
    let present = session.contains_key(&q.key).await?;
    Ok(if present { "True" } else { "False" }.into())
}

async fn delkey(session: Session, Query(q): Query<Key>) -> Result<&'static str> {
    session.remove_value(&q.key).await?;
    Ok("OK")
}

async fn delete(session: Session) -> Result<&'static str> {
    session.delete().await?;
    session.expire().await?;
    Ok("done")
}

async fn regen(session: Session) -> Result<&'static str> {
    session.regenerate().await?;
    Ok("logged in")
}

async fn length(
    session: Session,
    State(store): State<Arc<dyn SessionAdmin>>,
) -> std::result::Result<String, Response> {
    // CherryPy's `len(session)` counts the sessions in the store; using the
    // session first makes this one count, as it does there.
    session.load().await.map_err(IntoResponse::into_response)?;
    match store.count().await {
        Ok(n) => Ok(n.to_string()),
        Err(e) => Err(server_sessions::Error::from(e).into_response()),
    }
}

async fn session_cookie(session: Session) -> Result<String> {
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
