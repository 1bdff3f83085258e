//! What each process's runtime needs, decided when it becomes traced or execs and undone when
//! it exits: the uprobes of Go HTTP clients (kernel flags GO_HTTP, GO_DELIVER) and of Node's
//! libuv (NODE_UV), which join sockets to the code that asked for them; how its stacks are
//! taken (frame pointers; for code built without them, a walk in the kernel with its compiled
//! DWARF CFI, or stack copies unwound in userspace when the tables are off); and whether its
//! interpreted frames are walked (CPython's frame chain: PYTHON; HotSpot's interpreter frames:
//! HOTSPOT, with the layout found in the process handed to the kernel). The kernel learns the
//! mode and flags through CONTROL.

use hashbrown::HashMap;
use log::{debug, info, warn};
use sockleak_common::target::{flag, stack_mode};

use super::Session;
use crate::{
    cli::StackMode,
    host::{procfs, procmem::ProcMem},
    symbols::callsite::Origins,
    symbols::gohttp::Probe,
    symbols::runtime_frames::{JvmNamer, JvmRanges, Namer, Refused},
    symbols::runtimes::{self, Runtime},
    symbols::stacks::{self, Site},
    symbols::{hotspot, python},
};

/// Intervals a runtime not yet ready (libpython not mapped yet, the JVM still starting) is
/// looked at again before giving up.
const READY_TRIES: u32 = 30;

/// RUNTIME FRAMES: per process, what names its interpreted frames, and the processes whose
/// runtime was not ready yet.
#[derive(Debug, Default)]
pub struct FrameWalks {
    pub namers: HashMap<u32, Namer>,
    /// Processes to look at again, with the tries left.
    pending: HashMap<u32, u32>,
}

/// DWARF switches logged at info level before the rest go to debug.
const QUIET_AFTER: usize = 4;

/// What the kernel is told about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub flags: u8,
    pub stack_mode: u8,
}

/// The stack mode a process starts in.
pub fn initial_stack_mode(mode: StackMode, runtime: Runtime) -> u8 {
    match mode {
        StackMode::Dwarf => stack_mode::STACK_COPY,
        StackMode::Auto if runtime.lacks_frame_pointers() => stack_mode::STACK_COPY,
        _ => stack_mode::FRAME_POINTERS,
    }
}

impl Session {
    /// Checks `pid`'s binary: probes it, picks its stack mode, and records both.
    pub(super) fn runtime_setup(&mut self, pid: u32) -> Setup {
        let stacks = self.cfg.load.capture_stacks;
        let go = self.go.check(&mut self.tracer, pid, stacks);
        let mut flags = go.as_ref().map_or(0, |c| c.flags);
        let mut origins = go.as_ref().map(|c| Origins::from(c.origins.clone()));
        let runtime = runtimes::of(pid);
        if runtime == Runtime::Node {
            let node = self.node.check(&mut self.tracer, pid, stacks);
            if node.is_ok() {
                flags |= flag::NODE_UV;
            }
            origins = Some(Origins::from(node));
        } else {
            self.node.forget(pid);
        }
        let mut mode = initial_stack_mode(self.cfg.stack_mode, runtime);
        if mode == stack_mode::STACK_COPY {
            mode = self.dwarf_mode(pid, &[]);
        }
        if let Some(p) = self.tracker.procs.get_mut(&pid) {
            p.meta.go_http = go.map(|c| c.probe);
            p.meta.origins = origins;
            p.meta.runtime = Some(runtime);
            p.meta.stack_mode = mode;
        }
        let flags = flags | self.setup_frame_walk(pid, runtime);
        Setup {
            flags,
            stack_mode: mode,
        }
    }

