//! Reading /proc. Parsers are pure functions over text so they can be tested and fuzzed; the
//! thin I/O wrappers turn "process went away" into `None` or an empty result.

use std::{fs, io, path::PathBuf};

pub fn proc_path(pid: u32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

/// The named variables of a process's initial environment, their values masked
/// (`redact::env_value`): nothing else is kept, and no credential leaves this function.
pub fn environ_vars(pid: u32, names: &[&str]) -> Vec<(String, String)> {
    fs::read(proc_path(pid, "environ"))
        .map(|b| parse_environ(&b, names))
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| {
            let masked = super::redact::env_value(&n, &v);
            (n, masked)
        })
        .collect()
}

pub fn parse_environ(bytes: &[u8], names: &[&str]) -> Vec<(String, String)> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            names.contains(&k).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The thread-group id of task `pid`; equal to `pid` for a process, different for a thread.
pub fn tgid(pid: u32) -> Option<u32> {
    let s = fs::read_to_string(proc_path(pid, "status")).ok()?;
    parse_status(&s).tgid
}

pub fn comm(pid: u32) -> Option<String> {
    let s = fs::read_to_string(proc_path(pid, "comm")).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

/// Fields of /proc/PID/status sockleak uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Status {
    pub tgid: Option<u32>,
    /// Pid in the innermost PID namespace (last NSpid entry).
    pub ns_pid: Option<u32>,
    /// Effective user and group ids.
    pub euid: Option<u32>,
    pub egid: Option<u32>,
}

/// The effective user and group of a process.
pub fn owner(pid: u32) -> Option<(u32, u32)> {
    let st = status(pid)?;
    Some((st.euid?, st.egid?))
}

pub fn status(pid: u32) -> Option<Status> {
    fs::read_to_string(proc_path(pid, "status"))
        .ok()
        .map(|s| parse_status(&s))
}

pub fn parse_status(text: &str) -> Status {
    let mut st = Status::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Tgid:") {
            st.tgid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            st.ns_pid = v.split_whitespace().last().and_then(|x| x.parse().ok());
        } else if let Some(v) = line.strip_prefix("Uid:") {
            st.euid = v.split_whitespace().nth(1).and_then(|x| x.parse().ok());
        } else if let Some(v) = line.strip_prefix("Gid:") {
            st.egid = v.split_whitespace().nth(1).and_then(|x| x.parse().ok());
        }
    }
    st
}

/// Soft and hard RLIMIT_NOFILE; `u64::MAX` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// A process's RLIMIT_NOFILE: prlimit(2) (one call; /proc/PID/limits formats all sixteen
/// limits), else /proc/PID/limits where prlimit is refused (no CAP_SYS_RESOURCE over it).
pub fn fd_limit(pid: u32) -> Option<FdLimit> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads only (new limit null); `old` is a valid, writable rlimit.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    if r == 0 {
        // RLIM_INFINITY is u64::MAX, which is how FdLimit says "unlimited".
        return Some(FdLimit {
            soft: old.rlim_cur,
            hard: old.rlim_max,
        });
    }
    let s = fs::read_to_string(proc_path(pid, "limits")).ok()?;
    parse_fd_limit(&s)
}

pub fn parse_fd_limit(text: &str) -> Option<FdLimit> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| -> Option<u64> {
        match v? {
            "unlimited" => Some(u64::MAX),
            n => n.parse().ok(),
        }
    };
    Some(FdLimit {
        soft: parse(it.next())?,
        hard: parse(it.next())?,
    })
}

/// Process start time in clock ticks since boot (field 22 of /proc/PID/stat). Together with the
/// pid it names a process uniquely, so a reused pid is never merged with its predecessor.
pub fn start_time(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(proc_path(pid, "stat")).ok()?;
    parse_stat_start_time(&s)
}

