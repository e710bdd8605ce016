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

// The tests' Redis deployments, and the CI rule they follow (a missing
// `redis-server` is a failure under `CI=true`, else the rows are skipped).
#[path = "../../sessions/tests/common/ci.rs"]
mod ci;
mod client;
mod load;
mod memory;
#[allow(dead_code, unreachable_pub)]
#[path = "../../sessions/tests/common/redis_topology.rs"]
mod redis_topology;
mod report;
mod server;
mod systems;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{StreamExt, TryStreamExt};
use report::Row;
use server::ServerProcess;
use systems::{Env, Store, System, STORES};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tower_sessions_sqlx_store::sqlx;

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
                      [--stores ram,redis,redis-cluster,postgres,file,sqlite,memcached]
                      [--systems bare,sessions,tower-sessions]
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

/// How a workload's visitors use cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sessions {
    /// Every visitor has a session of its own.
    PerVisitor,
    /// All visitors share one session.
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
    /// Visitors, each on `burst` connections of its own.
    visitors: usize,
    /// Connections per visitor, all sending at once; 1 is a client sending
    /// one request after another.
    burst: usize,
    sessions: Sessions,
    /// What each request asks for (`/` or the slow handler's `/slow`).
    path: &'static str,
    /// Server processes sharing the store; 1 is the system served from
    /// this process.
    processes: usize,
    /// Whether the counters are read before and after each round, to count
    /// lost updates.
    check_lost: bool,
    /// Whether bare axum runs too, as the ceiling.
    bare: bool,
}

impl Workload {
    fn connections(&self) -> usize {
        self.visitors * self.burst
    }

    /// `--only NAME`: the flag, or the flag less its trailing number
    /// (`slow` for `slow64` and `slow256`).
    fn selected_by(&self, name: &str) -> bool {
        self.flag == name || self.flag.trim_end_matches(|c: char| c.is_ascii_digit()) == name
    }
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: report::MANY,
        flag: "many",
        visitors: 32,
        burst: 1,
        sessions: Sessions::PerVisitor,
        path: "/",
        processes: 1,
        check_lost: false,
        bare: true,
    },
    Workload {
        name: report::HOT,
        flag: "hot",
        visitors: 16,
        burst: 1,
        sessions: Sessions::Shared,
        path: "/",
        processes: 1,
        check_lost: true,
        bare: false,
    },
    Workload {
        name: report::NEW,
        flag: "new",
        visitors: 32,
        burst: 1,
        sessions: Sessions::None,
        path: "/",
        processes: 1,
        check_lost: false,
        bare: true,
    },
    Workload {
        name: report::SLOW64,
        flag: "slow64",
        visitors: 64,
        burst: 1,
        sessions: Sessions::PerVisitor,
        path: "/slow",
        processes: 1,
        check_lost: false,
        bare: true,
    },
    Workload {
        name: report::SLOW256,
        flag: "slow256",
        visitors: 256,
        burst: 1,
        sessions: Sessions::PerVisitor,
        path: "/slow",
        processes: 1,
        check_lost: false,
        bare: true,
    },
    Workload {
        name: report::BURST,
        flag: "burst",
        visitors: 16,
        burst: 6,
        sessions: Sessions::PerVisitor,
        path: "/",
        processes: 1,
        check_lost: true,
        bare: true,
    },
    Workload {
        name: report::TWO,
        flag: "two",
        visitors: 16,
        burst: 1,
        sessions: Sessions::Shared,
        path: "/",
        processes: 2,
        check_lost: true,
        bare: false,
    },
    Workload {
        name: report::MEMORY,
        flag: "memory",
        visitors: 0,
        burst: 0,
        sessions: Sessions::Direct,
        path: "",
        processes: 0,
        check_lost: false,
        bare: false,
    },
];

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
    for store in [Store::Redis, Store::RedisCluster, Store::Postgres] {
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

/// What every group needs.
struct Ctx<'a> {
    server: &'a Handle,
    env: &'a Arc<Env>,
    pg: Option<&'a sqlx::PgPool>,
    options: &'a Options,
}

/// Where a system serves from.
enum Serving {
    /// A task on this process's server runtime.
    Here(JoinHandle<()>),
    /// Server processes of their own.
    Processes(Vec<ServerProcess>),
}

