//! `sessions clean`: remove expired sessions now.

use std::io::IsTerminal;

use super::StoreArgs;

pub(crate) async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let store = args.open().await?;
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        eprint!("cleaning up expired sessions…");
    }
    let removed = store.clean_up().await;
    if terminal {
        eprint!("\r\x1b[K");
    }
    println!("removed {} expired session(s)", removed?);
    Ok(())
}
