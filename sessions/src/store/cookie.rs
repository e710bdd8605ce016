//! The sealed cookie store (`storage_type = "cookie"`): the whole session
//! — id, times, timeout, user and data — in one cookie, sealed with
//! XChaCha20-Poly1305 under the first key's sealing key (every listed key
//! opens, so keys rotate as for signed ids). The expiry is inside the seal:
//! a cookie kept or replayed past it opens no session, whatever the
//! browser does with `Max-Age`.
//!
//! What it cannot do, because the server keeps nothing: lock a session
//! across requests (two requests of one visitor each start from the
//! cookie they sent, and the last answer's cookie wins); list, count or
//! clean sessions; end one from the server (`sessions delete`), or log a
//! user out everywhere (`logout_everywhere`, `sessions logout --user`): a
//! copy of a cookie opens its session until the cookie's expiry. A
//! session whose cookie would pass 4096 bytes is refused (500, logged),
//! and the visitor keeps the cookie they had.
//!
//! How it fits the request core without changing it: each request gets
//! its own one-session store ([`InCookie`]) filled from the cookie it
//! sent; the core loads, saves, regenerates and deletes there as on any
//! store, and the middleware writes what was saved back as the cookie.
//! [`CookieStore`] is what [`store::open`](crate::store::open) gives for
//! this kind: nothing on the server, and every admin call says so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures_util::stream::BoxStream;

use super::{Error, LockGuard, OnExpired, SaveIf, SessionAdmin, SessionLock, SessionStore};
use crate::config::SessionConfig;
use crate::id::{fill_random, SessionId, StoreKey};
use crate::keys::Keys;
use crate::record::{now_millis, Millis, Record};
use crate::request::ClientId;

/// The most a browser keeps of one cookie's name and value (RFC 6265
/// §6.1 asks for at least this much; browsers keep no more).
pub const MAX_COOKIE: usize = 4096;

/// Why every admin call fails.
const NOTHING: &str = "do this: the cookie store keeps each session in its visitor's cookie, \
     nothing on the server to list, count, clean, delete or log out";

const VERSION: u8 = 1;
const NONCE: usize = 24;
const ID: usize = 20;

/// What [`store::open`](crate::store::open) gives for `storage_type =
/// "cookie"`: a store with nothing in it, whose every call answers
/// [`Error::Unsupported`] saying why (the admin commands print it). The
/// layer never calls it: each request's session lives in its cookie.
#[derive(Debug, Clone, Copy, Default)]
pub struct CookieStore;

#[async_trait]
impl SessionStore for CookieStore {
    async fn load(&self, _: &StoreKey) -> Result<Option<Record>, Error> {
        Err(Error::Unsupported(NOTHING))
    }
    async fn save(&self, _: &StoreKey, _: &Record, _: SaveIf) -> Result<bool, Error> {
        Err(Error::Unsupported(NOTHING))
    }
    async fn touch(&self, _: &StoreKey, _: Millis) -> Result<bool, Error> {
        Err(Error::Unsupported(NOTHING))
    }
    async fn delete(&self, _: &StoreKey) -> Result<(), Error> {
        Err(Error::Unsupported(NOTHING))
    }
    async fn acquire(
        &self,
        _: &StoreKey,
        _: Duration,
        _: bool,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        Err(Error::Unsupported(NOTHING))
    }
    async fn sessions_of(&self, _: &crate::UserId) -> Result<Vec<(StoreKey, Record)>, Error> {
        Err(Error::Unsupported(NOTHING))
    }
    /// No clean-up task: there is nothing to clean.
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        None
    }
}

#[async_trait]
impl SessionAdmin for CookieStore {
    async fn count(&self) -> Result<u64, Error> {
        Err(Error::Unsupported(NOTHING))
    }
    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        Box::pin(futures_util::stream::once(async {
            Err(Error::Unsupported(NOTHING))
        }))
    }
    async fn clean_up_and_report(&self, _: OnExpired<'_>) -> Result<u64, Error> {
        Err(Error::Unsupported(NOTHING))
    }
}

/// The one session a request's cookie holds, as a store: what the request
/// core works on for `storage_type = "cookie"`. Its lock locks nothing
/// (nothing is shared between requests).
#[derive(Debug, Clone, Default)]
pub(crate) struct InCookie {
    slot: Arc<Mutex<Option<(StoreKey, Record)>>>,
}

impl InCookie {
    /// The store of this request, and the id its cookie carried, from the
    /// values of the cookies of the session's name (the middleware reads
    /// them): one that does not open with any key, or that expired, is no id.
    pub(crate) fn for_request<'a>(
        values: impl Iterator<Item = &'a [u8]>,
        config: &SessionConfig,
    ) -> (InCookie, ClientId) {
        let store = InCookie::default();
        let Some(keys) = &config.keys else {
            return (store, ClientId::NotSent);
        };
        let mut client = ClientId::NotSent;
        for value in values {
            match open(keys, &config.name, value, config.max_size) {
                Some((id, record)) if !record.is_expired(now_millis()) => {
                    *lock(&store.slot) = Some((id.store_key(), record));
                    return (store, ClientId::Valid(id));
                }
                _ => client = ClientId::Malformed,
            }
        }
        (store, client)
    }

    /// The cookie value carrying what was saved under `id`, sealed; `Err`
    /// with its size when it would pass [`MAX_COOKIE`].
    pub(crate) fn sealed(
        &self,
        id: &SessionId,
        config: &SessionConfig,
    ) -> Option<Result<String, usize>> {
        let keys = config.keys.as_ref()?;
        let slot = lock(&self.slot);
        let (key, record) = slot.as_ref()?;
        if *key != id.store_key() {
            return None;
        }
        let value = seal(keys, &config.name, id, record)?;
        match config.name.len() + 1 + value.len() {
            n if n > MAX_COOKIE => Some(Err(n)),
            _ => Some(Ok(value)),
        }
    }

    fn live(&self, key: &StoreKey) -> Option<Record> {
        let slot = lock(&self.slot);
        match slot.as_ref() {
            Some((k, r)) if k == key && !r.is_expired(now_millis()) => Some(r.clone()),
            _ => None,
        }
    }

    fn write(&self, key: &StoreKey, record: &Record, write: SaveIf) -> bool {
        let mut slot = lock(&self.slot);
        let live = matches!(slot.as_ref(), Some((k, r)) if k == key && !r.is_expired(now_millis()));
        let ok = match write {
            SaveIf::Absent => !live,
            SaveIf::Live => live,
        };
        if ok {
            *slot = Some((*key, record.clone()));
        }
        ok
    }
}

