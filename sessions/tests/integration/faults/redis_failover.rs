//! A Redis master SIGKILLed under HTTP traffic, end to end, on a Cluster
//! (3 masters, 3 replicas) and on a Sentinel set (a master, a replica,
//! three Sentinels), each the test's own on its own ports: two app
//! instances serve a counter to 30 visitors, each visitor's requests
//! alternating between them, while the master dies, a replica takes over
//! and the dead node comes back (as a supervisor would restart it) as a
//! replica.
//!
//! Each deployment goes through it twice, the master's replica cut off for
//! the second before the kill (so that it lags behind, as a replica far
//! away or overloaded would): without `redis_wait_replicas`, then with
//! `redis_wait_replicas = 1`.
//!
//! Requests answer 200 or 503, never anything else; the 503s end by
//! themselves; every visitor keeps its session id; and with
//! `redis_wait_replicas = 1` no acknowledged update is lost. Without it a
//! lagging replica loses what it had not received, which the test counts
//! (and checks that it does happen, so that the setting is seen to
//! matter). Run with `--nocapture` to see the figures.

#![cfg(feature = "redis")]

use sessions_test_support as common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::app::counter;
use common::client::{serve, Client};
use common::redis_topology::{or_skip, Cluster, Node, Sentinels};
use server_sessions::store::RedisStore;
use server_sessions::SessionLayer;

/// How long a node may be silent before the others fail it over: short to
/// keep the test quick, long enough for a busy two-core machine.
const FAILOVER_AFTER_MS: u64 = 1_500;
const VISITORS: usize = 30;
/// Kill, failover, restart and the sessions' recovery, at most.
const RECOVERY: Duration = Duration::from_secs(45);

/// What the scenario needs of a deployment.
trait Deployment: Send {
    fn url(&self) -> String;
    /// A master to kill.
    fn a_master(&self) -> u16;
    fn kill(&mut self, port: u16);
    fn failed_over(&self, dead: u16) -> bool;
    fn restart(&mut self, port: u16);
    fn wait_until_healthy(&self);
    /// The replica of the master on `port`.
    fn replica_of(&self, master: u16) -> &Node;
    /// Whether the dead master held only some of the sessions, so that
    /// the others must go on answering.
    fn sharded(&self) -> bool;
}

impl Deployment for Cluster {
    fn url(&self) -> String {
        Cluster::url(self)
    }
    fn a_master(&self) -> u16 {
        self.masters()[0]
    }
    fn kill(&mut self, port: u16) {
        self.node_mut(port).kill();
    }
    fn failed_over(&self, dead: u16) -> bool {
        Cluster::failed_over(self, dead)
    }
    fn restart(&mut self, port: u16) {
        self.node_mut(port).restart();
    }
    fn wait_until_healthy(&self) {
        Cluster::wait_until_healthy(self).unwrap();
    }
    fn sharded(&self) -> bool {
        true
    }
    fn replica_of(&self, master: u16) -> &Node {
        let table = self.nodes_table().unwrap();
        let id = &table.iter().find(|n| n.port == master).unwrap().id;
        let replica = table.iter().find(|n| n.master_id == *id).unwrap().port;
        self.nodes.iter().find(|n| n.port == replica).unwrap()
    }
}

