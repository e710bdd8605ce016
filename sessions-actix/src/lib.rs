//! actix-web middleware and extractor for [`server_sessions`]: server-side
//! sessions locked across requests, in RAM, files, Redis, PostgreSQL,
//! SQLite or memcached, configured like CherryPy's session tool.
//!
//! The same sessions as the tower layer: this crate only translates HTTP
//! between actix-web and the session core ([`server_sessions::adapter`]).
//! Config, stores, locking modes (`implicit`, `early`, `explicit`), event
//! hooks, the user index, id headers for API clients and metrics are the
//! core's, and a failure answers the same way: 503 with `Retry-After` for
//! a busy lock or an unavailable store.
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//! use server_sessions::{store::MemoryStore, SessionConfig, SessionLayer};
//! use server_sessions_actix::{Error, Session, SessionMiddleware};
//!
//! async fn counter(session: Session) -> Result<String, Error> {
//!     let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
//!     session.insert("counter", n).await?;
//!     Ok(n.to_string())
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let layer = SessionLayer::new(MemoryStore::new()).with_config(SessionConfig::default());
//!     let sessions = SessionMiddleware::new(layer);
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(sessions.clone())
//!             .route("/", web::get().to(counter))
//!     })
//!     .bind("127.0.0.1:8080")?
//!     .run()
//!     .await
//! }
//! ```
//!
//! A crate of its own rather than a feature of `server-sessions`, so that
//! actix-web's dependency tree never enters a tower app's build (nor a
//! `Cargo.lock` that `cargo` resolves with every feature in view).

mod extract;
mod middleware;
mod translate;

pub use extract::{Error, NoSession, Session};
pub use middleware::{SessionMiddleware, SessionService};
