//! Stored records through the request path: any times, timeout, user and
//! data a store can give back, decoded as a store would and loaded whole
//! by the middleware (byte 0 picks what the handler does).

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&mode, record)) = data.split_first() {
        checks::check_stored_record(mode, record);
    }
});
