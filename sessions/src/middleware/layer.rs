use std::sync::Arc;

use tower_layer::Layer;

use super::SessionService;
use crate::config::{Config, SessionConfig};
use crate::events::{Hook, SessionEvent};
use crate::request::Shared;
use crate::store::SessionStore;

/// Adds sessions to a service. See the [module docs](crate::middleware).
///
/// Cloning is cheap. The first request starts a background task that
/// cleans up expired sessions every `clean_freq`; it stops when the last
/// clone of the layer and its services is dropped.
#[derive(Clone)]
pub struct SessionLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("store", &self.shared.store)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl SessionLayer {
    /// Sessions in `store` for every path, with the default settings.
    /// Background clean-up runs if the store has an admin side
    /// ([`SessionStore::as_admin`]); every store of this crate has one.
    pub fn new(store: impl SessionStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Like [`new`](Self::new), for a store already shared as a trait
    /// object (as [`store::open`](crate::store::open) returns it).
    pub fn from_arc(store: Arc<dyn SessionStore>) -> Self {
        Self::build(store, Config::default(), Vec::new())
    }

    /// The same settings for every path.
    ///
    /// # Panics
    ///
    /// If the settings cannot keep a session ([`SessionConfig::problem`]):
    /// no cookie and no header to carry the id; a cookie name, path or
    /// domain a browser would not send back (a name that is not an RFC 6265
    /// token, a path that does not start with `/`, a domain that is not a
    /// host name); or a `__Host-` or `__Secure-` cookie whose rules they
    /// break (a browser would drop every such cookie). The app is refused at
    /// start rather than silently left without sessions.
    pub fn with_config(self, config: SessionConfig) -> Self {
        self.with_file_config(Config::single(config))
    }

    /// Per-path settings, as a config file gives them.
    ///
    /// # Panics
    ///
    /// As [`with_config`](Self::with_config), for any path's settings (a
    /// config file that breaks the rules fails to load instead).
    pub fn with_file_config(self, config: Config) -> Self {
        for (path, settings) in config.sections().filter(|(_, s)| s.on) {
            if let Some((key, why)) = settings.problem() {
                panic!("session settings for {path}: {key}: {why}");
            }
        }
        Self::build(self.shared.store.clone(), config, self.shared.hooks.clone())
    }

    /// Calls `hook` for every [`SessionEvent`] of this layer's sessions:
    /// created, regenerated, deleted, expired (found by a request, by the
    /// background clean-up, or by the store's own expiry where it tells).
    /// Hooks run on a thread of their own, after the store operation
    /// succeeded and after the request released the session's lock; a slow
    /// or panicking hook holds up no request (see the
    /// [events docs](crate::SessionEvent) for what happens when hooks fall
    /// behind). Call it after `with_config`/`with_file_config`; hooks add
    /// up.
    pub fn on_event(self, hook: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        let mut hooks = self.shared.hooks.clone();
        hooks.push(Arc::new(hook));
        Self::build(self.shared.store.clone(), self.shared.config.clone(), hooks)
    }

    fn build(store: Arc<dyn SessionStore>, config: Config, hooks: Vec<Hook>) -> Self {
        SessionLayer {
            shared: Arc::new(Shared::new(store, config, hooks)),
        }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}
