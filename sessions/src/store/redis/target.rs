//! What a Redis storage URL names — one node, a Cluster, or the master a
//! set of Sentinels names — parsed into a [`Target`], not yet connected
//! (`conn.rs` connects). Errors never repeat the URL, which may hold a
//! password.

use std::time::Duration;

use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::sentinel::SentinelNodeConnectionInfo;
use ::redis::{Client, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult};

use super::conn::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::store::Error;

/// A Cluster request with its redirections, slot-map refreshes and retries
/// gives up after this, inside the store's own bound on a call (5 s), so a
/// slot without a master answers a clear error rather than a bare timeout.
const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Retries of one Cluster request (redirections, slot-map refreshes, and
/// waits out a `CLUSTERDOWN`), spaced 50 to 500 ms apart. Enough that the
/// request timeout above, not the count, ends them: while a dead master is
/// being replaced, a Cluster with `cluster-require-full-coverage yes` (the
/// default) refuses every key for a second or two, and requests on the
/// healthy masters should ride that out rather than fail.
const CLUSTER_RETRIES: u32 = 16;

/// What a storage URL names, parsed but not yet connected.
pub(super) enum Target {
    Node(Client),
    Cluster {
        client: ClusterClient,
        /// The nodes the URL listed, for the wake-up subscription (any
        /// node of a Cluster delivers every `PUBLISH`).
        nodes: Vec<Client>,
    },
    Sentinel(SentinelTarget),
}

/// A master found through Sentinels.
pub(super) struct SentinelTarget {
    pub(super) sentinels: Vec<ConnectionInfo>,
    pub(super) master: String,
    /// How to talk to the master once found: its database and credentials.
    pub(super) node: SentinelNodeConnectionInfo,
    pub(super) db: i64,
}

/// Which kind of deployment, for `Debug` (never the URL: it may hold a
/// password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Topology {
    Node,
    Cluster,
    Sentinel,
}

impl Target {
    /// Parses a `storage_url`:
    ///
    /// - `redis://[user:password@]host[:port][/db]` (or any URL redis-rs
    ///   takes): one node;
    /// - several such URLs separated by commas, or
    ///   `redis+cluster://[user:password@]host:port[,host:port…]`: a Redis
    ///   Cluster, found from any of the nodes listed;
    /// - `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/db]`:
    ///   the master the Sentinels at those addresses know as `MASTER`. The
    ///   credentials are the master's; the Sentinels are asked without any.
    ///
    /// Errors never repeat the URL, which may hold a password.
    pub(super) fn parse(url: &str) -> Result<Target, Error> {
        let bad = |e: RedisError| Error::config("storage_url", e);
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let multi = Multi::split(rest, 6379)?;
            let nodes = multi
                .hosts
                .iter()
                .map(|h| format!("redis://{}{h}{}", multi.auth, multi.path))
                .collect::<Vec<_>>();
            return cluster(nodes);
        }
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            return sentinel(Multi::split(rest, 26379)?);
        }
        if url.contains(',') {
            return cluster(url.split(',').map(|u| u.trim().to_owned()).collect());
        }
        Client::open(url).map(Target::Node).map_err(bad)
    }

    pub(super) fn topology(&self) -> Topology {
        match self {
            Target::Node(_) => Topology::Node,
            Target::Cluster { .. } => Topology::Cluster,
            Target::Sentinel(_) => Topology::Sentinel,
        }
    }
}

fn cluster(nodes: Vec<String>) -> Result<Target, Error> {
    if nodes.iter().any(|n| n.is_empty()) {
        return Err(Error::config(
            "storage_url",
            "an empty node in a comma-separated cluster URL",
        ));
    }
    // With the first node's credentials and database, as the Cluster
    // client uses them for every node.
    let infos = nodes
        .iter()
        .map(|n| n.as_str().into_connection_info())
        .collect::<RedisResult<Vec<_>>>()
        .map_err(|e| Error::config("storage_url", e))?;
    let first = infos[0].redis_settings().clone();
    let clients = infos
        .into_iter()
        .map(|info| Client::open(info.set_redis_settings(first.clone())))
        .collect::<RedisResult<Vec<_>>>()
        .map_err(|e| Error::config("storage_url", e))?;
    ClusterClientBuilder::new(nodes)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(CLUSTER_REQUEST_TIMEOUT))
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()
        .map(|client| Target::Cluster {
            client,
            nodes: clients,
        })
        .map_err(|e| Error::config("storage_url", e))
}

