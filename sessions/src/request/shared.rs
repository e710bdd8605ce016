//! What every request of one layer (of any framework's adapter) shares:
//! the store, the per-path config, the event hooks and the background
//! tasks (clean-up, the watch on what the store expires by itself).

use std::sync::{Arc, OnceLock, Weak};

use futures_util::StreamExt;

use crate::config::Config;
use crate::events::{Events, FoundBy, Hook, SessionEvent};
use crate::measure;
use crate::store::SessionStore;
use crate::task::AbortOnDrop;

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) config: Config,
    /// The hooks registered with `on_event`, and where their events go.
    pub(crate) hooks: Vec<Hook>,
    pub(crate) events: Events,
    cleanup: OnceLock<Option<AbortOnDrop>>,
    watch_expiry: OnceLock<Option<AbortOnDrop>>,
}

impl Shared {
    pub(crate) fn new(store: Arc<dyn SessionStore>, config: Config, hooks: Vec<Hook>) -> Self {
        Shared {
            store,
            config,
            events: Events::start(hooks.clone()),
            hooks,
            cleanup: OnceLock::new(),
            watch_expiry: OnceLock::new(),
        }
    }

    /// The session of a request on `config` (the section of its path,
    /// [`Config::resolve`]) whose client sent `client`; starts the
    /// background tasks on the first one.
    pub(crate) fn request(
        self: &Arc<Self>,
        config: &Arc<crate::config::SessionConfig>,
        client: super::ClientId,
    ) -> super::RequestSession {
        self.request_on(Arc::clone(&self.store), config, client)
    }

    /// [`request`](Self::request) on a store of its own: the sealed cookie
    /// store's one-session store of this request (`store/cookie.rs`).
    pub(crate) fn request_on(
        self: &Arc<Self>,
        store: Arc<dyn SessionStore>,
        config: &Arc<crate::config::SessionConfig>,
        client: super::ClientId,
    ) -> super::RequestSession {
        self.start_background();
        super::RequestSession::new(store, Arc::clone(config), self.events.clone(), client)
    }

    /// Starts the background tasks once, from inside the runtime (the
    /// layer may be built before there is one): clean-up, and with event
    /// hooks the watch on what the store expires by itself.
    pub(crate) fn start_background(self: &Arc<Self>) {
        self.start_cleanup();
        self.watch_expiry.get_or_init(|| {
            if !self.events.on() {
                return None;
            }
            let mut expired = self.store.expirations()?;
            let events = self.events.clone();
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let task = runtime.spawn(async move {
                while let Some(key) = expired.next().await {
                    measure::expired(FoundBy::Ttl, 1);
                    events.emit(SessionEvent::Expired {
                        key,
                        user: None,
                        found_by: FoundBy::Ttl,
                    });
                }
            });
            Some(AbortOnDrop(task.abort_handle()))
        });
    }

    fn start_cleanup(self: &Arc<Self>) {
        self.cleanup.get_or_init(|| {
            let every = self.config.storage().clean_freq;
            if every.is_zero() || self.store.as_admin().is_none() {
                return None;
            }
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            // The task holds only a weak reference, so it never keeps the
            // layer alive; dropping the layer aborts it.
            let shared: Weak<Shared> = Arc::downgrade(self);
            let task = runtime.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(shared) = shared.upgrade() else {
                        break;
                    };
                    let Some(admin) = shared.store.as_admin() else {
                        break;
                    };
                    let events = &shared.events;
                    let expired = |key, user| {
                        events.emit(SessionEvent::Expired {
                            key,
                            user,
                            found_by: FoundBy::CleanUp,
                        })
                    };
                    match admin.clean_up_and_report(&expired).await {
                        Ok(0) => {}
                        Ok(n) => {
                            measure::expired(FoundBy::CleanUp, n);
                            tracing::debug!(removed = n, "expired sessions cleaned up")
                        }
                        Err(e) => tracing::warn!(error = %e, "session clean-up failed"),
                    }
                }
            });
            Some(AbortOnDrop(task.abort_handle()))
        });
    }
}
