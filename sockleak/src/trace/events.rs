//! Applying the kernel's events: the tracker decides, this carries out the kernel-map and /proc
//! work it asks for.

use aya::maps::{MapData, RingBuf};
use log::warn;
use sockleak_common::{
    event::{Event, EventKind},
    runtime::is_runtime_id,
    stack::is_copy_id,
    unwind::WalkedStack,
};

use super::{Session, mono_ns};
use crate::{
    cli::Format,
    host::procfs,
    model::{FailureLine, names},
    output,
    tracker::{Action, FailureKey},
};

/// How often one process's open-fd count is read while it keeps failing.
const FAILURE_FD_READ_NS: u64 = 100_000_000;
/// At most one streamed `failure` line per call site per second.
const FAILURE_STREAM_NS: u64 = 1_000_000_000;

impl Session {
    pub(super) fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        // Copies first: an event's stack copy was submitted before the event; then runtime
        // stacks (which may refer to copies).
        self.drain_copies();
        self.drain_runtime_stacks();
        let mut actions = Vec::new();
        while let Some(item) = ring.next() {
            // A stack the kernel walked with its unwind tables comes with its frames.
            let decoded = match WalkedStack::decode(&item) {
                Some(w) => {
                    let ev = self.walked_stack(&w);
                    Ok((ev, EventKind::NewStack))
                }
                None => Event::decode(&item),
            };
            match decoded {
                Ok((mut ev, kind)) => {
                    self.events_seen += 1;
                    // Failures are grouped by call site: copies of one stack are one site.
                    let id = ev.record.stack_id;
                    if is_copy_id(id) && !self.stacks.has_copy(id) {
                        self.drain_copies();
                    }
                    if is_runtime_id(id) && !self.stacks.has_runtime(id) {
                        self.drain_runtime_stacks();
                    }
                    ev.record.stack_id = self.stacks.canonical(id);
                    self.tracker.apply(&ev, kind, &mut actions);
                }
                Err(e) => {
                    self.tracker.bad_events += 1;
                    if self.tracker.bad_events == 1 {
                        warn!("undecodable event ({e}): is the eBPF object from this build?");
                    }
                }
            }
            drop(item);
            for a in actions.drain(..) {
                self.act(a);
            }
            for pid in std::mem::take(&mut self.tracker.dropped_exited) {
                self.stacks.forget_pid(pid);
                self.forget_stops(pid);
            }
        }
        self.activate_seeded();
        self.tracer.flush_logs();
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Forget {
                tgid,
                fd,
                not_after_ns,
                ..
            } => {
                let deleted = self.tracer.forget(tgid, fd, not_after_ns);
                self.tracker.forgot(action, deleted);
            }
            Action::Insert { tgid, fd, record } => {
                let ok = matches!(
                    self.tracer.insert_if_absent(tgid, fd, &record),
                    crate::kernel::bpf::Insert::Inserted
                );
                self.tracker.inserted(tgid, ok);
            }
            Action::SeedChild {
                parent,
                child,
                fork_ns,
            } => self.seed_child(parent, child, fork_ns),
            Action::CloseRange {
                tgid,
                first,
                last,
                ts_ns,
            } => self.sync_todo.close_ranges.push((tgid, first, last, ts_ns)),
            Action::Exec { tgid, reconcile } => {
                if let Some(p) = self.tracker.procs.get_mut(&tgid)
                    && let Some(c) = procfs::comm(tgid)
                {
                    p.meta.comm = c;
                }
                if reconcile {
                    self.reconciler.urgent(tgid);
                }
                self.recheck_runtime(tgid);
            }
            Action::FailureSeen { tgid, key } => self.failure_seen(tgid, key),
            Action::NewStack { tgid, site } => {
                // While the process is alive its mappings name the frames.
                self.stacks.resolve(&self.tracer, tgid, [site]);
                self.check_unwinding(tgid, site);
            }
            Action::Exited {
                tgid,
                collect,
                ts_ns,
            } => {
                self.tracer.remove_target(tgid);
                self.refresh.forget(tgid);
                self.forget_runtime(tgid);
                if collect {
                    self.sync_todo.exits.push((tgid, ts_ns));
                }
                // Its address space is gone: keep what the kernel recorded, as addresses.
                if let Some(p) = self.tracker.exited.last() {
                    let ids: Vec<i32> = p
                        .sockets
                        .values()
                        .flat_map(|s| {
                            let c = &s.record.conn;
                            [
                                s.record.stack_id,
                                c.stack_id,
                                c.alt_stack_id,
                                c.alt2_stack_id,
                            ]
                        })
                        .chain(p.failures.keys().map(|k| k.site.stack_id))
                        .collect();
                    for id in ids {
                        self.stacks.fetch_raw(&self.tracer, id);
                    }
                }
            }
        }
    }

    fn failure_seen(&mut self, tgid: u32, key: FailureKey) {
        let now = mono_ns();
        if self
            .refresh
            .failure_fd_read_due(tgid, now, FAILURE_FD_READ_NS)
        {
            let n = procfs::open_fd_count(tgid);
            if let Some(f) = self
                .tracker
                .procs
                .get_mut(&tgid)
                .and_then(|p| p.failures.get_mut(&key))
            {
                f.open_fds = n.or(f.open_fds);
            }
        }
        if self.cfg.format == Format::Json {
            self.stream_failure(tgid, key, now);
        }
    }

    /// Streams a `failure` line, at most once per `FAILURE_STREAM_NS` per call site; the
    /// failures in between are counted in the next line's `suppressed`.
    fn stream_failure(&mut self, tgid: u32, key: FailureKey, now: u64) {
        let Some(f) = self
            .tracker
            .procs
            .get(&tgid)
            .and_then(|p| p.failures.get(&key))
        else {
            return;
        };
        if f.last_streamed_ns != 0 && now.saturating_sub(f.last_streamed_ns) < FAILURE_STREAM_NS {
            return;
        }
        self.stacks.resolve(&self.tracer, tgid, [key.site]);
        let p = &self.tracker.procs[&tgid];
        let f = &p.failures[&key];
        let line = FailureLine {
            kind: "failure",
            t_s: now.saturating_sub(self.start_ns) as f64 / 1e9,
            pid: tgid,
            comm: p.meta.comm.clone(),
            tid: f.tid,
            syscall: key.syscall.as_str().to_string(),
            errno: names::errno_name(key.errno),
            count: f.count,
            suppressed: f.unstreamed.saturating_sub(1),
            open_fds: f.open_fds,
            remote: names::endpoint(&f.remote),
            stack: self.stacks.frames(tgid, key.site),
        };
        if output::print(&super::present::json_line(&line)).is_err() {
            self.closed = true;
        }
        if let Some(f) = self
            .tracker
            .procs
            .get_mut(&tgid)
            .and_then(|p| p.failures.get_mut(&key))
        {
            f.last_streamed_ns = now;
            f.unstreamed = 0;
        }
    }
}
