//! `sessions clean`: remove expired sessions now, showing how it goes: a
//! progress line with the count and the rate on a terminal, a plain line
//! every 10,000 sessions when piped, and one line at the end either way.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::StoreArgs;

/// How often a piped run says how far it got.
const PLAIN_EVERY: u64 = 10_000;

pub(crate) async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let store = args.open().await?;
    let progress = Progress::new(std::io::stderr().is_terminal());
    let started = Instant::now();
    let removed = store.clean_up_and_report(&|_, _| progress.tick()).await;
    progress.finish();
    let removed = removed?;
    println!(
        "removed {removed} expired session(s) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What `clean` shows while it works.
enum Progress {
    /// A line redrawn in place on the terminal (stderr).
    Bar(ProgressBar),
    /// Plain lines on stderr, for logs and pipes.
    Plain(AtomicU64),
}

impl Progress {
    fn new(terminal: bool) -> Self {
        if !terminal {
            return Progress::Plain(AtomicU64::new(0));
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} removing expired sessions: {pos} ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress::Bar(bar)
    }

    /// One more session removed.
    fn tick(&self) {
        match self {
            Progress::Bar(bar) => bar.inc(1),
            Progress::Plain(count) => {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                if n % PLAIN_EVERY == 0 {
                    eprintln!("removed {n} expired sessions so far");
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
