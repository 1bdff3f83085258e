//! Network namespaces: a process's sockets, TIME_WAIT entries and ephemeral port range live in
//! its own netns, so they are read from a thread that has joined it.

use std::{fs::File, os::fd::AsRawFd, os::unix::fs::MetadataExt};

use anyhow::{Context, Result, bail};

/// Inode of a process's network namespace (equal inodes: same namespace).
pub fn netns_of(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Runs `f` inside the network namespace of `pid` (on a helper thread: setns only moves the
/// calling thread, so sockleak itself stays where it is).
pub fn in_netns_of<T: Send>(pid: u32, f: impl FnOnce() -> T + Send) -> Result<T> {
    let ours = netns_of(std::process::id());
    if ours.is_some() && ours == netns_of(pid) {
        return Ok(f());
    }
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("opening the network namespace of pid {pid}"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            // SAFETY: a valid namespace fd; affects only this helper thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!(
                    "joining the network namespace of pid {pid}: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns helper thread panicked"))?
    })
}

/// `net.ipv4.ip_local_port_range` of the calling thread's network namespace.
pub fn local_port_range() -> Option<(u32, u32)> {
    parse_port_range(&std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?)
}

pub fn parse_port_range(text: &str) -> Option<(u32, u32)> {
    let mut it = text.split_whitespace().map(|v| v.parse::<u32>());
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// `fs.file-nr` (allocated, max) of the host: ENFILE means the whole system ran out.
pub fn host_file_nr() -> Option<(u64, u64)> {
    parse_file_nr(&std::fs::read_to_string("/proc/sys/fs/file-nr").ok()?)
}

pub fn parse_file_nr(text: &str) -> Option<(u64, u64)> {
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [allocated, _unused, max] => Some((allocated, max)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("40000 40004"), Some((40000, 40004)));
        assert_eq!(parse_port_range("9 1"), None);
        assert_eq!(parse_port_range("x"), None);
        assert_eq!(
            parse_file_nr("1216\t0\t9223372036854775807\n"),
            Some((1216, 9223372036854775807))
        );
        assert_eq!(parse_file_nr("1 2"), None);
    }

    #[test]
    fn own_namespace_runs_inline() {
        let me = std::process::id();
        assert_eq!(in_netns_of(me, || 7).unwrap(), 7);
        assert!(netns_of(me).is_some());
    }
}
