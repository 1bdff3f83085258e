//! User stacks: fetched from the kernel's stack map once per id and symbolized once per
//! (address space, stack) with blazesym (ELF symbols, DWARF lines, PIE, Go).

use std::collections::BTreeSet;

use blazesym::{
    Pid,
    symbolize::{
        Input, Symbolized, Symbolizer,
        source::{Process, Source},
    },
};
use hashbrown::HashMap;
use serde::Serialize;
use sockleak_common::runtime::is_runtime_id;

use crate::{
    host::procfs,
    kernel::bpf::Tracer,
    symbols::gopclntab::GoTable,
    symbols::javamap::JavaPerfMaps,
    symbols::perfmap::PerfMaps,
    symbols::runtime_frames::{self, JvmRanges, Named},
};

/// One symbolized frame. Unknown frames keep their address and, when known, their module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frame {
    #[serde(serialize_with = "hex")]
    pub addr: u64,
    pub symbol: Option<String>,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Frames named from a runtime's own structures (`runtime_frames`): "python" (`addr` is
    /// the code object) or "java" (an interpreted method; `addr` is its `Method*`). Absent for
    /// native frames and JIT frames named by perf maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
    /// Why a runtime frame has no name, or where a stack was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// A call site as the kernel captured it: a user stack plus the caller of a frameless leaf
/// (see `SocketRecord::caller`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub stack_id: i32,
    pub caller: u64,
}

impl Site {
    pub fn of(rec: &sockleak_common::socket::SocketRecord) -> Site {
        Site {
            stack_id: rec.stack_id,
            caller: rec.caller,
        }
    }
}

pub struct Stacks {
    symbolizer: Symbolizer,
    /// Stacks whose frames userspace holds (unwound copies, and stacks the kernel walked with
    /// its unwind tables): an id -> the first id with the same frames in its process (whose
    /// frames `raw` holds), so a call site is one stack however many ids name it.
    aliases: HashMap<i32, i32>,
    /// Walked stacks: id -> (process, the kernel's STACK_CACHE hash), to forget them.
    walked: HashMap<i32, (u32, u64)>,
    /// (process, frames) -> that first copy id.
    interned: HashMap<(u32, Vec<u64>), i32>,
    /// Function tables of stripped Go binaries, by (device, inode); None: not one.
    go_tables: HashMap<(u64, u64), Option<GoTable>>,
    raw: HashMap<i32, Vec<u64>>,
    /// Keyed by the process whose address space the stack belongs to.
    resolved: HashMap<(u32, Site), Vec<Frame>>,
    /// `--java-perfmap`: JVMs asked for a perf map when their frames go unnamed.
    java: JavaPerfMaps,
    perf: PerfMaps,
    /// RUNTIME FRAMES: stacks with interpreted frames, by their id (see `runtime_frames`).
    runtime: HashMap<i32, RuntimeStack>,
    /// JVMs by pid: their stacks are cut at JIT code without frame pointers.
    jvms: HashMap<u32, JvmRanges>,
}

/// A stack with runtime frames: its native stack and its named runtime frames.
#[derive(Debug, Clone)]
pub struct RuntimeStack {
    pub native: Site,
    /// `runtime::kind::*`, `runtime::stack_flag::*`.
    pub kind: u8,
    pub flags: u8,
    pub frames: Vec<Named>,
}

/// Frame-pointer unwinding skips the caller of a frameless syscall wrapper (glibc's
/// `socket`, Go's `Syscall6`): put the captured return address back as frame 1 when it is
/// code and not already there.
pub fn splice_caller(ips: &[u64], caller: u64, is_code: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut out = ips.to_vec();
    if caller != 0 && !ips.is_empty() && ips.get(1) != Some(&caller) && is_code(caller) {
        out.insert(1, caller);
    }
    out
}

impl Default for Stacks {
    fn default() -> Self {
        Stacks::new(false)
    }
}

impl Stacks {
    pub fn new(java_perfmap: bool) -> Self {
        Stacks {
            java: JavaPerfMaps::new(java_perfmap),
            perf: PerfMaps::default(),
            symbolizer: Symbolizer::new(),
            aliases: HashMap::new(),
            walked: HashMap::new(),
            interned: HashMap::new(),
            go_tables: HashMap::new(),
            raw: HashMap::new(),
            resolved: HashMap::new(),
            runtime: HashMap::new(),
            jvms: HashMap::new(),
        }
    }
}

