//! The one connection type a [`RedisStore`](super::RedisStore)'s commands
//! and scripts run on, whichever Redis the URL named (`target.rs`): one
//! node, a Cluster, or the master a set of Sentinels names.
//!
//! The store never asks which one it has, except to list keys: a `SCAN`
//! cursor belongs to one server, so a Cluster is scanned master by master.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub,
};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use ::redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, FromRedisValue, Pipeline,
    RedisError, RedisFuture, RedisResult, ServerErrorKind, ToRedisArgs, Value,
};

use super::target::{SentinelTarget, Target};

/// How long one connection attempt may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its answer on an open connection.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

impl Target {
    /// Opens a connection that follows the deployment by itself: it
    /// reconnects to a node that comes back, follows a Cluster's slots as
    /// they move, and finds a new master after a Sentinel failover.
    pub(super) async fn connect(&self) -> RedisResult<Conn> {
        match self {
            // Few, quick reconnection attempts: a request waiting on a dead
            // server should get its 503 in seconds, and the next request
            // starts a new attempt anyway.
            Target::Node(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let conn = client.get_connection_manager_with_config(config).await?;
                Ok(Conn::Node(conn))
            }
            Target::Cluster { client, .. } => {
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
            Target::Sentinel(target) => {
                let conn = SentinelConnection::new(target)?;
                // Find the master now, so that a wrong name or unreachable
                // Sentinels fail at start as an unreachable node does.
                conn.0.master().await?;
                Ok(Conn::Sentinel(conn))
            }
        }
    }
}

impl Target {
    /// The channel on which a master announces the keys it expired
    /// (keyspace notifications, when the server's `notify-keyspace-events`
    /// has `Ex`); a Cluster's is database 0's, the only one it has.
    pub(super) fn expiry_channel(&self) -> String {
        let db = match self {
            Target::Node(client) => client.get_connection_info().redis_settings().db(),
            Target::Cluster { .. } => 0,
            Target::Sentinel(t) => t.db,
        };
        format!("__keyevent@{db}__:expired")
    }

    /// Subscribes to `channel` on every server that expires keys: the node,
    /// the master the Sentinels name now, or each master of a Cluster as
    /// the Cluster lists them now — a Cluster node announces only its own
    /// keys, and only to its own subscribers.
    pub(super) async fn subscribe_expiries(&self, channel: &str) -> RedisResult<Vec<PubSub>> {
        let Target::Cluster { client, nodes } = self else {
            return Ok(vec![self.subscribe(channel, 0).await?]);
        };
        let mut conn = Conn::Cluster(client.get_async_connection().await?);
        // With the first node's credentials and TLS settings, as the
        // Cluster client uses them for every node.
        let info = nodes[0].get_connection_info();
        let subscribing = conn.scan_nodes().await?.into_iter().filter_map(|master| {
            let ScanNode::Master { host, port } = master else {
                return None;
            };
            let addr = match info.addr() {
                ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => ConnectionAddr::Tcp(host, port),
            };
            let client = Client::open(info.clone().set_addr(addr));
            Some(async move {
                let mut pubsub = client?.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok::<_, RedisError>(pubsub)
            })
        });
        // All at once: one slow master must not hold up the others'.
        futures_util::future::try_join_all(subscribing).await
    }

    /// Subscribes to `channel` on a server that delivers what the store's
    /// scripts publish: the node; the `attempt`-th listed node of a Cluster
    /// (in turn, so that a dead node is not asked forever), where a
    /// `PUBLISH` on any node reaches every node; the master the Sentinels
    /// name now.
    pub(super) async fn subscribe(&self, channel: &str, attempt: usize) -> RedisResult<PubSub> {
        let client = match self {
            Target::Node(client) => client.clone(),
            Target::Cluster { nodes, .. } => nodes[attempt % nodes.len()].clone(),
            Target::Sentinel(t) => {
                Sentinel::build(t.sentinels.clone())?
                    .async_master_for(&t.master, Some(&t.node))
                    .await?
            }
        };
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    }
}

/// A connection to whichever deployment the URL named. Cheap to clone;
/// clones share the underlying connections.
#[derive(Clone)]
pub(super) enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConnection),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Node(_) => "Conn::Node",
            Conn::Cluster(_) => "Conn::Cluster",
            Conn::Sentinel(_) => "Conn::Sentinel",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

/// A server to run `SCAN` on.
#[derive(Debug, Clone)]
pub(super) enum ScanNode {
    /// The one server behind a node or Sentinel connection.
    Only,
    /// A Cluster master, by the address the Cluster gave.
    Master { host: String, port: u16 },
}

