//! Arbitrary `Cookie` header bytes through the public middleware: the first
//! byte picks what the handler does with the session, the rest is the
//! header value.

#![no_main]

#[path = "../../sessions/tests/checks/mod.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&mode, header)) = data.split_first() {
        checks::check_cookie_header(mode, header);
    }
});
