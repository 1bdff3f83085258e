//! HotSpot interpreted frames, met on the frame-pointer walk (see stack.rs): no JVM flag.
//!
//! The template interpreter always keeps rbp as a frame pointer, and libjvm and the JDK's
//! native libraries are built with frame pointers, so the walk reaches every interpreted frame.
//! A return address inside the interpreter's code returns into an interpreted frame; below that
//! frame's pointer sit its `Method*` and its bytecode pointer. The method and a checked
//! bytecode index join the hash (every interpreted frame returns to one of a few interpreter
//! addresses, so return addresses alone merge different Java call paths) and are recorded for
//! userspace to name.
//!
//! JIT-compiled frames keep no frame pointer without `-XX:+PreserveFramePointer`: a return
//! address into compiled code called from compiled or interpreted code (not a native wrapper,
//! whose callee is C) ends the walk there, rather than following rbp into garbage.

use aya_ebpf::helpers::bpf_probe_read_user;
use sockleak_common::{
    runtime::{JvmProc, NO_BCI, RtFrame, kind, stack_flag},
    target::flag,
};

use crate::{
    filter::StackHow,
    maps::JVM_PROCS,
    runtime,
    stack::{WINDOW_WORDS, mix},
};

/// What the frame-pointer walk carries for a JVM (`on` 0: not one).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct JvmWalk {
    interp_lo: u64,
    interp_hi: u64,
    cache_lo: u64,
    cache_hi: u64,
    call_stub: u64,
    unloads: u64,
    method_const: u32,
    const_code_size: u32,
    const_size: u32,
    fp_method: u32,
    fp_bcp: u32,
    pub on: u8,
    jit_fp: u8,
    exec_gen: u8,
    /// The previous return address was into the code cache.
    prev_cache: u8,
    _pad: [u8; 1],
}

impl JvmWalk {
    /// Sets the walk state for the current process, in place (it lives in a map, and a copy
    /// on the stack would count against the 512 bytes): off unless it is a JVM whose layout
    /// userspace found for its current image.
    #[inline(always)]
    pub fn set(w: &mut JvmWalk, tgid: u32, how: StackHow) {
        w.on = 0;
        if how.flags & flag::HOTSPOT == 0 {
            return;
        }
        let Some(p) = (unsafe { JVM_PROCS.get(tgid) }) else {
            return;
        };
        let p: &JvmProc = p;
        if p.exec_gen != how.exec_gen {
            return;
        }
        w.interp_lo = p.interp_lo;
        w.interp_hi = p.interp_hi;
        w.cache_lo = p.cache_lo;
        w.cache_hi = p.cache_hi;
        w.call_stub = p.call_stub;
        w.unloads = p.unloads;
        w.method_const = p.method_const;
        w.const_code_size = p.const_code_size;
        w.const_size = p.const_size;
        w.fp_method = p.fp_method;
        w.fp_bcp = p.fp_bcp;
        w.on = 1;
        w.jit_fp = p.jit_fp;
        w.exec_gen = p.exec_gen;
        w.prev_cache = 0;
    }

    /// Before the walk: `caller` is the leaf's caller (native code, normally). The JVM's count
    /// of unloaded classes joins the hash: after class unloading the same `Method*`s may be
    /// other methods.
    #[inline(always)]
    pub fn start(&mut self, hash: &mut u64, caller: u64) {
        if self.on == 0 {
            return;
        }
        let unloaded = if self.unloads == 0 {
            0
        } else {
            unsafe { bpf_probe_read_user(self.unloads as *const u64) }.unwrap_or(0)
        };
        *hash = mix(*hash, unloaded);
        if !runtime::begin(kind::HOTSPOT, unloaded as u32, self.exec_gen) {
            self.on = 0;
            return;
        }
        self.prev_cache = u8::from(self.in_cache(caller));
    }

    /// Interpreted frames recorded (counted in the scratch record, not here: a counter in the
    /// loop's state would make the verifier walk every value of it).
    #[inline(always)]
    pub fn found(&self) -> u8 {
        if self.on == 0 { 0 } else { runtime::count() }
    }

    #[inline(always)]
    fn in_cache(&self, a: u64) -> bool {
        self.cache_lo <= a && a < self.cache_hi
    }

    /// A word below the frame at `next`: from the walk's window when it holds it (the window
    /// starts at an 8-aligned `base`; `addr` is 8-aligned).
    #[inline(always)]
    fn slot(buf: &[u64; WINDOW_WORDS], base: u64, have: u64, addr: u64) -> Option<u64> {
        if have != 0 && base & 7 == 0 && addr >= base {
            let off = addr - base;
            if off <= ((WINDOW_WORDS - 1) * 8) as u64 {
                return Some(buf[((off / 8) as usize) & (WINDOW_WORDS - 1)]);
            }
        }
        unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
    }

    /// One step of the walk: `ra` returns into the frame whose frame pointer is `next`.
    /// Returns true to stop the walk.
    #[inline(always)]
    pub fn step(
        &mut self,
        hash: &mut u64,
        buf: &[u64; WINDOW_WORDS],
        base: u64,
        have: u64,
        next: u64,
        ra: u64,
    ) -> bool {
        let callee_in_cache = self.prev_cache != 0;
        let in_cache = self.in_cache(ra);
        self.prev_cache = u8::from(in_cache);
        if self.interp_lo <= ra && ra < self.interp_hi {
            // An interpreted frame's frame pointer is a word address.
            if next & 7 != 0 || next < u64::from(self.fp_bcp) {
                return false;
            }
            let Some(method) = Self::slot(buf, base, have, next - u64::from(self.fp_method)) else {
                runtime::flag(stack_flag::READ_FAILED);
                return false;
            };
            let bcp =
                Self::slot(buf, base, have, next - u64::from(self.fp_bcp)).unwrap_or_default();
            let Ok(cm) = (unsafe {
                bpf_probe_read_user((method + u64::from(self.method_const)) as *const u64)
            }) else {
                runtime::flag(stack_flag::READ_FAILED);
                return false;
            };
            // A bytecode index only when the bcp lies in the method's bytecodes: a native
            // method's frame holds 0 there, or a stale register.
            let size = unsafe {
                bpf_probe_read_user((cm + u64::from(self.const_code_size)) as *const u16)
            }
            .unwrap_or(0);
            let start = cm + u64::from(self.const_size);
            let bci = if bcp >= start && bcp - start < u64::from(size) {
                (bcp - start) as u32
            } else {
                NO_BCI
            };
            *hash = mix(mix(*hash, method), u64::from(bci));
            let f = RtFrame {
                ptr: method,
                at: ra,
                cookie: cm,
                off: bci,
                flags: 0,
            };
            runtime::push(f);
            return false;
        }
        // Compiled Java code called by Java code: its rbp is not a frame pointer. (The call
        // stub, through which C++ calls Java, keeps rbp.)
        if in_cache && callee_in_cache && self.jit_fp == 0 && ra != self.call_stub {
            runtime::flag(stack_flag::JIT_CUT);
            return true;
        }
        false
    }
}
