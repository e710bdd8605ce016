//! Server keys: where they come from (a file, `keys_file`, or an
//! environment variable, `keys_env` — never the config text itself), the
//! one type that holds them and never prints them, and what they do: sign
//! session ids (`sign_ids`), so that an invented or altered id is refused
//! before any store is asked.
//!
//! A key file has one key a line, 32 bytes written as base64 (standard or
//! URL-safe, padded or not) or as 64 hex digits; blank lines and lines
//! starting with `#` are skipped. The first key signs, every key verifies:
//! to rotate, put a new key first and drop the last one once every cookie
//! signed with it has expired. `sessions keygen` prints a new key.
//!
//! ```
//! use server_sessions::Keys;
//!
//! let keys = Keys::parse(&format!("{}\n", Keys::generate_line().unwrap())).unwrap();
//! assert_eq!(keys.len(), 1);
//! // Nothing of the key is printed.
//! assert_eq!(format!("{keys:?}"), "Keys(1 key)");
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::id::{RandomError, SessionId};

/// The bytes of one key.
pub const KEY_LEN: usize = 32;

/// The bytes of an id's signature (HMAC-SHA256, not cut short).
const MAC_LEN: usize = 32;
/// Its text: URL-safe base64 without padding.
const MAC_TEXT: usize = 43;
/// A signed id's text: 40 hex digits, a dot, the signature.
const SIGNED_LEN: usize = 40 + 1 + MAC_TEXT;

/// What a signature covers besides the id, so that a signature made for
/// another purpose with the same key is never taken for an id's.
const SIGN_CONTEXT: &[u8] = b"server-sessions id signature v1\0";
/// The label a key's sealing key is derived under (the sealed cookie).
const SEAL_LABEL: &[u8] = b"server-sessions cookie seal v1";
/// The label a key's signing key is derived under.
const SIGN_LABEL: &[u8] = b"server-sessions id signing v1";

type HmacSha256 = Hmac<Sha256>;

/// One server key as configured, and the keys derived from it for each use
/// (a key is never used directly, so that no two uses share one).
#[derive(Clone)]
struct Key {
    /// The signing key, already keyed: cloning it skips the key schedule.
    sign: HmacSha256,
    /// The sealing key of the sealed cookie.
    seal: [u8; 32],
    /// The configured key, only for comparing two configs.
    raw: [u8; KEY_LEN],
}

/// The server's keys, in order: the first signs and seals, every one
/// verifies and opens. Cheap to clone.
///
/// Its `Debug` prints how many keys there are and nothing of them; it has no
/// `Display`, and no error of this module prints a key or a line of a key
/// file.
#[derive(Clone)]
pub struct Keys(Arc<[Key]>);

/// Keys could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// The key file could not be read.
    #[error("cannot read the key file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set, or not text.
    #[error("the environment variable {0} holds no keys")]
    Env(String),
    /// A line is not a key. The line itself is never shown: it may be a key
    /// with one character wrong.
    #[error("line {line}: not a key (32 bytes as base64, or 64 hex digits)")]
    Line {
        /// The line number, from 1.
        line: usize,
    },
    /// There was no key at all.
    #[error("no key (one key a line; `sessions keygen` prints one)")]
    Empty,
}

impl Keys {
    /// Keys from raw bytes, the first signing.
    pub fn new(keys: &[[u8; KEY_LEN]]) -> Result<Keys, KeysError> {
        if keys.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(Keys(keys.iter().map(derive).collect()))
    }

