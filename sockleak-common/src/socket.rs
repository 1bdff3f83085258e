//! The live-socket map: key and value, and the endpoint a socket talks to.

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
        }
    }
}

/// `stack_id` value when no stack was captured (stacks off, or the kernel could not store it).
pub const NO_STACK: i32 = -1;
/// `stack_id` value when stack sampling skipped this socket (`--stack-sample`): userspace
/// attributes it to the latest sampled stack with the same leaf caller.
pub const SAMPLED_OUT: i32 = -2;

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
    pub _pad: [u8; 3],
    /// Peer: the connect(2) argument or the address accept(2) returned.
    pub remote: Endpoint,
}
crate::assert_layout!(
    SocketRecord,
    size = 72,
    fields = [u64, u64, i32, u32, u32, u16, u16, u8, [u8; 3], Endpoint]
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
        _pad: [0; 3],
        remote: Endpoint::UNKNOWN,
    };
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::SocketRecord {}
}

/// Value of the TCP_STATES map (key: socket cookie, as inet_diag reports it): when a TCP
/// socket entered its current state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// bpf_ktime_get_ns() at the change.
    pub ts_ns: u64,
    /// New TCP state (TCP_ESTABLISHED = 1 ... TCP_NEW_SYN_RECV = 12).
    pub state: u32,
    pub _pad: u32,
}
crate::assert_layout!(StateChange, size = 16, fields = [u64, u32, u32]);

#[cfg(feature = "user")]
// SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
unsafe impl aya::Pod for StateChange {}
