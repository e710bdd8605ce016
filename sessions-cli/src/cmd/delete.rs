//! `sessions delete ID`: log one session out everywhere.

use super::{parse_id, StoreArgs};

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
    if !store.exists(&id).await? {
        anyhow::bail!("no live session {}", id.short());
    }
    store.delete(&id).await?;
    println!("deleted {}", id.short());
    Ok(())
}
