//! Runtime frames (see `sockleak_common::runtime`): naming the interpreted frames the kernel
//! recorded for a new stack, as its record arrives (code objects and methods can be freed
//! later), and merging them with the stack's native frames:
//!
//! - CPython: each group of Python frames that one C-level call of the interpreter loop runs
//!   goes where the native stack shows that call (`_PyEval_EvalFrameDefault`), innermost
//!   first; groups past the end of the native stack (a stack copy that stops short) follow it.
//! - HotSpot: each interpreted frame replaces the native frame of its return address into the
//!   interpreter. Without `-XX:+PreserveFramePointer` the native stack is cut after the first
//!   JIT-compiled Java frame (what follows was found through a register that is not a frame
//!   pointer there), with a note saying so.
//!
//! A frame that cannot be named (its object freed or replaced, the process gone, memory that
//! does not hold what the layout says) stays unnamed, with a note: never a guess.

use sockleak_common::runtime::{
    NO_BCI, RT_MAX_FRAMES, RtFrame, RtStack, frame_flag, kind, stack_flag,
};

use crate::{
    host::procmem::{MemError, Memory, ProcMem},
    symbols::{
        hotspot::{method::Methods, perfdata::Unloads},
        python::code::CodeCache,
        stacks::Frame,
    },
};

/// Why a process's runtime frames are not walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The process does not run this runtime.
    Absent,
    /// Not yet (the library not mapped, the runtime not initialized): worth another look.
    NotReady(String),
    /// It cannot be walked; the reason, for the user.
    Unsupported(String),
}

/// The note on the last frame kept when a JVM's stack is cut at JIT-compiled code.
pub const JIT_CUT_NOTE: &str = "the stack is cut after this JIT-compiled frame: without -XX:+PreserveFramePointer compiled Java code keeps no frame pointer, so its callers cannot be found";

/// A record of the RT_STACKS ring, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub tgid: u32,
    pub tid: u32,
    pub id: i32,
    pub native_id: i32,
    pub caller: u64,
    pub kind: u8,
    pub flags: u8,
    pub exec_gen: u8,
    pub generation: u32,
    pub frames: Vec<RtFrame>,
}

const HEADER: usize = size_of::<RtStack>() - RT_MAX_FRAMES * size_of::<RtFrame>();

