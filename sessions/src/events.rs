//! Session events: a session was created, regenerated, deleted or found
//! expired, told to hooks the app registers with
//! [`SessionLayer::on_event`](crate::SessionLayer::on_event). How hooks
//! are run is told on [`SessionEvent`], where users read it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;

use crate::error::Throttle;
use crate::id::StoreKey;
use crate::user::UserId;

/// How many events may wait for the hooks before new ones are dropped.
const QUEUE: usize = 4_096;

/// Something that happened to a session, told to the hooks registered
/// with [`SessionLayer::on_event`](crate::SessionLayer::on_event).
/// Sessions are named by their [`StoreKey`], which grants nothing (use
/// [`StoreKey::short`] in logs), never by their id.
///
/// Hooks run on a thread of their own, one event after another, fed by a
/// bounded queue. A request only puts its events in the queue, after its
/// store operations succeeded and after it released the session's lock,
/// so a hook never runs under a session lock and a slow hook never holds
/// up a request: when the queue is full (the hooks fall 4,096 events
/// behind) further events are dropped, and said so in the log once a
/// second with the count. A hook that panics is logged; the next event
/// is delivered as usual. A hook that needs async work hands it to its
/// runtime (`tokio::runtime::Handle::spawn`).
///
/// ```
/// use server_sessions::{SessionEvent, SessionLayer};
/// use server_sessions::store::MemoryStore;
///
/// let layer = SessionLayer::new(MemoryStore::new()).on_event(|event: &SessionEvent| {
///     // Log, count, audit: this runs on the events thread.
///     println!("session {} {}", event.key().short(), event.kind());
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A new session was saved for the first time.
    Created {
        /// The session.
        key: StoreKey,
        /// Its user, if it was tied to one before its first save.
        user: Option<UserId>,
    },
    /// A session got a new id ([`Session::regenerate`](crate::Session::regenerate)):
    /// saved under the new one, the old record deleted.
    Regenerated {
        /// The session under its old id.
        from: StoreKey,
        /// The session under its new id.
        to: StoreKey,
        /// Its user.
        user: Option<UserId>,
    },
    /// A session was deleted by its request
    /// ([`Session::delete`](crate::Session::delete),
    /// [`logout`](crate::Session::logout), or a user's sessions ended).
    Deleted {
        /// The session.
        key: StoreKey,
        /// Its user, when the request had loaded it.
        user: Option<UserId>,
    },
    /// A session was found expired and removed.
    Expired {
        /// The session.
        key: StoreKey,
        /// Its user, when the store could still read it.
        user: Option<UserId>,
        /// Who found it.
        found_by: FoundBy,
    },
}

/// Who found an expired session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FoundBy {
    /// The background clean-up (every `clean_freq`).
    CleanUp,
    /// A request that loaded it past its `absolute_timeout` (or found its
    /// record unreadable).
    Load,
    /// The store's own expiry (Redis, with keyspace notifications on).
    Ttl,
}

impl SessionEvent {
    /// The session the event is about (for a regeneration, its new key).
    pub fn key(&self) -> &StoreKey {
        match self {
            SessionEvent::Created { key, .. }
            | SessionEvent::Deleted { key, .. }
            | SessionEvent::Expired { key, .. } => key,
            SessionEvent::Regenerated { to, .. } => to,
        }
    }

    /// The session's user, if known.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            SessionEvent::Created { user, .. }
            | SessionEvent::Regenerated { user, .. }
            | SessionEvent::Deleted { user, .. }
            | SessionEvent::Expired { user, .. } => user.as_ref(),
        }
    }

    /// `"created"`, `"regenerated"`, `"deleted"` or `"expired"`.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionEvent::Created { .. } => "created",
            SessionEvent::Regenerated { .. } => "regenerated",
            SessionEvent::Deleted { .. } => "deleted",
            SessionEvent::Expired { .. } => "expired",
        }
    }
}

/// A registered hook.
pub(crate) type Hook = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

/// Where a layer's events go: nowhere without hooks (free), otherwise the
/// queue of its events thread.
#[derive(Clone, Default)]
pub(crate) struct Events {
    queue: Option<SyncSender<SessionEvent>>,
}

/// Dropped events, said once a second.
static DROPPED: Throttle = Throttle::new();

impl Events {
    /// Starts the events thread for `hooks` (none: no thread). The thread
    /// ends when the last `Events` clone is dropped.
    pub(crate) fn start(hooks: Vec<Hook>) -> Self {
        if hooks.is_empty() {
            return Events::default();
        }
        let (queue, events) = mpsc::sync_channel::<SessionEvent>(QUEUE);
        let started = std::thread::Builder::new()
            .name("session-events".into())
            .spawn(move || {
                for event in events {
                    for hook in &hooks {
                        if catch_unwind(AssertUnwindSafe(|| hook(&event))).is_err() {
                            tracing::error!(event = event.kind(), "a session event hook panicked");
                        }
                    }
                }
            });
        match started {
            Ok(_) => Events { queue: Some(queue) },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the session events thread; events are off");
                Events::default()
            }
        }
    }

    /// Whether anyone listens: events need not be made otherwise.
    pub(crate) fn on(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues `event` for the hooks, never waiting.
    pub(crate) fn emit(&self, event: SessionEvent) {
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                if let Some(unsaid) = DROPPED.turn() {
                    tracing::warn!(unsaid, "session event hooks fall behind; events dropped");
                }
            }
        }
    }
}
