//! Where the user asked for a connection that a runtime made later, on their behalf: Go's
//! net/http dials on a goroutine of its own, Node's libuv makes the socket on a later tick. A
//! uprobe where the user's code runs records its stack, keyed by an object that later reaches
//! the socket (a `*wantConn`, a `*persistConn`, a libuv handle); the kernel joins the two and
//! writes the origin into the socket's [`ConnOrigin`] (`SocketRecord::conn`).

/// `ConnOrigin::join`: how a socket's origin was joined to it.
pub mod join {
    /// No origin: the socket's own stack is all there is.
    pub const NONE: u8 = 0;
    /// Go: the stack of `(*Transport).queueForDial(w)` (the request that caused the dial),
    /// joined through `(*wantConn).tryDeliver(w, pc)` on the dial goroutine.
    pub const GO_WANTCONN: u8 = 1;
    /// Go: the stack of the latest `(*persistConn).roundTrip(pc)` on the connection (every
    /// HTTP/1 request, a reused idle connection included).
    pub const GO_ROUNDTRIP: u8 = 2;
    /// Node: the stack of `uv_tcp_init(loop, handle)` (made synchronously inside
    /// `net.connect`), joined when `uv_tcp_connect`/`uv_tcp_bind` of that handle makes it.
    pub const NODE_HANDLE: u8 = 3;
}

/// `ConnOrigin::state`: what the runtime last did with the connection.
pub mod conn_state {
    /// Go: a request went out on it and it has not gone back to its Transport's idle pool
    /// since (a response body that is never closed keeps it so).
    pub const GO_CHECKED_OUT: u8 = 1;
    /// Go: back in its Transport's idle pool (`tryPutIdleConn`).
    pub const GO_IDLE: u8 = 2;
}

/// The origin of a socket, part of its `SocketRecord`. All zero but the stack ids (NO_STACK)
/// when there is none.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnOrigin {
    /// Return address at the origin function's entry (its caller, which a frame-pointer walk
    /// from the function's first instruction misses).
    pub caller: u64,
    /// The origin's user stack (STACKS id or stack copy id), or NO_STACK.
    pub stack_id: i32,
    /// Node: the origin of the TCP handle closed on this thread since its previous connect,
    /// and that one's: what a happy-eyeballs retry (a handle Node made itself, on a later
    /// tick) inherits when its own stack holds no application frame. Stacks only (their
    /// callers are runtime frames); NO_STACK when none.
    pub alt_stack_id: i32,
    pub alt2_stack_id: i32,
    /// A `join::*` value.
    pub join: u8,
    /// A `conn_state::*` value, 0 when unknown.
    pub state: u8,
    pub _pad: [u8; 2],
}
crate::assert_layout!(
    ConnOrigin,
    size = 24,
    fields = [u64, i32, i32, i32, u8, u8, [u8; 2]]
);

impl ConnOrigin {
    pub const NONE: ConnOrigin = ConnOrigin {
        caller: 0,
        stack_id: crate::socket::NO_STACK,
        alt_stack_id: crate::socket::NO_STACK,
        alt2_stack_id: crate::socket::NO_STACK,
        join: join::NONE,
        state: 0,
        _pad: [0; 2],
    };
}

/// Key of the maps of runtime objects: an address in a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub addr: u64,
    pub tgid: u32,
    pub _pad: u32,
}
crate::assert_layout!(ObjectKey, size = 16, fields = [u64, u32, u32]);

/// A user stack recorded at an origin probe (value of GO_WANTS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginSite {
    pub caller: u64,
    pub stack_id: i32,
    pub _pad: u32,
}
crate::assert_layout!(OriginSite, size = 16, fields = [u64, i32, u32]);

/// Value of GO_DIALS: a dial in progress on a goroutine, from `dialConn`'s entry to its
/// delivery (`tryDeliver` on the same goroutine).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoDial {
    /// The `*http.Transport` dialing.
    pub transport: u64,
    /// The latest socket this goroutine made during the dial (a wrapped `net.Conn` hides its
    /// fd from the typed chain: this is the fallback): its creation time, and fd or -1.
    pub created_ns: u64,
    pub fd: i32,
    pub _pad: u32,
}
crate::assert_layout!(GoDial, size = 24, fields = [u64, u64, i32, u32]);

/// Value of GO_CONNS: the socket a `*persistConn` was delivered with, for connections whose
/// `net.Conn` the typed chain cannot follow (a custom DialContext's wrapper).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoConn {
    pub created_ns: u64,
    pub fd: i32,
    pub _pad: u32,
}
crate::assert_layout!(GoConn, size = 16, fields = [u64, i32, u32]);

/// Value of GO_LAYOUT (key: tgid): where a Go binary keeps what the probes read, from its
/// DWARF or the table of its Go version (`sockleak/src/symbols/golayout.rs`). Type addresses
/// are run-time addresses (load bias included).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoLayout {
    /// Type descriptors of `*net.TCPConn` and `*crypto/tls.Conn` (what `itab._type` of a
    /// `net.Conn` holding one points to).
    pub tcp_conn_type: u64,
    pub tls_conn_type: u64,
    /// `persistConn.t` (`*Transport`) and `persistConn.conn` (`net.Conn`: itab, data).
    pub pc_transport: u32,
    pub pc_conn: u32,
    /// `tls.Conn.conn` (`net.Conn`).
    pub tls_conn: u32,
    /// `*netFD` inside `net.TCPConn` (`TCPConn.conn.fd`).
    pub tcp_netfd: u32,
    /// `Sysfd` inside `netFD` (`netFD.pfd.Sysfd`).
    pub netfd_sysfd: u32,
    /// `_type` inside an itab.
    pub itab_type: u32,
}
crate::assert_layout!(
    GoLayout,
    size = 40,
    fields = [u64, u64, u32, u32, u32, u32, u32, u32]
);

/// Value of NODE_HANDLES: a libuv TCP handle's origin, from `uv_tcp_init`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeHandle {
    pub caller: u64,
    pub stack_id: i32,
    /// See `ConnOrigin::alt_stack_id`.
    pub alt_stack_id: i32,
    pub alt2_stack_id: i32,
    /// Non-zero once a socket was made for it (it "had been connected").
    pub connected: u32,
}
crate::assert_layout!(NodeHandle, size = 24, fields = [u64, i32, i32, i32, u32]);

/// Value of NODE_CLOSED (key: tid): the origin of the connected TCP handle this thread closed
/// last, since its last connect.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeClosed {
    pub stack_id: i32,
    pub alt_stack_id: i32,
}
crate::assert_layout!(NodeClosed, size = 8, fields = [i32, i32]);

/// libuv (1.x, a stable ABI): `uv_handle_t::type` is the u32 at this offset, and a TCP
/// handle's type is `UV_TCP`.
pub const UV_HANDLE_TYPE_OFFSET: u64 = 16;
pub const UV_TCP: u32 = 12;

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for super::ConnOrigin {}
    unsafe impl aya::Pod for super::ObjectKey {}
    unsafe impl aya::Pod for super::OriginSite {}
    unsafe impl aya::Pod for super::GoDial {}
    unsafe impl aya::Pod for super::GoConn {}
    unsafe impl aya::Pod for super::GoLayout {}
    unsafe impl aya::Pod for super::NodeHandle {}
    unsafe impl aya::Pod for super::NodeClosed {}
}
