//! Runtime frames: the frames of interpreted code, which native unwinding sees only as the
//! interpreter's own C/assembly frames, read in the kernel from the runtime's own data
//! structures (CPython's frame chain, HotSpot's interpreter frames) and named in userspace.
//!
//! Per frame the kernel records what identifies the code (a CPython code object, a HotSpot
//! `Method*`) and where in it the thread is (an instruction position, a bytecode index). Those
//! values are mixed into the stack's hash, so two interpreted call paths that share every
//! native return address are two call sites. A stack with runtime frames gets an id of its own
//! (`RT_ID_BASE..COPY_ID_BASE`), cached per (process, hash) like any stack: only a new one is
//! sent to userspace (an [`RtStack`] in the RT_STACKS ring), with its native stack (a stack-map
//! id or a stack copy) captured once; userspace names its frames as it arrives.

/// Most runtime frames kept per stack (the innermost: the call site is near the top).
pub const RT_MAX_FRAMES: usize = 64;

/// A `stack_id` in `RT_ID_BASE..COPY_ID_BASE` names a runtime stack.
pub const RT_ID_BASE: i32 = 1 << 29;

/// Whether a `stack_id` names a runtime stack.
pub const fn is_runtime_id(id: i32) -> bool {
    id >= RT_ID_BASE && id < crate::stack::COPY_ID_BASE
}

/// `RtStack::kind`.
pub mod kind {
    pub const PYTHON: u8 = 1;
    pub const HOTSPOT: u8 = 2;
}

/// `RtFrame::flags`.
pub mod frame_flag {
    /// CPython: the outermost Python frame of one C-level call of the interpreter loop
    /// (`_PyEval_EvalFrameDefault`); the next frame runs in an older call. Every frame is one
    /// before 3.11.
    pub const ENTRY: u32 = 1;
}

/// `RtStack::flags`.
pub mod stack_flag {
    /// The walk had more frames than `RT_MAX_FRAMES`: the outermost ones are missing.
    pub const TRUNCATED: u8 = 1;
    /// A read of the process's memory failed mid-walk: the frames found so far are kept.
    pub const READ_FAILED: u8 = 2;
    /// HotSpot: the walk stopped at JIT-compiled code, which keeps no frame pointer without
    /// `-XX:+PreserveFramePointer` (what follows it on the chain cannot be trusted).
    pub const JIT_CUT: u8 = 4;
    /// CPython: the thread state was found in the interpreter's thread list (the pthread
    /// TSS slot did not hold it).
    pub const FROM_LIST: u8 = 8;
}

/// `RtFrame::off` when the bytecode index is not known (a native method's frame).
pub const NO_BCI: u32 = u32::MAX;

/// One runtime frame, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtFrame {
    /// CPython: the code object (`f_code`/`f_executable`). HotSpot: the `Method*`.
    pub ptr: u64,
    /// CPython: `f_lasti` (<= 3.10, sign-extended) or the instruction pointer (`prev_instr`,
    /// `instr_ptr`). HotSpot: the return address into the interpreter that marked the frame
    /// (where it sits in the native stack).
    pub at: u64,
    /// HotSpot: the method's `ConstMethod*` when the frame was walked (a `Method*` whose
    /// ConstMethod changed since is not the same method). CPython: 0.
    pub cookie: u64,
    /// HotSpot: the bytecode index, or `NO_BCI`. CPython: 0.
    pub off: u32,
    /// `frame_flag::*`.
    pub flags: u32,
}
crate::assert_layout!(RtFrame, size = 32, fields = [u64, u64, u64, u32, u32]);

/// One record of the RT_STACKS ring: a new stack with runtime frames.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RtStack {
    pub tgid: u32,
    pub tid: u32,
    /// The `stack_id` sockets with this stack carry.
    pub id: i32,
    /// Its native stack: a STACKS id, a stack copy id, or `socket::NO_STACK`.
    pub native_id: i32,
    /// As `SocketRecord::caller`.
    pub caller: u64,
    /// `kind::*`.
    pub kind: u8,
    /// Frames used.
    pub n: u8,
    /// `stack_flag::*`.
    pub flags: u8,
    /// The process's `Target::exec_gen` when walked: frames of an image since replaced by
    /// exec are not named from the new one.
    pub exec_gen: u8,
    /// HotSpot: the JVM's count of unloaded classes when walked (see `JvmProc::unloads`).
    pub generation: u32,
    pub frames: [RtFrame; RT_MAX_FRAMES],
}
crate::assert_layout!(
    RtStack,
    size = 32 + 32 * RT_MAX_FRAMES,
    fields = [
        u32,
        u32,
        i32,
        i32,
        u64,
        u8,
        u8,
        u8,
        u8,
        u32,
        [RtFrame; RT_MAX_FRAMES]
    ]
);

/// `PyProc::layout`: how frames are chained and where a frame says its position.
pub mod py_layout {
    /// 3.8-3.10: `PyFrameObject`s, `f_lasti` an int; each frame is its own interpreter call.
    pub const FRAME_OBJECTS: u8 = 1;
    /// 3.11: `_PyInterpreterFrame`s via `tstate->cframe->current_frame`; `is_entry` marks
    /// the outermost frame of an interpreter call.
    pub const IS_ENTRY: u8 = 2;
    /// 3.12: via `tstate->cframe->current_frame`; a shim frame owned by the C stack
    /// (`owner == 3`) sits below each interpreter call's frames.
    pub const CFRAME_SHIMS: u8 = 3;
    /// 3.13: as 3.12, via `tstate->current_frame`.
    pub const SHIMS: u8 = 4;
}

