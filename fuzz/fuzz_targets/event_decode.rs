//! Ring-buffer records as the kernel could send them (or a mismatched build): decode or reject.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockleak_common::event::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok((ev, kind)) = Event::decode(data) {
        assert_eq!(ev.kind, kind as u8);
        let _ = sockleak::model::names::endpoint(&ev.record.remote);
        let _ = sockleak::model::names::socket_addr(&ev.record.remote);
    }
});
