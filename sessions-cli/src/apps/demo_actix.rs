//! The demo site through actix-web: the routes of `demo.rs`, whose
//! functions do the work; only the HTTP differs.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use server_sessions_actix::{Error, Session};

use super::demo::{self as app, LoginForm, SetForm};

type Result<T> = std::result::Result<T, Error>;

/// Adds the demo's routes to an actix-web `App` (`App::configure`).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page))
        .route("/set", web::post().to(set))
        .route("/remove", web::post().to(remove))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/logout-others", web::post().to(logout_others))
        .route("/logout-everywhere", web::post().to(logout_everywhere))
        .route("/goodbye", web::get().to(goodbye));
}

/// A 303 to `to`, as axum's `Redirect::to` answers.
fn redirect(to: &'static str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// A redirect home, or the 400 that says why the form was refused.
fn home_or(refused: std::result::Result<(), String>) -> HttpResponse {
    match refused {
        Ok(()) => redirect("/"),
        Err(why) => HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body(why),
    }
}

fn html(body: impl actix_web::body::MessageBody + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

async fn page(session: Session) -> Result<HttpResponse> {
    Ok(html(app::render(&session).await?))
}

async fn set(session: Session, form: web::Form<SetForm>) -> Result<HttpResponse> {
    Ok(home_or(app::set_value(&session, &form).await?))
}

async fn remove(
    session: Session,
    form: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse> {
    app::remove_key(&session, &form).await?;
    Ok(redirect("/"))
}

async fn login(session: Session, form: web::Form<LoginForm>) -> Result<HttpResponse> {
    Ok(home_or(app::log_in(&session, &form).await?))
}

async fn logout(session: Session) -> Result<HttpResponse> {
    session.logout().await?;
    Ok(redirect("/goodbye"))
}

async fn logout_others(session: Session) -> Result<HttpResponse> {
    app::end_other_sessions(&session).await?;
    Ok(redirect("/"))
}

async fn logout_everywhere(session: Session) -> Result<HttpResponse> {
    session.logout_everywhere().await?;
    Ok(redirect("/goodbye"))
}

async fn goodbye() -> HttpResponse {
    html(app::GOODBYE)
}
