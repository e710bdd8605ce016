//! The demo site: a page that shows what a session does.
//! (A fuller page with forms comes with the demo issue.)

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use sessions::Session;

pub(crate) fn router() -> Router {
    Router::new().route("/", get(index))
}

async fn index(session: Session) -> Result<Html<String>, sessions::Error> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    let id = session.id().await?;
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><title>sessions demo</title>\
         <h1>sessions demo</h1><p>You have visited this page <b>{visits}</b> time(s) \
         in this session.</p><p>Session <code>{}</code> (the cookie carries the full id).</p>",
        id.short()
    )))
}
