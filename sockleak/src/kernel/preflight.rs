//! Checks before anything is loaded: privileges, tracefs, BTF, memlock.

use std::path::{Path, PathBuf};

use log::{debug, info};

use crate::{error::UserError, kernel::bpf::TRACEFS};

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Capabilities missing from an effective set (CapEff). CAP_SYS_ADMIN alone suffices (older
/// kernels know no CAP_BPF); otherwise CAP_BPF and CAP_PERFMON load and attach the programs and
/// CAP_SYS_PTRACE reads other users' /proc/PID/fd.
pub fn missing_caps(cap_eff: u64) -> Vec<&'static str> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    ]
    .into_iter()
    .filter(|(c, _)| !has(*c))
    .map(|(_, n)| n)
    .collect()
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let v = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(v.trim(), 16).ok()
}

pub fn check_privileges() -> Result<(), UserError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = parse_cap_eff(&status).unwrap_or(0);
    let missing = missing_caps(cap_eff);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(UserError::Privileges {
            missing: missing.join(", "),
        })
    }
}

/// Returns where tracefs is mounted, mounting it at /sys/kernel/tracing when it is missing.
pub fn ensure_tracefs() -> Result<PathBuf, UserError> {
    let path = Path::new(TRACEFS);
    if path.join("events").is_dir() {
        return Ok(path.to_path_buf());
    }
    let legacy = Path::new("/sys/kernel/debug/tracing");
    if legacy.join("events").is_dir() {
        return Ok(legacy.to_path_buf());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("static string without NUL");
    let (src, target, fstype) = (c("nodev"), c(TRACEFS), c("tracefs"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(UserError::Tracefs {
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    if !path.join("events").is_dir() {
        return Err(UserError::Tracefs {
            reason: "mounted, but it has no events directory".into(),
        });
    }
    info!("mounted tracefs at {TRACEFS} (it was not mounted)");
    Ok(path.to_path_buf())
}

pub const BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn check_btf(path: &Path) -> Result<(), UserError> {
    if path.exists() {
        Ok(())
    } else {
        Err(UserError::NoBtf(path.to_path_buf()))
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK. Raising it may be refused (and is
/// not needed on newer kernels), so failure is only noted.
pub fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

/// sockleak keeps a file open per interpreter whose frames it names (`/proc/PID/mem`, bound
/// to the image it was opened on): with `--all` on a busy host that is many. The soft fd limit
/// goes up to the hard one.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                debug!(
                    "could not raise RLIMIT_NOFILE: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        assert!(missing_caps(1 << CAP_SYS_ADMIN).is_empty());
        assert!(missing_caps(u64::MAX).is_empty());
        assert_eq!(
            missing_caps(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"]
        );
        assert_eq!(
            missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)),
            vec!["CAP_SYS_PTRACE"]
        );
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert_eq!(parse_cap_eff("nothing"), None);
    }
}
