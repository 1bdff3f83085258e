//! Human names for kernel numbers: errnos, socket kinds, endpoints.

use std::net::{Ipv4Addr, Ipv6Addr};

use sockleak_common::socket::{Endpoint, SocketRecord};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const AF_NETLINK: u16 = 16;
const AF_PACKET: u16 = 17;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const SOCK_RAW: u32 = 3;

pub fn errno_name(errno: i64) -> String {
    let name = match errno {
        1 => "EPERM",
        9 => "EBADF",
        12 => "ENOMEM",
        13 => "EACCES",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        88 => "ENOTSOCK",
        93 => "EPROTONOSUPPORT",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        106 => "EISCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

/// tcp, udp, unix, raw, netlink, packet, other; "unknown" when sockleak did not see the
/// socket made and the kernel tables do not list it.
pub fn kind_of(rec: &SocketRecord) -> &'static str {
    match (rec.family, rec.sock_type & 0xf) {
        (0, _) => "unknown",
        (AF_INET | AF_INET6, SOCK_STREAM) => "tcp",
        (AF_INET | AF_INET6, SOCK_DGRAM) => "udp",
        (AF_INET | AF_INET6, SOCK_RAW) => "raw",
        (AF_UNIX, _) => "unix",
        (AF_NETLINK, _) => "netlink",
        (AF_PACKET, _) => "packet",
        _ => "other",
    }
}

/// The endpoint as a socket address (inet families only).
pub fn socket_addr(ep: &Endpoint) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, SocketAddr};
    match ep.family {
        AF_INET => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                ep.addr[0], ep.addr[1], ep.addr[2], ep.addr[3],
            )),
            ep.port,
        )),
        AF_INET6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&ep.addr[..16]);
            let a = Ipv6Addr::from(b);
            let ip = a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4);
            Some(SocketAddr::new(ip, ep.port))
        }
        _ => None,
    }
}

/// `127.0.0.1:4200`, `[::1]:80`, `unix:/run/x.sock`, `unix:@abstract`; None when unknown.
pub fn endpoint(ep: &Endpoint) -> Option<String> {
    match ep.family {
        AF_INET => {
            let a = Ipv4Addr::new(ep.addr[0], ep.addr[1], ep.addr[2], ep.addr[3]);
            Some(format!("{a}:{}", ep.port))
        }
        AF_INET6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&ep.addr[..16]);
            let a = Ipv6Addr::from(b);
            match a.to_ipv4_mapped() {
                Some(v4) => Some(format!("{v4}:{}", ep.port)),
                None => Some(format!("[{a}]:{}", ep.port)),
            }
        }
        AF_UNIX => {
            if ep.addr.iter().all(|b| *b == 0) {
                return None; // unnamed (or an empty abstract name, which nobody uses)
            }
            let (prefix, bytes) = match ep.addr.first() {
                Some(0) => ("@", &ep.addr[1..]),
                _ => ("", &ep.addr[..]),
            };
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
            Some(format!(
                "unix:{prefix}{}",
                String::from_utf8_lossy(&bytes[..end])
            ))
        }
        _ => None,
    }
}

/// Seconds as a person says them: "45s", "12m", "3.5h" (the text report and the diagnoses
/// write durations alike).
pub fn duration_str(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0}s")
    } else if s < 7200.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// A DESTS key (the kernel's per-destination connect counts) as an address.
pub fn dest_addr(k: &sockleak_common::socket::DestKey) -> Option<std::net::SocketAddr> {
    let mut ep = Endpoint::UNKNOWN;
    ep.family = k.family;
    ep.port = k.port;
    ep.addr[..16].copy_from_slice(&k.addr);
    socket_addr(&ep)
}

#[cfg(test)]
mod tests {
    use sockleak_common::socket::ENDPOINT_ADDR_LEN;

    use super::*;

    fn ep(family: u16, port: u16, bytes: &[u8]) -> Endpoint {
        let mut addr = [0u8; ENDPOINT_ADDR_LEN];
        addr[..bytes.len()].copy_from_slice(bytes);
        Endpoint { family, port, addr }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint(&ep(2, 4200, &[127, 0, 0, 1])).unwrap(),
            "127.0.0.1:4200"
        );
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(endpoint(&ep(10, 80, &v6)).unwrap(), "[::1]:80");
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1];
        assert_eq!(endpoint(&ep(10, 80, &mapped)).unwrap(), "10.0.0.1:80");
        assert_eq!(
            endpoint(&ep(1, 0, b"/run/a.sock")).unwrap(),
            "unix:/run/a.sock"
        );
        assert_eq!(endpoint(&ep(1, 0, b"\0abs")).unwrap(), "unix:@abs");
        assert_eq!(endpoint(&ep(1, 0, b"")), None);
        assert_eq!(endpoint(&Endpoint::UNKNOWN), None);
        // A path filling the whole buffer has no NUL: still bounded.
        let full = ep(1, 0, &[b'a'; ENDPOINT_ADDR_LEN]);
        assert_eq!(endpoint(&full).unwrap().len(), 5 + ENDPOINT_ADDR_LEN);
    }

    #[test]
    fn kinds_and_errnos() {
        let mut r = SocketRecord::EMPTY;
        assert_eq!(kind_of(&r), "unknown");
        r.family = 2;
        r.sock_type = 1 | 0x80000; // SOCK_STREAM | SOCK_CLOEXEC
        assert_eq!(kind_of(&r), "tcp");
        r.sock_type = 2;
        assert_eq!(kind_of(&r), "udp");
        r.family = 1;
        assert_eq!(kind_of(&r), "unix");
        assert_eq!(errno_name(24), "EMFILE");
        assert_eq!(errno_name(99), "EADDRNOTAVAIL");
        assert_eq!(errno_name(4095), "E4095");
    }

    #[test]
    fn dest_keys_are_addresses() {
        let mut k = sockleak_common::socket::DestKey {
            tgid: 1,
            family: 2,
            port: 80,
            addr: [0; 16],
        };
        k.addr[..4].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(dest_addr(&k), Some("10.0.0.7:80".parse().unwrap()));
        k.family = 1;
        assert_eq!(dest_addr(&k), None);
    }
}
