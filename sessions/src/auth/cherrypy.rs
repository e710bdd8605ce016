//! CherryPy's `session_auth` tool (cherrypy/lib/cptools.py, `SessionAuth`)
//! as a tower layer, turned on per path by `tools.session_auth.on`: see
//! [`SessionAuthLayer`].

use std::collections::HashMap;
use std::fmt::Write as _;
#[cfg(feature = "htpasswd")]
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(feature = "htpasswd")]
use std::sync::Mutex;
use std::task::{Context, Poll};

use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use tower_layer::Layer;
use tower_service::Service;

use super::{digest, login_as, Auth, AuthUser, Backend, FINGERPRINT_KEY};
use crate::config::SessionAuthConfig;
use crate::session::Session;
use crate::user::UserId;

/// A checked log-in: the user and their fingerprint.
type Checked = Option<(UserId, Vec<u8>)>;

/// What the tool needs of a user source, object-safe, given the path's
/// settings (an htpasswd file is named there).
trait Checker: Send + Sync {
    fn check(
        &self,
        config: &SessionAuthConfig,
        name: String,
        password: String,
    ) -> BoxFuture<'static, Result<Checked, String>>;
    fn fingerprint(
        &self,
        config: &SessionAuthConfig,
        id: UserId,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, String>>;
}

impl<B: Backend<Credentials = (String, String)>> Checker for Auth<B> {
    fn check(
        &self,
        _: &SessionAuthConfig,
        name: String,
        password: String,
    ) -> BoxFuture<'static, Result<Checked, String>> {
        let auth = self.clone();
        Box::pin(async move {
            match auth.authenticate((name, password)).await {
                Ok(user) => Ok(user.map(|u| (u.id(), u.fingerprint().to_vec()))),
                Err(e) => Err(error_chain(&e)),
            }
        })
    }
    fn fingerprint(
        &self,
        _: &SessionAuthConfig,
        id: UserId,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, String>> {
        let auth = self.clone();
        Box::pin(async move {
            match auth.backend().get_user(&id).await {
                Ok(user) => Ok(user.map(|u| u.fingerprint().to_vec())),
                Err(e) => Err(error_chain(&e)),
            }
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// The htpasswd file each path names, one reader per file.
#[cfg(feature = "htpasswd")]
#[derive(Default)]
struct HtpasswdFiles(Mutex<HashMap<PathBuf, Auth<super::Htpasswd>>>);

#[cfg(feature = "htpasswd")]
impl HtpasswdFiles {
    fn of(&self, config: &SessionAuthConfig) -> Result<Auth<super::Htpasswd>, String> {
        let path = config
            .htpasswd
            .as_ref()
            .ok_or("no tools.session_auth.htpasswd for this path")?;
        let mut files = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(files
            .entry(path.clone())
            .or_insert_with(|| Auth::new(super::Htpasswd::new(path)))
            .clone())
    }
}

#[cfg(feature = "htpasswd")]
impl Checker for HtpasswdFiles {
    fn check(
        &self,
        config: &SessionAuthConfig,
        name: String,
        password: String,
    ) -> BoxFuture<'static, Result<Checked, String>> {
        match self.of(config) {
            Ok(auth) => Box::pin(async move { auth.check(config_none(), name, password).await }),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
    fn fingerprint(
        &self,
        config: &SessionAuthConfig,
        id: UserId,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, String>> {
        match self.of(config) {
            Ok(auth) => {
                Box::pin(async move { Checker::fingerprint(&auth, config_none(), id).await })
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// The settings an [`Auth`]'s checker ignores.
#[cfg(feature = "htpasswd")]
fn config_none() -> &'static SessionAuthConfig {
    static NONE: std::sync::OnceLock<SessionAuthConfig> = std::sync::OnceLock::new();
    NONE.get_or_init(SessionAuthConfig::default)
}

/// CherryPy's `session_auth` tool (cherrypy/lib/cptools.py, `SessionAuth`)
/// as a tower layer, turned on per path by `tools.session_auth.on`.
///
/// On a path where it is on, for a request whose path ends in:
///
/// - `login_screen`: the log-in form;
/// - `do_login` (POST only, else 405): checks `username` and `password`;
///   right, the session gets a new id and the user, and the browser goes
///   back to `from_page` (a path of this site; anything else means `/`);
///   wrong, the form again with the error;
/// - `do_logout` (POST only): logs the session out, back to `from_page`;
/// - anything else: an anonymous visitor gets the log-in form (with
///   `from_page` set to where they were going), a logged-in one goes on.
///
/// Beyond CherryPy: the session is tied to the user ([`Session::set_user`])
/// and keeps the user's fingerprint, so a user whose password changed (or
/// who was removed) is logged out at the next request; the form carries
/// the session's CSRF token (`csrf_token`), which a
/// [`CsrfLayer`](crate::csrf::CsrfLayer) around it checks.
///
/// The form posts to `do_login` under the page it is shown on (not
/// relative to it, as CherryPy's does), so that it stays in the protected
/// section. Paths whose settings
/// ([`SessionConfig::auth`](crate::SessionConfig::auth)) leave the tool off,
/// or that have no session, go through untouched. Install it inside the
/// [`SessionLayer`](crate::SessionLayer).
#[derive(Clone)]
pub struct SessionAuthLayer {
    checker: Arc<dyn Checker>,
}

impl std::fmt::Debug for SessionAuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAuthLayer").finish_non_exhaustive()
    }
}

impl SessionAuthLayer {
    /// Users checked by `auth`'s backend, whose credentials are a user
    /// name and a password.
    pub fn new<B: Backend<Credentials = (String, String)>>(auth: Auth<B>) -> Self {
        SessionAuthLayer {
            checker: Arc::new(auth),
        }
    }

    /// Users checked against the htpasswd file each path names
    /// (`tools.session_auth.htpasswd`); a path without one lets nobody in.
    #[cfg(feature = "htpasswd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "htpasswd")))]
    pub fn htpasswd() -> Self {
        SessionAuthLayer {
            checker: Arc::new(HtpasswdFiles::default()),
        }
    }
}

impl<S> Layer<S> for SessionAuthLayer {
    type Service = SessionAuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SessionAuthService {
            checker: Arc::clone(&self.checker),
            inner,
        }
    }
}

/// The service [`SessionAuthLayer`] makes.
#[derive(Clone)]
pub struct SessionAuthService<S> {
    checker: Arc<dyn Checker>,
    inner: S,
}

impl<S> std::fmt::Debug for SessionAuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAuthService").finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for SessionAuthService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let checker = Arc::clone(&self.checker);
        Box::pin(async move {
            let session = request.extensions().get::<Session>().cloned();
            let Some(session) = session.filter(|s| s.config().auth.on) else {
                return inner.call(request).await;
            };
            let tool = Tool {
                checker: &*checker,
                config: &session.config().auth,
                session: &session,
            };
            match tool.run(request).await {
                Ok(request) => inner.call(request).await,
                Err(answer) => Ok(answer),
            }
        })
    }
}

/// One request on a path where the tool is on.
struct Tool<'a> {
    checker: &'a dyn Checker,
    config: &'a SessionAuthConfig,
    session: &'a Session,
}

/// The largest log-in form read.
const MAX_FORM: usize = 64 * 1024;

impl Tool<'_> {
    fn debug(&self, what: &str) {
        if self.config.debug {
            tracing::info!(target: "TOOLS.SESSAUTH", "{what}");
        }
    }

    /// The request to pass on (a logged-in visitor), or the answer.
    async fn run(&self, request: Request<Body>) -> Result<Request<Body>, Response> {
        let path = request.uri().path().to_owned();
        if path.ends_with("login_screen") {
            self.debug("routing to login_screen");
            return Err(self.screen(&path, "/", "", "").await);
        }
        let action = if path.ends_with("do_login") {
            "do_login"
        } else if path.ends_with("do_logout") {
            "do_logout"
        } else {
            return self.check(request).await;
        };
        if request.method() != Method::POST {
            self.debug(&format!("{action} requires POST"));
            return Err((
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "POST")],
                "",
            )
                .into_response());
        }
        let form = read_form(request).await?;
        let field = |k: &str| form.get(k).map_or("", String::as_str);
        let from_page = local(field("from_page"));
        if action == "do_logout" {
            return Err(self.logout(from_page).await);
        }
        Err(self
            .login(&path, field("username"), field("password"), from_page)
            .await)
    }

    /// `do_check`: a logged-in visitor goes on, checked against the user
    /// source; any other gets the form.
    async fn check(&self, request: Request<Body>) -> Result<Request<Body>, Response> {
        let here = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let path = request.uri().path();
        let user = self
            .session
            .user()
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(user) = user else {
            self.debug(&format!(
                "no user, routing to login_screen with from_page {here:?}"
            ));
            return Err(self.screen(path, &here, "", "").await);
        };
        let now = match self.checker.fingerprint(self.config, user.clone()).await {
            Ok(now) => now,
            Err(e) => return Err(unavailable(&e)),
        };
        let kept: Option<String> = self.session.get(FINGERPRINT_KEY).await.unwrap_or(None);
        if now.map(|f| digest(&f)) != kept {
            tracing::info!(user = %user, "user gone or password changed; session logged out");
            self.session
                .logout()
                .await
                .map_err(IntoResponse::into_response)?;
            return Err(self.screen(path, &here, "", "Please log in again.").await);
        }
        self.debug(&format!("logged in as {user}"));
        Ok(request)
    }

    async fn login(&self, path: &str, name: &str, password: &str, from_page: &str) -> Response {
        let checked = match UserId::new(name) {
            Ok(_) => {
                self.checker
                    .check(self.config, name.into(), password.into())
                    .await
            }
            Err(_) => Ok(None),
        };
        let (id, fingerprint) = match checked {
            Ok(Some(user)) => user,
            Ok(None) => {
                self.debug("log-in refused");
                let error = "Incorrect username or password.";
                return self.screen(path, from_page, name, error).await;
            }
            Err(e) => return unavailable(&e),
        };
        let done = async {
            login_as(self.session, id, &fingerprint).await?;
            self.session.insert(&self.config.session_key, name).await
        };
        if let Err(e) = done.await {
            return e.into_response();
        }
        tracing::info!(user = name, "logged in");
        see_other(from_page)
    }

    async fn logout(&self, from_page: &str) -> Response {
        let user = self.session.user().await.ok().flatten();
        if let Err(e) = self.session.logout().await {
            return e.into_response();
        }
        if let Some(user) = user {
            tracing::info!(user = %user, "logged out");
        }
        see_other(from_page)
    }

    /// The log-in form (CherryPy's `login_screen`), with the CSRF token,
    /// shown at `path`. It posts to `do_login` under `path` (CherryPy's
    /// form posts to `do_login` relative to the page, which from `/admin`
    /// is `/do_login`, outside the protected section): under it, the tool
    /// is on wherever it is on for `path`.
    async fn screen(&self, path: &str, from_page: &str, name: &str, error: &str) -> Response {
        let token = match crate::csrf::token(self.session).await {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        let message = if error.is_empty() {
            String::new()
        } else {
            format!("<p class=error id=error>{}</p>\n", escape(error))
        };
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=utf-8><title>Log in</title></head><body>\n\
             <h1>Log in</h1>\n{message}\
             <form method=post action=\"{action}\">\n\
             <label>User name <input type=text name=username value=\"{name}\" autocomplete=username></label><br>\n\
             <label>Password <input type=password name=password autocomplete=current-password></label><br>\n\
             <input type=hidden name=from_page value=\"{from_page}\">\n\
             <input type=hidden name={field} value=\"{token}\">\n\
             <button type=submit>Log in</button>\n</form>\n</body></html>\n",
            name = escape(name),
            action = escape(&action_of(path, "do_login")),
            from_page = escape(from_page),
            field = crate::csrf::FIELD,
        );
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            page,
        )
            .into_response()
    }
}

