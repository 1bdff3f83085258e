//! Copying a process's socket fds from /proc into the kernel's live map: every target at start
//! (preexisting sockets, stack unknown) and every child a traced process forks (inherited
//! sockets, which keep the parent's record when it is the same socket).

use sockleak_common::{
    counters::LossCause,
    socket::{Origin, SocketRecord},
    target::state,
};

use super::{Session, mono_ns};
use crate::{host::procfs, kernel::bpf::Insert, tracker::Socket};

impl Session {
    /// Seeds a process's socket fds from /proc into LIVE and the mirror. `parent` is the
    /// forking process and the fork time for children. False when the process is gone.
    pub(super) fn seed(&mut self, pid: u32, parent: Option<(u32, u64)>, now_ns: u64) -> bool {
        self.tracker.listing(pid, mono_ns());
        let Ok(fds) = procfs::socket_fds(pid) else {
            return false;
        };
        for (fd, inode) in fds {
            // The parent's socket at this fd, if it is the one the child inherited.
            let inherited = parent.and_then(|(ppid, fork_ns)| {
                self.tracer
                    .lookup(ppid, fd)
                    .or_else(|| {
                        let p = self.tracker.procs.get(&ppid)?;
                        p.sockets.get(&fd).map(|s| s.record)
                    })
                    .filter(|r| r.created_ns <= fork_ns)
            });
            let (record, stack_pid) = match (inherited, parent) {
                (Some(r), Some((ppid, _))) => {
                    let mut r = r;
                    r.origin = Origin::Inherited as u8;
                    (r, ppid)
                }
                (_, Some((_, fork_ns))) => (unknown_record(Origin::Inherited, fork_ns), pid),
                (_, None) => (unknown_record(Origin::Preexisting, now_ns), pid),
            };
            match self.tracer.insert_if_absent(pid, fd, &record) {
                // A socket made after tracing began already owns this fd; a dump brings it.
                Insert::Exists => continue,
                Insert::Inserted => {}
                Insert::Full => {
                    self.tracker.user_losses[LossCause::LiveMapFull as usize] += 1;
                    continue;
                }
            }
            self.tracker.seed(
                pid,
                fd,
                Socket {
                    inode: Some(inode),
                    ..Socket::new(record, stack_pid)
                },
                now_ns,
            );
        }
        true
    }

    /// A child forked by a traced process: copy what it inherited, then let the kernel treat it
    /// as fully tracked.
    pub(super) fn seed_child(&mut self, parent: u32, child: u32, fork_ns: u64) {
        // Gone already: its exit event (which follows) finalizes it.
        let _ = self.seed(child, Some((parent, fork_ns)), fork_ns);
        self.refresh_meta(child, mono_ns());
        let setup = self.runtime_setup(child);
        self.activate_later(child, setup);
    }

    /// Makes a seeded process ACTIVE once the events already in the ring are applied: a close
    /// it made while its /proc fds were being copied must forget that copy before the kernel
    /// treats the process as fully tracked (and, say, copies the stale entry on a dup).
    pub(super) fn activate_later(&mut self, pid: u32, setup: super::runtime::Setup) {
        self.seeded.push((pid, setup));
    }

    /// Called with the ring drained.
    pub(super) fn activate_seeded(&mut self) {
        for (pid, s) in std::mem::take(&mut self.seeded) {
            if !self.tracker.procs.contains_key(&pid) {
                continue; // exited meanwhile
            }
            self.tracer
                .control_all(pid, Some(state::ACTIVE), Some(s.stack_mode), Some(s.flags));
        }
    }
}

fn unknown_record(origin: Origin, created_ns: u64) -> SocketRecord {
    let mut r = SocketRecord::EMPTY;
    r.origin = origin as u8;
    r.created_ns = created_ns;
    r
}
