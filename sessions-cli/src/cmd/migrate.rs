//! `sessions migrate`: create or upgrade the SQL stores' table.

use anyhow::Context;

use super::StoreArgs;

pub(crate) async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let storage = config.storage();
    let applied = server_sessions::store::migrate(&config)
        .await
        .with_context(|| format!("cannot migrate the {} store", storage.kind.as_str()))?;
    println!(
        "table {:?}: {applied} schema step(s) applied",
        storage.table
    );
    Ok(())
}