/// Outermost frames of a complete stack: a thread's or a program's start.
const STACK_BOTTOMS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "thread_start",
    "runtime.goexit",
    "runtime.goexit.abi0",
    "runtime.rt0_go",
    "runtime.rt0_go.abi0",
    "runtime.mstart",
    "runtime.mstart.abi0",
];

pub fn is_bottom(f: &Frame) -> bool {
    f.symbol
        .as_deref()
        .is_some_and(|s| STACK_BOTTOMS.contains(&s) || s.contains("clone"))
}

/// Whether a frame-pointer walk stopped early (frame pointers missing on the way): no frame
/// is a start of a thread or program, and the walk was not cut by the depth limit.
pub fn truncated(frames: &[Frame]) -> bool {
    if frames.len() >= 127 || frames.is_empty() {
        return false;
    }
    !frames.iter().any(is_bottom)
}

/// Drops what a frame-pointer walk found past a thread's or program's start: libc's start code
/// has no frame pointer, so the walk goes on through whatever its frame register held.
pub fn cut_after_bottom(frames: &mut Vec<Frame>) {
    if let Some(i) = frames.iter().position(is_bottom) {
        frames.truncate(i + 1);
    }
}

impl Stacks {
    /// Records the frames unwound from a stack copy (see `unwind`).
    pub fn add_copy(&mut self, pid: u32, id: i32, ips: Vec<u64>) {
        let canonical = *self.interned.entry((pid, ips.clone())).or_insert(id);
        self.aliases.insert(id, canonical);
        self.raw.entry(canonical).or_insert(ips);
    }

    /// Records a stack the kernel walked with its unwind tables (its `WalkedStack`); `hash`
    /// is the kernel's key for it in STACK_CACHE.
    pub fn add_walked(&mut self, pid: u32, id: i32, hash: u64, ips: Vec<u64>) {
        self.add_copy(pid, id, ips);
        self.walked.insert(id, (pid, hash));
    }

    /// Forgets walked stacks of processes no longer alive that nothing refers to any more
    /// (`used`: ids still referred to); returns their (process, hash) for the kernel to
    /// forget too. A live process's walked stacks stay: the kernel may hand out their ids
    /// again.
    pub fn prune_walked(
        &mut self,
        used: &hashbrown::HashSet<i32>,
        alive: impl Fn(u32) -> bool,
    ) -> Vec<(u32, u64)> {
        let gone: Vec<i32> = self
            .walked
            .iter()
            .filter(|(id, (pid, _))| !used.contains(*id) && !alive(*pid))
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in gone {
            if let Some(w) = self.walked.remove(&id) {
                out.push(w);
            }
            self.aliases.remove(&id);
        }
        let kept: hashbrown::HashSet<i32> = self.aliases.values().copied().collect();
        self.interned.retain(|_, c| kept.contains(c));
        self.raw
            .retain(|id, _| !sockleak_common::unwind::is_walk_id(*id) || kept.contains(id));
        out
    }

    /// Walked stacks held.
    pub fn walked(&self) -> usize {
        self.walked.len()
    }

    /// Whether a copy id has been unwound (false for stack-map ids).
    pub fn has_copy(&self, id: i32) -> bool {
        self.aliases.contains_key(&id)
    }

    /// The id that names a stack: copies of the same frames share one.
    pub fn canonical(&self, id: i32) -> i32 {
        self.aliases.get(&id).copied().unwrap_or(id)
    }

    /// A socket's call site, with copies of the same stack as one.
    pub fn site(&self, rec: &sockleak_common::socket::SocketRecord) -> Site {
        Site {
            stack_id: self.canonical(rec.stack_id),
            caller: rec.caller,
        }
    }

    /// Forgets copies and runtime stacks no socket or failure refers to any more (`used`:
    /// canonical or not). Walked stacks are left to `prune_walked`.
    pub fn prune_copies(&mut self, used: &hashbrown::HashSet<i32>) {
        self.runtime.retain(|id, _| used.contains(id));
        // The native stacks of the runtime stacks kept stay too.
        let mut used = used.clone();
        used.extend(self.runtime.values().map(|r| r.native.stack_id));
        let used = &used;
        self.aliases
            .retain(|id, _| used.contains(id) || sockleak_common::unwind::is_walk_id(*id));
        let kept: hashbrown::HashSet<i32> = self.aliases.values().copied().collect();
        self.interned.retain(|_, c| kept.contains(c));
        self.raw
            .retain(|id, _| !sockleak_common::stack::is_copy_id(*id) || kept.contains(id));
        self.resolved.retain(|(_, s), _| {
            let id = s.stack_id;
            (!sockleak_common::stack::is_copy_id(id) || kept.contains(&id))
                && (!is_runtime_id(id) || self.runtime.contains_key(&id))
        });
    }

