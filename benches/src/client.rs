//! The load generator, in a process of its own: the benchmark binary run
//! again as `sessions-bench __client`, reading a [`Plan`] as JSON on stdin
//! and printing a [`Report`] as JSON on stdout.
//!
//! A separate process, because a client on the servers' process hides
//! their cost: it shares their allocator, their scheduler's view of the
//! cores and their page cache of hot code, and the kernel schedules it as
//! one program with them. The figures a user reads must be those an
//! outside client sees (with wrk, the RAM store measured 0.61–0.68× bare
//! axum where an in-process client showed 0.85–0.89×).
//!
//! The client has a small runtime of its own: `threads` OS threads, each
//! with a current-thread tokio runtime and a share of the visitors, as wrk
//! runs one event loop per thread. Connections are opened before the clock
//! starts.
//!
//! By hand (a server of the benchmark must be listening):
//!
//! ```text
//! echo '{"addrs":["127.0.0.1:8080"],"path":"/","seconds":1.0,"visitors":[null],"burst":1,"threads":1}' \
//!   | target/release/sessions-bench __client
//! ```

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::load::{self, Slot, Tally};

/// The hidden subcommand the benchmark runs its client with.
pub(crate) const SUBCOMMAND: &str = "__client";

/// What the client is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// The servers. Connection `i` of all the visitors' connections, counted
    /// across visitors, goes to `addrs[i % addrs.len()]`.
    pub(crate) addrs: Vec<SocketAddr>,
    /// What each request asks for.
    pub(crate) path: String,
    /// How long the round lasts, in seconds.
    pub(crate) seconds: f64,
    /// One entry per visitor: the cookie it sends (`name=value`), or none
    /// for a new visitor on every request.
    pub(crate) visitors: Vec<Option<String>>,
    /// Connections per visitor, all sending at once (1: one request after
    /// another).
    pub(crate) burst: usize,
    /// Client threads.
    pub(crate) threads: usize,
}

/// What the client measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    /// 200 answers received within the round.
    pub(crate) ok_in_time: u64,
    /// All 200 answers, including those to requests running at the end.
    pub(crate) ok_total: u64,
    /// Other statuses and failed connections.
    pub(crate) errors: u64,
    /// Requests (or bursts) that completed within the round.
    pub(crate) samples: u64,
    /// Their median time, from sending until the last answer, in ms.
    pub(crate) p50_ms: Option<f64>,
    /// Their 99th percentile, in ms.
    pub(crate) p99_ms: Option<f64>,
    /// The round's length, in seconds.
    pub(crate) seconds: f64,
    /// CPU time the client process used during the round (user and
    /// system, all threads), in seconds: near `threads × seconds`, the
    /// client and not the server set the pace.
    pub(crate) cpu_seconds: Option<f64>,
    /// Cookies handed out to visitors without one.
    pub(crate) handed_out: Vec<String>,
}

impl Report {
    /// 200 answers per second.
    pub(crate) fn rps(&self) -> f64 {
        self.ok_in_time as f64 / self.seconds
    }
}

/// Runs `plan` in a client process and reads its report.
pub(crate) async fn measure(plan: &Plan) -> anyhow::Result<Report> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the client process")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    stdin.write_all(&serde_json::to_vec(plan)?).await?;
    drop(stdin);
    // Generous: connecting and reporting take little, but a loaded machine
    // can stall a process for seconds.
    let limit = Duration::from_secs_f64(plan.seconds) + Duration::from_secs(60);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .context("the client process did not finish")??;
    if !out.status.success() {
        bail!(
            "the client process failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the client's report")
}

