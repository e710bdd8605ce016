//! What stores persist: the session's data with its creation and expiry
//! instants, and the framed, checksummed byte form for stores that keep
//! opaque blobs (files, Redis).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::user::{InvalidUser, UserId, MAX_USER_LEN};

/// Milliseconds since the Unix epoch, UTC.
///
/// Stores keep absolute instants rather than local wall-clock times, so that
/// instances in different time zones, or a DST change, agree on expiry.
pub type Millis = u64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// A span in [`Millis`], one too long for them as `Millis::MAX` rather
/// than cut to its low 64 bits (what `as u64` does, which turns some spans
/// set in code, like `Duration::from_secs(1 << 62)`, into short ones).
pub(crate) fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// An instant in [`Millis`] as a `SystemTime`; one past
/// [`Record::MAX_TIME`] is taken as that, which every platform's
/// `SystemTime` holds (adding a larger span can overflow it, and panic).
pub(crate) fn system_time(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.min(Record::MAX_TIME))
}

/// One stored session.
///
/// `data` is the session's key/value map encoded as a JSON object. Stores
/// treat it as opaque bytes; the [`Session`](crate::Session) handle decodes
/// it on first use and encodes it again only when it changed.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The data, a JSON object.
    pub data: Vec<u8>,
    /// When the session was first saved.
    pub created: Millis,
    /// When it expires unless saved or refreshed again.
    pub expires: Millis,
    /// The session's own idle timeout in milliseconds
    /// ([`Session::set_timeout`](crate::Session::set_timeout)), which then
    /// replaces the configured `timeout` for it; `None`: it has none.
    pub timeout: Option<Millis>,
    /// The user the session belongs to
    /// ([`Session::set_user`](crate::Session::set_user)), by which the
    /// store indexes it; `None`: nobody's yet.
    pub user: Option<UserId>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("data_len", &self.data.len())
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("timeout", &self.timeout)
            .field("has_user", &self.user.is_some())
            .finish()
    }
}

/// Why stored bytes could not be turned back into a [`Record`].
///
/// Stores log these and treat the session as missing: a damaged record is
/// never answered with an error page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header, or than the header announces.
    #[error("record is truncated")]
    Truncated,
    /// Not a record of this library (wrong magic bytes).
    #[error("not a session record")]
    Foreign,
    /// A format version this build does not read.
    #[error("unknown record version {0}")]
    Version(u8),
    /// The checksum does not match the bytes.
    #[error("record checksum mismatch")]
    Checksum,
    /// The user it names is not a valid [`UserId`].
    #[error("record names an invalid user: {0}")]
    User(InvalidUser),
    /// Longer than the configured limit.
    #[error("record of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A time past [`Record::MAX_TIME`]: no save writes one, so the record
    /// was damaged or written by something else.
    #[error("record {field} out of range: {ms} ms is past the year 9999")]
    OutOfRange {
        /// Which time: `created`, `expires` or `timeout`.
        field: &'static str,
        /// Its value.
        ms: Millis,
    },
}

const MAGIC: &[u8; 4] = b"RSS\x01";
/// The newest format: version 2 added the session's own timeout, version 3
/// its user. Older versions are still read, and a record is written in the
/// oldest version that holds it, so that older builds read what they can.
const VERSION: u8 = 3;
/// magic, version, created, expires, data length, checksum: version 1.
const HEADER_V1: usize = 4 + 1 + 8 + 8 + 4 + 4;
/// Version 2 adds the timeout (0: none) after the checksum.
const HEADER_V2: usize = HEADER_V1 + 8;
/// Version 3 adds the user's length (2 bytes) and the user after that.
const HEADER_V3: usize = HEADER_V2 + 2;
/// The longest header there is.
const HEADER_MAX: usize = HEADER_V3 + MAX_USER_LEN;
/// Where the checksum is; it covers every byte but its own four.
const CRC_AT: usize = HEADER_V1 - 4;

impl Record {
    /// The most bytes [`encode`](Self::encode) puts before the data, for
    /// stores that bound what they read to the largest record they keep.
    pub const MAX_HEADER: usize = HEADER_MAX;

    /// The latest instant a record holds, and its longest timeout:
    /// 9999-12-31 23:59:59.999 UTC, the last second an HTTP date (the
    /// cookie's `Expires`) can name. A session's expiry is never set past
    /// it, however long its timeouts; a record holding a later time is
    /// damaged ([`DecodeError::OutOfRange`]) and is treated as missing.
    pub const MAX_TIME: Millis = 253_402_300_799_999;

    /// Checks that the record's times are within
    /// [`MAX_TIME`](Self::MAX_TIME), as every save writes them. Called by
    /// [`decode`](Self::decode), by the SQL stores on each row, and by the
    /// middleware on every record a store loads (a store that keeps
    /// records as it was given them, like the RAM store, decodes nothing).
    pub(crate) fn check_times(&self) -> Result<(), DecodeError> {
        let times = [
            ("created", self.created),
            ("expires", self.expires),
            ("timeout", self.timeout.unwrap_or(0)),
        ];
        match times.into_iter().find(|&(_, ms)| ms > Self::MAX_TIME) {
            Some((field, ms)) => Err(DecodeError::OutOfRange { field, ms }),
            None => Ok(()),
        }
    }

