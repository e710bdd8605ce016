//! A browser's cookie handling over real HTTP, shared by its clones (the
//! tabs and XHRs of one visitor): every response's `Set-Cookie` is kept,
//! `Max-Age=0` forgets, every request sends what is kept. Redirects are
//! not followed, so tests see them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Browser {
    http: reqwest::Client,
    base: String,
    jar: Arc<Mutex<BTreeMap<String, String>>>,
}

/// A response read whole.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookie: Vec<String>,
    pub body: String,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
            base: format!("http://{addr}"),
            jar: Arc::default(),
        }
    }

    /// Another visitor on the same site: no cookies.
    pub fn stranger(&self) -> Self {
        Browser {
            http: self.http.clone(),
            base: self.base.clone(),
            jar: Arc::default(),
        }
    }

    /// Another browser with a copy of this one's cookies (a stolen or
    /// copied cookie, a second device restored from a backup).
    pub fn copy(&self) -> Self {
        let jar = self.jar.lock().unwrap().clone();
        Browser {
            http: self.http.clone(),
            base: self.base.clone(),
            jar: Arc::new(Mutex::new(jar)),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn get_accepting(&self, path: &str, accept: &str) -> Page {
        self.send(self.http.get(self.url(path)).header("accept", accept))
            .await
    }

    /// POST an url-encoded form (`a=1&b=2`).
    pub async fn post(&self, path: &str, form: &str) -> Page {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        self.send(r).await
    }

    /// POST an empty form with extra headers (a `content-type` among
    /// them replaces the form's).
    pub async fn post_with(&self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut r = self.http.post(self.url(path));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            r = r.header("content-type", "application/x-www-form-urlencoded");
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, mut r: reqwest::RequestBuilder) -> Page {
        let cookies = {
            let jar = self.jar.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !cookies.is_empty() {
            r = r.header("cookie", cookies);
        }
        let resp = r.send().await.expect("request failed");
        let set_cookie: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        {
            let mut jar = self.jar.lock().unwrap();
            for sc in &set_cookie {
                let first = sc.split(';').next().unwrap();
                let (name, value) = first.split_once('=').unwrap();
                if sc.contains("Max-Age=0") || value.is_empty() {
                    jar.remove(name);
                } else {
                    jar.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        Page {
            status,
            location,
            set_cookie,
            body,
        }
    }
}
