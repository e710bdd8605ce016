//! How the PostgreSQL store sends its statements: prepared once per
//! connection and cached (named), or unnamed with their parameter types,
//! parsed and planned each time; and, when `postgres_prepared` leaves it
//! open, finding out which the way to the server allows.
//!
//! A prepared statement lives on one server connection. A pooler in
//! transaction mode (PgBouncer before 1.21, or with
//! `max_prepared_statements = 0`) may run the next transaction on another
//! connection, where the name is unknown — or known as another statement:
//! every tokio-postgres client names its statements `s0`, `s1`, … so
//! another process may have left an `s3` there, and if it takes the same
//! parameters it runs in place of ours. An error afterwards is therefore no
//! way to find a pooler out; on auto the store first checks that the server
//! was reached at the address it dialed, and prepares only then. A lost
//! statement still turns preparing off for good, in case a pooler got past
//! the check, and is sent again unnamed.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Object;
use futures_util::stream::StreamExt;
use tokio::sync::OnceCell;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, RowStream};

use super::Inner;
use crate::store::Error;

/// Where the server says this connection reached it: its own address
/// (none over a Unix socket), its port, and its socket directories (none
/// for a user not allowed to read them).
const WHERE_SERVER: &str = "SELECT host(inet_server_addr()), \
       COALESCE(inet_server_port(), current_setting('port')::integer), \
       (SELECT setting FROM pg_settings WHERE name = 'unix_socket_directories')";

/// Whether statements are prepared or unnamed: the setting and what the
/// store found out. Shared by every connection of the pool, as they all
/// take the same way to the server.
pub(super) struct Naming {
    /// `postgres_prepared`: `None` is auto.
    setting: Option<bool>,
    /// Whether statements are prepared now.
    named: AtomicBool,
    /// On auto, set once the store has checked where it is connected.
    checked: OnceCell<()>,
}

impl Naming {
    pub(super) fn new(setting: Option<bool>) -> Self {
        Naming {
            setting,
            named: AtomicBool::new(setting != Some(false)),
            checked: OnceCell::new(),
        }
    }

    /// Whether statements are prepared now.
    pub(super) fn named(&self) -> bool {
        self.named.load(Ordering::Relaxed)
    }

    /// Turns preparing off; true for the one caller that did it.
    fn unname(&self) -> bool {
        self.named.swap(false, Ordering::Relaxed)
    }
}

/// What one try at a statement came to.
enum Attempt {
    /// It ran: its rows, and how many rows it changed.
    Done(Vec<Row>, u64),
    /// Its prepared form was not on the server connection it was sent to
    /// ([`lost_statement`]); it did not run.
    Lost(tokio_postgres::Error),
}

