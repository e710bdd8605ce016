//! The end-to-end tests' side of the socket: a server on a free port, and
//! a client that keeps one cookie the way a browser would, but lets tests
//! look at it.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::Router;

/// Serves `app` on 127.0.0.1 and an OS-chosen port, in the background.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One response, with the parts the tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// The raw `Set-Cookie` header, if any.
    pub set_cookie: Option<String>,
    pub retry_after: Option<String>,
}

impl Reply {
    /// The cookie's value (the session id), if one was set.
    pub fn cookie_value(&self) -> Option<String> {
        let sc = self.set_cookie.as_ref()?;
        let first = sc.split(';').next()?;
        Some(first.split_once('=')?.1.to_string())
    }

    /// The cookie's attributes by lower-cased name (value "" for flags).
    pub fn cookie_attrs(&self) -> std::collections::BTreeMap<String, String> {
        let sc = self.set_cookie.as_deref().unwrap_or_default();
        sc.split(';')
            .skip(1)
            .map(|p| {
                let p = p.trim();
                match p.split_once('=') {
                    Some((k, v)) => (k.to_ascii_lowercase(), v.to_string()),
                    None => (p.to_ascii_lowercase(), String::new()),
                }
            })
            .collect()
    }
}

/// A client with its own connection pool and at most one cookie.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: format!("http://{addr}"),
            cookie: None,
        }
    }

    /// A client with its own new connections and the same cookie.
    pub fn fresh(&self) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: self.base.clone(),
            cookie: self.cookie.clone(),
        }
    }

    /// Sends `threads` × `requests` GETs of `path` with the kept cookie,
    /// each thread on its own connections (as CherryPy's concurrency test
    /// does), and returns every reply.
    pub async fn hammer(&self, path: &str, threads: usize, requests: usize) -> Vec<Reply> {
        let tasks: Vec<_> = (0..threads)
            .map(|_| {
                let client = self.fresh();
                let path = path.to_string();
                tokio::spawn(async move {
                    let mut replies = Vec::new();
                    for _ in 0..requests {
                        replies.push(client.get_with(&path, client.cookie.as_deref()).await);
                    }
                    replies
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    }

    /// GET `path`, sending the cookie and keeping the one set (a cookie
    /// with Max-Age=0 is dropped, as a browser would).
    pub async fn get(&mut self, path: &str) -> Reply {
        let reply = self.get_with(path, self.cookie.clone().as_deref()).await;
        if let Some(sc) = &reply.set_cookie {
            if sc.contains("Max-Age=0") {
                self.cookie = None;
            } else {
                self.cookie = Some(sc.split(';').next().unwrap().to_string());
            }
        }
        reply
    }

    /// GET `path` with exactly this `Cookie` header (or none), keeping
    /// nothing.
    pub async fn get_with(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.request(reqwest::Method::GET, path, cookie).await
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: Option<&str>,
    ) -> Reply {
        self.try_request(method, path, cookie)
            .await
            .expect("request failed")
    }

    /// Like [`request`](Self::request), for requests that may fail (the
    /// server's handler panics, the client gives up).
    pub async fn try_request(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let set_cookie = header("set-cookie");
        let retry_after = header("retry-after");
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        Ok(Reply {
            status,
            body,
            set_cookie,
            retry_after,
        })
    }

    /// The session id in the kept cookie.
    pub fn id(&self) -> Option<String> {
        Some(self.cookie.as_ref()?.split_once('=')?.1.to_string())
    }
}

/// A port nothing listens on right now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port` of 127.0.0.1 (a
/// server the test started is up), at most `within`.
pub fn wait_for_port(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}
