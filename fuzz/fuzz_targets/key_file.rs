//! Key files (`keys_file`): parsing never panics, reads one key a line,
//! and no error or `Debug` shows a line.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        checks::check_key_file(text);
    }
});
