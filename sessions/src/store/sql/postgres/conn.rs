//! The PostgreSQL store's connections: taken from the pool for one
//! statement, given back only when the statement is done, and every wait on
//! the database bounded.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::Inner;
use crate::store::Error;

impl Inner {
    pub(super) async fn conn(&self) -> Result<Conn, Error> {
        match self.pool.get().await {
            Ok(obj) => Ok(Conn(Some(obj))),
            Err(e) => Err(Error::unavailable("postgres: no connection", e)),
        }
    }

    /// Bounds a query by the configured timeout.
    pub(super) async fn timed<T>(
        &self,
        context: &'static str,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Error> {
        bounded(context, self.opts.timeout, fut).await
    }

    /// Runs one statement on a pooled connection (`naming.rs`: prepared or
    /// unnamed) and returns its rows.
    pub(super) async fn query(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        Ok(self.run(context, sql, params).await?.0)
    }

    /// Runs one statement as [`query`](Self::query) does and returns how
    /// many rows it changed.
    pub(super) async fn execute(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, Error> {
        Ok(self.run(context, sql, params).await?.1)
    }
}

pub(super) async fn bounded<T>(
    context: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::unavailable(context, e)),
        Err(_) => Err(Error::unavailable(context, TimedOut(limit))),
    }
}

/// The database did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer from PostgreSQL within {0:?}")]
struct TimedOut(Duration);

/// A pooled connection that goes back to the pool only when the code using
/// it says so with [`release`](Conn::release). Dropped otherwise — after an
/// error, a timeout or a cancelled future — it is closed instead: it may be
/// mid-answer or inside a transaction, and closing it makes the server roll
/// that back.
pub(super) struct Conn(Option<Object>);

impl Conn {
    pub(super) fn client(&self) -> &Object {
        self.0.as_ref().expect("a connection until released")
    }

    pub(super) fn client_mut(&mut self) -> &mut Object {
        self.0.as_mut().expect("a connection until released")
    }

    pub(super) fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            // Detached from the pool and dropped: the socket closes.
            drop(Object::take(obj));
        }
    }
}