    /// Keys from text: one a line (see the [module docs](self)).
    pub fn parse(text: &str) -> Result<Keys, KeysError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(decode_key(line).ok_or(KeysError::Line { line: n + 1 })?);
        }
        Keys::new(&keys)
    }

    /// Keys from a file (`keys_file`).
    pub fn from_file(path: &Path) -> Result<Keys, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::File {
            path: path.to_owned(),
            source,
        })?;
        Keys::parse(&text)
    }

    /// Keys from an environment variable (`keys_env`): one key, or several
    /// separated by newlines, spaces or commas.
    pub fn from_env(var: &str) -> Result<Keys, KeysError> {
        let text = std::env::var(var).map_err(|_| KeysError::Env(var.to_owned()))?;
        let lines = text.replace([',', ' '], "\n");
        match Keys::parse(&lines) {
            Err(KeysError::Empty) => Err(KeysError::Env(var.to_owned())),
            other => other,
        }
    }

    /// A new random key as a line of a key file (URL-safe base64, 43
    /// characters): what `sessions keygen` prints.
    pub fn generate_line() -> Result<String, RandomError> {
        let mut key = [0u8; KEY_LEN];
        crate::id::fill_random(&mut key)?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key))
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: there is at least one key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sealing keys, the first one sealing (the sealed cookie).
    #[allow(dead_code)]
    pub(crate) fn seal_keys(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.0.iter().map(|k| &k.seal)
    }

    /// The signed text of `id`: its 40 hex digits, a dot, and the first
    /// key's HMAC-SHA256 of it in URL-safe base64 (84 characters, all
    /// cookie- and header-safe).
    pub fn sign(&self, id: &SessionId) -> SignedId {
        let hex = id.as_hex();
        let mac = mac(&self.0[0], hex.as_bytes());
        let mut out = [0u8; SIGNED_LEN];
        out[..40].copy_from_slice(hex.as_bytes());
        out[40] = b'.';
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(mac, &mut out[41..])
            .unwrap_or(0);
        debug_assert_eq!(written, MAC_TEXT, "32 bytes are 43 base64 characters");
        SignedId(out)
    }

    /// The id in a signed text, if any key signed it. Everything else — an
    /// unsigned id, a cut signature, one of a key no longer listed — is
    /// `None`, found without touching a store. The signatures are compared
    /// in constant time.
    pub fn verify(&self, text: &[u8]) -> Option<SessionId> {
        if text.len() != SIGNED_LEN || text[40] != b'.' {
            return None;
        }
        let id = SessionId::from_bytes(&text[..40]).ok()?;
        let mut sent = [0u8; MAC_LEN + 2];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(&text[41..], &mut sent)
            .ok()?;
        // The engine refuses non-zero trailing bits, so each signature has
        // one spelling and a cookie cannot be varied without re-signing.
        (n == MAC_LEN && self.signed_by_any(&id, &sent[..MAC_LEN])).then_some(id)
    }

    fn signed_by_any(&self, id: &SessionId, sent: &[u8]) -> bool {
        let hex = id.as_hex();
        self.0.iter().any(|key| {
            let mut m = key.sign.clone();
            m.update(SIGN_CONTEXT);
            m.update(hex.as_bytes());
            m.verify_slice(sent).is_ok()
        })
    }
}

/// The id in a cookie or id header value: signed by one of `signer`'s keys
/// when ids are signed, 40 hex digits when not. The one check both the
/// cookie and the header go through.
pub(crate) fn read_id(value: &[u8], signer: Option<&Keys>) -> Option<SessionId> {
    match signer {
        Some(keys) => keys.verify(value),
        None => SessionId::from_bytes(value).ok(),
    }
}

/// An id as a cookie or id header carries it: signed by the first key when
/// ids are signed, plain otherwise.
pub(crate) enum IdText {
    Plain(crate::id::HexId),
    Signed(SignedId),
}

impl IdText {
    pub(crate) fn of(id: &SessionId, signer: Option<&Keys>) -> IdText {
        match signer {
            Some(keys) => IdText::Signed(keys.sign(id)),
            None => IdText::Plain(id.as_hex()),
        }
    }
}

impl std::ops::Deref for IdText {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            IdText::Plain(hex) => hex,
            IdText::Signed(signed) => signed,
        }
    }
}

/// Two configs are equal when they list the same keys in the same order.
impl PartialEq for Keys {
    fn eq(&self, other: &Keys) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|(a, b)| a.raw == b.raw)
    }
}

/// Written by hand so that no key can ever be printed.
impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            1 => f.write_str("Keys(1 key)"),
            n => write!(f, "Keys({n} keys)"),
        }
    }
}

/// A signed id's text on the stack; derefs to `str`.
#[derive(Clone, Copy)]
pub struct SignedId([u8; SIGNED_LEN]);

impl std::ops::Deref for SignedId {
    type Target = str;
    fn deref(&self) -> &str {
        // Only hex digits, a dot and URL-safe base64 are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Shows the id's short form only, as [`SessionId`]'s `Debug` does.
impl fmt::Debug for SignedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SessionId::from_bytes(&self.0[..40]) {
            Ok(id) => write!(f, "SignedId({})", id.short()),
            Err(_) => f.write_str("SignedId(?)"),
        }
    }
}

fn mac(key: &Key, hex: &[u8]) -> [u8; MAC_LEN] {
    let mut m = key.sign.clone();
    m.update(SIGN_CONTEXT);
    m.update(hex);
    m.finalize().into_bytes().into()
}

