//! `sessions list`: one line per stored session.

use std::io::Write;

use futures_util::StreamExt;
use serde_json::json;

use super::{when, StoreArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Print full store keys (by default their first 8 characters, as in
    /// the logs). A key grants nothing: only the id it was hashed from
    /// opens the session, and no store holds that.
    #[arg(long)]
    full: bool,
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
            "{:<width$}  {:<29}  {:<29}  {:>7}",
            "key",
            "created",
            "expires",
            "bytes",
            width = width(args.full)
        )?;
    }
    let mut keys = store.keys();
    let mut listed = 0u64;
    while let Some(key) = keys.next().await {
        let key = key?;
        // A session that expired or vanished since it was listed is skipped.
        let Some(record) = store.load(&key).await? else {
            continue;
        };
        listed += 1;
        let shown = if args.full {
            key.to_string()
        } else {
            key.short().to_string()
        };
        if args.json {
            let line = json!({
                "key": shown,
                "created_ms": record.created,
                "expires_ms": record.expires,
                "bytes": record.data.len(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{shown:<width$}  {:<29}  {:<29}  {:>7}",
                when(record.created),
                when(record.expires),
                record.data.len(),
                width = width(args.full)
            )?;
        }
    }
    out.flush()?;
    if !args.json {
        eprintln!("{listed} session(s)");
    }
    Ok(())
}

/// The key column's width: a full key, or its short form.
fn width(full: bool) -> usize {
    if full {
        64
    } else {
        9
    }
}
