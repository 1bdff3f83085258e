//! Kernel unwind tables for processes without frame pointers (the kernel half is
//! `sockleak-ebpf/src/unwind.rs`): each executable file's CFI compiled into rows (`compile`),
//! placed once in the kernel's row array (`store`) however many processes map it, and each
//! process's executable mappings pointing at them (`layout`).
//!
//! Lifecycle. A process switched to kernel unwinding is registered (its mappings listed, each
//! file keyed by its GNU build id, so the same library in many containers is one table) and
//! gets rows for its main executable, the C library and the files of the stack that showed it
//! lacks frame pointers. Other files are built only when a walk stops at one of them
//! (`stopped`): files never on a socket-making stack are never built. Building spends a CPU
//! budget (about 1% of a core, with a start-up allowance); what waits meanwhile falls back to
//! stack copies. When the array (`--unwind-table-mib`) is full, files no registered process
//! maps are evicted first, least recently used first; then files fewest processes map, whose
//! processes fall back to copies for them until they are rebuilt.

pub mod compile;
pub mod layout;
pub mod store;

use std::{collections::VecDeque, fs::File, os::unix::fs::MetadataExt, time::Instant};

use hashbrown::{HashMap, HashSet};
use object::ReadCache;
use sockleak_common::unwind::counter;

use self::{
    compile::{CompileError, ElfInfo},
    layout::Placed,
    store::Store,
};
use crate::{host::procfs, kernel::unwind_maps::UnwindMaps};

/// Build time allowed per second of wall time, in ns (1% of a core).
const BUDGET_NS_PER_S: u64 = 10_000_000;
/// Build time that may be spent at once (start-up, a burst of new processes).
const BUDGET_MAX_NS: i64 = 1_000_000_000;
/// A file that did not fit is tried again after this long.
const NO_ROOM_RETRY_NS: u64 = 30_000_000_000;
/// A process's mappings are re-read at most this often when walks stop outside them.
const REREAD_MAPS_NS: u64 = 1_000_000_000;
/// Rows above which a compile's freed heap is handed back at once (about 4 MiB of heap).
#[cfg(target_env = "gnu")]
const BIG_TABLE_ROWS: usize = 100_000;

/// What names a file: its build id, else its inode and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKey {
    BuildId(Vec<u8>),
    Inode {
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    Unbuilt,
    Queued,
    Placed(Placed),
    /// Built, but the row array had no room for it (when).
    NoRoom(u64),
    /// No table can be made (no CFI, not x86_64, malformed, too large).
    Failed(String),
}

/// What `make_room` could do.
enum Room {
    /// Rows are being freed: place the table after the grace period.
    Soon,
    /// Nothing may be evicted for it now.
    Never,
}

struct FileEntry {
    /// A path it was seen at (for messages).
    path: String,
    loads: Vec<(u64, u64, u64)>,
    state: FileState,
    /// When it was placed or last asked for.
    last_used_ns: u64,
    rows: u32,
}

/// One executable file mapping of a registered process.
#[derive(Debug, Clone)]
struct ProcMap {
    start: u64,
    end: u64,
    bias: u64,
    key: FileKey,
}

struct ProcEntry {
    maps: Vec<ProcMap>,
    maps_read_ns: u64,
    /// When a walk last stopped outside every file mapping and a fresh listing found none
    /// there either (JIT code): such pcs are looked up again at most once per REREAD_MAPS_NS.
    anon_read_ns: u64,
    /// The executable file mappings as /proc listed them (start, end, offset, path): a
    /// change means libraries were loaded or unloaded.
    listed: Vec<(u64, u64, u64, String)>,
}

/// A process's executable file mappings as /proc lists them.
fn exec_mappings(pid: u32) -> Vec<procfs::Mapping> {
    procfs::maps(pid)
        .into_iter()
        .filter(|m| m.exec && !m.path.starts_with('['))
        .collect()
}

fn listing(maps: &[procfs::Mapping]) -> Vec<(u64, u64, u64, String)> {
    maps.iter()
        .map(|m| (m.start, m.end, m.offset, m.path.clone()))
        .collect()
}

/// CPU budget for building tables (a token bucket in ns of build time).
#[derive(Debug, Clone)]
struct Budget {
    credit: i64,
    last_ns: u64,
}

