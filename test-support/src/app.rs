//! The app every end-to-end test of the middleware serves: one route per
//! thing a handler can do with its session, and the helpers to talk to it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use server_sessions::store::{SessionAdmin, SessionStore};
use server_sessions::{Locking, Session, SessionConfig, SessionLayer};

use super::client::{serve, Client};

#[derive(serde::Deserialize, Default)]
pub struct Params {
    key: Option<String>,
    len: Option<usize>,
    ms: Option<u64>,
    then: Option<String>,
}

type Answer = Result<String, server_sessions::Error>;

/// The counter: reads `n`, stores `n + 1`, answers it. It pauses between
/// the read and the write, so that two requests let in together would both
/// read the same `n` and an update would be lost. With explicit locking it
/// takes the lock around the update, and after releasing it reads once
/// more: whatever a request does after the release must not overwrite what
/// others write meanwhile (CherryPy issue 1027).
pub async fn counter(session: Session) -> Answer {
    let explicit = session.config().locking == Locking::Explicit;
    if explicit {
        session.acquire_lock().await?;
    }
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    tokio::time::sleep(Duration::from_millis(2)).await;
    session.insert("n", n).await?;
    if explicit {
        session.release_lock().await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let _ = session.get::<u64>("n").await?;
    }
    Ok(n.to_string())
}

/// `missing n`: the counter after this request, and whether the session
/// was new because the client's id was not (or no longer) one.
async fn count(s: Session, Query(p): Query<Params>) -> Answer {
    let missing = s.missing().await?;
    let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
    if let Some(ms) = p.ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    s.insert("n", n).await?;
    Ok(format!("{missing} {n}"))
}

/// Changes the counter, then panics while holding the session's lock.
async fn boom(session: Session) -> String {
    session.insert("n", 1000).await.unwrap();
    panic!("handler panics while holding the session lock");
}

/// The routes, without the session layer (for tests that build their own).
pub fn routes() -> Router {
    Router::new()
        .route("/", get(counter))
        .route("/count", get(count))
        .route("/plain", get(|| async { "no session here" }))
        .route(
            "/missing",
            get(|s: Session| async move {
                Ok::<_, server_sessions::Error>(format!(
                    "{} {}",
                    s.missing().await?,
                    s.original_id().is_some()
                ))
            }),
        )
        .route(
            "/data",
            get(|s: Session| async move {
                Ok::<_, server_sessions::Error>(s.to_json().await?.to_string())
            }),
        )
        .route(
            "/put",
            get(|s: Session, Query(p): Query<Params>| async move {
                let key = p.key.unwrap_or_default();
                s.insert(&key, "x".repeat(p.len.unwrap_or(1))).await?;
                Ok::<_, server_sessions::Error>("stored")
            }),
        )
        .route(
            "/slow-put",
            get(|s: Session, Query(p): Query<Params>| async move {
                s.load().await?;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                s.insert(&p.key.unwrap_or_default(), true).await?;
                Ok::<_, server_sessions::Error>("written")
            }),
        )
        .route(
            // Writes first, then takes its time: the end-of-request save
            // comes long after the change.
            "/slow-write",
            get(|s: Session, Query(p): Query<Params>| async move {
                s.insert("k", "v").await?;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                Ok::<_, server_sessions::Error>("written")
            }),
        )
        .route(
            // Loads, then holds the session (and its lock) for 1.5 s.
            "/hold",
            get(|s: Session| async move {
                s.load().await?;
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                Ok::<_, server_sessions::Error>("held")
            }),
        )
        .route("/boom", get(boom))
        .route(
            // A handler that ignores a failed write and answers as if fine.
            "/swallow",
            get(|s: Session| async move {
                let _ = s.insert("k", 1).await;
                "looks fine"
            }),
        )
        .route(
            "/regen",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, server_sessions::Error>("logged in")
            }),
        )
        .route(
            // Logs in slowly: regenerates, then takes its time before the
            // new id is saved.
            "/slow-regen",
            get(|s: Session, Query(p): Query<Params>| async move {
                s.regenerate().await?;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                Ok::<_, server_sessions::Error>("logged in")
            }),
        )
        .route(
            // Regenerates before anything loaded the session, then answers
            // the counter as it is.
            "/regen-first",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, server_sessions::Error>(s.get::<u64>("n").await?.unwrap_or(0).to_string())
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.logout().await?;
                Ok::<_, server_sessions::Error>("done")
            }),
        )
        .route(
            // Log in, then let other requests of the visitor through while
            // this one carries on.
            "/regen-release",
            get(|s: Session, Query(p): Query<Params>| async move {
                s.regenerate().await?;
                s.release_lock().await?;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                Ok::<_, server_sessions::Error>(format!(
                    "{}",
                    s.get::<u64>("n").await?.unwrap_or(0)
                ))
            }),
        )
        .route(
            // Explicit locking, CherryPy issue 1027's pattern: change under
            // the lock, release it, then keep working on the session.
            "/explicit",
            get(|s: Session, Query(p): Query<Params>| async move {
                let key = p.key.unwrap_or_default();
                s.acquire_lock().await?;
                s.insert(&key, true).await?;
                s.release_lock().await?;
                tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(0))).await;
                match p.then.as_deref() {
                    Some("read") => {
                        s.get::<bool>(&key).await?;
                    }
                    Some("write") => s.insert(&format!("{key}_after"), true).await?,
                    _ => {}
                }
                Ok::<_, server_sessions::Error>("ok")
            }),
        )
}

