//! The `Session` extractor, and the error type that lets handlers use `?`
//! on session operations.

use std::future::{ready, Ready};
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::translate;

/// A visitor's session, as an actix-web handler takes it. It dereferences
/// to [`server_sessions::Session`], whose methods are the whole API:
/// `get`, `insert`, `remove`, `regenerate`, `logout`, explicit locks, the
/// user index.
///
/// ```
/// use server_sessions_actix::{Error, Session};
///
/// async fn counter(session: Session) -> Result<String, Error> {
///     let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
///     session.insert("counter", n).await?;
///     Ok(n.to_string())
/// }
/// ```
///
/// Extracting it where [`SessionMiddleware`](crate::SessionMiddleware) is
/// not installed, or where sessions are off for the path, fails with
/// [`NoSession`] (a 500: a setup mistake); take `Option<Session>` in a
/// handler that serves both kinds of path.
#[derive(Debug, Clone)]
pub struct Session(pub(crate) server_sessions::Session);

impl Session {
    /// The core's handle, for code shared with a tower app.
    pub fn into_inner(self) -> server_sessions::Session {
        self.0
    }
}

impl Deref for Session {
    type Target = server_sessions::Session;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromRequest for Session {
    type Error = NoSession;
    type Future = Ready<Result<Self, NoSession>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Session>().cloned().ok_or(NoSession))
    }
}

/// The handler asked for a [`Session`] where there is none: the
/// middleware is not installed around this route, or sessions are off for
/// its path. A 500, since it is a setup mistake.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct NoSession;

impl std::fmt::Display for NoSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "no session for this request: is SessionMiddleware installed and `on` for this path?",
        )
    }
}

impl std::error::Error for NoSession {}

impl ResponseError for NoSession {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!("{self}");
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body("session error\n")
    }
}

/// A session operation's error, as an actix-web handler returns it: `?`
/// converts [`server_sessions::Error`] into it. It answers as the tower
/// layer does: 503 with `Retry-After` for store trouble or a busy lock,
/// 500 otherwise, with a short body; the details go to the log.
#[derive(Debug)]
pub struct Error(pub server_sessions::Error);

impl From<server_sessions::Error> for Error {
    fn from(e: server_sessions::Error) -> Self {
        Error(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        translate::response(server_sessions::adapter::error_response(&self.0))
    }
}
