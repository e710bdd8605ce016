//! The saves made under one lease, sent to the store one at a time and in
//! order: what lets a hot session's next request start before the save of
//! the one before it is acknowledged (pipelined saves).
//!
//! A request that saves while another request of this process waits for
//! the session queues its save here and hands the lease, with the record
//! it saved, to that request at once; it answers its client only when its
//! own save is acknowledged. Saves queued while one is on its way go as
//! one: the newest record holds the changes of every older one queued
//! (each request ran on the one before), so only it is sent, and its
//! answer is every queued request's answer. A save that fails fails every
//! save queued behind it, unsent: those requests ran on data the store
//! never took. So does a save the store refuses because the session ended
//! meanwhile (deleted by a long-waiting `end`, or expired): the requests
//! after it ran on a session that was gone. So no request answers before
//! what it saw and wrote is in the store, and nothing acknowledged is
//! lost.
//!
//! ```text
//! request 1: handler ─ queue save A ─ hand over ·········· A acked ─► answer
//! request 2:                          handler ─ queue B ─ hand over ·· B acked ─► answer
//! request 3:                                              handler ─ queue C ─┘ (sent with B)
//! store:                       ──── A ────►    ──── C (holds B) ────►
//! ```

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{mono_ms, Confirmed, LeaseBackend, LeaseLost, Released};
use crate::id::StoreKey;
use crate::record::{millis, now_millis, Record};
use crate::store::{Error, SaveIf};

/// What the requests waiting on one save learn: the store's answer, or
/// the failure of this save or of one before it.
type Answer = Result<Released, Arc<Error>>;

/// The save queue of one lease, shared by every request the lease passes
/// through in this process.
pub(super) struct Writes<B: LeaseBackend> {
    backend: B,
    key: StoreKey,
    owner: String,
    length: Duration,
    /// Moved on by every save that keeps the lease.
    confirmed: Arc<Confirmed>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// The newest save not sent yet, and everyone waiting for it.
    next: Option<(Save, Vec<Waiter>)>,
    /// A save is on its way: who waits for its answer.
    sending: Option<Vec<Waiter>>,
    /// The first failure, once there was one: nothing more is sent.
    failed: Option<Arc<Error>>,
    /// That failure is a save the store refused: the session had ended.
    ended: bool,
}

/// A request waiting for a save: one it queued (`saved`), or only the
/// saves before it ([`Writes::settled`]).
struct Waiter {
    tx: oneshot::Sender<Answer>,
    saved: bool,
}

struct Save {
    record: Record,
    only: SaveIf,
    /// The lease ends with this save.
    release: bool,
}

