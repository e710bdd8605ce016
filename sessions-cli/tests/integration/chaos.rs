//! The chaos soak: on each shared store, two `sessions serve` processes
//! (the conformance app) take mixed traffic — counters on two hot sessions
//! and on many, regenerations, deletes, new visitors — while one of them is
//! killed with SIGKILL and started again at random moments, and (Redis,
//! PostgreSQL) the store's own server is killed and restarted too. Then:
//!
//! - every session whose last answer was 200 holds at least the count it
//!   answered, and none holds more than the requests sent to it (no write
//!   lost, duplicated or resurrected);
//! - no deleted or regenerated-away session is back;
//! - every record the store lists loads (none is corrupt);
//! - no request was answered with a 5xx other than 503.
//!
//! `.ci/run` runs the short form (`SESSIONS_CHAOS_SECONDS`, default 12 s
//! per store); run it by hand for longer:
//! `SESSIONS_CHAOS_SECONDS=600 cargo test -p server-sessions-cli --test integration chaos:: -- --nocapture`.
//! Each store's tally is printed (the figures in SECURITY.md).
//!
//! The Redis and PostgreSQL servers are the test's own (a Redis with an
//! fsynced append-only file; a PostgreSQL cluster made with `initdb`), so
//! that killing them disturbs no other test.