    /// Unwound copies and runtime stacks held (for pruning decisions).
    pub fn copies(&self) -> usize {
        self.aliases.len() - self.walked.len().min(self.aliases.len()) + self.runtime.len()
    }

    /// RUNTIME FRAMES: a new stack with named runtime frames (see `runtime_frames`).
    pub fn add_runtime(&mut self, id: i32, stack: RuntimeStack) {
        self.runtime.insert(id, stack);
    }

    pub fn has_runtime(&self, id: i32) -> bool {
        self.runtime.contains_key(&id)
    }

    /// A JVM's code regions: its stacks are cut where JIT code hides the frame pointer.
    pub fn set_jvm(&mut self, pid: u32, r: JvmRanges) {
        self.jvms.insert(pid, r);
    }

    pub fn is_resolved(&self, pid: u32, site: Site) -> bool {
        site.stack_id < 0 || self.resolved.contains_key(&(pid, site))
    }

    /// Symbolizes the given stacks of process `pid` that are not symbolized yet, in one batch.
    /// Call while the process is alive: its mappings are read from /proc.
    pub fn resolve(&mut self, tracer: &Tracer, pid: u32, sites: impl IntoIterator<Item = Site>) {
        let mut todo: BTreeSet<Site> = sites
            .into_iter()
            .filter(|s| !self.is_resolved(pid, *s))
            .collect();
        // RUNTIME FRAMES: a runtime stack is its native stack, resolved, with its frames.
        let rt: Vec<Site> = todo
            .iter()
            .filter(|s| is_runtime_id(s.stack_id))
            .copied()
            .collect();
        todo.retain(|s| !is_runtime_id(s.stack_id));
        todo.extend(
            rt.iter()
                .filter_map(|s| self.runtime.get(&s.stack_id))
                .map(|r| r.native)
                .filter(|n| !self.is_resolved(pid, *n)),
        );
        self.resolve_native(tracer, pid, todo);
        for site in rt {
            if let Some(frames) = self.runtime_frames(pid, site) {
                self.resolved.insert((pid, site), frames);
            }
        }
    }

    /// A runtime stack's frames: its native stack (resolved or bare) merged with its runtime
    /// frames. None for an id not received.
    fn runtime_frames(&self, pid: u32, site: Site) -> Option<Vec<Frame>> {
        let r = self.runtime.get(&site.stack_id)?;
        let native = self.frames(pid, r.native);
        Some(runtime_frames::merge(
            r.kind,
            &native,
            r.frames.clone(),
            r.flags,
        ))
    }

    fn resolve_native(&mut self, tracer: &Tracer, pid: u32, todo: BTreeSet<Site>) {
        if todo.is_empty() {
            return;
        }
        for s in &todo {
            self.fetch_raw(tracer, s.stack_id);
        }
        // A copy not unwound (yet) has no frames to name.
        let todo: BTreeSet<Site> = todo
            .into_iter()
            .filter(|s| self.raw.contains_key(&s.stack_id))
            .collect();
        let maps = procfs::maps(pid);
        let stacks: Vec<(Site, Vec<u64>)> = todo
            .into_iter()
            .map(|s| {
                let ips = splice_caller(&self.raw[&s.stack_id], s.caller, |a| {
                    procfs::is_code(&maps, a)
                });
                (s, ips)
            })
            .collect();
        // Return addresses point after the call; symbolize the call itself (ip - 1), except
        // for the innermost frame, which is where the syscall was made.
        let addrs: Vec<u64> = stacks
            .iter()
            .flat_map(|(_, ips)| {
                ips.iter()
                    .enumerate()
                    .map(|(i, ip)| if i == 0 { *ip } else { ip.saturating_sub(1) })
            })
            .collect();
        let mut named = self.symbolize(pid, &maps, &stacks, &addrs);
        // Unnamed JIT code in a JVM: with --java-perfmap, ask it for a perf map and name again
        // (the JIT may move code later, so the map is read now, when the stack is new).
        let unnamed_jit = named
            .iter()
            .flatten()
            .any(|f| f.symbol.is_none() && f.module.is_none());
        if unnamed_jit
            && crate::symbols::runtimes::detect("", maps.iter().map(|m| m.path.as_str()))
                == crate::symbols::runtimes::Runtime::Jvm
            && self.java.refresh(pid)
        {
            named = self.symbolize(pid, &maps, &stacks, &addrs);
        }
        for ((site, _), mut frames) in stacks.into_iter().zip(named) {
            cut_after_bottom(&mut frames);
            if let Some(r) = self.jvms.get(&pid) {
                runtime_frames::cut_at_jit(&mut frames, r);
            }
            self.resolved.insert((pid, site), frames);
        }
    }

