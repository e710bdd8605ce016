//! The SQL stores, `PostgresStore`, `SqliteStore` and `MysqlStore`, one
//! module each, and what they share because their tables are laid out alike: table-name
//! checks and limits, the statements on the sessions table, the versioned
//! migration runner, how a row becomes a [`Record`] (a damaged one is
//! missing, not an error), the size a save may not exceed, the key pager
//! behind [`SessionAdmin::keys`](crate::store::SessionAdmin::keys), batched
//! clean-up, and instants as SQL integers.
//!
//! This module runs no statement itself: each backend runs the SQL text it
//! is handed, in its own way (PostgreSQL asynchronously on pooled
//! connections, SQLite on tokio's blocking pool, MySQL asynchronously on
//! its driver's pool), so nothing here is tied to a driver. How their SQL
//! differs is [`Dialect`]'s to say. Their locks are leases with the same rules (`lease.rs`),
//! each backend supplying the statements.

use std::future::Future;

use futures_util::stream::{self, BoxStream, StreamExt};

use super::{BoxError, Error, SaveIf};
use crate::id::{SessionId, StoreKey};
use crate::record::{now_millis, Millis, Record};
use crate::user::UserId;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "mysql")]
pub use mysql::MysqlStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The default table.
const DEFAULT_TABLE: &str = "sessions";
/// Larger than any sane session; a row beyond it was not written by us, and
/// a save beyond it is refused, since it could not be read back.
const MAX_DATA: usize = 16 << 20;
/// Rows per clean-up statement: short enough that no batch holds locks for
/// long, large enough that a backlog goes quickly.
const CLEAN_BATCH: i64 = 1_000;
/// Keys per page of [`SessionAdmin::keys`](crate::store::SessionAdmin::keys).
const KEYS_PAGE: i64 = 500;
/// The longest table name: PostgreSQL's 63-byte identifiers less room for
/// the derived `_schema`, `_expires` and `_locks` names.
const MAX_TABLE: usize = 56;
/// The longest schema name: PostgreSQL's identifier limit.
const MAX_SCHEMA: usize = 63;

/// What a lock row's id ends in when it is a claim on the next turn rather
/// than a lock (a key is hex digits only, so the two never meet): SQLite
/// and MySQL, which cannot wake a waiter, keep turns (`lease.rs`).
#[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
const TURN_SUFFIX: &str = "~turn";

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

/// The SQL dialects of the stores, and every way in which the statements
/// they share differ: how a parameter is written, how a name is quoted,
/// and how a new session's row is written over an expired one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dialect {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite,
    /// MySQL 8 and MariaDB, in the SQL both understand.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    Mysql,
}

impl Dialect {
    /// Parameter `n` (from 1): `$n`, `?n`, or the driver's named `:pn`
    /// for MySQL, whose own `?` is positional and cannot be used twice.
    fn param(self, n: u8) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Mysql => format!(":p{n}"),
        }
    }

    /// What a name is quoted with: MySQL's `"` is a string unless the
    /// server runs with `ANSI_QUOTES`.
    fn quote(self) -> char {
        match self {
            Dialect::Postgres | Dialect::Sqlite => '"',
            Dialect::Mysql => '`',
        }
    }
}

/// A checked table name, lower-cased, optionally schema-qualified, and the
/// quote of the dialect it is written in.
#[derive(Clone)]
struct Table {
    schema: Option<String>,
    name: String,
    quote: char,
}

/// Why a table name was refused: the name, and the backend's rule.
#[derive(Debug, thiserror::Error)]
#[error("invalid table name {text:?}: expected {rule}")]
struct InvalidTableName {
    text: String,
    rule: &'static str,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            schema: None,
            name: DEFAULT_TABLE.to_owned(),
            quote: '"',
        }
    }
}

