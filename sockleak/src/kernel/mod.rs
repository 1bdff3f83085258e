//! The kernel side, from userspace: loading the BPF object and talking to its maps (`bpf`, the
//! only module that holds the programs), batched ring-buffer reads, the BPF clock, kernel
//! offsets read from BTF, the start-up checks and the kernel unwinder's maps. Uses nothing of sockleak above `error`.

pub mod batch;
pub mod bpf;
pub mod bpf_stats;
pub mod clock;
pub mod features;
pub mod hooks;
pub mod offsets;
pub mod preflight;
pub mod unwind_maps;