fn sentinel(multi: Multi<'_>) -> Result<Target, Error> {
    let bad = |why: &'static str| Error::config("storage_url", why);
    let path = multi.path.strip_prefix('/').unwrap_or_default();
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut parts = path.split('/');
    let master = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("a sentinel URL names the master: redis+sentinel://host:port/MASTER"))?;
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .map_err(|_| bad("the database after the master's name is not a number"))?,
    };
    if parts.next().is_some() {
        return Err(bad(
            "a sentinel URL's path is /MASTER or /MASTER/db, nothing more",
        ));
    }
    // The master's credentials, database and options, decoded as redis-rs
    // decodes any URL (the address is a placeholder: Sentinel gives it).
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let master_info = format!("redis://{}{}/{db}{query}", multi.auth, multi.hosts[0])
        .into_connection_info()
        .map_err(|e| Error::config("storage_url", e))?;
    let sentinels = multi
        .hosts
        .iter()
        .map(|h| format!("redis://{h}").into_connection_info())
        .collect::<RedisResult<Vec<_>>>()
        .map_err(|e| Error::config("storage_url", e))?;
    Ok(Target::Sentinel(SentinelTarget {
        sentinels,
        master: master.to_owned(),
        db,
        node: SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(master_info.redis_settings().clone()),
    }))
}

/// The parts of a URL with several hosts, which the URL syntax has no room
/// for: `[auth@]host[:port][,host[:port]…][/path][?query]`.
struct Multi<'a> {
    /// `user:password@`, or empty.
    auth: &'a str,
    /// `host:port`, the port added where it was left out.
    hosts: Vec<String>,
    /// From the first `/` or `?` on, or empty.
    path: &'a str,
}

impl<'a> Multi<'a> {
    fn split(rest: &'a str, default_port: u16) -> Result<Multi<'a>, Error> {
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (auth, hosts) = match authority.rfind('@') {
            Some(i) => authority.split_at(i + 1),
            None => ("", authority),
        };
        let hosts = hosts
            .split(',')
            .map(|h| {
                let h = h.trim();
                if h.is_empty() {
                    return Err(Error::config("storage_url", "an empty host in the list"));
                }
                // `[::1]` has colons but no port; `[::1]:7000` has one.
                let has_port = match h.strip_prefix('[') {
                    Some(v6) => v6.contains("]:"),
                    None => h.contains(':'),
                };
                Ok(if has_port {
                    h.to_owned()
                } else {
                    format!("{h}:{default_port}")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Multi { auth, hosts, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(url: &str) -> String {
        match Target::parse(url) {
            Err(
                e @ Error::Config {
                    setting: "storage_url",
                    ..
                },
            ) => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                text
            }
            Err(e) => panic!("{url}: not a storage_url error: {e:?}"),
            Ok(_) => panic!("{url}: parsed"),
        }
    }

    #[test]
    fn url_forms() {
        let topology = |u: &str| Target::parse(u).unwrap().topology();
        assert_eq!(topology("redis://127.0.0.1:6379/0"), Topology::Node);
        assert_eq!(
            topology("redis://127.0.0.1:7000,redis://127.0.0.1:7001, redis://127.0.0.1:7002"),
            Topology::Cluster
        );
        assert_eq!(
            topology("redis+cluster://127.0.0.1:7000"),
            Topology::Cluster
        );
        assert_eq!(
            topology("redis+cluster://127.0.0.1:7000,127.0.0.1:7001?protocol=resp3"),
            Topology::Cluster
        );
        assert_eq!(
            topology("redis+cluster://u:p%40ss@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002,host"),
            Topology::Cluster
        );
        assert_eq!(
            topology("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster"),
            Topology::Sentinel
        );
        assert_eq!(
            topology("redis+sentinel://:secret@h1,h2:26380/mymaster/3"),
            Topology::Sentinel
        );
    }

    #[test]
    fn sentinel_url_carries_the_masters_credentials_and_db() {
        let Target::Sentinel(t) =
            Target::parse("redis+sentinel://user:p%40ss@h1,h2:26380/mymaster/3").unwrap()
        else {
            panic!("not a sentinel target")
        };
        assert_eq!(t.master, "mymaster");
        assert_eq!(t.sentinels.len(), 2);
        // Sentinels are asked without the master's password.
        assert!(t
            .sentinels
            .iter()
            .all(|s| s.redis_settings().password().is_none()));
        assert_eq!(t.sentinels[0].addr().to_string(), "h1:26379");
        assert_eq!(t.sentinels[1].addr().to_string(), "h2:26380");
        let debug = format!("{:?}", t.node);
        assert!(!debug.contains("p@ss"), "{debug}");
    }

    #[test]
    fn bad_urls_are_config_errors_that_keep_the_password_out() {
        for url in [
            "redis://:secret@host:notaport",
            "redis+cluster://:secret@h1,,h2",
            "redis+cluster://:secret@h1:x",
            "redis+sentinel://:secret@h1:26379",
            "redis+sentinel://:secret@h1:26379/",
            "redis+sentinel://:secret@h1:26379/m/notadb",
            "redis+sentinel://:secret@h1:26379/m/0/extra",
            "redis://:secret@h1:7000,",
            "nosuchscheme://:secret@h1",
        ] {
            let text = config_error(url);
            assert!(!text.contains("secret"), "{url}: {text}");
        }
    }
}
