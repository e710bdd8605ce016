//! memcached's meta protocol (`mg`, `ms`, `md`; memcached 1.6 and later),
//! as much of it as the store needs, over tokio: one connection per call
//! in flight, kept in a small pool per server, every call bounded in time.
//!
//! Written here rather than taken from a crate: the maintained async
//! clients either lack compare-and-swap with an expiry in one command, or
//! hold one connection behind `&mut self`, or bring no timeouts — and the
//! part of the protocol a session store needs is a few dozen lines.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The bound on one call, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per server.
const IDLE: usize = 32;
/// The longest status line a server sends us.
const MAX_LINE: usize = 1024;

/// An item as `mg` answers it.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) value: Vec<u8>,
    /// The compare-and-swap token of this version of the item.
    pub(super) cas: u64,
}

/// How `ms` may store.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// Only if the key is absent (`add`).
    Add,
    /// Whatever is there, or, with a CAS token, only that version.
    Set,
}

/// What `ms` or `md` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Done (`HD`).
    Done,
    /// Not stored: an `Add` found the key (`NS`).
    NotStored,
    /// The CAS token did not match: the item changed meanwhile (`EX`).
    Changed,
    /// No such item (`NF`).
    NotFound,
}

/// One command of a batch ([`Server::batch`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Op<'a> {
    /// `mg <key> v c`: the item, refusing a value over `limit` bytes.
    Get { key: &'a str, limit: usize },
    /// `ms <key> <len> T<exptime> M<mode> [C<cas>]`.
    Set {
        key: &'a str,
        value: &'a [u8],
        exptime: u64,
        mode: Mode,
        cas: Option<u64>,
    },
    /// `md <key> [C<cas>]`.
    Delete { key: &'a str, cas: Option<u64> },
}

/// What one command of a batch answered.
#[derive(Debug)]
pub(super) enum Answer {
    Item(Option<Item>),
    Outcome(Outcome),
}

impl Answer {
    pub(super) fn item(self) -> io::Result<Option<Item>> {
        match self {
            Answer::Item(item) => Ok(item),
            Answer::Outcome(_) => Err(invalid("a status where a value was expected")),
        }
    }

    pub(super) fn outcome(self) -> io::Result<Outcome> {
        match self {
            Answer::Outcome(outcome) => Ok(outcome),
            Answer::Item(_) => Err(invalid("a value where a status was expected")),
        }
    }
}

impl Op<'_> {
    fn write(&self, out: &mut Vec<u8>) -> Expect {
        match *self {
            Op::Get { key, limit } => {
                out.extend_from_slice(format!("mg {key} v c\r\n").as_bytes());
                Expect::Value { limit }
            }
            Op::Set {
                key,
                value,
                exptime,
                mode,
                cas,
            } => {
                let mode = match mode {
                    Mode::Add => 'E',
                    Mode::Set => 'S',
                };
                out.extend_from_slice(
                    format!("ms {key} {} T{exptime} M{mode}", value.len()).as_bytes(),
                );
                if let Some(cas) = cas {
                    out.extend_from_slice(format!(" C{cas}").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
                Expect::Outcome
            }
            Op::Delete { key, cas } => {
                let line = match cas {
                    Some(cas) => format!("md {key} C{cas}\r\n"),
                    None => format!("md {key}\r\n"),
                };
                out.extend_from_slice(line.as_bytes());
                Expect::Outcome
            }
        }
    }
}

/// One memcached server and its idle connections.
#[derive(Debug)]
pub(super) struct Server {
    pub(super) addr: String,
    idle: Mutex<Vec<Conn>>,
}

#[derive(Debug)]
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Server {
    pub(super) fn new(addr: String) -> Self {
        Server {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// `mg <key> v c`: the item, or `None`. A value larger than `limit` is
    /// refused as [`io::ErrorKind::InvalidData`] without being read.
    pub(super) async fn get(&self, key: &str, limit: usize) -> io::Result<Option<Item>> {
        self.one(Op::Get { key, limit }).await?.item()
    }

    /// `ms <key> <len> T<exptime> M<mode> [C<cas>]` with `value`.
    pub(super) async fn set(
        &self,
        key: &str,
        value: &[u8],
        exptime: u64,
        mode: Mode,
        cas: Option<u64>,
    ) -> io::Result<Outcome> {
        let op = Op::Set {
            key,
            value,
            exptime,
            mode,
            cas,
        };
        self.one(op).await?.outcome()
    }

    /// `md <key> [C<cas>]`.
    pub(super) async fn delete(&self, key: &str, cas: Option<u64>) -> io::Result<Outcome> {
        self.one(Op::Delete { key, cas }).await?.outcome()
    }

    /// `mn`, the no-op: whether the server answers at all.
    pub(super) async fn ping(&self) -> io::Result<()> {
        self.call(b"mn\r\n".to_vec(), &[Expect::Noop])
            .await
            .map(drop)
    }

    async fn one(&self, op: Op<'_>) -> io::Result<Answer> {
        let mut answers = self.batch(&[op]).await?;
        answers.pop().ok_or_else(|| invalid("no answer"))
    }

    /// Sends `ops` in one write and reads their answers, in order: one
    /// round trip for all (memcached answers a connection's commands in
    /// the order they came).
    pub(super) async fn batch(&self, ops: &[Op<'_>]) -> io::Result<Vec<Answer>> {
        let mut request = Vec::new();
        let expects: Vec<Expect> = ops.iter().map(|op| op.write(&mut request)).collect();
        self.call(request, &expects).await
    }

    /// Sends one request on an idle connection (or a new one) and reads
    /// its answers, within [`CALL_TIMEOUT`]. The connection goes back to
    /// the pool only after a complete exchange: one that failed or timed
    /// out may hold half an answer, and is dropped.
    async fn call(&self, request: Vec<u8>, expects: &[Expect]) -> io::Result<Vec<Answer>> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let pooled = idle.is_some();
        match self.exchange(idle, &request, expects).await {
            // A pooled connection the server closed meanwhile (it restarted,
            // or dropped idle clients): once more on a new one.
            Err(e) if pooled && is_closed(&e) => self.exchange(None, &request, expects).await,
            answered => answered,
        }
    }

    async fn exchange(
        &self,
        idle: Option<Conn>,
        request: &[u8],
        expects: &[Expect],
    ) -> io::Result<Vec<Answer>> {
        let exchange = async {
            let mut conn = match idle {
                Some(conn) => conn,
                None => Conn {
                    stream: BufReader::new(TcpStream::connect(&self.addr).await?),
                },
            };
            conn.stream.get_mut().write_all(request).await?;
            let mut answers = Vec::with_capacity(expects.len());
            for &expect in expects {
                answers.push(conn.answer(expect).await?);
            }
            Ok::<_, io::Error>((conn, answers))
        };
        let (conn, reply) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "memcached did not answer in time")
            })??;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE {
            idle.push(conn);
        }
        Ok(reply)
    }
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Value { limit: usize },
    Outcome,
    Noop,
}

impl Conn {
    /// Reads the answer to one command.
    async fn answer(&mut self, expect: Expect) -> io::Result<Answer> {
        let line = self.line().await?;
        let mut words = line.split(' ');
        let head = words.next().unwrap_or_default();
        match (head, expect) {
            ("VA", Expect::Value { limit }) => {
                let len: usize = words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| invalid("a value without its length"))?;
                if len > limit {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, TooLarge(len)));
                }
                let cas = words
                    .find_map(|w| w.strip_prefix('c'))
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| invalid("a value without its CAS token"))?;
                let mut value = vec![0; len + 2];
                self.stream.read_exact(&mut value).await?;
                if !value.ends_with(b"\r\n") {
                    return Err(invalid("a value not ended by CRLF"));
                }
                value.truncate(len);
                Ok(Answer::Item(Some(Item { value, cas })))
            }
            ("EN", Expect::Value { .. }) => Ok(Answer::Item(None)),
            ("HD", Expect::Outcome) => Ok(Answer::Outcome(Outcome::Done)),
            ("NS", Expect::Outcome) => Ok(Answer::Outcome(Outcome::NotStored)),
            ("EX", Expect::Outcome) => Ok(Answer::Outcome(Outcome::Changed)),
            ("NF", Expect::Outcome) => Ok(Answer::Outcome(Outcome::NotFound)),
            ("MN", Expect::Noop) => Ok(Answer::Outcome(Outcome::Done)),
            _ => Err(io::Error::other(format!("memcached answered {line:?}"))),
        }
    }

    /// One reply line, without its CRLF, bounded in length.
    async fn line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "memcached closed the connection",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(invalid("a reply line too long or cut off"));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| invalid("a reply line that is not text"))
    }
}

