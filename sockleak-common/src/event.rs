//! Events the kernel programs send through the EVENTS ring buffer.

use crate::socket::SocketRecord;

/// What happened. Stored as `u8` in [`Event::kind`]. A socket's open and close are not events:
/// the kernel keeps the live map and per-process counters, and userspace reads them.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A fork-pending process closed fd `fd` that the live map does not hold (userspace may
    /// have seeded it meanwhile); `arg`: 1 when the kernel removed an entry itself.
    Close = 2,
    /// A fork-pending process made `arg` a copy of `fd`, which the live map does not hold.
    Dup = 4,
    /// A fork-pending process called close_range(`fd`, `arg`, `flags`).
    CloseRange = 5,
    /// Process `tgid` forked; `arg` is the new process's pid.
    Fork = 6,
    /// Process `tgid` called execve successfully; `arg` 0: the kernel dropped the sockets
    /// closed on exec, -1: it could not (userspace reconciles with /proc).
    Exec = 7,
    /// The last thread of process `tgid` exited: `arg` sockets the kernel opened over its life,
    /// `arg3` io_uring direct sockets opened << 32 | closed; `flags` 1: every socket it held was
    /// handed over in the `ExitSocket` events that came first.
    Exit = 8,
    /// `syscall` failed with errno `arg`; `fd` is the socket for connect, the listener for accept.
    Failure = 9,
    /// A socket fd `fd` the process still held when it exited (`record`).
    ExitSocket = 10,
    /// The first socket of a process at a call site not seen before: `record.stack_id` and
    /// `record.caller` name it, for userspace to symbolize while the process is alive.
    NewStack = 11,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<EventKind> {
        Some(match v {
            2 => EventKind::Close,
            4 => EventKind::Dup,
            5 => EventKind::CloseRange,
            6 => EventKind::Fork,
            7 => EventKind::Exec,
            8 => EventKind::Exit,
            9 => EventKind::Failure,
            10 => EventKind::ExitSocket,
            11 => EventKind::NewStack,
            _ => return None,
        })
    }
}

/// The syscall behind an event. Stored as `u8` in [`Event::syscall`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Syscall {
    None = 0,
    Socket = 1,
    Socketpair = 2,
    Accept = 3,
    Accept4 = 4,
    Connect = 5,
    Close = 6,
    CloseRange = 7,
    Dup = 8,
    Dup2 = 9,
    Dup3 = 10,
    Fcntl = 11,
    Recvmsg = 12,
    Recvmmsg = 13,
    PidfdGetfd = 14,
    IoUring = 15,
}

impl Syscall {
    pub fn from_u8(v: u8) -> Option<Syscall> {
        Some(match v {
            0 => Syscall::None,
            1 => Syscall::Socket,
            2 => Syscall::Socketpair,
            3 => Syscall::Accept,
            4 => Syscall::Accept4,
            5 => Syscall::Connect,
            6 => Syscall::Close,
            7 => Syscall::CloseRange,
            8 => Syscall::Dup,
            9 => Syscall::Dup2,
            10 => Syscall::Dup3,
            11 => Syscall::Fcntl,
            12 => Syscall::Recvmsg,
            13 => Syscall::Recvmmsg,
            14 => Syscall::PidfdGetfd,
            15 => Syscall::IoUring,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Syscall::None => "none",
            Syscall::Socket => "socket",
            Syscall::Socketpair => "socketpair",
            Syscall::Accept => "accept",
            Syscall::Accept4 => "accept4",
            Syscall::Connect => "connect",
            Syscall::Close => "close",
            Syscall::CloseRange => "close_range",
            Syscall::Dup => "dup",
            Syscall::Dup2 => "dup2",
            Syscall::Dup3 => "dup3",
            Syscall::Fcntl => "fcntl",
            Syscall::Recvmsg => "recvmsg",
            Syscall::Recvmmsg => "recvmmsg",
            Syscall::PidfdGetfd => "pidfd_getfd",
            Syscall::IoUring => "io_uring",
        }
    }
}

/// One ring-buffer record. Fixed size so the kernel can reserve it in one step.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// An [`EventKind`].
    pub kind: u8,
    /// A [`Syscall`].
    pub syscall: u8,
    /// close_range flags.
    pub flags: u16,
    pub fd: i32,
    /// Kind-specific: new fd (Dup), last fd (CloseRange), child pid (Fork), errno (Failure),
    /// sockets opened (Exit).
    pub arg: i64,
    /// Kind-specific (CloseRange: 1 when the kernel applied it).
    pub arg2: u64,
    /// Kind-specific (Exit: direct sockets).
    pub arg3: u64,
    pub record: SocketRecord,
}
crate::assert_layout!(
    Event,
    size = 160,
    fields = [u64, u32, u32, u8, u8, u16, i32, i64, u64, u64, SocketRecord]
);