impl Table {
    /// The `table` setting: `[schema.]name`, each part a plain identifier
    /// (the schema at most [`MAX_SCHEMA`], the name at most [`MAX_TABLE`]
    /// bytes) that the backend also `allows`. Lower-cased, as unquoted names
    /// are in SQL. Refused as [`Error::Config`] naming the backend's `rule`.
    fn setting(text: &str, rule: &'static str, allows: fn(&Table) -> bool) -> Result<Self, Error> {
        let (schema, name) = match text.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, text),
        };
        let table = (is_identifier(name, MAX_TABLE)
            && schema.is_none_or(|s| is_identifier(s, MAX_SCHEMA)))
        .then(|| Table {
            schema: schema.map(str::to_ascii_lowercase),
            name: name.to_ascii_lowercase(),
            quote: '"',
        });
        table.filter(allows).ok_or_else(|| {
            let text = text.to_owned();
            Error::config("table", InvalidTableName { text, rule })
        })
    }

    /// The name as written in logs (and hashed into PostgreSQL lock keys).
    fn text(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The same name, quoted as `dialect` quotes names.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    fn in_dialect(mut self, dialect: Dialect) -> Self {
        self.quote = dialect.quote();
        self
    }

    /// `"schema"."name<suffix>"`, quoted so that reserved words work; the
    /// characters were checked, so the quotes cannot be escaped.
    fn sql(&self, suffix: &str) -> String {
        let q = self.quote;
        match &self.schema {
            Some(s) => format!("{q}{s}{q}.{q}{}{suffix}{q}", self.name),
            None => format!("{q}{}{suffix}{q}", self.name),
        }
    }

    /// `"name<suffix>"`, for an index: it is created in its table's schema.
    fn index(&self, suffix: &str) -> String {
        let q = self.quote;
        format!("{q}{}{suffix}{q}", self.name)
    }
}

/// The statements on the sessions table, `(id, data, created_at,
/// expires_at, timeout_ms, user_id)` (`id` holds the session's 64-character
/// store key; `user_id` its user, indexed, which is the user index), with
/// the table name filled in once. The backends word them alike but for
/// what [`Dialect`] says. Every instant compared is the caller's `now`
/// parameter, so every store judges expiry by this process's clock.
struct Statements {
    load: String,
    exists: String,
    insert: String,
    update: String,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    replace: String,
    #[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
    delete_live: String,
    touch: String,
    delete: String,
    count: String,
    keys: String,
    sessions_of: String,
}

impl Statements {
    fn new(table: &Table, dialect: Dialect) -> Self {
        let t = table.sql("");
        let [p1, p2, p3, p4, p5, p6, p7, p8] = [1, 2, 3, 4, 5, 6, 7, 8].map(|n| dialect.param(n));
        Statements {
            load: format!("SELECT {RECORD_COLUMNS} FROM {t} WHERE id = {p1}"),
            exists: format!("SELECT 1 FROM {t} WHERE id = {p1} AND expires_at > {p2}"),
            // A new session may only replace a row that has expired.
            insert: match dialect {
                Dialect::Postgres | Dialect::Sqlite => format!(
                    "INSERT INTO {t} AS s (id, data, created_at, expires_at, timeout_ms, user_id) \
                     VALUES ({p1}, {p2}, {p3}, {p4}, {p6}, {p7}) \
                     ON CONFLICT (id) DO UPDATE \
                     SET data = excluded.data, created_at = excluded.created_at, \
                         expires_at = excluded.expires_at, timeout_ms = excluded.timeout_ms, \
                         user_id = excluded.user_id \
                     WHERE s.expires_at <= {p5}"
                ),
                // No conditional upsert: the row is selected for insertion
                // only if no live one has the key, and an expired one is
                // then overwritten. (The key's lease keeps other writers
                // of it out meanwhile.) `VALUES()` is not used: MySQL 8
                // deprecates it, and MariaDB lacks MySQL's replacement.
                Dialect::Mysql => format!(
                    "INSERT INTO {t} (id, data, created_at, expires_at, timeout_ms, user_id) \
                     SELECT {p1}, {p2}, {p3}, {p4}, {p6}, {p7} FROM DUAL \
                     WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE id = {p1} AND expires_at > {p5}) \
                     ON DUPLICATE KEY UPDATE data = {p2}, created_at = {p3}, \
                         expires_at = {p4}, timeout_ms = {p6}, user_id = {p7}"
                ),
            },
            // A loaded session is written only while its row is live: never
            // brought back once deleted, regenerated or expired.
            update: format!(
                "UPDATE {t} SET data = {p2}, created_at = {p3}, expires_at = {p4}, \
                 timeout_ms = {p6}, user_id = {p7} WHERE id = {p1} AND expires_at > {p5}"
            ),
            // A regenerated session takes its old row's place in one
            // statement: the old row is deleted only while live, and the
            // new one written only if that deleted it (parameters as for
            // `insert`, then the old id). PostgreSQL only: SQLite and MySQL
            // have no DELETE inside WITH, and run `delete_live` then
            // `insert` in one transaction instead.
            replace: format!(
                "WITH gone AS (DELETE FROM {t} WHERE id = {p8} AND expires_at > {p5} RETURNING 1) \
                 INSERT INTO {t} AS s (id, data, created_at, expires_at, timeout_ms, user_id) \
                 SELECT {p1}, {p2}, {p3}, {p4}, {p6}, {p7} WHERE EXISTS (SELECT 1 FROM gone) \
                 ON CONFLICT (id) DO UPDATE \
                 SET data = excluded.data, created_at = excluded.created_at, \
                     expires_at = excluded.expires_at, timeout_ms = excluded.timeout_ms, \
                     user_id = excluded.user_id \
                 WHERE s.expires_at <= {p5}"
            ),
            delete_live: format!("DELETE FROM {t} WHERE id = {p1} AND expires_at > {p2}"),
            touch: format!(
                "UPDATE {t} SET expires_at = {p2} WHERE id = {p1} AND expires_at > {p3}"
            ),
            delete: format!("DELETE FROM {t} WHERE id = {p1}"),
            count: format!("SELECT count(*) FROM {t} WHERE expires_at > {p1}"),
            keys: format!(
                "SELECT id FROM {t} WHERE id > {p1} AND expires_at > {p2} ORDER BY id LIMIT {p3}"
            ),
            sessions_of: format!(
                "SELECT {RECORD_COLUMNS}, id FROM {t} WHERE user_id = {p1} AND expires_at > {p2}"
            ),
        }
    }

