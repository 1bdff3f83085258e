//! Event sequences (any order, any values) through the live-socket mirror: no panic, and the
//! accounting invariant live = preexisting + opened - closed always holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockleak::tracker::Tracker;
use sockleak_common::event::Event;

fuzz_target!(|data: &[u8]| {
    let mut t = Tracker::default();
    let mut actions = Vec::new();
    for chunk in data.chunks_exact(core::mem::size_of::<Event>()) {
        let Ok((ev, kind)) = Event::decode(chunk) else { continue };
        t.apply(&ev, kind, &mut actions);
        actions.clear();
        for p in t.procs.values().chain(t.exited.iter()) {
            assert_eq!(p.live() + p.closed, p.preexisting + p.opened);
        }
    }
});