    /// The user a framed record names, read from its first bytes alone
    /// (at least the header; the data may be cut off): for stores that
    /// must find a deleted record's index entry without reading it whole.
    /// `None` for a record without a user, or bytes that are not one.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn user_in_header(bytes: &[u8]) -> Option<UserId> {
        if bytes.len() < HEADER_V3 || bytes[..4] != MAGIC[..] || bytes[4] != 3 {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([bytes[HEADER_V2], bytes[HEADER_V2 + 1]]));
        UserId::from_bytes(bytes.get(HEADER_V3..HEADER_V3 + len)?).ok()
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires <= now
    }

    /// Frames the record for a blob store: magic, version, instants, length,
    /// a CRC-32 over everything else, then (version 2) the session's own
    /// timeout, (version 3) its user, then the data.
    ///
    /// The format is plain bytes and JSON: decoding it cannot run code.
    pub fn encode(&self) -> Vec<u8> {
        let user = self.user.as_ref().map(UserId::as_str);
        let version = match (self.timeout, user) {
            (None, None) => 1,
            (Some(_), None) => 2,
            (_, Some(_)) => VERSION,
        };
        let user = user.unwrap_or_default().as_bytes();
        let mut out = Vec::with_capacity(HEADER_V3 + user.len() + self.data.len());
        out.extend_from_slice(MAGIC);
        out.push(version);
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.expires.to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        if version >= 2 {
            out.extend_from_slice(&self.timeout.unwrap_or(0).to_le_bytes());
        }
        if version >= 3 {
            // A user id is at most 256 bytes.
            out.extend_from_slice(&(user.len() as u16).to_le_bytes());
            out.extend_from_slice(user);
        }
        out.extend_from_slice(&self.data);
        let crc = checksum(&out);
        out[CRC_AT..HEADER_V1].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads what [`encode`](Self::encode) wrote, refusing anything longer
    /// than `max` bytes of data before looking further.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Record, DecodeError> {
        let too_large = || DecodeError::TooLarge {
            size: bytes.len(),
            max,
        };
        if bytes.len() > max.saturating_add(HEADER_MAX) {
            return Err(too_large());
        }
        if bytes.len() < HEADER_V1 {
            // A cut-off record of ours still starts with our magic.
            return Err(if bytes.starts_with(MAGIC) || MAGIC.starts_with(bytes) {
                DecodeError::Truncated
            } else {
                DecodeError::Foreign
            });
        }
        if bytes[..3] != MAGIC[..3] {
            return Err(DecodeError::Foreign);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let version = match (bytes[3] == MAGIC[3], bytes[4]) {
            (true, v @ 1..=VERSION) => v,
            _ => return Err(DecodeError::Version(bytes[4])),
        };
        let header = match version {
            1 => HEADER_V1,
            2 => HEADER_V2,
            _ if bytes.len() < HEADER_V3 => return Err(DecodeError::Truncated),
            _ => {
                HEADER_V3
                    + usize::from(u16::from_le_bytes([bytes[HEADER_V2], bytes[HEADER_V2 + 1]]))
            }
        };
        if bytes.len() < header {
            return Err(DecodeError::Truncated);
        }
        // The bound above allowed for the longest header.
        if bytes.len() > max.saturating_add(header) {
            return Err(too_large());
        }
        let len = u32_at(21) as usize;
        let data = &bytes[header..];
        if data.len() != len {
            return Err(DecodeError::Truncated);
        }
        if checksum(bytes) != u32_at(CRC_AT) {
            return Err(DecodeError::Checksum);
        }
        let user = match version {
            3 => Some(UserId::from_bytes(&bytes[HEADER_V3..header]).map_err(DecodeError::User)?),
            _ => None,
        };
        let record = Record {
            data: data.to_vec(),
            created: u64_at(5),
            expires: u64_at(13),
            timeout: (version >= 2).then(|| u64_at(HEADER_V1)).filter(|&t| t > 0),
            user,
        };
        record.check_times()?;
        Ok(record)
    }
}

