//! `SessionId` parsing: exactly 40 lowercase hex characters are an id, and
//! print back as they were; nothing else is.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::check_session_id(data));
