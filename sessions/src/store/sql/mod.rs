//! What the PostgreSQL and SQLite stores share: the limits of their table
//! layout, table-name checking and the conversion of instants to SQL.

use crate::record::Millis;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The default table.
const DEFAULT_TABLE: &str = "sessions";
/// Larger than any sane session; a row beyond it was not written by us.
const MAX_DATA: usize = 16 << 20;
/// Rows per clean-up statement: short enough that no batch holds locks for
/// long, large enough that a backlog goes quickly.
const CLEAN_BATCH: i64 = 1_000;
/// Ids per page of [`SessionAdmin::ids`](crate::store::SessionAdmin::ids).
const IDS_PAGE: i64 = 500;
/// The longest table name: PostgreSQL's 63-byte identifiers less room for
/// the derived `_schema`, `_expires` and `_locks` names.
const MAX_TABLE: usize = 56;

/// Whether `s` is a plain SQL identifier of at most `max` bytes: a letter or
/// `_`, then letters, digits or `_`. Table names go into SQL text, quoted;
/// this check is what makes the quoting safe.
fn is_identifier(s: &str, max: usize) -> bool {
    let mut chars = s.chars();
    s.len() <= max
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An instant as the `BIGINT` the tables store.
fn to_sql_ms(ms: Millis) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("sessions", MAX_TABLE));
        assert!(is_identifier("_a1", MAX_TABLE));
        for bad in ["", "1a", "a-b", "a b", "a;drop", "\"a\"", "é"] {
            assert!(!is_identifier(bad, MAX_TABLE), "{bad:?}");
        }
        assert!(!is_identifier(&"a".repeat(57), MAX_TABLE));
    }
}
