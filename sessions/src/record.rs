//! What stores persist: the session's data with its creation and expiry
//! instants, and the framed, checksummed byte form for stores that keep
//! opaque blobs (files, Redis).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
///
/// Stores keep absolute instants rather than local wall-clock times, so that
/// instances in different time zones, or a DST change, agree on expiry.
pub type Millis = u64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
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
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("data_len", &self.data.len())
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("timeout", &self.timeout)
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
    /// Longer than the configured limit.
    #[error("record of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

const MAGIC: &[u8; 4] = b"RSS\x01";
/// Version 2 added the session's own timeout; version 1 records (without
/// it) are still read.
const VERSION: u8 = 2;
/// magic, version, created, expires, data length, checksum: version 1.
const HEADER_V1: usize = 4 + 1 + 8 + 8 + 4 + 4;
/// Version 2 adds the timeout (0: none) after the checksum.
const HEADER: usize = HEADER_V1 + 8;

impl Record {
    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires <= now
    }

    /// Frames the record for a blob store: magic, version, instants, length,
    /// a CRC-32 over all of it, the session's own timeout (inside the
    /// checksum too), then the data. A record without a timeout is written
    /// as version 1, which builds before version 2 read too: only sessions
    /// that set their own timeout need a newer reader.
    ///
    /// The format is plain bytes and JSON: decoding it cannot run code.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.data.len());
        out.extend_from_slice(MAGIC);
        out.push(if self.timeout.is_some() { VERSION } else { 1 });
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.expires.to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        let timeout = self.timeout.map(u64::to_le_bytes);
        let timeout: &[u8] = timeout.as_ref().map_or(&[], |t| t);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out);
        crc.update(timeout);
        crc.update(&self.data);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(timeout);
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads what [`encode`](Self::encode) wrote, refusing anything longer
    /// than `max` bytes before looking further.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Record, DecodeError> {
        if bytes.len() > max.saturating_add(HEADER) {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                max,
            });
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
        let header = match (bytes[3] == MAGIC[3], bytes[4]) {
            (true, 1) => HEADER_V1,
            (true, VERSION) if bytes.len() >= HEADER => HEADER,
            (true, VERSION) => return Err(DecodeError::Truncated),
            _ => return Err(DecodeError::Version(bytes[4])),
        };
        // The bound above allowed for the longer header.
        if bytes.len() > max.saturating_add(header) {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                max,
            });
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
        let created = u64_at(5);
        let expires = u64_at(13);
        let len = u32_at(21) as usize;
        let stored_crc = u32_at(25);
        let timeout = &bytes[HEADER_V1..header];
        let data = &bytes[header..];
        if data.len() != len {
            return Err(DecodeError::Truncated);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[..25]);
        crc.update(timeout);
        crc.update(data);
        if crc.finalize() != stored_crc {
            return Err(DecodeError::Checksum);
        }
        Ok(Record {
            data: data.to_vec(),
            created,
            expires,
            timeout: (header == HEADER).then(|| u64_at(HEADER_V1)),
        })
    }
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
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode(), 1024), Ok(r.clone()));
        let without = Record { timeout: None, ..r };
        assert_eq!(Record::decode(&without.encode(), 1024), Ok(without));
    }

    /// A record written by version 1 (no timeout) still reads.
    #[test]
    fn version_1_records_still_read() {
        let r = Record {
            timeout: None,
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
