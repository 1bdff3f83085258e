//! The thin slice through the library: the real programs keep this process's sockets in the
//! live map and count them in its target entry, tell userspace about a new call site through
//! the ring buffer, and record nothing of a process they do not trace.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sockleak::kernel::bpf::{LoadOptions, Tracer};
use sockleak_common::{
    event::{Event, EventKind},
    target::state,
};

fn new_socket() -> OwnedFd {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0);
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[test]
fn own_sockets_are_kept_and_counted_by_the_kernel() {
    if !common::require_bpf() {
        return;
    }
    // Another process, started before attach (so not a traced child), makes sockets too.
    let mut other = Command::new("python3")
        .args([
            "-c",
            "import socket,sys\nsys.stdin.readline()\ns=[socket.socket() for _ in range(5)]\nprint('made', flush=True)\nsys.stdin.readline()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let other_pid = other.id();

    let tracefs = sockleak::kernel::preflight::ensure_tracefs().unwrap();
    let btf = btf_rs::Btf::from_file(sockleak::kernel::preflight::BTF).unwrap();
    let (offsets, missing) = sockleak::kernel::offsets::read(&btf);
    assert!(missing.is_empty(), "{missing:?}");
    let mut t = Tracer::load(
        &LoadOptions {
            trace_all: false,
            capture_stacks: true,
            max_sockets: 1024,
            stack_entries: 1024,
            ring_buffer_bytes: 1 << 20,
            stack_sample: 1,
            stack_copy_bytes: sockleak_common::stack::STACK_COPY_MAX as u32,
            stack_copy_ring_bytes: 1 << 20,
            unwind_table_rows: 1 << 16,
            cgroups: Vec::new(),
            offsets,
            task_fsbase: sockleak::kernel::offsets::task_fsbase(&btf).unwrap_or(0),
        },
        Path::new(&tracefs),
    )
    .expect("load BPF");
    let me = std::process::id();
    t.add_target(me, state::ACTIVE).unwrap();
    t.attach().unwrap();
    let mut ring = t.events.take().unwrap();

    // Five sockets from one call site (one closure, called in a loop).
    let mut mine: Vec<OwnedFd> = (0..5).map(|_| new_socket()).collect();
    let mut want: Vec<u32> = mine.iter().map(|f| f.as_raw_fd() as u32).collect();
    want.sort();
    let mut other_in = other.stdin.take().unwrap();
    writeln!(other_in, "go").unwrap();
    let mut line = String::new();
    BufReader::new(other.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "made");

    let live = t.live();
    let mut fds: Vec<u32> = live
        .iter()
        .filter(|(k, _)| k.tgid == me)
        .map(|(k, _)| k.fd)
        .collect();
    fds.sort();
    assert_eq!(fds, want, "exactly the sockets this test made");
    assert!(live.iter().all(|(k, _)| k.tgid != other_pid), "untraced");
    let ids: std::collections::BTreeSet<i32> = live
        .iter()
        .filter(|(k, _)| k.tgid == me)
        .map(|(_, r)| r.stack_id)
        .collect();
    assert_eq!(ids.len(), 1, "one call site, one stack: {ids:?}");
    let id = *ids.iter().next().unwrap();
    assert!(id >= 0, "a user stack was captured");

    // Two closes: the live map and the counters follow.
    mine.truncate(3);
    let entry = |t: &Tracer| t.targets().into_iter().find(|(p, _)| *p == me).unwrap().1;
    let e = entry(&t);
    assert_eq!(e.opened, 5, "closes are not counted, only opens");
    assert_eq!(t.live().iter().filter(|(k, _)| k.tgid == me).count(), 3);

    // The call site was announced once, through the ring buffer.
    let mut announced = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while announced.is_empty() && Instant::now() < deadline {
        while let Some(item) = ring.next() {
            let (ev, kind) = Event::decode(&item).expect("decodable event");
            assert_ne!(ev.tgid, other_pid, "an untraced process's event arrived");
            if kind == EventKind::NewStack {
                announced.push(ev.record.stack_id);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(announced, vec![id]);
    drop(other_in);
    let _ = other.wait();
    drop(mine);
}
