//! `sessions-bench`: this project against bare axum and tower-sessions,
//! side by side, under the same load.
//!
//! ```text
//! cd benches && cargo run --release -p sessions-bench -- [--quick] [--json FILE] [--svg FILE]
//! ```
//!
//! Each system runs as an axum server on a loopback port, on one tokio
//! runtime; a hyper client on another runtime (its own threads) drives it
//! over keep-alive connections for a fixed time per round. The systems of a
//! workload and store take turns round by round (A B A B …), so that the
//! noise of a shared machine falls on all of them alike, and the table
//! shows the median of the rounds. See README.md for the workloads.

mod load;
mod memory;
mod report;
mod systems;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use load::Cookies;
use report::Row;
use systems::{Env, Store, System, STORES};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

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
                      [--only many,hot,new,memory] [--stores ram,redis,postgres,file]
                      [--systems bare,sessions,tower-sessions]
                      [--rounds N] [--seconds S]
                      [--server-threads N] [--client-threads N]

  --quick     5 rounds of 0.6 s per system (full: 7 of 2 s); under 3 minutes
              on 2 cores
  --json      write the results as a JSON list to FILE
  --svg       draw the results as a bar chart to FILE
  --only      run only these workloads
  --stores    run only on these stores (bare axum runs with the first)
  --systems   run only these systems

