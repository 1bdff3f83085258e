//! sockleak's userspace: loads the kernel programs, mirrors each traced process's live
//! sockets from their events, and reports leak suspects and failed calls.

// Layers, lowest first: a module uses only the layers above it in this list (the `layers`
// unit test checks every `crate::` path). `error` is shared by all.
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod error;
pub mod host;
pub mod kernel;
pub mod model;
pub mod output;
pub mod report;
pub mod serve;
pub mod symbols;
pub mod trace;
pub mod tracker;

#[cfg(test)]
mod fuzz_props;
#[cfg(test)]
mod layers;

/// Runs every parser of text sockleak does not control (/proc, /sys, mountinfo, cgroup files,
/// tracefs formats) on `s`. Shared by the proptest properties and the cargo-fuzz target.
#[doc(hidden)]
pub fn exercise_parsers(s: &str) {
    use crate::{
        host::{cgroup, launcher, netns, procfs, redact},
        kernel::{bpf, preflight},
        symbols::{gohttp, golayout, gopclntab},
    };

    let _ = procfs::parse_status(s);
    let _ = procfs::parse_fd_limit(s);
    let _ = procfs::parse_stat_start_time(s);
    let _ = procfs::parse_stat_ppid(s);
    let _ = procfs::parse_stat_kthread(s);
    let _ = procfs::parse_environ(s.as_bytes(), diagnose::connects_to_itself::PROXY_VARS);
    let _ = redact::host_port(s);
    let _ = redact::env_value("NO_PROXY", s);
    let _ = launcher::detect(&[], s);
    if let Some(t) = gopclntab::Pclntab::parse(s.as_bytes()) {
        let _ = t.lookup(0x401000);
        let _ = t.name(0);
        let _ = t.line(0x401000);
    }
    let _ = gohttp::inspect(s.as_bytes());
    let _ = golayout::inspect(s.as_bytes());
    let _ = golayout::buildinfo_version(s.as_bytes());
    let _ = golayout::decode_name(s.as_bytes());
    let _ = golayout::parse_version(s);
    let _ = procfs::parse_socket_link(s);
    let _ = procfs::parse_maps(s);
    let _ = procfs::kind_of_protocol(s);
    let _ = cgroup::parse_cgroup2_mount(s);
    let _ = cgroup::parse_proc_cgroup(s);
    let _ = cgroup::container_id(s);
    let _ = cgroup::container_cgroup(s);
    let _ = host::cri::pods::pods_root(s);
    let _ = host::cri::pods::parse_selector(s);
    let _ = serve::metrics::parse_labels(s);
    let _ = netns::parse_port_range(s);
    let _ = netns::parse_file_nr(s);
    let _ = preflight::parse_cap_eff(s);
    let _ = bpf::parse_field_offset(s, "group_dead");
}

/// Applies any event sequence, however inconsistent, to a fresh tracker and checks what must
/// hold whatever the input: no panic, a fork always yields the child, an exit always finalizes
/// the process. Shared by the proptest property and the cargo-fuzz target.
#[doc(hidden)]
pub fn exercise_tracker(events: impl IntoIterator<Item = sockleak_common::event::Event>) {
    use sockleak_common::event::EventKind;
    let mut t = tracker::Tracker::default();
    let mut actions = Vec::new();
    for (i, ev) in events.into_iter().enumerate() {
        let Some(kind) = EventKind::from_u8(ev.kind) else {
            continue;
        };
        t.apply(&ev, kind, &mut actions);
        for a in actions.drain(..) {
            t.forgot(a, i % 2 == 0);
        }
        match kind {
            EventKind::Fork => assert!(t.procs.contains_key(&(ev.arg as u32))),
            EventKind::Exit if t.exited.len() < tracker::MAX_EXITED => {
                assert!(!t.procs.contains_key(&ev.tgid));
                let last = t.exited.last().map(|p| (p.tgid, p.exited_ns));
                assert_eq!(last, Some((ev.tgid, Some(ev.ts_ns))));
            }
            _ => {}
        }
    }
}
