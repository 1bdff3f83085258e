//! Event sequences (any order, any values) through the tracker: see
//! `sockleak::exercise_tracker` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockleak_common::event::Event;

fuzz_target!(|data: &[u8]| {
    sockleak::exercise_tracker(
        data.chunks_exact(core::mem::size_of::<Event>())
            .filter_map(|c| Event::decode(c).ok().map(|(ev, _)| ev)),
    );
});
