//! HTTP out: what the request core's [`Outcome`] says, written into the
//! response — the cookie, the id header, or the failure that replaces the
//! handler's answer.

use std::time::Duration;

use http::Response;

use crate::config::SessionConfig;
use crate::record::now_millis;
use crate::request::Outcome;
use crate::{cookie, header};

/// Writes `outcome` into `response`. `cookie_path` is the request's cookie
/// path when `path_header` gave one.
pub(super) fn respond<B: From<&'static str>>(
    outcome: Outcome,
    config: &SessionConfig,
    cookie_path: Option<&str>,
    response: &mut Response<B>,
) {
    if let Some(failure) = outcome.failure {
        *response = failure.response();
        return;
    }
    let path = cookie_path.unwrap_or(&config.path);
    let (mut cookie, mut carried) = (None, None);
    if let Some(saved) = outcome.carry {
        let max_age = saved.expires.saturating_sub(now_millis());
        cookie = config
            .cookie
            .then(|| cookie::set_cookie(config, path, &saved.id, Duration::from_millis(max_age)));
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
