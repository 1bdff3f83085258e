//! Atomic adds for counters shared by a process's threads. The BPF target has atomic add and
//! or but no compare-and-swap, so core's `Atomic*::fetch_add` is not offered: the intrinsics
//! are (nightly only, like the rest of this crate).

use core::intrinsics::{AtomicOrdering, atomic_and, atomic_or, atomic_xadd};

#[inline(always)]
pub fn add_u64(p: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
pub fn add_u32(p: *mut u32, v: u32) {
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
pub fn or_u64(p: *mut u64, v: u64) {
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
pub fn and_u64(p: *mut u64, v: u64) {
    unsafe { atomic_and::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}
