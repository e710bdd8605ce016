//! Session ids: 160 random bits, written as 40 lowercase hex characters.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;

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
/// use sessions::SessionId;
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

impl SessionId {
    /// Draws a new id from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; LEN];
        getrandom::fill(&mut bytes).map_err(RandomError)?;
        Ok(Self(bytes))
    }

    /// The id as 40 hex characters, without allocating.
    pub fn as_hex(&self) -> HexId {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; LEN * 2];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        HexId(out)
    }

    /// A short tag for logs: 32 bits of a hash of the id. It tells sessions
    /// apart in a log and matches across instances (the hash has fixed keys),
    /// but cannot be turned back into the id, so logs never carry a usable one.
    pub fn short(&self) -> ShortId {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.0.hash(&mut h);
        ShortId(h.finish() as u32)
    }

    /// The first eight bytes as a number, for hashing into shards and tables.
    pub(crate) fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
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

/// The log form of an id: 8 hex digits, see [`SessionId::short`].
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
        if s.len() != LEN * 2 {
            return Err(InvalidId);
        }
        let mut out = [0u8; LEN];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(Self(out))
    }
}

fn nibble(c: u8) -> Result<u8, InvalidId> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(InvalidId),
    }
}

// --- hashing ids in the crate's tables ------------------------------------

/// Ids are uniformly random, so their first bytes are already a good hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `SessionId` hashes as its 20 bytes; take eight of them.
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

pub(crate) type IdMap<V> = HashMap<SessionId, V, BuildHasherDefault<IdHasher>>;

/// Picks the shard for an id from bytes the table hasher does not use.
pub(crate) fn shard_of(id: &SessionId, shards: usize) -> usize {
    (id.prefix_u64() >> 56) as usize % shards
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

    #[test]
    fn debug_does_not_leak() {
        let id: SessionId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("01234567"), "{dbg}");
        assert!(dbg.starts_with("SessionId(") && dbg.len() < 24, "{dbg}");
    }
}
