//! sockleak's userspace: loads the kernel programs, mirrors each traced process's live
//! sockets from their events, and reports leak suspects and failed calls.

pub mod bpf;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod netns;
pub mod output;
pub mod preflight;
pub mod procfs;
pub mod report;
pub mod serve;
pub mod sockdiag;
pub mod stacks;
pub mod trace;
pub mod tracker;

#[cfg(test)]
mod fuzz_props;