use crate::server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use server::ci::skip;
use server::client::{free_port, Reply};
use server::redis_topology::{or_skip, Standalone};
use server::temp::TempDir;
use server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_file_store() {
    let dir = TempDir::new("chaos-file");
    let store = format!(
        "tools.sessions.storage_type = \"file\"\ntools.sessions.storage_path = \"{}\"\n",
        dir.path().join("sessions").display()
    );
    soak("file", &dir, &store, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_sqlite_store() {
    let dir = TempDir::new("chaos-sqlite");
    let store = format!(
        "tools.sessions.storage_type = \"sqlite\"\ntools.sessions.storage_path = \"{}\"\n",
        dir.path().join("sessions.db").display()
    );
    soak("sqlite", &dir, &store, None).await;
}

/// On the shared MySQL or MariaDB server, which is not the test's own: the
/// serving processes are killed, the database server is not (other tests
/// use it meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_mysql_store() {
    if std::net::TcpStream::connect("127.0.0.1:3306").is_err() {
        return skip("mysql at 127.0.0.1:3306 is unreachable").unwrap_or(());
    }
    let dir = TempDir::new("chaos-mysql");
    let store = format!(
        "tools.sessions.storage_type = \"mysql\"\n\
         tools.sessions.storage_url = \"mysql://root@127.0.0.1:3306/test\"\n\
         tools.sessions.table = \"{}\"\n",
        server::temp::unique_table()
    );
    soak("mysql", &dir, &store, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_redis_store() {
    let Some(redis) = or_skip(Standalone::start()) else {
        return;
    };
    let dir = TempDir::new("chaos-redis");
    let store = format!(
        "tools.sessions.storage_type = \"redis\"\ntools.sessions.storage_url = \"{}\"\n",
        redis.url()
    );
    soak("redis", &dir, &store, Some(Backend::Redis(redis))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_postgres_store() {
    let dir = TempDir::new("chaos-postgres");
    let Some(pg) = Postgres::start(&dir.path().join("pg")) else {
        return;
    };
    let store = format!(
        "tools.sessions.storage_type = \"postgres\"\ntools.sessions.storage_url = \"{}\"\n",
        pg.url()
    );
    soak("postgres", &dir, &store, Some(Backend::Postgres(pg))).await;
}

/// How long each store is soaked.
fn soak_time() -> Duration {
    let seconds = std::env::var("SESSIONS_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    Duration::from_secs(seconds)
}

/// A store server the soak kills and restarts.
enum Backend {
    Redis(Standalone),
    Postgres(Postgres),
}

impl Backend {
    /// A crash and a restart, waiting until it serves again.
    fn crash_and_restart(&mut self) {
        match self {
            Backend::Redis(redis) => {
                redis.node.kill();
                std::thread::sleep(Duration::from_millis(300));
                redis.node.restart();
            }
            Backend::Postgres(pg) => pg.crash_and_restart(),
        }
    }
}

async fn soak(name: &str, dir: &TempDir, store: &str, backend: Option<Backend>) {
    // Short locks and leases' effects: a request waits at most 3 s for a
    // lock a killed process held, then answers 503.
    let config = dir.write(
        "chaos.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.timeout = 60\n\
             tools.sessions.lock_timeout = 3\n{store}"
        ),
    );
    let ports = [free_port(), free_port()];
    let servers: Vec<Arc<Mutex<Option<Server>>>> = ports
        .iter()
        .map(|&port| Arc::new(Mutex::new(Some(start(&config, port)))))
        .collect();
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + soak_time();

    let mut traffic = Vec::new();
    // Two hot sessions, four tasks each on the same cookie: counts only.
    for _ in 0..2 {
        let id = loop {
            if let Some(id) = tally.new_visitor(ports[0]).await {
                break id;
            }
        };
        for _ in 0..4 {
            let (tally, id) = (Arc::clone(&tally), id.clone());
            traffic.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    tally.count(pick(&ports), &id).await;
                }
            }));
        }
    }
    // Many visitors, each on its own session: counts, with the odd
    // regeneration, logout and new visit.
    for n in 0..12u64 {
        let tally = Arc::clone(&tally);
        traffic.push(tokio::spawn(async move {
            let mut random = Random::new(n);
            let mut id: Option<String> = None;
            while Instant::now() < deadline {
                let port = pick(&ports);
                id = match id {
                    None => tally.new_visitor(port).await,
                    Some(id) => match random.below(100) {
                        0..=4 => tally.regenerate(port, &id).await,
                        5..=7 => {
                            tally.delete(port, &id).await;
                            None
                        }
                        _ => tally.count(port, &id).await.then_some(id),
                    },
                };
            }
        }));
    }

    // The chaos, in one task, one thing at a time: a store restart is done
    // (it serves again) before a server process is started.
    let chaos = {
        let (servers, config) = (servers.clone(), config.clone());
        tokio::task::spawn_blocking(move || {
            let mut backend = backend;
            let mut random = Random::new(99);
            let (mut kills, mut restarts) = (0u64, 0u64);
            let mut next_store_restart = Instant::now() + Duration::from_secs(4);
            while Instant::now() + Duration::from_secs(2) < deadline {
                std::thread::sleep(Duration::from_millis(700 + random.below(1_500)));
                let i = random.below(2) as usize;
                if let Some(mut server) = servers[i].lock().unwrap().take() {
                    server.kill();
                }
                kills += 1;
                std::thread::sleep(Duration::from_millis(100 + random.below(600)));
                if let Some(b) = backend.as_mut() {
                    if Instant::now() > next_store_restart {
                        b.crash_and_restart();
                        restarts += 1;
                        next_store_restart = Instant::now() + Duration::from_secs(4);
                    }
                }
                *servers[i].lock().unwrap() = Some(start(&config, ports[i]));
            }
            (kills, restarts, backend)
        })
    };
    for task in traffic {
        task.await.unwrap();
    }
    let (kills, restarts, backend) = chaos.await.unwrap();

    // The store as a fresh process sees it.
    let loaded = server_sessions::Config::load(&config).unwrap();
    let store = server_sessions::store::open(&loaded).await.unwrap();
    let report = tally.check(&*store).await;
    eprintln!(
        "chaos on {name} for {:?}: {} server kills, {restarts} store restarts; {report}",
        soak_time(),
        kills
    );
    assert!(
        report.violations.is_empty(),
        "{name}: {} violations, the first: {:#?}",
        report.violations.len(),
        &report.violations[..report.violations.len().min(20)]
    );
    assert!(
        report.checked > 10,
        "{name}: too few sessions checked: {report}"
    );
    assert!(kills > 0, "{name}: nothing was killed");
    drop(servers);
    drop(backend);
}

/// Starts the conformance app on `port`.
fn start(config: &Path, port: u16) -> Server {
    Server::conformance_at(config, port)
}

fn pick(ports: &[u16; 2]) -> u16 {
    ports[Random::new(0).below(2) as usize]
}

/// What the client knows of one session.
#[derive(Debug, Default, Clone)]
struct Known {
    /// Requests sent that may have added one to the counter.
    sent: u64,
    /// The highest count answered with 200.
    acked: u64,
    /// Deleted, or regenerated away, with a 200: it must be gone.
    gone: bool,
    /// A regeneration or delete whose answer never came: what became of
    /// the session is not known, so it is not checked.
    unsure: bool,
}

#[derive(Default)]
struct Tally {
    sessions: Mutex<HashMap<String, Known>>,
    answers: Mutex<HashMap<String, u64>>,
    violations: Mutex<Vec<String>>,
}

impl Tally {
    fn answered(&self, what: &str) {
        *self
            .answers
            .lock()
            .unwrap()
            .entry(what.to_owned())
            .or_default() += 1;
    }

    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }

    /// Sends a request and books its status; a 5xx other than 503 is a
    /// violation. `None` when no answer came (the server was killed).
    async fn send(&self, port: u16, path: &str, id: Option<&str>) -> Option<Reply> {
        let client = server::client::Client::new(([127, 0, 0, 1], port).into());
        let cookie = id.map(|id| format!("session_id={id}"));
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.try_request(reqwest::Method::GET, path, cookie.as_deref()),
        )
        .await;
        match reply {
            Ok(Ok(reply)) => {
                self.answered(&reply.status.to_string());
                if reply.status >= 500 && reply.status != 503 {
                    self.violation(format!("{path}: {} {:?}", reply.status, reply.body));
                }
                Some(reply)
            }
            _ => {
                self.answered("no answer");
                None
            }
        }
    }

    /// A visitor without a cookie: the new session's id, once one is saved.
    async fn new_visitor(&self, port: u16) -> Option<String> {
        let reply = self.send(port, "/testStr", None).await?;
        if reply.status != 200 {
            return None;
        }
        let id = reply.cookie_value()?;
        if reply.body != "1" {
            self.violation(format!("a new session counted {:?}", reply.body));
        }
        let known = Known {
            sent: 1,
            acked: 1,
            ..Known::default()
        };
        self.sessions.lock().unwrap().insert(id.clone(), known);
        Some(id)
    }

    /// One count on session `id`; false when the session turned out to be
    /// gone (the visitor then starts over).
    async fn count(&self, port: u16, id: &str) -> bool {
        self.sessions
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default()
            .sent += 1;
        let Some(reply) = self.send(port, "/testStr", Some(id)).await else {
            return true;
        };
        if reply.status != 200 {
            return true;
        }
        let n: u64 = reply.body.parse().unwrap_or(0);
        let mut sessions = self.sessions.lock().unwrap();
        if reply.cookie_value().is_some_and(|new| new != id) {
            // A fresh session: ours was not found.
            let known = sessions.get(id).cloned().unwrap_or_default();
            if !known.unsure && !known.gone {
                drop(sessions);
                self.violation(format!(
                    "session {} was lost (acked {})",
                    short(id),
                    known.acked
                ));
            }
            return false;
        }
        let known = sessions.entry(id.to_owned()).or_default();
        known.acked = known.acked.max(n);
        true
    }

    /// Regenerates session `id`: the new id, or `None` when the answer did
    /// not say (the session is then not checked, and the visitor starts
    /// over).
    async fn regenerate(&self, port: u16, id: &str) -> Option<String> {
        let reply = self.send(port, "/regen", Some(id)).await;
        let mut sessions = self.sessions.lock().unwrap();
        let known = sessions.entry(id.to_owned()).or_default();
        match reply
            .filter(|r| r.status == 200)
            .and_then(|r| r.cookie_value())
        {
            Some(new) if new != id => {
                let carried = Known {
                    gone: false,
                    ..known.clone()
                };
                known.gone = true;
                sessions.insert(new.clone(), carried);
                Some(new)
            }
            _ => {
                known.unsure = true;
                None
            }
        }
    }

    async fn delete(&self, port: u16, id: &str) {
        let reply = self.send(port, "/delete", Some(id)).await;
        let mut sessions = self.sessions.lock().unwrap();
        let known = sessions.entry(id.to_owned()).or_default();
        if reply.is_some_and(|r| r.status == 200) {
            known.gone = true;
        } else {
            known.unsure = true;
        }
    }

    /// Checks every session the client knows against the store, and that
    /// everything the store lists loads.
    async fn check(&self, store: &dyn server_sessions::store::SessionAdmin) -> Report {
        use futures_util::StreamExt;
        let sessions = self.sessions.lock().unwrap().clone();
        let mut violations = self.violations.lock().unwrap().clone();
        let mut checked = 0;
        for (id, known) in &sessions {
            if known.unsure {
                continue;
            }
            checked += 1;
            let key = id
                .parse::<server_sessions::SessionId>()
                .unwrap()
                .store_key();
            let record = store.load(&key).await.unwrap();
            let count = record.as_ref().map(|r| {
                let data: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
                data["counter"].as_u64().unwrap_or(0)
            });
            match (known.gone, count) {
                (true, Some(n)) => violations.push(format!(
                    "session {} is back after it was deleted or regenerated ({n})",
                    short(id)
                )),
                (true, None) => {}
                (false, None) => violations.push(format!(
                    "session {} is missing (acked {})",
                    short(id),
                    known.acked
                )),
                (false, Some(n)) if n < known.acked || n > known.sent => violations.push(format!(
                    "session {} holds {n}: acked {}, sent {}",
                    short(id),
                    known.acked,
                    known.sent
                )),
                (false, Some(_)) => {}
            }
        }
        let keys: Vec<_> = store.keys().collect().await;
        let mut stored = 0;
        for key in keys {
            let key = key.unwrap();
            match store.load(&key).await.unwrap() {
                Some(_) => stored += 1,
                None => violations.push(format!("the record under {} does not load", key.short())),
            }
        }
        let answers = self.answers.lock().unwrap().clone();
        Report {
            checked,
            unsure: sessions.len() - checked,
            stored,
            answers,
            violations,
        }
    }
}