    /// The write a save's precondition asks for, taking `(key, data,
    /// created_at, expires_at, now, timeout_ms, user_id)`; one row affected
    /// means it was written.
    fn save(&self, write: SaveIf) -> &str {
        match write {
            SaveIf::Absent => &self.insert,
            SaveIf::Live => &self.update,
        }
    }
}

/// The columns [`decode`] makes a record of, in its order.
const RECORD_COLUMNS: &str = "data, created_at, expires_at, timeout_ms, user_id";

/// One backend's schema history and its bookkeeping, in `<table>_schema`
/// (one row per applied step). The backend runs what [`plan`](Self::plan)
/// hands it inside one transaction that makes concurrent migrations take
/// turns, so that each sees the steps the others recorded.
struct Migrations {
    /// The columns of `<table>_schema` in the backend's words:
    /// `(version …, applied_at …)` and any table options.
    bookkeeping: &'static str,
    /// The steps, in order; step `n` brings the tables to version `n + 1`.
    /// Append only: a released step is never edited.
    steps: &'static [fn(&Table) -> String],
}

/// What a migration is to run, in order, and how many steps that applies.
struct Plan {
    statements: Vec<String>,
    applied: u32,
}

impl Migrations {
    /// Creates `<table>_schema` if it is not there yet.
    fn create_bookkeeping(&self, table: &Table) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} {}",
            table.sql("_schema"),
            self.bookkeeping
        )
    }

    /// Reads the version the tables are at (one row; `NULL` before any step).
    fn read_version(&self, table: &Table) -> String {
        format!("SELECT max(version) FROM {}", table.sql("_schema"))
    }

    /// What brings tables at version `current` up to date: each step not yet
    /// applied, followed by the row that records it. A table newer than this
    /// build is used as it is, with a warning.
    fn plan(&self, table: &Table, current: Option<i64>) -> Plan {
        let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
        if current > self.steps.len() {
            tracing::warn!(
                table = %table.text(),
                version = current,
                known = self.steps.len(),
                "session table schema is newer than this build; using it as is"
            );
        }
        let mut plan = Plan {
            statements: Vec::new(),
            applied: 0,
        };
        for (n, step) in self.steps.iter().enumerate().skip(current) {
            plan.statements.push(step(table));
            // Both values are integers this function formats: nothing from
            // outside reaches the SQL text.
            plan.statements.push(format!(
                "INSERT INTO {} (version, applied_at) VALUES ({}, {})",
                table.sql("_schema"),
                n + 1,
                to_sql_ms(now_millis())
            ));
            plan.applied += 1;
        }
        plan
    }

    /// Logs a migration that changed the tables, once it has committed.
    fn applied(&self, table: &Table, steps: u32) {
        if steps > 0 {
            tracing::info!(table = %table.text(), steps, "session table migrated");
        }
    }
}

