//! Log-in on top of sessions: check credentials, tie the session to the
//! user, require a logged-in user, log out — and CherryPy's `session_auth`
//! tool ([`SessionAuthLayer`], configured by `tools.session_auth.*`).
//!
//! An app describes its users with two traits: [`AuthUser`] (its id and a
//! *fingerprint*, typically the password hash) and [`Backend`] (check
//! credentials, load a user by id). [`Auth`] then does the rest:
//!
//! - [`Auth::login`] gives the session a new id (against session
//!   fixation), ties it to the user with [`Session::set_user`] (so that the
//!   user's sessions can be listed and ended), keeps the fingerprint, and
//!   gives the session a new [CSRF token](crate::csrf).
//! - [`Auth::user`] loads the logged-in user, and logs the session out if
//!   the user is gone or their fingerprint changed: a changed password
//!   ends every other session of that user at its next request.
//! - [`Auth::require_login`] is a layer for routes that need a user: a page
//!   request without one is redirected to the log-in page (with where it
//!   was going in `next`), an API request gets 401; the user is handed to
//!   the handler as [`CurrentUser`].
//!
//! ```
//! use axum::{routing::get, Router};
//! use server_sessions::auth::{Auth, AuthUser, Backend, CurrentUser};
//! use server_sessions::{store::MemoryStore, SessionLayer, UserId};
//!
//! #[derive(Clone)]
//! struct User { name: UserId, password_hash: String }
//!
//! impl AuthUser for User {
//!     fn id(&self) -> UserId { self.name.clone() }
//!     fn fingerprint(&self) -> &[u8] { self.password_hash.as_bytes() }
//! }
//!
//! struct Users; // a database in a real app
//!
//! impl Backend for Users {
//!     type User = User;
//!     type Credentials = (String, String);
//!     type Error = std::convert::Infallible;
//!     async fn authenticate(&self, (name, password): (String, String)) -> Result<Option<User>, Self::Error> {
//!         // Compare with a password hash (bcrypt, argon2) here.
//!         Ok((password == "secret").then(|| User { name: UserId::new(name).unwrap(), password_hash: "h".into() }))
//!     }
//!     async fn get_user(&self, id: &UserId) -> Result<Option<User>, Self::Error> {
//!         Ok(Some(User { name: id.clone(), password_hash: "h".into() }))
//!     }
//! }
//!
//! async fn account(CurrentUser(user): CurrentUser<User>) -> String {
//!     format!("hello, {}", user.name)
//! }
//!
//! let auth = Auth::new(Users);
//! let app: Router = Router::new()
//!     .route("/account", get(account))
//!     .layer(auth.require_login("/login"))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! ```

#[cfg(feature = "axum")]
mod cherrypy;
#[cfg(feature = "htpasswd")]
mod htpasswd;
#[cfg(feature = "axum")]
mod require;

use std::future::Future;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::session::Session;
use crate::user::UserId;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use cherrypy::{SessionAuthLayer, SessionAuthService};
#[cfg(feature = "htpasswd")]
#[cfg_attr(docsrs, doc(cfg(feature = "htpasswd")))]
pub use htpasswd::{Htpasswd, HtpasswdError, HtpasswdUser};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use require::{CurrentUser, RequireLogin, RequireLoginService};

/// The session key that holds the logged-in user's fingerprint digest.
pub const FINGERPRINT_KEY: &str = "_auth_fingerprint";

/// A user of the app, as log-in needs to know it.
pub trait AuthUser: Clone + Send + Sync + 'static {
    /// The user's id, which the session is tied to.
    fn id(&self) -> UserId;

    /// Bytes that change when the user's sessions must end — the password
    /// hash, or a counter the app bumps. A session logged in under another
    /// fingerprint is logged out at its next request. Only a SHA-256 of it
    /// is kept in the session.
    fn fingerprint(&self) -> &[u8];
}

