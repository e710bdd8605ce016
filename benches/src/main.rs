//! `sessions-bench`: this project against bare axum and tower-sessions,
//! side by side, under the same load.
//!
//! ```text
//! cargo run --release -p sessions-bench -- [--quick] [--json FILE] [--svg FILE]
//! ```
//!
//! Each system runs as an axum server on a loopback port, on one tokio
//! runtime of this process (for the two-process workload, in two server
//! processes sharing a store). The load comes from another process: the
//! benchmark binary run again as its client ([`client`]), once per round,
//! over keep-alive connections for a fixed time. The systems of a workload
//! and store take turns round by round (A B A B …), so that the noise of a
//! shared machine falls on all of them alike, and the table shows the
//! median of the rounds. See README.md for the workloads.

mod actix;
// The tests' Redis deployments (under `CI=true` a missing `redis-server`
// is a failure, else the rows are skipped).
use sessions_test_support::redis_topology;
mod client;
mod load;
mod memory;
mod report;
mod rounds;
mod server;
mod systems;
mod workloads;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use report::Row;
use rounds::{run_group, Ctx};
use systems::{Env, Store, System, STORES};
use tokio::runtime::Handle;
use workloads::{Sessions, Workload, WORKLOADS};

/// How the run is shaped.
#[derive(Debug)]
struct Options {
    quick: bool,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    rounds: usize,
    round: Duration,
    warmup: Duration,
    /// Sessions for the memory workload.
    sessions: u64,
    workloads: Vec<&'static Workload>,
    /// Stores to run on (all of STORES unless `--stores` says otherwise).
    stores: Vec<Store>,
    /// Systems to run (all unless `--systems` says otherwise).
    systems: Vec<System>,
    server_threads: usize,
    client_threads: usize,
}

const USAGE: &str = "\
usage: sessions-bench [--quick] [--json FILE] [--svg FILE]
                      [--only many,hot,new,slow,slow64,slow256,burst,two,memory]
                      [--stores ram,redis,redis-cluster,postgres,mysql,file,sqlite,memcached]
                      [--systems bare,sessions,tower-sessions,ours-actix,actix-session]
                      [--rounds N] [--seconds S]
                      [--server-threads N] [--client-threads N]

  --quick     3 rounds of 0.4 s per system (full: 7 of 2 s); under 2 minutes
              on 2 cores
  --json      write the results as a JSON list to FILE
  --svg       draw the results as a bar chart to FILE
  --only      run only these workloads (slow: both slow64 and slow256)
  --stores    run only on these stores (bare axum runs with the first)
  --systems   run only these systems
  --server-threads  runtime workers of each server process (default: cores)
  --client-threads  threads of the client process, each a current-thread
              runtime with a share of the connections (default: 1)

