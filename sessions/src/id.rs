//! Session ids — 160 random bits, written as 40 lowercase hex characters —
//! and the store keys that stores file sessions under, which are not ids.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The number of random bytes in an id (160 bits, as CherryPy's SHA-1 ids).
const LEN: usize = 20;

/// A session id: 160 bits from the operating system's CSPRNG.
///
/// Its text form is exactly 40 lowercase hex characters. Parsing is strict:
/// anything else — upper case, other lengths, paths, percent-encoding — is
/// rejected, so an id that reached a store has this shape and nothing else,
/// and can be used in a file name, a key or a query as it is.
///
/// ```
/// use server_sessions::SessionId;
///
/// let id = SessionId::generate().unwrap();
/// let text = id.to_string();
/// assert_eq!(text.len(), 40);
/// assert_eq!(text.parse::<SessionId>().unwrap(), id);
/// assert!("../../etc/passwd".parse::<SessionId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; LEN]);

/// The error from parsing a [`SessionId`]: the text was not 40 lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a session id is 40 lowercase hex characters")]
#[non_exhaustive]
pub struct InvalidId;

/// The operating system's random source failed.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomError(#[source] getrandom::Error);

/// Fills `buf` from the operating system's CSPRNG: ids, keys, nonces.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(RandomError)
}

impl SessionId {
    /// Draws a new id from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; LEN];
        fill_random(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The id of 20 bytes a sealed cookie carried.
    pub(crate) fn from_raw(bytes: [u8; LEN]) -> Self {
        Self(bytes)
    }

    /// The id's 20 bytes: what a sealed record's key is derived from.
    pub(crate) fn as_bytes(&self) -> &[u8; LEN] {
        &self.0
    }

    /// The id as 40 hex characters, without allocating.
    pub fn as_hex(&self) -> HexId {
        let mut out = [0u8; LEN * 2];
        write_hex(&self.0, &mut out);
        HexId(out)
    }

    /// The key a store files this session under: see [`StoreKey`].
    pub fn store_key(&self) -> StoreKey {
        StoreKey::digest_of(self.as_hex().as_bytes())
    }

    /// A short tag for logs and the admin listing: the first 8 hex digits of
    /// the [store key](Self::store_key). It tells sessions apart and matches
    /// across instances and the stored keys, but grants nothing, so logs
    /// never carry a usable id.
    pub fn short(&self) -> ShortId {
        self.store_key().short()
    }
}

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// The number of bytes in a store key (SHA-256).
pub(crate) const KEY_LEN: usize = 32;

/// What a store files a session under: the SHA-256 of the id's 40-character
/// text, written as 64 lowercase hex characters.
///
/// Stores never see a [`SessionId`]: the layer hands them this key, so
/// whoever reads a store's files, keys, rows, backups or replicas learns no
/// id they could present as a cookie, and a lookup by key gives away no
/// timing about the id. It is one definition, so that tools outside the
/// crate can find a session from its id:
///
/// ```
/// use server_sessions::{SessionId, store::StoreKey};
///
/// let id: SessionId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
/// // printf %s 0123456789abcdef0123456789abcdef01234567 | sha256sum
/// let key = id.store_key();
/// assert_eq!(
///     key.to_string(),
///     "deb87fabd17715bb31ad4cf4ffb9494eeb15f8d33d85b031a301c64ab3417eaa"
/// );
/// assert_eq!(key.to_string().parse::<StoreKey>().unwrap(), key);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey([u8; KEY_LEN]);

/// The error from parsing a [`StoreKey`]: the text was not 64 lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a store key is 64 lowercase hex characters")]
#[non_exhaustive]
pub struct InvalidKey;

impl StoreKey {
    /// The key as 64 hex characters, without allocating.
    pub fn as_hex(&self) -> HexKey {
        let mut out = [0u8; KEY_LEN * 2];
        write_hex(&self.0, &mut out);
        HexKey(out)
    }

    /// The log form: the first 8 hex digits.
    pub fn short(&self) -> ShortId {
        ShortId(u32::from_be_bytes([
            self.0[0], self.0[1], self.0[2], self.0[3],
        ]))
    }

    /// Parses the text form from raw bytes (a file name, a key), exactly 64
    /// lowercase hex characters.
    pub fn from_bytes(s: &[u8]) -> Result<Self, InvalidKey> {
        let mut out = [0u8; KEY_LEN];
        parse_hex(s, &mut out).map_err(|_| InvalidKey)?;
        Ok(Self(out))
    }

    /// The SHA-256 of `bytes`: a session's key from its id's text, a user
    /// index's name from the user id.
    pub(crate) fn digest_of(bytes: &[u8]) -> StoreKey {
        StoreKey(Sha256::digest(bytes).into())
    }

    /// The key's 32 bytes.
    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key of 32 bytes a store kept (see [`as_bytes`](Self::as_bytes)).
    pub(crate) fn from_raw(bytes: [u8; KEY_LEN]) -> StoreKey {
        StoreKey(bytes)
    }

