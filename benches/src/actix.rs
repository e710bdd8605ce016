//! The actix-web systems: ours through `server-sessions-actix`, and
//! actix-session with its Redis store or its cookie store. The routes are
//! the axum apps' (systems.rs): `/` counts, `/slow` counts with a pause
//! between the read and the write, `/read` answers the counter.

use std::sync::Arc;

use actix_session::storage::{CookieSessionStore, RedisSessionStore};
use actix_web::cookie::Key;
use actix_web::web;
use anyhow::Context as _;
use server_sessions::SessionLayer;

use crate::systems::{App, Cleanup, Env, Server, Store, SESSION_TIMEOUT, SLOW_HANDLER};

/// An actix-web app's routes with their middleware, built by each worker.
pub(crate) type Routes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// Serves `routes` on `listener` with `threads` actix-web workers.
pub(crate) async fn serve(routes: Routes, listener: tokio::net::TcpListener, threads: usize) {
    let server = match start(routes, listener, threads) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("actix-web could not listen: {e}");
            return;
        }
    };
    // Dropping this future (the benchmark aborting its task) stops the
    // workers as well.
    let _stop = StopOnDrop(server.handle());
    let _ = server.await;
}

fn start(
    routes: Routes,
    listener: tokio::net::TcpListener,
    threads: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let listener = listener.into_std()?;
    Ok(actix_web::HttpServer::new(move || {
        let routes = Arc::clone(&routes);
        actix_web::App::new().configure(move |cfg| routes(cfg))
    })
    .workers(threads)
    .disable_signals()
    .listen(listener)?
    .run())
}

struct StopOnDrop(actix_web::dev::ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // Not graceful: connections still open must not hold the run.
        drop(self.0.stop(false));
    }
}

// --- ours ---------------------------------------------------------------------

/// Ours: the same layer the axum app has, as actix-web middleware.
pub(crate) fn ours(layer: SessionLayer) -> Routes {
    use server_sessions_actix::{Error, Session, SessionMiddleware};

    async fn count(session: Session) -> Result<String, Error> {
        let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
        session.insert("counter", n).await?;
        Ok(n.to_string())
    }
    async fn slow(session: Session) -> Result<String, Error> {
        let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
        tokio::time::sleep(SLOW_HANDLER).await;
        session.insert("counter", n).await?;
        Ok(n.to_string())
    }
    async fn read(session: Session) -> Result<String, Error> {
        let n: u64 = session.get("counter").await?.unwrap_or(0);
        Ok(n.to_string())
    }

    let sessions = SessionMiddleware::new(layer);
    Arc::new(move |cfg| {
        cfg.service(
            web::scope("")
                .wrap(sessions.clone())
                .route("/", web::get().to(count))
                .route("/slow", web::get().to(slow))
                .route("/read", web::get().to(read)),
        );
    })
}

// --- actix-session ----------------------------------------------------------

/// Read `counter`, add one, write it back: actix-session loads the state
/// before the handler and saves it after, with no lock.
async fn peer_count(session: actix_session::Session) -> actix_web::Result<String> {
    let n: u64 = session.get("counter")?.unwrap_or(0) + 1;
    session.insert("counter", n)?;
    Ok(n.to_string())
}

async fn peer_slow(session: actix_session::Session) -> actix_web::Result<String> {
    let n: u64 = session.get("counter")?.unwrap_or(0) + 1;
    tokio::time::sleep(SLOW_HANDLER).await;
    session.insert("counter", n)?;
    Ok(n.to_string())
}

async fn peer_read(session: actix_session::Session) -> actix_web::Result<String> {
    let n: u64 = session.get("counter")?.unwrap_or(0);
    Ok(n.to_string())
}

/// actix-session's middleware over `store`, with a plain-HTTP cookie (the
/// benchmark has no TLS) and sessions that idle out as ours do.
fn peer_routes<S>(store: impl Fn() -> S + Send + Sync + 'static) -> Routes
where
    S: actix_session::storage::SessionStore + 'static,
{
    use actix_session::config::PersistentSession;
    use actix_session::SessionMiddleware;

    // A fixed key: the benchmark's cookies need no secrecy, and every
    // worker (and every server process) must read the others' cookies.
    let key = Key::from(&[7u8; 64]);
    let ttl = actix_web::cookie::time::Duration::seconds(SESSION_TIMEOUT.as_secs() as i64);
    Arc::new(move |cfg| {
        let middleware = SessionMiddleware::builder(store(), key.clone())
            .cookie_secure(false)
            .session_lifecycle(PersistentSession::default().session_ttl(ttl))
            .build();
        cfg.service(
            web::scope("")
                .wrap(middleware)
                .route("/", web::get().to(peer_count))
                .route("/slow", web::get().to(peer_slow))
                .route("/read", web::get().to(peer_read)),
        );
    })
}

/// actix-session on `store`: its Redis store on Redis, its cookie store
/// on the `ram` row.
pub(crate) async fn actix_session(store: Store, env: &Env) -> anyhow::Result<App> {
    let routes = match store {
        Store::Ram => peer_routes(CookieSessionStore::default),
        Store::Redis => {
            let prefix = env.redis_prefix();
            let redis = RedisSessionStore::builder(env.redis_url_of(store))
                .cache_keygen(move |key| format!("{prefix}actix:{key}"))
                .build()
                .await
                .context("opening actix-session's Redis store")?;
            // Its keys are this run's prefix and a random key that the
            // encrypted cookie hides; they expire after SESSION_TIMEOUT.
            peer_routes(move || redis.clone())
        }
        other => anyhow::bail!("actix-session has no store for {}", other.name()),
    };
    Ok(App {
        server: Server::Actix(routes),
        cleanup: Cleanup::Nothing,
    })
}
