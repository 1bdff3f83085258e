//! CPython 3.8-3.13 without flags: finding an interpreter's layout in a running process (for
//! the kernel's frame walk, `runtime::PyProc`) and naming the frames it records.
//!
//! The interpreter is the mapped `libpython3.X.so` or the executable that exports `_PyRuntime`
//! (static builds such as Debian's `/usr/bin/python3.X`, pyenv's shared builds, embedders).
//! Its version comes from `Py_Version` (3.11+) or the code of `Py_GetVersion`; the minor
//! version picks the offsets (`layout`), which are checked against the process before use:
//! 3.13's own `_Py_DebugOffsets`, the autoTSSkey decoded from the binary's code, `PyCode_Type`'s
//! name and size, and a thread state that points back to its interpreter. A layout that does
//! not match is refused with the reason: no frame is ever named from wrong offsets.

pub mod code;
pub mod layout;
pub mod lines;

use sockleak_common::runtime::PyProc;

use crate::{
    host::{
        procfs::Mapping,
        procmem::{MemError, Memory},
    },
    symbols::{
        elf::{ElfInfo, mapped_file},
        glibc,
        runtime_frames::Refused,
    },
};
use layout::Layout;

/// A CPython interpreter found in a process.
#[derive(Debug, Clone)]
pub struct Found {
    /// For the kernel (its `exec_gen` still to be set).
    pub proc: PyProc,
    pub layout: Layout,
    /// `&PyCode_Type` in the process.
    pub code_type: u64,
    pub version: (u8, u8, u8),
    /// The binary holding the interpreter, as the process maps it.
    pub binary: String,
    /// Fields of 3.13's debug offsets that differed from the table (taken from the process).
    pub adjusted: Vec<&'static str>,
}

const WANTED: &[&str] = &[
    "_PyRuntime",
    "Py_Version",
    "Py_GetVersion",
    "PyGILState_GetThisThreadState",
    "PyCode_Type",
];

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The mapped files that may hold the interpreter, most likely first: a libpython, then the
/// executable.
fn candidates<'a>(maps: &'a [Mapping], exe: &str) -> Vec<&'a Mapping> {
    let first = |pred: &dyn Fn(&Mapping) -> bool| -> Vec<&'a Mapping> {
        let mut seen: Vec<&str> = Vec::new();
        maps.iter()
            .filter(|m| m.offset == 0 && pred(m))
            .filter(|m| {
                let new = !seen.contains(&m.path.as_str());
                seen.push(&m.path);
                new
            })
            .collect()
    };
    let mut out = first(&|m| base(&m.path).starts_with("libpython3"));
    out.extend(first(&|m| m.path == exe));
    out
}

