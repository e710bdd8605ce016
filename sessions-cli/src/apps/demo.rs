//! The demo site: one page that shows what a session does, with plain
//! form POSTs and redirects, so it works without JavaScript. Every form
//! carries the session's CSRF token (`serve` installs the check), and
//! messages for the next page are the library's flash messages.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::Value;
use server_sessions::flash::{Flash, Level};
use server_sessions::{csrf, Session, SessionConfig};

use crate::cmd::when_at;

/// Keys of this prefix belong to the library (flash messages, the CSRF
/// token, the log-in fingerprint): not shown, not settable.
const RESERVED: &str = "_";
const MAX_KEY: usize = 100;
const MAX_VALUE: usize = 1_000;

pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/set", post(set))
        .route("/remove", post(remove))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/logout-others", post(logout_others))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/goodbye", get(goodbye))
}

pub(crate) type Result<T> = std::result::Result<T, server_sessions::Error>;

async fn page(session: Session) -> Result<Html<String>> {
    Ok(Html(render(&session).await?))
}

/// The page, whatever the framework (the actix-web app in `demo_actix.rs`
/// calls this and the other `pub(crate)` functions too).
pub(crate) async fn render(session: &Session) -> Result<String> {
    let visits = match session.get::<u64>("visits").await {
        Ok(visits) => visits.unwrap_or(0) + 1,
        // Not a count (the form sets any key to a string): the count
        // starts over in its place, rather than every page failing.
        Err(server_sessions::Error::Value { .. }) => 1,
        Err(e) => return Err(e),
    };
    session.insert("visits", visits).await?;
    let flash = Flash::from(session.clone()).take().await?;
    let token = csrf::token(session).await?;
    let csrf = format!(
        "<input type=hidden name={} value=\"{}\">",
        csrf::FIELD,
        escape(&token)
    );
    let id = session.id().await?;
    let account = match session.user().await? {
        Some(user) => account(session, &user, &csrf).await?,
        None => "<p id=user>Not logged in.</p>".to_owned(),
    };
    let created = session.created().await?;
    let expires = session.expires().await?;
    let data = session.to_json().await?;

    let mut rows = String::new();
    if let Value::Object(map) = &data {
        for (key, value) in map.iter().filter(|(k, _)| !k.starts_with(RESERVED)) {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(
                rows,
                "<tr><td><code>{k}</code></td><td>{v}</td><td>\
                 <form method=post action=/remove><input type=hidden name=key value=\"{k}\">\
                 {csrf}<button>remove</button></form></td></tr>",
                k = escape(key),
                v = escape(&shown),
            );
        }
    }
    let flash: String = flash
        .iter()
        .map(|m| format!("<p class=\"flash {}\">{}</p>", m.level, escape(&m.text)))
        .collect();
    Ok(format!(
        include_str!("demo.html"),
        flash = flash,
        visits = visits,
        id = id,
        created = when_at(created),
        expires = when_at(expires),
        cookie = escape(&cookie_summary(session.config())),
        rows = rows,
        account = account,
        csrf = csrf,
    ))
}

/// The logged-in user's part of the page: who, and every session of that
/// user (this one marked), with the two ways to end them.
async fn account(session: &Session, user: &server_sessions::UserId, csrf: &str) -> Result<String> {
    let mut rows = String::new();
    for s in session.user_sessions().await? {
        let _ = write!(
            rows,
            "<tr><td><code>{key}</code>{this}</td><td>{created}</td><td>{used}</td><td>{expires}</td></tr>",
            key = s.key.short(),
            this = if s.current { " (this one)" } else { "" },
            created = when_at(s.created),
            used = when_at(s.last_used),
            expires = when_at(s.expires),
        );
    }
    Ok(format!(
        "<p>Logged in as <strong id=user>{user}</strong>.</p>\n\
         <h2>Your sessions</h2>\n\
         <table id=your-sessions>\n\
         <tr><th>Session</th><th>Created</th><th>Last used</th><th>Expires</th></tr>\n\
         {rows}</table>\n\
         <div class=row>\n\
         <form method=post action=/logout-others>{csrf}<button id=logout-others>Log out other sessions</button></form>\n\
         <form method=post action=/logout-everywhere>{csrf}<button id=logout-everywhere>Log out everywhere</button></form>\n\
         </div>",
        user = escape(user.as_str()),
    ))
}

#[derive(Deserialize)]
pub(crate) struct SetForm {
    pub(crate) key: String,
    pub(crate) value: String,
}

async fn set(session: Session, Form(form): Form<SetForm>) -> Result<Response> {
    Ok(match set_value(&session, &form).await? {
        Ok(()) => Redirect::to("/").into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    })
}

