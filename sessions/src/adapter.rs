//! For framework adapters: the request life cycle of [`SessionLayer`]
//! without tower, for a framework whose middleware is not a tower layer
//! (actix-web's `Transform`, in the `server-sessions-actix` crate).
//!
//! The tower layer is itself built on this module, so an adapter gets the
//! same behaviour: config per path, locking modes, events, the user index,
//! id headers, metrics, and the same answers to failures. An adapter only
//! translates HTTP:
//!
//! 1. [`Pending::start`] with the request's path and headers (as `http`
//!    1.x types); `None` means sessions are off for the path. Hand
//!    [`Pending::session`] to the handler (a request extension).
//! 2. [`Pending::before_handler`]; an `Err` is the response to send
//!    instead of calling the handler (the `early` lock was not had).
//! 3. Call the handler, then [`Pending::finish`], and write its
//!    [`Reply`] into the response.
//!
//! Dropping a [`Pending`] at any point (an error, a panic, the client going
//! away) ends the request's hold on the session and releases its lock.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Response};

use crate::config::{Locking, SessionConfig, StorageType};
use crate::error::{Error, Failure};
use crate::middleware::SessionLayer;
use crate::request::ClientId;
use crate::session::{EndOnDrop, Session};
use crate::store::{InCookie, MAX_COOKIE};
use crate::{cookie, header};

/// One request's session, between the request arriving and its response.
#[derive(Debug)]
pub struct Pending {
    session: Session,
    cookie_path: Option<String>,
    early: bool,
    /// `storage_type = "cookie"`: the request's one-session store, whose
    /// record goes back sealed in the cookie.
    in_cookie: Option<InCookie>,
    /// Held from start to the end of [`finish`](Self::finish), or until
    /// dropped, whichever comes first.
    _end: EndOnDrop,
}

/// What [`Pending::finish`] says the response must become.
#[derive(Debug)]
#[must_use]
pub enum Reply {
    /// The handler's response stands, with these headers written into it.
    Headers(ResponseHeaders),
    /// A store call failed or a lock wait timed out (whether or not the
    /// handler saw it): this response (503 with `Retry-After`, or 500)
    /// replaces the handler's.
    Replace(Response<&'static str>),
}

/// The session's headers for a response that stands.
#[derive(Debug, Default)]
pub struct ResponseHeaders {
    set_cookie: Option<HeaderValue>,
    id_header: Option<(HeaderName, HeaderValue)>,
}

impl Pending {
    /// Starts the session of a request for `path` (the URI's path, which
    /// picks the config section) with these request `headers`; `None`
    /// when sessions are off for the path. Starts the layer's background
    /// tasks on the first request: call it inside a tokio runtime.
    pub fn start(layer: &SessionLayer, path: &str, headers: &HeaderMap) -> Option<Pending> {
        let shared = &layer.shared;
        let config = shared.config.resolve(path);
        if !config.on {
            return None;
        }
        // `storage_type = "cookie"`: the session itself is in the cookie,
        // and this request gets a store of its own holding it.
        let in_cookie = (config.storage.kind == StorageType::Cookie)
            .then(|| InCookie::for_request(cookie::values(headers, &config.name), config));
        let client = match &in_cookie {
            Some((_, client)) => *client,
            None => client_id(headers, config),
        };
        let cookie_path = config
            .path_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|p| cookie::is_cookie_path(p))
            .map(String::from);
        let early = config.locking == Locking::Early;
        let (state, in_cookie) = match in_cookie {
            Some((store, _)) => (
                shared.request_on(Arc::new(store.clone()), config, client),
                Some(store),
            ),
            None => (shared.request(config, client), None),
        };
        let session = Session::new(state, client.id());
        Some(Pending {
            _end: session.end_on_drop(),
            session,
            cookie_path,
            early,
            in_cookie,
        })
    }

