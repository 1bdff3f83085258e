//! Stack copies from the kernel (processes without frame pointers): unwound as they arrive,
//! while the process's mappings are still those of the copy, and named at once.

use sockleak_common::stack::StackCopy;

use super::Session;
use crate::symbols::stacks::Site;

/// Unwound copies held before unreferenced ones are dropped.
const PRUNE_ABOVE: usize = 4096;

impl Session {
    /// Unwinds every copy in the ring.
    pub(super) fn drain_copies(&mut self) {
        let Some(mut ring) = self.tracer.stack_copies.take() else {
            return;
        };
        while let Some(item) = ring.next() {
            if item.len() < size_of::<StackCopy>()
                || !(item.as_ptr() as usize).is_multiple_of(align_of::<StackCopy>())
            {
                continue;
            }
            // SAFETY: a whole, aligned StackCopy (plain data, any bit pattern valid) written by
            // the kernel program; it lives as long as `item`.
            let c = unsafe { &*item.as_ptr().cast::<StackCopy>() };
            if c.walk_status != 0 {
                self.unwind_stop(c.tgid, c.walk_status, c.walk_stop);
            }
            let ips = self.unwinders.unwind(c);
            let fresh = !self.stacks.has_copy(c.id);
            self.stacks.add_copy(c.tgid, c.id, ips);
            if fresh {
                // The caller as the socket records it (see SocketRecord::caller).
                let caller = if cfg!(target_arch = "aarch64") {
                    c.lr
                } else {
                    c.data
                        .first_chunk::<8>()
                        .map_or(0, |b| u64::from_le_bytes(*b))
                };
                let site = Site {
                    stack_id: self.stacks.canonical(c.id),
                    caller,
                };
                if !self.stacks.is_resolved(c.tgid, site) {
                    self.stacks.resolve(&self.tracer, c.tgid, [site]);
                }
            }
        }
        self.tracer.stack_copies = Some(ring);
    }

    /// Drops unwound copies and runtime stacks no socket or failure refers to any more, and
    /// walked stacks of processes gone that nothing refers to (the kernel forgets them too).
    pub(super) fn prune_copies(&mut self) {
        if self.stacks.copies() + self.stacks.walked() < PRUNE_ABOVE.max(self.copies_at_prune * 2) {
            return;
        }
        let used: hashbrown::HashSet<i32> = self
            .tracker
            .procs
            .values()
            .chain(self.tracker.exited.iter())
            .flat_map(|p| {
                p.sockets
                    .values()
                    .flat_map(|s| [s.record.stack_id, s.record.conn.stack_id])
                    .chain(p.failures.keys().map(|k| k.site.stack_id))
            })
            .filter(|id| {
                sockleak_common::stack::is_copy_id(*id)
                    || sockleak_common::runtime::is_runtime_id(*id)
                    || sockleak_common::unwind::is_walk_id(*id)
            })
            .collect();
        self.stacks.prune_copies(&used);
        let procs = &self.tracker.procs;
        for (pid, hash) in self
            .stacks
            .prune_walked(&used, |pid| procs.contains_key(&pid))
        {
            self.tracer.forget_stack(pid, hash);
        }
        self.copies_at_prune = self.stacks.copies() + self.stacks.walked();
    }
}
