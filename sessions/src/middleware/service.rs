use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use tower_service::Service;

use super::respond::respond;
use super::ResponseFuture;
use crate::config::{Locking, SessionConfig, StorageType};
use crate::cookie;
use crate::header;
use crate::request::{ClientId, Shared};
use crate::session::Session;
use crate::store::InCookie;

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
        // `storage_type = "cookie"`: the session itself is in the cookie,
        // and this request gets a store of its own holding it.
        let in_cookie = (config.storage.kind == StorageType::Cookie)
            .then(|| InCookie::for_request(cookie::values(req.headers(), &config.name), config));
        let client = match &in_cookie {
            Some((_, client)) => *client,
            None => client_id(req.headers(), config),
        };
        let cookie_path = config
            .path_header
            .as_ref()
            .and_then(|h| req.headers().get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|p| cookie::is_cookie_path(p))
            .map(String::from);
        let early = config.locking == Locking::Early;
        let (state, in_cookie) = match in_cookie {
            Some((store, _)) => (
                self.shared
                    .request_on(Arc::new(store.clone()), config, client),
                Some(store),
            ),
            None => (self.shared.request(config, client), None),
        };
        let session = Session::new(state, client.id());
        req.extensions_mut().insert(session.clone());
        ResponseFuture::session(async move {
            // Whatever ends this future — the response, an error, a panic
            // in the handler, the client going away — ends the request's
            // hold on the session, releasing its lock.
            let _end = session.end_on_drop();
            if early {
                let mut state = session.request_state().lock().await;
                if let Err(e) = state.acquire_lock().await {
                    return Ok(e.failure().response());
                }
            }
            let mut response = inner.call(req).await?;
            let outcome = session.request_state().lock().await.finish().await;
            respond(
                outcome,
                session.config(),
                cookie_path.as_deref(),
                in_cookie.as_ref(),
                &mut response,
            );
            Ok(response)
        })
    }
}

/// The id the client sent: in the `header`, when one is configured and
/// sent; otherwise in the cookie, when cookies are on.
fn client_id(headers: &HeaderMap, config: &SessionConfig) -> ClientId {
    if let Some(name) = &config.header {
        let sent = header::client_id(headers, name, config.signer());
        if sent != ClientId::NotSent || !config.cookie {
            return sent;
        }
    }
    if config.cookie {
        cookie::client_id(headers, &config.name, config.signer())
    } else {
        ClientId::NotSent
    }
}