/// The client process: reads a plan on stdin, prints a report on stdout.
pub(crate) fn child() -> anyhow::Result<()> {
    let plan: Plan =
        serde_json::from_reader(std::io::stdin().lock()).context("reading the plan")?;
    let report = run(&plan)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn run(plan: &Plan) -> anyhow::Result<Report> {
    if plan.addrs.is_empty() || plan.visitors.is_empty() || plan.burst == 0 {
        bail!("a plan needs servers, visitors and connections");
    }
    let duration = Duration::from_secs_f64(plan.seconds);
    let threads = plan.threads.clamp(1, plan.visitors.len());
    // Every thread connects first; the clock starts when all have (and
    // this thread has noted the CPU time so far).
    let ready = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let plan = plan.clone();
            let ready = ready.clone();
            std::thread::Builder::new()
                .name(format!("client-{t}"))
                .spawn(move || worker(&plan, t, threads, &ready, duration))
        })
        .collect::<Result<_, _>>()?;
    let cpu_start = {
        // The threads start the clock together once all have connected.
        ready.wait();
        cpu_seconds()
    };
    let mut total = Tally::default();
    for w in workers {
        let tally = w
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        total.add(tally);
    }
    let cpu = match (cpu_start, cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let (p50_ms, p99_ms) = (
        percentile_ms(&mut total.samples, 50),
        percentile_ms(&mut total.samples, 99),
    );
    Ok(Report {
        ok_in_time: total.ok_in_time,
        ok_total: total.ok_total,
        errors: total.errors,
        samples: total.samples.len() as u64,
        p50_ms,
        p99_ms,
        seconds: plan.seconds,
        cpu_seconds: cpu,
        handed_out: total.handed_out,
    })
}

/// This process's CPU time (user and system, all threads) from
/// /proc/self/stat, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after it do not.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // In USER_HZ, which Linux fixes at 100 for user space.
    Some((utime + stime) / 100.0)
}

/// One client thread: visitors `t`, `t + threads`, … of the plan.
fn worker(
    plan: &Plan,
    t: usize,
    threads: usize,
    ready: &Barrier,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mine: Vec<usize> = (t..plan.visitors.len()).step_by(threads).collect();
    let opened = runtime.block_on(async {
        let mut visitors = Vec::with_capacity(mine.len());
        for &v in &mine {
            let mut slots = Vec::with_capacity(plan.burst);
            for j in 0..plan.burst {
                let addr = plan.addrs[(v * plan.burst + j) % plan.addrs.len()];
                slots.push(Slot::open(addr).await?);
            }
            visitors.push((slots, plan.visitors[v].clone()));
        }
        anyhow::Ok(visitors)
    });
    // Past the barrier even on failure, or the other threads would wait
    // for this one for ever.
    ready.wait();
    let mut visitors = opened?;
    let deadline = Instant::now() + duration;
    let tallies =
        runtime.block_on(futures_util::future::join_all(visitors.iter_mut().map(
            |(slots, cookie)| load::visit(slots, &plan.path, cookie.as_deref(), deadline),
        )));
    let mut total = Tally::default();
    for tally in tallies {
        total.add(tally);
    }
    Ok(total)
}

/// The `pct`-th percentile of `samples` (microseconds), in milliseconds.
fn percentile_ms(samples: &mut [u32], pct: usize) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let k = (samples.len() * pct).div_ceil(100).max(1) - 1;
    let (_, v, _) = samples.select_nth_unstable(k);
    Some(f64::from(*v) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time() {
        assert!(cpu_seconds().is_some());
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile_ms(&mut [], 99), None);
        let mut v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&mut v, 50), Some(50.0));
        assert_eq!(percentile_ms(&mut v, 99), Some(99.0));
        assert_eq!(percentile_ms(&mut [7000], 99), Some(7.0));
    }

    #[test]
    fn plan_round_trips() {
        let plan = Plan {
            addrs: vec!["127.0.0.1:1".parse().unwrap()],
            path: "/".into(),
            seconds: 0.5,
            visitors: vec![None, Some("s=1".into())],
            burst: 6,
            threads: 1,
        };
        let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!((back.visitors.len(), back.burst), (2, 6));
        assert_eq!(back.visitors[1].as_deref(), Some("s=1"));
    }
}
