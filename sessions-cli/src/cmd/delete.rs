//! `sessions delete ID`: log one session out everywhere.

use super::IdArgs;

pub(crate) async fn run(args: IdArgs) -> anyhow::Result<()> {
    let (key, store) = args.open().await?;
    if !store.exists(&key).await? {
        anyhow::bail!("no live session {}", key.short());
    }
    store.end(&key).await?;
    println!("deleted {}", key.short());
    Ok(())
}
