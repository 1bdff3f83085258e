//! Loading and attaching the kernel programs, and typed access to their maps.
//!
//! Everything lives in [`Tracer`]: dropping it detaches every program and frees every map, so
//! an error at any step leaves nothing attached.

use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        RawTracePoint, TracePoint, UProbe,
        trace_point::TracePointLink,
        uprobe::{UProbeAttachLocation, UProbeLink, UProbeScope},
    },
};
use log::warn;
use sockleak_common::{
    counters::{LOSS_CAUSES, LossCause},
    kernel::Offsets,
    origin::GoLayout,
    runtime::{JvmProc, PyProc},
    socket::{DestKey, DestStats, SockKey, SocketRecord, StackKey},
    target::{
        CgroupTarget, Clock, ClockSample, Control, FILTER_BITS, FILTER_WORDS, Target, UNCHANGED,
        filter_entries, global, map,
    },
};

use crate::{error::UserError, kernel::batch};

/// The kernel object, embedded by build.rs (empty when built without bpf-linker).
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockleak.bpf.o"));

/// The embedded kernel object (empty in a stub build).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// One tracepoint program and what is lost without it.
#[derive(Debug)]
pub struct Probe {
    pub category: &'static str,
    pub name: &'static str,
    /// None: sockleak cannot work without it. Some: what the report lacks when it is missing.
    pub optional: Option<&'static str>,
}

