//! The session's side of kernel unwinding (`symbols::unwind_tables`): which processes get
//! their stacks walked in the kernel, the frames of the stacks it walked (they come with the
//! event that announces them), where walks stopped short and fell back to copies (each copy
//! says so: for the tables to build what was missing, and for the report to say where).

use hashbrown::HashMap;
use log::info;
use sockleak_common::{
    event::Event,
    target::stack_mode,
    unwind::{WalkedStack, walk_status},
};

use super::Session;
use crate::{host::procfs, model::StackFallback};

/// Distinct stopping places remembered per process; beyond, they are counted by reason.
const MAX_PLACES: usize = 16;
/// Lasting fallbacks logged at info level before the rest go to debug.
const QUIET_AFTER: usize = 8;

/// Where one process's walks stopped short.
#[derive(Debug, Default)]
pub struct Stops {
    /// (reason, where) -> count.
    places: HashMap<(u32, String), u64>,
    /// Named stop pcs (naming needs the process alive: done once, at first sight).
    names: HashMap<u64, String>,
}

impl Session {
    /// The stack mode for a process without frame pointers: its stacks walked in the kernel
    /// when it can have tables, else copied. `hints`: addresses of a stack that stopped short.
    pub(super) fn dwarf_mode(&mut self, pid: u32, hints: &[u64]) -> u8 {
        let on = self.tables.as_mut().is_some_and(|t| t.enable(pid, hints));
        if on {
            stack_mode::TABLES
        } else {
            stack_mode::STACK_COPY
        }
    }

    /// A stack the kernel walked, with its frames: held for naming, then the event it carries.
    pub(super) fn walked_stack(&mut self, w: &WalkedStack) -> Event {
        let ev = w.event;
        if ev.record.stack_id >= 0 {
            self.stacks
                .add_walked(ev.tgid, ev.record.stack_id, w.hash, w.frames().to_vec());
        }
        // New stacks are rare: a moment to notice libraries loaded or unloaded since.
        if let Some(t) = self.tables.as_mut() {
            t.check_maps(ev.tgid);
        }
        ev
    }

    /// A walk stopped short at `pc` for `status` and the stack was copied instead (the copy
    /// says so): the tables build what it lacked, and the process's report will say where its
    /// stacks were copied.
    pub(super) fn unwind_stop(&mut self, pid: u32, status: u32, pc: u64) {
        let mut status = status;
        if let Some(t) = self.tables.as_mut() {
            t.stopped(pid, status, pc);
            // A library loaded since the mappings were listed: listed now, its table on its
            // way; not a lasting reason.
            if status == walk_status::NO_MAPPING && t.pending(pid, pc) {
                status = walk_status::NO_TABLE;
            }
        }
        let stops = self.unwind_stops.entry(pid).or_default();
        let at = match stops.names.get(&pc) {
            Some(n) => n.clone(),
            None if stops.names.len() >= MAX_PLACES => "(other places)".into(),
            None => {
                let n = self.name_stop(pid, status, pc);
                let stops = self.unwind_stops.entry(pid).or_default();
                stops.names.insert(pc, n.clone());
                n
            }
        };
        let stops = self.unwind_stops.entry(pid).or_default();
        *stops.places.entry((status, at)).or_default() += 1;
    }

    /// Names a new stopping place while the process is alive, and logs a lasting one.
    fn name_stop(&mut self, pid: u32, status: u32, pc: u64) -> String {
        if status == walk_status::NO_TABLE {
            // A file whose table is being built: its module is enough.
            let maps = procfs::maps(pid);
            return procfs::module_of(&maps, pc)
                .unwrap_or("a new image, not listed yet")
                .to_string();
        }
        let n = self.stacks.name_addr(pid, pc);
        self.lasting_stops += 1;
        let comm = self
            .tracker
            .procs
            .get(&pid)
            .map(|p| p.meta.comm.clone())
            .unwrap_or_default();
        let line = format!(
            "pid {pid} ({comm}): the kernel cannot walk its stack at {n}: {}; such stacks are copied and unwound in userspace",
            walk_status::as_str(status)
        );
        if self.lasting_stops <= QUIET_AFTER {
            info!("{line}");
        } else {
            log::debug!("{line}");
        }
        n
    }

    /// Builds queued tables within their budget; on the drain timer.
    pub(super) fn tables_work(&mut self) {
        if let Some(t) = self.tables.as_mut() {
            t.work();
        }
    }

    /// Every process's fallbacks, for the report.
    pub(super) fn stack_fallbacks(&self) -> HashMap<u32, Vec<StackFallback>> {
        self.unwind_stops
            .iter()
            .map(|(pid, s)| {
                let mut v: Vec<StackFallback> = s
                    .places
                    .iter()
                    .map(|((status, at), n)| StackFallback {
                        reason: walk_status::as_str(*status).to_string(),
                        at: at.clone(),
                        count: *n,
                    })
                    .collect();
                v.sort_by(|a, b| b.count.cmp(&a.count).then(a.at.cmp(&b.at)));
                (*pid, v)
            })
            .collect()
    }

    /// Forgets a process's stopping places once it is no longer reported.
    pub(super) fn forget_stops(&mut self, pid: u32) {
        self.unwind_stops.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::unwinding::TRANSIENT;

    #[test]
    fn transient_reason_is_the_walk_status_name() {
        // The report tells build-in-progress fallbacks apart by this name.
        assert_eq!(walk_status::as_str(walk_status::NO_TABLE), TRANSIENT);
    }
}
