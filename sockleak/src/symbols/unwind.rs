//! DWARF unwinding of stack copies, for processes whose code has no frame pointers (CPython
//! builds, C/C++ built with -fomit-frame-pointer): the kernel sends the registers and the top
//! of the user stack (`sockleak_common::stack`), and framehop unwinds them with each mapped
//! binary's `.eh_frame`. Code without unwind information (a JIT's trampolines) is walked by its
//! frame pointers, which is framehop's own fallback.

use std::{fs::File, ops::Range, os::unix::fs::MetadataExt, sync::Arc};

use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};
use hashbrown::HashMap;
use object::{
    Endianness, ReadCache,
    elf::FileHeader64,
    read::elf::{FileHeader, SectionHeader},
};
use sockleak_common::stack::StackCopy;

use crate::host::procfs;

#[cfg(target_arch = "x86_64")]
use framehop::x86_64::{CacheX86_64 as Cache, UnwindRegsX86_64, UnwinderX86_64 as ArchUnwinder};

#[cfg(target_arch = "aarch64")]
use framehop::aarch64::{
    CacheAarch64 as Cache, UnwindRegsAarch64, UnwinderAarch64 as ArchUnwinder,
};

type Data = Arc<[u8]>;

/// Frames kept per stack (the kernel's own stack map keeps as many).
const MAX_FRAMES: usize = 127;

/// What unwinding needs from one binary, shared by every process that maps it.
struct Sections {
    /// (file offset, virtual address, size) of each PT_LOAD segment.
    loads: Vec<(u64, u64, u64)>,
    text_svma: Option<Range<u64>>,
    eh_frame: Option<(Range<u64>, Data)>,
    eh_frame_hdr: Option<(Range<u64>, Data)>,
}

impl Sections {
    fn read(file: &std::path::Path) -> Option<Sections> {
        let cache = ReadCache::new(File::open(file).ok()?);
        let data = &cache;
        let header = FileHeader64::<Endianness>::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        let section = |name: &[u8]| -> Option<(Range<u64>, Data)> {
            let (_, s) = sections.section_by_name(endian, name)?;
            let addr = s.sh_addr(endian);
            let bytes: Data = s.data(endian, data).ok()?.into();
            Some((addr..addr + bytes.len() as u64, bytes))
        };
        let text_svma = sections
            .section_by_name(endian, b".text")
            .map(|(_, s)| s.sh_addr(endian)..s.sh_addr(endian) + s.sh_size(endian));
        let loads = crate::symbols::elf::loads(header, endian, data)?;
        Some(Sections {
            loads,
            text_svma,
            eh_frame: section(b".eh_frame"),
            eh_frame_hdr: section(b".eh_frame_hdr"),
        })
    }

    /// The load bias of a mapping of this file at `start` from file offset `offset` (mappings
    /// start at a page boundary, segments need not).
    fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        let (o, v, _) = self
            .loads
            .iter()
            .find(|(o, _, size)| offset >= (o & !0xfff) && offset < o + size)?;
        // vaddr of `offset` = v + (offset - o), which may lie below v.
        Some(start.wrapping_sub(v.wrapping_add(offset).wrapping_sub(*o)))
    }
}

/// One process's unwinder: a module per executable file mapping.
struct Process {
    unwinder: ArchUnwinder<Data>,
    covered: Vec<Range<u64>>,
    /// Return addresses outside every module (JIT code) found to be CPython perf trampolines.
    trampolines: HashMap<u64, bool>,
}

impl Process {
    fn covers(&self, addr: u64) -> bool {
        self.covered.iter().any(|r| r.contains(&addr))
    }

    /// Whether the code at return address `ra` (JIT memory) is a CPython perf trampoline.
    fn trampoline(&mut self, pid: u32, ra: u64) -> bool {
        *self
            .trampolines
            .entry(ra)
            .or_insert_with(|| is_cpython_trampoline(pid, ra))
    }
}

/// CPython 3.12+'s `-X perf` trampoline on x86_64 (Python/asm_trampoline.S) has no frame
/// pointer and, being copied into anonymous memory, no unwind tables:
/// `sub $8,%rsp; call *%rcx; add $8,%rsp; ret`. A return address in it is followed by
/// `add $8,%rsp; ret` and preceded by `call *%rcx`.
const TRAMPOLINE_CALL: [u8; 2] = [0xff, 0xd1];
const TRAMPOLINE_RETURN: [u8; 5] = [0x48, 0x83, 0xc4, 0x08, 0xc3];

fn is_cpython_trampoline(pid: u32, ra: u64) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false; // the arm64 trampoline keeps a frame pointer: framehop walks it
    }
    let mut code = [0u8; 7];
    read_memory(pid, ra.wrapping_sub(2), &mut code)
        && code[..2] == TRAMPOLINE_CALL
        && code[2..] == TRAMPOLINE_RETURN
}

/// One frame of a CPython trampoline: its caller's return address sits above 8 bytes of
/// padding; the frame pointer is untouched.
#[cfg(target_arch = "x86_64")]
fn cpython_trampoline<F: FnMut(u64) -> Result<u64, ()>>(
    regs: &mut UnwindRegsX86_64,
    read: &mut F,
) -> Result<Option<u64>, framehop::Error> {
    let sp = regs.sp();
    let ret = read(sp + 8).map_err(|_| framehop::Error::CouldNotReadStack(sp + 8))?;
    regs.set_sp(sp + 16);
    Ok(Some(ret))
}

