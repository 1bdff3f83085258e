//! RUNTIME FRAMES: new stacks with interpreted frames from the kernel (RT_STACKS), named as
//! they arrive (code objects and methods can be freed later), while the process's mappings
//! are those of the walk.

use sockleak_common::stack::is_copy_id;

use super::Session;
use crate::symbols::{
    runtime_frames::{self, Record},
    stacks::{RuntimeStack, Site},
};

impl Session {
    /// Names every runtime stack in the ring.
    pub(super) fn drain_runtime_stacks(&mut self) {
        let Some(mut ring) = self.tracer.rt_stacks.take() else {
            return;
        };
        let mut records = Vec::new();
        while let Some(item) = ring.next() {
            if let Some(r) = runtime_frames::decode(&item) {
                records.push(r);
            }
        }
        self.tracer.rt_stacks = Some(ring);
        for r in records {
            self.runtime_stack(r);
        }
    }

    fn runtime_stack(&mut self, r: Record) {
        // Its native stack copy was submitted before it.
        if is_copy_id(r.native_id) && !self.stacks.has_copy(r.native_id) {
            self.drain_copies();
        }
        let frames = match self.walks.namers.get_mut(&r.tgid) {
            Some(n) => n.name(&r),
            None => runtime_frames::all_unnamed(
                &r,
                "the process's runtime was no longer known (it exited or exec'd)",
            ),
        };
        let native = Site {
            stack_id: self.stacks.canonical(r.native_id),
            caller: r.caller,
        };
        self.stacks.add_runtime(
            r.id,
            RuntimeStack {
                native,
                kind: r.kind,
                flags: r.flags,
                frames,
            },
        );
        let site = Site {
            stack_id: r.id,
            caller: r.caller,
        };
        if self.tracker.procs.contains_key(&r.tgid) {
            self.stacks.resolve(&self.tracer, r.tgid, [site]);
        }
    }
}