/// A system serving on loopback ports.
struct Running {
    system: System,
    addrs: Vec<SocketAddr>,
    serving: Serving,
    cleanup: Option<systems::Cleanup>,
    /// Each visitor's cookie (`name=value`), if it sends one.
    visitors: Vec<Option<String>>,
    /// Cookies handed out to new visitors, for the clean-up.
    handed_out: Vec<String>,
    /// The `application_name`s of its PostgreSQL connections.
    pg_names: Vec<String>,
    /// The most PostgreSQL connections it held at the end of a round.
    pg_connections: Option<u64>,
    reports: Vec<client::Report>,
    lost: u64,
    answered: u64,
}

impl Running {
    /// The distinct cookies whose counters the lost-update check reads.
    fn checked_cookies(&self, workload: &Workload) -> Vec<String> {
        if !workload.check_lost || self.system == System::Bare {
            return Vec::new();
        }
        let mut cookies: Vec<String> = self.visitors.iter().flatten().cloned().collect();
        cookies.sort();
        cookies.dedup();
        cookies
    }

    fn plan(&self, workload: &Workload, threads: usize, duration: Duration) -> client::Plan {
        client::Plan {
            addrs: self.addrs.clone(),
            path: workload.path.into(),
            seconds: duration.as_secs_f64(),
            visitors: self.visitors.clone(),
            burst: workload.burst,
            threads,
        }
    }
}