impl Inner {
    /// Runs one statement on a pooled connection: its rows, and how many
    /// rows it changed. Every statement of the store goes through here.
    ///
    /// Prepared while [`Naming::named`], else sent unnamed in one round
    /// trip, leaving nothing on the server connection. On auto, a prepared
    /// statement the server connection lost turns preparing off, logged
    /// once, and the statement is sent again unnamed: it failed before it
    /// ran, and it is one statement in a transaction of its own, so sending
    /// it again does it once.
    pub(super) async fn run(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<(Vec<Row>, u64), Error> {
        if self.naming.setting.is_none() {
            self.naming
                .checked
                .get_or_try_init(|| self.check_way())
                .await?;
        }
        if self.naming.named() {
            match self.attempt(context, sql, params, true).await? {
                Attempt::Done(rows, changed) => return Ok((rows, changed)),
                Attempt::Lost(error) if self.naming.setting.is_none() => {
                    // Many statements in flight can fail this way at once;
                    // the one that turns preparing off says so.
                    if self.naming.unname() {
                        tracing::warn!(
                            table = self.opts.table.text(),
                            %error,
                            "PostgreSQL lost a prepared statement between two transactions, \
                             as a pooler in transaction mode does: statements of this store \
                             are sent unnamed from now on (postgres_prepared = false does so \
                             from the start)"
                        );
                    }
                }
                Attempt::Lost(error) => return Err(Error::unavailable(context, error)),
            }
        }
        match self.attempt(context, sql, params, false).await? {
            Attempt::Done(rows, changed) => Ok((rows, changed)),
            // Nothing is named, so nothing is lost; the arm is for the type.
            Attempt::Lost(error) => Err(Error::unavailable(context, error)),
        }
    }

    /// One try at a statement, prepared (`named`) or unnamed. The
    /// connection goes back to the pool only after a success: after any
    /// failure, a lost statement included, it is closed, so that no pooled
    /// connection keeps a cache naming statements its server does not have.
    async fn attempt(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        named: bool,
    ) -> Result<Attempt, Error> {
        let conn = self.conn().await?;
        let attempt = self
            .timed(context, async {
                let client = conn.client();
                let stream = if named {
                    match bind_prepared(client, sql, params).await {
                        Ok(stream) => stream,
                        Err(error) if lost_statement(&error) => return Ok(Attempt::Lost(error)),
                        Err(error) => return Err(error),
                    }
                } else {
                    client
                        .query_typed_raw(sql, params.iter().map(|(v, t)| (*v, t.clone())))
                        .await?
                };
                futures_util::pin_mut!(stream);
                let mut rows = Vec::new();
                while let Some(row) = stream.next().await.transpose()? {
                    rows.push(row);
                }
                Ok(Attempt::Done(rows, stream.rows_affected().unwrap_or(0)))
            })
            .await?;
        if matches!(attempt, Attempt::Done(..)) {
            conn.release();
        }
        Ok(attempt)
    }

    /// On auto, before the first statement is prepared: keeps preparing on
    /// only if the server says it was reached at an address and port this
    /// store dials, so that nothing stands between them that could give
    /// one transaction's prepared statement to another's server
    /// connection. A pooler reaches it at an address of its own; so does
    /// a published container port or a Kubernetes service, whose
    /// statements are then sent unnamed too (`postgres_prepared = true`
    /// prepares them).
    async fn check_way(&self) -> Result<(), Error> {
        let context = "postgres: connection check";
        let rows = match self.attempt(context, WHERE_SERVER, &[], false).await? {
            Attempt::Done(rows, _) => rows,
            Attempt::Lost(error) => return Err(Error::unavailable(context, error)),
        };
        let server = Server::from_row(rows.first());
        // A name that does not resolve in time counts as elsewhere.
        let direct = tokio::time::timeout(self.opts.timeout, server.is_dialed_by(&self.opts.pg))
            .await
            .unwrap_or(false);
        if direct {
            tracing::debug!(
                table = self.opts.table.text(),
                "PostgreSQL was reached where this store dials: statements are prepared"
            );
        } else if self.naming.unname() {
            tracing::info!(
                table = self.opts.table.text(),
                server.addr = ?server.addr,
                server.port = ?server.port,
                "PostgreSQL was reached at another address than this store dials, \
                 through a pooler or an address translation: statements of this store \
                 are sent unnamed (postgres_prepared = true prepares them)"
            );
        }
        Ok(())
    }
}

/// Where the server says a connection reached it.
struct Server {
    /// Its own end of the TCP connection; none over a Unix socket.
    addr: Option<IpAddr>,
    port: Option<u16>,
    /// `unix_socket_directories`, comma-separated, if the user may read it.
    dirs: Option<String>,
}

/// Whether `client`, connected with `pg`, reached the server where it
/// dialed (see [`Naming`]'s check): for the `LISTEN` connection, which a
/// pooler would share with others.
pub(super) async fn reached_directly(
    client: &tokio_postgres::Client,
    pg: &tokio_postgres::Config,
) -> bool {
    let Ok(rows) = client.query(WHERE_SERVER, &[]).await else {
        return false;
    };
    let server = Server::from_row(rows.first());
    let timeout = pg
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    tokio::time::timeout(timeout, server.is_dialed_by(pg))
        .await
        .unwrap_or(false)
}

impl Server {
    /// What the server said of itself in answer to [`WHERE_SERVER`].
    fn from_row(row: Option<&Row>) -> Self {
        let addr: Option<String> = row.and_then(|r| r.try_get(0).ok().flatten());
        let port: Option<i32> = row.and_then(|r| r.try_get(1).ok());
        let dirs: Option<String> = row.and_then(|r| r.try_get(2).ok().flatten());
        Server {
            addr: addr.and_then(|a| a.parse().ok()).map(canonical),
            port: port.and_then(|p| u16::try_from(p).ok()),
            dirs,
        }
    }

    /// Whether one of the places `pg` connects to is the server itself:
    /// the same port, and the same address (a host name is resolved) or,
    /// over a Unix socket, one of its socket directories.
    async fn is_dialed_by(&self, pg: &tokio_postgres::Config) -> bool {
        let Some(port) = self.port else {
            return false;
        };
        let (hosts, hostaddrs, ports) = (pg.get_hosts(), pg.get_hostaddrs(), pg.get_ports());
        // As tokio-postgres pairs them: one port for all, or one each.
        for i in 0..hosts.len().max(hostaddrs.len()) {
            if ports.get(i).or(ports.first()).copied().unwrap_or(5432) != port {
                continue;
            }
            let dialed = match (self.addr, hostaddrs.get(i), hosts.get(i)) {
                (Some(addr), Some(dialed), _) => canonical(*dialed) == addr,
                (Some(addr), None, Some(Host::Tcp(name))) => {
                    match tokio::net::lookup_host((name.as_str(), port)).await {
                        Ok(mut found) => found.any(|a| canonical(a.ip()) == addr),
                        Err(_) => false,
                    }
                }
                (None, None, Some(Host::Unix(dir))) => self.has_socket_dir(dir),
                _ => false,
            };
            if dialed {
                return true;
            }
        }
        false
    }

