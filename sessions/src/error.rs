//! What a session operation can fail with, and what each failure answers.
//!
//! Every error that becomes a response is logged exactly once: store
//! failures, refused sizes and a failing random source where they happen
//! (the middleware answers them even when the handler swallows the error),
//! the handler's own mistakes (a value of the wrong type, a handle used
//! after its request) when they are turned into a response. The two kinds
//! that come in floods — the store unavailable (down, full) and lock
//! timeouts — are said at most once a second each, with the number left
//! unsaid since, so that an outage or a flood of requests cannot flood the
//! log as well.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode};

use crate::id::RandomError;
use crate::store;

/// An error from a [`Session`](crate::Session) operation. As an axum
/// response it becomes a 503 (store trouble, lock timeout) or a 500 (a
/// programming or data error) with a short body; the details go to the
/// log, not to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed or its lock was not free in time.
    #[error(transparent)]
    Store(store::Error),
    /// The session would be larger than `max_size` (or than its store
    /// keeps) once encoded. Nothing was written: the stored session is as
    /// it was. The same variant whichever limit refused it.
    #[error("session of {size} bytes exceeds max_size of {max} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A value could not be converted to or from the requested type.
    #[error("session value {key:?} cannot be converted")]
    Value {
        /// The key.
        key: String,
        /// The conversion error.
        #[source]
        source: serde_json::Error,
    },
    /// No new id could be drawn.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The handle was used after its request was answered.
    #[error("the session was used after its request ended")]
    Finished,
    /// The handle was called while this request's
    /// [`SessionData`](crate::SessionData) guard was alive. The call would
    /// wait for the guard, which the caller itself holds: it fails at once
    /// instead of hanging the request.
    #[error("the session's data guard is still held: drop it before calling the handle again")]
    DataHeld,
    /// A user id made from what a client sent is not one: `?` on
    /// [`UserId::new`](crate::UserId::new) in a handler answers 400 with
    /// the reason.
    #[error(transparent)]
    User(#[from] crate::user::InvalidUser),
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            // One meaning, one variant: a store's own size limit refuses
            // exactly as `max_size` does.
            store::Error::TooLarge { size, max } => Error::TooLarge { size, max },
            e => Error::Store(e),
        }
    }
}

/// What a failed request answers, kept apart from the error itself so that
/// the middleware can answer it even when the handler swallowed the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The lock was not free in time: 503, try again.
    Busy,
    /// The store is down: 503, try again.
    Unavailable,
    /// A programming, data or setup error: 500, retrying cannot help.
    Internal,
    /// What the client sent cannot be used (a user id): 400.
    BadInput,
}

impl Error {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.failure().status()
    }

    pub(crate) fn failure(&self) -> Failure {
        match self {
            Error::Store(store::Error::LockTimeout(_)) => Failure::Busy,
            Error::Store(
                store::Error::Config { .. }
                | store::Error::Unsupported(_)
                | store::Error::ExpiresTooLate { .. },
            ) => Failure::Internal,
            Error::Store(_) | Error::Random(_) => Failure::Unavailable,
            Error::TooLarge { .. } | Error::Value { .. } | Error::Finished | Error::DataHeld => {
                Failure::Internal
            }
            Error::User(_) => Failure::BadInput,
        }
    }

    /// Whether this error was logged where it arose (see the module docs).
    fn logged_at_origin(&self) -> bool {
        !matches!(
            self,
            Error::Value { .. } | Error::Finished | Error::DataHeld | Error::User(_)
        )
    }

    /// Logs the error with what an operator needs: the backend's error for
    /// a store failure. Never an id: only a short form of it ever reaches
    /// a log.
    pub(crate) fn log(&self) {
        match self.failure() {
            Failure::Busy => {
                if let Some(unsaid) = BUSY.turn() {
                    tracing::warn!(error = %self, unsaid, "session lock timeout")
                }
            }
            Failure::Unavailable => {
                if let Some(unsaid) = UNAVAILABLE.turn() {
                    tracing::error!(
                        error = %self,
                        // `Store` is transparent: its source is the backend's error.
                        source = ?std::error::Error::source(self),
                        unsaid,
                        "session store failed"
                    )
                }
            }
            // The client's mistake: nothing for an operator to do.
            Failure::BadInput => tracing::debug!(error = %self, "bad input for the session"),
            Failure::Internal => tracing::error!(
                error = %self,
                source = ?std::error::Error::source(self),
                "session error"
            ),
        }
    }

    /// The response for a handler that returned this error: logged here
    /// unless it was logged where it arose.
    pub(crate) fn answer<B: From<&'static str>>(&self) -> Response<B> {
        if !self.logged_at_origin() {
            self.log();
        }
        self.failure().response()
    }
}

/// Lets one log line through per [`Throttle::EVERY`], counting the others.
pub(crate) struct Throttle(Mutex<Option<(Instant, u64)>>);

static BUSY: Throttle = Throttle::new();
static UNAVAILABLE: Throttle = Throttle::new();

impl Throttle {
    const EVERY: Duration = Duration::from_secs(1);

    pub(crate) const fn new() -> Self {
        Throttle(Mutex::new(None))
    }

    /// `Some(lines left unsaid since the last one)` if this one may be
    /// logged, `None` (counted) if it may not.
    pub(crate) fn turn(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            Some((last, unsaid)) if now.duration_since(*last) < Self::EVERY => {
                *unsaid += 1;
                None
            }
            Some((last, unsaid)) => {
                *last = now;
                Some(std::mem::take(unsaid))
            }
            None => {
                *state = Some((now, 0));
                Some(0)
            }
        }
    }
}

impl Failure {
    fn status(self) -> StatusCode {
        match self {
            Failure::Busy | Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Failure::BadInput => StatusCode::BAD_REQUEST,
        }
    }

    /// A response with a short body, for any body type that can be made
    /// from a string. The details are in the log, not in the body.
    pub(crate) fn response<B: From<&'static str>>(self) -> Response<B> {
        let body = match self {
            Failure::Busy => "session busy, try again\n",
            Failure::Unavailable => "session store unavailable\n",
            Failure::Internal => "session error\n",
            Failure::BadInput => "invalid user id\n",
        };
        let mut response = Response::new(B::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if matches!(self, Failure::Busy | Failure::Unavailable) {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_says_one_line_a_second_and_counts_the_rest() {
        let throttle = Throttle(Mutex::new(None));
        assert_eq!(throttle.turn(), Some(0));
        assert_eq!(throttle.turn(), None);
        assert_eq!(throttle.turn(), None);
        std::thread::sleep(Throttle::EVERY + Duration::from_millis(10));
        assert_eq!(throttle.turn(), Some(2));
        assert_eq!(throttle.turn(), None);
    }
}
