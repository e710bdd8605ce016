//! The PostgreSQL store's wake-ups: a `LISTEN` connection per store that
//! turns another process's release (a `NOTIFY` with the session's key) into
//! a wake-up of this process's waiter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::Either;
use futures_util::stream::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::naming::reached_directly;
use super::PostgresStore;
use crate::id::StoreKey;
use crate::store::LockWaits;
use crate::task::AbortOnDrop;

/// How long the listener waits before connecting again after losing its
/// connection; waiters poll on the backoff meanwhile.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

impl PostgresStore {
    /// Starts the `LISTEN` task once, at the first wait for a lock that
    /// another process holds: a store that never meets one never opens the
    /// extra connection.
    pub(super) fn listen(&self) {
        let inner = &self.inner;
        inner.listener.get_or_init(|| {
            let mut pg = inner
                .opts
                .listen
                .clone()
                .unwrap_or_else(|| inner.opts.pg.clone());
            if pg.get_connect_timeout().is_none() {
                pg.connect_timeout(inner.opts.timeout);
            }
            if pg.get_application_name().is_none() {
                pg.application_name("sessions-listen");
            }
            let task = tokio::spawn(listen(
                pg,
                inner.sql.channel.clone(),
                Arc::downgrade(&inner.waits),
                Arc::clone(&inner.listening),
            ));
            AbortOnDrop(task.abort_handle())
        });
    }
}

/// Holds one `LISTEN` connection and wakes this process's waiter for each
/// key another process released (the payload), or gives back a session
/// another process wants (`w` and the key); connects again after a loss.
/// `listening` while subscribed on a connection straight to the server (a
/// pooler in transaction mode would pass the `LISTEN`'s server connection
/// on to other clients, and their notifications with it). Ends when the
/// store (its waits) is gone.
async fn listen(
    pg: tokio_postgres::Config,
    channel: String,
    waits: Weak<LockWaits>,
    listening: Arc<AtomicBool>,
) {
    loop {
        match pg.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let waits = waits.clone();
                // The connection delivers notifications only while it is
                // polled for them, so it is driven here, not spawned away.
                let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let wake = messages.for_each(|message| {
                    if let (Ok(AsyncMessage::Notification(n)), Some(waits)) =
                        (message, waits.upgrade())
                    {
                        let payload = n.payload();
                        match payload.strip_prefix('w').map(str::parse::<StoreKey>) {
                            Some(Ok(key)) => waits.give_back(&key),
                            Some(Err(_)) => {}
                            None => {
                                if let Ok(key) = payload.parse::<StoreKey>() {
                                    waits.wake(&key);
                                }
                            }
                        }
                    }
                    async {}
                });
                let listen = format!("LISTEN {channel}");
                let subscribe = async {
                    client.batch_execute(&listen).await?;
                    Ok::<_, tokio_postgres::Error>(reached_directly(&client, &pg).await)
                };
                futures_util::pin_mut!(subscribe, wake);
                match futures_util::future::select(subscribe, wake).await {
                    // Subscribed: deliver until the connection ends.
                    Either::Left((Ok(direct), wake)) => {
                        listening.store(direct, Ordering::Relaxed);
                        wake.await;
                        listening.store(false, Ordering::Relaxed);
                        // Requests to give sessions back may have been lost
                        // with the connection.
                        if let Some(waits) = waits.upgrade() {
                            waits.release_kept();
                        }
                    }
                    Either::Left((Err(error), _)) => {
                        tracing::warn!(%error, "session lock wake-ups unavailable; waiters poll")
                    }
                    Either::Right(((), _)) => {}
                }
            }
            Err(error) => {
                tracing::debug!(%error, "session lock listener cannot connect; waiters poll")
            }
        }
        if waits.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}