    /// Whether `dir` is one of the server's socket directories; true when
    /// the user may not read them, as the port matched.
    fn has_socket_dir(&self, dir: &Path) -> bool {
        match &self.dirs {
            Some(dirs) => dirs
                .split(',')
                .map(|d| d.trim().trim_matches('"'))
                .any(|d| Path::new(d) == dir),
            None => true,
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as the IPv4 one.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// Prepares `sql` on `client` (once per connection, then from its cache)
/// and binds `params` to it: the two steps that name the statement to the
/// server. Whatever fails here failed before the statement ran — the
/// server runs nothing until the bind has succeeded.
async fn bind_prepared(
    client: &Object,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<RowStream, tokio_postgres::Error> {
    let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
    let statement = client.prepare_typed_cached(sql, &types).await?;
    client
        .query_raw(&statement, params.iter().map(|(v, _)| *v))
        .await
}

/// Whether preparing or binding failed because the server connection did
/// not hold our prepared statement: it has none of that name (26000,
/// `invalid_sql_statement_name`), already has one from another client
/// (42P05, `duplicate_prepared_statement`), or has one of that name taking
/// other parameters (08P01 naming a prepared statement, as PostgreSQL's
/// bind and PgBouncer's own checks answer). A direct connection keeps what
/// it prepared: these come from a pooler that moved us to another one.
fn lost_statement(error: &tokio_postgres::Error) -> bool {
    let Some(db) = error.as_db_error() else {
        return false;
    };
    let code = db.code();
    *code == SqlState::INVALID_SQL_STATEMENT_NAME
        || *code == SqlState::DUPLICATE_PSTATEMENT
        || (*code == SqlState::PROTOCOL_VIOLATION && db.message().contains("prepared statement"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(addr: Option<&str>, port: u16, dirs: Option<&str>) -> Server {
        Server {
            addr: addr.map(|a| canonical(a.parse().unwrap())),
            port: Some(port),
            dirs: dirs.map(str::to_owned),
        }
    }

    async fn dialed(server: &Server, url: &str) -> bool {
        server.is_dialed_by(&url.parse().unwrap()).await
    }

    #[tokio::test]
    async fn the_server_itself_is_told_from_what_stands_before_it() {
        let local = server(Some("127.0.0.1"), 5432, None);
        assert!(dialed(&local, "postgres://u@127.0.0.1:5432/db").await);
        assert!(dialed(&local, "postgres://u@127.0.0.1/db").await);
        assert!(dialed(&local, "postgres://u@localhost/db").await);
        assert!(dialed(&local, "host=db.invalid hostaddr=127.0.0.1 user=u").await);
        assert!(dialed(&local, "host=10.9.9.9,127.0.0.1 port=5432 user=u").await);
        // A bouncer on another port, or another host.
        assert!(!dialed(&local, "postgres://u@127.0.0.1:6432/db").await);
        assert!(!dialed(&local, "postgres://u@127.0.0.2:5432/db").await);
        assert!(!dialed(&local, "host=10.9.9.9,127.0.0.1 port=5432,6432 user=u").await);
        // Over a Unix socket: the port, and the directory when readable.
        let unix = server(None, 5432, Some("/var/run/postgresql, \"/tmp\""));
        assert!(dialed(&unix, "host=/var/run/postgresql user=u").await);
        assert!(dialed(&unix, "host=/tmp/ user=u").await);
        assert!(!dialed(&unix, "host=/run/pgbouncer user=u").await);
        assert!(!dialed(&unix, "host=/tmp port=6432 user=u").await);
        assert!(!dialed(&unix, "postgres://u@127.0.0.1/db").await);
        assert!(dialed(&server(None, 5432, None), "host=/run/pgbouncer user=u").await);
        // The server reached over TCP while a Unix socket was dialed.
        assert!(!dialed(&local, "host=/tmp user=u").await);
        let mapped = server(Some("::ffff:127.0.0.1"), 5432, None);
        assert!(dialed(&mapped, "postgres://u@127.0.0.1/db").await);
    }
}
