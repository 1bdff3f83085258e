//! From addresses to names: stack symbolization (blazesym), DWARF unwinding of stack copies
//! and the kernel's unwind tables (`unwind_tables`),
//! the runtimes' own symbol sources (JIT perf maps, Go's `.gopclntab`, the Go uprobe's binary
//! inspection, CPython's and HotSpot's interpreted frames read from their own structures) and
//! the runtime-aware call-site picker. Uses `kernel` (stack maps, uprobes) and
//! `host` (/proc).

pub mod callsite;
pub mod elf;
pub mod glibc;
pub mod gohttp;
pub mod golayout;
pub mod gopclntab;
pub mod hotspot;
pub mod javamap;
pub mod nodeuv;
pub mod perfmap;
pub mod python;
pub mod runtime_frames;
pub mod runtimes;
pub mod stacks;
pub mod unwind;
pub mod unwind_tables;
