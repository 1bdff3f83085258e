//! Interpreting fd usage and failures: pure functions the report and the diagnoses share.

use crate::host::procfs::FdLimit;

/// Fraction of the soft limit that earns a warning.
pub const USAGE_WARNING: f64 = 0.8;

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
    fn usage_and_spinning() {
        assert!(usage_warning(820, lim(1024, 4096)).unwrap().contains("80%"));
        assert_eq!(usage_warning(100, lim(1024, 4096)), None);
        assert_eq!(usage_warning(5, lim(u64::MAX, u64::MAX)), None);
        assert!(is_spinning(100, 1.0, 2.0));
        assert!(!is_spinning(5, 1.0, 1.1));
        assert!(!is_spinning(20, 0.0, 100.0));
    }
}
