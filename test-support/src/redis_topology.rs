//! Redis deployments of the tests' own, on loopback and on free ports: a
//! Cluster (masters, each with replicas), a master with a replica watched
//! by three Sentinels, and one durable server ([`Standalone`]), started
//! from `redis-server` and `redis-cli` (Sentinels are `redis-server
//! --sentinel`, so Debian's `redis-sentinel` package is not needed).
//!
//! The non-destructive tests of a test binary share one of each
//! ([`shared_cluster`], [`shared_sentinels`]); a test that kills nodes
//! starts its own ([`Cluster::start`], [`Sentinels::start`]), so the
//! others are not disturbed. Whatever happens to the test process — a
//! failed assertion, an abort, a kill — its servers go with it: a small
//! shell watchdog holds the read end of a pipe only this process writes
//! to, and when the pipe closes it kills every server still listed and
//! removes the directory.
//!
//! When `redis-server` is missing or the deployment does not come up, the
//! `shared_*` functions skip (`None`) outside CI and fail under `CI=true`;
//! the `start` functions say why, for the caller to do the same with
//! [`or_skip`].

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::ci::skip;

const LOCALHOST: &str = "127.0.0.1";
/// How long a deployment may take to come up; cluster creation takes a few
/// seconds, Sentinels finding each other a few more.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The CI rule ([`skip`]) for a deployment that did not start.
pub fn or_skip<T>(started: Result<T, String>) -> Option<T> {
    started.map_or_else(skip, Some)
}

/// The Cluster every non-destructive test of this process shares (3
/// masters, 3 replicas).
pub fn shared_cluster() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| Cluster::start(3, 1, SHARED_NODE_TIMEOUT_MS));
    or_skip(started.as_ref().map_err(Clone::clone))
}

/// The Sentinel deployment every non-destructive test of this process
/// shares.
pub fn shared_sentinels() -> Option<&'static Sentinels> {
    static SHARED: OnceLock<Result<Sentinels, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| Sentinels::start(SHARED_NODE_TIMEOUT_MS));
    or_skip(started.as_ref().map_err(Clone::clone))
}

/// One `redis-server` process.
pub struct Node {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    pids: PathBuf,
}

