//! `sessions list`: one line per stored session, or per session of one
//! user (`--user`).

use std::io::Write;

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::json;
use server_sessions::UserId;

use super::{millis_at as ms, when, StoreArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Print full store keys (by default their first 8 characters, as in
    /// the logs). A key grants nothing: only the id it was hashed from
    /// opens the session, and no store holds that (`--show-ids` is the
    /// same: the full key is what names a session outside its cookie).
    #[arg(long, alias = "show-ids")]
    full: bool,
    /// Only the sessions of this user (as the app passed it to
    /// `Session::set_user`), with when each was last used.
    #[arg(long)]
    user: Option<String>,
    /// One JSON object per line, for scripts.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(user) = &args.user {
        return list_user(&args, user).await;
    }
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

/// `list --user`: that user's sessions, most recently used first.
async fn list_user(args: &Args, user: &str) -> anyhow::Result<()> {
    let user: UserId = user.parse().context("--user")?;
    let config = args.store.load()?;
    let store = args.store.open().await?;
    let timeout = config.resolve("/").timeout;
    let listed = server_sessions::store::user_sessions(&*store, &user, timeout).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let width = width(args.full);
    if !args.json {
        writeln!(
            out,
            "{:<width$}  {:<29}  {:<29}  {:<29}",
            "key", "created", "last used", "expires"
        )?;
    }
    for s in &listed {
        let shown = if args.full {
            s.key.to_string()
        } else {
            s.key.short().to_string()
        };
        if args.json {
            let line = json!({
                "key": shown,
                "user": user.as_str(),
                "created_ms": ms(s.created),
                "last_used_ms": ms(s.last_used),
                "expires_ms": ms(s.expires),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{shown:<width$}  {:<29}  {:<29}  {:<29}",
                when(ms(s.created)),
                when(ms(s.last_used)),
                when(ms(s.expires)),
            )?;
        }
    }
    out.flush()?;
    if !args.json {
        eprintln!("{} session(s) of {user}", listed.len());
    }
    Ok(())
}
