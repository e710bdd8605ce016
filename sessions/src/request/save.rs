//! Writing a request's session back: the save (a full write, a regenerated
//! session's replacement of its old record, or only an expiry refresh),
//! the deletion of the ids the request gave up, and the expiry a save
//! gives.

use super::{checked, failed, timed, Doom, HeldLock, Loaded, Phase, RequestSession, Saved};
use crate::config::SessionConfig;
use crate::error::Error;
use crate::events::{FoundBy, SessionEvent};
use crate::measure;
use crate::record::{millis, now_millis, Millis, Record};
use crate::store::SaveIf;

impl RequestSession {
    /// Writes the loaded session now: a full save if the data changed or it
    /// is new, otherwise an expiry refresh. A save the store refuses (the
    /// session was deleted, regenerated or expired meanwhile) is logged and
    /// leaves no cookie.
    pub(super) async fn save(&mut self) -> Result<(), Error> {
        let Phase::Loaded(s) = &self.phase else {
            return Ok(());
        };
        // Only a save under this id's own lock goes behind the saves before
        // it by itself; every other way needs them in first. One of them
        // refused means the session had ended: a request that only read it
        // has answered from a session that was gone.
        let unchanged = !s.changed && s.stored;
        let own_save = !unchanged && s.replaces.filter(|_| !s.stored).is_none();
        if !(own_save && self.holds_lock(&s.id)) {
            let live = self.settle().await?;
            if !live && unchanged {
                return Err(self.ran_on_an_ended_session());
            }
        }
        let Phase::Loaded(s) = &mut self.phase else {
            return Ok(());
        };
        let (id, key) = (s.id, s.key);
        let now = now_millis();
        let mut expires = expiry(&self.config, s, now);
        // The lock goes with the save only if it is this id's lock (after
        // `regenerate` it is the old id's, released once that is deleted).
        let guard = self.lock.take_if(|l| l.id == id).map(|l| l.guard);
        let saved = if s.changed || !s.stored {
            // A map of JSON values always encodes.
            let data = serde_json::to_vec(&s.data).unwrap_or_default();
            if data.len() > self.config.max_size {
                // Refuse before writing: the stored session stays as it was.
                if let Some(guard) = guard {
                    self.lock = Some(HeldLock { id, guard });
                }
                let e = Error::TooLarge {
                    size: data.len(),
                    max: self.config.max_size,
                };
                return Err(failed(&mut self.failed, e));
            }
            // Sealed here, the one place that holds both the id and the
            // data (`seal.rs`); the size limit is on what the handler wrote.
            let data = match self.config.seal_records {
                true => {
                    crate::seal::seal(&id, &data).map_err(|e| failed(&mut self.failed, e.into()))?
                }
                false => data,
            };
            let record = Record {
                data,
                created: s.created,
                expires,
                timeout: s.timeout.map(millis),
                user: s.user.clone(),
            };
            let only = if s.stored {
                SaveIf::Live
            } else {
                SaveIf::Absent
            };
            // A regenerated session's first save takes the old record's
            // place in one step: written only if that record still lives.
            let replacing = s.replaces.filter(|_| !s.stored);
            let r = match (replacing, guard) {
                (Some(old), guard) => {
                    // The lock held is the old id's (if any): it stays until
                    // the request ends.
                    debug_assert!(guard.is_none(), "a regenerated id is never locked");
                    drop(guard);
                    let old = old.store_key();
                    let call = self.store.as_ref().replace(&old, &key, &record);
                    timed("replace", &key, call).await
                }
                (None, Some(g)) => {
                    let call = g.save_and_release(&record, only);
                    timed("save_and_unlock", &key, call).await
                }
                (None, None) => {
                    timed("save", &key, self.store.as_ref().save(&key, &record, only)).await
                }
            };
            let saved = checked(&mut self.failed, r)?;
            if let Some(old) = replacing {
                // Either way the old record is gone: nothing left to delete.
                self.doomed
                    .retain(|d| !(d.id == old && d.why == Doom::Replaced));
                if !saved {
                    // Deleted (or its user logged out everywhere, or
                    // expired) while this request regenerated it: the new
                    // id must not carry the session on.
                    tracing::warn!(
                        session = %old.short(),
                        "session ended while the request regenerated it; not saved"
                    );
                    self.delete();
                    self.drop_id = true;
                    return Ok(());
                }
            }
            saved
        } else if refresh_due(&self.config, s, expires) {
            let r = timed("touch", &key, self.store.as_ref().touch(&key, expires)).await;
            drop(guard);
            checked(&mut self.failed, r)?
        } else {
            // Unchanged, and its expiry recently written: no write, and the
            // cookie carries the expiry the record has.
            expires = s.stored_expires;
            if let Some(guard) = guard {
                guard.release_unchanged();
            }
            true
        };
        if saved && !s.stored {
            let replaced = s.replaces.take();
            if replaced.is_none() {
                measure::created();
            }
            if self.events.on() {
                let user = s.user.clone();
                self.pending.push(match replaced {
                    Some(from) => SessionEvent::Regenerated {
                        from: from.store_key(),
                        to: key,
                        user,
                    },
                    None => SessionEvent::Created { key, user },
                });
            }
        }
        s.stored = saved;
        if saved {
            s.changed = false;
            s.stored_expires = expires;
            self.saved = Some(Saved { id, expires });
        } else {
            tracing::warn!(
                session = %id.short(),
                "session was deleted, regenerated or expired while the request ran; not saved"
            );
            self.saved = None;
        }
        self.debug(if saved { "saved" } else { "save refused" }, &id);
        Ok(())
    }