/// The [`RECORD_COLUMNS`] of a row as a record, or why they are not one:
/// data larger than any save writes, an instant before the epoch or past
/// [`Record::MAX_TIME`], a user that is not a valid user id.
fn decode(
    data: &[u8],
    created: i64,
    expires: i64,
    timeout: Option<i64>,
    user: Option<&str>,
) -> Result<Record, BoxError> {
    if data.len() > MAX_DATA {
        return Err(format!("data of {} bytes", data.len()).into());
    }
    let record = Record {
        data: data.to_vec(),
        created: Millis::try_from(created)?,
        expires: Millis::try_from(expires)?,
        timeout: timeout.map(Millis::try_from).transpose()?,
        user: user.map(UserId::new).transpose()?,
    };
    record.check_times()?;
    Ok(record)
}

/// A record's own timeout as the `timeout_ms` column holds it.
fn timeout_column(record: &Record) -> Option<i64> {
    record.timeout.map(to_sql_ms)
}

/// A record's user as the `user_id` column holds it.
fn user_column(record: &Record) -> Option<&str> {
    record.user.as_ref().map(UserId::as_str)
}

/// The live record a row of `key` decoded to, or `None`: it has expired, or
/// it is damaged. A damaged row is logged here, with the key's short form,
/// and is then missing like any other: a load never fails on stored data.
fn live_or_missing(
    decoded: Result<Record, BoxError>,
    key: &StoreKey,
    table: &Table,
) -> Option<Record> {
    match decoded {
        Ok(record) => (!record.is_expired(now_millis())).then_some(record),
        Err(error) => {
            tracing::warn!(
                session = %key.short(),
                table = %table.text(),
                %error,
                "damaged session row treated as missing"
            );
            None
        }
    }
}

/// A row removed by clean-up (its `id` and `user_id` columns) as the
/// session it was, for the report; `None` for a row that was not one.
fn expired_row(id: Option<&str>, user: Option<&str>) -> Option<(StoreKey, Option<UserId>)> {
    let key = StoreKey::from_bytes(id?.as_bytes()).ok()?;
    Some((key, user.and_then(|u| UserId::new(u).ok())))
}

/// Refuses a record the store could not read back, before anything is
/// written: what the store held stays as it was.
fn check_size(record: &Record) -> Result<(), Error> {
    match record.data.len() {
        size if size > MAX_DATA => Err(Error::TooLarge {
            size,
            max: MAX_DATA,
        }),
        _ => Ok(()),
    }
}

/// One page of [`keys`] and the cursor for the next (`None` after the last).
struct Page {
    keys: Vec<StoreKey>,
    next: Option<String>,
}

impl Page {
    /// The page made of the `id` column of up to [`KEYS_PAGE`] rows, in
    /// order (`None` for a value that is not text). A value that is not a
    /// store key is skipped with a warning.
    fn from_column<'a>(table: &Table, column: impl IntoIterator<Item = Option<&'a [u8]>>) -> Self {
        let (mut keys, mut seen, mut last) = (Vec::new(), 0, None);
        for text in column {
            seen += 1;
            let key = text.map(|text| {
                last = Some(String::from_utf8_lossy(text).into_owned());
                (
                    StoreKey::from_bytes(text),
                    SessionId::from_bytes(text).is_ok(),
                )
            });
            match key {
                Some((Ok(key), _)) => keys.push(key),
                // A row of the layout before store keys: clean-up removes it
                // once it expires; one line each would flood the log.
                Some((Err(_), true)) => tracing::debug!(
                    table = %table.text(),
                    "a row named by a session id (the earlier layout); skipped"
                ),
                // Not logged as text: it may be a real id (a CherryPy row's).
                _ => tracing::warn!(
                    table = %table.text(),
                    "a row whose id is not a store key; skipped"
                ),
            }
        }
        let next = if seen == KEYS_PAGE { last } else { None };
        Page { keys, next }
    }
}

