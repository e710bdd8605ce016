//! The tower middleware: [`SessionLayer`] wraps a service in a
//! [`SessionService`], which gives every request a [`Session`](crate::Session)
//! and carries out what the handler asked of it once the handler returns.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use server_sessions::{store::MemoryStore, Session, SessionLayer};
//!
//! async fn count(session: Session) -> Result<String, server_sessions::Error> {
//!     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
//!     session.insert("n", n).await?;
//!     Ok(n.to_string())
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(count))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::SessionLayer;
pub use service::SessionService;
