//! The MySQL store's side of the driver: the URL, every wait bounded, the
//! named parameters, and a row as a record.

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Params, Row, Value};

use super::Inner;
use crate::id::StoreKey;
use crate::record::{now_millis, Record};
use crate::store::sql::{decode, timeout_column, to_sql_ms, user_column};
use crate::store::{BoxError, Error};

/// The server's error for a duplicate key.
const ER_DUP_ENTRY: u16 = 1062;
/// The server's errors for a transaction it chose to end, or that waited
/// too long for a row lock: the statement had no effect.
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

/// `url` as the driver's options: `mysql://` or `mariadb://`, naming a
/// database. The error names what is wrong, never the URL: it cannot show
/// a password.
pub(super) fn parse_url(url: &str) -> Result<Opts, Error> {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    let opts = Opts::from_url(&url).map_err(|e| Error::config("storage_url", e))?;
    if opts.db_name().is_none_or(str::is_empty) {
        return Err(Error::config(
            "storage_url",
            "the URL names no database (mysql://user:password@host:port/DATABASE)",
        ));
    }
    Ok(opts)
}

impl Inner {
    /// Runs `fut` (one operation: a connection from the pool and its
    /// statements) within the configured timeout.
    pub(super) async fn timed<T>(
        &self,
        context: &'static str,
        fut: impl Future<Output = mysql_async::Result<T>>,
    ) -> Result<T, Error> {
        bounded(context, self.opts.timeout, fut).await
    }
}

pub(super) async fn bounded<T>(
    context: &'static str,
    limit: Duration,
    fut: impl Future<Output = mysql_async::Result<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::unavailable(context, e)),
        Err(_) => Err(Error::unavailable(context, TimedOut(limit))),
    }
}

/// The database did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer from MySQL within {0:?}")]
struct TimedOut(Duration);

/// Runs one statement and returns how many rows it found (the connection
/// reports found rows, not changed ones).
pub(super) async fn execute<Q: Queryable + Send>(
    q: &mut Q,
    sql: &str,
    params: Params,
) -> mysql_async::Result<u64> {
    let result = q.exec_iter(sql, params).await?;
    let n = result.affected_rows();
    result.drop_result().await?;
    Ok(n)
}

/// Whether `e` is the server refusing a duplicate key.
pub(super) fn is_duplicate(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == ER_DUP_ENTRY)
}

/// Whether `e` is the server ending a statement that met another
/// transaction's row lock (deadlock, or waited too long): nothing changed.
pub(super) fn is_lock_conflict(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s)
        if s.code == ER_LOCK_DEADLOCK || s.code == ER_LOCK_WAIT_TIMEOUT)
}

/// `values` as the named parameters `:p1`, `:p2`, … of the shared
/// statements (`Dialect::param`).
pub(super) fn named<const N: usize>(values: [Value; N]) -> Params {
    Params::Named(
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("p{}", i + 1).into_bytes(), v))
            .collect(),
    )
}

/// A key as the `id` column holds it.
pub(super) fn key_value(key: &StoreKey) -> Value {
    Value::Bytes(key.as_hex().as_bytes().to_vec())
}

/// The parameters of a save: `(key, data, created_at, expires_at, now,
/// timeout_ms, user_id)`, then `extra` ones.
pub(super) fn record_params(key: &StoreKey, record: &Record) -> Params {
    named([
        key_value(key),
        Value::Bytes(record.data.clone()),
        to_sql_ms(record.created).into(),
        to_sql_ms(record.expires).into(),
        to_sql_ms(now_millis()).into(),
        timeout_column(record).into(),
        user_column(record).into(),
    ])
}

/// The record in a row's columns `at` to `at + 4` (`RECORD_COLUMNS`), or
/// why they are not one.
pub(super) fn decode_row(row: &Row, at: usize) -> Result<Record, BoxError> {
    let int = |i: usize| -> Result<Option<i64>, BoxError> {
        match row.as_ref(i) {
            Some(Value::NULL) => Ok(None),
            Some(Value::Int(n)) => Ok(Some(*n)),
            Some(Value::UInt(n)) => Ok(Some(i64::try_from(*n)?)),
            _ => Err(format!("column {i} is not an integer").into()),
        }
    };
    let required = |i: usize| int(i)?.ok_or_else(|| BoxError::from(format!("column {i} is null")));
    let data = match row.as_ref(at) {
        Some(Value::Bytes(b)) => b.as_slice(),
        _ => return Err("data is not bytes".into()),
    };
    let user = match row.as_ref(at + 4) {
        Some(Value::NULL) => None,
        Some(Value::Bytes(b)) => Some(std::str::from_utf8(b)?),
        _ => return Err("user is not text".into()),
    };
    decode(
        data,
        required(at + 1)?,
        required(at + 2)?,
        int(at + 3)?,
        user,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_database_and_either_scheme() {
        for good in ["mysql://root@127.0.0.1:3306/test", "mariadb://u:p@db/app"] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
        for bad in [
            "mysql://root@127.0.0.1:3306",
            "postgres://u@h/db",
            "mysql://u@h/db?nope=1",
        ] {
            let err = parse_url(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Config {
                        setting: "storage_url",
                        ..
                    }
                ),
                "{bad}"
            );
        }
        let err = parse_url("mysql://u:hunter2@h:99999/db").unwrap_err();
        let shown = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn parameters_are_named_in_order() {
        let Params::Named(map) = named([1_i64.into(), "a".into()]) else {
            panic!("named")
        };
        assert_eq!(map.get(b"p1".as_slice()), Some(&Value::Int(1)));
        assert_eq!(
            map.get(b"p2".as_slice()),
            Some(&Value::Bytes(b"a".to_vec()))
        );
    }
}
