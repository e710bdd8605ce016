//! `sessions delete ID`: log one session out everywhere.

use super::IdArgs;

pub(crate) async fn run(args: IdArgs) -> anyhow::Result<()> {
    let (id, store) = args.open().await?;
    if !store.exists(&id).await? {
        anyhow::bail!("no live session {}", id.short());
    }
    store.delete(&id).await?;
    println!("deleted {}", id.short());
    Ok(())
}
