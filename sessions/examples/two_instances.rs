//! Two instances of a site sharing one Redis, as two servers behind a load
//! balancer would: a visitor's requests may land on either, and the
//! session's lock, held in Redis, keeps them from overwriting each other.
//!
//! ```text
//! cargo run --example two_instances              # REDIS_URL, or redis://127.0.0.1:6379/
//! curl -c jar -b jar localhost:8081/; curl -c jar -b jar localhost:8082/
//! ```

use axum::routing::get;
use axum::Router;
use server_sessions::store::RedisStore;
use server_sessions::{Session, SessionLayer};

async fn count(session: Session) -> Result<String, server_sessions::Error> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    // Some work between the read and the write, where an unlocked session
    // would lose an update to the other instance.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    session.insert("n", n).await?;
    Ok(n.to_string())
}

/// One instance: its own connection to Redis, the same keys as the other.
async fn instance(redis_url: &str, prefix: &str) -> Result<Router, server_sessions::store::Error> {
    let store = RedisStore::connect(redis_url).await?.with_prefix(prefix);
    Ok(Router::new()
        .route("/", get(count))
        .layer(SessionLayer::new(store)))
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = redis_url();
    let mut servers = Vec::new();
    for port in [8081, 8082] {
        let app = instance(&url, "example:session:").await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("instance on http://{}/", listener.local_addr()?);
        servers.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    for server in servers {
        server.await??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, Request};
    use tower::ServiceExt;

    async fn get(app: Router, cookie: Option<String>) -> (String, Option<String>) {
        let mut req = Request::get("/");
        if let Some(c) = &cookie {
            req = req.header(header::COOKIE, c);
        }
        let resp = app
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
        let set = resp
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (String::from_utf8(body.to_vec()).unwrap(), set)
    }

    /// 20 concurrent requests on one session, half on each instance, after
    /// the first: the next one counts exactly 22. Skipped without a Redis,
    /// except under `CI=true`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_lose_no_update() {
        let prefix = format!("example-{}:", std::process::id());
        let (a, b) = match (
            instance(&redis_url(), &prefix).await,
            instance(&redis_url(), &prefix).await,
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "no Redis: {e}"
                );
                eprintln!("skipping: no Redis ({e})");
                return;
            }
        };
        let (_, cookie) = get(a.clone(), None).await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let app = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(get(app, cookie.clone()))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(get(b, cookie).await.0, "22");
    }
}
