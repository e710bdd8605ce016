//! Sealed cookie values (`storage_type = "cookie"`): bytes from outside
//! never open; any data sealed opens as it was, under its own name and
//! keys only.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::check_sealed_cookie(data));
