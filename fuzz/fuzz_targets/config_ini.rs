//! `Config::from_ini_str` on arbitrary text: no panic, errors with a line
//! inside the text, and a config that loads serves a well-formed cookie.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Config::load reads files as UTF-8, so only UTF-8 ever reaches the parser.
    if let Ok(text) = std::str::from_utf8(data) {
        checks::check_config(text, server_sessions::Config::from_ini_str);
    }
});