/// The CRC-32 of a framed record, its own four bytes left out.
fn checksum(framed: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&framed[..CRC_AT]);
    crc.update(&framed[HEADER_V1..]);
    crc.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            data: br#"{"counter":3}"#.to_vec(),
            created: 1_700_000_000_000,
            expires: 1_700_003_600_000,
            timeout: Some(30 * 24 * 3_600_000),
            user: Some(UserId::new("alice@example.com").unwrap()),
        }
    }

    /// Each record is written in the oldest version that holds it, and
    /// every version reads back.
    #[test]
    fn round_trip() {
        let r = sample();
        let no_user = Record {
            user: None,
            ..r.clone()
        };
        let plain = Record {
            timeout: None,
            ..no_user.clone()
        };
        let user_only = Record {
            timeout: None,
            ..r.clone()
        };
        for (record, version) in [(r, 3), (no_user, 2), (plain, 1), (user_only, 3)] {
            let bytes = record.encode();
            assert_eq!(bytes[4], version, "{record:?}");
            assert_eq!(Record::decode(&bytes, 1024), Ok(record));
        }
    }

    /// A record whose user is not a valid user id (written by something
    /// else, with a correct checksum) is refused, never half-read.
    #[test]
    fn an_invalid_user_is_refused() {
        let mut bytes = sample().encode();
        bytes[HEADER_V3] = b'\n';
        let crc = checksum(&bytes);
        bytes[CRC_AT..HEADER_V1].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Record::decode(&bytes, 1024),
            Err(DecodeError::User(InvalidUser::Control))
        );
    }

    /// The user can be read from a record's first bytes alone.
    #[test]
    fn the_user_is_in_the_header() {
        let bytes = sample().encode();
        let header = HEADER_V3 + "alice@example.com".len();
        assert_eq!(Record::user_in_header(&bytes[..header]), sample().user);
        assert_eq!(Record::user_in_header(&bytes[..header - 1]), None);
        let plain = Record {
            user: None,
            ..sample()
        };
        assert_eq!(Record::user_in_header(&plain.encode()), None);
        assert_eq!(Record::user_in_header(b""), None);
    }

    /// The size bound is on the data: the longest user does not count.
    #[test]
    fn the_bound_is_on_the_data() {
        let r = Record {
            data: vec![b' '; 1024],
            user: Some(UserId::new("u".repeat(MAX_USER_LEN)).unwrap()),
            ..sample()
        };
        assert_eq!(Record::decode(&r.encode(), 1024), Ok(r.clone()));
        assert!(matches!(
            Record::decode(&r.encode(), 1023),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    /// A record written by version 1 (no timeout) still reads.
    #[test]
    fn version_1_records_still_read() {
        let r = Record {
            timeout: None,
            user: None,
            ..sample()
        };
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.push(1);
        v1.extend_from_slice(&r.created.to_le_bytes());
        v1.extend_from_slice(&r.expires.to_le_bytes());
        v1.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&v1);
        crc.update(&r.data);
        v1.extend_from_slice(&crc.finalize().to_le_bytes());
        v1.extend_from_slice(&r.data);
        assert_eq!(Record::decode(&v1, 1024), Ok(r));
    }

    #[test]
    fn every_truncation_is_refused_as_truncated() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert_eq!(
                Record::decode(&bytes[..n], 1024),
                Err(DecodeError::Truncated),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(Record::decode(&b, 1024).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    /// A well-formed record whose times no save writes (its own timeout of
    /// 9,500 years, written by hand into a store) is refused as damaged,
    /// so that it never reaches the cookie's date; the latest time there
    /// is still reads.
    #[test]
    fn times_past_the_year_9999_are_refused() {
        let years_9500: Millis = 9_500 * 365 * 24 * 3_600_000;
        let past = Record::MAX_TIME + 1;
        for (field, ms, record) in [
            (
                "timeout",
                years_9500,
                Record {
                    timeout: Some(years_9500),
                    ..sample()
                },
            ),
            (
                "created",
                past,
                Record {
                    created: past,
                    ..sample()
                },
            ),
            (
                "expires",
                u64::MAX,
                Record {
                    expires: u64::MAX,
                    ..sample()
                },
            ),
        ] {
            assert_eq!(
                Record::decode(&record.encode(), 1024),
                Err(DecodeError::OutOfRange { field, ms }),
                "{field}"
            );
        }
        let latest = Record {
            created: Record::MAX_TIME,
            expires: Record::MAX_TIME,
            timeout: Some(Record::MAX_TIME),
            ..sample()
        };
        assert_eq!(Record::decode(&latest.encode(), 1024), Ok(latest));
    }

    /// The conversions saturate instead of wrapping or panicking.
    #[test]
    fn conversions_are_total() {
        assert_eq!(millis(Duration::MAX), Millis::MAX);
        // `as u64` would keep the low bits: 2^62 s is 2^62 * 1000 ms.
        assert_eq!(millis(Duration::from_secs(1 << 62)), Millis::MAX);
        assert_eq!(millis(Duration::from_millis(1_234)), 1_234);
        assert_eq!(system_time(u64::MAX), system_time(Record::MAX_TIME));
        assert_eq!(
            httpdate::fmt_http_date(system_time(u64::MAX)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn foreign_and_oversized() {
        assert_eq!(
            Record::decode(b"\x80\x04\x95pickle-ish bytes here, long enough", 1024),
            Err(DecodeError::Foreign)
        );
        let big = Record {
            data: vec![b' '; 2000],
            ..sample()
        };
        assert!(matches!(
            Record::decode(&big.encode(), 1024),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
