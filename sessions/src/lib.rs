//! Server-side HTTP sessions for tower and axum, locked across requests.
//!
//! A visitor's session is a key/value map kept on the server — in RAM, in
//! files, in Redis, PostgreSQL, SQLite or memcached — found again through a cookie
//! that carries only a random id. It follows CherryPy's session tool:
//!
//! - **Locked.** Concurrent requests of one visitor take turns on the
//!   session (`locking = implicit`, `early` or `explicit`), across processes
//!   for the shared stores, so no update is lost. A lock wait is bounded by
//!   `lock_timeout` and answered 503 with `Retry-After`.
//! - **Lazy.** The store is touched only when a handler first uses the
//!   session; a request that never does stores nothing and sets no cookie.
//! - **Expiring.** An idle `timeout` that every save slides, an optional
//!   `absolute_timeout`, and background clean-up every `clean_freq`.
//! - **Safe by default.** Ids are 160 random bits, strictly parsed; an
//!   unknown id is replaced (no session fixation); cookies are `HttpOnly`
//!   and `SameSite=Lax`; a save never brings back a session that was
//!   deleted meanwhile.
//! - **Configured like CherryPy.** [`Config`] reads CherryPy's INI files as
//!   they are, or TOML, with per-path sections (feature `config-file`).
//!
//! # Quick start
//!
//! ```
//! use axum::{routing::get, Router};
//! use server_sessions::{store::MemoryStore, Session, SessionLayer};
//!
//! async fn counter(session: Session) -> Result<String, server_sessions::Error> {
//!     let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
//!     session.insert("counter", n).await?;
//!     Ok(n.to_string())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let app: Router = Router::new()
//!     .route("/", get(counter))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! # let _ = app;
//! # }
//! ```
//!
//! # On top of sessions
//!
//! [`auth`] (log-in, routes that need a user, CherryPy's `session_auth`),
//! [`flash`] (messages for the next page), [`csrf`] (tokens and the layer
//! that checks them) and [`testing`] (a session for unit tests, a client
//! that drives a router with its cookies).
//!
//! Settings come from [`SessionConfig`] (one for every path) or a
//! [`Config`] file (per path, feature `config-file`), given to the layer
//! with [`SessionLayer::with_config`] or [`SessionLayer::with_file_config`].
//!
//! # Features
//!
//! The defaults are what most apps need: the RAM store (always built) and
//! `axum`. Each other store is opt-in, so that an app compiles only the
//! backend it uses (`cargo add sessions --features redis`), and so are the
//! config-file parsers, which an app that builds its [`SessionConfig`] in
//! code does not need:
//!
//! | feature | what it adds |
//! |---|---|
//! | `axum` (default) | the [`Session`] extractor for axum handlers |
//! | `config-file` | `Config::load`, `Config::from_ini_str` and `Config::from_toml_str`: CherryPy's INI files and TOML (the `sessions` binary has it) |
//! | `file` | `store::FileStore`, files with `flock` (Unix) |
//! | `redis` | `store::RedisStore` |
//! | `postgres` | `store::PostgresStore` |
//! | `sqlite` | `store::SqliteStore`, with a bundled SQLite |
//! | `memcached` | `store::MemcachedStore` (one server or several) |
//! | `htpasswd` | `auth::Htpasswd` and `SessionAuthLayer::htpasswd`: users from an Apache htpasswd file of bcrypt entries |
//! | `metrics` | store latency, lock waits and timeouts, errors, sessions created and expired, through the `metrics` facade |
//! | `test-suite` | the store conformance suite, for a store of your own |
//!
//! A config file naming a store that is not built fails to open with
//! [`store::OpenError::NotBuilt`], which names the feature.

// docs.rs builds with `--cfg docsrs` and every feature, and marks each
// feature-gated item with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapter;
pub mod auth;
pub mod config;
mod cookie;
pub mod csrf;
mod error;
mod events;
#[cfg(feature = "axum")]
mod extract;
pub mod flash;
mod header;
mod id;
pub mod keys;
mod measure;
pub mod middleware;
mod record;
mod redact;
mod request;
pub mod seal;
mod session;
pub mod store;
mod task;
pub mod testing;
mod user;

pub use config::{
    Config, Locking, SameSite, SessionAuthConfig, SessionConfig, StorageConfig, StorageType,
    StorageUrl,
};
pub use error::Error;
pub use events::{FoundBy, SessionEvent};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::NoSession;
pub use id::{HexId, InvalidId, RandomError, SessionId, ShortId};
pub use keys::{Keys, KeysError};
pub use middleware::SessionLayer;
pub use session::{Session, SessionData};
pub use store::users::UserSession;
pub use user::{InvalidUser, UserId};

/// The README's example compiles (it is run as a doctest, `no_run`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod send_sync {
    //! Compile-time checks: the handle, the layer and its service and
    //! future can cross threads, as axum and hyper need.
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<crate::Session>();
        send_sync::<crate::SessionData<'static>>();
        send_sync::<crate::SessionLayer>();
        send_sync::<crate::store::MemoryStore>();
        send_sync::<crate::middleware::SessionService<axum::routing::Router>>();
        send::<
            crate::middleware::ResponseFuture<
                axum::routing::future::RouteFuture<std::convert::Infallible>,
                axum::body::Body,
                std::convert::Infallible,
            >,
        >();
        send_sync::<crate::Error>();
        send_sync::<crate::store::Error>();
    }
}