/// Where a form shown at `path` posts `action`: `path` without the tool's
/// own last segment, then `/action`.
pub(crate) fn action_of(path: &str, action: &str) -> String {
    let mut base = path;
    for own in ["login_screen", "do_login", "do_logout"] {
        if let Some(rest) = base.strip_suffix(own) {
            base = rest;
            break;
        }
    }
    format!("{}/{action}", base.trim_end_matches('/'))
}

/// The form fields of a log-in or log-out POST.
async fn read_form(request: Request<Body>) -> Result<HashMap<String, String>, Response> {
    match Limited::new(request.into_body(), MAX_FORM).collect().await {
        Ok(body) => Ok(form_urlencoded::parse(&body.to_bytes())
            .into_owned()
            .collect()),
        Err(_) => Err((StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response()),
    }
}

/// `from_page` if it is a path of this site, `/` otherwise: a log-in form
/// must not send the browser to another site (an open redirect).
fn local(from_page: &str) -> &str {
    let ok = from_page.starts_with('/')
        && !from_page.starts_with("//")
        && !from_page.starts_with("/\\")
        && from_page.bytes().all(|b| (0x21..0x7f).contains(&b));
    if ok {
        from_page
    } else {
        "/"
    }
}

fn see_other(to: &str) -> Response {
    match HeaderValue::try_from(to) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response(),
    }
}

fn unavailable(e: &str) -> Response {
    tracing::error!(error = e, "session_auth cannot check users");
    (StatusCode::INTERNAL_SERVER_ERROR, "log-in unavailable\n").into_response()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_page_stays_on_the_site() {
        assert_eq!(local("/admin?x=1"), "/admin?x=1");
        for bad in [
            "",
            "..",
            "https://evil.example/",
            "//evil.example",
            "/\\evil",
            "/a b",
            "javascript:x",
        ] {
            assert_eq!(local(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn forms_post_under_the_page() {
        assert_eq!(action_of("/", "do_login"), "/do_login");
        assert_eq!(action_of("/admin", "do_login"), "/admin/do_login");
        assert_eq!(action_of("/admin/", "do_login"), "/admin/do_login");
        assert_eq!(action_of("/admin/page", "do_login"), "/admin/page/do_login");
        assert_eq!(
            action_of("/admin/login_screen", "do_login"),
            "/admin/do_login"
        );
        assert_eq!(action_of("/admin/do_login", "do_login"), "/admin/do_login");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