impl Node {
    fn new(port: u16, args: Vec<String>, base: &Base) -> Node {
        Node {
            port,
            args,
            child: None,
            pids: base.dir.join("pids"),
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server cannot be started: {e}"))?;
        std::fs::write(self.pid_file(), child.id().to_string()).map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((LOCALHOST, self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "redis-server on port {} exited at start ({status})",
                    self.port
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {} did not listen", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Listening is not serving: a node that reads its AOF or RDB at
        // start answers LOADING to every command until it is done.
        while match cli(self.port, &["PING"]) {
            Ok(reply) | Err(reply) => reply.contains("LOADING"),
        } {
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {} kept loading", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn pid_file(&self) -> PathBuf {
        self.pids.join(format!("{}.pid", self.port))
    }

    /// SIGKILL: a crash, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(self.pid_file());
        }
    }

    /// Starts the server again with its first arguments (and, for a
    /// Cluster node, its node file, so it rejoins as what it was).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("restart redis-server");
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `redis-cli` against this node; its output, or why it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        cli(self.port, args)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-h", LOCALHOST, "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli cannot be run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.starts_with("ERR") || text.starts_with("Could not connect") {
        return Err(format!(
            "redis-cli -p {port} {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}

/// The directory of one deployment and the watchdog that cleans up after
/// this process, however it ends. Deployments declare it after their
/// nodes, so that the nodes are killed first when one is dropped.
struct Base {
    dir: PathBuf,
    /// Closing this (by dropping it, or by the process ending) tells the
    /// watchdog to kill what is left and remove `dir`.
    _watchdog: ChildStdin,
}

impl Base {
    fn new(tag: &str) -> Result<Base, String> {
        let dir = std::env::temp_dir().join(format!("sessions-{tag}-{:x}", random()));
        std::fs::create_dir_all(dir.join("pids")).map_err(|e| e.to_string())?;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                r#"cat >/dev/null
                   for f in "$0"/pids/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")"; done 2>/dev/null
                   rm -rf "$0""#,
            )
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("sh cannot be started: {e}"))?;
        Ok(Base {
            dir,
            _watchdog: watchdog.stdin.take().expect("a piped stdin"),
        })
    }

    fn node_dir(&self, port: u16) -> Result<PathBuf, String> {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        Ok(dir)
    }
}

fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A free port (and, for a Cluster node, its bus port + 10000), never
/// handed out twice by this process.
fn free_port(with_bus: bool) -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap();
    let taken = taken.get_or_insert_with(HashSet::new);
    let start = 21_000 + (random() % 9_000) as u16;
    for i in 0..9_000u16 {
        let port = 21_000 + (start - 21_000 + i) % 9_000;
        let free = |p: u16| TcpListener::bind((LOCALHOST, p)).is_ok();
        if !taken.contains(&port) && free(port) && (!with_bus || free(port + 10_000)) {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port between 21000 and 30000");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("{what} within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn common_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        LOCALHOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        &dir.to_string_lossy(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// One Redis server of the tests' own.
pub struct Standalone {
    pub node: Node,
    _base: Base,
}

impl Standalone {
    /// A server that keeps every acknowledged write through a crash:
    /// append-only file, fsynced on every write, so a SIGKILL and a restart
    /// lose nothing it answered.
    pub fn start() -> Result<Standalone, String> {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// A server with `args` (`--name value` pairs) on top of the defaults:
    /// empty, and holding only what its test puts in it, for a test whose
    /// outcome depends on the whole keyspace (when Redis finds a key
    /// expired, say) rather than on its own keys.
    pub fn start_with(args: &[&str]) -> Result<Standalone, String> {
        let base = Base::new("redis")?;
        let port = free_port(false);
        let dir = base.node_dir(port)?;
        let mut all = common_args(port, &dir);
        // Later arguments override the defaults of `common_args`.
        all.extend(args.iter().map(|a| a.to_string()));
        let mut node = Node::new(port, all, &base);
        node.spawn()?;
        Ok(Standalone { node, _base: base })
    }

    /// The URL a store is given.
    pub fn url(&self) -> String {
        format!("redis://{LOCALHOST}:{}/", self.node.port)
    }
}

/// A Redis Cluster on loopback.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _base: Base,
}

/// The shared deployments' `cluster-node-timeout` and Sentinel
/// `down-after-milliseconds`: long enough that a busy machine never fails
/// a node over by mistake while tests use it.
const SHARED_NODE_TIMEOUT_MS: u64 = 5_000;

impl Cluster {
    /// `masters` masters with `replicas` replicas each, all slots covered,
    /// every replica in sync. `node_timeout_ms` is how long a node may be
    /// unreachable before the others fail it over (Redis' default is 15 s;
    /// the failover tests take less, to be quick).
    pub fn start(masters: usize, replicas: usize, node_timeout_ms: u64) -> Result<Cluster, String> {
        let base = Base::new("redis-cluster")?;
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = free_port(true);
            let dir = base.node_dir(port)?;
            let mut args = common_args(port, &dir);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &dir.join("nodes.conf").to_string_lossy(),
                    "--cluster-node-timeout",
                    &node_timeout_ms.to_string(),
                ]
                .map(str::to_owned),
            );
            let mut node = Node::new(port, args, &base);
            node.spawn()?;
            nodes.push(node);
        }
        let cluster = Cluster { nodes, _base: base };
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("{LOCALHOST}:{}", n.port))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        let replicas = replicas.to_string();
        create.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        cli(cluster.nodes[0].port, &create)?;
        cluster.wait_until_healthy()?;
        Ok(cluster)
    }

    /// Until every running node sees the cluster as `ok` and every master
    /// has all its replicas in sync.
    pub fn wait_until_healthy(&self) -> Result<(), String> {
        wait_for("the cluster did not become healthy", || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.cli(&["cluster", "info"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
                    && n.cli(&["info", "replication"]).is_ok_and(|info| {
                        info.contains("role:master") || info.contains("master_link_status:up")
                    })
            }) && self.nodes_table().is_ok_and(|t| {
                t.iter()
                    .all(|row| !row.flags.contains("fail") && !row.flags.contains("handshake"))
            })
        })
    }

    /// The URL a store is given: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://{LOCALHOST}:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `CLUSTER NODES` as one running node sees it.
    pub fn nodes_table(&self) -> Result<Vec<ClusterNode>, String> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .ok_or("no node is running")?;
        let text = node.cli(&["cluster", "nodes"])?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port = f
                    .get(1)?
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                Some(ClusterNode {
                    id: f[0].to_owned(),
                    port,
                    flags: f.get(2)?.to_string(),
                    master_id: f.get(3)?.to_string(),
                    slots: f.get(8..).unwrap_or_default().join(" "),
                })
            })
            .collect())
    }

    /// The ports of the masters that are not failed.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes_table()
            .unwrap_or_default()
            .iter()
            .filter(|n| n.flags.contains("master") && !n.flags.contains("fail"))
            .map(|n| n.port)
            .collect()
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// Whether the (dead) master on `port` has been failed over: it is
    /// flagged failed and its slots belong to another master now.
    pub fn failed_over(&self, port: u16) -> bool {
        self.nodes_table().is_ok_and(|table| {
            table.iter().any(|n| {
                n.port == port && n.flags.split(',').any(|f| f == "fail") && n.slots.is_empty()
            })
        })
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub flags: String,
    /// The master's id, or `-` for a master.
    pub master_id: String,
    /// The slot ranges it serves, space-separated (empty for a replica).
    pub slots: String,
}

