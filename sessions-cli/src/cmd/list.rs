//! `sessions list`: one line per stored session.

use std::io::Write;

use futures_util::StreamExt;
use serde_json::json;

use super::{when, StoreArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Print full ids (by default only a short hash, as in the logs).
    #[arg(long)]
    show_ids: bool,
    /// One JSON object per line, for scripts.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if !args.json {
        writeln!(
            out,
            "{:<40}  {:<29}  {:<29}  {:>7}",
            "id", "created", "expires", "bytes"
        )?;
    }
    let mut ids = store.ids();
    let mut listed = 0u64;
    while let Some(id) = ids.next().await {
        let id = id?;
        // A session that expired or vanished since it was listed is skipped.
        let Some(record) = store.load(&id).await? else {
            continue;
        };
        listed += 1;
        let shown = if args.show_ids {
            id.to_string()
        } else {
            id.short().to_string()
        };
        if args.json {
            let line = json!({
                "id": shown,
                "created_ms": record.created,
                "expires_ms": record.expires,
                "bytes": record.data.len(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{shown:<40}  {:<29}  {:<29}  {:>7}",
                when(record.created),
                when(record.expires),
                record.data.len()
            )?;
        }
    }
    out.flush()?;
    if !args.json {
        eprintln!("{listed} session(s)");
    }
    Ok(())
}