    /// Names the frames of `stacks` (whose addresses, as looked up, are `addrs`).
    fn symbolize(
        &mut self,
        pid: u32,
        maps: &[procfs::Mapping],
        stacks: &[(Site, Vec<u64>)],
        addrs: &[u64],
    ) -> Vec<Vec<Frame>> {
        let mut proc = Process::new(Pid::from(pid));
        // Perf maps are read by `perfmap` (see there).
        proc.perf_map = false;
        let src = Source::Process(proc);
        let syms = self
            .symbolizer
            .symbolize(&src, Input::AbsAddr(addrs))
            .unwrap_or_else(|e| {
                log::debug!("pid {pid}: symbolizing {} addresses: {e:#}", addrs.len());
                Vec::new()
            });
        let mut k = 0;
        let frames: Vec<Vec<Frame>> = stacks
            .iter()
            .map(|(_, ips)| {
                ips.iter()
                    .map(|ip| {
                        let sym = syms.get(k);
                        let addr = addrs[k];
                        k += 1;
                        let mut f = to_frame(*ip, sym, maps);
                        if f.symbol.is_none()
                            && let Some((name, line)) =
                                go_name(&mut self.go_tables, pid, maps, addr)
                        {
                            f.symbol = Some(name);
                            if let Some((file, line)) = line {
                                f.file = Some(file);
                                f.line = Some(line);
                            }
                        }
                        f
                    })
                    .collect()
            })
            .collect();
        let anonymous = |f: &Frame| f.symbol.is_none() && f.module.is_none();
        if !frames.iter().flatten().any(anonymous) {
            return frames;
        }
        let Some(jit) = self.perf.current(pid) else {
            return frames;
        };
        frames
            .into_iter()
            .map(|fs| {
                fs.into_iter()
                    .enumerate()
                    .map(|(i, mut f)| {
                        if anonymous(&f) {
                            let at = if i == 0 {
                                f.addr
                            } else {
                                f.addr.saturating_sub(1)
                            };
                            f.symbol = jit.name(at).map(str::to_string);
                        }
                        f
                    })
                    .collect()
            })
            .collect()
    }

    /// One address of a live process, named: "function+0xoff in /path", else the address and
    /// its module.
    pub fn name_addr(&mut self, pid: u32, addr: u64) -> String {
        let maps = procfs::maps(pid);
        let mut proc = Process::new(Pid::from(pid));
        proc.perf_map = false;
        let src = Source::Process(proc);
        let sym = self
            .symbolizer
            .symbolize_single(&src, Input::AbsAddr(addr))
            .ok();
        let module = procfs::module_of(&maps, addr).map(str::to_string);
        match sym {
            Some(Symbolized::Sym(s)) => {
                let m = s
                    .module
                    .as_ref()
                    .map(|m| m.to_string_lossy().into_owned())
                    .or(module)
                    .unwrap_or_else(|| "?".into());
                format!("{}+{:#x} in {m}", s.name, s.offset)
            }
            _ => match module {
                Some(m) => format!("{addr:#x} in {m}"),
                None => format!("{addr:#x} (JIT or anonymous code)"),
            },
        }
    }

    /// Frames as if symbolized, for tests of what is built on them.
    #[cfg(test)]
    pub fn insert_resolved(&mut self, pid: u32, site: Site, frames: Vec<Frame>) {
        self.resolved.insert((pid, site), frames);
    }