/// Decodes one record (the kernel sends only the frames used); None for a malformed one.
pub fn decode(b: &[u8]) -> Option<Record> {
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    if b.len() < HEADER {
        return None;
    }
    let n = usize::from(b[25]);
    if n > RT_MAX_FRAMES || b.len() < HEADER + n * size_of::<RtFrame>() {
        return None;
    }
    let frames = (0..n)
        .map(|i| {
            let o = HEADER + i * size_of::<RtFrame>();
            Some(RtFrame {
                ptr: u64_at(o)?,
                at: u64_at(o + 8)?,
                cookie: u64_at(o + 16)?,
                off: u32_at(o + 24)?,
                flags: u32_at(o + 28)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Record {
        tgid: u32_at(0)?,
        tid: u32_at(4)?,
        id: u32_at(8)? as i32,
        native_id: u32_at(12)? as i32,
        caller: u64_at(16)?,
        kind: b[24],
        flags: b[26],
        exec_gen: b[27],
        generation: u32_at(28)?,
        frames,
    })
}

/// A runtime frame, named (or not, with a note), with what merging needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub frame: Frame,
    /// CPython: the outermost frame of an interpreter-loop call.
    pub entry: bool,
    /// HotSpot: the return address into the interpreter that marked it.
    pub at: u64,
}

fn unnamed(addr: u64, runtime: &'static str, why: String) -> Frame {
    Frame {
        addr,
        symbol: None,
        module: None,
        file: None,
        line: None,
        runtime: Some(runtime),
        note: Some(why),
    }
}

fn why(e: MemError) -> String {
    match e {
        MemError::Unreadable(_) => {
            "not named: its memory could not be read (the process exited or exec'd, or the object was freed)".into()
        }
        MemError::Invalid(what) => format!("not named: {what}"),
    }
}

/// Names CPython frames.
pub fn name_python(codes: &mut CodeCache, mem: &impl Memory, frames: &[RtFrame]) -> Vec<Named> {
    frames
        .iter()
        .map(|f| {
            let frame = match codes.name(mem, f.ptr, f.at) {
                Ok(n) => Frame {
                    addr: f.ptr,
                    symbol: Some(n.name),
                    module: None,
                    file: Some(n.file),
                    line: n.line,
                    runtime: Some("python"),
                    note: None,
                },
                Err(e) => unnamed(f.ptr, "python", why(e)),
            };
            Named {
                frame,
                entry: f.flags & frame_flag::ENTRY != 0,
                at: f.at,
            }
        })
        .collect()
}

/// Names interpreted Java frames.
pub fn name_java(methods: &mut Methods, mem: &impl Memory, frames: &[RtFrame]) -> Vec<Named> {
    frames
        .iter()
        .map(|f| {
            let frame = match methods.get(mem, f.ptr, f.cookie) {
                Ok(m) => Frame {
                    addr: f.ptr,
                    symbol: Some(m.display()),
                    module: None,
                    file: m.file.clone(),
                    line: (f.off != NO_BCI).then(|| m.line(f.off)).flatten(),
                    runtime: Some("java"),
                    note: None,
                },
                Err(e) => unnamed(f.ptr, "java", why(e)),
            };
            Named {
                frame,
                entry: false,
                at: f.at,
            }
        })
        .collect()
}

/// Every frame of a record unnamed, for one reason (the image it came from is gone).
pub fn all_unnamed(r: &Record, reason: &str) -> Vec<Named> {
    let runtime = if r.kind == kind::HOTSPOT {
        "java"
    } else {
        "python"
    };
    r.frames
        .iter()
        .map(|f| Named {
            frame: unnamed(f.ptr, runtime, format!("not named: {reason}")),
            entry: f.flags & frame_flag::ENTRY != 0,
            at: f.at,
        })
        .collect()
}

/// What names one process image's runtime frames: its memory (opened for that image) and what
/// was read from it.
#[derive(Debug)]
pub enum Namer {
    Python {
        mem: ProcMem,
        codes: CodeCache,
        /// `Target::exec_gen` of the image.
        exec_gen: u8,
    },
    Jvm(Box<JvmNamer>),
}

/// A JVM's namer, with its class-unloading watch.
#[derive(Debug)]
pub struct JvmNamer {
    pub mem: ProcMem,
    pub methods: Methods,
    pub exec_gen: u8,
    pub ranges: JvmRanges,
    /// The hsperfdata counter of unloaded classes, and its value when names were last cached.
    pub unloads: Option<Unloads>,
    pub unloaded: u64,
}

impl JvmNamer {
    /// The JVM's count of unloaded classes now; the names cached are dropped when it moved
    /// (their memory may hold other methods).
    pub fn unloaded_now(&mut self) -> Option<u64> {
        let n = self.unloads.as_ref()?.read()?;
        if n != self.unloaded {
            self.unloaded = n;
            self.methods.flush();
        }
        Some(n)
    }
}

impl Namer {
    /// Names a record's frames (as it arrives).
    pub fn name(&mut self, r: &Record) -> Vec<Named> {
        let exec_gen = match self {
            Namer::Python { exec_gen, .. } => *exec_gen,
            Namer::Jvm(j) => j.exec_gen,
        };
        if r.exec_gen != exec_gen {
            return all_unnamed(r, "the process exec'd before its frames were read");
        }
        match self {
            Namer::Python { mem, codes, .. } if r.kind == kind::PYTHON => {
                name_python(codes, mem, &r.frames)
            }
            Namer::Jvm(j) if r.kind == kind::HOTSPOT => {
                // Classes unloaded since the walk: a `Method*` of it may be another method by
                // now. (This also drops the names cached before the unloading.)
                if j.unloaded_now().is_some_and(|n| n as u32 != r.generation) {
                    return all_unnamed(
                        r,
                        "the JVM unloaded classes after this stack was walked: its methods' memory may hold other methods now",
                    );
                }
                name_java(&mut j.methods, &j.mem, &r.frames)
            }
            _ => all_unnamed(r, "the process's runtime changed"),
        }
    }
}

/// A JVM's code regions, and whether compiled code keeps frame pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JvmRanges {
    pub interp: (u64, u64),
    pub cache: (u64, u64),
    /// The call stub's return address (it keeps rbp).
    pub call_stub: u64,
    pub frame_pointers: bool,
}

impl JvmRanges {
    fn in_cache(&self, a: u64) -> bool {
        self.cache.0 <= a && a < self.cache.1
    }

    fn in_interp(&self, a: u64) -> bool {
        self.interp.0 <= a && a < self.interp.1
    }
}

/// Cuts a JVM's native stack after its first JIT-compiled Java frame (a return address into
/// the code cache, outside the interpreter, whose callee is also in the code cache: a native
/// wrapper's callee is C) when compiled code keeps no frame pointer, with a note on it. True
/// when one was found.
pub fn cut_at_jit(frames: &mut Vec<Frame>, r: &JvmRanges) -> bool {
    if r.frame_pointers {
        return false;
    }
    for i in 1..frames.len() {
        let a = frames[i].addr;
        if r.in_cache(a) && !r.in_interp(a) && a != r.call_stub && r.in_cache(frames[i - 1].addr) {
            // What follows (if anything: the walk may have ended there) came through a
            // register that is not a frame pointer.
            frames.truncate(i + 1);
            frames[i].note = Some(JIT_CUT_NOTE.into());
            return true;
        }
    }
    false
}

/// Whether a native frame is a call of CPython's interpreter loop.
fn is_eval(f: &Frame) -> bool {
    f.symbol.as_deref() == Some("_PyEval_EvalFrameDefault")
}

/// The stack with its runtime frames (see the module's doc). `native`: symbolized, innermost
/// first (for a JVM, already cut at JIT code when it must be).
pub fn merge(kind: u8, native: &[Frame], named: Vec<Named>, flags: u8) -> Vec<Frame> {
    let mut out = Vec::with_capacity(native.len() + named.len());
    if kind == kind::HOTSPOT {
        let mut java = named.into_iter().peekable();
        for n in native {
            match java.peek() {
                Some(j) if j.at == n.addr => out.extend(java.next().map(|j| j.frame)),
                _ => out.push(n.clone()),
            }
        }
        // Frames the native stack does not show (it stopped earlier): kept, after it.
        if flags & stack_flag::JIT_CUT == 0 || !out.iter().any(|f| f.note.is_some()) {
            out.extend(java.map(|j| j.frame));
        }
        return out;
    }
    let mut groups: Vec<Vec<Frame>> = Vec::new();
    let mut cur = Vec::new();
    for n in named {
        cur.push(n.frame);
        if n.entry {
            groups.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    let mut groups = groups.into_iter();
    let bottom = native
        .iter()
        .position(crate::symbols::stacks::is_bottom)
        .unwrap_or(native.len());
    for (i, n) in native.iter().enumerate() {
        if i == bottom {
            // Groups no interpreter call was seen for sit above the thread's start.
            out.extend(groups.by_ref().flatten());
        }
        if is_eval(n)
            && let Some(g) = groups.next()
        {
            out.extend(g);
        }
        out.push(n.clone());
    }
    out.extend(groups.flatten());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat(addr: u64, sym: &str) -> Frame {
        Frame {
            addr,
            symbol: Some(sym.into()),
            module: Some("/lib/x.so".into()),
            file: None,
            line: None,
            runtime: None,
            note: None,
        }
    }

    fn py(name: &str, entry: bool) -> Named {
        Named {
            frame: Frame {
                addr: 1,
                symbol: Some(name.into()),
                module: None,
                file: Some("/app.py".into()),
                line: Some(3),
                runtime: Some("python"),
                note: None,
            },
            entry,
            at: 0,
        }
    }

    fn syms(f: &[Frame]) -> Vec<&str> {
        f.iter()
            .map(|f| f.symbol.as_deref().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn record_round_trip() {
        let mut s = RtStack {
            tgid: 7,
            tid: 8,
            id: 1 << 29 | 5,
            native_id: 12,
            caller: 0xabc,
            kind: kind::HOTSPOT,
            n: 2,
            flags: stack_flag::JIT_CUT,
            exec_gen: 3,
            generation: 9,
            frames: [RtFrame::default(); RT_MAX_FRAMES],
        };
        s.frames[1] = RtFrame {
            ptr: 0x10,
            at: 0x20,
            cookie: 0x30,
            off: 4,
            flags: 1,
        };
        let bytes = unsafe {
            std::slice::from_raw_parts((&s as *const RtStack).cast::<u8>(), HEADER + 2 * 32)
        };
        let r = decode(bytes).unwrap();
        assert_eq!(
            (r.tgid, r.id, r.native_id, r.caller),
            (7, 1 << 29 | 5, 12, 0xabc)
        );
        assert_eq!(
            (r.kind, r.flags, r.exec_gen, r.generation),
            (kind::HOTSPOT, stack_flag::JIT_CUT, 3, 9)
        );
        assert_eq!(r.frames, vec![RtFrame::default(), s.frames[1]]);
        // Fewer bytes than its frame count says, or too many frames: refused.
        assert_eq!(decode(&bytes[..HEADER + 40]), None);
        let mut b = bytes.to_vec();
        b[25] = 65;
        assert_eq!(decode(&b), None);
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn python_groups_go_to_their_interpreter_calls() {
        let native = [
            nat(1, "__GI_socket"),
            nat(2, "sock_initobj"),
            nat(3, "_PyEval_EvalFrameDefault"),
            nat(4, "_PyFunction_Vectorcall"),
            nat(5, "_PyEval_EvalFrameDefault"),
            nat(6, "Py_RunMain"),
        ];
        let named = vec![
            py("socket.__init__", false),
            py("open_leaky_connection", true),
            py("callback", true),
            py("main", false),
            py("<module>", true),
        ];
        let m = merge(kind::PYTHON, &native, named.clone(), 0);
        assert_eq!(
            &syms(&m)[..8],
            [
                "__GI_socket",
                "sock_initobj",
                "socket.__init__",
                "open_leaky_connection",
                "_PyEval_EvalFrameDefault",
                "_PyFunction_Vectorcall",
                "callback",
                "_PyEval_EvalFrameDefault",
            ]
        );
        // The groups left over follow the native stack (a copy that stopped short) ...
        assert_eq!(&syms(&m)[8..], ["Py_RunMain", "main", "<module>"]);
        // ... or sit above the thread's start.
        let mut with_start = native.to_vec();
        with_start.push(nat(7, "_start"));
        let m = merge(kind::PYTHON, &with_start, named, 0);
        assert_eq!(&syms(&m)[8..], ["Py_RunMain", "main", "<module>", "_start"]);
    }

    #[test]
    fn java_frames_replace_their_interpreter_return_addresses() {
        let r = JvmRanges {
            interp: (0x1000, 0x2000),
            cache: (0x800, 0x9000),
            call_stub: 0x8800,
            frame_pointers: false,
        };
        let jf = |name: &str, at: u64| Named {
            frame: Frame {
                addr: 0xaa,
                symbol: Some(name.into()),
                module: None,
                file: Some("Leak.java".into()),
                line: Some(9),
                runtime: Some("java"),
                note: None,
            },
            entry: false,
            at,
        };
        let native = vec![
            nat(0x10, "__GI_socket"),
            nat(0x20, "Java_sun_nio_ch_Net_socket0"),
            nat(0x1100, "?"),
            nat(0x1200, "?"),
            nat(0x1200, "?"),
            nat(0x30, "JavaCalls::call_helper"),
        ];
        let named = vec![
            jf("sun.nio.ch.Net.socket0(boolean)", 0x1100),
            jf("Leak.openLeakyConnection(int)", 0x1200),
            jf("Leak.main(java.lang.String[])", 0x1200),
        ];
        let mut n = native.clone();
        assert!(!cut_at_jit(&mut n, &r), "no compiled frame");
        let m = merge(kind::HOTSPOT, &n, named.clone(), 0);
        assert_eq!(
            syms(&m),
            [
                "__GI_socket",
                "Java_sun_nio_ch_Net_socket0",
                "sun.nio.ch.Net.socket0(boolean)",
                "Leak.openLeakyConnection(int)",
                "Leak.main(java.lang.String[])",
                "JavaCalls::call_helper"
            ]
        );
        // A compiled frame (0x5000) called by an interpreted one: cut after it.
        let mut n = vec![
            nat(0x10, "__GI_socket"),
            nat(0x20, "Java_x"),
            nat(0x1100, "?"),
            nat(0x5000, "Leak.hot"),
            nat(0x1200, "junk"),
            nat(0x77, "junk2"),
        ];
        assert!(cut_at_jit(&mut n, &r));
        assert_eq!(syms(&n), ["__GI_socket", "Java_x", "?", "Leak.hot"]);
        assert_eq!(n[3].note.as_deref(), Some(JIT_CUT_NOTE));
        // The walk ended at it: the note says why.
        let mut end = n[..4].to_vec();
        end[3].note = None;
        assert!(cut_at_jit(&mut end, &r));
        assert_eq!(end[3].note.as_deref(), Some(JIT_CUT_NOTE));
        // Nor the call stub, through which C++ called Java.
        let mut stub = vec![
            nat(0x10, "s"),
            nat(0x20, "Java_x"),
            nat(0x1100, "?"),
            nat(0x8800, "stub"),
            nat(0x30, "call_helper"),
        ];
        assert!(!cut_at_jit(&mut stub, &r));
        // A native wrapper (compiled, its callee C) is not cut; nor anything with frame
        // pointers kept.
        let mut w = vec![
            nat(0x10, "socket"),
            nat(0x20, "Java_x"),
            nat(0x5000, "wrapper"),
            nat(0x30, "c"),
        ];
        assert!(!cut_at_jit(&mut w, &r));
        let mut n2 = native.clone();
        n2.insert(3, nat(0x5000, "hot"));
        assert!(!cut_at_jit(
            &mut n2,
            &JvmRanges {
                frame_pointers: true,
                ..r
            }
        ));
        assert_eq!(n2.len(), 7);
    }
}