pub const PROBES: &[Probe] = &[
    Probe {
        category: "syscalls",
        name: "sys_exit_socket",
        optional: None,
    },
    Probe {
        category: "syscalls",
        name: "sys_enter_close",
        optional: None,
    },
    Probe {
        category: "sched",
        name: "sched_process_exit",
        optional: None,
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_accept4",
        optional: Some("sockets from accept4"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_accept",
        optional: Some("sockets from accept"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_socketpair",
        optional: Some("socketpair sockets"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_connect",
        optional: Some("connect endpoints and failures"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_dup",
        optional: Some("dup copies of sockets"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_dup2",
        optional: Some("dup2 copies of sockets"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_dup3",
        optional: Some("dup3 copies of sockets"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_fcntl",
        optional: Some("F_DUPFD copies of sockets"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_close_range",
        optional: Some("sockets closed by close_range"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_recvmsg",
        optional: Some("sockets received over unix sockets (SCM_RIGHTS)"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_recvmmsg",
        optional: Some("sockets received with recvmmsg (SCM_RIGHTS)"),
    },
    Probe {
        category: "syscalls",
        name: "sys_exit_pidfd_getfd",
        optional: Some("sockets taken with pidfd_getfd"),
    },
    Probe {
        category: "io_uring",
        name: "io_uring_submit_req",
        optional: Some("call sites of io_uring sockets"),
    },
    Probe {
        category: "io_uring",
        name: "io_uring_complete",
        optional: Some("sockets made, accepted and closed by io_uring"),
    },
    Probe {
        category: "task",
        name: "task_newtask",
        optional: Some("children forked after start"),
    },
    Probe {
        category: "sched",
        name: "sched_process_exec",
        optional: Some("close-on-exec at execve"),
    },
];

/// Uprobe programs, loaded on demand for the processes that need one, and what is not seen
/// without them. A uprobe program not listed here is optional too (see `features`).
pub const ON_DEMAND: &[(&str, &str)] = &[("go_dial_conn", "Go net/http dials per Transport")];

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Offset of a field in a tracepoint's format file (`field:bool group_dead; offset:32; ...`).
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|l| {
        let l = l.trim();
        let decl = l.strip_prefix("field:")?.split(';').next()?;
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        l.split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))?
            .trim()
            .parse()
            .ok()
    })
}

fn group_dead_offset(tracefs: &Path) -> u32 {
    std::fs::read_to_string(tracefs.join("events/sched/sched_process_exit/format"))
        .ok()
        .and_then(|f| parse_field_offset(&f, "group_dead"))
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub trace_all: bool,
    pub capture_stacks: bool,
    pub max_sockets: u32,
    pub stack_entries: u32,
    /// Event ring buffer size (a power-of-two multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Walk the user stack for 1 in this many socket creations.
    pub stack_sample: u32,
    /// Bytes of user stack copied per socket for processes without frame pointers.
    pub stack_copy_bytes: u32,
    /// Size of the stack-copy ring buffer (a power-of-two multiple of the page size).
    pub stack_copy_ring_bytes: u32,
    /// Rows of the kernel's unwind tables (8 bytes each, `--unwind-table-mib`); 0: no
    /// kernel-side DWARF unwinding (stacks without frame pointers are copied).
    pub unwind_table_rows: u32,
    /// Traced cgroup subtrees (at most MAX_CGROUPS).
    pub cgroups: Vec<CgroupTarget>,
    /// Kernel struct offsets from BTF (see `kernel::offsets`).
    pub offsets: Offsets,
    /// `task_struct.thread.fsbase` from BTF (x86_64); 0: unknown (no Python frames).
    pub task_fsbase: u32,
}

/// Outcome of [`Tracer::insert_if_absent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Inserted,
    Exists,
    Full,
}

pub struct Tracer {
    /// Owns programs and links: dropping it detaches everything.
    bpf: Ebpf,
    targets: Map,
    control: HashMap<MapData, u32, Control>,
    bits: Array<MapData, [u64; FILTER_WORDS]>,
    pending_bits: Array<MapData, [u64; FILTER_WORDS]>,
    outside_bits: Array<MapData, [u64; FILTER_WORDS]>,
    /// How the kernel turns jiffies into ns (hz 0: it uses the precise clock).
    pub clock: Clock,
    _clock_maps: ClockMaps,
    live: Map,
    dests: Map,
    last_stack: HashMap<MapData, StackKey, i32>,
    /// Per Go process: what its origin probes read (see `symbols::golayout`).
    go_layout: HashMap<MapData, u32, GoLayout>,
    pub stacks: StackTraceMap<MapData>,
    pub losses: PerCpuArray<MapData, u64>,
    /// Held so its fd stays open: programs are loaded (and bound to maps) at attach.
    _cgroups: Array<MapData, CgroupTarget>,
    /// Cgroups below a FILTERED target whose tasks are not traced (see `deny_cgroup`).
    denied: HashMap<MapData, u64, u8>,
    pub events: Option<RingBuf<MapData>>,
    /// Stack copies of processes without frame pointers (see `unwind`).
    pub stack_copies: Option<RingBuf<MapData>>,
    /// New stacks with runtime frames (see `symbols::runtime_frames`).
    pub rt_stacks: Option<RingBuf<MapData>>,
    /// Runtime layouts per process (CPython, HotSpot).
    py_procs: HashMap<MapData, u32, PyProc>,
    jvm_procs: HashMap<MapData, u32, JvmProc>,
    /// [0]: bumped after each CONTROL write so the kernel applies it at once.
    control_gen: Array<MapData, u32>,
    /// (tgid, stack hash) -> stack id (see `forget_stack`).
    stack_cache: HashMap<MapData, StackKey, i32>,
    /// The kernel unwinder's maps; None when its tables are off (`--unwind-table-mib 0`).
    pub unwind: Option<crate::kernel::unwind_maps::UnwindMaps>,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    tracefs: std::path::PathBuf,
    /// The attachments, owned here so they can be detached together (see Drop).
    links: Vec<TracePointLink>,
    /// Optional probes that could not be attached, with what is lost.
    pub degraded: Vec<String>,
    /// Programs the kernel cannot load (see `features`), with the reason: never loaded.
    left_out: std::collections::BTreeMap<String, String>,
}

impl Drop for Tracer {
    /// Detaching a tracepoint waits for an RCU grace period (~70 ms here); one at a time, 20 of
    /// them would hold Ctrl-C for over a second. Detached in parallel, the waits overlap.
    fn drop(&mut self) {
        std::thread::scope(|s| {
            for link in self.links.drain(..) {
                s.spawn(move || drop(link));
            }
        });
    }
}

/// The fd of a map taken out of the object.
fn map_fd(m: &Map) -> Option<std::os::fd::BorrowedFd<'_>> {
    use std::os::fd::AsFd;
    match m {
        Map::HashMap(d) | Map::LruHashMap(d) => Some(d.fd().as_fd()),
        _ => None,
    }
}

impl Tracer {
    /// Loads the object and creates its maps; programs are not attached yet.
    pub fn load(opts: &LoadOptions, tracefs: &Path) -> Result<Tracer> {
        if OBJECT.is_empty() {
            return Err(UserError::StubObject.into());
        }
        let trace_all = u8::from(opts.trace_all);
        let capture = u8::from(opts.capture_stacks);
        let group_dead = group_dead_offset(tracefs);
        let n_cgroups = opts.cgroups.len() as u32;
        // Wake the reader once an eighth of the ring is queued; it also drains on a timer.
        let wakeup = u64::from(opts.ring_buffer_bytes / 8);
        let mut bpf = EbpfLoader::new()
            .override_global(global::TRACE_ALL, &trace_all, true)
            .override_global(global::CAPTURE_STACKS, &capture, true)
            .override_global(global::EXIT_GROUP_DEAD_OFFSET, &group_dead, true)
            .override_global(global::N_CGROUPS, &n_cgroups, true)
            .override_global(global::WAKEUP_BYTES, &wakeup, true)
            .override_global(global::STACK_SAMPLE, &opts.stack_sample, true)
            .override_global(global::STACK_COPY_BYTES, &opts.stack_copy_bytes, true)
            .override_global(global::OFFSETS, &opts.offsets, true)
            .override_global(global::SELF_TGID, &std::process::id(), true)
            .override_global(global::TASK_FSBASE_OFFSET, &opts.task_fsbase, true)
            .map_max_entries(map::LIVE, opts.max_sockets)
            .map_max_entries(map::STACKS, opts.stack_entries)
            .map_max_entries(map::EVENTS, opts.ring_buffer_bytes)
            .map_max_entries(map::STACK_COPIES, opts.stack_copy_ring_bytes)
            .map_max_entries(map::UNWIND_ROWS, opts.unwind_table_rows.max(1))
            .map_max_entries(map::TRACED_BITS, filter_entries(pid_max()))
            .map_max_entries(map::PENDING_BITS, filter_entries(pid_max()))
            .map_max_entries(map::OUTSIDE_BITS, filter_entries(pid_max()))
            .load(OBJECT)
            .context("loading sockleak's eBPF object into the kernel")?;
        // Kernel-side log records (aya-log) go to sockleak's logger.
        let logger = match aya_log::EbpfLogger::init(&mut bpf) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!("kernel-side logging unavailable: {e}");
                None
            }
        };
        let targets = take(&mut bpf, map::TARGETS)?;
        let control = HashMap::try_from(take(&mut bpf, map::CONTROL)?)?;
        let bits: Array<MapData, [u64; FILTER_WORDS]> =
            Array::try_from(take(&mut bpf, map::TRACED_BITS)?)?;
        let pending_bits: Array<MapData, [u64; FILTER_WORDS]> =
            Array::try_from(take(&mut bpf, map::PENDING_BITS)?)?;
        let outside_bits: Array<MapData, [u64; FILTER_WORDS]> =
            Array::try_from(take(&mut bpf, map::OUTSIDE_BITS)?)?;
        let (clock, clock_maps) = calibrate(&mut bpf)?;
        let live = take(&mut bpf, map::LIVE)?;
        let dests = take(&mut bpf, map::DESTS)?;
        let last_stack = HashMap::try_from(take(&mut bpf, "LAST_STACK")?)?;
        let go_layout = HashMap::try_from(take(&mut bpf, map::GO_LAYOUT)?)?;
        let stacks = StackTraceMap::try_from(take(&mut bpf, map::STACKS)?)?;
        let losses = PerCpuArray::try_from(take(&mut bpf, map::LOSSES)?)?;
        let mut cgroups: Array<MapData, CgroupTarget> =
            Array::try_from(take(&mut bpf, map::CGROUPS)?)?;
        for (i, c) in opts.cgroups.iter().enumerate() {
            cgroups
                .set(i as u32, c, 0)
                .context("filling the kernel's cgroup target array")?;
        }
        let denied = HashMap::try_from(take(&mut bpf, map::DENIED_CGROUPS)?)?;
        let events = RingBuf::try_from(take(&mut bpf, map::EVENTS)?)?;
        let stack_copies = RingBuf::try_from(take(&mut bpf, map::STACK_COPIES)?)?;
        let rt_stacks = RingBuf::try_from(take(&mut bpf, map::RT_STACKS)?)?;
        let py_procs = HashMap::try_from(take(&mut bpf, map::PY_PROCS)?)?;
        let jvm_procs = HashMap::try_from(take(&mut bpf, map::JVM_PROCS)?)?;
        let control_gen = Array::try_from(take(&mut bpf, map::CONTROL_GEN)?)?;
        let stack_cache = HashMap::try_from(take(&mut bpf, map::STACK_CACHE)?)?;
        let unwind = if opts.unwind_table_rows > 0 {
            Some(crate::kernel::unwind_maps::UnwindMaps::new(
                take(&mut bpf, map::UNWIND_ROWS)?,
                opts.unwind_table_rows,
                take(&mut bpf, map::UNWIND_PROCS)?,
                take(&mut bpf, map::UNWIND_COUNTS)?,
            )?)
        } else {
            None
        };
        Ok(Tracer {
            stack_cache,
            unwind,
            bpf,
            targets,
            control,
            bits,
            pending_bits,
            outside_bits,
            clock,
            _clock_maps: clock_maps,
            live,
            dests,
            last_stack,
            go_layout,
            stacks,
            losses,
            _cgroups: cgroups,
            denied,
            events: Some(events),
            stack_copies: Some(stack_copies),
            rt_stacks: Some(rt_stacks),
            py_procs,
            jvm_procs,
            control_gen,
            logger,
            tracefs: tracefs.to_path_buf(),
            links: Vec::new(),
            degraded: Vec::new(),
            left_out: Default::default(),
        })
    }

    /// Attaches every probe as `hooks::plan` says. A required tracepoint that cannot be used is
    /// an error (and `self` dropped by the caller detaches what was attached); an optional one
    /// is a warning naming what is not seen.
    pub fn attach(&mut self) -> Result<()> {
        let plan = crate::kernel::hooks::plan(&crate::kernel::hooks::Mounted(&self.tracefs))?;
        self.degraded.extend(plan.degraded);
        for a in plan.attach {
            let p = a.probe;
            if self.left_out.contains_key(p.name) {
                continue;
            }
            let prog: &mut TracePoint = self
                .bpf
                .program_mut(p.name)
                .with_context(|| format!("program {} missing from the eBPF object", p.name))?
                .try_into()?;
            let res = prog
                .load()
                .and_then(|()| prog.attach(p.category, a.tracepoint))
                .and_then(|id| prog.take_link(id));
            match (res, p.optional) {
                (Ok(link), _) => self.links.push(link),
                (Err(e), None) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("attaching {}:{}", p.category, a.tracepoint)));
                }
                (Err(e), Some(lost)) => self.degraded.push(format!(
                    "could not attach {}:{} ({e}): {lost} are not tracked",
                    p.category, a.tracepoint
                )),
            }
        }
        Ok(())
    }

    /// Programs the start-up probes found this kernel cannot load (name -> why): neither
    /// attached nor loaded on demand.
    pub fn leave_out(&mut self, programs: std::collections::BTreeMap<String, String>) {
        self.left_out = programs;
    }

    /// Attaches the uprobe program `name` at `offset` in `binary`, firing for process `pid`
    /// only. The program is loaded on first use: a session without uprobes never loads it.
    pub fn attach_uprobe(
        &mut self,
        name: &str,
        pid: u32,
        binary: &Path,
        offset: u64,
    ) -> Result<UProbeLink> {
        let pid = std::num::NonZeroU32::new(pid).context("pid 0")?;
        if let Some(why) = self.left_out.get(name) {
            anyhow::bail!("{why}");
        }
        let prog: &mut UProbe = self
            .bpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("loading the {name} uprobe"))?;
        }
        let id = prog.attach(
            UProbeAttachLocation::AbsoluteOffset(offset),
            binary,
            UProbeScope::OneProcess(pid),
        )?;
        Ok(prog.take_link(id)?)
    }

    /// Gives the kernel a Go process's layout, before its origin probes are attached.
    pub fn set_go_layout(&mut self, tgid: u32, layout: &GoLayout) -> Result<()> {
        self.go_layout
            .insert(tgid, layout, 0)
            .with_context(|| format!("writing pid {tgid}'s Go layout"))
    }

    /// Forgets a Go process's layout (absent is fine).
    pub fn remove_go_layout(&mut self, tgid: u32) {
        let _ = self.go_layout.remove(&tgid);
    }

    /// Makes `tgid` a target before attach. An existing entry is left alone: the kernel owns it.
    pub fn add_target(&mut self, tgid: u32, state: u8) -> Result<()> {
        const BPF_NOEXIST: u64 = 1;
        let mut targets: HashMap<&mut MapData, u32, Target> = HashMap::try_from(&mut self.targets)?;
        match targets.insert(tgid, Target::new(state, 0), BPF_NOEXIST) {
            Ok(()) => {}
            Err(_) if targets.get(&tgid, 0).is_ok() => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("adding pid {tgid} to the kernel target map")));
            }
        }
        set_bit(&mut self.bits, tgid)?;
        if state == sockleak_common::target::state::FORK_PENDING {
            set_bit(&mut self.pending_bits, tgid)?;
        }
        Ok(())
    }

    /// Asks the kernel to change a target's entry on its next event.
    pub fn control(&mut self, tgid: u32, state: Option<u8>, stack_mode: Option<u8>) {
        self.control_all(tgid, state, stack_mode, None);
    }

    /// Asks the kernel to change a target's entry on its next event, flags included.
    pub fn control_all(
        &mut self,
        tgid: u32,
        state: Option<u8>,
        stack_mode: Option<u8>,
        flags: Option<u8>,
    ) {
        // A change already queued is merged, not lost.
        let old = self.control.get(&tgid, 0).ok();
        let pick = |new: Option<u8>, old: Option<u8>| new.or(old).unwrap_or(UNCHANGED);
        let keep = |v: u8| (v != UNCHANGED).then_some(v);
        let c = Control {
            state: pick(state, old.and_then(|o| keep(o.state))),
            stack_mode: pick(stack_mode, old.and_then(|o| keep(o.stack_mode))),
            flags: pick(flags, old.and_then(|o| keep(o.flags))),
            _pad: [0; 5],
        };
        if let Err(e) = self.control.insert(tgid, c, 0) {
            warn!("could not update pid {tgid}'s kernel entry: {e}");
            return;
        }
        // The process's next event sees a new generation and applies the change.
        let g = self.control_gen.get(&0, 0).unwrap_or(0).wrapping_add(1);
        let _ = self.control_gen.set(0, g, 0);
    }

    /// Forgets which processes were found outside the traced cgroups (they may have moved in).
    /// Racing with the kernel setting a bit only costs it one more cgroup check.
    pub fn clear_outside(&mut self) {
        for entry in 0..self.outside_bits.len() {
            if self
                .outside_bits
                .get(&entry, 0)
                .is_ok_and(|w| w.iter().any(|x| *x != 0))
            {
                let _ = self.outside_bits.set(entry, [0u64; FILTER_WORDS], 0);
            }
        }
    }

    /// Stops the kernel from starting to trace tasks of cgroup `id` (below a FILTERED target:
    /// a container that matches no Kubernetes filter). False when the map is full.
    pub fn deny_cgroup(&mut self, id: u64) -> bool {
        self.denied.insert(id, 0, 0).is_ok()
    }

    /// Takes a cgroup off the deny list (it was removed: its id is not used again).
    pub fn allow_cgroup(&mut self, id: u64) {
        let _ = self.denied.remove(&id);
    }

    /// Forgets a process entirely: its entry and its live sockets (it turned out to be in a
    /// container no filter matches). Its filter bit goes with its exit.
    pub fn drop_process(&mut self, tgid: u32) {
        self.remove_target(tgid);
        let mut fds = Vec::new();
        self.live_each(|k, _| {
            if k.tgid == tgid {
                fds.push(k.fd);
            }
        });
        for fd in fds {
            self.forget(tgid, fd, u64::MAX);
        }
    }

    pub fn remove_target(&mut self, tgid: u32) {
        // Absent already (the kernel removes exited processes) is fine.
        if let Ok(mut t) = HashMap::<&mut MapData, u32, Target>::try_from(&mut self.targets) {
            let _ = t.remove(&tgid);
        }
        let _ = self.control.remove(&tgid);
    }

    /// One target's kernel entry.
    pub fn target(&self, tgid: u32) -> Option<Target> {
        let t: HashMap<&MapData, u32, Target> = HashMap::try_from(&self.targets).ok()?;
        t.get(&tgid, 0).ok()
    }

    /// RUNTIME FRAMES: a CPython process's layout, for its frames to be walked.
    pub fn set_python(&mut self, tgid: u32, p: &PyProc) -> Result<()> {
        self.py_procs
            .insert(tgid, p, 0)
            .with_context(|| format!("giving the kernel pid {tgid}'s Python layout"))
    }

    /// RUNTIME FRAMES: a JVM's layout, for its interpreted frames to be recorded.
    pub fn set_jvm(&mut self, tgid: u32, p: &JvmProc) -> Result<()> {
        self.jvm_procs
            .insert(tgid, p, 0)
            .with_context(|| format!("giving the kernel pid {tgid}'s JVM layout"))
    }

    /// Drops a process's runtime layouts (it exited, or its image changed).
    pub fn forget_runtimes(&mut self, tgid: u32) {
        let _ = self.py_procs.remove(&tgid);
        let _ = self.jvm_procs.remove(&tgid);
    }

    /// Every target's kernel entry.
    pub fn targets(&self) -> Vec<(u32, Target)> {
        map_fd(&self.targets)
            .and_then(|fd| batch::dump::<u32, Target>(&fd).ok())
            .unwrap_or_default()
    }

    /// Every live socket the kernel holds.
    pub fn live(&self) -> Vec<(SockKey, SocketRecord)> {
        let mut out = Vec::new();
        self.live_each(|k, v| out.push((k, v)));
        out
    }

    /// Every live socket the kernel holds, one at a time.
    pub fn live_each(&self, f: impl FnMut(SockKey, SocketRecord)) {
        if let Some(Err(e)) =
            map_fd(&self.live).map(|fd| batch::for_each::<SockKey, SocketRecord>(&fd, f))
        {
            warn!("reading the kernel's live-socket map: {e}");
        }
    }

    /// Connects per (process, destination).
    pub fn dests(&self) -> Vec<(DestKey, DestStats)> {
        map_fd(&self.dests)
            .and_then(|fd| batch::dump::<DestKey, DestStats>(&fd).ok())
            .unwrap_or_default()
    }

    /// The kernel's record of one fd.
    pub fn lookup(&self, tgid: u32, fd: u32) -> Option<SocketRecord> {
        let live: HashMap<&MapData, SockKey, SocketRecord> = HashMap::try_from(&self.live).ok()?;
        live.get(&SockKey { tgid, fd }, 0).ok()
    }

    /// Inserts a socket the kernel has no entry for, leaving an existing entry alone (a
    /// socket made after tracing began owns that fd).
    pub fn insert_if_absent(&mut self, tgid: u32, fd: u32, rec: &SocketRecord) -> Insert {
        const BPF_NOEXIST: u64 = 1;
        let Ok(mut live) = HashMap::<&mut MapData, SockKey, SocketRecord>::try_from(&mut self.live)
        else {
            return Insert::Full;
        };
        let key = SockKey { tgid, fd };
        if live.insert(key, rec, BPF_NOEXIST).is_ok() {
            Insert::Inserted
        } else if live.get(&key, 0).is_ok() {
            Insert::Exists
        } else {
            Insert::Full
        }
    }

    /// Deletes LIVE[(tgid, fd)] unless it was created after `not_after_ns`. True when deleted.
    pub fn forget(&mut self, tgid: u32, fd: u32, not_after_ns: u64) -> bool {
        let Ok(mut live) = HashMap::<&mut MapData, SockKey, SocketRecord>::try_from(&mut self.live)
        else {
            return false;
        };
        let key = SockKey { tgid, fd };
        match live.get(&key, 0) {
            Ok(rec) if rec.created_ns <= not_after_ns => live.remove(&key).is_ok(),
            _ => false,
        }
    }

    /// The latest walked stack of a (process, leaf caller), for `--stack-sample`.
    pub fn last_stack(&self, tgid: u32, caller: u64) -> Option<i32> {
        let key = StackKey {
            hash: caller,
            tgid,
            _pad: 0,
        };
        self.last_stack.get(&key, 0).ok()
    }

    /// Kernel-side loss counters, summed over CPUs, indexed by [`LossCause`].
    pub fn losses(&self) -> [u64; LOSS_CAUSES as usize] {
        let mut out = [0u64; LOSS_CAUSES as usize];
        for cause in LossCause::ALL {
            if let Ok(values) = self.losses.get(&(cause as u32), 0) {
                out[cause as usize] = values.iter().sum();
            }
        }
        out
    }

    /// Makes the kernel forget a (process, stack hash) -> id entry: its next socket at that
    /// stack announces it again.
    pub fn forget_stack(&mut self, tgid: u32, hash: u64) {
        let _ = self.stack_cache.remove(&StackKey {
            hash,
            tgid,
            _pad: 0,
        });
    }

    /// The BPF run time (ns) and runs of every loaded program so far: counted by the kernel only
    /// while run-time statistics are on (see `kernel::bpf_stats`).
    pub fn run_time(&self) -> (u64, u64) {
        let mut out = (0, 0);
        for (_, p) in self.bpf.programs() {
            if let Ok(i) = p.info() {
                out.0 += i.run_time().as_nanos() as u64;
                out.1 += i.run_count();
            }
        }
        out
    }

    /// Raw instruction pointers of a captured user stack.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        if sockleak_common::stack::is_copy_id(id) || sockleak_common::unwind::is_walk_id(id) {
            return None; // unwound in userspace, or walked with the tables: not in the stack map
        }
        let id = u32::try_from(id).ok()?;
        let st = self.stacks.get(&id, 0).ok()?;
        Some(st.frames().iter().map(|f| f.ip).collect())
    }

    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }
}

