use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::{ResponseFuture, SessionLayer};
use crate::adapter::{Pending, Reply};

/// The service [`SessionLayer`](super::SessionLayer) wraps around yours.
#[derive(Clone)]
pub struct SessionService<S> {
    pub(super) inner: S,
    pub(super) layer: SessionLayer,
}

impl<S> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<&'static str> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(pending) = Pending::start(&self.layer, req.uri().path(), req.headers()) else {
            return ResponseFuture::passthrough(inner.call(req));
        };
        req.extensions_mut().insert(pending.session().clone());
        ResponseFuture::session(async move {
            // Whatever ends this future — the response, an error, a panic
            // in the handler, the client going away — drops `pending`,
            // which ends the request's hold on the session.
            if let Err(refused) = pending.before_handler().await {
                return Ok(refused.map(ResBody::from));
            }
            let mut response = inner.call(req).await?;
            match pending.finish().await {
                Reply::Headers(headers) => headers.write_to(response.headers_mut()),
                Reply::Replace(failure) => response = failure.map(ResBody::from),
            }
            Ok(response)
        })
    }
}