impl Deployment for Sentinels {
    fn url(&self) -> String {
        Sentinels::url(self)
    }
    fn a_master(&self) -> u16 {
        self.master_port().expect("the sentinels name a master")
    }
    fn kill(&mut self, port: u16) {
        self.node_mut(port).kill();
    }
    fn failed_over(&self, dead: u16) -> bool {
        self.master_port().is_some_and(|p| p != dead)
    }
    fn restart(&mut self, port: u16) {
        self.node_mut(port).restart();
    }
    fn wait_until_healthy(&self) {
        // The Sentinels turn the old master into a replica of the new one.
        let deadline = Instant::now() + RECOVERY;
        while !(self.master.cli(&["info", "replication"]).is_ok_and(synced)
            || self.replica.cli(&["info", "replication"]).is_ok_and(synced))
        {
            assert!(Instant::now() < deadline, "the old master never rejoined");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_until_watched().unwrap();
    }
    fn sharded(&self) -> bool {
        false
    }
    fn replica_of(&self, master: u16) -> &Node {
        if self.master.port == master {
            &self.replica
        } else {
            &self.master
        }
    }
}

/// Cuts a replica off its master, and keeps it off: its link is closed,
/// and the password it would now offer is refused. It stays a replica,
/// eligible for promotion, with what it had.
fn cut_off(replica: &Node) {
    replica
        .cli(&["config", "set", "masterauth", "not-the-password"])
        .unwrap();
    replica.cli(&["client", "kill", "type", "master"]).unwrap();
}

fn reconnect(replica: &Node) {
    replica.cli(&["config", "set", "masterauth", ""]).unwrap();
}

fn synced(info: String) -> bool {
    info.contains("role:slave") && info.contains("master_link_status:up")
}

/// One request of a visitor, as the test saw it.
struct Seen {
    at: Instant,
    took: Duration,
    status: u16,
    value: Option<u64>,
    /// The id in the `Set-Cookie`, if one was sent.
    id: Option<String>,
}

/// A visitor: its session id and its requests, alternating between the
/// two instances.
struct Visitor {
    id: String,
    seen: Vec<Seen>,
}

async fn visit(clients: [Client; 2], id: String, stop: Arc<AtomicBool>) -> Visitor {
    let cookie = format!("session_id={id}");
    let mut seen = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let r = clients[i % 2].get_with("/", Some(&cookie)).await;
        seen.push(Seen {
            at: Instant::now(),
            took: started.elapsed(),
            status: r.status,
            value: (r.status == 200).then(|| r.body.parse().unwrap()),
            id: r.cookie_value(),
        });
        i += 1;
        // Leave the servers some CPU: a starved node misses heartbeats.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Visitor { id, seen }
}

/// The figures of one run, printed and checked.
#[derive(Debug)]
struct Figures {
    requests: usize,
    unavailable: usize,
    /// Visitors that saw at least one 503.
    sessions_unavailable: usize,
    /// From the first 503 to the last.
    window: Duration,
    /// From the kill to the replica's promotion, as the deployment says.
    promoted: Duration,
    /// From the kill to every visitor's last 503.
    recovered: Duration,
    slowest: Duration,
    /// Acknowledged updates that a later answer did not build on.
    lost: u64,
    sessions_with_loss: usize,
}

async fn master_killed_under_traffic(
    deployment: &mut dyn Deployment,
    wait: u32,
    lagging: bool,
) -> Figures {
    let url = deployment.url();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&url)
            .await
            .unwrap()
            .with_wait_replicas(wait);
        let app = Router::new()
            .route("/", get(counter))
            .layer(SessionLayer::new(store));
        addrs.push(serve(app).await);
    }
    // Sessions saved (and replicated) before the trouble starts.
    let mut ids = Vec::new();
    for _ in 0..VISITORS {
        let mut c = Client::new(addrs[0]);
        assert_eq!(c.get("/").await.body, "1");
        let mut on_b = Client::new(addrs[1]);
        on_b.cookie = c.cookie.clone();
        assert_eq!(on_b.get("/").await.body, "2");
        ids.push(c.id().unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let visitors: Vec<_> = ids
        .iter()
        .map(|id| {
            let clients = [Client::new(addrs[0]), Client::new(addrs[1])];
            tokio::spawn(visit(clients, id.clone(), stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let dead = deployment.a_master();
    if lagging {
        tokio::task::block_in_place(|| cut_off(deployment.replica_of(dead)));
        // A second of acknowledged writes that the replica does not get.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let killed = Instant::now();
    deployment.kill(dead);
    if lagging {
        tokio::task::block_in_place(|| reconnect(deployment.replica_of(dead)));
    }
    let promoted = loop {
        let done = tokio::task::block_in_place(|| deployment.failed_over(dead));
        if done {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < RECOVERY, "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::task::block_in_place(|| {
        deployment.restart(dead);
        deployment.wait_until_healthy();
    });
    // Let the traffic show that it recovered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    for v in visitors {
        done.push(v.await.unwrap());
    }
    // One more request each: its answer must build on every acknowledged
    // one.
    for v in &mut done {
        let c = Client::new(addrs[0]);
        let started = Instant::now();
        let r = c.get_with("/", Some(&format!("session_id={}", v.id))).await;
        assert_eq!(r.status, 200, "a session did not recover: {r:?}");
        v.seen.push(Seen {
            at: Instant::now(),
            took: started.elapsed(),
            status: r.status,
            value: Some(r.body.parse().unwrap()),
            id: r.cookie_value(),
        });
    }
    figures(&done, killed, promoted)
}

fn figures(visitors: &[Visitor], killed: Instant, promoted: Duration) -> Figures {
    let all = || visitors.iter().flat_map(|v| &v.seen);
    let odd: Vec<u16> = all()
        .map(|s| s.status)
        .filter(|s| *s != 200 && *s != 503)
        .collect();
    assert!(odd.is_empty(), "answers other than 200 and 503: {odd:?}");
    for v in visitors {
        let other = v
            .seen
            .iter()
            .filter_map(|s| s.id.as_ref())
            .find(|id| **id != v.id);
        assert_eq!(other, None, "a visitor lost its session id");
    }
    let unavailable: Vec<&Seen> = all().filter(|s| s.status == 503).collect();
    let first = unavailable.iter().map(|s| s.at).min();
    let last = unavailable.iter().map(|s| s.at).max();
    let (mut lost, mut sessions_with_loss) = (0, 0);
    for v in visitors {
        // Answers of one visitor come in order; each must be above the
        // one acknowledged before it (503s may or may not have counted).
        // One that is not went back over that many acknowledged updates.
        let mut last = 0;
        let mut lost_here = 0;
        for value in v.seen.iter().filter_map(|s| s.value) {
            if value <= last {
                lost_here += last - value + 1;
            }
            last = value;
        }
        lost += lost_here;
        sessions_with_loss += usize::from(lost_here > 0);
    }
    Figures {
        requests: all().count(),
        unavailable: unavailable.len(),
        sessions_unavailable: visitors
            .iter()
            .filter(|v| v.seen.iter().any(|s| s.status == 503))
            .count(),
        window: match (first, last) {
            (Some(f), Some(l)) => l - f,
            _ => Duration::ZERO,
        },
        promoted,
        recovered: last.map_or(Duration::ZERO, |l| l.saturating_duration_since(killed)),
        slowest: all().map(|s| s.took).max().unwrap_or_default(),
        lost,
        sessions_with_loss,
    }
}

fn report(what: &str, lagging: bool, wait: u32, f: &Figures) {
    let how = if lagging { ", replica 1 s behind" } else { "" };
    eprintln!(
        "[{what}{how}, redis_wait_replicas = {wait}] {} requests; {} answered 503 (in {} of \
         {VISITORS} sessions), from the first to the last over {:.1} s; replica promoted {:.1} s after the kill; last 503 {:.1} s \
         after the kill; slowest answer {:.1} s; lost acknowledged updates: {} (in {} of \
         {VISITORS} sessions)",
        f.requests,
        f.unavailable,
        f.sessions_unavailable,
        f.window.as_secs_f64(),
        f.promoted.as_secs_f64(),
        f.recovered.as_secs_f64(),
        f.slowest.as_secs_f64(),
        f.lost,
        f.sessions_with_loss,
    );
}

fn check(f: &Figures, lagging: bool, wait: u32, sharded: bool) {
    assert!(f.unavailable > 0, "the kill went unnoticed: {f:?}");
    if sharded {
        // The other masters' sessions rode out the moment in which the
        // whole Cluster refused every key (cluster-require-full-coverage).
        assert!(f.sessions_unavailable < VISITORS, "{f:?}");
    }
    // Every request gave up within the store's timeouts (two calls of at
    // most 5 s, or a lock left behind on the new master until its 10 s
    // lease ran out).
    assert!(f.slowest < Duration::from_secs(20), "{f:?}");
    assert!(f.recovered < RECOVERY, "{f:?}");
    if wait > 0 {
        assert_eq!(f.lost, 0, "an acknowledged update was lost: {f:?}");
    } else if lagging {
        // The lag cost updates, as the docs say it can; if it did not, the
        // test no longer shows what the setting is for.
        assert!(f.lost > 0, "a lagging replica lost nothing: {f:?}");
    }
}

/// The two runs, one after the other on the same deployment.
async fn runs(what: &str, deployment: &mut dyn Deployment) {
    for (lagging, wait) in [(true, 0), (true, 1)] {
        let f = master_killed_under_traffic(deployment, wait, lagging).await;
        report(what, lagging, wait, &f);
        check(&f, lagging, wait, deployment.sharded());
    }
}

/// The failover tests run one at a time: two private deployments failing
/// over at once on two cores would slow each other's heartbeats.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    SERIAL.get_or_init(Default::default).lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_master_killed_under_traffic() {
    let _serial = one_at_a_time().await;
    let Some(mut cluster) = or_skip(Cluster::start(3, 1, FAILOVER_AFTER_MS)) else {
        return;
    };
    runs("cluster", &mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_master_killed_under_traffic() {
    let _serial = one_at_a_time().await;
    let Some(mut set) = or_skip(Sentinels::start(FAILOVER_AFTER_MS)) else {
        return;
    };
    runs("sentinel", &mut set).await;
}