pub fn parse_stat_start_time(text: &str) -> Option<u64> {
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    // After ')' come fields 3.. ; start time is field 22, so the 20th of these.
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn parse_stat_ppid(text: &str) -> Option<u32> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// PF_KTHREAD in the flags field of /proc/PID/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether /proc/PID/stat describes a kernel thread.
pub fn parse_stat_kthread(text: &str) -> Option<bool> {
    let rest = &text[text.rfind(')')? + 1..];
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
}

pub fn is_kernel_thread(pid: u32) -> bool {
    fs::read_to_string(proc_path(pid, "stat"))
        .ok()
        .and_then(|s| parse_stat_kthread(&s))
        .unwrap_or(false)
}

/// Parses a /proc/PID/fd link target such as `socket:[12345]`.
pub fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Socket fds of a process with their inode numbers. An exited process yields an error.
/// Each link is read relative to the open fd directory (readlinkat): a path walk of one
/// component per fd, not of `/proc/PID/fd/N`, which matters for processes with many fds.
pub fn socket_fds(pid: u32) -> io::Result<Vec<(u32, u64)>> {
    use std::os::fd::AsRawFd;
    let path = proc_path(pid, "fd");
    let dir = fs::File::open(&path)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    for entry in fs::read_dir(&path)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(fd) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cname) = std::ffi::CString::new(name.as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a valid directory fd, a NUL-terminated name and a buffer of the length
        // passed. The fd may close between readdir and readlink: then it is skipped.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let Ok(n) = usize::try_from(n) else { continue };
        // `socket:[N]` always fits; a longer target (a path) is not a socket.
        if n >= buf.len() {
            continue;
        }
        if let Some(inode) = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(parse_socket_link)
        {
            out.push((fd, inode));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The socket inode behind one fd, if it is a socket.
pub fn socket_inode(pid: u32, fd: u32) -> Option<u64> {
    let target = fs::read_link(proc_path(pid, &format!("fd/{fd}"))).ok()?;
    target.to_str().and_then(parse_socket_link)
}

/// What kind of socket an fd is (tcp, udp, unix, ...), from the socket's protocol name, which
/// sockfs gives as the `system.sockprotoname` attribute of the fd. Works for sockets no socket
/// table lists (an unbound UDP socket, a socket not yet connected).
pub fn socket_kind(pid: u32, fd: u32) -> Option<&'static str> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let name = c"system.sockprotoname";
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?.min(buf.len());
    Some(kind_of_protocol(std::str::from_utf8(&buf[..n]).ok()?))
}

/// sockfs protocol names ("TCP", "UDPv6", "UNIX", ...) as report kinds.
pub fn kind_of_protocol(proto: &str) -> &'static str {
    let p = proto.trim_end_matches('\0');
    match p.trim_end_matches("v6") {
        "TCP" | "MPTCP" => "tcp",
        "UDP" | "UDP-Lite" => "udp",
        "UNIX" | "UNIX-STREAM" => "unix",
        "RAW" | "PING" => "raw",
        "NETLINK" => "netlink",
        "PACKET" => "packet",
        _ => "other",
    }
}

/// Number of open fds of any kind. Since Linux 6.2 the size `stat` gives for /proc/PID/fd is
/// that count: one call instead of listing the directory (which builds a dentry per fd; under
/// `--all` with every process active, most of sockleak's CPU). Older kernels say 0: listed.
pub fn open_fd_count(pid: u32) -> Option<u64> {
    let dir = proc_path(pid, "fd");
    match fs::metadata(&dir).ok()?.len() {
        0 => Some(fs::read_dir(&dir).ok()?.count() as u64),
        n => Some(n),
    }
}

/// Pids of all processes (thread-group leaders) on the host.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// utime + stime of a process in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(proc_path(pid, "stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the comm.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks / hz)
}

/// A kB field of /proc/PID/status (`VmRSS`, `VmHWM`, ...) in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(proc_path(pid, "status")).ok()?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resident memory of a process in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS")
}

/// One executable-or-file mapping of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub exec: bool,
    /// File offset of `start`.
    pub offset: u64,
    pub path: String,
}

pub fn maps(pid: u32) -> Vec<Mapping> {
    fs::read_to_string(proc_path(pid, "maps"))
        .map(|s| parse_maps(&s))
        .unwrap_or_default()
}

pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(6, ' ');
            let range = it.next()?;
            let (start, end) = range.split_once('-')?;
            let exec = it.next()?.as_bytes().get(2) == Some(&b'x');
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let path = it.nth(2).map(str::trim).unwrap_or("");
            if path.is_empty() {
                return None;
            }
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                exec,
                offset,
                path: path.to_string(),
            })
        })
        .collect()
}

/// Whether `addr` lies in executable code of a file mapping.
pub fn is_code(maps: &[Mapping], addr: u64) -> bool {
    maps.iter()
        .any(|m| m.exec && m.start <= addr && addr < m.end)
}