/// A master, its replica and three Sentinels watching them.
pub struct Sentinels {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    pub name: String,
    _base: Base,
}

impl Sentinels {
    /// `down_after_ms` is how long the Sentinels wait before calling the
    /// master down (Redis' default is 30 s; the failover tests take less,
    /// to be quick).
    pub fn start(down_after_ms: u64) -> Result<Sentinels, String> {
        let base = Base::new("redis-sentinel")?;
        let name = "sessions-test".to_owned();
        let (mport, rport) = (free_port(false), free_port(false));
        let mut master = Node::new(mport, common_args(mport, &base.node_dir(mport)?), &base);
        master.spawn()?;
        let mut args = common_args(rport, &base.node_dir(rport)?);
        args.extend(["--replicaof".into(), LOCALHOST.into(), mport.to_string()]);
        let mut replica = Node::new(rport, args, &base);
        replica.spawn()?;
        wait_for("the replica did not sync", || {
            replica
                .cli(&["info", "replication"])
                .is_ok_and(|i| i.contains("master_link_status:up"))
        })?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port(false);
            let dir = base.node_dir(port)?;
            // A Sentinel rewrites its own file, so each gets one.
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind {LOCALHOST}\ndir {}\n\
                     sentinel monitor {name} {LOCALHOST} {mport} 2\n\
                     sentinel down-after-milliseconds {name} {down_after_ms}\n\
                     sentinel failover-timeout {name} 10000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let args = vec![conf.to_string_lossy().into_owned(), "--sentinel".into()];
            let mut node = Node::new(port, args, &base);
            node.spawn()?;
            sentinels.push(node);
        }
        let set = Sentinels {
            master,
            replica,
            sentinels,
            name,
            _base: base,
        };
        set.wait_until_watched()?;
        Ok(set)
    }

    /// Until every running Sentinel knows the master, a replica and the
    /// other Sentinels: only then can they agree on a failover.
    pub fn wait_until_watched(&self) -> Result<(), String> {
        wait_for("the sentinels did not find each other", || {
            self.sentinels.iter().filter(|s| s.is_running()).all(|s| {
                s.cli(&["sentinel", "master", &self.name])
                    .is_ok_and(|info| {
                        // redis-cli prints the reply's names and values on
                        // alternate lines.
                        let field = |name: &str| {
                            let mut lines = info.lines();
                            lines.find(|l| *l == name)?;
                            lines.next()
                        };
                        field("flags") == Some("master")
                            && field("num-other-sentinels") == Some("2")
                            && field("num-slaves").is_some_and(|n| n != "0")
                    })
            })
        })
    }

    /// The URL a store is given.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("{LOCALHOST}:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.name)
    }

    /// The master's port as the first running Sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        let s = self.sentinels.iter().find(|s| s.is_running())?;
        let out = s
            .cli(&["sentinel", "get-master-addr-by-name", &self.name])
            .ok()?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// The master node or the replica, by port.
    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        if self.master.port == port {
            &mut self.master
        } else {
            assert_eq!(self.replica.port, port, "not a data node of this set");
            &mut self.replica
        }
    }
}