/// `_PyInterpreterFrame.owner` of the shim frames 3.12+ push when C calls into Python.
pub const PY_FRAME_OWNED_BY_CSTACK: u8 = 3;

/// Value of PY_PROCS (key: tgid): where a CPython process keeps its thread states and frames,
/// found by userspace in its binary (`symbols::python`). Offsets are bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyProc {
    /// Address of the pthread key CPython binds each thread's state to (`Py_tss_t._key` of
    /// `_PyRuntime`'s autoTSSkey, an int). 0: none (the thread-list walk only).
    pub tss_key: u64,
    /// Address of `_PyRuntime.interpreters.head`.
    pub interp_head: u64,
    /// glibc's `struct pthread`: offset of the data of key 0 in its first block of keys
    /// (`specific_1stblock[0].data`). 0: the layout is not known (not glibc).
    pub tsd_first: u32,
    /// Bytes per key (`sizeof(struct pthread_key_data)`).
    pub tsd_stride: u32,
    /// Keys in the first block (`PTHREAD_KEY_2NDLEVEL_SIZE`): higher keys use the list walk.
    pub tsd_keys: u32,
    /// `PyInterpreterState.next`, `.tstate_head`/`.threads.head`.
    pub interp_next: u32,
    pub interp_threads: u32,
    /// `PyThreadState.next`, `.thread_id` (`pthread_self()`: the thread's fsbase).
    pub ts_next: u32,
    pub ts_thread_id: u32,
    /// `PyThreadState.frame` (<= 3.10), `.cframe` (3.11, 3.12) or `.current_frame` (3.13).
    pub ts_frame: u32,
    /// `_PyCFrame.current_frame` (3.11, 3.12).
    pub cframe_frame: u32,
    /// The frame: `f_back`/`previous`, `f_code`/`f_executable`, `f_lasti`/`prev_instr`/
    /// `instr_ptr`, and `is_entry` (3.11) or `owner` (3.12+).
    pub f_back: u32,
    pub f_code: u32,
    pub f_pos: u32,
    pub f_mark: u32,
    /// Bytes read per frame (covers the fields above).
    pub f_size: u32,
    /// `py_layout::*`.
    pub layout: u8,
    /// `Target::exec_gen` of the image these offsets describe.
    pub exec_gen: u8,
    pub _pad: [u8; 6],
}
crate::assert_layout!(
    PyProc,
    size = 80,
    fields = [
        u64, u64, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u8, u8,
        [u8; 6]
    ]
);

/// Largest `PyProc::f_size` (a frame is read at once).
pub const PY_FRAME_READ_MAX: u32 = 128;
/// Largest field offset in a thread state the walk reads.
pub const PY_TSTATE_FIELD_MAX: u32 = 4096;

/// Value of JVM_PROCS (key: tgid): a HotSpot JVM's interpreter and code cache, from its
/// VMStructs tables (`symbols::hotspot`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JvmProc {
    /// The interpreter's code (`AbstractInterpreter::_code`): a return address in
    /// `[interp_lo, interp_hi)` returns into an interpreted frame.
    pub interp_lo: u64,
    pub interp_hi: u64,
    /// The code cache (JIT-compiled methods, stubs, the interpreter).
    pub cache_lo: u64,
    pub cache_hi: u64,
    /// `StubRoutines::_call_stub_return_address`: where Java code returns into the stub that C++
    /// called it through (which keeps rbp: not a compiled frame).
    pub call_stub: u64,
    /// Address in the JVM of its `java.cls.unloadedClasses` counter (hsperfdata, mapped into the
    /// JVM); 0: none (`-XX:-UsePerfData`). Read on every walk and hashed in: once classes are
    /// unloaded a `Method*` may be another method, so stacks are hashed (and named) anew at
    /// once, with no window for a reused method to take an old name.
    pub unloads: u64,
    /// `Method::_constMethod`.
    pub method_const: u32,
    /// `ConstMethod::_code_size` (u16).
    pub const_code_size: u32,
    /// `sizeof(ConstMethod)`: the bytecodes follow it.
    pub const_size: u32,
    /// Bytes below an interpreted frame's frame pointer of its `Method*` and its bcp.
    pub fp_method: u32,
    pub fp_bcp: u32,
    /// `Target::exec_gen` of the image this describes.
    pub exec_gen: u8,
    /// `-XX:+PreserveFramePointer`: compiled Java frames keep rbp, the walk goes through them.
    pub jit_fp: u8,
    pub _pad: [u8; 2],
}
crate::assert_layout!(
    JvmProc,
    size = 72,
    fields = [
        u64, u64, u64, u64, u64, u64, u32, u32, u32, u32, u32, u8, u8, [u8; 2]
    ]
);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for super::RtStack {}
    unsafe impl aya::Pod for super::RtFrame {}
    unsafe impl aya::Pod for super::PyProc {}
    unsafe impl aya::Pod for super::JvmProc {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_spaces_do_not_overlap() {
        assert!(!is_runtime_id(0));
        assert!(!is_runtime_id(8191));
        assert!(is_runtime_id(RT_ID_BASE));
        assert!(is_runtime_id(crate::stack::COPY_ID_BASE - 1));
        assert!(!is_runtime_id(crate::stack::COPY_ID_BASE));
        assert!(!crate::stack::is_copy_id(
            RT_ID_BASE | (0x7f << 22) | 0x3f_ffff
        ));
    }
}
