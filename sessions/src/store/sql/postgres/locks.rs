//! The PostgreSQL store's steps of the shared lease rules (`store/lease.rs`):
//! one statement each, the save and the lease step in the same statement.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::types::{ToSql, Type};

use super::PostgresStore;
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::lease::{LeaseBackend, Released, Taken};
use crate::store::sql::{check_size, timeout_column, to_sql_ms, user_column};
use crate::store::{Error, Keep, LockWaits, SaveIf};

/// The lease statements, for the rules in `sql/lease.rs`.
#[async_trait]
impl LeaseBackend for PostgresStore {
    async fn lease_site(&self) -> Result<(&Arc<LockWaits>, Duration), Error> {
        let inner = self.prepared().await?;
        Ok((&inner.waits, inner.opts.lease))
    }

    fn on_busy(&self) {
        // A waiter that finds the lock held listens for its release.
        self.listen();
    }

    fn check(&self, record: &Record) -> Result<(), Error> {
        check_size(record)
    }

    fn keep(&self) -> Option<Keep> {
        // Another process's request to give a session back comes as a
        // notification: nothing is kept while none can arrive.
        let keep = self.inner.opts.keep?;
        self.listen();
        self.inner.listening.load(Ordering::Relaxed).then_some(keep)
    }

    async fn take(
        &self,
        key: &StoreKey,
        owner: &str,
        until: Millis,
        load: bool,
    ) -> Result<Taken, Error> {
        let inner = self.prepared().await?;
        let hex = key.as_hex();
        let hex: &str = &hex;
        let (until, now) = (to_sql_ms(until), to_sql_ms(now_millis()));
        let channel: &str = &inner.sql.channel;
        let params: [(&(dyn ToSql + Sync), Type); 5] = [
            (&hex, Type::TEXT),
            (&owner, Type::TEXT),
            (&until, Type::INT8),
            (&now, Type::INT8),
            (&channel, Type::TEXT),
        ];
        let sql = match load {
            true => &inner.sql.take_and_load,
            false => &inner.sql.take,
        };
        let rows = inner.query("postgres: lock", sql, &params).await?;
        let row = rows.first();
        let ours = row
            .map(|row| row.try_get::<_, bool>(0))
            .transpose()
            .map_err(|e| Error::unavailable("postgres: lock", e))?
            .unwrap_or(false);
        if !ours {
            return Ok(Taken::Busy);
        }
        // Without a session row the read's columns are NULL.
        let record = match (load, row) {
            (true, Some(row)) if row.try_get::<_, Option<&[u8]>>(2).ok().flatten().is_some() => {
                inner.record_at(key, row, 2)
            }
            _ => None,
        };
        Ok(Taken::Ours(record))
    }

    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error> {
        let hex = key.as_hex();
        let hex: &str = &hex;
        // A lease that ran out is not renewed, even if nobody took it:
        // a process paused past it may have missed a delete from outside
        // (`lease::end`), and must read the store afresh.
        let (until, now) = (to_sql_ms(until), to_sql_ms(now_millis()));
        let rows = self
            .inner
            .query(
                "postgres: renew lock",
                &self.inner.sql.renew,
                &[
                    (&hex, Type::TEXT),
                    (&owner, Type::TEXT),
                    (&until, Type::INT8),
                    (&now, Type::INT8),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error> {
        let hex = key.as_hex();
        let hex: &str = &hex;
        let channel: &str = &self.inner.sql.channel;
        self.inner
            .query(
                "postgres: unlock",
                &self.inner.sql.release,
                &[
                    (&hex, Type::TEXT),
                    (&owner, Type::TEXT),
                    (&channel, Type::TEXT),
                ],
            )
            .await?;
        Ok(())
    }

    async fn save_and_keep(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        until: Millis,
    ) -> Result<Released, Error> {
        let sql = match only {
            SaveIf::Absent => &self.inner.sql.insert_and_keep,
            SaveIf::Live => &self.inner.sql.update_and_keep,
        };
        let until = to_sql_ms(until);
        self.save_under_lease(sql, key, owner, record, (&until, Type::INT8))
            .await
    }

    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error> {
        let sql = match only {
            SaveIf::Absent => &self.inner.sql.insert_and_release,
            SaveIf::Live => &self.inner.sql.update_and_release,
        };
        let channel: &str = &self.inner.sql.channel;
        self.save_under_lease(sql, key, owner, record, (&channel, Type::TEXT))
            .await
    }
}

impl PostgresStore {
    /// Runs one of the statements that save under the lease, whose `$7` is
    /// `last` (the channel, or the lease's new end).
    async fn save_under_lease(
        &self,
        sql: &str,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        last: (&(dyn ToSql + Sync), Type),
    ) -> Result<Released, Error> {
        let hex = key.as_hex();
        let hex: &str = &hex;
        let (created, expires) = (to_sql_ms(record.created), to_sql_ms(record.expires));
        let (now, timeout) = (to_sql_ms(now_millis()), timeout_column(record));
        let user = user_column(record);
        let rows = self
            .inner
            .query(
                "postgres: save",
                sql,
                &[
                    (&hex, Type::TEXT),
                    (&record.data, Type::BYTEA),
                    (&created, Type::INT8),
                    (&expires, Type::INT8),
                    (&now, Type::INT8),
                    (&owner, Type::TEXT),
                    last,
                    (&timeout, Type::INT8),
                    (&user, Type::TEXT),
                ],
            )
            .await?;
        let counts = rows
            .first()
            .map(|row| {
                Ok::<_, tokio_postgres::Error>((
                    row.try_get::<_, i64>(0)?,
                    row.try_get::<_, i64>(1)?,
                    // The release's notifications: another process waits.
                    row.try_get::<_, i64>(2).unwrap_or(0),
                ))
            })
            .transpose()
            .map_err(|e| Error::unavailable("postgres: save", e))?;
        // Without a direct `LISTEN` (through a pooler) the notification
        // reaches nobody and the other process's waiter polls.
        let polled = !self.inner.listening.load(Ordering::Relaxed);
        Ok(match counts {
            Some((1, written, wanted)) if wanted > 0 && polled => {
                Released::SavedWhileWanted(written == 1)
            }
            Some((1, written, _)) => Released::Saved(written == 1),
            _ => Released::Lost,
        })
    }
}
