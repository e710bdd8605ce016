//! `sessions show ID`: one session's data as pretty JSON.

use anyhow::Context;

use super::{parse_id, when, StoreArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The session id (40 hex characters).
    id: String,
    #[command(flatten)]
    store: StoreArgs,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let id = parse_id(&args.id)?;
    let store = args.store.open().await?;
    let record = store
        .load(&id)
        .await?
        .with_context(|| format!("no live session {}", id.short()))?;
    let data: serde_json::Value =
        serde_json::from_slice(&record.data).context("the stored data is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&data)?);
    eprintln!(
        "created {}, expires {}",
        when(record.created),
        when(record.expires)
    );
    Ok(())
}