Stores: SESSIONS_BENCH_REDIS_URL (default redis://127.0.0.1:6379),
SESSIONS_BENCH_REDIS_CLUSTER_URL (comma-separated node URLs; by default the
benchmark starts a 3-master Cluster on loopback with redis-server) and
SESSIONS_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test)
and SESSIONS_BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306/test); a
store that does not answer is skipped. SESSIONS_BENCH_KEEP=0 runs our stores
without keeping sessions between requests (the default keeps);
SESSIONS_BENCH_PIPELINED=0 without pipelined saves (the default pipelines).";

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut o = Options {
            quick: false,
            json: None,
            svg: None,
            rounds: 0,
            round: Duration::ZERO,
            warmup: Duration::ZERO,
            sessions: 1_000_000,
            workloads: WORKLOADS.iter().collect(),
            stores: STORES.iter().map(|r| r.store).collect(),
            systems: vec![
                System::Bare,
                System::Ours,
                System::TowerSessions,
                System::OursActix,
                System::ActixSession,
            ],
            // The server as a real deployment sets it up: a worker per
            // core. With one server thread, tower-sessions' MemoryStore
            // never interleaves a load and a save and so loses no update;
            // with a thread per core it does.
            server_threads: cores,
            // One thread: the client process then costs the servers as
            // little of the machine as it can while still saturating them
            // (see README.md, "How it measures").
            client_threads: 1,
        };
        let (mut rounds, mut seconds) = (None, None);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--quick" => o.quick = true,
                "--json" => o.json = Some(value()?.into()),
                "--svg" => o.svg = Some(value()?.into()),
                "--rounds" => rounds = Some(value()?.parse::<usize>()?.max(1)),
                "--seconds" => seconds = Some(value()?.parse::<f64>()?),
                "--server-threads" => o.server_threads = value()?.parse::<usize>()?.max(1),
                "--client-threads" => o.client_threads = value()?.parse::<usize>()?.max(1),
                "--only" => {
                    let names = value()?;
                    o.workloads = Vec::new();
                    for n in names.split(',') {
                        let found: Vec<_> = WORKLOADS.iter().filter(|w| w.selected_by(n)).collect();
                        if found.is_empty() {
                            bail!("no workload {n:?}\n{USAGE}");
                        }
                        o.workloads.extend(found);
                    }
                }
                "--stores" => {
                    let names = value()?;
                    o.stores = names
                        .split(',')
                        .map(|n| {
                            Store::from_name(n).with_context(|| format!("no store {n:?}\n{USAGE}"))
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--systems" => {
                    let names = value()?;
                    o.systems = names
                        .split(',')
                        .map(|n| {
                            System::from_flag(n)
                                .with_context(|| format!("no system {n:?}\n{USAGE}"))
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        // Many short rounds rather than a few long ones: the median then
        // shrugs off the bursts of other work on a shared machine.
        let (default_rounds, default_seconds) = if o.quick { (3, 0.4) } else { (7, 2.0) };
        o.rounds = rounds.unwrap_or(default_rounds);
        o.round = Duration::from_secs_f64(seconds.unwrap_or(default_seconds));
        o.warmup = o.round / 2;
        Ok(o)
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(memory::SUBCOMMAND) => return memory::child(&args[1..]),
        Some(client::SUBCOMMAND) => return client::child(),
        Some(server::SUBCOMMAND) => return server::child(&args[1..]),
        _ => {}
    }
    let options = Options::parse(&args)?;
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.server_threads)
        .thread_name("server")
        .enable_all()
        .build()?;
    // Runs the rounds: starts the client processes, reads counters before
    // and after. It waits while a round runs, so it takes no CPU from it.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (rows, notes) = control.block_on(run(server.handle().clone(), &options))?;
    let mode = if options.quick { "--quick" } else { "full" };
    let title = format!(
        "sessions-bench {mode}: {} x {:.1} s rounds per system, {} cores, {} server threads; \
         client: sessions-bench {} in its own process, {} thread{}",
        options.rounds,
        options.round.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.server_threads,
        client::SUBCOMMAND,
        options.client_threads,
        if options.client_threads == 1 { "" } else { "s" },
    );
    println!("{title}\n");
    print!("{}", report::table(&rows));
    for note in &notes {
        println!("note: {note}");
    }
    println!("\ntargets:\n{}", report::targets(&rows));
    println!("finished in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &options.json {
        std::fs::write(path, report::json(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &options.svg {
        std::fs::write(path, report::svg(&rows, &title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    server.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Every workload in turn. Returns the rows and the notes on what was
/// skipped.
async fn run(server: Handle, options: &Options) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    // A Cluster of the benchmark's own unless one was given, up until the
    // run ends (dropping it stops its servers).
    let mut cluster_note = None;
    let cluster = if options.stores.contains(&Store::RedisCluster)
        && std::env::var(systems::REDIS_CLUSTER_URL_VAR).is_err()
    {
        match tokio::task::spawn_blocking(|| redis_topology::Cluster::start(3, 0, 5_000)).await? {
            Ok(cluster) => Some(cluster),
            Err(e) => {
                cluster_note = Some(format!("redis-cluster: no Cluster started: {e}"));
                None
            }
        }
    } else {
        None
    };
    let cluster_url = cluster.as_ref().map(redis_topology::Cluster::url);
    let env = server
        .spawn(async move {
            let mut env = Env::new();
            if let Some(url) = cluster_url {
                env.redis_cluster_url = Some(url);
            }
            env.probe().await;
            env
        })
        .await?;
    let env = Arc::new(env);
    let mut notes: Vec<String> = cluster_note.into_iter().collect();
    // Counts the systems' PostgreSQL connections in pg_stat_activity.
    let pg = match env.unreachable(Store::Postgres) {
        Some(_) => None,
        None => match systems::postgres_pool(&env.postgres_url).await {
            Ok(pool) => Some(pool),
            Err(e) => {
                notes.push(format!("PostgreSQL connections not counted: {e:#}"));
                None
            }
        },
    };
    let mut rows = Vec::new();
    for store in [
        Store::Redis,
        Store::RedisCluster,
        Store::Postgres,
        Store::Mysql,
    ] {
        if let Some(why) = env.unreachable(store) {
            notes.push(format!("{} skipped: unreachable ({why})", store.name()));
        }
    }
    for row in STORES {
        if !row.ours {
            notes.push(format!(
                "{}: sessions not benchmarked yet (turn on `ours` in STORES when the store lands)",
                row.store.name()
            ));
        }
        if !row.tower_sessions {
            notes.push(format!(
                "{}: tower-sessions has no such store",
                row.store.name()
            ));
        }
    }
    let ctx = Ctx {
        server: &server,
        env: &env,
        pg: pg.as_ref(),
        options,
    };
    for workload in &options.workloads {
        if workload.sessions == Sessions::Direct {
            rows.extend(memory_rows(options, &mut notes));
            continue;
        }
        let mut bare_done = !workload.bare;
        for row in STORES {
            if env.unreachable(row.store).is_some()
                || !options.stores.contains(&row.store)
                || (workload.processes > 1 && !row.store.shared_between_processes())
            {
                continue;
            }
            let mut group = Vec::new();
            if !bare_done {
                group.push(System::Bare);
                bare_done = true;
            }
            if row.ours {
                group.push(System::Ours);
            }
            if row.tower_sessions {
                group.push(System::TowerSessions);
            }
            if row.actix {
                group.push(System::OursActix);
                // actix-session's cookie store (the `ram` row) keeps the
                // state in the client, which here sends one cookie for
                // ever: no workload that shares a session or checks its
                // counter applies to it.
                if row.store != Store::Ram || (!workload.check_lost && workload.processes == 1) {
                    group.push(System::ActixSession);
                }
            }
            group.retain(|s| options.systems.contains(s));
            if group.is_empty() {
                continue;
            }
            rows.extend(run_group(&ctx, workload, row.store, &group, &mut notes).await);
        }
    }
    if let Some(pg) = pg {
        pg.close().await;
    }
    env.remove_files();
    drop(cluster);
    Ok((rows, notes))
}

/// The memory workload, each system in a child process of its own.
fn memory_rows(options: &Options, notes: &mut Vec<String>) -> Vec<Row> {
    let sessions = options.sessions;
    let mut rows = Vec::new();
    for system in [System::Ours, System::TowerSessions] {
        if !options.systems.contains(&system) {
            continue;
        }
        eprintln!("memory: {} sessions in {}", sessions, system.name());
        match memory::measure(system, sessions) {
            Ok(m) => {
                let mut row = Row::new(report::MEMORY, "ram", system.name());
                row.rss_mb = Some((m.rss_mb() * 10.0).round() / 10.0);
                row.bytes_per_session = Some(m.overhead_per_session().round());
                rows.push(row);
            }
            Err(e) => notes.push(format!("memory / {}: {e:#}", system.name())),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_short() {
        let o = Options::parse(&["--quick".into()]).unwrap();
        assert_eq!((o.rounds, o.round), (3, Duration::from_millis(400)));
        let o = Options::parse(&["--only".into(), "hot,memory".into()]).unwrap();
        assert_eq!(o.workloads.len(), 2);
        let o = Options::parse(&["--only".into(), "slow".into()]).unwrap();
        assert_eq!(o.workloads.len(), 2);
        let o = Options::parse(&["--only".into(), "slow256".into()]).unwrap();
        assert_eq!(o.workloads[0].connections(), 256);
        assert!(Options::parse(&["--only".into(), "s".into()]).is_err());
        assert!(Options::parse(&["--bogus".into()]).is_err());
    }
}
