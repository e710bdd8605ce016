//! Sealed record data (`seal_records`): the first 20 bytes are the id, the
//! rest the stored data. Unsealed data reads as it is; no outside bytes
//! open as a seal.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::check_sealed_data(data));