impl Budget {
    fn new(now_ns: u64) -> Budget {
        Budget {
            credit: BUDGET_MAX_NS,
            last_ns: now_ns,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns;
        let add = (dt as u128 * BUDGET_NS_PER_S as u128 / 1_000_000_000) as i64;
        self.credit = (self.credit + add).min(BUDGET_MAX_NS);
    }
}

/// The tables' own cost and state, for the report's own-cost line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TableStats {
    /// Bytes of rows in the kernel's array, and its size.
    pub bytes: u64,
    pub cap_bytes: u64,
    pub files: u64,
    pub processes: u64,
    pub evictions: u64,
    /// CPU time spent building and writing tables.
    pub build_s: f64,
    /// Files waiting to be built.
    pub queued: u64,
    /// Stacks walked in the kernel, and walks that fell back to a copy.
    pub walked: u64,
    pub fallbacks: u64,
}

pub struct UnwindTables {
    maps: UnwindMaps,
    store: Store,
    files: HashMap<FileKey, FileEntry>,
    /// (dev, ino, size, mtime) -> key: a file is opened for its build id once.
    inodes: HashMap<(u64, u64, u64, i64), FileKey>,
    procs: HashMap<u32, ProcEntry>,
    queue: VecDeque<FileKey>,
    budget: Budget,
    generation: u32,
    evictions: u64,
    build_ns: u64,
    /// Files already said to be full (the log says so once per file).
    told_full: HashSet<FileKey>,
    /// Compiled tables waiting for evicted rows to be free.
    waiting: HashMap<FileKey, compile::Table>,
}

