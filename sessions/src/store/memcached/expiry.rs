//! memcached's expiry: a span of whole seconds up to 30 days, a Unix time
//! beyond, and nothing past its last 32-bit Unix time (2038-01-19): what a
//! write may ask for, and the check of a configured lifetime when the
//! store is opened.

use std::time::Duration;

use crate::record::{now_millis, Millis};
use crate::store::Error;

/// memcached reads an expiry above 30 days as a Unix time, not a span.
const RELATIVE_LIMIT: u64 = 30 * 24 * 3600;
/// The largest Unix time memcached takes as an expiry: it reads the number
/// as a signed 32-bit one (2038-01-19 03:14:07 UTC). A larger one wraps:
/// below zero memcached answers the write as stored and drops the item at
/// once; from 2^32 on, it keeps the item for ever.
const LAST_EXPTIME: u64 = i32::MAX as u64;
/// How much of a configured lifetime must fit before memcached's last
/// expiry when the store is opened: a server started today keeps saving
/// its longest sessions for at least this long.
const OPEN_MARGIN: Duration = Duration::from_secs(365 * 24 * 3600);

/// memcached's expiry for an item that should live until `until`: a span
/// in whole seconds, or past 30 days the Unix time itself. One second
/// more than the span: memcached's clock ticks in whole seconds, so an
/// item may go up to a second before its span is over. A record's own
/// `expires` still decides when it is dead; a lock held by a process that
/// died frees up to a second later.
///
/// An item that would have to live past [`latest_until`] is refused: sent,
/// memcached would drop it (or keep it for ever).
pub(super) fn exptime(until: Millis) -> Result<u64, Error> {
    let now = now_millis();
    let latest = latest_until(now);
    if until > latest {
        return Err(Error::ExpiresTooLate {
            expires: until,
            latest,
        });
    }
    let secs = until.saturating_sub(now).div_ceil(1000) + 1;
    Ok(if secs <= RELATIVE_LIMIT {
        secs
    } else {
        until.div_ceil(1000) + 1
    })
}

/// The latest instant an item written at `now` can live until: 30 days
/// ahead as a span, or memcached's last Unix time, whichever is later
/// (spans still work after 2038; Unix times do not). `exptime` sends
/// anything up to it as one or the other, each within its bound.
pub(super) fn latest_until(now: Millis) -> Millis {
    let span = now.saturating_add((RELATIVE_LIMIT - 1) * 1000);
    span.max((LAST_EXPTIME - 1) * 1000)
}

/// Whether a session that lives `lifetime` (the `timeout` of the config
/// section `section`, or its `absolute_timeout` if shorter) can be kept by
/// memcached for a while:
/// up to 30 days always; longer, only if it ends a year
/// ([`OPEN_MARGIN`]) before memcached's last Unix time, counted from now.
/// Checked when a config's store is opened; saves are checked each time.
pub(crate) fn check_lifetime(section: &str, lifetime: Duration) -> Result<(), LifetimeTooLong> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let now = now_millis();
    let latest = latest_until(now);
    let ends = now.saturating_add(ms(lifetime));
    if ends <= now.saturating_add((RELATIVE_LIMIT - 1) * 1000)
        || ends.saturating_add(ms(OPEN_MARGIN)) <= latest
    {
        return Ok(());
    }
    Err(LifetimeTooLong {
        section: section.to_owned(),
        days: lifetime.as_secs() / 86_400,
        max_days: latest.saturating_sub(now).saturating_sub(ms(OPEN_MARGIN)) / 86_400_000,
    })
}

/// A configured lifetime memcached cannot keep (see [`check_lifetime`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "[{section}]: sessions of {days} days would outlive what memcached can keep: its expiry \
     is a 32-bit Unix time, which ends on 2038-01-19 03:14:07 UTC, and a \
     server started now must keep saving for a year; at most {max_days} days \
     (or 30 days, which it always keeps)"
)]
pub(crate) struct LifetimeTooLong {
    section: String,
    days: u64,
    max_days: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_past_thirty_days_is_a_unix_time() {
        let now = now_millis();
        let exptime = |until| exptime(until).unwrap();
        assert_eq!(exptime(now + 1), 2);
        assert!((90..=91).contains(&exptime(now + 90_000)));
        assert_eq!(exptime(now.saturating_sub(5_000)), 1);
        let far = now + 31 * 24 * 3_600_000;
        assert_eq!(exptime(far), far.div_ceil(1000) + 1);
    }

    /// memcached's last Unix time is sent as it is; a millisecond later is
    /// refused, never sent (memcached would drop the item). Spans of 30
    /// days stay spans, and so are never refused.
    #[test]
    fn expiry_ends_at_memcacheds_last_unix_time() {
        let last = (LAST_EXPTIME - 1) * 1000;
        assert_eq!(exptime(last).unwrap(), LAST_EXPTIME);
        for too_late in [last + 1, last + 400 * 86_400_000, u64::MAX] {
            let err = exptime(too_late).unwrap_err();
            assert!(
                matches!(err, Error::ExpiresTooLate { expires, latest } if expires == too_late && latest == last),
                "{err:?}"
            );
        }
        // After 2038, spans still work.
        let later = last + 10 * 86_400_000;
        assert_eq!(latest_until(later), later + (RELATIVE_LIMIT - 1) * 1000);
    }

    #[test]
    fn a_lifetime_must_end_a_year_before_the_last_unix_time() {
        let day = Duration::from_secs(86_400);
        assert!(check_lifetime("/", day * 30).is_ok());
        assert!(check_lifetime("/", day * 400).is_ok());
        // 19 years (`timeout = 10000000` minutes).
        let err = check_lifetime("/", Duration::from_secs(600_000_000)).unwrap_err();
        assert!(err.to_string().contains("2038-01-19"), "{err}");
        let left = (latest_until(now_millis()) - now_millis()) / 1000;
        let max = Duration::from_secs(left) - OPEN_MARGIN - day;
        assert!(check_lifetime("/", max).is_ok());
        assert!(check_lifetime("/", max + day * 2).is_err());
    }
}