/// Starts `system` on the server runtime.
async fn start_here(
    ctx: &Ctx<'_>,
    system: System,
    store: Store,
    instance: &'static str,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>, systems::Cleanup)> {
    let env = ctx.env.clone();
    ctx.server
        .spawn(async move {
            let app = systems::build(system, store, &env, instance).await?;
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
    ctx: &Ctx<'_>,
    workload: &Workload,
    store: Store,
    group: &[System],
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let options = ctx.options;
    let mut running = Vec::new();
    for &system in group {
        let label = format!("{} / {} / {}", workload.name, store.name(), system.name());
        eprintln!("starting {label}");
        match prepare(ctx, workload, store, system).await {
            Ok(r) => running.push(r),
            Err(e) => notes.push(format!("{label} skipped: {e:#}")),
        }
    }
    for r in &mut running {
        let plan = r.plan(workload, options.client_threads, options.warmup);
        match client::measure(&plan).await {
            Ok(mut warmup) => r.handed_out.append(&mut warmup.handed_out),
            Err(e) => notes.push(format!(
                "{} / {} / {}: warm-up failed: {e:#}",
                workload.name,
                store.name(),
                r.system.name()
            )),
        }
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
            if let Err(e) = measure(ctx, r, workload).await {
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
        match std::mem::replace(&mut r.serving, Serving::Processes(Vec::new())) {
            Serving::Here(serve) => serve.abort(),
            Serving::Processes(all) => {
                for p in all {
                    p.stop().await;
                }
            }
        }
        let mut cookies: Vec<String> = r.visitors.iter().flatten().cloned().collect();
        cookies.append(&mut r.handed_out);
        cookies.sort();
        cookies.dedup();
        if let Some(cleanup) = r.cleanup.take() {
            let env = ctx.env.clone();
            let done = ctx
                .server
                .spawn(async move { cleanup.run(&env, &cookies).await })
                .await;
            if let Ok(Err(e)) | Err(e) = done.map_err(anyhow::Error::from) {
                notes.push(format!(
                    "{} / {}: clean-up failed: {e:#}",
                    store.name(),
                    r.system.name()
                ));
            }
        }
        let row = summarize(&r, workload, store, options.client_threads);
        if let Some(busy) = row.client_busy.filter(|&b| b > CLIENT_BUSY) {
            notes.push(format!(
                "{} / {} / {}: the client was busy {:.0}% of its time, so it may have set the pace \
                 (more --client-threads?)",
                workload.name,
                store.name(),
                r.system.name(),
                busy * 100.0
            ));
        }
        rows.push(row);
    }
    rows
}

/// Starts a system and gives it the sessions the workload needs.
async fn prepare(
    ctx: &Ctx<'_>,
    workload: &Workload,
    store: Store,
    system: System,
) -> anyhow::Result<Running> {
    let env = ctx.env;
    let (addrs, serving, cleanup, pg_names) = if workload.processes > 1 {
        // This process opens the store first: that creates or migrates it
        // once, before the servers, and keeps what the clean-up needs.
        let env2 = env.clone();
        let cleanup = ctx
            .server
            .spawn(async move {
                let app = systems::build(system, store, &env2, "admin").await?;
                anyhow::Ok(app.cleanup)
            })
            .await??;
        let mut processes = Vec::new();
        let mut names = Vec::new();
        for i in 0..workload.processes {
            let instance = format!("p{i}");
            let threads = ctx.options.server_threads;
            processes.push(ServerProcess::start(system, store, env, &instance, threads).await?);
            names.push(env.application_name(system, &instance));
        }
        let addrs = processes.iter().map(|p| p.addr).collect();
        (addrs, Serving::Processes(processes), cleanup, names)
    } else {
        let (addr, serve, cleanup) = start_here(ctx, system, store, "main").await?;
        let names = vec![env.application_name(system, "main")];
        (vec![addr], Serving::Here(serve), cleanup, names)
    };
    let first = addrs[0];
    let visitors = match (system, workload.sessions) {
        (System::Bare, _) | (_, Sessions::None | Sessions::Direct) => vec![None; workload.visitors],
        (_, Sessions::Shared) => vec![Some(load::new_session(first).await?); workload.visitors],
        (_, Sessions::PerVisitor) => {
            futures_util::stream::iter(0..workload.visitors)
                .map(|_| async move { load::new_session(first).await.map(Some) })
                .buffered(8)
                .try_collect()
                .await?
        }
    };
    Ok(Running {
        system,
        addrs,
        serving,
        cleanup: Some(cleanup),
        visitors,
        handed_out: Vec::new(),
        pg_names: if store == Store::Postgres && system != System::Bare {
            pg_names
        } else {
            Vec::new()
        },
        pg_connections: None,
        reports: Vec::new(),
        lost: 0,
        answered: 0,
    })
}

/// One measured round; the counters before and after it where the
/// workload checks for lost updates, and the PostgreSQL connections at its
/// end.
async fn measure(ctx: &Ctx<'_>, r: &mut Running, workload: &Workload) -> anyhow::Result<()> {
    let checked = r.checked_cookies(workload);
    let counters = |cookies: Vec<String>, addr: SocketAddr| async move {
        let mut sum = 0;
        for c in &cookies {
            sum += load::read_counter(addr, c).await?;
        }
        anyhow::Ok(sum)
    };
    let before = counters(checked.clone(), r.addrs[0]).await?;
    let plan = r.plan(workload, ctx.options.client_threads, ctx.options.round);
    let mut report = client::measure(&plan).await?;
    r.handed_out.append(&mut report.handed_out);
    if !checked.is_empty() {
        let after = counters(checked, r.addrs[0]).await?;
        let counted = after.saturating_sub(before);
        r.lost += report.ok_total.saturating_sub(counted);
        r.answered += report.ok_total;
    }
    if let (Some(pg), false) = (ctx.pg, r.pg_names.is_empty()) {
        let (n,): (i64,) = sqlx::query_as(
            "select count(*) from pg_stat_activity where application_name = any($1)",
        )
        .bind(&r.pg_names)
        .fetch_one(pg)
        .await?;
        let n = u64::try_from(n).unwrap_or(0);
        r.pg_connections = Some(r.pg_connections.map_or(n, |m| m.max(n)));
    }
    r.reports.push(report);
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

/// Above this share of its threads' time, the client may be what limits a
/// system's requests/s.
const CLIENT_BUSY: f64 = 0.9;

fn summarize(r: &Running, workload: &Workload, store: Store, client_threads: usize) -> Row {
    let store_name = if r.system == System::Bare {
        "none"
    } else {
        store.name()
    };
    let ms = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
    let mut row = Row::new(workload.name, store_name, r.system.name());
    row.connections = Some(workload.connections());
    row.rps = median(r.reports.iter().map(client::Report::rps).collect()).map(|v| v.round());
    row.p50_ms = ms(median(r.reports.iter().filter_map(|x| x.p50_ms).collect()));
    row.p99_ms = ms(median(r.reports.iter().filter_map(|x| x.p99_ms).collect()));
    row.errors = r.reports.iter().map(|x| x.errors).sum();
    row.pg_connections = r.pg_connections;
    row.client_busy = median(
        r.reports
            .iter()
            .filter_map(|x| Some(x.cpu_seconds? / (x.seconds * client_threads as f64)))
            .collect(),
    )
    .map(|v| (v * 100.0).round() / 100.0);
    if !r.checked_cookies(workload).is_empty() && !r.reports.is_empty() {
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
