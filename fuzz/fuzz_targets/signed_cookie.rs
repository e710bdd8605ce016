//! Arbitrary `Cookie` header bytes through the middleware with `sign_ids`
//! on: the first byte picks what the handler does, the rest is the header.
//! The live session is found only by its signed text; every cookie set is
//! signed.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&mode, header)) = data.split_first() {
        checks::check_signed_cookie(mode, header);
    }
});