fn derive(raw: &[u8; KEY_LEN]) -> Key {
    let sub = |label: &[u8]| -> [u8; 32] {
        let mut m =
            <HmacSha256 as Mac>::new_from_slice(raw).expect("HMAC takes keys of any length");
        m.update(label);
        m.finalize().into_bytes().into()
    };
    let sign = <HmacSha256 as Mac>::new_from_slice(&sub(SIGN_LABEL))
        .expect("HMAC takes keys of any length");
    Key {
        sign,
        seal: sub(SEAL_LABEL),
        raw: *raw,
    }
}

/// One line of a key file: 64 hex digits, or base64 of any alphabet and
/// padding, of exactly 32 bytes.
fn decode_key(line: &str) -> Option<[u8; KEY_LEN]> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = [0u8; KEY_LEN];
    if line.len() == 2 * KEY_LEN && line.bytes().all(|c| c.is_ascii_hexdigit()) {
        for (o, pair) in out.iter_mut().zip(line.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *o = u8::from_str_radix(pair, 16).ok()?;
        }
        return Some(out);
    }
    let mut buf = [0u8; KEY_LEN + 3];
    for engine in [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD] {
        if let Ok(KEY_LEN) = engine.decode_slice(line, &mut buf) {
            out.copy_from_slice(&buf[..KEY_LEN]);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u8) -> Keys {
        let list: Vec<[u8; KEY_LEN]> = (1..=n).map(|i| [i; KEY_LEN]).collect();
        Keys::new(&list).unwrap()
    }

    #[test]
    fn signs_and_verifies() {
        let k = keys(1);
        let id = SessionId::generate().unwrap();
        let signed = k.sign(&id);
        assert_eq!(signed.len(), SIGNED_LEN);
        assert!(signed.starts_with(&*id.as_hex()));
        assert_eq!(k.verify(signed.as_bytes()), Some(id));
        // Unsigned, cut, altered, or with another id: no id.
        assert_eq!(k.verify(id.as_hex().as_bytes()), None);
        assert_eq!(k.verify(&signed.as_bytes()[..SIGNED_LEN - 1]), None);
        let other = SessionId::generate().unwrap();
        let mut swapped = signed.as_bytes().to_vec();
        swapped[..40].copy_from_slice(other.as_hex().as_bytes());
        assert_eq!(k.verify(&swapped), None);
        for i in 0..SIGNED_LEN {
            let mut b = signed.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(k.verify(&b), None, "byte {i}");
        }
    }

    /// A known answer, so that the format cannot drift: computed apart with
    /// Python's `hmac` (key 32 bytes of 1; signing key
    /// HMAC(key, SIGN_LABEL); signature HMAC(signing key, SIGN_CONTEXT ||
    /// hex id), URL-safe base64 without padding).
    #[test]
    fn the_signature_is_what_it_says() {
        let id: SessionId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        assert_eq!(
            &*keys(1).sign(&id),
            "0123456789abcdef0123456789abcdef01234567.5WLKMh30h-ESJEnWeI-MibsKeTS0EvXNZzuKKH76LVo"
        );
    }

    /// The first key signs; every key verifies; a key dropped from the list
    /// verifies nothing any more.
    #[test]
    fn keys_rotate() {
        let old = Keys::new(&[[1; KEY_LEN]]).unwrap();
        let both = Keys::new(&[[2; KEY_LEN], [1; KEY_LEN]]).unwrap();
        let new = Keys::new(&[[2; KEY_LEN]]).unwrap();
        let id = SessionId::generate().unwrap();
        let by_old = old.sign(&id);
        assert_eq!(both.verify(by_old.as_bytes()), Some(id));
        assert_eq!(new.verify(by_old.as_bytes()), None);
        assert_eq!(&*both.sign(&id), &*new.sign(&id));
    }

    #[test]
    fn key_lines() {
        let hex = "00".repeat(31) + "ff";
        let b64 = Keys::generate_line().unwrap();
        let padded = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let text = format!("# current\n{b64}\n\n{hex}\n{padded}\n");
        assert_eq!(Keys::parse(&text).unwrap().len(), 3);
        assert!(matches!(
            Keys::parse("# nothing\n\n"),
            Err(KeysError::Empty)
        ));
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let e = Keys::parse(&format!("{b64}\n{short}\n")).unwrap_err();
        assert!(matches!(e, KeysError::Line { line: 2 }));
        // The error never shows the line.
        assert!(!e.to_string().contains(&short), "{e}");
    }
}
