//! The store keys and records the store tests save.

use server_sessions::{
    store::{now_millis, Record, StoreKey},
    SessionId,
};

/// The store key of a fresh session id.
pub fn key() -> StoreKey {
    SessionId::generate().unwrap().store_key()
}

/// The store key of the session whose id (a cookie's value) is `id`.
pub fn key_of(id: &str) -> StoreKey {
    id.parse::<SessionId>().unwrap().store_key()
}

/// A record of `data`, created now, that expires in `ttl_ms` (in the past
/// if negative).
pub fn record(data: &str, ttl_ms: i64) -> Record {
    let now = now_millis();
    Record {
        data: data.as_bytes().to_vec(),
        created: now,
        expires: now.saturating_add_signed(ttl_ms),
        timeout: None,
        user: None,
    }
}
