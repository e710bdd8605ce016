//! [`RequireLogin`]: routes that need a logged-in user, and the
//! [`CurrentUser`] extractor that hands the user to the handler.

use std::task::{Context, Poll};

use axum_core::body::Body;
use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{header, HeaderValue, Request, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::{Auth, AuthError, Backend};
use crate::extract::NoSession;
use crate::session::Session;

impl<B: Backend> Auth<B> {
    /// A layer that lets only logged-in users through (checked with
    /// [`Auth::user`]). Others get, for a page (the request accepts
    /// `text/html`), a `303` to `login_page?next=<where they were going>`,
    /// and otherwise a `401`. Install it inside the
    /// [`SessionLayer`](crate::SessionLayer).
    pub fn require_login(&self, login_page: &str) -> RequireLogin<B> {
        RequireLogin {
            auth: self.clone(),
            login_page: login_page.into(),
        }
    }
}

/// See [`Auth::require_login`].
#[derive(Debug)]
pub struct RequireLogin<B> {
    auth: Auth<B>,
    login_page: std::sync::Arc<str>,
}

impl<B> Clone for RequireLogin<B> {
    fn clone(&self) -> Self {
        RequireLogin {
            auth: self.auth.clone(),
            login_page: self.login_page.clone(),
        }
    }
}

impl<B, S> Layer<S> for RequireLogin<B> {
    type Service = RequireLoginService<B, S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireLoginService {
            config: self.clone(),
            inner,
        }
    }
}

/// The service [`RequireLogin`] makes.
#[derive(Debug)]
pub struct RequireLoginService<B, S> {
    config: RequireLogin<B>,
    inner: S,
}

impl<B, S: Clone> Clone for RequireLoginService<B, S> {
    fn clone(&self) -> Self {
        RequireLoginService {
            config: self.config.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<B, S> Service<Request<Body>> for RequireLoginService<B, S>
where
    B: Backend,
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        Box::pin(async move {
            let Some(session) = request.extensions().get::<Session>().cloned() else {
                return Ok(NoSession.into_response());
            };
            match config.auth.user(&session).await {
                Ok(Some(user)) => {
                    request.extensions_mut().insert(CurrentUser(user));
                    inner.call(request).await
                }
                Ok(None) => Ok(turn_away(&request, &config.login_page)),
                Err(e) => Ok(e.into_response()),
            }
        })
    }
}

/// A page is sent to the log-in page, with where it was going; anything
/// else is told it needs to log in.
fn turn_away(request: &Request<Body>, login_page: &str) -> Response {
    let wants_page = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if !wants_page {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    }
    let here = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
    let sep = if login_page.contains('?') { '&' } else { '?' };
    match HeaderValue::try_from(format!("{login_page}{sep}next={next}")) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => (StatusCode::UNAUTHORIZED, "log in first\n").into_response(),
    }
}

/// The logged-in user, in a handler behind [`RequireLogin`]. Elsewhere it
/// is refused with a 401.
#[derive(Debug, Clone)]
pub struct CurrentUser<U>(pub U);

impl<S: Send + Sync, U: Clone + Send + Sync + 'static> FromRequestParts<S> for CurrentUser<U> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        parts
            .extensions
            .get::<CurrentUser<U>>()
            .cloned()
            .ok_or_else(|| (StatusCode::UNAUTHORIZED, "log in first\n").into_response())
    }
}

/// A session failure answers as it does everywhere (503 for a store that
/// is down); a backend failure is logged and answers 500.
impl<E: std::error::Error + 'static> IntoResponse for AuthError<E> {
    fn into_response(self) -> Response {
        match self {
            AuthError::Session(e) => e.into_response(),
            AuthError::Backend(e) => {
                tracing::error!(error = %e, "user backend failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "log-in unavailable\n").into_response()
            }
        }
    }
}