impl Conn {
    /// The servers that together hold every key: each master of a Cluster
    /// (as the Cluster sees them now), or the one server.
    pub(super) async fn scan_nodes(&mut self) -> RedisResult<Vec<ScanNode>> {
        let Conn::Cluster(c) = self else {
            return Ok(vec![ScanNode::Only]);
        };
        // A command sent to all masters without an answer policy comes back
        // as a map from each master's address to its answer.
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let Value::Map(answers) = c.route_command(::redis::cmd("PING"), routing).await? else {
            return Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "the cluster did not list its masters",
            )));
        };
        answers
            .into_iter()
            .map(|(addr, answer)| {
                answer.extract_error()?;
                let addr = String::from_redis_value(addr)?;
                let (host, port) = addr
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                    .ok_or_else(|| {
                        RedisError::from((
                            ErrorKind::UnexpectedReturnType,
                            "a cluster master's address is not host:port",
                        ))
                    })?;
                Ok(ScanNode::Master { host, port })
            })
            .collect()
    }

    /// Runs `cmd` (a `SCAN` step) on `node`.
    pub(super) async fn run_on<T: FromRedisValue>(
        &mut self,
        node: &ScanNode,
        cmd: Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Conn::Cluster(c), ScanNode::Master { host, port }) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = c.route_command(cmd, routing).await?;
                Ok(T::from_redis_value(value.extract_error()?)?)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// A connection to the master that the Sentinels name, replaced when that
/// master stops answering or turns out to be a replica.
///
/// redis-rs asks the Sentinels and checks that the node they name calls
/// itself a master (`ROLE`), trying every Sentinel in turn; it does not
/// follow a failover by itself, so this does: a connection that fails
/// (dropped, refused, timed out) or is refused a write (`READONLY`: the
/// node was demoted) is forgotten, and the next command asks the Sentinels
/// again. Only one task asks at a time; the others wait for its answer.
/// A refused write changed nothing, so it is sent once more to the new
/// master; any other failure is reported (a command that may have run is
/// never repeated).
#[derive(Clone)]
pub(super) struct SentinelConnection(Arc<SentinelShared>);

struct SentinelShared {
    master_name: String,
    node: SentinelNodeConnectionInfo,
    db: i64,
    /// redis-rs' Sentinel client; asking needs `&mut`, and one asker at a
    /// time is what we want anyway.
    sentinel: tokio::sync::Mutex<Sentinel>,
    current: Mutex<Option<Master>>,
    generation: AtomicU64,
}

/// The master's connection, numbered so that a task that saw it fail
/// forgets only that one, not a newer one another task found meanwhile.
#[derive(Clone)]
struct Master {
    generation: u64,
    conn: MultiplexedConnection,
}

impl SentinelConnection {
    fn new(target: &SentinelTarget) -> RedisResult<Self> {
        Ok(SentinelConnection(Arc::new(SentinelShared {
            master_name: target.master.clone(),
            node: target.node.clone(),
            db: target.db,
            sentinel: tokio::sync::Mutex::new(Sentinel::build(target.sentinels.clone())?),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
        })))
    }
}

impl SentinelShared {
    fn current(&self) -> Option<Master> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The master's connection, asking the Sentinels if there is none.
    async fn master(&self) -> RedisResult<Master> {
        if let Some(m) = self.current() {
            return Ok(m);
        }
        let mut sentinel = self.sentinel.lock().await;
        // Another task may have found it while this one queued.
        if let Some(m) = self.current() {
            return Ok(m);
        }
        let client = sentinel
            .async_master_for(&self.master_name, Some(&self.node))
            .await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let master = Master {
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            conn,
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(master.clone());
        Ok(master)
    }

    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|m| m.generation == generation) {
            *current = None;
        }
    }
}

/// What a failed answer says about the master we talk to.
#[derive(PartialEq, Eq)]
enum Verdict {
    /// It answered; whatever it said stands.
    Fine,
    /// It is gone or unreachable: ask the Sentinels next time.
    Gone,
    /// It is no master any more and refused the write, which therefore did
    /// not happen: ask the Sentinels and send it again.
    Demoted,
}

fn verdict_of_error(e: &RedisError) -> Verdict {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ReadOnly) => Verdict::Demoted,
        ErrorKind::Server(ServerErrorKind::MasterDown) | ErrorKind::Io | ErrorKind::Parse => {
            Verdict::Gone
        }
        _ if e.is_timeout() || e.is_connection_dropped() => Verdict::Gone,
        _ => Verdict::Fine,
    }
}

