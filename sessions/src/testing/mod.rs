//! Helpers for testing code that uses sessions.
//!
//! - [`session`] and [`session_with`]: a [`Session`] for a unit test, with
//!   no server and no store to set up (a private RAM store behind it).
//! - [`TestClient`] (feature `axum`): drives a router or any tower service
//!   in-process, carrying cookies from one request to the next as a
//!   browser does.
//!
//! ```
//! use axum::{routing::get, Router};
//! use server_sessions::{store::MemoryStore, testing::TestClient, Session, SessionLayer};
//!
//! async fn count(session: Session) -> Result<String, server_sessions::Error> {
//!     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
//!     session.insert("n", n).await?;
//!     Ok(n.to_string())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let app = Router::new()
//!     .route("/", get(count))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! let mut client = TestClient::new(app);
//! assert_eq!(client.get("/").await.text(), "1");
//! assert_eq!(client.get("/").await.text(), "2"); // the cookie came back
//! # }
//! ```

use std::sync::Arc;

use crate::config::SessionConfig;
use crate::events::Events;
use crate::request::{ClientId, RequestSession};
use crate::session::Session;
use crate::store::MemoryStore;

/// A new, empty session with the default settings, as a handler would get
/// it for a first visit: every method works, nothing is saved anywhere
/// that outlives it. For handler logic that takes a [`Session`].
pub fn session() -> Session {
    session_with(SessionConfig::default())
}

/// Like [`session`], with settings of your own.
pub fn session_with(config: SessionConfig) -> Session {
    let store = Arc::new(MemoryStore::new());
    let state = RequestSession::new(
        store,
        Arc::new(config),
        Events::default(),
        ClientId::NotSent,
    );
    Session::new(state, None)
}

#[cfg(feature = "axum")]
mod client;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use client::{TestClient, TestResponse};