/// Every live key, read a page at a time: `page(after)` returns the keys
/// after the cursor `after` (`""` first). Keyset pages (`id > after`), so a
/// large table is never held at once and no long-running cursor pins a
/// connection. An error ends the stream.
fn keys<'a, F, Fut>(page: F) -> BoxStream<'a, Result<StoreKey, Error>>
where
    F: Fn(String) -> Fut + Send + 'a,
    Fut: Future<Output = Result<Page, Error>> + Send + 'a,
{
    stream::unfold(Some(String::new()), move |cursor| {
        let next = cursor.map(&page);
        async move {
            Some(match next?.await {
                Ok(page) => (page.keys.into_iter().map(Ok).collect::<Vec<_>>(), page.next),
                Err(e) => (vec![Err(e)], None),
            })
        }
    })
    .flat_map(stream::iter)
    .boxed()
}

/// Runs `batch` (one statement removing at most [`CLEAN_BATCH`] rows) until
/// it removes fewer, and returns how many it removed in all.
async fn in_batches<F, Fut>(mut batch: F) -> Result<u64, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, Error>>,
{
    let mut removed = 0;
    loop {
        let n = batch().await?;
        removed += n;
        if n < CLEAN_BATCH as u64 {
            return Ok(removed);
        }
    }
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

    #[test]
    fn table_settings() {
        let any = |_: &Table| true;
        let t = Table::setting("Web.Sessions", "a rule", any).unwrap();
        assert_eq!(t.text(), "web.sessions");
        assert_eq!(t.sql("_schema"), "\"web\".\"sessions_schema\"");
        assert_eq!(t.index("_expires"), "\"sessions_expires\"");
        assert_eq!(Table::default().sql(""), "\"sessions\"");
        for bad in ["a.b.c", ".a", "a.", &format!("{}.a", "s".repeat(64))] {
            let err = Table::setting(bad, "a rule", any).err().unwrap();
            assert!(
                matches!(
                    err,
                    Error::Config {
                        setting: "table",
                        ..
                    }
                ),
                "{err:?}"
            );
            let source = std::error::Error::source(&err).unwrap().to_string();
            assert!(
                source.contains("table name") && source.ends_with("expected a rule"),
                "{source}"
            );
        }
        let unqualified = |t: &Table| t.schema.is_none();
        assert!(Table::setting("a.b", "", unqualified).is_err());
    }

    #[test]
    fn statements_in_each_dialect() {
        let t = Table::default();
        let (pg, lite) = (
            Statements::new(&t, Dialect::Postgres),
            Statements::new(&t, Dialect::Sqlite),
        );
        assert_eq!(
            pg.touch,
            "UPDATE \"sessions\" SET expires_at = $2 WHERE id = $1 AND expires_at > $3"
        );
        assert_eq!(lite.save(SaveIf::Live), lite.update);
        assert!(lite
            .save(SaveIf::Absent)
            .ends_with("WHERE s.expires_at <= ?5"));
        assert!(!lite.insert.contains('$') && !pg.insert.contains('?'));
        let my = Statements::new(&t.clone().in_dialect(Dialect::Mysql), Dialect::Mysql);
        assert_eq!(
            my.touch,
            "UPDATE `sessions` SET expires_at = :p2 WHERE id = :p1 AND expires_at > :p3"
        );
        assert!(my.insert.contains("ON DUPLICATE KEY UPDATE") && !my.insert.contains('?'));
    }

    #[test]
    fn plans_apply_each_missing_step_once() {
        let m = Migrations {
            bookkeeping: "(version integer, applied_at bigint)",
            steps: &[|t| format!("ONE {}", t.sql("")), |_| "TWO".to_owned()],
        };
        let t = Table::default();
        assert_eq!(
            m.create_bookkeeping(&t),
            "CREATE TABLE IF NOT EXISTS \"sessions_schema\" (version integer, applied_at bigint)"
        );
        let all = m.plan(&t, None);
        assert_eq!(all.applied, 2);
        assert_eq!(all.statements.len(), 4);
        assert_eq!(all.statements[0], "ONE \"sessions\"");
        assert!(all.statements[1]
            .starts_with("INSERT INTO \"sessions_schema\" (version, applied_at) VALUES (1, "));
        assert_eq!(all.statements[2], "TWO");
        assert!(all.statements[3].contains("VALUES (2, "));
        let rest = m.plan(&t, Some(1));
        assert_eq!((rest.applied, rest.statements[0].as_str()), (1, "TWO"));
        for current in [Some(2), Some(7)] {
            let none = m.plan(&t, current);
            assert_eq!((none.applied, none.statements.len()), (0, 0));
        }
    }

    #[test]
    fn rows_decode_or_are_missing() {
        let key = StoreKey::generate().unwrap();
        let far = to_sql_ms(now_millis() + 60_000);
        let record = decode(b"{}", 1, far, None, None).unwrap();
        assert_eq!(
            live_or_missing(Ok(record.clone()), &key, &Table::default()),
            Some(record)
        );
        assert!(decode(b"{}", -5, far, None, None).is_err());
        assert!(decode(b"{}", 0, -1, None, None).is_err());
        assert!(decode(&vec![0; MAX_DATA + 1], 0, far, None, None).is_err());
        assert!(decode(&vec![0; MAX_DATA], 0, far, None, None).is_ok());
        let expired = decode(b"{}", 0, 1, None, None);
        assert_eq!(live_or_missing(expired, &key, &Table::default()), None);
        let damaged = decode(b"{}", -5, far, None, None);
        assert!(decode(b"{}", 0, far, None, Some("a\nb")).is_err());
        let user = decode(b"{}", 0, far, None, Some("alice")).unwrap().user;
        assert_eq!(user.as_ref().map(UserId::as_str), Some("alice"));
        assert_eq!(live_or_missing(damaged, &key, &Table::default()), None);
    }

    #[test]
    fn saves_over_the_read_limit_are_refused() {
        let record = |len| Record {
            data: vec![b'x'; len],
            created: 0,
            expires: 1,
            timeout: None,
            user: None,
        };
        assert!(check_size(&record(MAX_DATA)).is_ok());
        assert!(matches!(
            check_size(&record(MAX_DATA + 1)),
            Err(Error::TooLarge { size, max: MAX_DATA }) if size == MAX_DATA + 1
        ));
    }

    #[test]
    fn pages_skip_malformed_keys_and_carry_the_cursor() {
        let good: Vec<String> = (0..KEYS_PAGE)
            .map(|_| StoreKey::generate().unwrap().to_string())
            .collect();
        let mut column: Vec<Option<&[u8]>> = good.iter().map(|s| Some(s.as_bytes())).collect();
        column[1] = Some(b"NOT-AN-ID");
        column[2] = None;
        let full = Page::from_column(&Table::default(), column.clone());
        assert_eq!(full.keys.len(), good.len() - 2);
        assert_eq!(full.next.as_deref(), good.last().map(String::as_str));
        column.pop();
        let last = Page::from_column(&Table::default(), column);
        assert_eq!(last.next, None);
    }

    #[tokio::test]
    async fn keys_stream_every_page_and_stop_at_an_error() {
        let pages = |fail: bool| {
            move |after: String| async move {
                match after.as_str() {
                    "" => Ok(Page {
                        keys: vec![StoreKey::generate().unwrap()],
                        next: Some("a".to_owned()),
                    }),
                    _ if fail => Err(Error::unavailable("test", "down")),
                    _ => Ok(Page {
                        keys: vec![StoreKey::generate().unwrap(); 2],
                        next: None,
                    }),
                }
            }
        };
        let all: Vec<_> = keys(pages(false)).collect().await;
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(Result::is_ok));
        let failed: Vec<_> = keys(pages(true)).collect().await;
        assert_eq!(failed.len(), 2);
        assert!(failed[1].is_err());
    }

    #[tokio::test]
    async fn clean_up_runs_batches_until_one_is_short() {
        let mut left = 2_500_u64;
        let removed = in_batches(|| {
            let n = left.min(CLEAN_BATCH as u64);
            left -= n;
            async move { Ok(n) }
        })
        .await
        .unwrap();
        assert_eq!((removed, left), (2_500, 0));
    }
}
