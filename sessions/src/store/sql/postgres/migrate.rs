//! The PostgreSQL store's schema: its numbered steps, and the migration
//! that applies them once however many instances start together.

use std::time::Duration;

use tokio_postgres::types::Type;

use super::conn::bounded;
use super::statements::fnv1a;
use super::Inner;
use crate::store::sql::Migrations;
use crate::store::Error;

/// The longest a migration may wait for another instance's migration.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);

impl Inner {
    pub(super) async fn migrate(&self) -> Result<u32, Error> {
        let mut conn = self.conn().await?;
        let key = fnv1a(b"sessions-migrate:", self.opts.table.text().as_bytes()) as i64;
        let table = &self.opts.table;
        let applied = bounded(
            "postgres: migrate",
            MIGRATE_TIMEOUT.max(self.opts.timeout),
            async {
                let tx = conn.client_mut().transaction().await?;
                // Held to the end of the transaction: concurrent migrations
                // queue here, and each then sees the versions committed
                // before it.
                tx.query_typed("SELECT pg_advisory_xact_lock($1)", &[(&key, Type::INT8)])
                    .await?;
                tx.batch_execute(&MIGRATIONS.create_bookkeeping(table))
                    .await?;
                let current: Option<i32> = match tx
                    .query_typed(&MIGRATIONS.read_version(table), &[])
                    .await?
                    .first()
                {
                    Some(row) => row.try_get(0)?,
                    None => None,
                };
                let plan = MIGRATIONS.plan(table, current.map(i64::from));
                for statement in &plan.statements {
                    tx.batch_execute(statement).await?;
                }
                tx.commit().await?;
                Ok(plan.applied)
            },
        )
        .await?;
        conn.release();
        MIGRATIONS.applied(table, applied);
        Ok(applied)
    }
}

/// The table's schema history. Append only: a released step is never
/// edited.
const MIGRATIONS: Migrations = Migrations {
    bookkeeping: "(version integer PRIMARY KEY, applied_at bigint NOT NULL)",
    steps: &[
        |t| {
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
               id text COLLATE \"C\" PRIMARY KEY, \
               data bytea NOT NULL, \
               created_at bigint NOT NULL, \
               expires_at bigint NOT NULL); \
             CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);",
                table = t.sql(""),
                index = t.index("_expires"),
            )
        },
        |t| {
            // Version 2: locks are lease rows instead of advisory locks, which
            // held a pooled connection for a whole request.
            format!(
                "CREATE TABLE IF NOT EXISTS {locks} (\
               id text COLLATE \"C\" PRIMARY KEY, \
               owner text NOT NULL, \
               lease_expires bigint NOT NULL, \
               waiters boolean NOT NULL DEFAULT false)",
                locks = t.sql("_locks"),
            )
        },
        // Version 3: a session's own idle timeout (`Session::set_timeout`).
        |t| {
            format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS timeout_ms bigint",
                t.sql("")
            )
        },
        // Version 4: the user a session belongs to, indexed: the user index.
        |t| {
            format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS user_id text; \
                 CREATE INDEX IF NOT EXISTS {index} ON {table} (user_id) \
                 WHERE user_id IS NOT NULL;",
                table = t.sql(""),
                index = t.index("_user"),
            )
        },
    ],
};
