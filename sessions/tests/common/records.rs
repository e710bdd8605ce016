//! The ids and records the store tests save.

use sessions::{now_millis, Record, SessionId};

/// A fresh session id.
pub fn id() -> SessionId {
    SessionId::generate().unwrap()
}

/// A record of `data`, created now, that expires in `ttl_ms` (in the past
/// if negative).
pub fn record(data: &str, ttl_ms: i64) -> Record {
    let now = now_millis();
    Record {
        data: data.as_bytes().to_vec(),
        created: now,
        expires: now.saturating_add_signed(ttl_ms),
    }
}
