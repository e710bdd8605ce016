//! The MySQL store's admin side: counting, listing the keys a page at a
//! time, and the clean-up in short transactions.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Row, TxOpts, Value};

use super::conn::{execute, named};
use super::MysqlStore;
use crate::id::StoreKey;
use crate::record::now_millis;
use crate::store::sql::{self, expired_row, in_batches, to_sql_ms, Page, CLEAN_BATCH, KEYS_PAGE};
use crate::store::{Error, OnExpired, SessionAdmin};

#[async_trait]
impl SessionAdmin for MysqlStore {
    async fn count(&self) -> Result<u64, Error> {
        let inner = self.prepared().await?;
        let params = named([to_sql_ms(now_millis()).into()]);
        let n: Option<i64> = inner
            .timed("mysql: count", async {
                let mut conn = inner.pool.get_conn().await?;
                conn.exec_first(&inner.sql.table.count, params).await
            })
            .await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        sql::keys(move |after| self.keys_page(after))
    }

    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error> {
        let inner = self.prepared().await?;
        let now = to_sql_ms(now_millis());
        // One short transaction per batch, on a connection taken afresh:
        // the expired rows are locked (skipping any another clean-up
        // holds), deleted, and reported as exactly the rows removed.
        // Locks are rows of their own table: deleting a session never
        // frees a lock someone holds.
        let removed = in_batches(|| async {
            let rows: Vec<Row> = inner
                .timed("mysql: clean-up", async {
                    let mut conn = inner.pool.get_conn().await?;
                    let mut tx = conn.start_transaction(TxOpts::default()).await?;
                    let batch = named([now.into(), CLEAN_BATCH.into()]);
                    let rows: Vec<Row> = tx.exec(&inner.sql.clean_select, batch).await?;
                    if let Some(first) = rows.first().and_then(|r| r.as_ref(0)) {
                        let mut params = vec![Value::from(now)];
                        params.extend(rows.iter().filter_map(|r| r.as_ref(0).cloned()));
                        params.resize(1 + CLEAN_BATCH as usize, first.clone());
                        tx.exec_drop(&inner.sql.clean_delete, Params::Positional(params))
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(rows)
                })
                .await?;
            for row in &rows {
                let text = |i| match row.as_ref(i) {
                    Some(Value::Bytes(b)) => std::str::from_utf8(b).ok(),
                    _ => None,
                };
                if let Some((key, user)) = expired_row(text(0), text(1)) {
                    expired(key, user);
                }
            }
            Ok(rows.len() as u64)
        })
        .await?;
        // Leases that ran out belong to nobody: their holder died or gave up.
        in_batches(|| {
            inner.timed("mysql: clean-up", async {
                let mut conn = inner.pool.get_conn().await?;
                let batch = named([now.into(), CLEAN_BATCH.into()]);
                execute(&mut conn, &inner.sql.clean_leases, batch).await
            })
        })
        .await?;
        Ok(removed)
    }
}

impl MysqlStore {
    /// One page of live keys after `after`.
    async fn keys_page(&self, after: String) -> Result<Page, Error> {
        let inner = self.prepared().await?;
        let params = named([
            after.into(),
            to_sql_ms(now_millis()).into(),
            KEYS_PAGE.into(),
        ]);
        let rows: Vec<Row> = inner
            .timed("mysql: list", async {
                let mut conn = inner.pool.get_conn().await?;
                conn.exec(&inner.sql.table.keys, params).await
            })
            .await?;
        let column = rows.iter().map(|row| match row.as_ref(0) {
            Some(Value::Bytes(b)) => Some(b.as_slice()),
            _ => None,
        });
        Ok(Page::from_column(&inner.opts.table, column))
    }
}
