//! Opening a Redis store: connecting to what the URL names, the `with_*`
//! settings, and the store a config describes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::scripts::Scripts;
use super::target::Target;
use super::{bounded, RedisStore};
use crate::store::{self, Error, Keep, LockWaits, OpenError};

const DEFAULT_PREFIX: &str = "session:";
const DEFAULT_MAX_SIZE: usize = 64 * 1024;
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Shorter leases would be renewed more often than a round trip takes.
const MIN_LEASE: Duration = Duration::from_millis(30);

impl RedisStore {
    /// Connects to the Redis that `url` names:
    ///
    /// - `redis://[user:password@]host[:port][/db]`: one node;
    /// - `redis://host:7000,redis://host:7001,…` (several node URLs,
    ///   comma-separated) or `redis+cluster://[user:password@]host:port[,host:port…]`:
    ///   a Redis Cluster, discovered from whichever listed node answers;
    /// - `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/db]`:
    ///   the master that the Sentinels at those addresses (port 26379 if
    ///   left out) monitor as `MASTER`. The credentials and database are
    ///   the master's; the Sentinels are asked without a password.
    ///
    /// Fails with [`Error::Config`] (`storage_url`) if the URL does not
    /// parse, and with [`Error::Unavailable`] if Redis (for Sentinel: a
    /// master) cannot be reached within a few seconds. Once connected, the
    /// store reconnects by itself whenever a connection drops.
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        let target = Target::parse(url)?;
        let conn = bounded("connecting to redis", target.connect()).await?;
        Ok(RedisStore {
            conn,
            target: Arc::new(target),
            durable: Arc::new(OnceCell::new()),
            wait_replicas: 0,
            scripts: Arc::new(Scripts::new()),
            locks: LockWaits::new(),
            listener: Arc::default(),
            subscribed: Arc::default(),
            prefix: DEFAULT_PREFIX.into(),
            channel: release_channel(DEFAULT_PREFIX),
            max_size: DEFAULT_MAX_SIZE,
            lease: DEFAULT_LEASE,
            keep: Some(Keep::default()),
        })
    }

    /// Sets the prefix of every key (default `"session:"`), so that several
    /// applications can share one Redis. Keep braces out of it: they would
    /// make a cluster put every session on one slot.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self.channel = release_channel(&self.prefix);
        // Other keys: this store queues its requests and subscribes on its
        // own, and never takes a lock handed over under the old prefix.
        self.locks = LockWaits::new();
        self.listener = Arc::default();
        self.subscribed = Arc::default();
        self
    }

    /// Sets the largest encoded session a load accepts (default 64 KiB).
    /// Larger values are logged and treated as missing, and a save of a
    /// larger session is refused with [`Error::TooLarge`] (a 500 through
    /// the layer, the stored session unchanged). Keep it at least the
    /// layer's `max_size`; [`store::open`](crate::store::open) does.
    pub fn with_max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// Sets the lock lease (default 10 s, at least 30 ms): how long a lock
    /// outlives a holder that vanished without releasing it. A live holder
    /// renews it every third of the lease, however long it holds the lock.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(MIN_LEASE);
        self
    }

    /// Keeps sessions in this process between requests within `keep`'s
    /// bounds (the default, [`Keep::default`]), or with `None` releases
    /// every lock at the end of its request. See "Keeping" above.
    pub fn with_keep(mut self, keep: Option<Keep>) -> Self {
        self.keep = keep;
        self
    }

    /// After every save and delete, waits (at most a second) until
    /// `replicas` replicas have it, and answers [`Error::Unavailable`] if
    /// fewer did (default 0: no waiting). See "Failover" above for what
    /// this does and does not promise.
    pub fn with_wait_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
        self
    }
}

fn release_channel(prefix: &str) -> Arc<str> {
    format!("{prefix}released").into()
}

impl RedisStore {
    /// The Redis store a config describes: [`connect`](Self::connect) to
    /// its `storage_url`, with its `redis_prefix` and
    /// `redis_wait_replicas`, holding sessions up to the largest
    /// `max_size` of any section (what [`store::open`](crate::store::open)
    /// builds for `storage_type = "redis"`).
    pub async fn from_config(config: &crate::Config) -> Result<RedisStore, OpenError> {
        let storage = config.storage();
        Ok(Self::connect(store::open::url(storage)?)
            .await?
            .with_prefix(storage.redis_prefix.clone())
            .with_max_size(config.largest_max_size())
            .with_wait_replicas(storage.redis_wait_replicas)
            .with_keep(storage.keep))
    }
}
