//! `sessions show ID`: one session's data as pretty JSON.

use anyhow::Context;

use super::{when, IdArgs};

pub(crate) async fn run(args: IdArgs) -> anyhow::Result<()> {
    let (key, store) = args.open().await?;
    let record = store
        .load(&key)
        .await?
        .with_context(|| format!("no live session {}", key.short()))?;
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
