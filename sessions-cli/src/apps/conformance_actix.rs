//! CherryPy's session test app through actix-web: the routes of
//! `conformance.rs`, whose functions do the work; only the HTTP differs.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use server_sessions::store::SessionAdmin;
use server_sessions_actix::{Error, Session};

use super::conformance::{self as app, Key};

type Result<T> = std::result::Result<T, Error>;
type Store = web::Data<Arc<dyn SessionAdmin>>;

/// Adds the app's routes to an actix-web `App` (`App::configure`).
pub(crate) fn routes(store: Arc<dyn SessionAdmin>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(store))
            .route("/", web::to(index))
            .route("/testStr", web::to(test_str))
            .route("/data", web::to(data))
            .route("/keyin", web::to(keyin))
            .route("/delkey", web::to(delkey))
            .route("/delete", web::to(delete))
            .route("/regen", web::to(regen))
            .route("/length", web::to(length))
            .route("/session_cookie", web::to(session_cookie))
            .service(
                web::resource("/restricted")
                    .route(web::get().to(restricted))
                    .route(web::head().to(restricted))
                    // Other methods get 405 before any session code runs.
                    .default_service(web::to(|| async {
                        HttpResponse::MethodNotAllowed()
                            .insert_header((header::ALLOW, "GET, HEAD"))
                            .finish()
                    })),
            );
    }
}

async fn index(session: Session) -> Result<String> {
    Ok(app::count(&session, true).await?)
}

async fn test_str(session: Session) -> Result<String> {
    Ok(app::count(&session, false).await?)
}

async fn data(session: Session) -> Result<HttpResponse> {
    let body = app::data_json(&session).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

async fn keyin(session: Session, q: web::Query<Key>) -> Result<&'static str> {
    Ok(app::key_in(&session, &q.key).await?)
}

async fn delkey(session: Session, q: web::Query<Key>) -> Result<&'static str> {
    Ok(app::del_key(&session, &q.key).await?)
}

async fn delete(session: Session) -> Result<&'static str> {
    Ok(app::delete_session(&session).await?)
}

async fn regen(session: Session) -> Result<&'static str> {
    Ok(app::regenerate(&session).await?)
}

async fn length(session: Session, store: Store) -> Result<String> {
    Ok(app::count_sessions(&session, &***store).await?)
}

async fn session_cookie(session: Session) -> Result<String> {
    Ok(app::session_id(&session).await?)
}

async fn restricted(req: actix_web::HttpRequest) -> String {
    req.method().as_str().to_owned()
}