/// The routes behind a session layer over `store`.
pub fn app(config: SessionConfig, store: impl SessionAdmin) -> Router {
    routes().layer(SessionLayer::new(store).with_config(config))
}

/// The app on a real socket.
pub async fn serve_app(config: SessionConfig, store: impl SessionAdmin) -> SocketAddr {
    serve(app(config, store)).await
}

/// The default settings, with clean-up off: it runs in the tests that want
/// it, not in the background.
pub fn config() -> SessionConfig {
    let mut c = SessionConfig::default();
    c.storage.clean_freq = Duration::ZERO;
    c
}

/// The `Cookie` header of session `id` under the default name.
pub fn cookie(id: &str) -> String {
    format!("session_id={id}")
}

/// Starts a session with `n` = 1 through `/count` and returns its id.
pub async fn start_session(addr: SocketAddr) -> String {
    let r = Client::new(addr).get_with("/count", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "false 1"), "{r:?}");
    r.cookie_value().unwrap()
}

/// A store whose server cannot be reached answers a load, a lock (even
/// with a long wait) and a save with `Unavailable`, never another error.
pub async fn assert_unavailable(store: &impl SessionStore) {
    use server_sessions::store::{Error, SaveIf};
    let key = super::records::key();
    assert!(matches!(
        store.load(&key).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        store.lock(&key, Duration::from_secs(30)).await,
        Err(Error::Unavailable { .. })
    ));
    let record = super::records::record("{}", 1_000);
    assert!(matches!(
        store.save(&key, &record, SaveIf::Absent).await,
        Err(Error::Unavailable { .. })
    ));
}

/// Checks a `Set-Cookie` against the config (see
/// [`check_set_cookie`](super::checks::check_set_cookie)) and returns the id.
pub fn checked_cookie(set_cookie: &str, config: &SessionConfig) -> String {
    super::checks::check_set_cookie(set_cookie.as_bytes(), config).to_string()
}
/// A store outage under traffic, against an app serving [`counter`] at `/`:
/// `clients` sessions are saved, `down` takes the store away, every request
/// (with and without a cookie) then answers 503 without a cookie within a
/// bounded time, `up` brings the store back, and every session goes on
/// from where it was, by itself, within `recovery`.
pub async fn outage_under_traffic(
    addr: SocketAddr,
    clients: usize,
    down: impl FnOnce(),
    up: impl FnOnce(),
    recovery: Duration,
) {
    let mut saved = Vec::new();
    for _ in 0..clients {
        let mut c = Client::new(addr);
        c.get("/").await;
        assert_eq!(c.get("/").await.body, "2");
        saved.push(c);
    }

    down();
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for c in &saved {
        let r = c.get_with("/", c.cookie.as_deref()).await;
        assert_eq!(r.set_cookie, None, "a cookie while the store is down");
        statuses.push(r.status);
    }
    statuses.push(Client::new(addr).get_with("/", None).await.status);
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    // Each request gave up within the store's bounded timeouts.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    up();
    // The store reconnects on its own; allow it a moment.
    let deadline = std::time::Instant::now() + recovery;
    loop {
        let r = saved[0].get_with("/", saved[0].cookie.as_deref()).await;
        if r.status == 200 {
            assert_eq!(r.body, "3", "a session saved before the outage was lost");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in &mut saved[1..] {
        assert_eq!(
            c.get("/").await.body,
            "3",
            "a session saved before the outage was lost"
        );
    }
    assert_eq!(Client::new(addr).get_with("/", None).await.status, 200);
}
