//! The memory workload: resident memory after putting many small sessions
//! into a RAM store, each system measured in a fresh process of its own so
//! that nothing else lives on its heap.

use std::collections::HashMap;
use std::process::Command;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::systems::System;

/// The session data: what the counter handler stores.
pub(crate) const DATA: &[u8] = br#"{"counter":1}"#;

/// The hidden subcommand the benchmark runs itself with.
pub(crate) const SUBCOMMAND: &str = "__memory";

/// What a child reports.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Measured {
    pub(crate) sessions: u64,
    /// VmRSS before the first session, in KiB.
    pub(crate) before_kib: u64,
    /// VmRSS after the last one, in KiB.
    pub(crate) after_kib: u64,
}

impl Measured {
    /// Resident memory after the sessions, in MB.
    pub(crate) fn rss_mb(&self) -> f64 {
        self.after_kib as f64 * 1024.0 / 1e6
    }

    /// Growth per session, less the bytes of the session's data.
    pub(crate) fn overhead_per_session(&self) -> f64 {
        let grown = self.after_kib.saturating_sub(self.before_kib) as f64 * 1024.0;
        grown / self.sessions as f64 - DATA.len() as f64
    }
}

/// Runs the benchmark binary again as `__memory SYSTEM N` and reads what
/// it measured.
pub(crate) fn measure(system: System, sessions: u64) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe()?;
    let which = match system {
        System::Ours => "ours",
        System::TowerSessions => "tower-sessions",
        System::Bare => bail!("bare axum has no store"),
        System::OursActix | System::ActixSession => bail!("memory is measured on the axum apps"),
    };
    let out = Command::new(exe)
        .args([SUBCOMMAND, which, &sessions.to_string()])
        .output()
        .context("starting the memory child")?;
    if !out.status.success() {
        bail!(
            "the memory child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The child: fills one store through its API and prints a [`Measured`].
pub(crate) fn child(args: &[String]) -> anyhow::Result<()> {
    let [which, n] = args else {
        bail!("usage: {SUBCOMMAND} ours|tower-sessions N");
    };
    let n: u64 = n.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let measured = match which.as_str() {
        "ours" => runtime.block_on(ours(n))?,
        "tower-sessions" => runtime.block_on(tower(n))?,
        other => bail!("unknown system {other:?}"),
    };
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}

async fn ours(n: u64) -> anyhow::Result<Measured> {
    use server_sessions::store::{MemoryStore, SaveIf, SessionStore};
    // Bounded above the count measured: the default bound (a quarter of
    // memory for 64 KiB sessions) is far below a million small ones.
    let store = MemoryStore::new().with_max_sessions(usize::try_from(n)?);
    let now = server_sessions::store::now_millis();
    // One record, saved under each id: the store keeps its own copy, so
    // what remains on the heap is the store's alone.
    let record = server_sessions::store::Record {
        data: DATA.to_vec(),
        created: now,
        expires: now + 3_600_000,
        timeout: None,
        user: None,
    };
    let before_kib = rss_kib()?;
    for _ in 0..n {
        let key = server_sessions::SessionId::generate()?.store_key();
        if !store.save(&key, &record, SaveIf::Absent).await? {
            bail!("a new id was refused");
        }
    }
    let after_kib = rss_kib()?;
    std::hint::black_box(&store);
    Ok(Measured {
        sessions: n,
        before_kib,
        after_kib,
    })
}

async fn tower(n: u64) -> anyhow::Result<Measured> {
    use tower_sessions::session::{Id, Record};
    use tower_sessions::{MemoryStore, SessionStore};
    let store = MemoryStore::default();
    let data: HashMap<String, serde_json::Value> = serde_json::from_slice(DATA)?;
    // `create` clones the record into the store, as a request's save does.
    let mut record = Record {
        id: Id::default(),
        data,
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    let before_kib = rss_kib()?;
    for _ in 0..n {
        record.id = Id::default();
        store.create(&mut record).await?;
    }
    let after_kib = rss_kib()?;
    std::hint::black_box(&store);
    Ok(Measured {
        sessions: n,
        before_kib,
        after_kib,
    })
}

/// This process's resident set, from /proc/self/status.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_rss() {
        assert!(super::rss_kib().unwrap() > 0);
    }
}
