//! Flash messages: set in one request, shown once in the next (the page a
//! redirect leads to), each with a [`Level`].
//!
//! The messages live in the session under one key. Taking them reads and
//! removes that key in one step while the request holds the session's
//! lock, so two requests of one visitor running at once (a page and its
//! XHRs, a double click) cannot both show a message, and a message added
//! by one cannot be lost by the other's save: the second request reads the
//! session only after the first saved it. In `explicit` locking mode,
//! [`Flash::take`] and [`Flash::push`] take the lock themselves.
//!
//! ```
//! use axum::response::Redirect;
//! use server_sessions::flash::{Flash, Level};
//!
//! async fn save(flash: Flash) -> Result<Redirect, server_sessions::Error> {
//!     flash.push(Level::Success, "Saved.").await?;
//!     Ok(Redirect::to("/"))
//! }
//!
//! async fn page(flash: Flash) -> Result<String, server_sessions::Error> {
//!     let shown: Vec<String> = flash
//!         .take()
//!         .await?
//!         .into_iter()
//!         .map(|m| format!("[{}] {}", m.level, m.text))
//!         .collect();
//!     Ok(shown.join("\n"))
//! }
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Locking;
use crate::error::Error;
use crate::session::Session;

/// The session key the messages are kept under.
pub const FLASH_KEY: &str = "_flash";

/// How much a message matters, for the page to style it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// For developers.
    Debug,
    /// Something happened.
    Info,
    /// What the visitor asked for was done.
    Success,
    /// Done, but look.
    Warning,
    /// Not done.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Success => "success",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

/// One flash message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// How much it matters.
    pub level: Level,
    /// What it says (plain text: escape it when writing HTML).
    pub text: String,
}

/// A session's flash messages. Made from a [`Session`] (`Flash::from`), or
/// taken by an axum handler as an argument (feature `axum`).
#[derive(Debug, Clone)]
pub struct Flash(Session);

impl From<Session> for Flash {
    fn from(session: Session) -> Self {
        Flash(session)
    }
}

impl Flash {
    /// Adds a message for the next request that takes them.
    pub async fn push(&self, level: Level, text: impl Into<String>) -> Result<(), Error> {
        self.lock_if_explicit().await?;
        let mut data = self.0.data().await?;
        // Messages of another shape (an older version's) are replaced
        // rather than failing every later page.
        let mut messages: Vec<Message> =
            data.get(FLASH_KEY).unwrap_or_default().unwrap_or_default();
        messages.push(Message {
            level,
            text: text.into(),
        });
        data.insert(FLASH_KEY, messages)
    }

    /// Shorthand for [`push`](Self::push) at [`Level::Info`].
    pub async fn info(&self, text: impl Into<String>) -> Result<(), Error> {
        self.push(Level::Info, text).await
    }

    /// Shorthand for [`push`](Self::push) at [`Level::Success`].
    pub async fn success(&self, text: impl Into<String>) -> Result<(), Error> {
        self.push(Level::Success, text).await
    }

    /// Shorthand for [`push`](Self::push) at [`Level::Warning`].
    pub async fn warning(&self, text: impl Into<String>) -> Result<(), Error> {
        self.push(Level::Warning, text).await
    }

    /// Shorthand for [`push`](Self::push) at [`Level::Error`].
    pub async fn error(&self, text: impl Into<String>) -> Result<(), Error> {
        self.push(Level::Error, text).await
    }

    /// The messages waiting, oldest first, removed from the session: a
    /// message is taken once. A session without any is not changed (and
    /// so only refreshed, not rewritten).
    pub async fn take(&self) -> Result<Vec<Message>, Error> {
        self.lock_if_explicit().await?;
        let mut data = self.0.data().await?;
        if !data.contains_key(FLASH_KEY) {
            return Ok(Vec::new());
        }
        Ok(data
            .remove(FLASH_KEY)
            .unwrap_or_default()
            .unwrap_or_default())
    }

    /// The messages waiting, left in place.
    pub async fn peek(&self) -> Result<Vec<Message>, Error> {
        Ok(self
            .0
            .get(FLASH_KEY)
            .await
            .unwrap_or_default()
            .unwrap_or_default())
    }

    /// In `explicit` mode nothing else takes the lock; a read-and-remove
    /// without it could show a message twice.
    async fn lock_if_explicit(&self) -> Result<(), Error> {
        if self.0.config().locking == Locking::Explicit {
            self.0.acquire_lock().await?;
        }
        Ok(())
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum_core::extract::FromRequestParts<S> for Flash {
    type Rejection = crate::NoSession;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        <Session as axum_core::extract::FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Flash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_are_taken_once_in_order() {
        let flash = Flash::from(crate::testing::session());
        flash.info("one").await.unwrap();
        flash.error("two").await.unwrap();
        assert_eq!(flash.peek().await.unwrap().len(), 2);
        let taken = flash.take().await.unwrap();
        assert_eq!(
            taken,
            vec![
                Message {
                    level: Level::Info,
                    text: "one".into()
                },
                Message {
                    level: Level::Error,
                    text: "two".into()
                },
            ]
        );
        assert!(flash.take().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_foreign_value_is_replaced_not_fatal() {
        let session = crate::testing::session();
        session.insert(FLASH_KEY, "not a list").await.unwrap();
        let flash = Flash::from(session);
        assert!(flash.take().await.unwrap().is_empty());
        flash.warning("w").await.unwrap();
        assert_eq!(flash.take().await.unwrap()[0].level, Level::Warning);
    }
}
