//! What one request costs inside the server, without a network or a
//! client: requests go straight into the router (tower's `oneshot`) on one
//! thread, 2,000 visitors in turn, each reading and writing a counter in
//! its session, as the benchmark's "many sessions" workload does.
//!
//! ```text
//! per-request [bare|sessions|signed|sealed] [REQUESTS]
//! ```
//!
//! Run it under valgrind twice with different REQUESTS and divide the
//! difference of the totals by the difference of the counts, so that the
//! start-up and the 2,000 first visits cancel out: `--tool=callgrind` for
//! instructions per request, `--tool=dhat` for allocations per request
//! (benches/README.md, "Per request"; `benches/per-request.sh` does it).
//! `signed` is `sessions` with `sign_ids` (one key), `sealed` with
//! `seal_records`: what each costs per request.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use server_sessions::store::MemoryStore;
use server_sessions::{SessionConfig, SessionLayer};
use tower::ServiceExt;

const VISITORS: usize = 2_000;

async fn count(session: server_sessions::Session) -> Result<String, server_sessions::Error> {
    let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
    session.insert("counter", n).await?;
    Ok(n.to_string())
}

fn router(system: &str) -> anyhow::Result<Router> {
    Ok(match system {
        "bare" => Router::new().route("/", get(|| async { "1" })),
        "sessions" | "signed" | "sealed" => {
            let mut config = SessionConfig::default();
            config.timeout = Duration::from_secs(600);
            if system == "signed" {
                config.keys = Some(server_sessions::Keys::new(&[[7; 32]])?);
                config.sign_ids = true;
            }
            config.seal_records = system == "sealed";
            Router::new()
                .route("/", get(count))
                .layer(SessionLayer::new(MemoryStore::new()).with_config(config))
        }
        other => anyhow::bail!("unknown system {other:?} (bare, sessions, signed or sealed)"),
    })
}

/// One request with `cookie`; the `Set-Cookie` it got, if any.
async fn send(router: &Router, cookie: Option<&str>) -> anyhow::Result<Option<String>> {
    let mut req = Request::get("/");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let response = router.clone().oneshot(req.body(Body::empty())?).await?;
    let set = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    response.into_body().collect().await?;
    Ok(set)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let system = args.next().unwrap_or_else(|| "sessions".into());
    let requests: usize = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let router = router(&system)?;
        let mut cookies = Vec::with_capacity(VISITORS);
        for _ in 0..VISITORS {
            cookies.push(send(&router, None).await?);
        }
        for i in 0..requests {
            send(&router, cookies[i % VISITORS].as_deref()).await?;
        }
        anyhow::Ok(())
    })
}
