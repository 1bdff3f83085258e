//! The thin slice through the library: a real BPF program on sys_exit_socket sends this
//! process's new sockets through the ring buffer, with this pid, and nothing from others.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sockleak::bpf::{LoadOptions, Tracer};
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
fn own_sockets_arrive_through_the_ring_buffer() {
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

    sockleak::preflight::ensure_tracefs().unwrap();
    let mut t = Tracer::load(&LoadOptions {
        trace_all: false,
        capture_stacks: true,
        max_sockets: 1024,
        stack_entries: 1024,
        ring_buffer_bytes: 1 << 20,
        stack_sample: 1,
        cgroups: Vec::new(),
    })
    .expect("load BPF");
    let me = std::process::id();
    t.set_target(me, state::ACTIVE).unwrap();
    t.attach(Path::new(sockleak::bpf::TRACEFS)).unwrap();
    let mut ring = t.events.take().unwrap();

    let mine: Vec<OwnedFd> = (0..5).map(|_| new_socket()).collect();
    let mut want: Vec<i32> = mine.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    want.sort();
    let mut other_in = other.stdin.take().unwrap();
    writeln!(other_in, "go").unwrap();
    let mut line = String::new();
    BufReader::new(other.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "made");

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want.len() && Instant::now() < deadline {
        while let Some(item) = ring.next() {
            let (ev, kind) = Event::decode(&item).expect("decodable event");
            assert_ne!(ev.tgid, other_pid, "an untraced process's event arrived");
            assert_eq!(ev.tgid, me);
            if kind == EventKind::Open {
                got.push(ev.fd);
                assert!(ev.record.stack_id >= 0, "a user stack was captured");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    got.sort();
    assert_eq!(got, want, "exactly the sockets this test made");
    // The live map holds them too, with this pid.
    for fd in &want {
        let key = sockleak_common::socket::SockKey {
            tgid: me,
            fd: *fd as u32,
        };
        assert!(t.live.get(&key, 0).is_ok(), "fd {fd} in LIVE");
    }
    drop(other_in);
    let _ = other.wait();
    drop(mine);
}
