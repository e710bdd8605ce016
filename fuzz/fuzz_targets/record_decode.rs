//! Stored records: `Record::decode` under an arbitrary limit, and the bytes
//! (or the decoded data) loaded as a session's data through the middleware.

#![no_main]

use sessions_test_support::checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = usize::from(u16::from_le_bytes([data[0], data[1]]));
    checks::check_record(max, &data[2..]);
});
