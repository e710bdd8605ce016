//! [`TestClient`]: a router driven in-process with a cookie jar.

use std::collections::BTreeMap;
use std::fmt;

use axum_core::body::Body;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower_service::Service;

/// Sends requests to a service (an axum `Router` with a
/// [`SessionLayer`](crate::SessionLayer)) without a socket, keeping the
/// cookies its responses set and sending them back, as a browser would:
/// the same visitor across requests. [`fresh`](Self::fresh) gives another
/// visitor on the same app.
///
/// Made for tests: a service error or an unreadable body panics, naming it.
pub struct TestClient<S> {
    service: S,
    cookies: BTreeMap<String, String>,
}

impl<S> fmt::Debug for TestClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cookie values are session ids: only their names are shown.
        f.debug_struct("TestClient")
            .field("cookies", &self.cookies.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl<S> TestClient<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
    S::Error: fmt::Debug,
{
    /// A visitor without cookies, on `service`.
    pub fn new(service: S) -> Self {
        TestClient {
            service,
            cookies: BTreeMap::new(),
        }
    }

    /// Another visitor, without cookies, on the same service.
    pub fn fresh(&self) -> Self {
        TestClient::new(self.service.clone())
    }

    /// The value of a cookie the client holds.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Sets (or replaces) a cookie, as if a response had set it.
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.into(), value.into());
    }

    /// Forgets every cookie (a new browser).
    pub fn clear_cookies(&mut self) {
        self.cookies.clear();
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> TestResponse {
        self.send(Method::GET, path, None, Body::empty()).await
    }

    /// `POST path` with a form body (`a=1&b=2`, already encoded).
    pub async fn post_form(&mut self, path: &str, form: &str) -> TestResponse {
        let form_type = HeaderValue::from_static("application/x-www-form-urlencoded");
        self.send(
            Method::POST,
            path,
            Some(form_type),
            Body::from(form.to_owned()),
        )
        .await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<HeaderValue>,
        body: Body,
    ) -> TestResponse {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(t) = content_type {
            request = request.header(header::CONTENT_TYPE, t);
        }
        let request = request
            .body(body)
            .unwrap_or_else(|e| panic!("cannot build a request for {path:?}: {e}"));
        self.request(request).await
    }

    /// Sends `request` with the client's cookies added (unless it has a
    /// `Cookie` header of its own), and keeps what the response sets.
    pub async fn request(&mut self, mut request: Request<Body>) -> TestResponse {
        if !self.cookies.is_empty() && !request.headers().contains_key(header::COOKIE) {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let value = HeaderValue::try_from(jar.join("; "))
                .unwrap_or_else(|e| panic!("a cookie the app set cannot be sent back: {e}"));
            request.headers_mut().insert(header::COOKIE, value);
        }
        let mut service = self.service.clone();
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap_or_else(|e| panic!("the service is not ready: {e:?}"));
        let response = service
            .call(request)
            .await
            .unwrap_or_else(|e| panic!("the service failed: {e:?}"));
        let (parts, body) = response.into_parts();
        for set in parts.headers.get_all(header::SET_COOKIE) {
            if let Ok(set) = set.to_str() {
                self.keep(set);
            }
        }
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("cannot read the response body: {e}"))
            .to_bytes()
            .to_vec();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Keeps a `Set-Cookie`, or forgets the cookie when it ends now
    /// (`Max-Age=0`, or an empty value, as a log-out sets).
    fn keep(&mut self, set: &str) {
        let mut parts = set.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let ended = parts.any(|a| {
            a.split_once('=')
                .is_some_and(|(k, v)| k.eq_ignore_ascii_case("max-age") && v.trim() == "0")
        });
        if ended || value.is_empty() {
            self.cookies.remove(name);
        } else {
            self.cookies.insert(name.into(), value.into());
        }
    }
}
