//! An actix-web app with locked server-side sessions: a counter, a log-in
//! that gives the session a new id and ties it to its user, the list of
//! that user's sessions, and a log-out that ends the session on the server
//! and in the browser. With a config file (CherryPy's INI, or TOML) as its
//! argument, the store and settings are the file's: Redis, PostgreSQL and
//! the others, as `sessions serve` reads them.
//!
//! ```text
//! cargo run -p server-sessions-actix --example actix_login
//! curl -c jar -b jar localhost:8080/             # "visit 1, guest"
//! curl -c jar -b jar -d user=alice localhost:8080/login
//! curl -c jar -b jar localhost:8080/sessions     # alice's sessions
//! curl -c jar -b jar -X POST localhost:8080/logout
//! ```

use actix_web::{web, App, HttpServer};
use serde::Deserialize;
use server_sessions::store::MemoryStore;
use server_sessions::{Config, SessionConfig, SessionLayer, UserId};
use server_sessions_actix::{Error, Session, SessionMiddleware};

async fn home(session: Session) -> Result<String, Error> {
    // The first use loads the session, taking its lock first: two tabs
    // of one visitor take turns, and no visit is lost.
    let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    let user = session.user().await?;
    let who = user.as_ref().map_or("guest", UserId::as_str);
    Ok(format!("visit {visits}, {who}"))
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, form: web::Form<Login>) -> Result<String, Error> {
    let Ok(user) = UserId::new(form.user.trim()) else {
        return Ok("not a user name".into());
    };
    // Check the password here. Then: a new id for the logged-in session,
    // so that an id planted before the log-in opens nothing.
    session.regenerate().await?;
    session.set_user(user).await?;
    Ok(format!("logged in as {}", form.user.trim()))
}

/// Every live session of this visitor's user, on any device.
async fn sessions(session: Session) -> Result<String, Error> {
    let mine = session.user_sessions().await?;
    let lines: Vec<String> = mine.iter().map(|s| s.key.short().to_string()).collect();
    Ok(format!("{} sessions: {}", mine.len(), lines.join(" ")))
}

async fn logout(session: Session) -> Result<&'static str, Error> {
    // Deleted in the store, and the cookie told to go.
    session.logout().await?;
    Ok("logged out")
}

/// The routes, for the server and the test.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/login", web::post().to(login))
        .route("/sessions", web::get().to(sessions))
        .route("/logout", web::post().to(logout));
}

/// Sessions from the config file named on the command line, or in RAM.
async fn layer() -> std::io::Result<SessionLayer> {
    let Some(path) = std::env::args().nth(1) else {
        let mut config = SessionConfig::default();
        // Behind TLS in production: config.secure = true;
        config.httponly = true;
        return Ok(SessionLayer::new(MemoryStore::new()).with_config(config));
    };
    let config = Config::load(&path).map_err(std::io::Error::other)?;
    let store = server_sessions::store::open(&config)
        .await
        .map_err(std::io::Error::other)?;
    Ok(SessionLayer::from_arc(store).with_file_config(config))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // One middleware, cloned into every worker: they share the store, the
    // locks and the background clean-up.
    let sessions = SessionMiddleware::new(layer().await?);
    println!("http://127.0.0.1:8080/");
    HttpServer::new(move || App::new().wrap(sessions.clone()).configure(routes))
        .bind("127.0.0.1:8080")?
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use actix_web::http::header;
    use actix_web::test::{call_service, init_service, read_body, TestRequest};

    use super::*;

    /// `name=value` of the response's `Set-Cookie`.
    fn cookie_of(headers: &header::HeaderMap) -> String {
        let set = headers.get(header::SET_COOKIE).unwrap();
        set.to_str().unwrap().split(';').next().unwrap().to_owned()
    }

    #[actix_web::test]
    async fn log_in_list_and_out() {
        let sessions = SessionMiddleware::new(SessionLayer::new(MemoryStore::new()));
        let app = init_service(App::new().wrap(sessions).configure(routes)).await;
        let r = call_service(&app, TestRequest::get().uri("/").to_request()).await;
        let guest = cookie_of(r.headers());
        assert_eq!(read_body(r).await, "visit 1, guest");

        let login = |cookie: &str| {
            TestRequest::post()
                .uri("/login")
                .insert_header((header::COOKIE, cookie.to_owned()))
                .set_form([("user", "alice")])
                .to_request()
        };
        let r = call_service(&app, login(&guest)).await;
        let alice = cookie_of(r.headers());
        assert_ne!(alice, guest, "the id did not change at log-in");
        assert_eq!(read_body(r).await, "logged in as alice");
        // A second device.
        let r = call_service(&app, login("")).await;
        assert_eq!(r.status(), 200);

        let get = |path: &str, cookie: &str| {
            TestRequest::get()
                .uri(path)
                .insert_header((header::COOKIE, cookie.to_owned()))
                .to_request()
        };
        let r = call_service(&app, get("/", &alice)).await;
        assert_eq!(read_body(r).await, "visit 2, alice");
        let r = call_service(&app, get("/sessions", &alice)).await;
        assert!(read_body(r).await.starts_with(b"2 sessions: "));

        let out = TestRequest::post()
            .uri("/logout")
            .insert_header((header::COOKIE, alice.clone()))
            .to_request();
        let r = call_service(&app, out).await;
        let set = r.headers().get(header::SET_COOKIE).unwrap();
        assert!(set.to_str().unwrap().contains("Max-Age=0"));
        let r = call_service(&app, get("/", &alice)).await;
        assert_eq!(read_body(r).await, "visit 1, guest");
    }
}
