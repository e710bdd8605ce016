//! `sessions logout --user NAME`: end every session of one user (after a
//! password change, or to lock an account out).

use anyhow::Context;
use server_sessions::UserId;

use super::StoreArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The user whose sessions end (as the app passed it to
    /// `Session::set_user`).
    #[arg(long)]
    user: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// Prints how many sessions ended; none is not an error (the user may
/// have logged out already).
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let user: UserId = args.user.parse().context("--user")?;
    let store = args.store.open().await?;
    let ended = server_sessions::store::end_user_sessions(&*store, &user, None).await?;
    println!("ended {ended} session(s) of {user}");
    Ok(())
}