    /// Deletes the ids given up in this request.
    pub(super) async fn delete_doomed(&mut self) -> Result<(), Error> {
        if !self.doomed.is_empty() {
            self.settle().await?;
        }
        for doomed in std::mem::take(&mut self.doomed) {
            let key = doomed.id.store_key();
            // Under this request's lock a plain delete; otherwise (a
            // session deleted unread, or without a lock in `explicit`
            // mode) the store takes the lock first, so that no process
            // keeping the session serves it afterwards.
            let r = if self.holds_lock(&doomed.id) {
                timed("delete", &key, self.store.as_ref().delete(&key)).await
            } else {
                timed("delete", &key, self.store.as_ref().end(&key)).await
            };
            checked(&mut self.failed, r)?;
            let user = doomed.user;
            if doomed.why == Doom::Dead {
                measure::expired(FoundBy::Load, 1);
            }
            match doomed.why {
                _ if !self.events.on() => {}
                Doom::Replaced => {}
                Doom::Deleted => self.pending.push(SessionEvent::Deleted { key, user }),
                Doom::Dead => self.pending.push(SessionEvent::Expired {
                    key,
                    user,
                    found_by: FoundBy::Load,
                }),
            }
        }
        Ok(())
    }
}

/// Whether an unchanged session's refresh to `expires` is worth a write:
/// it moves the stored expiry on by at least `refresh_after` (a tenth of
/// the session's idle timeout by default), or back.
fn refresh_due(config: &SessionConfig, session: &Loaded, expires: Millis) -> bool {
    let after = config
        .refresh_after
        .unwrap_or_else(|| session.timeout(config) / 10);
    // Also when the stored expiry lies beyond what a refresh gives (the
    // timeout was lowered, or the record is foreign): the cookie must not
    // promise more than the timeout.
    expires < session.stored_expires
        || expires >= session.stored_expires.saturating_add(millis(after))
}

/// When `session` expires if saved at `now`: its idle timeout from now
/// (its own, or the config's), or the absolute timeout if that comes first;
/// never past [`Record::MAX_TIME`], which a timeout set in code (the
/// config's fields are public) could otherwise reach, and the cookie's date
/// could not say.
pub(super) fn expiry(config: &SessionConfig, session: &Loaded, now: Millis) -> Millis {
    let idle = now.saturating_add(millis(session.timeout(config)));
    let expires = match config.absolute_timeout {
        Some(limit) => idle.min(session.created.saturating_add(millis(limit))),
        None => idle,
    };
    expires.min(Record::MAX_TIME)
}