    /// The first eight bytes as a number, for hashing into shards and tables.
    pub(crate) fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }

    /// The key of a fresh id (for the unit tests of stores).
    #[cfg(test)]
    pub(crate) fn generate() -> Result<StoreKey, RandomError> {
        SessionId::generate().map(|id| id.store_key())
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_hex())
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({})", self.short())
    }
}

impl FromStr for StoreKey {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<Self, InvalidKey> {
        Self::from_bytes(s.as_bytes())
    }
}

/// A [`StoreKey`] rendered as text on the stack; derefs to `str`.
#[derive(Clone, Copy)]
pub struct HexKey([u8; KEY_LEN * 2]);

impl std::ops::Deref for HexKey {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII hex digits are ever written into the buffer.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for HexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// A [`SessionId`] rendered as text on the stack; derefs to `str`.
#[derive(Clone, Copy)]
pub struct HexId([u8; LEN * 2]);

impl std::ops::Deref for HexId {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII hex digits are ever written into the buffer.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for HexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// The log form of a session: 8 hex digits of its store key, see
/// [`SessionId::short`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortId(u32);

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}…", self.0)
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_hex())
    }
}

/// Debug shows only the short form, so that a `{:?}` in a log line can never
/// leak a usable id.
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.short())
    }
}

impl FromStr for SessionId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::from_bytes(s.as_bytes())
    }
}

impl SessionId {
    /// Parses the text form from raw bytes (as found in a header or a file
    /// name), with the same strictness as [`FromStr`].
    pub fn from_bytes(s: &[u8]) -> Result<Self, InvalidId> {
        let mut out = [0u8; LEN];
        parse_hex(s, &mut out)?;
        Ok(Self(out))
    }
}

/// Fills `out` from exactly twice as many lowercase hex digits.
fn parse_hex(s: &[u8], out: &mut [u8]) -> Result<(), InvalidId> {
    if s.len() != out.len() * 2 {
        return Err(InvalidId);
    }
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

fn nibble(c: u8) -> Result<u8, InvalidId> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(InvalidId),
    }
}

// --- hashing ids in the crate's tables ------------------------------------

/// Store keys are uniformly random, so their first bytes are already a good
/// hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `StoreKey` hashes as its 32 bytes; take eight of them.
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

pub(crate) type KeyMap<V> = HashMap<StoreKey, V, BuildHasherDefault<IdHasher>>;

/// Picks the shard for a key from bytes the table hasher does not use.
pub(crate) fn shard_of(key: &StoreKey, shards: usize) -> usize {
    (key.prefix_u64() >> 56) as usize % shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape() {
        let id = SessionId::generate().unwrap();
        let s = id.to_string();
        assert_eq!(s.len(), 40);
        assert!(s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(s.parse::<SessionId>(), Ok(id));
        assert_eq!(&*id.as_hex(), s);
    }

    #[test]
    fn ids_differ() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn strict_parsing() {
        let good = "0123456789abcdef0123456789abcdef01234567";
        assert!(good.parse::<SessionId>().is_ok());
        for bad in [
            "",
            "maliciousid",
            &good.to_uppercase(),
            &good[..39],
            &format!("{good}0"),
            "../../../../../../../../../../etc/passwd",
            "0123456789abcdef0123456789abcdef0123456g",
            "0123456789abcdef0123456789abcdef012345%2",
            "0123456789abcdef0123456789abcdef012345\0a",
            "0123456789abcdef0123456789abcdef0123456é",
            " 123456789abcdef0123456789abcdef01234567",
        ] {
            assert_eq!(bad.parse::<SessionId>(), Err(InvalidId), "{bad:?}");
        }
    }

    /// The one definition: SHA-256 of the 40-character text, in lowercase
    /// hex (a known answer, so the definition cannot drift).
    #[test]
    fn store_key_is_the_sha256_of_the_text() {
        let id: SessionId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        let key = id.store_key();
        // `printf %s 0123…4567 | sha256sum`
        assert_eq!(
            &*key.as_hex(),
            "deb87fabd17715bb31ad4cf4ffb9494eeb15f8d33d85b031a301c64ab3417eaa"
        );
        assert_eq!(key.to_string().parse::<StoreKey>(), Ok(key));
        assert_eq!(id.short().to_string(), format!("{}…", &key.as_hex()[..8]));
        assert!(!key.to_string().contains(&*id.as_hex()));
        assert!("x".parse::<StoreKey>().is_err());
        assert!(key.to_string().to_uppercase().parse::<StoreKey>().is_err());
    }

    #[test]
    fn debug_does_not_leak() {
        let id: SessionId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("01234567"), "{dbg}");
        assert!(dbg.starts_with("SessionId(") && dbg.len() < 24, "{dbg}");
    }
}