/// Where users come from: checks credentials, loads a user by id.
pub trait Backend: Send + Sync + 'static {
    /// The app's user.
    type User: AuthUser;
    /// What a log-in form sends (a name and a password, say).
    type Credentials: Send;
    /// The backend's failure (a database that is down).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The user these credentials belong to, or `None` if they are wrong.
    fn authenticate(
        &self,
        credentials: Self::Credentials,
    ) -> impl Future<Output = Result<Option<Self::User>, Self::Error>> + Send;

    /// The user with this id, or `None` if there is none (any more).
    fn get_user(
        &self,
        id: &UserId,
    ) -> impl Future<Output = Result<Option<Self::User>, Self::Error>> + Send;
}

/// Why a log-in operation failed: the session (its store) or the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError<E: std::error::Error + 'static> {
    /// A session operation failed.
    #[error(transparent)]
    Session(#[from] Error),
    /// The backend failed.
    #[error("the user backend failed")]
    Backend(#[source] E),
}

/// Log-in for one [`Backend`]. Cloning is cheap.
#[derive(Debug)]
pub struct Auth<B> {
    backend: Arc<B>,
}

impl<B> Clone for Auth<B> {
    fn clone(&self) -> Self {
        Auth {
            backend: Arc::clone(&self.backend),
        }
    }
}

impl<B: Backend> Auth<B> {
    /// Log-in against `backend`.
    pub fn new(backend: B) -> Self {
        Auth {
            backend: Arc::new(backend),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Checks `credentials`: the user, or `None` if they are wrong. Does
    /// not log in; call [`login`](Self::login) with the user.
    pub async fn authenticate(
        &self,
        credentials: B::Credentials,
    ) -> Result<Option<B::User>, AuthError<B::Error>> {
        self.backend
            .authenticate(credentials)
            .await
            .map_err(AuthError::Backend)
    }

    /// Logs `user` in on `session`: a new id, the session tied to the user,
    /// the user's fingerprint kept, a new CSRF token.
    pub async fn login(&self, session: &Session, user: &B::User) -> Result<(), Error> {
        login_as(session, user.id(), user.fingerprint()).await
    }

    /// Logs the session out: deleted in the store, the client told to drop
    /// its cookie.
    pub async fn logout(&self, session: &Session) -> Result<(), Error> {
        session.logout().await
    }

    /// The logged-in user, checked against the backend: `None` for an
    /// anonymous visitor, and for a session whose user is gone, whose
    /// fingerprint changed, or that was tied to a user without
    /// [`login`](Self::login) (it keeps no fingerprint) — that session is
    /// logged out.
    pub async fn user(&self, session: &Session) -> Result<Option<B::User>, AuthError<B::Error>> {
        let Some(id) = session.user().await? else {
            return Ok(None);
        };
        let user = self
            .backend
            .get_user(&id)
            .await
            .map_err(AuthError::Backend)?;
        let kept: Option<String> = session.get(FINGERPRINT_KEY).await.unwrap_or(None);
        match user {
            Some(user) if kept.as_deref() == Some(&*digest(user.fingerprint())) => Ok(Some(user)),
            _ => {
                tracing::info!(user = %id, "user gone or fingerprint changed; session logged out");
                session.logout().await?;
                Ok(None)
            }
        }
    }

    /// Ends every other session of the logged-in user, for right after a
    /// password change (the fingerprint check would end them at their next
    /// request; this ends them now), and keeps this one logged in under
    /// the user's new fingerprint. Returns how many ended.
    pub async fn password_changed(&self, session: &Session, user: &B::User) -> Result<u64, Error> {
        session
            .insert(FINGERPRINT_KEY, digest(user.fingerprint()))
            .await?;
        session.logout_other_sessions().await
    }
}

/// The log-in steps, shared by [`Auth::login`] and CherryPy's tool.
pub(crate) async fn login_as(
    session: &Session,
    id: UserId,
    fingerprint: &[u8],
) -> Result<(), Error> {
    session.regenerate().await?;
    session.set_user(id).await?;
    session.insert(FINGERPRINT_KEY, digest(fingerprint)).await?;
    crate::csrf::rotate(session).await?;
    Ok(())
}

/// What the session keeps of a fingerprint: its SHA-256, in hex, so that
/// a password hash never sits in a session store.
pub(crate) fn digest(fingerprint: &[u8]) -> String {
    Sha256::digest(fingerprint)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
