//! The MySQL store's schema: its numbered steps, and the migration that
//! applies them once however many instances start together.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use sha2::{Digest, Sha256};

use super::conn::bounded;
use super::Inner;
use crate::store::sql::{Migrations, Table};
use crate::store::Error;

/// The longest a migration may wait for another instance's migration.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);

impl Inner {
    pub(super) async fn migrate(&self) -> Result<u32, Error> {
        let table = &self.opts.table;
        let limit = MIGRATE_TIMEOUT.max(self.opts.timeout);
        let name = lock_name(self.opts.url.db_name().unwrap_or_default(), table);
        let applied = bounded("mysql: migrate", limit, async {
            let mut conn = self.pool.get_conn().await?;
            // MySQL commits each CREATE TABLE by itself: no transaction can
            // make migrations take turns, a named lock does. It is held by
            // this connection until released (or the connection ends).
            let got: Option<Option<i64>> = conn
                .exec_first("SELECT GET_LOCK(?, ?)", (&name, limit.as_secs()))
                .await?;
            if got.flatten() != Some(1) {
                return Err(mysql_async::Error::Other(
                    "another migration held the lock throughout".into(),
                ));
            }
            let outcome = async {
                conn.query_drop(MIGRATIONS.create_bookkeeping(table))
                    .await?;
                let current: Option<Option<i64>> =
                    conn.query_first(MIGRATIONS.read_version(table)).await?;
                let plan = MIGRATIONS.plan(table, current.flatten());
                for statement in &plan.statements {
                    conn.query_drop(statement).await?;
                }
                Ok(plan.applied)
            }
            .await;
            conn.exec_drop("DO RELEASE_LOCK(?)", (&name,)).await?;
            outcome
        })
        .await?;
        MIGRATIONS.applied(table, applied);
        Ok(applied)
    }
}

/// The named lock of a table's migration: one per server, so the database
/// is part of it, hashed to fit the 64 characters a lock name may have.
fn lock_name(database: &str, table: &Table) -> String {
    let digest = Sha256::digest(format!("{database}\0{}", table.text()));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sessions-migrate:{hex}")
}

/// The tables' schema history. Append only: a released step is never
/// edited. Each step is one statement, safe to run again: MySQL ends a
/// transaction at each `CREATE TABLE`, so a step that failed half-way is
/// run again whole. Indexes are declared in their table, since MySQL 8 has
/// no `CREATE INDEX IF NOT EXISTS`.
pub(super) const MIGRATIONS: Migrations = Migrations {
    bookkeeping: "(version INT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE=InnoDB",
    steps: &[
        // Keys are ASCII compared byte by byte, so that the key pager's
        // `id > ?` order is the bytes' order; user ids are compared exactly.
        |t| {
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
                   id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, \
                   data LONGBLOB NOT NULL, \
                   created_at BIGINT NOT NULL, \
                   expires_at BIGINT NOT NULL, \
                   timeout_ms BIGINT NULL, \
                   user_id VARCHAR(256) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, \
                   INDEX {expires} (expires_at), \
                   INDEX {user} (user_id)) ENGINE=InnoDB",
                table = t.sql(""),
                expires = t.index("_expires"),
                user = t.index("_user"),
            )
        },
        |t| {
            format!(
                "CREATE TABLE IF NOT EXISTS {locks} (\
                   id VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, \
                   owner VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
                   lease_expires BIGINT NOT NULL, \
                   INDEX {expires} (lease_expires)) ENGINE=InnoDB",
                locks = t.sql("_locks"),
                expires = t.index("_locks_expires"),
            )
        },
    ],
};
