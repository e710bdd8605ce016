//! `sessions show ID`: one session's data as pretty JSON. A sealed record
//! (`seal_records`) opens only with the session's id, which no store holds:
//! shown by its store key, it shows its times and nothing of its data.

use anyhow::Context;

use super::{when, IdArgs};

pub(crate) async fn run(args: IdArgs) -> anyhow::Result<()> {
    let (key, store) = args.open().await?;
    let record = store
        .load(&key)
        .await?
        .with_context(|| format!("no live session {}", key.short()))?;
    let times = format!(
        "created {}, expires {}",
        when(record.created),
        when(record.expires)
    );
    let data = match args.id() {
        Some(id) => record
            .open_data(&id)
            .context("the sealed data does not open with this id")?,
        None if record.is_sealed() => {
            println!("{times}");
            eprintln!(
                "the data is sealed: only the session's id (the cookie's value) opens it, \
                 and no store holds it"
            );
            return Ok(());
        }
        None => std::borrow::Cow::Borrowed(&record.data[..]),
    };
    let data: serde_json::Value =
        serde_json::from_slice(&data).context("the stored data is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&data)?);
    eprintln!("{times}");
    Ok(())
}