impl<B: LeaseBackend> Writes<B> {
    pub(super) fn new(
        backend: B,
        key: StoreKey,
        owner: String,
        length: Duration,
        confirmed: Arc<Confirmed>,
    ) -> Arc<Self> {
        Arc::new(Writes {
            backend,
            key,
            owner,
            length,
            confirmed,
            queue: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, Queue> {
        // A poisoned queue only means a panic elsewhere while it was held;
        // its fields are each left whole.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a save is queued or on its way (or one failed): a later
    /// save must then go through the queue, behind it.
    pub(super) fn busy(&self) -> bool {
        let q = self.state();
        q.next.is_some() || q.sending.is_some() || q.failed.is_some()
    }

    /// Whether a save under this lease failed: the lease may no longer be
    /// this process's, and what was handed on with it never reached the
    /// store.
    pub(super) fn failed(&self) -> bool {
        self.state().failed.is_some()
    }

    /// Sends one save: the one place that writes under a lease. A save
    /// that keeps the lease moves its end on.
    async fn send(&self, record: &Record, only: SaveIf, release: bool) -> Result<Released, Error> {
        let (key, owner) = (&self.key, self.owner.as_str());
        if release {
            return self
                .backend
                .save_and_release(key, owner, record, only)
                .await;
        }
        let sent = mono_ms();
        let until = now_millis().saturating_add(millis(self.length));
        let released = self
            .backend
            .save_and_keep(key, owner, record, only, until)
            .await?;
        if let Released::Saved(_) | Released::SavedWhileWanted(_) = released {
            self.confirmed.set(sent, self.length);
        }
        Ok(released)
    }

    /// Queues a save behind those before it, at once; it replaces a queued
    /// one not sent yet. The future answers once it (or the save that
    /// carried it) is acknowledged, or failed.
    pub(super) fn queue(
        self: &Arc<Self>,
        record: Record,
        only: SaveIf,
        release: bool,
    ) -> impl std::future::Future<Output = Result<Released, Error>> + Send + 'static {
        let queued = self.push(record, only, release);
        async move { answer(queued?).await }
    }

    fn push(
        self: &Arc<Self>,
        record: Record,
        only: SaveIf,
        release: bool,
    ) -> Result<oneshot::Receiver<Answer>, Error> {
        let mut q = self.state();
        if let Some(failed) = &q.failed {
            return Err(shared(failed));
        }
        let (tx, rx) = oneshot::channel();
        let mut waiters = q.next.take().map(|(_, w)| w).unwrap_or_default();
        waiters.push(Waiter { tx, saved: true });
        let save = Save {
            record,
            only,
            release,
        };
        q.next = Some((save, waiters));
        if q.sending.is_none() {
            q.sending = Some(Vec::new());
            // Its own task, so that a request whose client went away takes
            // no queued save down with it.
            tokio::spawn(Arc::clone(self).drain());
        }
        Ok(rx)
    }

    /// Waits until every save queued so far is acknowledged: what a
    /// request does before it reads the store, or answers from what it
    /// was handed, under a lease whose earlier saves may be on their way.
    /// `Ok(false)` when the newest of them was refused: the session had
    /// ended, and what was handed on with the lease is not its state.
    pub(super) async fn settled(&self) -> Result<bool, Error> {
        let rx = {
            let mut q = self.state();
            if let Some(failed) = &q.failed {
                return if q.ended {
                    Ok(false)
                } else {
                    Err(shared(failed))
                };
            }
            let (tx, rx) = oneshot::channel();
            let waiter = Waiter { tx, saved: false };
            if let Some((_, waiters)) = &mut q.next {
                waiters.push(waiter);
            } else if let Some(waiters) = &mut q.sending {
                waiters.push(waiter);
            } else {
                return Ok(true);
            }
            rx
        };
        match answer(rx).await? {
            Released::Lost => Err(Error::unavailable("saving a session", LeaseLost)),
            r => Ok(r.saved()),
        }
    }

    /// Sends the queued saves, one at a time, until none is left.
    async fn drain(self: Arc<Self>) {
        loop {
            let save = {
                let mut q = self.state();
                match q.next.take() {
                    Some((save, waiters)) => {
                        q.sending = Some(waiters);
                        save
                    }
                    None => {
                        q.sending = None;
                        return;
                    }
                }
            };
            let sending = Sending {
                writes: &self,
                done: false,
            };
            let answer = self.send(&save.record, save.only, save.release).await;
            if !sending.finish(answer.map_err(Arc::new)) {
                return;
            }
        }
    }

    /// Sends one save now, by the request that holds the lease, with
    /// nothing queued (nothing can be queued meanwhile: the lease is not
    /// handed on before the answer). Marked as on its way all the same, so
    /// that its failure — or this future dropped mid-send, which leaves
    /// the save in doubt — stops the queue as a queued save's would: the
    /// lease is then neither handed on nor kept.
    pub(super) async fn send_now(
        &self,
        record: &Record,
        only: SaveIf,
        release: bool,
    ) -> Result<Released, Error> {
        self.state().sending = Some(Vec::new());
        let sending = Sending {
            writes: self,
            done: false,
        };
        let r = self.send(record, only, release).await;
        let answer = match &r {
            Ok(released) => Ok(*released),
            Err(e) => Err(Arc::new(Error::unavailable(
                "saving a session",
                e.to_string(),
            ))),
        };
        sending.finish(answer);
        r
    }

    /// Answers the waiters of the save that was on its way, and stops the
    /// queue if it failed; whether more is queued to send.
    fn complete(&self, answer: Answer) -> bool {
        let mut q = self.state();
        // Refused: the session ended meanwhile (deleted, expired).
        let refused = matches!(answer, Ok(r) if !matches!(r, Released::Lost) && !r.saved());
        let failed = match &answer {
            Err(e) => Some(Arc::clone(e)),
            Ok(Released::Lost) => Some(Arc::new(Error::unavailable("saving a session", LeaseLost))),
            Ok(_) if refused => Some(Arc::new(Error::unavailable("saving a session", Ended))),
            Ok(_) => None,
        };
        // `sending` stays set while more is queued, so that no second task
        // starts sending beside the one that will send it.
        let waiters = q.sending.replace(Vec::new()).unwrap_or_default();
        let mut first = true;
        for w in waiters {
            // A refused save is the answer of the first request that
            // queued it, which ran on a live session; those after it in
            // the batch ran on its result, in a session that had ended;
            // one waiting without a save of its own learns that it ended.
            let a = match &failed {
                Some(ended) if refused && w.saved && !first => Err(Arc::clone(ended)),
                _ => answer.clone(),
            };
            first &= !w.saved;
            let _ = w.tx.send(a);
        }
        if let Some(failed) = failed {
            // What was queued behind it ran on data the store never took:
            // it fails unsent.
            for w in q.next.take().map(|(_, w)| w).unwrap_or_default() {
                let a = match refused && !w.saved {
                    true => answer.clone(),
                    false => Err(Arc::clone(&failed)),
                };
                let _ = w.tx.send(a);
            }
            q.ended = refused;
            q.failed = Some(failed);
        }
        if q.next.is_none() {
            q.sending = None;
            return false;
        }
        true
    }
}

/// A save on its way. [`finish`](Self::finish) answers its waiters; if it
/// is dropped unfinished — its sender was cancelled or panicked — the save
/// is in doubt, and it fails them and everything queued behind it, so that
/// nobody waits for an answer that will not come.
struct Sending<'a, B: LeaseBackend> {
    writes: &'a Writes<B>,
    done: bool,
}

impl<B: LeaseBackend> Sending<'_, B> {
    fn finish(mut self, answer: Answer) -> bool {
        self.done = true;
        self.writes.complete(answer)
    }
}

impl<B: LeaseBackend> Drop for Sending<'_, B> {
    fn drop(&mut self) {
        if !self.done {
            let abandoned = Error::unavailable("saving a session", "the save was abandoned");
            self.writes.complete(Err(Arc::new(abandoned)));
        }
    }
}

/// A queued save's answer; a queue gone without answering (its runtime
/// shut down, dropping the task that sends) is a failure.
async fn answer(rx: oneshot::Receiver<Answer>) -> Result<Released, Error> {
    match rx.await {
        Ok(Ok(released)) => Ok(released),
        Ok(Err(e)) => Err(shared(&e)),
        Err(_) => Err(Error::unavailable(
            "saving a session",
            "the save queue stopped before answering",
        )),
    }
}

/// The error of a failure shared by several requests.
fn shared(e: &Arc<Error>) -> Error {
    Error::unavailable("saving a session", Shared(Arc::clone(e)))
}

/// A save under the lease was refused because the session had ended (it
/// was deleted, or expired): the requests that ran on that save's result
/// served a session that was no longer there.
#[derive(Debug, thiserror::Error)]
#[error("the session ended while requests ran on a save not yet stored")]
struct Ended;

/// A store error reported to every request whose save it failed.
#[derive(Debug)]
struct Shared(Arc<Error>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}