    /// The handle for the handler.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Runs before the handler: in `early` locking mode, takes the
    /// session's lock. `Err` is the response to answer instead of calling
    /// the handler.
    pub async fn before_handler(&self) -> Result<(), Response<&'static str>> {
        if !self.early {
            return Ok(());
        }
        let mut state = self.session.request_state().lock().await;
        state
            .acquire_lock()
            .await
            .map_err(|e| e.failure().response())
    }

    /// Runs once the handler returned: saves what it used, deletes what it
    /// gave up, releases the lock, and says what the response becomes.
    pub async fn finish(self) -> Reply {
        let outcome = self.session.request_state().lock().await.finish().await;
        if let Some(failure) = outcome.failure {
            return Reply::Replace(failure.response());
        }
        let config = self.session.config();
        let path = self.cookie_path.as_deref().unwrap_or(&config.path);
        let mut out = ResponseHeaders::default();
        if let Some(saved) = outcome.carry {
            let max_age = saved.expires.saturating_sub(crate::record::now_millis());
            let max_age = std::time::Duration::from_millis(max_age);
            let set_cookie = match self
                .in_cookie
                .as_ref()
                .and_then(|c| c.sealed(&saved.id, config))
            {
                Some(Ok(value)) => Some(cookie::set_cookie_value(config, path, &value, max_age)),
                Some(Err(size)) => {
                    // Refused after the handler ran, the old cookie kept:
                    // the same answer as a session over `max_size`.
                    tracing::error!(
                        session = %saved.id.short(),
                        size,
                        max = MAX_COOKIE,
                        "session too large for its cookie; refused, the old cookie kept"
                    );
                    return Reply::Replace(Failure::Internal.response());
                }
                None if config.cookie => Some(cookie::set_cookie(config, path, &saved.id, max_age)),
                None => None,
            };
            out.set_cookie = set_cookie.filter(|_| config.cookie);
            out.id_header = config
                .header
                .clone()
                .map(|name| (name, header::carrying(&saved.id, config.signer())));
        }
        if outcome.drop_id {
            out.set_cookie = config.cookie.then(|| cookie::expire_cookie(config, path));
            out.id_header = config.header.clone().map(|name| (name, header::ended()));
        }
        Reply::Headers(out)
    }
}

impl ResponseHeaders {
    /// A `Set-Cookie` value to append (after the handler's own cookies).
    pub fn set_cookie(&self) -> Option<&HeaderValue> {
        self.set_cookie.as_ref()
    }

    /// The id header and its value, to insert, replacing one the handler
    /// set: the session owns this header.
    pub fn id_header(&self) -> Option<(&HeaderName, &HeaderValue)> {
        self.id_header.as_ref().map(|(n, v)| (n, v))
    }

    /// `Cache-Control` to set when the handler set none: a response that
    /// carries an id in a header is this visitor's alone, and no shared
    /// cache may keep it.
    pub fn cache_control(&self) -> Option<HeaderValue> {
        self.id_header
            .as_ref()
            .map(|_| HeaderValue::from_static("private"))
    }

    /// Writes the headers into a response's, as the methods above say.
    pub fn write_to(&self, headers: &mut HeaderMap) {
        if let Some(c) = self.set_cookie() {
            headers.append(http::header::SET_COOKIE, c.clone());
        }
        if let Some((name, value)) = self.id_header() {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(c) = self.cache_control() {
            headers.entry(http::header::CACHE_CONTROL).or_insert(c);
        }
    }
}

/// The response for a handler that returned `error`, as the axum extractor
/// answers it: 503 with `Retry-After` for store trouble or a busy lock,
/// 500 otherwise, with a short body (the details go to the log, once).
pub fn error_response(error: &Error) -> Response<&'static str> {
    error.answer()
}

/// The id the client sent: in the `header`, when one is configured and
/// sent; otherwise in the cookie, when cookies are on.
fn client_id(headers: &HeaderMap, config: &SessionConfig) -> ClientId {
    if let Some(name) = &config.header {
        let sent = header::client_id(headers, name, config.signer());
        if sent != ClientId::NotSent || !config.cookie {
            return sent;
        }
    }
    if config.cookie {
        cookie::client_id(headers, &config.name, config.signer())
    } else {
        ClientId::NotSent
    }
}
