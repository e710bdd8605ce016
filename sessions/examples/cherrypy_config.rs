//! A CherryPy config file, served as it is: its `tools.sessions.*` keys
//! pick the store and set the timeouts, the locking and the cookie, per
//! path, as CherryPy would read them. An app of its own needs the crate's
//! `config-file` feature for this (`features = ["config-file"]`).
//!
//! ```text
//! cargo run --example cherrypy_config                  # sessions/examples/site.conf
//! cargo run --example cherrypy_config -- /etc/site.conf
//! ```

use axum::routing::get;
use axum::Router;
use server_sessions::{store, Config, Session, SessionLayer};

const DEFAULT_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/site.conf");

async fn count(session: Session) -> Result<String, server_sessions::Error> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", n).await?;
    Ok(format!("visit {n}"))
}

/// The site under the settings of `config`, with the store it names.
async fn app(config: Config) -> Result<Router, store::OpenError> {
    let store = store::open(&config).await?;
    Ok(Router::new()
        .route("/", get(count))
        .route("/static/{*file}", get(|| async { "a file, no session" }))
        .layer(SessionLayer::from_arc(store).with_file_config(config)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_CONFIG.into());
    // Every error names the file, the line and the key.
    let config = Config::load(&path)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("{path} on http://{}/", listener.local_addr()?);
    axum::serve(listener, app(config).await?).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, Request};
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_file_is_served_as_it_is() {
        let app = app(Config::load(DEFAULT_CONFIG).unwrap()).await.unwrap();
        let get = |path: &str| {
            let app = app.clone();
            let req = Request::get(path).body(axum::body::Body::empty()).unwrap();
            async move { app.oneshot(req).await.unwrap() }
        };
        let first = get("/").await;
        let cookie = first.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with("session_id=") && cookie.contains("HttpOnly"));
        // Sessions are off under /static: no cookie there.
        let file = get("/static/app.css").await;
        assert!(file.status().is_success());
        assert!(!file.headers().contains_key(header::SET_COOKIE));
    }
}
