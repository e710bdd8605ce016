use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::layer::Shared;
use super::ResponseFuture;
use crate::config::Locking;
use crate::cookie;
use crate::session::Session;

/// The service [`SessionLayer`](super::SessionLayer) wraps around yours.
#[derive(Clone)]
pub struct SessionService<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
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
        let config = self.shared.config.resolve(req.uri().path());
        if !config.on {
            return ResponseFuture::passthrough(inner.call(req));
        }
        self.shared.start_cleanup();
        let client = cookie::client_id(req.headers(), &config.name);
        let cookie_path = config
            .path_header
            .as_ref()
            .and_then(|h| req.headers().get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|p| p.starts_with('/') && cookie::is_cookie_safe(p))
            .map(String::from);
        let early = config.locking == Locking::Early;
        let session = Session::new(
            self.shared.store.clone(),
            config.clone(),
            client,
            cookie_path,
        );
        req.extensions_mut().insert(session.clone());
        ResponseFuture::session(async move {
            // Whatever ends this future — the response, an error, a panic
            // in the handler, the client going away — releases the lock.
            let _release = Abandon(session.clone());
            if early {
                if let Err(e) = session.lock_early().await {
                    return Ok(e.failure().response());
                }
            }
            let mut response = inner.call(req).await?;
            session.finish(&mut response).await;
            Ok(response)
        })
    }
}

/// Releases the session's lock when dropped, saving nothing.
struct Abandon(Session);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.abandon();
    }
}
