//! The finishing step, run once after the handler returned: save what it
//! used, delete what it gave up, release the lock, write the cookie (or
//! the id header) — in that order (docs/spec.md §4.3, §9).

use std::time::Duration;

use http::Response;

use super::state::{Phase, RequestSession};
use crate::error::Error;
use crate::record::now_millis;
use crate::{cookie, header};

impl RequestSession {
    /// Carries out what the handler asked for and ends the request's hold
    /// on the session. A failure on the way (or one the handler saw and
    /// swallowed) replaces the response with its 503 or 500.
    pub(crate) async fn finish<B: From<&'static str>>(&mut self, response: &mut Response<B>) {
        if matches!(self.phase, Phase::Finished) {
            return;
        }
        // A failure the handler saw leaves the session's state unknown:
        // write nothing. Errors were logged and recorded where they
        // happened.
        if self.failed.is_none() {
            let _ = self.write_back(response).await;
        }
        self.end();
        if let Some(f) = self.failed {
            *response = f.response();
        }
    }

    async fn write_back<B>(&mut self, response: &mut Response<B>) -> Result<(), Error> {
        // Save before deleting, so that a regenerated session whose new
        // record cannot be written keeps its old one.
        self.save_if_used().await?;
        self.delete_doomed().await?;
        let path = self.cookie_path.as_deref().unwrap_or(&self.config.path);
        let (mut cookie, mut carried) = (None, None);
        if let Some(saved) = self.saved {
            let max_age = saved.expires.saturating_sub(now_millis());
            cookie = self.config.cookie.then(|| {
                cookie::set_cookie(
                    &self.config,
                    path,
                    &saved.id,
                    Duration::from_millis(max_age),
                )
            });
            carried = self
                .config
                .header
                .as_ref()
                .map(|_| header::carrying(&saved.id));
        }
        if self.expire_cookie {
            cookie = Some(cookie::expire_cookie(&self.config, path));
            carried = Some(header::ended());
        }
        let headers = response.headers_mut();
        if let Some(c) = cookie.filter(|_| self.config.cookie) {
            headers.append(http::header::SET_COOKIE, c);
        }
        if let (Some(name), Some(value)) = (&self.config.header, carried) {
            // The layer owns this header: it replaces one the handler set.
            headers.insert(name.clone(), value);
            // A response carrying an id is this visitor's alone: no shared
            // cache may keep it (unless the handler said otherwise).
            headers
                .entry(http::header::CACHE_CONTROL)
                .or_insert(http::HeaderValue::from_static("private"));
        }
        Ok(())
    }
}
