//! Readers of the host: `/proc`, the kernel's socket tables (sock_diag), network namespaces,
//! cgroups, fd limits, how a process was started, and the masking of what is read from a
//! process's environment. Parsers are pure functions; the thin I/O wrappers around them turn
//! "process went away" into `None`. Uses nothing of sockleak above `error`.

pub mod cgroup;
pub mod cri;
pub mod launcher;
pub mod limits;
pub mod netns;
pub mod procfs;
pub mod procmem;
pub mod redact;
pub mod sockdiag;
pub mod tcp_ages;
