//! A long-poll route that must not hold the session lock. With the default
//! (implicit) locking, a request that reads the session keeps its lock
//! until it answers, so a 30-second poll would make every other request of
//! the visitor wait. Per-path settings give the poll explicit locking: it
//! reads without the lock, and the rest of the site keeps the default.
//! They are read from INI text here, which needs the crate's `config-file`
//! feature.
//!
//! ```text
//! cargo run --example long_poll
//! curl -c jar -b jar localhost:8080/          # counts, as usual
//! curl -c jar -b jar localhost:8080/poll &    # waits 5 s...
//! curl -c jar -b jar localhost:8080/          # ...without blocking this
//! ```

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use server_sessions::store::MemoryStore;
use server_sessions::{Config, Session, SessionLayer};

/// The site's settings: the default everywhere, explicit locking under
/// `/poll` (the same file a CherryPy site would use).
const CONFIG: &str = "\
[/]
tools.sessions.on = True

[/poll]
tools.sessions.locking = 'explicit'
";

async fn count(session: Session) -> Result<String, server_sessions::Error> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", n).await?;
    Ok(n.to_string())
}

/// Reads the session without taking its lock, then waits for news (here:
/// a fixed pause) while other requests of the visitor go on.
async fn poll(session: Session) -> Result<String, server_sessions::Error> {
    let seen: u64 = session.get("n").await?.unwrap_or(0);
    tokio::time::sleep(POLL).await;
    Ok(format!("nothing new since {seen}"))
}

const POLL: Duration = Duration::from_secs(5);

fn app() -> Router {
    let config = Config::from_ini_str(CONFIG, "long_poll.conf").expect("a valid config");
    Router::new()
        .route("/", get(count))
        .route("/poll", get(poll))
        .layer(SessionLayer::new(MemoryStore::new()).with_file_config(config))
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

    async fn get(app: &Router, path: &str, cookie: Option<&str>) -> (String, Option<String>) {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let resp = app
            .clone()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (String::from_utf8(body.to_vec()).unwrap(), cookie)
    }

    /// While a poll of the visitor waits, the visitor's other requests
    /// are answered: the poll holds no lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poll_does_not_block_the_visitor() {
        let app = app();
        let (n, cookie) = get(&app, "/", None).await;
        assert_eq!(n, "1");
        let cookie = cookie.unwrap();
        let polling = {
            let (app, cookie) = (app.clone(), cookie.clone());
            tokio::spawn(async move { get(&app, "/poll", Some(&cookie)).await.0 })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&app, "/", Some(&cookie)).await.0, "2");
        assert!(!polling.is_finished(), "the count waited for the poll");
        assert_eq!(polling.await.unwrap(), "nothing new since 1");
    }
}
