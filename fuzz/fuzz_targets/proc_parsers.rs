//! Text from /proc, /sys and tracefs: every parser takes any input without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        sockleak::exercise_parsers(s);
    }
});
