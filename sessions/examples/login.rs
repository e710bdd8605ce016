//! A login flow: a new id at log-in (against session fixation), the user
//! kept in the session, "remember me" (this session lives 30 days idle
//! where others keep the configured hour), and a log-out that ends it on
//! the server and in the browser.
//!
//! ```text
//! cargo run --example login
//! curl -c jar -b jar localhost:8080/            # "hello, guest"
//! curl -c jar -b jar -d user=alice -d remember=on localhost:8080/login
//! curl -c jar -b jar localhost:8080/            # "hello, alice"
//! curl -c jar -b jar -X POST localhost:8080/logout
//! ```

use std::time::Duration;

use axum::extract::Form;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use server_sessions::store::MemoryStore;
use server_sessions::{Session, SessionConfig, SessionLayer};

#[derive(Deserialize)]
struct Login {
    user: String,
    /// The "remember me" box: present when ticked.
    remember: Option<String>,
}

/// How long a remembered session lives without a visit.
const REMEMBERED: Duration = Duration::from_secs(30 * 24 * 3600);

async fn home(session: Session) -> Result<String, server_sessions::Error> {
    let user: Option<String> = session.get("user").await?;
    Ok(format!("hello, {}", user.as_deref().unwrap_or("guest")))
}

async fn login(session: Session, Form(form): Form<Login>) -> Result<String, server_sessions::Error> {
    // Check the password here. Then: a new id for the logged-in session,
    // so that an id planted before the log-in opens nothing.
    session.regenerate().await?;
    session.insert("user", &form.user).await?;
    if form.remember.is_some() {
        // Kept with the session: every later request, and the cookie's
        // expiry, follow it.
        session.set_timeout(REMEMBERED).await?;
    }
    Ok(format!("logged in as {}", form.user))
}

async fn logout(session: Session) -> Result<&'static str, server_sessions::Error> {
    // Deleted in the store, and the cookie told to go.
    session.logout().await?;
    Ok("logged out")
}

fn app() -> Router {
    let mut config = SessionConfig::default();
    // Behind TLS in production: config.secure = true;
    config.httponly = true;
    Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(MemoryStore::new()).with_config(config))
}

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
        .await
        .unwrap();
    println!("http://{}/", listener.local_addr().unwrap());
    axum::serve(listener, app()).await.unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, Request};
    use tower::ServiceExt;

    async fn send(app: &Router, req: Request<axum::body::Body>) -> (String, Option<String>) {
        let resp = app.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
        let cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (String::from_utf8(body.to_vec()).unwrap(), cookie)
    }

    fn get(path: &str, cookie: &str) -> Request<axum::body::Body> {
        Request::get(path)
            .header(header::COOKIE, cookie)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    fn post(path: &str, cookie: &str, form: &'static str) -> Request<axum::body::Body> {
        Request::post(path)
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(form))
            .unwrap()
    }

    #[tokio::test]
    async fn log_in_and_out() {
        let app = app();
        let (body, _) = send(&app, get("/", "")).await;
        assert_eq!(body, "hello, guest");
        let (body, set) = send(&app, post("/login", "", "user=alice")).await;
        assert_eq!(body, "logged in as alice");
        let set = set.unwrap();
        assert!(set.contains("Max-Age=3600"), "{set}");
        let cookie = set.split(';').next().unwrap().to_owned();
        // Remembered: the cookie lives 30 days.
        let (_, remembered) = send(&app, post("/login", "", "user=bob&remember=on")).await;
        assert!(remembered.unwrap().contains("Max-Age=2592000"));
        assert_eq!(send(&app, get("/", &cookie)).await.0, "hello, alice");
        let (_, gone) = send(&app, post("/logout", &cookie, "")).await;
        assert!(gone.unwrap().contains("Max-Age=0"), "the cookie is cleared");
        assert_eq!(send(&app, get("/", &cookie)).await.0, "hello, guest");
    }
}
