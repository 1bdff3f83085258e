//! The kernel's socket tables over NETLINK_SOCK_DIAG (what `ss` reads): TCP state, addresses
//! and idle time per socket inode. One dump per family and protocol, never one per socket.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use hashbrown::HashMap;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
    unix::{ShowFlags, StateFlags as UnixStates, UnixRequest},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

/// What the kernel says about one socket.
#[derive(Debug, Clone, PartialEq)]
pub struct SockInfo {
    pub kind: &'static str,
    /// TCP state name (`ESTABLISHED`, `CLOSE_WAIT`, ...); None for non-TCP sockets.
    pub state: Option<&'static str>,
    /// The kernel's number for `state`.
    pub state_code: Option<u8>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// Milliseconds since data was last sent or received (TCP only).
    pub idle_ms: Option<u32>,
    /// Receive / send queue; for a listener: connections waiting in the accept queue / its
    /// backlog limit.
    pub rx_queue: u32,
    pub tx_queue: u32,
    /// inet_diag socket cookie (0 for non-inet sockets).
    pub cookie: u64,
}

/// Socket tables of one network namespace, by inode, plus what has no inode (TIME_WAIT).
#[derive(Debug, Default)]
pub struct SocketTable {
    pub by_inode: HashMap<u64, SockInfo>,
    /// Outgoing TIME_WAIT sockets (from an ephemeral port) per remote endpoint: what ties up
    /// local ports towards a destination.
    pub time_wait: HashMap<SocketAddr, u64>,
    /// Incoming TIME_WAIT sockets (on a listening port) per (local port, client address):
    /// they tie up no ephemeral port.
    pub time_wait_in: HashMap<(u16, std::net::IpAddr), u64>,
    /// Local ports of TCP listeners.
    pub listening: hashbrown::HashSet<u16>,
    /// (local, remote) of TIME_WAIT sockets until the dump ends (listeners may come later).
    tw_raw: Vec<(SocketAddr, SocketAddr)>,
    /// Connected TCP sockets of any state (TIME_WAIT included) per remote endpoint: local
    /// ports tied up towards that destination.
    pub ports_to: HashMap<SocketAddr, u64>,
}

pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// A sock_diag socket. It answers for the network namespace it was opened in, wherever it is
/// used from later.
pub fn open() -> Result<Socket> {
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
    sock.bind_auto().context("binding the sock_diag socket")?;
    sock.connect(&NlAddr::new(0, 0))
        .context("connecting the sock_diag socket")?;
    Ok(sock)
}

/// TCP states whose start a report dates (see `tcp_ages`): the closing states and SYN_SENT.
/// Few sockets are in them on a healthy host, so polling them every interval is cheap.
pub fn dated_states() -> StateFlags {
    StateFlags::SYN_SENT
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// (cookie, state) of every TCP socket in `states`, IPv4 and IPv6.
pub fn tcp_in_states(sock: &Socket, states: StateFlags) -> Result<Vec<(u64, u8)>> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let req = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: states.clone(),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        });
        dump_one(sock, req, |msg| {
            if let SockDiagMessage::InetResponse(r) = msg {
                out.push((
                    u64::from_ne_bytes(r.header.socket_id.cookie),
                    r.header.state,
                ));
            }
        })?;
    }
    Ok(out)
}