/// Stores the form's key and value; `Err` says why they were refused (a
/// 400).
pub(crate) async fn set_value(
    session: &Session,
    form: &SetForm,
) -> Result<std::result::Result<(), String>> {
    let key = form.key.trim();
    if key.is_empty() || key.len() > MAX_KEY || key.starts_with(RESERVED) {
        return Ok(Err(format!(
            "a key is 1 to {MAX_KEY} characters and does not start with {RESERVED}\n"
        )));
    }
    if form.value.len() > MAX_VALUE {
        return Ok(Err(format!("a value is at most {MAX_VALUE} characters\n")));
    }
    session.insert(key, &form.value).await?;
    Ok(Ok(()))
}

async fn remove(session: Session, Form(form): Form<HashMap<String, String>>) -> Result<Redirect> {
    remove_key(&session, &form).await?;
    Ok(Redirect::to("/"))
}

/// Removes the form's `key`, if it names one.
pub(crate) async fn remove_key(session: &Session, form: &HashMap<String, String>) -> Result<()> {
    if let Some(key) = form.get("key") {
        session.remove_value(key).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    pub(crate) user: String,
}

async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Response> {
    Ok(match log_in(&session, &form).await? {
        Ok(()) => Redirect::to("/").into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    })
}

/// What an app does when a user logs in (the demo takes any name, without
/// a password): a new id for the same data, so an id planted before the
/// login is worthless after it, and the session tied to the user, so that
/// the user's sessions can be listed and ended. `Err` says why the name
/// was refused (a 400).
pub(crate) async fn log_in(
    session: &Session,
    form: &LoginForm,
) -> Result<std::result::Result<(), String>> {
    let user = match server_sessions::UserId::new(form.user.trim()) {
        Ok(user) => user,
        Err(e) => return Ok(Err(format!("{e}\n"))),
    };
    session.regenerate().await?;
    session.set_user(user).await?;
    // New privileges, new token: a form rendered before the log-in (or
    // planted with it) no longer posts.
    csrf::rotate(session).await?;
    // The message is kept in the session until the next page: it names no
    // id, since no store may hold one (the page shows the new id itself).
    Flash::from(session.clone())
        .success("Logged in: the session has a new id, and the data stayed.")
        .await?;
    Ok(Ok(()))
}

async fn logout(session: Session) -> Result<Redirect> {
    session.logout().await?;
    Ok(Redirect::to("/goodbye"))
}

async fn logout_others(session: Session) -> Result<Redirect> {
    end_other_sessions(&session).await?;
    Ok(Redirect::to("/"))
}

/// "Log out my other devices": every other session of this user ends.
pub(crate) async fn end_other_sessions(session: &Session) -> Result<()> {
    let ended = session.logout_other_sessions().await?;
    let plural = if ended == 1 { "" } else { "s" };
    Flash::from(session.clone())
        .push(Level::Info, format!("Ended {ended} other session{plural}."))
        .await
}

/// Every session of this user ends, this one too.
async fn logout_everywhere(session: Session) -> Result<Redirect> {
    session.logout_everywhere().await?;
    Ok(Redirect::to("/goodbye"))
}

/// Uses no session, so it sets no cookie: the browser is left without one.
async fn goodbye() -> Html<&'static str> {
    Html(GOODBYE)
}

/// The page after a log-out.
pub(crate) const GOODBYE: &str = "<!doctype html><meta charset=utf-8><title>Logged out</title>\
         <style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}</style>\
         <h1>Logged out</h1><p>The session was deleted on the server and the browser \
         was told to drop its cookie.</p><p><a href=/>Start a new session</a></p>";

/// The attributes of the cookie this page's response sets.
fn cookie_summary(c: &SessionConfig) -> String {
    let mut s = format!("{}=<id>", c.name);
    if c.persistent {
        let secs = (c.timeout.as_millis() + 500) / 1000;
        let _ = write!(s, "; Expires=<now + {secs} s>; Max-Age={secs}");
    } else {
        s.push_str(" (browser-session cookie: no Expires, no Max-Age)");
    }
    let _ = write!(s, "; Path={}", c.path);
    if let Some(d) = &c.domain {
        let _ = write!(s, "; Domain={d}");
    }
    if c.secure {
        s.push_str("; Secure");
    }
    if c.httponly {
        s.push_str("; HttpOnly");
    }
    if let Some(same) = c.samesite {
        let _ = write!(s, "; SameSite={same:?}");
    }
    s
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn summarises_the_cookie() {
        let s = cookie_summary(&SessionConfig::default());
        assert_eq!(
            s,
            "session_id=<id>; Expires=<now + 3600 s>; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax"
        );
    }
}
