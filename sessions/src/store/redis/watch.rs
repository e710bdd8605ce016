//! The Redis store's publish/subscribe: the wake-up subscription, which
//! wakes this process's waiter when another process releases a lock it
//! waits for, and the watch on keyspace notifications, which tells the
//! sessions Redis expired by TTL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::conn;
use super::target::Target;
use crate::id::StoreKey;
use crate::store::LockWaits;

/// How long the wake-up subscription may take to connect (for Sentinel:
/// to find the master too), and waits before trying again after a loss.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// How often the subscription's connection is pinged: a server that went
/// away without closing it (a partition, a host crash) is noticed within
/// this and the response timeout.
const LISTEN_PING: Duration = Duration::from_secs(15);

/// Holds the wake-up subscription (`up` while it is) and wakes this
/// process's waiter for each session another process released, or gives
/// back one another process wants; subscribes again after a loss (on a
/// Cluster, at the next listed node; with Sentinel, at the master it names
/// then). Ends when the store (its waits) is gone. While it cannot
/// subscribe, waiters poll: the first failure is a warning (an ACL that
/// forbids the channel, say), later ones are debug.
pub(super) async fn listen(
    target: Arc<Target>,
    channel: Arc<str>,
    waits: Weak<LockWaits>,
    up: Arc<AtomicBool>,
) {
    let mut warned = false;
    for attempt in 0.. {
        let subscribed = tokio::time::timeout(LISTEN_TIMEOUT, target.subscribe(&channel, attempt));
        let why = match subscribed.await {
            Ok(Ok(pubsub)) => {
                up.store(true, Ordering::Relaxed);
                let delivered = deliver(pubsub, &waits).await;
                up.store(false, Ordering::Relaxed);
                // Requests to give sessions back may have been lost with it.
                if let Some(waits) = waits.upgrade() {
                    waits.release_kept();
                }
                match delivered {
                    Delivery::StoreGone => return,
                    Delivery::Lost => "lost their connection".to_owned(),
                }
            }
            Ok(Err(error)) => format!("cannot subscribe ({error})"),
            Err(_) => "timed out subscribing".to_owned(),
        };
        subscription_failed(
            &mut warned,
            &channel,
            "session lock wake-ups",
            &why,
            "waiters poll",
        );
        if waits.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// Logs why a subscription failed, and what happens meanwhile: the first
/// failure as a warning, worth an operator's eye (an ACL without the
/// channel, a Cluster that lists no master), the retries after it at debug.
fn subscription_failed(warned: &mut bool, channel: &str, what: &str, why: &str, meanwhile: &str) {
    if *warned {
        tracing::debug!(%channel, "{what} {why}; {meanwhile}");
    } else {
        tracing::warn!(%channel, "{what} {why}; {meanwhile}");
        *warned = true;
    }
}

/// Expiries announced but not yet taken by the layer; beyond, they are
/// dropped (they are only events).
pub(super) const EXPIRED_QUEUE: usize = 1_024;

/// Subscribes to the expiry announcements of the master (of each master,
/// on a Cluster) and passes on the sessions among them (`{prefix}{<key>}`;
/// lock and index keys are not sessions), re-subscribing after a loss, until
/// the receiver is gone.
pub(super) async fn watch_expiry(
    target: Arc<Target>,
    channel: String,
    prefix: Arc<str>,
    expired: tokio::sync::mpsc::Sender<StoreKey>,
) {
    let mut warned = false;
    loop {
        let subscribed = tokio::time::timeout(LISTEN_TIMEOUT, target.subscribe_expiries(&channel));
        let why = match subscribed.await {
            Ok(Ok(subscriptions)) => match pass_on_expiries(subscriptions, &prefix, &expired).await
            {
                Watch::Unwanted => return,
                Watch::Due => continue,
                Watch::Lost => "lost their connection".to_owned(),
            },
            Ok(Err(error)) => format!("cannot subscribe ({error})"),
            Err(_) => "timed out subscribing".to_owned(),
        };
        if expired.is_closed() {
            return;
        }
        let what = "session expiry announcements";
        subscription_failed(&mut warned, &channel, what, &why, "subscribing again");
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// How long one expiry subscription is kept before it is made again: so
/// that after a failover it moves to the new master (a demoted one
/// announces nothing) and a Cluster's masters are listed afresh, within
/// this.
const EXPIRY_RESUBSCRIBE: Duration = Duration::from_secs(60);

/// Passes on the sessions among the subscriptions' expiry messages,
/// pinging each as the wake-up subscription does, until one is lost or
/// [`EXPIRY_RESUBSCRIBE`] is over, or nobody takes them any more.
async fn pass_on_expiries(
    subscriptions: Vec<::redis::aio::PubSub>,
    prefix: &str,
    expired: &tokio::sync::mpsc::Sender<StoreKey>,
) -> Watch {
    use futures_util::future::{select, Either};
    let (mut sinks, streams): (Vec<_>, Vec<_>) =
        subscriptions.into_iter().map(|p| p.split()).unzip();
    // Each subscription's end shows as a `None` in the merged stream, so
    // that losing one master's is noticed at once.
    let ends = streams
        .into_iter()
        .map(|s| s.map(Some).chain(stream::once(std::future::ready(None))));
    let mut messages = stream::select_all(ends);
    let mut ping = tokio::time::interval(LISTEN_PING);
    ping.tick().await;
    let renew_at = tokio::time::Instant::now() + EXPIRY_RESUBSCRIBE;
    while tokio::time::Instant::now() < renew_at {
        match select(messages.next(), std::pin::pin!(ping.tick())).await {
            Either::Left((None | Some(None), _)) => return Watch::Lost,
            Either::Left((Some(Some(message)), _)) => {
                let Ok(name) = message.get_payload::<String>() else {
                    continue;
                };
                let key = name
                    .strip_prefix(prefix)
                    .and_then(|tagged| tagged.strip_prefix('{')?.strip_suffix('}'))
                    .and_then(|hex| hex.parse::<StoreKey>().ok());
                if let Some(key) = key {
                    // Full: dropped, they are only events.
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                        expired.try_send(key)
                    {
                        return Watch::Unwanted;
                    }
                }
            }
            Either::Right(_) => {
                if expired.is_closed() {
                    return Watch::Unwanted;
                }
                for sink in &mut sinks {
                    let pong =
                        tokio::time::timeout(conn::RESPONSE_TIMEOUT, sink.ping::<::redis::Value>());
                    if !matches!(pong.await, Ok(Ok(_))) {
                        return Watch::Lost;
                    }
                }
            }
        }
    }
    Watch::Due
}

/// How one expiry subscription ended.
enum Watch {
    /// The stream of expiries was dropped.
    Unwanted,
    /// The connection was lost: subscribe again after a pause.
    Lost,
    /// Its time was up: subscribe again now.
    Due,
}

/// How a subscription ended.
enum Delivery {
    StoreGone,
    Lost,
}

/// Wakes a waiter for each message, pinging the server every
/// [`LISTEN_PING`], until the connection is lost or the store is gone.
async fn deliver(pubsub: ::redis::aio::PubSub, waits: &Weak<LockWaits>) -> Delivery {
    use futures_util::future::{select, Either};
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(LISTEN_PING);
    ping.tick().await;
    loop {
        // Both are cancel safe: the one that lost is simply asked again.
        match select(messages.next(), std::pin::pin!(ping.tick())).await {
            Either::Left((None, _)) => return Delivery::Lost,
            Either::Left((Some(message), _)) => {
                let Some(waits) = waits.upgrade() else {
                    return Delivery::StoreGone;
                };
                let Ok(tag) = message.get_payload::<String>() else {
                    continue;
                };
                // `w<key>`: another process waits for a session this one
                // may keep; `<key>`: a lock was released.
                match tag.strip_prefix('w').map(str::parse::<StoreKey>) {
                    Some(Ok(key)) => waits.give_back(&key),
                    Some(Err(_)) => {}
                    None => {
                        if let Ok(key) = tag.parse::<StoreKey>() {
                            waits.wake(&key);
                        }
                    }
                }
            }
            Either::Right(_) => {
                if waits.strong_count() == 0 {
                    return Delivery::StoreGone;
                }
                let pong =
                    tokio::time::timeout(conn::RESPONSE_TIMEOUT, sink.ping::<::redis::Value>());
                if !matches!(pong.await, Ok(Ok(_))) {
                    return Delivery::Lost;
                }
            }
        }
    }
}