impl SocketTable {
    /// Dumps TCP and UDP over IPv4 and IPv6, and AF_UNIX sockets.
    pub fn dump() -> Result<SocketTable> {
        let mut t = SocketTable::default();
        let sock = open()?;
        for family in [AF_INET, AF_INET6] {
            for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
                let req = SockDiagMessage::InetRequest(InetRequest {
                    family,
                    protocol,
                    extensions: ExtensionFlags::INFO,
                    states: StateFlags::all(),
                    socket_id: if family == AF_INET {
                        SocketId::new_v4()
                    } else {
                        SocketId::new_v6()
                    },
                });
                dump_one(&sock, req, |msg| {
                    if let SockDiagMessage::InetResponse(r) = msg {
                        t.add_inet(&r, protocol == IPPROTO_TCP);
                    }
                })?;
            }
        }
        let req = SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: UnixStates::all(),
            inode: 0,
            show_flags: ShowFlags::empty(),
            cookie: [0; 8],
        });
        t.sort_time_wait();
        dump_one(&sock, req, |msg| {
            if let SockDiagMessage::UnixResponse(r) = msg {
                t.by_inode.insert(
                    r.header.inode as u64,
                    SockInfo {
                        kind: "unix",
                        state: None,
                        state_code: None,
                        local: None,
                        remote: None,
                        idle_ms: None,
                        rx_queue: 0,
                        tx_queue: 0,
                        cookie: 0,
                    },
                );
            }
        })?;
        Ok(t)
    }

    /// TIME_WAIT sockets whose local port is a listener's were accepted (incoming).
    fn sort_time_wait(&mut self) {
        for (local, remote) in std::mem::take(&mut self.tw_raw) {
            if self.listening.contains(&local.port()) {
                *self
                    .time_wait_in
                    .entry((local.port(), remote.ip()))
                    .or_insert(0) += 1;
            } else {
                *self.time_wait.entry(remote).or_insert(0) += 1;
            }
        }
    }

    fn add_inet(&mut self, r: &InetResponse, tcp: bool) {
        let h = &r.header;
        let local = unmapped(SocketAddr::new(
            h.socket_id.source_address,
            h.socket_id.source_port,
        ));
        let remote = unmapped(SocketAddr::new(
            h.socket_id.destination_address,
            h.socket_id.destination_port,
        ));
        let state = tcp.then(|| tcp_state_name(h.state));
        let connected = !(remote.ip().is_unspecified() && remote.port() == 0);
        if tcp && connected {
            *self.ports_to.entry(remote).or_insert(0) += 1;
        }
        if state == Some("TIME_WAIT") {
            self.tw_raw.push((local, remote));
            return;
        }
        if state == Some("LISTEN") {
            self.listening.insert(local.port());
        }
        let idle_ms = r.nlas.iter().find_map(|n| match n {
            Nla::TcpInfo(i) => Some(i.last_data_sent.min(i.last_data_recv)),
            _ => None,
        });
        self.by_inode.insert(
            h.inode as u64,
            SockInfo {
                kind: if tcp { "tcp" } else { "udp" },
                state,
                state_code: tcp.then_some(h.state),
                local: Some(local),
                remote: connected.then_some(remote),
                idle_ms,
                rx_queue: h.recv_queue,
                tx_queue: h.send_queue,
                cookie: u64::from_ne_bytes(h.socket_id.cookie),
            },
        );
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, from a dual-stack socket) as the IPv4
/// address it is, the way `ss` and users write it.
pub fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// Sends one dump request and feeds every response message to `f` until NLMSG_DONE.
fn dump_one(sock: &Socket, req: SockDiagMessage, mut f: impl FnMut(SockDiagMessage)) -> Result<()> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(hdr, req.into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    sock.send(&buf[..], 0)
        .context("sending a sock_diag dump request")?;
    let mut rx = vec![0u8; 1 << 16];
    loop {
        let n = sock
            .recv(&mut &mut rx[..], 0)
            .context("reading a sock_diag dump")?;
        let mut off = 0;
        while off < n {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[off..n])
                .context("decoding a sock_diag message")?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => bail!("sock_diag dump failed: {e}"),
                NetlinkPayload::InnerMessage(m) => f(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_print_as_ipv4() {
        let m: SocketAddr = "[::ffff:127.0.0.1]:18120".parse().unwrap();
        assert_eq!(unmapped(m).to_string(), "127.0.0.1:18120");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }

    #[test]
    fn time_wait_on_a_listening_port_is_incoming() {
        let mut t = SocketTable::default();
        t.listening.insert(8080);
        t.tw_raw.push((
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.9:50123".parse().unwrap(),
        ));
        t.tw_raw.push((
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.9:50124".parse().unwrap(),
        ));
        t.tw_raw.push((
            "10.0.0.1:41000".parse().unwrap(),
            "10.0.0.7:80".parse().unwrap(),
        ));
        t.sort_time_wait();
        assert_eq!(
            t.time_wait_in[&(8080, "10.0.0.9".parse::<std::net::IpAddr>().unwrap())],
            2
        );
        assert_eq!(
            t.time_wait[&"10.0.0.7:80".parse::<SocketAddr>().unwrap()],
            1
        );
        assert_eq!(t.time_wait.len(), 1);
    }

    #[test]
    fn state_names() {
        assert_eq!(tcp_state_name(8), "CLOSE_WAIT");
        assert_eq!(tcp_state_name(1), "ESTABLISHED");
        assert_eq!(tcp_state_name(99), "UNKNOWN");
    }

    /// Needs no privilege: sock_diag dumps are readable by any user.
    #[test]
    fn dump_sees_a_listener_of_this_process() {
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&l)
        ))
        .unwrap()
        .ino();
        let t = SocketTable::dump().unwrap();
        let info = &t.by_inode[&inode];
        assert_eq!(info.state, Some("LISTEN"));
        assert_eq!(info.local, Some(l.local_addr().unwrap()));
    }
}

/// What one network namespace says: its socket tables and its ephemeral port range.
#[derive(Debug, Default)]
pub struct NetView {
    pub table: SocketTable,
    pub port_range: Option<(u32, u32)>,
}

impl NetView {
    /// Reads the network namespace `pid` lives in.
    pub fn of(pid: u32) -> Result<NetView> {
        crate::host::netns::in_netns_of(pid, || -> Result<NetView> {
            Ok(NetView {
                table: SocketTable::dump()?,
                port_range: crate::host::netns::local_port_range(),
            })
        })?
    }
}
