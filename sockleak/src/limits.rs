//! Interpreting fd limits and failures: the advice a report gives. Pure functions, with the
//! /proc reads that feed them kept at the edge.

use crate::procfs::{self, FdLimit};

/// Soft limits at or under this are the classic default trap (1024 under systemd/supervisord).
const LOW_SOFT: u64 = 4096;
/// A soft limit this many times below hard is "far below".
const FAR_BELOW: u64 = 8;
/// Fraction of the soft limit that earns a warning.
pub const USAGE_WARNING: f64 = 0.8;

/// Which service manager started a process, judged from its ancestors' names and its cgroup.
pub fn detect_manager(ancestors: &[String], cgroup: &str) -> Option<&'static str> {
    if ancestors.iter().any(|c| c == "supervisord") {
        Some("supervisord")
    } else if cgroup.lines().any(|l| l.trim_end().ends_with(".service"))
        && ancestors.last().is_some_and(|c| c == "systemd")
    {
        Some("systemd")
    } else {
        None
    }
}

/// Names of a process's ancestors, nearest first, up to pid 1.
pub fn ancestors(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = pid;
    for _ in 0..64 {
        let Some(ppid) = std::fs::read_to_string(procfs::proc_path(cur, "stat"))
            .ok()
            .and_then(|s| procfs::parse_stat_ppid(&s))
        else {
            break;
        };
        if ppid == 0 {
            break;
        }
        out.push(procfs::comm(ppid).unwrap_or_default());
        if ppid == 1 {
            break;
        }
        cur = ppid;
    }
    out
}

pub fn manager_of(pid: u32) -> Option<&'static str> {
    let cgroup = std::fs::read_to_string(procfs::proc_path(pid, "cgroup")).unwrap_or_default();
    detect_manager(&ancestors(pid), &cgroup)
}

/// What to do about a low soft limit, or None when the limit is not the problem.
pub fn limit_advice(pid: u32, limit: FdLimit, manager: Option<&str>) -> Option<String> {
    let FdLimit { soft, hard } = limit;
    if soft == u64::MAX {
        return None;
    }
    let far_below = soft < hard && (soft <= LOW_SOFT || soft.saturating_mul(FAR_BELOW) <= hard);
    let low_hard = hard <= LOW_SOFT;
    if !far_below && !low_hard {
        return None;
    }
    let target = if low_hard { 65536 } else { hard };
    let how = match manager {
        Some("systemd") => format!(
            "set LimitNOFILE={target} in the [Service] section of its unit and restart it (ulimit in a login shell does not reach services)"
        ),
        Some("supervisord") => format!(
            "supervisord's children inherit its limit: set minfds={target} in supervisord.conf and LimitNOFILE={target} in supervisord's own systemd unit, then restart supervisord"
        ),
        _ => format!(
            "raise it for the running process with `prlimit --pid {pid} --nofile={target}:{}` and for the next start with `ulimit -n {target}` or LimitNOFILE= under systemd",
            hard.max(target)
        ),
    };
    let what = if low_hard {
        format!("hard fd limit is only {hard}")
    } else {
        format!("soft fd limit {soft} is far below the hard limit {hard}")
    };
    Some(format!("{what}: {how}"))
}

/// Open fds at or over `USAGE_WARNING` of the soft limit.
pub fn usage_warning(open_fds: u64, limit: FdLimit) -> Option<String> {
    if limit.soft == u64::MAX || limit.soft == 0 {
        return None;
    }
    let ratio = open_fds as f64 / limit.soft as f64;
    (ratio >= USAGE_WARNING).then(|| {
        format!(
            "uses {:.0}% of its soft fd limit ({open_fds} of {})",
            ratio * 100.0,
            limit.soft
        )
    })
}

/// An accept loop spinning on EMFILE/ENFILE: it fails fast and often.
pub fn is_spinning(count: u64, first_s: f64, last_s: f64) -> bool {
    const MIN_COUNT: u64 = 10;
    const MIN_RATE: f64 = 5.0;
    let span = (last_s - first_s).max(1e-3);
    count >= MIN_COUNT && count as f64 / span >= MIN_RATE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(soft: u64, hard: u64) -> FdLimit {
        FdLimit { soft, hard }
    }

    #[test]
    fn managers() {
        let sys = vec!["bash".to_string(), "systemd".to_string()];
        assert_eq!(
            detect_manager(&sys, "0::/system.slice/api.service\n"),
            Some("systemd")
        );
        assert_eq!(
            detect_manager(&sys, "0::/user.slice/session-1.scope\n"),
            None
        );
        let sup = vec!["supervisord".to_string(), "systemd".to_string()];
        assert_eq!(
            detect_manager(&sup, "0::/system.slice/supervisor.service\n"),
            Some("supervisord")
        );
        assert_eq!(detect_manager(&[], ""), None);
    }

    #[test]
    fn advice() {
        let a = limit_advice(7, lim(1024, 524288), Some("systemd")).unwrap();
        assert!(a.contains("LimitNOFILE=524288"), "{a}");
        let a = limit_advice(7, lim(1024, 524288), Some("supervisord")).unwrap();
        assert!(a.contains("minfds=524288"), "{a}");
        let a = limit_advice(7, lim(1024, 524288), None).unwrap();
        assert!(a.contains("prlimit --pid 7 --nofile=524288:524288"), "{a}");
        let a = limit_advice(7, lim(1024, 1024), None).unwrap();
        assert!(a.starts_with("hard fd limit is only 1024"), "{a}");
        assert_eq!(limit_advice(7, lim(65536, 65536), None), None);
        assert!(
            limit_advice(7, lim(65536, 524288), None).is_some(),
            "8x below hard"
        );
        assert_eq!(limit_advice(7, lim(100000, 524288), None), None);
        assert_eq!(limit_advice(7, lim(u64::MAX, u64::MAX), None), None);
    }

    #[test]
    fn usage_and_spinning() {
        assert!(usage_warning(820, lim(1024, 4096)).unwrap().contains("80%"));
        assert_eq!(usage_warning(100, lim(1024, 4096)), None);
        assert_eq!(usage_warning(5, lim(u64::MAX, u64::MAX)), None);
        assert!(is_spinning(100, 1.0, 2.0));
        assert!(!is_spinning(5, 1.0, 1.1));
        assert!(!is_spinning(20, 0.0, 100.0));
    }
}
