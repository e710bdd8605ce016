//! HTTP out: what the request core's [`Outcome`] says, written into the
//! response — the cookie, the id header, or the failure that replaces the
//! handler's answer.

use std::time::Duration;

use http::Response;

use crate::config::SessionConfig;
use crate::error::Failure;
use crate::record::now_millis;
use crate::request::Outcome;
use crate::store::{InCookie, MAX_COOKIE};
use crate::{cookie, header};

/// Writes `outcome` into `response`. `cookie_path` is the request's cookie
/// path when `path_header` gave one.
pub(super) fn respond<B: From<&'static str>>(
    outcome: Outcome,
    config: &SessionConfig,
    cookie_path: Option<&str>,
    in_cookie: Option<&InCookie>,
    response: &mut Response<B>,
) {
    if let Some(failure) = outcome.failure {
        *response = failure.response();
        return;
    }
    let path = cookie_path.unwrap_or(&config.path);
    let (mut cookie, mut carried) = (None, None);
    if let Some(saved) = outcome.carry {
        let max_age = Duration::from_millis(saved.expires.saturating_sub(now_millis()));
        cookie = match in_cookie.and_then(|c| c.sealed(&saved.id, config)) {
            Some(Ok(value)) => Some(cookie::set_cookie_value(config, path, &value, max_age)),
            Some(Err(size)) => {
                // Refused after the handler ran, the old cookie kept: the
                // same answer as a session over `max_size`.
                tracing::error!(
                    session = %saved.id.short(),
                    size,
                    max = MAX_COOKIE,
                    "session too large for its cookie; refused, the old cookie kept"
                );
                *response = Failure::Internal.response();
                return;
            }
            None => config
                .cookie
                .then(|| cookie::set_cookie(config, path, &saved.id, max_age)),
        };
        carried = config
            .header
            .as_ref()
            .map(|_| header::carrying(&saved.id, config.signer()));
    }
    if outcome.drop_id {
        cookie = Some(cookie::expire_cookie(config, path));
        carried = Some(header::ended());
    }
    let headers = response.headers_mut();
    if let Some(c) = cookie.filter(|_| config.cookie) {
        headers.append(http::header::SET_COOKIE, c);
    }
    if let (Some(name), Some(value)) = (&config.header, carried) {
        // The layer owns this header: it replaces one the handler set.
        headers.insert(name.clone(), value);
        // A response carrying an id is this visitor's alone: no shared
        // cache may keep it (unless the handler said otherwise).
        headers
            .entry(http::header::CACHE_CONTROL)
            .or_insert(http::HeaderValue::from_static("private"));
    }
}
