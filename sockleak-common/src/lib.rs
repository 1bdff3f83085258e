//! Types shared by the kernel programs (`sockleak-ebpf`) and the loader (`sockleak`).
//!
//! Every type here is `#[repr(C)]`, has no implicit padding (checked at compile time with
//! `assert_layout!`) and is plain old data, so both halves agree on the bytes.
#![no_std]

// Tests (host only) may use std.
#[cfg(test)]
extern crate std;

pub mod counters;
pub mod event;
pub mod kernel;
pub mod origin;
pub mod runtime;
pub mod socket;
pub mod stack;
pub mod target;
pub mod tracepoint;
pub mod unwind;

/// Fails the build if a shared type grows implicit padding: its size must equal the sum of its
/// declared fields.
#[macro_export]
macro_rules! assert_layout {
    ($ty:ty, size = $size:expr, fields = [$($field:ty),+ $(,)?]) => {
        const _: () = {
            assert!(core::mem::size_of::<$ty>() == $size);
            assert!(0 $(+ core::mem::size_of::<$field>())+ == $size);
        };
    };
}
