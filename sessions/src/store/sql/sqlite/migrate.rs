//! The SQLite store's schema: its numbered steps, and the migration that
//! applies them, one process after the other.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::sql::{Migrations, Table};

pub(super) fn migrate(conn: &mut Connection, table: &Table) -> rusqlite::Result<u32> {
    // IMMEDIATE takes the write lock first: migrations of several processes
    // run one after the other, each seeing the versions the others recorded.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&MIGRATIONS.create_bookkeeping(table))?;
    let current: Option<i64> = tx.query_row(&MIGRATIONS.read_version(table), [], |r| r.get(0))?;
    let plan = MIGRATIONS.plan(table, current);
    for statement in &plan.statements {
        tx.execute_batch(statement)?;
    }
    tx.commit()?;
    Ok(plan.applied)
}

/// The tables' schema history. Append only: a released step is never
/// edited.
pub(super) const MIGRATIONS: Migrations = Migrations {
    bookkeeping: "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT",
    steps: &[
        |t| {
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
               id TEXT PRIMARY KEY NOT NULL, \
               data BLOB NOT NULL, \
               created_at INTEGER NOT NULL, \
               expires_at INTEGER NOT NULL) STRICT; \
             CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at); \
             CREATE TABLE IF NOT EXISTS {locks} (\
               id TEXT PRIMARY KEY NOT NULL, \
               owner TEXT NOT NULL, \
               lease_expires INTEGER NOT NULL) STRICT;",
                table = t.sql(""),
                index = t.index("_expires"),
                locks = t.sql("_locks"),
            )
        },
        // Version 2: a session's own idle timeout (`Session::set_timeout`).
        |t| format!("ALTER TABLE {} ADD COLUMN timeout_ms INTEGER", t.sql("")),
        // Version 3: the user a session belongs to, indexed: the user index.
        |t| {
            format!(
                "ALTER TABLE {table} ADD COLUMN user_id TEXT; \
                 CREATE INDEX IF NOT EXISTS {index} ON {table} (user_id) \
                 WHERE user_id IS NOT NULL;",
                table = t.sql(""),
                index = t.index("_user"),
            )
        },
    ],
};
