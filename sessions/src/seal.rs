//! Sealed records (`seal_records`): a record's data encrypted under a key
//! derived from the session's id, which no store holds (stores are given
//! the id's SHA-256, [`StoreKey`](crate::store::StoreKey)). A dump, a backup or a
//! replica of any store shows neither ids nor data, and there is no server
//! key that could leak with it: only a visitor's own cookie opens their
//! record.
//!
//! What stays readable, because stores act on it without the id: the
//! record's times (created, expires, its own timeout), the user it belongs
//! to (the user index), and the data's length give or take the seal's
//! fixed [`OVERHEAD`].
//!
//! Sealing happens in the request core, the one place that holds both the
//! id and the data, when it saves; opening when it loads. A record is
//! opened whether or not sealing is on, so switching it on or off loses no
//! session: an older, unsealed record loads as it is, and is sealed at its
//! next full save.
//!
//! The seal: a marker, a random 24-byte nonce, then XChaCha20-Poly1305 of
//! the data (16 bytes of tag) under HMAC-SHA256(id, label). The random
//! nonce is safe for any number of saves of one session (192 bits).

use std::borrow::Cow;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::id::{fill_random, RandomError, SessionId};
use crate::record::Record;

/// What marks sealed data: `0xff` starts no JSON text (and no UTF-8), so
/// an unsealed record is never taken for a sealed one.
const MARK: &[u8; 4] = b"\xffSR1";
const NONCE: usize = 24;
const TAG: usize = 16;

/// The bytes sealing adds to a record's data.
pub const OVERHEAD: usize = MARK.len() + NONCE + TAG;

/// What the record key is derived under.
const LABEL: &[u8] = b"server-sessions record seal v1";

/// Sealed data that does not open with the id given: another session's,
/// altered, or cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sealed session data does not open with this id")]
#[non_exhaustive]
pub struct SealError;

/// The cipher of `id`'s record.
fn cipher(id: &SessionId) -> XChaCha20Poly1305 {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(id.as_bytes()).expect("HMAC takes any key length");
    m.update(LABEL);
    let key: [u8; 32] = m.finalize().into_bytes().into();
    XChaCha20Poly1305::new(&key.into())
}

/// `plain` sealed for `id`'s record.
pub(crate) fn seal(id: &SessionId, plain: &[u8]) -> Result<Vec<u8>, RandomError> {
    let mut nonce = [0u8; NONCE];
    fill_random(&mut nonce)?;
    let sealed = cipher(id)
        .encrypt(XNonce::from_slice(&nonce), plain)
        .expect("XChaCha20-Poly1305 seals any length a record can have");
    let mut out = Vec::with_capacity(OVERHEAD + plain.len());
    out.extend_from_slice(MARK);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// `data` as the handler wrote it: opened with `id` if it is sealed, as it
/// is otherwise (a record written before sealing was on).
pub(crate) fn open<'a>(id: &SessionId, data: &'a [u8]) -> Result<Cow<'a, [u8]>, SealError> {
    let Some(rest) = data.strip_prefix(MARK) else {
        return Ok(Cow::Borrowed(data));
    };
    if rest.len() < NONCE + TAG {
        return Err(SealError);
    }
    let (nonce, sealed) = rest.split_at(NONCE);
    cipher(id)
        .decrypt(XNonce::from_slice(nonce), sealed)
        .map(Cow::Owned)
        .map_err(|_| SealError)
}

impl Record {
    /// Whether the data is sealed (`seal_records`): only the session's id
    /// opens it ([`open_data`](Self::open_data)).
    pub fn is_sealed(&self) -> bool {
        self.data.starts_with(MARK)
    }

    /// The data as the session wrote it (a JSON object): opened with the
    /// session's `id` if it is sealed, as it is if not. A store key cannot
    /// open it; that is the point.
    pub fn open_data(&self, id: &SessionId) -> Result<Cow<'_, [u8]>, SealError> {
        open(id, &self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let id = SessionId::generate().unwrap();
        let plain = br#"{"cart":[42],"name":"alice"}"#;
        let sealed = seal(&id, plain).unwrap();
        assert_eq!(sealed.len(), plain.len() + OVERHEAD);
        assert!(!sealed.windows(5).any(|w| w == b"alice"));
        assert_eq!(open(&id, &sealed).unwrap(), &plain[..]);
        // Two seals of the same data differ (fresh nonce).
        assert_ne!(seal(&id, plain).unwrap(), sealed);
        // Another id opens nothing; neither does any altered or cut seal.
        let other = SessionId::generate().unwrap();
        assert_eq!(open(&other, &sealed), Err(SealError));
        for i in MARK.len()..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 1;
            assert_eq!(open(&id, &b), Err(SealError), "byte {i}");
        }
        for n in MARK.len()..sealed.len() {
            assert_eq!(open(&id, &sealed[..n]), Err(SealError), "cut at {n}");
        }
    }

    /// Data that is not sealed is read as it is: records written before.
    #[test]
    fn unsealed_data_reads_as_it_is() {
        let id = SessionId::generate().unwrap();
        assert_eq!(open(&id, br#"{"a":1}"#).unwrap(), &br#"{"a":1}"#[..]);
        assert_eq!(open(&id, b"").unwrap(), &b""[..]);
    }
}
