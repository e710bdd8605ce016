//! One workload on one store: its systems started and given the sessions
//! the workload needs, measured in turns round by round, and each summed
//! up as a row of the report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tower_sessions_sqlx_store::sqlx;

use crate::report::Row;
use crate::server::ServerProcess;
use crate::systems::{self, Env, Store, System};
use crate::workloads::{Sessions, Workload};
use crate::{client, load, Options};

/// What every group needs.
pub(crate) struct Ctx<'a> {
    pub(crate) server: &'a Handle,
    pub(crate) env: &'a Arc<Env>,
    pub(crate) pg: Option<&'a sqlx::PgPool>,
    pub(crate) options: &'a Options,
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
    let threads = ctx.options.server_threads;
    ctx.server
        .spawn(async move {
            let app = systems::build(system, store, &env, instance).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let serve = tokio::spawn(app.server.serve(listener, threads));
            anyhow::Ok((addr, serve, app.cleanup))
        })
        .await?
}

/// One workload on one store: the systems take turns, round by round.
pub(crate) async fn run_group(
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
    let store_name = match (r.system, store) {
        (System::Bare, _) => "none",
        // Its cookie store, run on the `ram` row.
        (System::ActixSession, Store::Ram) => "cookie",
        _ => store.name(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
