//! The PostgreSQL store's admin side: counting, listing the keys a page at
//! a time, and the clean-up in short batches.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use tokio_postgres::types::{ToSql, Type};

use super::PostgresStore;
use crate::id::StoreKey;
use crate::record::now_millis;
use crate::store::sql::{self, expired_row, in_batches, to_sql_ms, Page, CLEAN_BATCH, KEYS_PAGE};
use crate::store::{Error, OnExpired, SessionAdmin};

#[async_trait]
impl SessionAdmin for PostgresStore {
    async fn count(&self) -> Result<u64, Error> {
        let inner = self.prepared().await?;
        let now = to_sql_ms(now_millis());
        let rows = inner
            .query(
                "postgres: count",
                &inner.sql.table.count,
                &[(&now, Type::INT8)],
            )
            .await?;
        let n: i64 = match rows.first() {
            Some(row) => row
                .try_get(0)
                .map_err(|e| Error::unavailable("postgres: count", e))?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        sql::keys(move |after| self.keys_page(after))
    }

    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error> {
        let inner = self.prepared().await?;
        let now = to_sql_ms(now_millis());
        // One short statement per batch, each on a connection taken afresh,
        // so a large backlog neither holds row locks for long nor keeps a
        // connection from the requests. Locks are rows of their own table:
        // deleting an expired session never frees or breaks a held lock,
        // and a request that still holds one finds its row gone and does
        // not save (the `Live` precondition). Lock rows whose lease ran out
        // are taken over anyway; removing them only keeps the table small.
        let params: [(&(dyn ToSql + Sync), Type); 2] =
            [(&now, Type::INT8), (&CLEAN_BATCH, Type::INT8)];
        let removed = in_batches(|| async {
            let rows = inner
                .query("postgres: clean-up", &inner.sql.clean, &params)
                .await?;
            for row in &rows {
                let (id, user) = (row.try_get(0).ok(), row.try_get(1).ok().flatten());
                if let Some((key, user)) = expired_row(id, user) {
                    expired(key, user);
                }
            }
            Ok(rows.len() as u64)
        })
        .await?;
        in_batches(|| inner.execute("postgres: clean-up", &inner.sql.clean_locks, &params)).await?;
        Ok(removed)
    }
}

impl PostgresStore {
    /// One page of live keys after `after`.
    async fn keys_page(&self, after: String) -> Result<Page, Error> {
        let inner = self.prepared().await?;
        let now = to_sql_ms(now_millis());
        let after: &str = &after;
        let rows = inner
            .query(
                "postgres: list",
                &inner.sql.table.keys,
                &[
                    (&after, Type::TEXT),
                    (&now, Type::INT8),
                    (&KEYS_PAGE, Type::INT8),
                ],
            )
            .await?;
        let column = rows
            .iter()
            .map(|row| row.try_get::<_, &str>(0).ok().map(str::as_bytes));
        Ok(Page::from_column(&inner.opts.table, column))
    }
}
