//! Arbitrary `Cookie` header bytes through the public middleware: the first
//! byte picks what the handler does with the session, the rest is the
//! header value.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&mode, header)) = data.split_first() {
        checks::check_cookie_header(mode, header);
    }
});
