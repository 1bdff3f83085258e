//! A process against its fd limit: the limit, how full it is, when it will be reached at the
//! recent growth, and the warnings that follow.

use crate::{
    host::limits,
    model::{Failure, FdLimitJson},
    tracker::Process,
};

pub fn fd_limit_json(p: &Process) -> Option<FdLimitJson> {
    p.meta.fd_limit.map(|l| FdLimitJson {
        soft: l.soft,
        hard: l.hard,
    })
}

/// Seconds until open fds reach the soft limit at the recent growth rate; None when not
/// growing or unknown.
pub fn seconds_to_fd_limit(p: &Process) -> Option<f64> {
    let soft = p.meta.fd_limit?.soft;
    let open = p.meta.open_fds?;
    if open >= soft {
        return Some(0.0);
    }
    let g = p.fd_growth_per_s();
    (g > 1e-9).then(|| (soft - open) as f64 / g)
}

/// Open fds over the soft limit (none for an unlimited or unknown limit).
pub fn usage_ratio(p: &Process) -> Option<f64> {
    match (p.meta.open_fds, p.meta.fd_limit) {
        (Some(o), Some(l)) if l.soft != u64::MAX && l.soft > 0 => Some(o as f64 / l.soft as f64),
        _ => None,
    }
}

/// Near the limit; accept loops spinning on it.
pub fn warnings(p: &Process, failures: &[Failure]) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(o), Some(l)) = (p.meta.open_fds, p.meta.fd_limit)
        && let Some(w) = limits::usage_warning(o, l)
    {
        out.push(w);
    }
    for f in failures.iter().filter(|f| f.spinning) {
        out.push(format!(
            "{} loop is spinning on {} ({} failures in {:.1}s)",
            f.syscall,
            f.errno,
            f.count,
            (f.last_s - f.first_s).max(0.0)
        ));
    }
    out
}