impl Event {
    pub const EMPTY: Event = Event {
        ts_ns: 0,
        tgid: 0,
        tid: 0,
        kind: 0,
        syscall: 0,
        flags: 0,
        fd: -1,
        arg: 0,
        arg2: 0,
        arg3: 0,
        record: SocketRecord::EMPTY,
    };
}

#[cfg(feature = "user")]
mod user {
    use super::Event;

    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for Event {}

    /// Why a ring-buffer record could not be decoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DecodeError {
        /// The record is not `size_of::<Event>()` bytes long.
        Size(usize),
        /// Unknown `kind` byte: the loader and the object come from different builds.
        Kind(u8),
    }

    impl core::fmt::Display for DecodeError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                DecodeError::Size(n) => write!(
                    f,
                    "event of {n} bytes, expected {}",
                    core::mem::size_of::<Event>()
                ),
                DecodeError::Kind(k) => write!(f, "unknown event kind {k}"),
            }
        }
    }

    impl Event {
        /// Decodes one ring-buffer record. Records are only 8-byte aligned by the kernel, and
        /// callers may hand in any slice, so this copies rather than casts.
        pub fn decode(bytes: &[u8]) -> Result<(Event, super::EventKind), DecodeError> {
            if bytes.len() != core::mem::size_of::<Event>() {
                return Err(DecodeError::Size(bytes.len()));
            }
            // SAFETY: length checked above; Event is Pod (every bit pattern valid).
            let ev: Event = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let kind = super::EventKind::from_u8(ev.kind).ok_or(DecodeError::Kind(ev.kind))?;
            Ok((ev, kind))
        }
    }
}

#[cfg(feature = "user")]
pub use user::DecodeError;

#[cfg(all(test, feature = "user"))]
mod tests {
    use proptest::prelude::*;
    use std::vec::Vec;

    use super::*;

    fn bytes_of(ev: &Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) plain data without padding.
        unsafe {
            core::slice::from_raw_parts(
                (ev as *const Event).cast::<u8>(),
                core::mem::size_of::<Event>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn round_trip() {
        let mut ev = Event::EMPTY;
        ev.kind = EventKind::Dup as u8;
        ev.arg2 = 5;
        ev.fd = 3;
        ev.arg = 9;
        ev.record.caller = 0xdead;
        let (back, kind) = Event::decode(&bytes_of(&ev)).unwrap();
        assert_eq!((back, kind), (ev, EventKind::Dup));
    }

    proptest! {
        /// Any bytes: decoded or rejected, never a panic; a decoded kind is a known one.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            match Event::decode(&bytes) {
                Ok((ev, kind)) => {
                    prop_assert_eq!(bytes.len(), core::mem::size_of::<Event>());
                    prop_assert_eq!(ev.kind, kind as u8);
                }
                Err(DecodeError::Size(n)) => prop_assert_ne!(n, core::mem::size_of::<Event>()),
                Err(DecodeError::Kind(k)) => prop_assert!(EventKind::from_u8(k).is_none()),
            }
        }
    }
}
