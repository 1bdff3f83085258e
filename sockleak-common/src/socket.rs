//! The live-socket map: key and value, and the endpoint a socket talks to.

use crate::origin::ConnOrigin;

/// Key of the kernel's live-socket map: one entry per socket fd of a traced process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub tgid: u32,
    pub fd: u32,
}
crate::assert_layout!(SockKey, size = 8, fields = [u32, u32]);

/// Bytes of address kept per endpoint: an IPv6 address, or the start of an AF_UNIX path.
pub const ENDPOINT_ADDR_LEN: usize = 32;

/// A socket address as the process passed or received it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// AF_* family; 0 when unknown.
    pub family: u16,
    /// Port in host byte order (inet families only).
    pub port: u16,
    /// IPv4 in the first 4 bytes, IPv6 in 16, or an AF_UNIX path (NUL padded; an abstract name
    /// starts with NUL).
    pub addr: [u8; ENDPOINT_ADDR_LEN],
}
crate::assert_layout!(
    Endpoint,
    size = 36,
    fields = [u16, u16, [u8; ENDPOINT_ADDR_LEN]]
);

impl Endpoint {
    pub const UNKNOWN: Endpoint = Endpoint {
        family: 0,
        port: 0,
        addr: [0; ENDPOINT_ADDR_LEN],
    };
}

/// How a socket fd came to be.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Socket = 1,
    Socketpair = 2,
    Accept = 3,
    Accept4 = 4,
    /// dup, dup2, dup3 or fcntl(F_DUPFD*) of a socket fd.
    Dup = 5,
    /// Inherited from the parent at fork.
    Inherited = 6,
    /// Open before sockleak started (seeded from /proc).
    Preexisting = 7,
    /// Received from another process: SCM_RIGHTS over a unix socket, or pidfd_getfd(2).
    Received = 8,
    /// Made by io_uring (IORING_OP_SOCKET, IORING_OP_ACCEPT, multishot accept).
    IoUring = 9,
    /// Found in /proc by reconciliation, through a path sockleak does not hook.
    Unseen = 10,
}

impl Origin {
    pub fn from_u8(v: u8) -> Option<Origin> {
        Some(match v {
            1 => Origin::Socket,
            2 => Origin::Socketpair,
            3 => Origin::Accept,
            4 => Origin::Accept4,
            5 => Origin::Dup,
            6 => Origin::Inherited,
            7 => Origin::Preexisting,
            8 => Origin::Received,
            9 => Origin::IoUring,
            10 => Origin::Unseen,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Socket => "socket",
            Origin::Socketpair => "socketpair",
            Origin::Accept => "accept",
            Origin::Accept4 => "accept4",
            Origin::Dup => "dup",
            Origin::Inherited => "inherited",
            Origin::Preexisting => "preexisting",
            Origin::Received => "received",
            Origin::IoUring => "io_uring",
            Origin::Unseen => "unseen",
        }
    }
}

/// `stack_id` value when no stack was captured (stacks off, or the kernel could not store it).
pub const NO_STACK: i32 = -1;
/// `stack_id` value when stack sampling skipped this socket (`--stack-sample`): userspace
/// attributes it to the latest sampled stack with the same leaf caller.
pub const SAMPLED_OUT: i32 = -2;

/// `SocketRecord::flags`: the stack was not walked (`--stack-sample`) and `stack_id` was
/// taken from the latest walked stack with the same leaf caller.
pub const REC_SAMPLED: u8 = 1;

/// Value of the live-socket map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) when the fd appeared.
    pub created_ns: u64,
    /// Return address at the user stack pointer (x86_64) or link register (arm64) at the
    /// syscall: the caller of a frameless syscall wrapper, which frame-pointer unwinding skips.
    /// 0 when not captured.
    pub caller: u64,
    /// User stack id in the STACKS map, or a negative value.
    pub stack_id: i32,
    /// Thread that made the fd.
    pub tid: u32,
    /// socket(2) type argument, flags included (SOCK_CLOEXEC, SOCK_NONBLOCK).
    pub sock_type: u32,
    /// AF_* family; 0 when unknown (accepted on a listener sockleak did not see made).
    pub family: u16,
    pub protocol: u16,
    /// An [`Origin`].
    pub origin: u8,
    /// `REC_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Received sockets: the sender's pid when the kernel told it (0: unknown).
    pub peer_pid: u32,
    /// Received sockets: the fd they arrived through (a unix socket, or the pidfd); -1.
    pub via_fd: i32,
    /// Peer: the connect(2) argument or the address accept(2) returned.
    pub remote: Endpoint,
    /// The object the runtime made the socket for, where a uprobe told: a Go program's
    /// `*http.Transport` (see `target::flag::GO_HTTP`). 0: unknown.
    pub owner: u64,
    /// Where the user asked for this connection when a runtime made it later on their behalf
    /// (Go's dial goroutine, a later Node tick), joined by uprobes: see `crate::origin`.
    /// Written after the socket was made (per request, for Go).
    pub conn: ConnOrigin,
}
crate::assert_layout!(
    SocketRecord,
    size = 112,
    fields = [
        u64, u64, i32, u32, u32, u16, u16, u8, u8, [u8; 2], u32, i32, Endpoint, u64, ConnOrigin
    ]
);

impl SocketRecord {
    pub const EMPTY: SocketRecord = SocketRecord {
        created_ns: 0,
        caller: 0,
        stack_id: NO_STACK,
        tid: 0,
        sock_type: 0,
        family: 0,
        protocol: 0,
        origin: 0,
        flags: 0,
        _pad: [0; 2],
        peer_pid: 0,
        via_fd: -1,
        remote: Endpoint::UNKNOWN,
        owner: 0,
        conn: ConnOrigin::NONE,
    };
}

/// Key of the STACK_CACHE map: a process and the hash of its frame-pointer chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub hash: u64,
    pub tgid: u32,
    pub _pad: u32,
}
crate::assert_layout!(StackKey, size = 16, fields = [u64, u32, u32]);

/// Key of GO_DIALS: a goroutine of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    /// The goroutine's `g` (R14 on x86_64, X28 on arm64 in Go's register ABI).
    pub g: u64,
    pub tgid: u32,
    pub _pad: u32,
}
crate::assert_layout!(GoroutineKey, size = 16, fields = [u64, u32, u32]);

/// Key of the DESTS map: connects of one process to one destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub tgid: u32,
    pub family: u16,
    pub port: u16,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub addr: [u8; 16],
}
crate::assert_layout!(DestKey, size = 24, fields = [u32, u16, u16, [u8; 16]]);

/// Value of the DESTS map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestStats {
    /// connect(2) calls that succeeded or are in progress.
    pub connects: u64,
    /// bpf_ktime_get_ns() of the first one.
    pub first_ns: u64,
}
crate::assert_layout!(DestStats, size = 16, fields = [u64, u64]);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::SocketRecord {}
    unsafe impl aya::Pod for super::StackKey {}
    unsafe impl aya::Pod for super::DestKey {}
    unsafe impl aya::Pod for super::DestStats {}
    unsafe impl aya::Pod for super::GoroutineKey {}
}
