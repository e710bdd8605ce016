//! [`CsrfLayer`]: the check of unsafe requests.

use std::task::{Context, Poll};

use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use tower_layer::Layer;
use tower_service::Service;

use super::{verify, FIELD, HEADER};
use crate::session::Session;

/// The largest form body read for its token (larger forms send the token
/// in the header, or as multipart they must anyway).
const MAX_FORM: usize = 1 << 20;

/// Refuses POST, PUT, PATCH and DELETE requests without the session's
/// token in the [`HEADER`] header or, for an
/// `application/x-www-form-urlencoded` body, the [`FIELD`] field: 403,
/// logged at warn. Install it inside the
/// [`SessionLayer`](crate::SessionLayer). See the [module docs](super).
#[derive(Debug, Clone, Copy, Default)]
pub struct CsrfLayer {
    _private: (),
}

impl CsrfLayer {
    /// The check, with the standard field and header names.
    pub fn new() -> Self {
        CsrfLayer::default()
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CsrfService { inner }
    }
}

/// The service [`CsrfLayer`] makes.
#[derive(Debug, Clone)]
pub struct CsrfService<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for CsrfService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if !unsafe_method(request.method()) {
                return inner.call(request).await;
            }
            match check(request).await {
                Ok(request) => inner.call(request).await,
                Err(refusal) => Ok(refusal),
            }
        })
    }
}

fn unsafe_method(m: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(m)
}

/// The request, passed on (its body read and put back), or the refusal.
async fn check(request: Request<Body>) -> Result<Request<Body>, Response> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let refuse = |why: &str| {
        tracing::warn!(%method, path, "CSRF check failed: {why}; refused");
        (StatusCode::FORBIDDEN, "CSRF token missing or wrong\n").into_response()
    };
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        // Sessions off for this path: there is no token to compare with.
        return Err(refuse("no session for this path"));
    };
    if !session.config().cookie {
        // The id travels in a header only a script of the app sets.
        return Ok(request);
    }
    if let Some(sent) = request.headers().get(HEADER) {
        let sent = sent.to_str().unwrap_or("").to_owned();
        return match verify(&session, &sent).await {
            Ok(true) => Ok(request),
            Ok(false) => Err(refuse("wrong token in the header")),
            Err(e) => Err(e.into_response()),
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(refuse("no token header, and the body is not a form"));
    }
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_FORM).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::warn!(path, error = %e, "CSRF check cannot read the form; refused");
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "form too large or unreadable\n",
            )
                .into_response());
        }
    };
    let sent = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == FIELD)
        .map(|(_, v)| v.into_owned());
    let request = Request::from_parts(parts, Body::from(bytes));
    match sent {
        None => Err(refuse("no token in the form")),
        Some(sent) => match verify(&session, &sent).await {
            Ok(true) => Ok(request),
            Ok(false) => Err(refuse("wrong token in the form")),
            Err(e) => Err(e.into_response()),
        },
    }
}