#[cfg(target_arch = "aarch64")]
fn cpython_trampoline<F: FnMut(u64) -> Result<u64, ()>>(
    _regs: &mut UnwindRegsAarch64,
    _read: &mut F,
) -> Result<Option<u64>, framehop::Error> {
    Ok(None) // never called: is_cpython_trampoline is false on arm64
}

/// Reads the target's memory (its code, here) without stopping it.
fn read_memory(pid: u32, addr: u64, buf: &mut [u8]) -> bool {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: both iovecs describe valid buffers of the given length (the remote one in the
    // other process; a bad address only makes the call fail).
    let n = unsafe { libc::process_vm_readv(pid as i32, &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}

#[derive(Default)]
pub struct Unwinders {
    procs: HashMap<u32, Process>,
    /// By (device, inode); None: not an ELF file (or unreadable).
    binaries: HashMap<(u64, u64), Option<Arc<Sections>>>,
    cache: Option<Box<Cache>>,
    /// Copies unwound (for the self-cost figures).
    pub unwound: u64,
}

impl Unwinders {
    /// The return addresses of a copied stack, innermost first (the first is the ip).
    pub fn unwind(&mut self, c: &StackCopy) -> Vec<u64> {
        let pid = c.tgid;
        // A new mapping (dlopen, a JIT) shows up as an address no module covers.
        if !self.procs.get(&pid).is_some_and(|p| p.covers(c.ip)) {
            let p = self.load(pid);
            self.procs.insert(pid, p);
        }
        let cache = self.cache.get_or_insert_with(|| Box::new(Cache::new()));
        let len = (c.len as usize).min(c.data.len());
        let stack = &c.data[..len];
        let sp = c.sp;
        let mut read = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let b = stack.get(off..off + 8).ok_or(())?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
        };
        #[cfg(target_arch = "x86_64")]
        let regs = UnwindRegsX86_64::new(c.ip, c.sp, c.fp);
        #[cfg(target_arch = "aarch64")]
        let regs = UnwindRegsAarch64::new(c.lr, c.sp, c.fp);
        let mut regs = regs;
        let mut out = vec![c.ip];
        let mut frame = FrameAddress::from_instruction_pointer(c.ip);
        let Some(p) = self.procs.get_mut(&pid) else {
            return out;
        };
        while out.len() < MAX_FRAMES {
            let ra = frame.address();
            let step = if frame.is_return_address() && !p.covers(ra) && p.trampoline(pid, ra) {
                cpython_trampoline(&mut regs, &mut read)
            } else {
                p.unwinder.unwind_frame(frame, &mut regs, cache, &mut read)
            };
            match step {
                Ok(Some(ret)) => match FrameAddress::from_return_address(ret) {
                    Some(f) => {
                        out.push(ret);
                        frame = f;
                    }
                    None => break,
                },
                Ok(None) => break,
                Err(e) => {
                    log::debug!(
                        "pid {pid}: unwinding stopped after {} frames at {ra:#x}: {e} (copy of {len} bytes from {sp:#x})",
                        out.len()
                    );
                    break;
                }
            }
        }
        self.unwound += 1;
        out
    }

    /// Builds a process's modules from its executable file mappings.
    fn load(&mut self, pid: u32) -> Process {
        let mut unwinder = ArchUnwinder::new();
        let mut covered = Vec::new();
        // One module per file: the range of its executable mappings.
        let mut files: Vec<(String, u64, u64, u64, Range<u64>)> = Vec::new();
        for m in procfs::maps(pid).into_iter().filter(|m| m.exec) {
            if m.path.starts_with('[') {
                continue; // [vdso], [vsyscall]: framehop walks them by frame pointer
            }
            let file = procfs::proc_path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end));
            let Ok(md) = std::fs::metadata(&file) else {
                continue;
            };
            let key = (md.dev(), md.ino());
            let sections = self
                .binaries
                .entry(key)
                .or_insert_with(|| Sections::read(&file).map(Arc::new))
                .clone();
            let Some(s) = sections else { continue };
            let Some(bias) = s.bias(m.start, m.offset) else {
                continue;
            };
            match files
                .iter_mut()
                .find(|f| f.1 == key.0 && f.2 == key.1 && f.3 == bias)
            {
                Some(f) => f.4 = f.4.start.min(m.start)..f.4.end.max(m.end),
                None => files.push((m.path.clone(), key.0, key.1, bias, m.start..m.end)),
            }
        }
        for (name, dev, ino, bias, range) in files {
            let Some(Some(s)) = self.binaries.get(&(dev, ino)) else {
                continue;
            };
            let info = ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: s.text_svma.clone(),
                eh_frame_svma: s.eh_frame.as_ref().map(|(r, _)| r.clone()),
                eh_frame: s.eh_frame.as_ref().map(|(_, d)| d.clone()),
                eh_frame_hdr_svma: s.eh_frame_hdr.as_ref().map(|(r, _)| r.clone()),
                eh_frame_hdr: s.eh_frame_hdr.as_ref().map(|(_, d)| d.clone()),
                ..Default::default()
            };
            covered.push(range.clone());
            unwinder.add_module(Module::new(name, range, bias, info));
        }
        Process {
            unwinder,
            covered,
            trampolines: HashMap::new(),
        }
    }

    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }
}