/// The mapping holding `addr`, if any.
pub fn module_of(maps: &[Mapping], addr: u64) -> Option<&str> {
    maps.iter()
        .find(|m| m.start <= addr && addr < m.end)
        .map(|m| m.path.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_is_what_proc_limits_says() {
        let me = std::process::id();
        let text = fs::read_to_string(proc_path(me, "limits")).unwrap();
        assert_eq!(fd_limit(me), parse_fd_limit(&text));
        assert!(fd_limit(me).is_some());
    }

    #[test]
    fn open_fd_count_is_the_fd_directory_listing() {
        // A child whose fds nothing opens or closes: stdin, stdout, stderr and whatever the
        // test runner let it inherit (cargo's jobserver pipes).
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let listed = fs::read_dir(proc_path(pid, "fd")).unwrap().count() as u64;
        let n = open_fd_count(pid);
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed >= 3, "{listed}");
        assert_eq!(n, Some(listed));
    }

    #[test]
    fn own_socket_fds_match_fstat() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let file = fs::File::open("/proc/self/stat").unwrap();
        let fds = socket_fds(std::process::id()).unwrap();
        let fd = sock.as_raw_fd() as u32;
        let ino = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        assert!(fds.contains(&(fd, ino)), "{fds:?}");
        assert!(!fds.iter().any(|(f, _)| *f == file.as_raw_fd() as u32));
        assert!(socket_fds(u32::MAX).is_err(), "no such process");
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tx\nTgid:\t4242\nPid:\t4243\nNSpid:\t4243\t7\n\
                 Uid:\t1000\t1001\t1001\t1001\nGid:\t100\t101\t101\t101\n";
        assert_eq!(
            parse_status(s),
            Status {
                tgid: Some(4242),
                ns_pid: Some(7),
                euid: Some(1001),
                egid: Some(101),
            }
        );
    }

    #[test]
    fn limits_line() {
        let s = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max cpu time              unlimited            unlimited            seconds   \n\
                 Max open files            1024                 524288               files     \n";
        assert_eq!(
            parse_fd_limit(s),
            Some(FdLimit {
                soft: 1024,
                hard: 524288
            })
        );
        let u = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_fd_limit(u).map(|l| l.soft), Some(u64::MAX));
        assert_eq!(parse_fd_limit("garbage"), None);
    }

    #[test]
    fn stat_start_time_survives_odd_comm() {
        let s = "12 (a b) c) S 1 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat_start_time(s), Some(98765));
        assert_eq!(parse_stat_ppid(s), Some(1));
        assert_eq!(parse_stat_start_time("12 (x"), None);
    }

    #[test]
    fn socket_kinds_from_sockfs() {
        assert_eq!(kind_of_protocol("TCPv6"), "tcp");
        assert_eq!(kind_of_protocol("UDP"), "udp");
        assert_eq!(kind_of_protocol("UNIX\0"), "unix");
        assert_eq!(kind_of_protocol("NETLINK"), "netlink");
        assert_eq!(kind_of_protocol("SCTP"), "other");
        // An unbound UDP socket of this process, which no socket table lists.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s) as u32;
        assert_eq!(socket_kind(std::process::id(), fd), Some("udp"));
        assert_eq!(socket_kind(std::process::id(), 99_999), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link("socket:[123]"), Some(123));
        assert_eq!(parse_socket_link("pipe:[123]"), None);
        assert_eq!(parse_socket_link("socket:[x]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
    }

    #[test]
    fn kernel_threads_by_flag() {
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2";
        let bash = "77 (ba sh) S 1 77 77 34816 77 4194560 1 2 3";
        assert_eq!(parse_stat_kthread(kthreadd), Some(true));
        assert_eq!(parse_stat_kthread(bash), Some(false));
        assert_eq!(parse_stat_kthread("garbage"), None);
    }

    #[test]
    fn environ_keeps_only_the_named() {
        let e = b"PATH=/bin\0HTTP_PROXY=http://127.0.0.1:8080\0SECRET=x\0bad\0";
        assert_eq!(
            parse_environ(e, &["HTTP_PROXY", "NO_PROXY"]),
            vec![("HTTP_PROXY".into(), "http://127.0.0.1:8080".into())]
        );
    }

    #[test]
    fn maps_lines() {
        let s = "5581a000-5581b000 r-xp 00001000 08:01 1234   /usr/bin/my prog\n\
                 7ffd1000-7ffd2000 rw-p 00000000 00:00 0      /data\n\
                 7ffd2000-7ffd2100 rw-p 00000000 00:00 0 \n\
                 7ffd3000-7ffd4000 r-xp 00000000 00:00 0      [vdso]\n";
        let m = parse_maps(s);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, "/usr/bin/my prog");
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(module_of(&m, 0x5581a010), Some("/usr/bin/my prog"));
        assert_eq!(module_of(&m, 0x1), None);
        assert!(is_code(&m, 0x5581a010));
        assert!(!is_code(&m, 0x7ffd1000));
    }
}