Stores: SESSIONS_BENCH_REDIS_URL (default redis://127.0.0.1:6379) and
SESSIONS_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test);
a store that does not answer is skipped.";

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
            systems: vec![System::Bare, System::Ours, System::TowerSessions],
            // Each runtime as a real deployment sets it up: a worker per
            // core. With one server thread, tower-sessions' MemoryStore
            // never interleaves a load and a save and so loses no update;
            // with a thread per core it does.
            server_threads: cores,
            client_threads: cores,
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
                    o.workloads = names
                        .split(',')
                        .map(|n| {
                            WORKLOADS
                                .iter()
                                .find(|w| w.flag == n)
                                .with_context(|| format!("no workload {n:?}\n{USAGE}"))
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--stores" => {
                    let names = value()?;
                    o.stores = names
                        .split(',')
                        .map(|n| {
                            STORES
                                .iter()
                                .map(|r| r.store)
                                .find(|s| s.name() == n)
                                .with_context(|| format!("no store {n:?}\n{USAGE}"))
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "--systems" => {
                    let names = value()?;
                    o.systems = names
                        .split(',')
                        .map(|n| match n {
                            "bare" => Ok(System::Bare),
                            "sessions" | "ours" => Ok(System::Ours),
                            "tower-sessions" => Ok(System::TowerSessions),
                            _ => bail!("no system {n:?}\n{USAGE}"),
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
        let (default_rounds, default_seconds) = if o.quick { (5, 0.6) } else { (7, 2.0) };
        o.rounds = rounds.unwrap_or(default_rounds);
        o.round = Duration::from_secs_f64(seconds.unwrap_or(default_seconds));
        o.warmup = o.round / 2;
        Ok(o)
    }
}

/// How a workload's clients use cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sessions {
    /// Every connection has a session of its own.
    PerConnection,
    /// All connections share one session.
    Shared,
    /// No cookie: each request makes a session.
    None,
    /// Not an HTTP workload (memory).
    Direct,
}

#[derive(Debug)]
struct Workload {
    name: &'static str,
    flag: &'static str,
    connections: usize,
    sessions: Sessions,
    /// Whether bare axum runs too, as the ceiling.
    bare: bool,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: report::MANY,
        flag: "many",
        connections: 32,
        sessions: Sessions::PerConnection,
        bare: true,
    },
    Workload {
        name: report::HOT,
        flag: "hot",
        connections: 16,
        sessions: Sessions::Shared,
        bare: false,
    },
    Workload {
        name: report::NEW,
        flag: "new",
        connections: 32,
        sessions: Sessions::None,
        bare: true,
    },
    Workload {
        name: report::MEMORY,
        flag: "memory",
        connections: 0,
        sessions: Sessions::Direct,
        bare: false,
    },
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(memory::SUBCOMMAND) {
        return memory::child(&args[1..]);
    }
    let options = Options::parse(&args)?;
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.server_threads)
        .thread_name("server")
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .thread_name("client")
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (rows, notes) = client.block_on(run(server.handle().clone(), &options))?;
    let mode = if options.quick { "--quick" } else { "full" };
    let title = format!(
        "sessions-bench {mode}: {} x {:.1} s rounds per system, {} cores, {} server + {} client threads",
        options.rounds,
        options.round.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.server_threads,
        options.client_threads,
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
    let env = server
        .spawn(async {
            let mut env = Env::new();
            env.probe().await;
            env
        })
        .await?;
    let env = Arc::new(env);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for store in [Store::Redis, Store::Postgres] {
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
    for workload in &options.workloads {
        if workload.sessions == Sessions::Direct {
            rows.extend(memory_rows(options, &mut notes));
            continue;
        }
        let mut bare_done = !workload.bare;
        for row in STORES {
            if env.unreachable(row.store).is_some() || !options.stores.contains(&row.store) {
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
            group.retain(|s| options.systems.contains(s));
            if group.is_empty() {
                continue;
            }
            let got = run_group(
                &server, &env, workload, row.store, &group, options, &mut notes,
            )
            .await;
            rows.extend(got);
        }
    }
    env.remove_files();
    Ok((rows, notes))
}

/// A system serving on a loopback port.
struct Running {
    system: System,
    addr: SocketAddr,
    serve: JoinHandle<()>,
    cleanup: Option<systems::Cleanup>,
    cookies: Cookies,
    /// Cookies handed out to new visitors, for the clean-up.
    handed_out: Vec<String>,
    rounds: Vec<load::Round>,
    lost: u64,
    answered: u64,
}

/// Starts `system` on the server runtime.
async fn start(
    server: &Handle,
    env: &Arc<Env>,
    system: System,
    store: Store,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>, systems::Cleanup)> {
    let env = env.clone();
    server
        .spawn(async move {
            let app = systems::build(system, store, &env).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let serve = tokio::spawn(async move {
                let _ = axum::serve(listener, app.router).await;
            });
            anyhow::Ok((addr, serve, app.cleanup))
        })
        .await?
}

/// One workload on one store: the systems take turns, round by round.
async fn run_group(
    server: &Handle,
    env: &Arc<Env>,
    workload: &Workload,
    store: Store,
    group: &[System],
    options: &Options,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let mut running = Vec::new();
    for &system in group {
        let label = format!("{} / {} / {}", workload.name, store.name(), system.name());
        eprintln!("starting {label}");
        match prepare(server, env, workload, store, system).await {
            Ok(r) => running.push(r),
            Err(e) => notes.push(format!("{label} skipped: {e:#}")),
        }
    }
    for r in &mut running {
        let warmup = load::round(r.addr, workload.connections, &r.cookies, options.warmup).await;
        r.handed_out.extend(warmup.handed_out);
    }
    for i in 0..options.rounds {
        for r in &mut running {
            eprintln!(
                "  round {}/{} {} / {} / {}",
                i + 1,
                options.rounds,
                workload.name,
                store.name(),
                r.system.name()
            );
            if let Err(e) = measure(r, workload, options.round).await {
                notes.push(format!(
                    "{} / {} / {}: round {} failed: {e:#}",
                    workload.name,
                    store.name(),
                    r.system.name(),
                    i + 1
                ));
            }
        }
    }
    let mut rows = Vec::new();
    for mut r in running {
        r.serve.abort();
        let cookies = match &r.cookies {
            Cookies::None => std::mem::take(&mut r.handed_out),
            Cookies::PerConnection(all) => all.clone(),
            Cookies::Shared(one) => vec![one.clone()],
        };
        if let Some(cleanup) = r.cleanup.take() {
            let env2 = env.clone();
            let done = server
                .spawn(async move { cleanup.run(&env2, &cookies).await })
                .await;
            if let Ok(Err(e)) | Err(e) = done.map_err(anyhow::Error::from) {
                notes.push(format!(
                    "{} / {}: clean-up failed: {e:#}",
                    store.name(),
                    r.system.name()
                ));
            }
        }
        rows.push(summarize(&mut r, workload, store));
    }
    rows
}

/// Starts a system and gives it the sessions the workload needs.
async fn prepare(
    server: &Handle,
    env: &Arc<Env>,
    workload: &Workload,
    store: Store,
    system: System,
) -> anyhow::Result<Running> {
    let (addr, serve, cleanup) = start(server, env, system, store).await?;
    let mut running = Running {
        system,
        addr,
        serve,
        cleanup: Some(cleanup),
        cookies: Cookies::None,
        handed_out: Vec::new(),
        rounds: Vec::new(),
        lost: 0,
        answered: 0,
    };
    if system != System::Bare {
        running.cookies = match workload.sessions {
            Sessions::PerConnection => {
                let mut all = Vec::with_capacity(workload.connections);
                for _ in 0..workload.connections {
                    all.push(load::new_session(addr).await?);
                }
                Cookies::PerConnection(all)
            }
            Sessions::Shared => Cookies::Shared(load::new_session(addr).await?),
            Sessions::None | Sessions::Direct => Cookies::None,
        };
    }
    Ok(running)
}

/// One measured round; for the hot session, the counter before and after.
async fn measure(r: &mut Running, workload: &Workload, duration: Duration) -> anyhow::Result<()> {
    let shared = match &r.cookies {
        Cookies::Shared(c) if workload.sessions == Sessions::Shared => Some(c.clone()),
        _ => None,
    };
    let before = match &shared {
        Some(c) => Some(load::read_counter(r.addr, c).await?),
        None => None,
    };
    let mut round = load::round(r.addr, workload.connections, &r.cookies, duration).await;
    r.handed_out.append(&mut round.handed_out);
    if let (Some(c), Some(before)) = (&shared, before) {
        let after = load::read_counter(r.addr, c).await?;
        let counted = after.saturating_sub(before);
        r.lost += round.ok_total.saturating_sub(counted);
        r.answered += round.ok_total;
    }
    r.rounds.push(round);
    Ok(())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn summarize(r: &mut Running, workload: &Workload, store: Store) -> Row {
    let store_name = if r.system == System::Bare {
        "none"
    } else {
        store.name()
    };
    let mut row = Row::new(workload.name, store_name, r.system.name());
    row.rps = median(r.rounds.iter().map(load::Round::rps).collect()).map(|v| v.round());
    row.p99_ms = median(
        r.rounds
            .iter_mut()
            .filter_map(load::Round::p99_ms)
            .collect(),
    )
    .map(|v| (v * 1000.0).round() / 1000.0);
    row.errors = r.rounds.iter().map(|x| x.errors).sum();
    if workload.sessions == Sessions::Shared && !r.rounds.is_empty() {
        row.lost_updates = Some(r.lost);
        row.answered = Some(r.answered);
    }
    row
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
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn quick_is_short() {
        let o = Options::parse(&["--quick".into()]).unwrap();
        assert_eq!((o.rounds, o.round), (5, Duration::from_millis(600)));
        let o = Options::parse(&["--only".into(), "hot,memory".into()]).unwrap();
        assert_eq!(o.workloads.len(), 2);
        assert!(Options::parse(&["--bogus".into()]).is_err());
    }
}
