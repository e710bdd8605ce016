//! Signed ids (`sign_ids`): a value is an id exactly when a listed key
//! signed the id it names, in the one text a signature has.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::check_signed_id(data));