    /// Forgets a process's runtime state (its perf map requests, its JVM regions).
    pub fn forget_runtime(&mut self, pid: u32) {
        self.java.forget(pid);
        self.perf.forget(pid);
        self.jvms.remove(&pid);
    }

    /// Frames of a stack: symbolized if resolved, else bare addresses.
    pub fn frames(&self, pid: u32, site: Site) -> Vec<Frame> {
        if site.stack_id < 0 {
            return Vec::new();
        }
        if let Some(f) = self.resolved.get(&(pid, site)) {
            return f.clone();
        }
        if is_runtime_id(site.stack_id) {
            return self.runtime_frames(pid, site).unwrap_or_default();
        }
        self.raw
            .get(&site.stack_id)
            .map(|ips| ips.iter().map(|ip| to_frame(*ip, None, &[])).collect())
            .unwrap_or_default()
    }

    /// Drops what was symbolized for a process no longer reported.
    pub fn forget_pid(&mut self, pid: u32) {
        self.resolved.retain(|(p, _), _| *p != pid);
    }

    /// Bare addresses of a stack fetched from the kernel, for processes already gone.
    pub fn fetch_raw(&mut self, tracer: &Tracer, id: i32) {
        let id = self.runtime.get(&id).map_or(id, |r| r.native.stack_id);
        // Copies and walked stacks are held here already, never in the kernel's stack map.
        if id >= 0
            && !sockleak_common::stack::is_copy_id(id)
            && !sockleak_common::unwind::is_walk_id(id)
            && !is_runtime_id(id)
            && !self.raw.contains_key(&id)
        {
            self.raw.insert(id, tracer.stack(id).unwrap_or_default());
        }
    }
}

/// Names a frame of a stripped Go binary from its `.gopclntab` (blazesym reads ELF symbols and
/// DWARF, which `-ldflags=-s -w` removes): its function, and its source file and line as Go's
/// own tracebacks give them.
fn go_name(
    tables: &mut HashMap<(u64, u64), Option<GoTable>>,
    pid: u32,
    maps: &[procfs::Mapping],
    addr: u64,
) -> Option<(String, Option<(String, u32)>)> {
    use std::os::unix::fs::MetadataExt;
    let m = maps
        .iter()
        .find(|m| m.exec && m.start <= addr && addr < m.end)?;
    // Through map_files: the binary as the process sees it, in any mount namespace.
    let file = procfs::proc_path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end));
    let md = std::fs::metadata(&file).ok()?;
    let table = tables
        .entry((md.dev(), md.ino()))
        .or_insert_with(|| GoTable::read(&file));
    let table = table.as_ref()?;
    let off = addr - m.start + m.offset;
    let (_, name) = table.at_file_offset(off)?;
    let line = table
        .line_at_file_offset(off)
        .map(|(f, l)| (f.to_string(), l));
    Some((name.to_string(), line))
}

