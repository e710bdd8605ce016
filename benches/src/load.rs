//! The load generator: keep-alive HTTP/1.1 connections from a hyper client,
//! each sending one request after another for a fixed time.
//!
//! It runs on its own tokio runtime (its own threads), apart from the
//! servers', so every system is driven by the same client in the same way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{COOKIE, HOST, SET_COOKIE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Which cookie each connection sends.
#[derive(Debug, Clone)]
pub(crate) enum Cookies {
    /// None: every request is a new visitor.
    None,
    /// Connection `i` sends the `i`-th (`name=value`).
    PerConnection(Vec<String>),
    /// All connections send this one.
    Shared(String),
}

impl Cookies {
    fn for_connection(&self, i: usize) -> Option<&str> {
        match self {
            Cookies::None => None,
            Cookies::PerConnection(all) => Some(&all[i % all.len()]),
            Cookies::Shared(one) => Some(one),
        }
    }
}

/// What one round measured.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// 200 answers received before the deadline.
    pub(crate) ok_in_time: u64,
    /// All 200 answers, including those to requests still running at the
    /// deadline (they changed the counter too).
    pub(crate) ok_total: u64,
    /// Other statuses and failed connections.
    pub(crate) errors: u64,
    /// Latencies of the requests counted in `ok_in_time`, in microseconds.
    latencies: Vec<u32>,
    duration: Duration,
    /// New visitors: the cookies (`name=value`) the server handed out, so
    /// that the sessions can be removed from a shared store afterwards.
    pub(crate) handed_out: Vec<String>,
}

impl Round {
    pub(crate) fn rps(&self) -> f64 {
        self.ok_in_time as f64 / self.duration.as_secs_f64()
    }

    /// The 99th percentile latency in milliseconds.
    pub(crate) fn p99_ms(&mut self) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let k = (self.latencies.len() * 99).div_ceil(100) - 1;
        let (_, p99, _) = self.latencies.select_nth_unstable(k);
        Some(f64::from(*p99) / 1000.0)
    }
}

/// One connection, kept alive across requests.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

/// An answer, with what the benchmark looks at.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// The `name=value` part of the first Set-Cookie, if any.
    pub(crate) cookie: Option<String>,
    pub(crate) body: Bytes,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    async fn get(&mut self, path: &str, cookie: Option<&str>) -> anyhow::Result<Reply> {
        let mut req = Request::get(path).header(HOST, "127.0.0.1");
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        let req = req.body(Empty::new())?;
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let cookie = res
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_string());
        let body = res.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            cookie,
            body,
        })
    }
}

/// One request on a connection of its own.
pub(crate) async fn get_once(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> anyhow::Result<Reply> {
    Conn::open(addr).await?.get(path, cookie).await
}

/// Starts a session: one counter request without a cookie. Returns the
/// cookie to send back (`name=value`).
pub(crate) async fn new_session(addr: SocketAddr) -> anyhow::Result<String> {
    let reply = get_once(addr, "/", None).await?;
    if reply.status != StatusCode::OK {
        bail!("starting a session answered {}", reply.status);
    }
    reply.cookie.context("starting a session set no cookie")
}

/// The session's counter, read without changing it.
pub(crate) async fn read_counter(addr: SocketAddr, cookie: &str) -> anyhow::Result<u64> {
    let reply = get_once(addr, "/read", Some(cookie)).await?;
    if reply.status != StatusCode::OK {
        bail!("reading the counter answered {}", reply.status);
    }
    Ok(std::str::from_utf8(&reply.body)?.trim().parse()?)
}

/// Sends `GET /` on `connections` keep-alive connections for `duration`.
pub(crate) async fn round(
    addr: SocketAddr,
    connections: usize,
    cookies: &Cookies,
    duration: Duration,
) -> Round {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let cookie = cookies.for_connection(i).map(String::from);
            tokio::spawn(connection(addr, cookie, deadline))
        })
        .collect();
    let mut total = Round {
        duration,
        ..Round::default()
    };
    for task in tasks {
        let r = task.await.unwrap_or_default();
        total.ok_in_time += r.ok_in_time;
        total.ok_total += r.ok_total;
        total.errors += r.errors;
        total.latencies.extend(r.latencies);
        total.handed_out.extend(r.handed_out);
    }
    total
}

/// One connection's loop. A failed connection is counted and opened again,
/// so a server that closes connections on errors is still measured.
async fn connection(addr: SocketAddr, cookie: Option<String>, deadline: Instant) -> Round {
    let mut r = Round {
        latencies: Vec::with_capacity(1 << 14),
        ..Round::default()
    };
    let mut conn = None;
    while Instant::now() < deadline {
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::open(addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    r.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match c.get("/", cookie.as_deref()).await {
            Ok(reply) if reply.status == StatusCode::OK => {
                let done = Instant::now();
                r.ok_total += 1;
                if cookie.is_none() {
                    r.handed_out.extend(reply.cookie);
                }
                if done <= deadline {
                    r.ok_in_time += 1;
                    let micros = (done - sent).as_micros();
                    r.latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
            }
            Ok(_) => r.errors += 1,
            Err(_) => {
                r.errors += 1;
                conn = None;
            }
        }
    }
    r
}