struct Report {
    checked: usize,
    unsure: usize,
    stored: usize,
    answers: HashMap<String, u64>,
    violations: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut answers: Vec<_> = self.answers.iter().collect();
        answers.sort();
        write!(
            f,
            "{} sessions checked, {} left unsure by an unanswered regenerate or delete, \
             {} records in the store, answers {answers:?}, {} violations",
            self.checked,
            self.unsure,
            self.stored,
            self.violations.len()
        )
    }
}

fn short(id: &str) -> String {
    id.parse::<server_sessions::SessionId>()
        .unwrap()
        .short()
        .to_string()
}

/// xorshift: random enough to spread the chaos, no dependency.
struct Random(u64);

impl Random {
    fn new(salt: u64) -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Random((nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A PostgreSQL cluster of the test's own (`initdb`, `pg_ctl`), on a free
/// port, run as the `postgres` user when the test runs as root.
struct Postgres {
    data: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Postgres {
    fn start(dir: &Path) -> Option<Postgres> {
        let Some(bin) = postgres_bin() else {
            return skip("no PostgreSQL server binaries (initdb, pg_ctl)");
        };
        std::fs::create_dir_all(dir).unwrap();
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir)
                .status();
            if !chown.is_ok_and(|s| s.success()) {
                return skip("cannot hand the test's directory to the postgres user");
            }
        }
        let pg = Postgres {
            data: dir.join("data"),
            port: free_port(),
            bin,
        };
        let init = pg.run("initdb", &["-A", "trust", "-U", "postgres", "-D"], true);
        if !init {
            return skip("initdb failed");
        }
        if !pg.ctl(&["start"]) {
            return skip("the test's PostgreSQL did not start");
        }
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m immediate`: the server stops as in a crash (no
    /// checkpoint, recovery from the WAL at start).
    fn crash_and_restart(&mut self) {
        assert!(
            self.ctl(&["restart", "-m", "immediate"]),
            "PostgreSQL did not come back"
        );
    }

    fn ctl(&self, args: &[&str]) -> bool {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
            self.port,
            self.data.parent().unwrap().display()
        );
        let mut all = vec!["-w", "-t", "30", "-l"];
        let log = self.data.parent().unwrap().join("log");
        let log = log.to_str().unwrap().to_owned();
        all.push(&log);
        all.extend(["-o", &options]);
        all.extend(args);
        all.push("-D");
        self.run("pg_ctl", &all, true)
    }

    /// Runs `tool` of the server binaries with `args` (and the data
    /// directory last, if `data`), as `postgres` when root.
    fn run(&self, tool: &str, args: &[&str], data: bool) -> bool {
        let exe = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        command.args(args);
        if data {
            command.arg(&self.data);
        }
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.ctl(&["stop", "-m", "immediate"]);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    // The effective uid, from /proc (the tests run on Linux).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}
