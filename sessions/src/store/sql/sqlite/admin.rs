//! The SQLite store's admin side: counting, listing the keys a page at a
//! time, and the clean-up in short transactions.

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use rusqlite::types::ValueRef;

use super::statements::Sql;
use super::SqliteStore;
use crate::id::StoreKey;
use crate::record::now_millis;
use crate::store::sql::{self, expired_row, in_batches, to_sql_ms, Page, CLEAN_BATCH, KEYS_PAGE};
use crate::store::{Error, OnExpired, SessionAdmin};

#[async_trait]
impl SessionAdmin for SqliteStore {
    async fn count(&self) -> Result<u64, Error> {
        self.prepared().await?;
        let n: i64 = self
            .blocking("sqlite: count", |inner, conn| {
                conn.prepare_cached(&inner.sql.table.count)?
                    .query_row([to_sql_ms(now_millis())], |r| r.get(0))
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        sql::keys(move |after| self.keys_page(after))
    }

    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error> {
        self.prepared().await?;
        let now = to_sql_ms(now_millis());
        // One short transaction per batch, releasing the connection between
        // them, so requests go on while a large backlog is removed.
        let batch = |statement: fn(&Sql) -> &str| {
            self.blocking("sqlite: clean-up", move |inner, conn| {
                let mut st = conn.prepare_cached(statement(&inner.sql))?;
                st.execute((now, CLEAN_BATCH)).map(|n| n as u64)
            })
        };
        let removed = in_batches(|| async {
            let gone = self
                .blocking("sqlite: clean-up", move |inner, conn| {
                    let mut st = conn.prepare_cached(&inner.sql.clean)?;
                    let mut rows = st.query((now, CLEAN_BATCH))?;
                    let mut gone = Vec::new();
                    while let Some(row) = rows.next()? {
                        let id: Option<String> = row.get(0).ok();
                        let user: Option<String> = row.get(1).ok().flatten();
                        gone.push((id, user));
                    }
                    Ok(gone)
                })
                .await?;
            for (id, user) in &gone {
                if let Some((key, user)) = expired_row(id.as_deref(), user.as_deref()) {
                    expired(key, user);
                }
            }
            Ok(gone.len() as u64)
        })
        .await?;
        // Leases that ran out belong to nobody: their holder died or gave up.
        in_batches(|| batch(|sql| &sql.clean_leases)).await?;
        Ok(removed)
    }
}

impl SqliteStore {
    /// One page of live keys after `after`.
    async fn keys_page(&self, after: String) -> Result<Page, Error> {
        self.prepared().await?;
        self.blocking("sqlite: list", move |inner, conn| {
            let mut st = conn.prepare_cached(&inner.sql.table.keys)?;
            let mut rows = st.query((&after, to_sql_ms(now_millis()), KEYS_PAGE))?;
            let mut column = Vec::new();
            while let Some(row) = rows.next()? {
                column.push(match row.get_ref(0)? {
                    ValueRef::Text(text) => Some(text.to_vec()),
                    _ => None,
                });
            }
            Ok(Page::from_column(
                &inner.opts.table,
                column.iter().map(Option::as_deref),
            ))
        })
        .await
    }
}
