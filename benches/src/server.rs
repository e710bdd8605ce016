//! A system served from a process of its own, for the two-process
//! workload: the benchmark binary run again as
//! `sessions-bench __serve SYSTEM STORE TAG INSTANCE THREADS`. It opens the
//! store of run `TAG` (the same Redis prefix, table, directory or file as
//! the benchmark's other processes), prints the address it listens on as
//! one JSON line, and serves until its stdin closes.

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};

use crate::systems::{self, Env, Store, System};

/// The hidden subcommand the benchmark runs a server process with.
pub(crate) const SUBCOMMAND: &str = "__serve";

/// A running server process.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    pub(crate) addr: SocketAddr,
    child: Child,
    /// Closing it tells the server to stop.
    stdin: Option<ChildStdin>,
}

impl ServerProcess {
    /// Starts `system` on `store` in a new process with `threads` runtime
    /// workers, and waits until it listens.
    pub(crate) async fn start(
        system: System,
        store: Store,
        env: &Env,
        instance: &str,
        threads: usize,
    ) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut command = tokio::process::Command::new(exe);
        if let Some(url) = &env.redis_cluster_url {
            command.env(systems::REDIS_CLUSTER_URL_VAR, url);
        }
        let mut child = command
            .args([
                SUBCOMMAND,
                system.flag(),
                store.name(),
                env.tag(),
                instance,
                &threads.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a server process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("the server process did not start listening")??;
        let addr = serde_json::from_str(line.trim())
            .with_context(|| format!("the server process said {line:?}"))?;
        Ok(ServerProcess { addr, child, stdin })
    }

    /// Asks the server to stop, and kills it if it does not.
    pub(crate) async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The server process.
pub(crate) fn child(args: &[String]) -> anyhow::Result<()> {
    let [system, store, tag, instance, threads] = args else {
        bail!("usage: {SUBCOMMAND} SYSTEM STORE TAG INSTANCE THREADS");
    };
    let system = System::from_flag(system).with_context(|| format!("no system {system:?}"))?;
    let store = Store::from_name(store).with_context(|| format!("no store {store:?}"))?;
    let env = Env::with_tag(tag.clone());
    let threads = threads.parse::<usize>()?.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("server")
        .enable_all()
        .build()?;
    let serve = runtime.block_on(async {
        let app = systems::build(system, store, &env, instance).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", serde_json::to_string(&listener.local_addr()?)?);
        anyhow::Ok(tokio::spawn(app.server.serve(listener, threads)))
    })?;
    // Serve until the benchmark closes our stdin (or goes away). The main
    // thread is not a runtime worker, so it may block here.
    let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
    serve.abort();
    // Connections still open must not hold the process.
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}
