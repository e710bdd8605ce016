//! The actix-web middleware: [`SessionMiddleware`] wraps an app or a scope
//! and runs the session core's request life cycle
//! ([`server_sessions::adapter`]) around every request.

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header;
use actix_web::HttpMessage;
use futures_util::future::LocalBoxFuture;
use server_sessions::adapter::{Pending, Reply};
use server_sessions::SessionLayer;

use crate::{translate, Session};

/// Adds sessions to an actix-web app: `App::new().wrap(middleware.clone())`.
///
/// It is built from a [`SessionLayer`], which holds the store, the config
/// (one for every path, or a CherryPy-style file with sections) and the
/// event hooks: everything the tower layer does, this does. Cloning is
/// cheap, and every clone — one per actix worker — shares the store, the
/// locks and the background clean-up.
///
/// ```no_run
/// use actix_web::{web, App, HttpServer};
/// use server_sessions::{store::MemoryStore, SessionLayer};
/// use server_sessions_actix::{Error, Session, SessionMiddleware};
///
/// async fn counter(session: Session) -> Result<String, Error> {
///     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
///     session.insert("n", n).await?;
///     Ok(n.to_string())
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let sessions = SessionMiddleware::new(SessionLayer::new(MemoryStore::new()));
/// HttpServer::new(move || {
///     App::new()
///         .wrap(sessions.clone())
///         .route("/", web::get().to(counter))
/// })
/// .bind("127.0.0.1:8080")?
/// .run()
/// .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SessionMiddleware {
    layer: SessionLayer,
}

impl SessionMiddleware {
    /// Sessions as `layer` configures them.
    pub fn new(layer: SessionLayer) -> Self {
        SessionMiddleware { layer }
    }
}

impl From<SessionLayer> for SessionMiddleware {
    fn from(layer: SessionLayer) -> Self {
        Self::new(layer)
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionService {
            service: Rc::new(service),
            layer: self.layer.clone(),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around yours.
pub struct SessionService<S> {
    service: Rc<S>,
    layer: SessionLayer,
}

impl<S> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for SessionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let headers = translate::request_headers(req.headers());
        let Some(pending) = Pending::start(&self.layer, req.path(), &headers) else {
            return Box::pin(async move { Ok(service.call(req).await?.map_into_left_body()) });
        };
        req.extensions_mut()
            .insert(Session(pending.session().clone()));
        Box::pin(async move {
            // Whatever ends this future — the response, an error, the
            // client going away — drops `pending`, which ends the
            // request's hold on the session and releases its lock.
            if let Err(refused) = pending.before_handler().await {
                let refused = translate::response(refused);
                return Ok(req.into_response(refused).map_into_right_body());
            }
            let mut response = service.call(req).await?;
            match pending.finish().await {
                Reply::Headers(out) => {
                    let headers = response.headers_mut();
                    if let Some(c) = out.set_cookie() {
                        headers.append(header::SET_COOKIE, translate::value(c));
                    }
                    if let Some((n, v)) = out.id_header() {
                        headers.insert(translate::name(n), translate::value(v));
                    }
                    if let Some(c) = out.cache_control() {
                        if !headers.contains_key(header::CACHE_CONTROL) {
                            headers.insert(header::CACHE_CONTROL, translate::value(&c));
                        }
                    }
                    Ok(response.map_into_left_body())
                }
                Reply::Replace(failure) => {
                    let (req, _) = response.into_parts();
                    let failure = translate::response(failure);
                    Ok(ServiceResponse::new(req, failure).map_into_right_body())
                }
            }
        })
    }
}
