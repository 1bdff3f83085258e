//! Loading and attaching the kernel programs, and typed access to their maps.
//!
//! Everything lives in [`Tracer`]: dropping it detaches every program and frees every map, so
//! an error at any step leaves nothing attached.

use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::TracePoint,
};
use log::warn;
use sockleak_common::{
    counters::{LOSS_CAUSES, LossCause},
    kernel::Offsets,
    socket::{DestKey, DestStats, SockKey, SocketRecord, StackKey},
    target::{CgroupTarget, Control, FILTER_WORDS, Target, UNCHANGED, global, map},
};

use crate::{batch, error::UserError};

/// The kernel object, embedded by build.rs (empty when built without bpf-linker).
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockleak.bpf.o"));

/// The embedded kernel object (empty in a stub build).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// One tracepoint program and what is lost without it.
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

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Whether the running kernel has a tracepoint (checked before loading anything).
pub fn tracepoint_exists(tracefs: &Path, p: &Probe) -> bool {
    tracefs
        .join("events")
        .join(p.category)
        .join(p.name)
        .exists()
}

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
    /// Traced cgroup subtrees (at most MAX_CGROUPS).
    pub cgroups: Vec<CgroupTarget>,
    /// Kernel struct offsets from BTF (see `kernel_offsets`).
    pub offsets: Offsets,
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
    live: Map,
    dests: Map,
    last_stack: HashMap<MapData, StackKey, i32>,
    pub stacks: StackTraceMap<MapData>,
    pub losses: PerCpuArray<MapData, u64>,
    /// Held so its fd stays open: programs are loaded (and bound to maps) at attach.
    _cgroups: Array<MapData, CgroupTarget>,
    pub events: Option<RingBuf<MapData>>,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    tracefs: std::path::PathBuf,
    /// Optional probes that could not be attached, with what is lost.
    pub degraded: Vec<String>,
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
            .override_global(global::OFFSETS, &opts.offsets, true)
            .map_max_entries(map::LIVE, opts.max_sockets)
            .map_max_entries(map::STACKS, opts.stack_entries)
            .map_max_entries(map::EVENTS, opts.ring_buffer_bytes)
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
        let mut bits: Array<MapData, [u64; FILTER_WORDS]> =
            Array::try_from(take(&mut bpf, map::TRACED_BITS)?)?;
        if opts.trace_all {
            // Everything is traced: the filter would only cost a lookup after the bit test.
            bits.set(0, [u64::MAX; FILTER_WORDS], 0)
                .context("filling the kernel's target filter")?;
        }
        let live = take(&mut bpf, map::LIVE)?;
        let dests = take(&mut bpf, map::DESTS)?;
        let last_stack = HashMap::try_from(take(&mut bpf, "LAST_STACK")?)?;
        let stacks = StackTraceMap::try_from(take(&mut bpf, map::STACKS)?)?;
        let losses = PerCpuArray::try_from(take(&mut bpf, map::LOSSES)?)?;
        let mut cgroups: Array<MapData, CgroupTarget> =
            Array::try_from(take(&mut bpf, map::CGROUPS)?)?;
        for (i, c) in opts.cgroups.iter().enumerate() {
            cgroups
                .set(i as u32, c, 0)
                .context("filling the kernel's cgroup target array")?;
        }
        let events = RingBuf::try_from(take(&mut bpf, map::EVENTS)?)?;
        Ok(Tracer {
            bpf,
            targets,
            control,
            bits,
            live,
            dests,
            last_stack,
            stacks,
            losses,
            _cgroups: cgroups,
            events: Some(events),
            logger,
            tracefs: tracefs.to_path_buf(),
            degraded: Vec::new(),
        })
    }

    /// Attaches every probe. A missing required tracepoint is an error (and `self` dropped by
    /// the caller detaches what was attached); a missing optional one is a warning.
    pub fn attach(&mut self) -> Result<()> {
        let tracefs = self.tracefs.clone();
        for p in PROBES {
            if !tracepoint_exists(&tracefs, p) {
                match p.optional {
                    None => {
                        return Err(UserError::MissingTracepoint(format!(
                            "{}:{}",
                            p.category, p.name
                        ))
                        .into());
                    }
                    Some(lost) => {
                        self.degraded.push(format!(
                            "tracepoint {}:{} is missing on this kernel: {lost} are not tracked",
                            p.category, p.name
                        ));
                        continue;
                    }
                }
            }
            let prog: &mut TracePoint = self
                .bpf
                .program_mut(p.name)
                .with_context(|| format!("program {} missing from the eBPF object", p.name))?
                .try_into()?;
            let res = prog
                .load()
                .and_then(|()| prog.attach(p.category, p.name).map(|_| ()));
            match (res, p.optional) {
                (Ok(()), _) => {}
                (Err(e), None) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("attaching {}:{}", p.category, p.name)));
                }
                (Err(e), Some(lost)) => self.degraded.push(format!(
                    "could not attach {}:{} ({e}): {lost} are not tracked",
                    p.category, p.name
                )),
            }
        }
        Ok(())
    }

    /// Makes `tgid` a target (before attach, or for a process the kernel cannot have created an
    /// entry for). An existing entry is left alone: the kernel owns it.
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
        self.mark(tgid)
    }

    /// Sets `tgid`'s bit in the kernel's target filter. Only before attach: afterwards the
    /// kernel sets bits itself and a read-modify-write from here could lose one.
    fn mark(&mut self, tgid: u32) -> Result<()> {
        let b = tgid % sockleak_common::target::FILTER_BITS;
        let mut words = self.bits.get(&0, 0).context("reading the target filter")?;
        words[(b / 64) as usize] |= 1 << (b % 64);
        self.bits
            .set(0, words, 0)
            .context("writing the target filter")?;
        Ok(())
    }

    /// Asks the kernel to change a target's entry on its next event.
    pub fn control(&mut self, tgid: u32, state: Option<u8>, stack_mode: Option<u8>) {
        let c = Control {
            state: state.unwrap_or(UNCHANGED),
            stack_mode: stack_mode.unwrap_or(UNCHANGED),
            _pad: [0; 6],
        };
        if let Err(e) = self.control.insert(tgid, c, 0) {
            warn!("could not update pid {tgid}'s kernel entry: {e}");
        }
    }

    pub fn remove_target(&mut self, tgid: u32) {
        // Absent already (the kernel removes exited processes) is fine.
        if let Ok(mut t) = HashMap::<&mut MapData, u32, Target>::try_from(&mut self.targets) {
            let _ = t.remove(&tgid);
        }
        let _ = self.control.remove(&tgid);
    }

    /// Every target's kernel entry.
    pub fn targets(&self) -> Vec<(u32, Target)> {
        map_fd(&self.targets)
            .and_then(|fd| batch::dump::<u32, Target>(&fd).ok())
            .unwrap_or_default()
    }

    /// Every live socket the kernel holds.
    pub fn live(&self) -> Vec<(SockKey, SocketRecord)> {
        match map_fd(&self.live).map(|fd| batch::dump::<SockKey, SocketRecord>(&fd)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                warn!("reading the kernel's live-socket map: {e}");
                Vec::new()
            }
            None => Vec::new(),
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

    /// Raw instruction pointers of a captured user stack.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
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