/// A poisoned slot is still a slot: one request's panic must not turn into
/// another's.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct NoLock(InCookie, StoreKey);

#[async_trait]
impl SessionLock for NoLock {
    async fn save_and_release(
        self: Box<Self>,
        record: &Record,
        write: SaveIf,
    ) -> Result<bool, Error> {
        Ok(self.0.write(&self.1, record, write))
    }
}

#[async_trait]
impl SessionStore for InCookie {
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        Ok(self.live(key))
    }
    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        Ok(self.write(key, record, write))
    }
    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        let mut slot = lock(&self.slot);
        match slot.as_mut() {
            Some((k, r)) if k == key && !r.is_expired(now_millis()) => {
                r.expires = expires;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        let mut slot = lock(&self.slot);
        if slot.as_ref().is_some_and(|(k, _)| k == key) {
            *slot = None;
        }
        Ok(())
    }
    async fn acquire(
        &self,
        key: &StoreKey,
        _: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        let record = if load { self.live(key) } else { None };
        Ok((LockGuard::new(NoLock(self.clone(), *key)), record))
    }
}

/// The sealing cipher of a key.
fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

/// The cookie's name is bound into the seal, so that a value cannot be
/// moved to another cookie of the site.
fn aad(name: &str) -> Vec<u8> {
    let mut aad = b"server-sessions cookie v1\0".to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// `id` and `record` sealed by the first key: URL-safe base64 of the
/// version, the nonce and the sealed id and framed record.
fn seal(keys: &Keys, name: &str, id: &SessionId, record: &Record) -> Option<String> {
    let key = keys.seal_keys().next()?;
    let mut nonce = [0u8; NONCE];
    fill_random(&mut nonce).ok()?;
    let mut plain = id.as_bytes().to_vec();
    plain.extend_from_slice(&record.encode());
    let aad = aad(name);
    let sealed = cipher(key)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .ok()?;
    let mut out = Vec::with_capacity(1 + NONCE + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
}

/// The id and record a cookie value seals, if one of the keys opens it and
/// the record inside is sound (at most `max` bytes of data).
pub(crate) fn open(
    keys: &Keys,
    name: &str,
    value: &[u8],
    max: usize,
) -> Option<(SessionId, Record)> {
    if value.len() > MAX_COOKIE {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()?;
    let rest = bytes.strip_prefix(&[VERSION])?;
    if rest.len() < NONCE {
        return None;
    }
    let (nonce, sealed) = rest.split_at(NONCE);
    let aad = aad(name);
    let plain = keys.seal_keys().find_map(|key| {
        cipher(key)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()
    })?;
    let raw: [u8; ID] = plain.get(..ID)?.try_into().ok()?;
    let record = Record::decode(&plain[ID..], max).ok()?;
    Some((SessionId::from_raw(raw), record))
}

/// The sealed value of `id` and `record` (for the property tests and the
/// fuzz targets, through [`open_cookie`]).
#[doc(hidden)]
pub fn seal_cookie(keys: &Keys, name: &str, id: &SessionId, record: &Record) -> Option<String> {
    seal(keys, name, id, record)
}

/// What a sealed cookie value holds, if one of `keys` opens it (for the
/// property tests and the fuzz targets).
#[doc(hidden)]
pub fn open_cookie(
    keys: &Keys,
    name: &str,
    value: &[u8],
    max: usize,
) -> Option<(SessionId, Record)> {
    open(keys, name, value, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            data: br#"{"cart":[1,2]}"#.to_vec(),
            created: now_millis(),
            expires: now_millis() + 60_000,
            timeout: None,
            user: None,
        }
    }

    #[test]
    fn seals_opens_and_rotates() {
        let old = Keys::new(&[[1; 32]]).unwrap();
        let both = Keys::new(&[[2; 32], [1; 32]]).unwrap();
        let new = Keys::new(&[[2; 32]]).unwrap();
        let id = SessionId::generate().unwrap();
        let value = seal(&old, "s", &id, &record()).unwrap();
        assert!(!value.contains("cart"));
        let (opened, r) = open(&old, "s", value.as_bytes(), 1024).unwrap();
        assert_eq!((opened, r.data), (id, record().data));
        assert!(open(&both, "s", value.as_bytes(), 1024).is_some());
        assert!(open(&new, "s", value.as_bytes(), 1024).is_none());
        // Another cookie's name, a cut or changed value: nothing.
        assert!(open(&old, "t", value.as_bytes(), 1024).is_none());
        assert!(open(&old, "s", &value.as_bytes()[..value.len() - 1], 1024).is_none());
        let mut b = value.clone().into_bytes();
        b[10] = if b[10] == b'A' { b'B' } else { b'A' };
        assert!(open(&old, "s", &b, 1024).is_none());
    }
}
