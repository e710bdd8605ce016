//! What the crate reports through the [`metrics`](https://docs.rs/metrics)
//! facade, with the cargo feature `metrics` (without it, these functions
//! do nothing and cost nothing). An application installs the recorder it
//! wants (`sessions serve --metrics ADDR` installs a Prometheus exporter);
//! without one, the facade drops them.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `sessions_store_call_seconds` | histogram | `op` | each store call of a request; for `lock` and `lock_and_load` it is the wait for the lock |
//! | `sessions_store_errors_total` | counter | `op` | store calls that failed (the store down, a lost lease) |
//! | `sessions_lock_timeouts_total` | counter | — | locks not had within `lock_timeout` (answered 503) |
//! | `sessions_created_total` | counter | — | new sessions saved |
//! | `sessions_expired_total` | counter | `found_by` | sessions found expired and removed (`load`, `clean_up`, `ttl`) |

use crate::events::FoundBy;
use crate::store::Error;

/// Whether anything is measured at all: store calls are timed only then.
pub(crate) const ON: bool = cfg!(feature = "metrics");

/// One store call of a request, its duration and how it ended.
#[cfg(feature = "metrics")]
pub(crate) fn store_call<T>(op: &'static str, took: std::time::Duration, r: &Result<T, Error>) {
    ::metrics::histogram!("sessions_store_call_seconds", "op" => op).record(took.as_secs_f64());
    match r {
        Ok(_) => {}
        Err(Error::LockTimeout(_)) => {
            ::metrics::counter!("sessions_lock_timeouts_total").increment(1)
        }
        Err(_) => ::metrics::counter!("sessions_store_errors_total", "op" => op).increment(1),
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn store_call<T>(_: &'static str, _: std::time::Duration, _: &Result<T, Error>) {}

/// A new session was saved.
pub(crate) fn created() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("sessions_created_total").increment(1);
}

/// A session was found expired and removed.
pub(crate) fn expired(found_by: FoundBy, n: u64) {
    #[cfg(feature = "metrics")]
    {
        let by = match found_by {
            FoundBy::Load => "load",
            FoundBy::CleanUp => "clean_up",
            FoundBy::Ttl => "ttl",
        };
        ::metrics::counter!("sessions_expired_total", "found_by" => by).increment(n);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (found_by, n);
}
