//! The axum extractor: a handler takes a [`Session`] argument.

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::error::Error;
use crate::session::Session;

/// The handler asked for a [`Session`] where there is none: the
/// [`SessionLayer`](crate::SessionLayer) is not installed around this route,
/// or sessions are off for its path. A 500, since it is a setup mistake.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no session for this request: is SessionLayer installed and `on` for this path?")]
#[non_exhaustive]
pub struct NoSession;

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, "session error\n").into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NoSession> {
        parts.extensions.get::<Session>().cloned().ok_or(NoSession)
    }
}

/// `Option<Session>`: `None` where sessions are off, for handlers that
/// serve both kinds of path.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

/// Lets handlers use `?` on session operations: store trouble answers 503
/// with `Retry-After`, anything else 500, with a short body. Logged once:
/// here, unless it was logged where it happened.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            // The reason, which names no part of the input, helps the client.
            Error::User(e) => e.into_response(),
            e => e.answer(),
        }
    }
}

/// Lets handlers use `?` on [`UserId::new`](crate::UserId::new) with what
/// a client sent: a user id that is not one is the client's mistake, a
/// 400 saying why (the reason names no part of the input).
impl IntoResponse for crate::user::InvalidUser {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, format!("{self}\n")).into_response()
    }
}
