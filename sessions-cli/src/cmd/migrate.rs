//! `sessions migrate`: create or upgrade the SQL stores' table.

use anyhow::Context;
use sessions::{Config, StorageType};

use super::StoreArgs;

pub(crate) async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let storage = config.storage();
    let applied = match storage.kind {
        StorageType::Postgres => {
            let url = storage
                .url
                .as_deref()
                .context("storage_type = \"postgres\" needs storage_url")?;
            sessions::store::PostgresStore::new(url)?
                .with_table(&storage.table)?
                .with_auto_migrate(false)
                .migrate()
                .await?
        }
        StorageType::Sqlite => {
            let path = storage
                .path
                .as_ref()
                .context("storage_type = \"sqlite\" needs storage_path")?;
            sessions::store::SqliteStore::new(path)
                .with_table(&storage.table)?
                .with_auto_migrate(false)
                .migrate()
                .await?
        }
        other => anyhow::bail!(
            "storage_type = \"{}\" has no schema to migrate",
            other.as_str()
        ),
    };
    println!(
        "table {:?}: {applied} schema step(s) applied",
        storage.table
    );
    Ok(())
}