fn to_frame(ip: u64, sym: Option<&Symbolized<'_>>, maps: &[procfs::Mapping]) -> Frame {
    let module = procfs::module_of(maps, ip).map(str::to_string);
    match sym {
        Some(Symbolized::Sym(s)) => {
            let (file, line) = match &s.code_info {
                Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
                None => (None, None),
            };
            Frame {
                addr: ip,
                symbol: Some(s.name.to_string()),
                module: s
                    .module
                    .as_ref()
                    .map(|m| m.to_string_lossy().into_owned())
                    .or(module),
                file,
                line,
                runtime: None,
                note: None,
            }
        }
        _ => Frame {
            addr: ip,
            symbol: None,
            module,
            file: None,
            line: None,
            runtime: None,
            note: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sym: &str, module: &str, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            addr: 1,
            symbol: Some(sym.into()),
            module: Some(module.into()),
            file: file.map(Into::into),
            line,
            runtime: None,
            note: None,
        }
    }

    #[test]
    fn truncated_stacks_are_those_that_stop_short() {
        let whole = vec![
            frame("__GI_socket", "/lib/libc.so.6", None, None),
            frame("main", "/tmp/app", None, None),
            frame("__libc_start_call_main", "/lib/libc.so.6", None, None),
            frame("_start", "/tmp/app", None, None),
        ];
        assert!(!truncated(&whole));
        assert!(truncated(&whole[..2]), "no frame pointers past main");
        let thread = vec![
            frame("leak", "/tmp/app", None, None),
            frame("start_thread", "/lib/libc.so.6", None, None),
            frame("__GI___clone3", "/lib/libc.so.6", None, None),
        ];
        assert!(!truncated(&thread));
        assert!(!truncated(&[]), "no stack is not a truncated one");
        // A static binary: the walk goes past the start into junk.
        let mut junk = whole[..3].to_vec();
        junk.push(frame("register_tm_clones", "/tmp/app", None, None));
        junk.push(Frame {
            addr: 0xbe55_2274_c085_4800,
            symbol: None,
            module: None,
            file: None,
            line: None,
            runtime: None,
            note: None,
        });
        assert!(!truncated(&junk));
        cut_after_bottom(&mut junk);
        assert_eq!(junk, whole[..3].to_vec());
    }

    #[test]
    fn copies_of_one_stack_are_one_site() {
        let mut s = Stacks::default();
        let base = sockleak_common::stack::COPY_ID_BASE;
        s.add_copy(7, base + 1, vec![1, 2, 3]);
        s.add_copy(7, base + 2, vec![1, 2, 3]);
        s.add_copy(7, base + 3, vec![1, 2, 4]);
        s.add_copy(8, base + 4, vec![1, 2, 3]);
        assert_eq!(s.canonical(base + 2), base + 1);
        assert_eq!(s.canonical(base + 3), base + 3);
        assert_eq!(s.canonical(base + 4), base + 4, "another address space");
        assert_eq!(s.canonical(5), 5, "stack-map ids are themselves");
        // Only base+2 still referenced: its canonical frames stay.
        s.prune_copies(&[base + 2].into_iter().collect());
        assert_eq!(s.copies(), 1);
        assert_eq!(s.canonical(base + 2), base + 1);
        assert_eq!(
            s.frames(
                7,
                Site {
                    stack_id: base + 1,
                    caller: 0
                }
            )
            .len(),
            3
        );
        assert!(!s.has_copy(base + 3));
    }

    #[test]
    fn runtime_stacks_merge_with_their_native_stack_and_are_pruned_with_it() {
        use sockleak_common::runtime::{RT_ID_BASE, kind};
        let mut s = Stacks::default();
        let copy = sockleak_common::stack::COPY_ID_BASE + 1;
        s.add_copy(7, copy, vec![0x10, 0x20]);
        let py = |name: &str, entry: bool| Named {
            frame: Frame {
                addr: 0x99,
                symbol: Some(name.into()),
                module: None,
                file: Some("/app.py".into()),
                line: Some(4),
                runtime: Some("python"),
                note: None,
            },
            entry,
            at: 0,
        };
        let rt = RT_ID_BASE + 3;
        s.add_runtime(
            rt,
            RuntimeStack {
                native: Site {
                    stack_id: copy,
                    caller: 0,
                },
                kind: kind::PYTHON,
                flags: 0,
                frames: vec![py("leak", false), py("main", true)],
            },
        );
        let site = Site {
            stack_id: rt,
            caller: 0,
        };
        // Not resolved (the process is gone): bare native frames, then its Python frames.
        let f = s.frames(7, site);
        let names: Vec<_> = f.iter().map(|f| f.symbol.as_deref()).collect();
        assert_eq!(names, [None, None, Some("leak"), Some("main")]);
        // A reference to the runtime stack keeps its native copy.
        s.prune_copies(&[rt].into_iter().collect());
        assert!(s.has_runtime(rt) && s.has_copy(copy));
        s.prune_copies(&hashbrown::HashSet::new());
        assert!(!s.has_runtime(rt) && !s.has_copy(copy));
        assert!(s.frames(7, site).is_empty());
    }

    #[test]
    fn caller_is_spliced_only_when_missing_and_code() {
        let code = |a: u64| (0x1000..0x2000).contains(&a);
        assert_eq!(
            splice_caller(&[1, 0x1500], 0x1200, code),
            vec![1, 0x1200, 0x1500]
        );
        // Already the second frame (the leaf had a frame of its own).
        assert_eq!(splice_caller(&[1, 0x1200], 0x1200, code), vec![1, 0x1200]);
        // Not code: a stack word, not a return address.
        assert_eq!(splice_caller(&[1, 0x1500], 0x9000, code), vec![1, 0x1500]);
        assert_eq!(splice_caller(&[1], 0, code), vec![1]);
        assert_eq!(splice_caller(&[], 0x1200, code), Vec::<u64>::new());
    }
}
