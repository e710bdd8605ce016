//! Server-side HTTP sessions for tower and axum.
//!
//! (guide written with the middleware)

mod id;
mod record;
pub mod store;

pub use id::{HexId, InvalidId, RandomError, SessionId, ShortId};
pub use record::{now_millis, DecodeError, Millis, Record};