/// A value larger than the caller reads (a session record's limit): the
/// item is no record of ours, the connection was fine (and is dropped,
/// unread).
#[derive(Debug, thiserror::Error)]
#[error("memcached holds a value of {0} bytes, larger than a session record")]
struct TooLarge(usize);

/// Whether `e` is [`Server::get`]'s refusal of a value over its limit, as
/// opposed to a fault of the connection or the server.
pub(super) fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooLarge>())
}

/// Whether `e` says the connection was closed under us.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("memcached sent {what}"))
}

/// The server of `servers` that keeps `route` (a session's store key, a
/// user's index key): rendezvous hashing, so that every instance picks the
/// same server, and adding or removing one moves only the keys it gains
/// or loses (about 1/n of them).
pub(super) fn pick<'a>(servers: &'a [Server], route: &[u8]) -> &'a Server {
    servers
        .iter()
        .max_by_key(|s| fnv1a(s.addr.as_bytes(), route))
        .unwrap_or_else(|| unreachable!("a memcached store has at least one server"))
}

/// FNV-1a, 64 bits, over `a` then `b`: stable across builds and processes.
fn fnv1a(a: &[u8], b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.iter().chain(b"\0").chain(b) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for similar inputs; a final avalanche
    // (from MurmurHash3's fmix64) spreads them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<Server> {
        (0..n)
            .map(|i| Server::new(format!("10.0.0.{i}:11211")))
            .collect()
    }

    /// Keys spread over the servers, and a server added takes only its
    /// share: the others keep where they were.
    #[test]
    fn rendezvous_moves_few_keys() {
        let (three, four) = (servers(3), servers(4));
        let keys: Vec<[u8; 8]> = (0..3_000u64).map(|i| i.to_le_bytes()).collect();
        let mut per = [0usize; 3];
        let mut moved = 0;
        for k in &keys {
            let a = pick(&three, k);
            per[three.iter().position(|s| std::ptr::eq(s, a)).unwrap()] += 1;
            let b = pick(&four, k);
            if a.addr != b.addr {
                assert_eq!(b.addr, "10.0.0.3:11211", "a key moved between old servers");
                moved += 1;
            }
        }
        assert!(per.iter().all(|&n| n > 800), "{per:?}");
        assert!((500..1000).contains(&moved), "{moved} of 3000 moved");
    }
}
