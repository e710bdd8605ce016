//! CSRF tokens, the synchronizer pattern: each session holds a random
//! token; every page form carries it in a hidden field ([`FIELD`]), every
//! script in a header ([`HEADER`]); [`CsrfLayer`] refuses an unsafe
//! request (POST, PUT, PATCH, DELETE) whose token is missing or wrong with
//! a 403, logged. Another site can make a browser send the session cookie,
//! but it cannot read the token out of your pages.
//!
//! Why it holds here: the token is read and checked while the request
//! holds the session's lock, so a request cannot pass with a token that a
//! log-in running at the same time has just replaced. [`rotate`] gives a
//! new token; the log-in of [`auth`](crate::auth) calls it.
//!
//! API clients that carry the id in a header (`cookie = False`, `header =
//! "x-session-id"`) are not checked: a browser never adds that header on
//! its own, so another site cannot borrow the session. With both cookie
//! and header on, every unsafe request needs the token.
//!
//! ```
//! use axum::{response::Html, routing::get, Router};
//! use server_sessions::{csrf, store::MemoryStore, Session, SessionLayer};
//!
//! async fn form(session: Session) -> Result<Html<String>, server_sessions::Error> {
//!     let token = csrf::token(&session).await?;
//!     Ok(Html(format!(
//!         "<form method=post><input type=hidden name={} value={token}>\
//!          <button>Send</button></form>",
//!         csrf::FIELD
//!     )))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(form).post(|| async { "accepted" }))
//!     // Inside the session layer: it needs the request's session.
//!     .layer(csrf::CsrfLayer::new())
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! ```

use crate::error::Error;
use crate::id::SessionId;
use crate::session::Session;

/// The session key the token is kept under.
pub const CSRF_KEY: &str = "_csrf_token";
/// The form field that carries the token.
pub const FIELD: &str = "csrf_token";
/// The request header that carries the token.
pub const HEADER: &str = "x-csrf-token";

/// The session's token, made (and stored with the session) on first use.
pub async fn token(session: &Session) -> Result<String, Error> {
    let mut data = session.data().await?;
    if let Ok(Some(token)) = data.get::<String>(CSRF_KEY) {
        return Ok(token);
    }
    let token = new_token()?;
    data.insert_value(CSRF_KEY, token.clone().into());
    Ok(token)
}

/// Replaces the session's token: forms rendered before stop working. Call
/// it when the session's privileges change (log-in does).
pub async fn rotate(session: &Session) -> Result<String, Error> {
    let token = new_token()?;
    session.insert(CSRF_KEY, &token).await?;
    Ok(token)
}

/// Whether `sent` is the session's token, comparing in constant time so
/// that the time taken tells an attacker nothing about how much matched.
pub async fn verify(session: &Session, sent: &str) -> Result<bool, Error> {
    let stored: Option<String> = session.get(CSRF_KEY).await.unwrap_or(None);
    Ok(stored.is_some_and(|t| same(t.as_bytes(), sent.as_bytes())))
}

/// 160 random bits as 40 hex digits: the same source and form as session
/// ids, which are made to be unguessable.
fn new_token() -> Result<String, Error> {
    Ok(SessionId::generate()?.to_string())
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(feature = "axum")]
mod layer;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use layer::{CsrfLayer, CsrfService};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_kept_checked_and_rotated() {
        let session = crate::testing::session();
        assert!(!verify(&session, "").await.unwrap(), "no token yet");
        let t = token(&session).await.unwrap();
        assert_eq!(t.len(), 40);
        assert_eq!(token(&session).await.unwrap(), t, "kept");
        assert!(verify(&session, &t).await.unwrap());
        assert!(!verify(&session, &t[..39]).await.unwrap());
        assert!(!verify(&session, &t.to_uppercase()).await.unwrap());
        let r = rotate(&session).await.unwrap();
        assert_ne!(r, t);
        assert!(
            !verify(&session, &t).await.unwrap(),
            "the old one is refused"
        );
        assert!(verify(&session, &r).await.unwrap());
    }
}