/// Monotonic ns (CLOCK_MONOTONIC through std).
fn now_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl UnwindTables {
    pub fn new(maps: UnwindMaps) -> UnwindTables {
        let cap = maps.capacity();
        UnwindTables {
            maps,
            store: Store::new(cap),
            files: HashMap::new(),
            inodes: HashMap::new(),
            procs: HashMap::new(),
            queue: VecDeque::new(),
            budget: Budget::new(now_ns()),
            generation: 0,
            evictions: 0,
            build_ns: 0,
            told_full: HashSet::new(),
            waiting: HashMap::new(),
        }
    }

    /// Registers `pid` for kernel unwinding and builds, within the budget, its main
    /// executable, its C library and the files holding `hints` (addresses of a stack that
    /// showed it lacks frame pointers). False when it has no executable file mapping to walk.
    pub fn enable(&mut self, pid: u32, hints: &[u64]) -> bool {
        let now = now_ns();
        if !self.register(pid, now) {
            return false;
        }
        let exe = std::fs::read_link(procfs::proc_path(pid, "exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let wanted: Vec<FileKey> = exec_mappings(pid)
            .into_iter()
            .filter(|m| {
                let name = m.path.rsplit('/').next().unwrap_or("");
                Some(&m.path) == exe.as_ref()
                    || name.starts_with("libc.so")
                    || name.starts_with("libc-")
                    || hints.iter().any(|h| (m.start..m.end).contains(h))
            })
            .filter_map(|m| self.key_at(pid, m.start))
            .collect();
        for k in wanted {
            self.want(&k, now);
        }
        self.work();
        true
    }

    /// Forgets a process (exit, exec: its mappings change).
    pub fn forget(&mut self, pid: u32) {
        if self.procs.remove(&pid).is_some() {
            self.maps.remove_proc(pid);
        }
    }

    pub fn is_enabled(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// A walk of `pid` stopped at `pc` for `status` (`unwind::walk_status`): builds the file
    /// that lacked rows; a pc outside every listed mapping means a library loaded since (it is
    /// listed and built at once) or JIT code; for any other reason, looks whether libraries were
    /// loaded or unloaded since its mappings were listed.
    pub fn stopped(&mut self, pid: u32, status: u32, pc: u64) {
        use sockleak_common::unwind::walk_status::{NO_MAPPING, NO_TABLE};
        let now = now_ns();
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let known = p.maps.iter().any(|m| (m.start..m.end).contains(&pc));
        if status == NO_MAPPING && !known {
            if now.saturating_sub(p.anon_read_ns) >= REREAD_MAPS_NS {
                let maps = exec_mappings(pid);
                if maps.iter().any(|m| (m.start..m.end).contains(&pc)) {
                    self.register_from(pid, maps, now);
                } else if let Some(p) = self.procs.get_mut(&pid) {
                    p.anon_read_ns = now;
                }
            }
        } else if status != NO_TABLE {
            self.check_maps(pid);
        }
        if matches!(status, NO_TABLE | NO_MAPPING)
            && let Some(k) = self.key_at(pid, pc)
        {
            self.want(&k, now);
        }
    }

    /// Whether `pc` of `pid` lies in a listed file mapping whose table is on its way (queued,
    /// waiting for room to be freed): a walk that stopped there will not stop there for long.
    pub fn pending(&self, pid: u32, pc: u64) -> bool {
        self.key_at(pid, pc)
            .and_then(|k| self.files.get(&k))
            .is_some_and(|f| matches!(f.state, FileState::Queued | FileState::Unbuilt))
    }

    /// Re-lists `pid`'s mappings (at most once per REREAD_MAPS_NS) and tells the kernel when
    /// they changed: a library unloaded and another loaded at its address must not be walked
    /// with the old one's rows. Called when a walk stops short and when a new walked stack
    /// arrives (both rare).
    pub fn check_maps(&mut self, pid: u32) {
        let now = now_ns();
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        if now.saturating_sub(p.maps_read_ns) < REREAD_MAPS_NS {
            return;
        }
        let maps = exec_mappings(pid);
        if listing(&maps) == p.listed {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.maps_read_ns = now;
            }
            return;
        }
        log::debug!("pid {pid}: executable mappings changed: listing them again");
        self.register_from(pid, maps, now);
    }

    /// Builds queued files while the budget allows; frees what waited out its grace period.
    /// Called on the session's drain timer.
    pub fn work(&mut self) {
        let now = now_ns();
        self.store.settle(now);
        self.budget.refill(now);
        let mut deferred = VecDeque::new();
        while self.budget.credit > 0
            && let Some(key) = self.queue.pop_front()
        {
            let t0 = Instant::now();
            let waits = self.build(&key, now);
            let took = t0.elapsed().as_nanos() as u64;
            self.build_ns += took;
            self.budget.credit -= took as i64;
            if waits {
                deferred.push_back(key);
            }
        }
        self.queue.extend(deferred);
    }

    /// Whether files wait to be built (the session keeps calling `work`).
    pub fn busy(&self) -> bool {
        !self.queue.is_empty()
    }

    pub fn stats(&self) -> TableStats {
        let counts = self.maps.counts();
        TableStats {
            bytes: self.store.used() * 8,
            cap_bytes: self.store.capacity() as u64 * 8,
            files: self
                .files
                .values()
                .filter(|f| matches!(f.state, FileState::Placed(_)))
                .count() as u64,
            processes: self.procs.len() as u64,
            evictions: self.evictions,
            build_s: self.build_ns as f64 / 1e9,
            queued: self.queue.len() as u64,
            walked: counts[counter::WALKED as usize],
            fallbacks: counts[counter::FALLBACK as usize],
        }
    }

    /// Lists a process's executable file mappings and tells the kernel. False when it has none
    /// (or is gone).
    fn register(&mut self, pid: u32, now: u64) -> bool {
        // [vdso], [vsyscall] have no file: walks through them copy.
        self.register_from(pid, exec_mappings(pid), now)
    }

    fn register_from(&mut self, pid: u32, listed: Vec<procfs::Mapping>, now: u64) -> bool {
        let mut maps = Vec::new();
        for m in &listed {
            let Some(key) = self.file_of(pid, m.start, m.end, &m.path) else {
                continue;
            };
            let Some(f) = self.files.get(&key) else {
                continue;
            };
            let Some(bias) = layout::bias(&f.loads, m.start, m.offset) else {
                continue;
            };
            maps.push(ProcMap {
                start: m.start,
                end: m.end,
                bias,
                key,
            });
        }
        if maps.is_empty() {
            self.forget(pid);
            return false;
        }
        self.procs.insert(
            pid,
            ProcEntry {
                maps,
                maps_read_ns: now,
                anon_read_ns: 0,
                listed: listing(&listed),
            },
        );
        self.push_proc(pid)
    }

    /// The key of the file mapped at [start, end) in `pid`, reading its build id the first
    /// time its inode is seen. None when it cannot be read or is not ELF.
    fn file_of(&mut self, pid: u32, start: u64, end: u64, path: &str) -> Option<FileKey> {
        let file = procfs::proc_path(pid, &format!("map_files/{start:x}-{end:x}"));
        let md = std::fs::metadata(&file).ok()?;
        let ino = (
            md.dev(),
            md.ino(),
            md.size(),
            md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        );
        if let Some(k) = self.inodes.get(&ino) {
            return Some(k.clone());
        }
        let info: ElfInfo = {
            let cache = ReadCache::new(File::open(&file).ok()?);
            compile::elf_info(&cache).ok()?
        };
        let key = match &info.build_id {
            Some(id) if !id.is_empty() => FileKey::BuildId(id.clone()),
            _ => FileKey::Inode {
                dev: ino.0,
                ino: ino.1,
                size: ino.2,
                mtime_ns: ino.3,
            },
        };
        self.inodes.insert(ino, key.clone());
        self.files.entry(key.clone()).or_insert_with(|| FileEntry {
            path: path.trim_end_matches(" (deleted)").to_string(),
            loads: info.loads,
            state: FileState::Unbuilt,
            last_used_ns: 0,
            rows: 0,
        });
        Some(key)
    }

    /// The key of the registered mapping holding `pc` in `pid`.
    fn key_at(&self, pid: u32, pc: u64) -> Option<FileKey> {
        self.procs
            .get(&pid)?
            .maps
            .iter()
            .find(|m| (m.start..m.end).contains(&pc))
            .map(|m| m.key.clone())
    }

    fn want(&mut self, key: &FileKey, now: u64) {
        if let Some(f) = self.files.get_mut(key) {
            f.last_used_ns = now;
            let retry = matches!(f.state, FileState::NoRoom(at) if now.saturating_sub(at) >= NO_ROOM_RETRY_NS);
            if f.state == FileState::Unbuilt || retry {
                f.state = FileState::Queued;
                self.queue.push_back(key.clone());
            }
        }
    }

    /// Tells the kernel a process's mappings as they are now (a new generation).
    fn push_proc(&mut self, pid: u32) -> bool {
        let Some(p) = self.procs.get(&pid) else {
            return false;
        };
        self.generation = self.generation.wrapping_add(1).max(1);
        let maps = p
            .maps
            .iter()
            .map(|m| {
                let placed = match self.files.get(&m.key).map(|f| &f.state) {
                    Some(FileState::Placed(pl)) => Some(*pl),
                    _ => None,
                };
                layout::mapping(m.start, m.end, m.bias, placed)
            })
            .collect();
        let entry = layout::proc_entry(maps, self.generation);
        log::trace!(
            "pid {pid}: unwind mappings {:x?}",
            &entry.maps[..entry.n as usize]
        );
        match self.maps.set_proc(pid, &entry) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("{e:#}");
                false
            }
        }
    }

    /// Re-tells the kernel every process that maps `key`.
    fn push_users(&mut self, key: &FileKey) {
        let users: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.maps.iter().any(|m| &m.key == key))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in users {
            self.push_proc(pid);
        }
    }

    /// Builds and places one file. True when it must wait (room is being freed).
    fn build(&mut self, key: &FileKey, now: u64) -> bool {
        let Some(f) = self.files.get(key) else {
            return false;
        };
        if f.state != FileState::Queued {
            return false;
        }
        let path = f.path.clone();
        let table = match self.waiting.remove(key) {
            Some(t) => t,
            None => match self.compile(key) {
                Some(t) => t,
                None => return false,
            },
        };
        let n = table.rows.len() as u32;
        let first = match self.store.alloc(n) {
            Some(first) => first,
            None => match self.make_room(key, n, now) {
                Room::Soon => {
                    self.waiting.insert(key.clone(), table);
                    return true;
                }
                Room::Never => {
                    if self.told_full.insert(key.clone()) {
                        log::warn!(
                            "unwind tables full ({} MiB, --unwind-table-mib): {path} ({} KiB of rows) waits; its frames are unwound from stack copies meanwhile",
                            (self.store.capacity() as u64 * 8) >> 20,
                            n as u64 * 8 / 1024
                        );
                    }
                    if let Some(f) = self.files.get_mut(key) {
                        f.state = FileState::NoRoom(now);
                    }
                    return false;
                }
            },
        };
        if let Err(e) = self.maps.write_rows(first, &table.rows) {
            log::debug!("{path}: {e:#}");
            self.store.release(first, n, now);
            if let Some(f) = self.files.get_mut(key) {
                f.state = FileState::Failed(e.to_string());
            }
            return false;
        }
        log::debug!(
            "{path}: {n} unwind rows ({} KiB), {} of {} MiB used",
            n as u64 * 8 / 1024,
            (self.store.used() * 8) >> 20,
            (self.store.capacity() as u64 * 8) >> 20
        );
        if let Some(f) = self.files.get_mut(key) {
            f.state = FileState::Placed(Placed {
                first,
                count: n,
                base: table.base,
            });
            f.rows = n;
            f.last_used_ns = now;
        }
        self.push_users(key);
        false
    }

    /// Compiles a queued file's rows, opening it through any live process that maps it (in
    /// that process's mount namespace). None when it has no table, or nobody maps it now.
    fn compile(&mut self, key: &FileKey) -> Option<compile::Table> {
        let sources: Vec<(u32, u64, u64)> = self
            .procs
            .iter()
            .flat_map(|(pid, p)| {
                p.maps
                    .iter()
                    .filter(|m| &m.key == key)
                    .map(move |m| (*pid, m.start, m.end))
            })
            .collect();
        let opened = sources.iter().find_map(|(pid, s, e)| {
            File::open(procfs::proc_path(*pid, &format!("map_files/{s:x}-{e:x}"))).ok()
        });
        let f = self.files.get_mut(key)?;
        let Some(file) = opened else {
            // Every process mapping it has gone: built when one needs it again.
            f.state = FileState::Unbuilt;
            return None;
        };
        let t0 = Instant::now();
        let table = {
            let cache = ReadCache::new(file);
            compile::compile(&cache)
        };
        // A big file's compile peaks at ~40 bytes per CFI row (the span list, the rows, the
        // read sections); glibc keeps what was freed unless asked to give it back.
        #[cfg(target_env = "gnu")]
        if table.as_ref().is_ok_and(|t| t.rows.len() > BIG_TABLE_ROWS) {
            // SAFETY: malloc_trim only returns free heap memory to the system.
            unsafe { libc::malloc_trim(0) };
        }
        match table {
            Ok(t) => {
                log::debug!(
                    "{}: compiled {} unwind rows in {:.1} ms",
                    f.path,
                    t.rows.len(),
                    t0.elapsed().as_secs_f64() * 1e3
                );
                Some(t)
            }
            Err(e) => {
                let line = format!(
                    "{}: no kernel unwind table: {e}; its frames are unwound from stack copies",
                    f.path
                );
                if matches!(e, CompileError::NoCfi | CompileError::Architecture(_)) {
                    log::debug!("{line}");
                } else {
                    log::info!("{line}");
                }
                f.state = FileState::Failed(e.to_string());
                None
            }
        }
    }

    /// Evicts files so that `n` rows can be had once freed rows settle.
    fn make_room(&mut self, for_key: &FileKey, n: u32, now: u64) -> Room {
        if n > self.store.capacity() {
            return Room::Never;
        }
        let free = self.store.reclaimable();
        // Enough rows free but in pieces: more must go for one long enough.
        let fragmented = free >= n as u64 && !self.store.has_waiting();
        let need = if fragmented {
            free + n as u64
        } else {
            n as u64
        };
        let mut users: HashMap<&FileKey, usize> = HashMap::new();
        for p in self.procs.values() {
            for m in &p.maps {
                *users.entry(&m.key).or_default() += 1;
            }
        }
        let cands: Vec<store::Candidate<FileKey>> = self
            .files
            .iter()
            .filter(|(k, _)| *k != for_key)
            .filter_map(|(k, f)| match f.state {
                FileState::Placed(p) => Some(store::Candidate {
                    key: k.clone(),
                    rows: p.count,
                    users: users.get(k).copied().unwrap_or(0),
                    last_used_ns: f.last_used_ns,
                }),
                _ => None,
            })
            .collect();
        drop(users);
        let victims = store::victims(cands, need, free, now);
        for k in &victims {
            if let Some(f) = self.files.get_mut(k)
                && let FileState::Placed(p) = f.state
            {
                f.state = FileState::Unbuilt;
                self.store.release(p.first, p.count, now);
                self.evictions += 1;
                log::debug!("{}: unwind rows evicted for room", f.path);
            }
        }
        for k in &victims {
            self.push_users(k);
        }
        if self.store.has_waiting() && self.store.reclaimable() >= n as u64 {
            Room::Soon
        } else {
            Room::Never
        }
    }
}
