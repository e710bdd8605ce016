//! HTTP/1.1 from a hyper client: the single requests the benchmark makes
//! to set up and check a round (start a session, read its counter), and the
//! visitor loop that the client process ([`crate::client`]) runs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{COOKIE, HOST, SET_COOKIE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One connection, kept alive across requests.
pub(crate) struct Conn {
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
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
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

/// What visitors counted.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// 200 answers received before the deadline.
    pub(crate) ok_in_time: u64,
    /// All 200 answers, including those to requests still running at the
    /// deadline (they changed the counter too).
    pub(crate) ok_total: u64,
    /// Other statuses and failed connections.
    pub(crate) errors: u64,
    /// For each request (or burst) all answered 200 before the deadline:
    /// the time from sending until the last answer, in microseconds.
    pub(crate) samples: Vec<u32>,
    /// Requests sent without a cookie: the cookies (`name=value`) the
    /// server handed out, so that the sessions can be removed from a shared
    /// store afterwards.
    pub(crate) handed_out: Vec<String>,
}

impl Tally {
    pub(crate) fn add(&mut self, other: Tally) {
        self.ok_in_time += other.ok_in_time;
        self.ok_total += other.ok_total;
        self.errors += other.errors;
        self.samples.extend(other.samples);
        self.handed_out.extend(other.handed_out);
    }
}

/// A connection of a visitor, opened again after a failure.
pub(crate) struct Slot {
    addr: SocketAddr,
    conn: Option<Conn>,
}

impl Slot {
    /// Connects now, so that connecting is not part of the measured time.
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Slot> {
        let conn = Conn::open(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(Slot {
            addr,
            conn: Some(conn),
        })
    }

    /// One request; the time it was answered. A failed connection is
    /// dropped, to be opened again by the next request, so that a server
    /// that closes connections on errors is still measured.
    async fn get(&mut self, path: &str, cookie: Option<&str>) -> (anyhow::Result<Reply>, Instant) {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => match Conn::open(self.addr).await {
                Ok(c) => self.conn.insert(c),
                Err(e) => {
                    // Do not spin on a server that refuses connections.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return (Err(e), Instant::now());
                }
            },
        };
        let reply = conn.get(path, cookie).await;
        if reply.is_err() {
            self.conn = None;
        }
        (reply, Instant::now())
    }
}

/// One visitor until `deadline`: `GET path` with its cookie (if any) on all
/// of its connections at once, and again as soon as all have answered.
/// With one connection that is a keep-alive client sending one request
/// after another; with six, a page firing its XHRs together.
pub(crate) async fn visit(
    slots: &mut [Slot],
    path: &str,
    cookie: Option<&str>,
    deadline: Instant,
) -> Tally {
    let mut t = Tally {
        samples: Vec::with_capacity(1 << 12),
        ..Tally::default()
    };
    while Instant::now() < deadline {
        let sent = Instant::now();
        let answers = join_all(slots.iter_mut().map(|s| s.get(path, cookie))).await;
        let mut all_ok = true;
        let mut last = sent;
        for (reply, done) in answers {
            last = last.max(done);
            match reply {
                Ok(reply) if reply.status == StatusCode::OK => {
                    t.ok_total += 1;
                    if done <= deadline {
                        t.ok_in_time += 1;
                    }
                    if cookie.is_none() {
                        t.handed_out.extend(reply.cookie);
                    }
                }
                _ => {
                    t.errors += 1;
                    all_ok = false;
                }
            }
        }
        if all_ok && last <= deadline {
            let micros = (last - sent).as_micros();
            t.samples.push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }
    t
}