fn verdict_of_value(v: &Value) -> Verdict {
    match v {
        Value::ServerError(e) if e.kind() == Some(ServerErrorKind::ReadOnly) => Verdict::Demoted,
        Value::ServerError(e) if e.kind() == Some(ServerErrorKind::MasterDown) => Verdict::Gone,
        _ => Verdict::Fine,
    }
}

impl SentinelConnection {
    /// Sends with `send` to the master, judging the answer with `judge`.
    async fn send<'a, T, F>(&'a self, send: F, judge: fn(&T) -> Verdict) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> RedisFuture<'a, T>,
    {
        let mut resent = false;
        loop {
            let master = self.0.master().await?;
            let answer = send(master.conn).await;
            let verdict = match &answer {
                Ok(v) => judge(v),
                Err(e) => verdict_of_error(e),
            };
            if verdict != Verdict::Fine {
                self.0.forget(master.generation);
                tracing::debug!(
                    demoted = verdict == Verdict::Demoted,
                    "the redis master stopped answering as one; asking the sentinels again"
                );
            }
            if verdict == Verdict::Demoted && !resent {
                resent = true;
                continue;
            }
            return answer;
        }
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.send(
                |mut conn| Box::pin(async move { conn.req_packed_command(cmd).await }),
                verdict_of_value,
            )
            .await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.send(
                |mut conn| {
                    Box::pin(async move { conn.req_packed_commands(pipeline, offset, count).await })
                },
                |values: &Vec<Value>| {
                    values
                        .iter()
                        .map(verdict_of_value)
                        .find(|v| *v != Verdict::Fine)
                        .unwrap_or(Verdict::Fine)
                },
            )
            .await
        })
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

/// A Lua script of the store, run by its hash (`EVALSHA`) and sent in full
/// (`EVAL`) only to a node that does not know it yet (new, restarted, just
/// promoted).
///
/// redis-rs' own `Script::invoke_async` loads a missing script with
/// `SCRIPT LOAD`, which a Cluster sends to every node and which fails while
/// any of them is down — during a failover, exactly when scripts go
/// missing. `EVAL` goes to the key's own node, like the call itself.
pub(super) struct Lua {
    code: String,
    hash: String,
}

/// One call of a [`Lua`] script: its keys and arguments.
pub(super) struct LuaCall<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Lua {
    pub(super) fn new(code: String) -> Lua {
        let hash = ::redis::Script::new(&code).get_hash().to_owned();
        Lua { code, hash }
    }

    pub(super) fn prepare_invoke(&self) -> LuaCall<'_> {
        LuaCall {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

impl LuaCall<'_> {
    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn cmd(&self, by_hash: bool) -> Cmd {
        let mut cmd = if by_hash {
            let mut c = ::redis::cmd("EVALSHA");
            c.arg(&self.lua.hash);
            c
        } else {
            let mut c = ::redis::cmd("EVAL");
            c.arg(&self.lua.code);
            c
        };
        cmd.arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }

    pub(super) async fn invoke_async<T: FromRedisValue>(&self, conn: &mut Conn) -> RedisResult<T> {
        match self.cmd(true).query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.cmd(false).query_async(conn).await
            }
            answer => answer,
        }
    }

    /// Runs the script, then `WAIT replicas timeout` right behind it on the
    /// same connection (`WAIT` counts the replicas that have every write of
    /// its connection so far, so it must follow the write on the one the
    /// write went on). Answers the script's result and how many replicas
    /// acknowledged.
    pub(super) async fn invoke_and_wait<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        wait: Wait,
    ) -> RedisResult<(T, u64)> {
        match wait.after(self.cmd(true)).query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                wait.after(self.cmd(false)).query_async(conn).await
            }
            answer => answer,
        }
    }
}

/// `WAIT` for this many replicas, at most this long.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wait {
    pub(super) replicas: u32,
    pub(super) timeout: Duration,
}

impl Wait {
    /// `cmd` and the `WAIT` behind it, as one pipeline: one round trip, on
    /// one connection, to the node of `cmd`'s key.
    pub(super) fn after(self, cmd: Cmd) -> Pipeline {
        let mut pipe = ::redis::pipe();
        pipe.add_command(cmd)
            .cmd("WAIT")
            .arg(self.replicas)
            .arg(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX));
        pipe
    }
}