/// Sets a pid's bit in a kernel filter. Only before attach: afterwards the kernel sets bits
/// itself and a read-modify-write from here could lose one.
fn set_bit(bits: &mut Array<MapData, [u64; FILTER_WORDS]>, tgid: u32) -> Result<()> {
    let (entry, b) = (tgid / FILTER_BITS, tgid % FILTER_BITS);
    // A pid beyond the filter is looked up in TARGETS directly.
    let Ok(mut words) = bits.get(&entry, 0) else {
        return Ok(());
    };
    words[(b / 64) as usize] |= 1 << (b % 64);
    bits.set(entry, words, 0)
        .context("writing a target filter")?;
    Ok(())
}

/// Runs the object's clock probe once and gives the kernel its jiffies conversion (see
/// `clock`). A kernel where that fails keeps the precise clock.
fn calibrate(bpf: &mut Ebpf) -> Result<(Clock, ClockMaps)> {
    let sample: Array<MapData, ClockSample> = Array::try_from(take(bpf, map::CLOCK_SAMPLE)?)?;
    let mut out: Array<MapData, Clock> = Array::try_from(take(bpf, global::CLOCK)?)?;
    let prog: &mut RawTracePoint = bpf
        .program_mut("clock_probe")
        .context("program clock_probe missing from the eBPF object")?
        .try_into()?;
    let clock = match prog
        .load()
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(crate::kernel::clock::test_run(prog.fd()?)?))
        .and_then(|()| Ok(sample.get(&0, 0)?))
    {
        Ok(s) => crate::kernel::clock::clock_from(s),
        Err(e) => {
            log::debug!(
                "clock calibration failed ({e:#}): sockets are stamped with the precise clock"
            );
            Clock::default()
        }
    };
    out.set(0, clock, 0)
        .context("writing the kernel's clock conversion")?;
    Ok((clock, (sample, out)))
}

/// The clock maps, held so their fds stay open until the programs are loaded.
type ClockMaps = (Array<MapData, ClockSample>, Array<MapData, Clock>);

/// The host's largest pid + 1 (kernel.pid_max); the maximum possible when unreadable.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 22)
}

fn take(bpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    bpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    #[test]
    fn format_offsets() {
        let f = "name: sched_process_exit\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                 \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                 \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
        assert_eq!(parse_field_offset(f, "group_dead"), Some(32));
        assert_eq!(parse_field_offset(f, "comm"), Some(8));
        assert_eq!(parse_field_offset(f, "pid"), None);
        assert_eq!(parse_field_offset("", "x"), None);
    }
}