    /// RUNTIME FRAMES: finds `pid`'s interpreter layout and hands it to the kernel; the flag
    /// that turns its walk on (0: none). A runtime not ready yet is looked at again later.
    fn setup_frame_walk(&mut self, pid: u32, runtime: Runtime) -> u8 {
        self.walks.namers.remove(&pid);
        self.tracer.forget_runtimes(pid);
        let tries = self.walks.pending.remove(&pid).unwrap_or(READY_TRIES);
        if !matches!(runtime, Runtime::CPython | Runtime::Jvm) || !self.cfg.load.capture_stacks {
            return 0;
        }
        let comm = procfs::comm(pid).unwrap_or_default();
        if runtime == Runtime::CPython && self.cfg.load.task_fsbase == 0 {
            warn!(
                "pid {pid} ({comm}): Python frames are not walked: this kernel's BTF lacks task_struct.thread.fsbase (x86_64 only)"
            );
            return 0;
        }
        // The image's generation first: a layout found for an image that exec replaces meanwhile
        // is one the kernel ignores.
        let exec_gen = self.tracer.target(pid).map_or(0, |t| t.exec_gen);
        let Ok(mem) = ProcMem::open(pid) else {
            return 0;
        };
        let maps = procfs::maps(pid);
        let found = match runtime {
            Runtime::CPython => {
                let exe = std::fs::read_link(procfs::proc_path(pid, "exe"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                python::probe(pid, &maps, &exe, &mem).and_then(|f| {
                    let mut p = f.proc;
                    p.exec_gen = exec_gen;
                    debug!("pid {pid}: Python layout for the kernel: {p:?}");
                    self.tracer
                        .set_python(pid, &p)
                        .map_err(|e| Refused::Unsupported(format!("{e:#}")))?;
                    let (a, b, c) = f.version;
                    let how = if f.adjusted.is_empty() {
                        String::new()
                    } else {
                        format!(" (its debug offsets differ from 3.13's table in {:?})", f.adjusted)
                    };
                    info!("pid {pid} ({comm}): Python {a}.{b}.{c} in {}: its frames are walked{how}", f.binary);
                    let codes = python::code::CodeCache::new(f.layout, f.code_type);
                    self.walks.namers.insert(pid, Namer::Python { mem, codes, exec_gen });
                    Ok(flag::PYTHON)
                })
            }
            _ => hotspot::probe(pid, &maps, &mem).and_then(|f| {
                let unloads = hotspot::perfdata::Unloads::open(pid, &maps);
                let mut p = f.proc;
                p.exec_gen = exec_gen;
                p.unloads = unloads.as_ref().and_then(|u| u.addr).unwrap_or(0);
                self.tracer
                    .set_jvm(pid, &p)
                    .map_err(|e| Refused::Unsupported(format!("{e:#}")))?;
                let ranges = JvmRanges {
                    interp: (p.interp_lo, p.interp_hi),
                    cache: (p.cache_lo, p.cache_hi),
                    call_stub: p.call_stub,
                    frame_pointers: f.frame_pointers,
                };
                self.stacks.set_jvm(pid, ranges);
                let fp = if f.frame_pointers {
                    ""
                } else {
                    "; JIT-compiled frames keep no frame pointer (no -XX:+PreserveFramePointer): stacks stop at them"
                };
                let watch = if p.unloads != 0 {
                    ""
                } else {
                    "; no hsperfdata (-XX:-UsePerfData?): class unloading is not watched, a reused Method* could be named after its old method"
                };
                info!("pid {pid} ({comm}): JDK {} ({}): its interpreted frames are named{fp}{watch}", f.major, f.release);
                let unloaded = unloads.as_ref().and_then(|u| u.read()).unwrap_or(0);
                self.walks.namers.insert(
                    pid,
                    Namer::Jvm(Box::new(JvmNamer {
                        mem,
                        methods: hotspot::method::Methods::new(f.offsets),
                        exec_gen,
                        ranges,
                        unloads,
                        unloaded,
                    })),
                );
                Ok(flag::HOTSPOT)
            }),
        };
        match found {
            Ok(flag) => flag,
            Err(Refused::NotReady(why)) => {
                if tries > 0 {
                    self.walks.pending.insert(pid, tries - 1);
                    debug!("pid {pid} ({comm}): runtime not ready ({why}): looking again later");
                } else {
                    warn!("pid {pid} ({comm}): its interpreted frames are not walked: {why}");
                }
                0
            }
            Err(Refused::Unsupported(why)) => {
                warn!("pid {pid} ({comm}): its interpreted frames are not walked: {why}");
                0
            }
            Err(Refused::Absent) => 0,
        }
    }

    /// RUNTIME FRAMES: looks again at runtimes that were not ready.
    pub(super) fn watch_runtimes(&mut self) {
        let pids: Vec<u32> = self.walks.pending.keys().copied().collect();
        for pid in pids {
            if !self.tracker.procs.contains_key(&pid) {
                self.walks.pending.remove(&pid);
                continue;
            }
            let runtime = runtimes::of(pid);
            let frames = self.setup_frame_walk(pid, runtime);
            if frames != 0 {
                let go = self
                    .tracker
                    .procs
                    .get(&pid)
                    .is_some_and(|p| p.meta.go_http == Some(Probe::Attached));
                let flags = frames | if go { flag::GO_HTTP } else { 0 };
                self.tracer.control_all(pid, None, None, Some(flags));
            }
        }
    }

    /// A running process's binary changed or was found late: re-check and tell the kernel.
    pub(super) fn recheck_runtime(&mut self, pid: u32) {
        // A new image: its mappings and frame pointers are decided again.
        if let Some(t) = self.tables.as_mut() {
            t.forget(pid);
        }
        let s = self.runtime_setup(pid);
        self.tracer
            .control_all(pid, None, Some(s.stack_mode), Some(s.flags));
    }

    /// With `--stack-mode auto`: a process whose first frame-pointer stack stops short of its
    /// thread's start lacks frame pointers somewhere; its next stacks are unwound with DWARF
    /// instead (in the kernel with its tables, else from copies).
    pub(super) fn check_unwinding(&mut self, pid: u32, site: Site) {
        if self.cfg.stack_mode != StackMode::Auto {
            return;
        }
        let Some(p) = self.tracker.procs.get(&pid) else {
            return;
        };
        // A JVM's JIT code has no unwind tables: neither tables nor copies would get past it,
        // while its interpreter and native code keep frame pointers.
        if p.meta.stack_mode != stack_mode::FRAME_POINTERS || p.meta.runtime == Some(Runtime::Jvm) {
            return;
        }
        let frames = self.stacks.frames(pid, site);
        if !stacks::truncated(&frames) {
            return;
        }
        let last = frames
            .last()
            .map(|f| f.symbol.clone().unwrap_or_else(|| format!("{:#x}", f.addr)))
            .unwrap_or_default();
        // A process seen first through this stack has no name yet in the tracker.
        let comm = if p.meta.comm.is_empty() {
            crate::host::procfs::comm(pid).unwrap_or_default()
        } else {
            p.meta.comm.clone()
        };
        // Switched before it is said: a socket made after the line is unwound with DWARF.
        // The ip and the leaf caller are right; what a frame-pointer walk finds past them in
        // code without frame pointers is not (and may name big libraries never on the stack).
        let hints: Vec<u64> = frames.iter().take(2).map(|f| f.addr).collect();
        let mode = self.dwarf_mode(pid, &hints);
        if let Some(p) = self.tracker.procs.get_mut(&pid) {
            p.meta.stack_mode = mode;
        }
        self.tracer.control_all(pid, None, Some(mode), None);
        let how = if mode == stack_mode::TABLES {
            "in the kernel, with its binaries' unwind tables"
        } else {
            "from stack copies"
        };
        // With --all a host has dozens of such processes: name the first few, then go quiet.
        let line = format!(
            "pid {pid} ({comm}): its stack stops at {last}, frame pointers are missing there: unwinding its stacks with DWARF from now on ({how})"
        );
        self.dwarf_switches += 1;
        match self.dwarf_switches {
            ..=QUIET_AFTER => info!("{line}"),
            n if n == QUIET_AFTER + 1 => {
                info!("{line} (further switches are logged at debug level)")
            }
            _ => debug!("{line}"),
        }
    }

    pub(super) fn forget_runtime(&mut self, pid: u32) {
        self.walks.namers.remove(&pid);
        self.walks.pending.remove(&pid);
        self.tracer.forget_runtimes(pid);
        self.go.forget(&mut self.tracer, pid);
        self.node.forget(pid);
        self.unwinders.forget(pid);
        if let Some(t) = self.tables.as_mut() {
            t.forget(pid);
        }
        self.stacks.forget_runtime(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpython_starts_with_copies_under_auto() {
        assert_eq!(
            initial_stack_mode(StackMode::Auto, Runtime::CPython),
            stack_mode::STACK_COPY
        );
        assert_eq!(
            initial_stack_mode(StackMode::Auto, Runtime::Node),
            stack_mode::FRAME_POINTERS
        );
        assert_eq!(
            initial_stack_mode(StackMode::Fp, Runtime::CPython),
            stack_mode::FRAME_POINTERS
        );
        assert_eq!(
            initial_stack_mode(StackMode::Dwarf, Runtime::Other),
            stack_mode::STACK_COPY
        );
    }
}