/// Finds and checks the interpreter of process `pid` (its maps, executable path, memory).
pub fn probe(pid: u32, maps: &[Mapping], exe: &str, mem: &impl Memory) -> Result<Found, Refused> {
    let cands = candidates(maps, exe);
    let named_python = base(exe).starts_with("python")
        || cands.iter().any(|m| base(&m.path).starts_with("libpython"));
    let found = cands.iter().find_map(|m| {
        let elf = ElfInfo::read(&mapped_file(pid, m), WANTED)?;
        elf.sym("_PyRuntime").is_some().then_some((*m, elf))
    });
    let Some((m, elf)) = found else {
        return Err(if named_python {
            Refused::NotReady(
                "no mapped file exports _PyRuntime (libpython not loaded yet, or a build that hides it)"
                    .into(),
            )
        } else {
            Refused::Absent
        });
    };
    let binary = m.path.clone();
    if !cfg!(target_arch = "x86_64") {
        return Err(Refused::Unsupported(
            "Python frames are walked on x86_64 only (the offsets are measured there)".into(),
        ));
    }
    let bias = elf
        .bias(maps, &binary)
        .ok_or_else(|| Refused::NotReady(format!("{binary} is not fully mapped yet")))?;
    let version = version(&elf).ok_or_else(|| {
        Refused::Unsupported(format!("cannot tell the Python version of {binary}"))
    })?;
    let (major, minor, micro) = version;
    let mut layout = match (major, layout::for_minor(minor)) {
        (3, Some(l)) => l,
        _ => {
            return Err(Refused::Unsupported(format!(
                "Python {major}.{minor}.{micro} ({binary}): sockleak walks the frames of CPython 3.8 to 3.13"
            )));
        }
    };
    let sym = |n: &str| elf.sym(n).map(|v| v + bias);
    let runtime = sym("_PyRuntime").unwrap_or_default();
    let code_type = sym("PyCode_Type")
        .ok_or_else(|| Refused::Unsupported(format!("{binary} does not export PyCode_Type")))?;
    let mismatch = |what: String| {
        Refused::Unsupported(format!(
            "Python {major}.{minor}.{micro} in {binary} does not have CPython {major}.{minor}'s layout ({what})"
        ))
    };
    let unreadable = |e: MemError| Refused::NotReady(format!("reading the interpreter: {e}"));
    let mut adjusted = Vec::new();
    if minor >= 13 {
        let b = mem
            .bytes(runtime, layout::DEBUG_OFFSETS_LEN)
            .map_err(unreadable)?;
        adjusted = layout::apply_debug_offsets(&mut layout, &b)
            .ok_or_else(|| mismatch("no _Py_DebugOffsets of 3.13 with the GIL".into()))?;
    }
    if !layout::kernel_usable(&layout) {
        return Err(mismatch(
            "its frame fields are out of the kernel walk's reach".into(),
        ));
    }
    // The autoTSSkey as the binary's own code finds it.
    if let Some(va) = elf.sym("PyGILState_GetThisThreadState")
        && let Some(code) = elf.read_vaddr(va, 64)
        && let Some(off) = layout::decode_autotss(&code, va, elf.sym("_PyRuntime").unwrap_or(0))
        && off != layout.rt_autotss
    {
        return Err(mismatch(format!(
            "its thread-state key is at _PyRuntime+{off}, not +{}",
            layout.rt_autotss
        )));
    }
    // The code object type: its name, and its size where the instructions start.
    let tp_name = mem
        .u64(code_type + layout::TP_NAME)
        .and_then(|p| mem.cstr(p, 16))
        .map_err(unreadable)?;
    let basicsize = mem
        .u64(code_type + layout::TP_BASICSIZE)
        .map_err(unreadable)?;
    if tp_name != "code" || basicsize != layout.code_basicsize {
        return Err(mismatch(format!(
            "PyCode_Type is {tp_name:?} of {basicsize} bytes, expected \"code\" of {}",
            layout.code_basicsize
        )));
    }
    // A thread state that points back to its interpreter.
    let interp = mem
        .u64(runtime + u64::from(layout.rt_interp_head))
        .map_err(unreadable)?;
    if interp == 0 {
        return Err(Refused::NotReady(
            "the interpreter is not initialized yet".into(),
        ));
    }
    let ts = mem
        .u64(interp + u64::from(layout.interp_threads))
        .map_err(unreadable)?;
    if ts == 0 {
        return Err(Refused::NotReady(
            "the interpreter has no thread yet".into(),
        ));
    }
    if mem.u64(ts + u64::from(layout.ts_interp)) != Ok(interp) {
        return Err(mismatch(
            "its first thread state does not point back to its interpreter".into(),
        ));
    }
    let tsd = glibc::tsd(pid, maps);
    let proc = PyProc {
        tss_key: runtime + u64::from(layout.rt_autotss) + u64::from(layout::TSS_KEY),
        interp_head: runtime + u64::from(layout.rt_interp_head),
        tsd_first: tsd.map_or(0, |t| t.first),
        tsd_stride: tsd.map_or(0, |t| t.stride),
        tsd_keys: tsd.map_or(0, |t| t.keys),
        interp_next: layout.interp_next,
        interp_threads: layout.interp_threads,
        ts_next: layout.ts_next,
        ts_thread_id: layout.ts_thread_id,
        ts_frame: layout.ts_frame,
        cframe_frame: layout.cframe_frame,
        f_back: layout.f_back,
        f_code: layout.f_code,
        f_pos: layout.f_pos,
        f_mark: layout.f_mark,
        f_size: layout.f_size,
        layout: layout.frames,
        exec_gen: 0,
        _pad: [0; 6],
    };
    Ok(Found {
        proc,
        layout,
        code_type,
        version,
        binary,
        adjusted,
    })
}

/// The interpreter's version, from the file: `Py_Version` (3.11+), else `Py_GetVersion`'s
/// code.
fn version(elf: &ElfInfo) -> Option<(u8, u8, u8)> {
    if let Some(va) = elf.sym("Py_Version") {
        let b = elf.read_vaddr(va, 4)?;
        return Some(layout::version_of_hex(u32::from_le_bytes(
            b.try_into().ok()?,
        )));
    }
    let va = elf.sym("Py_GetVersion")?;
    let code = elf.read_vaddr(va, 96)?;
    layout::decode_py_get_version(&code, va, |a| {
        let b = elf.read_vaddr(a, 16)?;
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        Some(String::from_utf8_lossy(&b[..end]).into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(path: &str, offset: u64) -> Mapping {
        Mapping {
            start: 0x1000 + offset,
            end: 0x2000 + offset,
            exec: false,
            offset,
            path: path.into(),
        }
    }

    #[test]
    fn libpython_first_then_the_executable() {
        let maps = [
            map("/usr/bin/python3.11", 0),
            map("/usr/bin/python3.11", 0x1000),
            map("/opt/py/lib/libpython3.12.so.1.0", 0),
            map("/lib/libc.so.6", 0),
        ];
        let c: Vec<&str> = candidates(&maps, "/usr/bin/python3.11")
            .iter()
            .map(|m| m.path.as_str())
            .collect();
        assert_eq!(
            c,
            ["/opt/py/lib/libpython3.12.so.1.0", "/usr/bin/python3.11"]
        );
        assert!(candidates(&maps[3..], "/bin/sh").is_empty());
    }

    #[test]
    fn not_python_is_said_plainly() {
        let maps = crate::host::procfs::maps(std::process::id());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mem = crate::host::procmem::Recorded::default();
        assert_eq!(
            probe(std::process::id(), &maps, &exe.to_string_lossy(), &mem).unwrap_err(),
            Refused::Absent
        );
    }
}
