//! What every request of one layer shares: the store, the per-path
//! config, and the background clean-up task. Its own module so that the
//! layer and the service both use it without importing each other.

use std::sync::{Arc, OnceLock, Weak};

use futures_util::StreamExt;

use crate::config::Config;
use crate::events::{Events, FoundBy, Hook, SessionEvent};
use crate::measure;
use crate::store::SessionStore;
use crate::task::AbortOnDrop;

pub(super) struct Shared {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) config: Config,
    /// The hooks registered with `on_event`, and where their events go.
    pub(super) hooks: Vec<Hook>,
    pub(super) events: Events,
    cleanup: OnceLock<Option<AbortOnDrop>>,
    watch_expiry: OnceLock<Option<AbortOnDrop>>,
}

impl Shared {
    pub(super) fn new(store: Arc<dyn SessionStore>, config: Config, hooks: Vec<Hook>) -> Self {
        Shared {
            store,
            config,
            events: Events::start(hooks.clone()),
            hooks,
            cleanup: OnceLock::new(),
            watch_expiry: OnceLock::new(),
        }
    }

    /// Starts the background tasks once, from inside the runtime (the
    /// layer may be built before there is one): clean-up, and with event
    /// hooks the watch on what the store expires by itself.
    pub(super) fn start_background(self: &Arc<Self>) {
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
