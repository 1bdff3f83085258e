//! sockleak's own cost, for the report's own-cost line and `/metrics`: BPF run time per socket,
//! CPU share, resident memory and the kernel unwind tables. BPF run time is counted by the
//! kernel only while its statistics are on (`kernel::bpf_stats`): sockleak measures in windows
//! (the first from the start, then one every `EVERY_NS`), or all along when the host keeps
//! them on.

use super::{Session, mono_ns};
use crate::{
    host::procfs,
    kernel::bpf_stats::{self, Window},
    model::{OwnCost, TablesCost},
};

/// How long a measuring window lasts, and how often one opens.
const WINDOW_NS: u64 = 2_000_000_000;
const EVERY_NS: u64 = 30_000_000_000;

/// BPF time and sockets at a point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub bpf_ns: u64,
    pub sockets: u64,
}

/// Sums of what the windows measured (pure).
#[derive(Debug, Default)]
pub struct Meter {
    /// The host keeps statistics on: measured from `start` on, no windows.
    host_on: bool,
    start: Reading,
    /// The open window: when it opened and the reading then.
    open: Option<(u64, Reading)>,
    next_ns: u64,
    bpf_ns: u64,
    sockets: u64,
    measured_ns: u64,
}

impl Meter {
    pub fn new(host_on: bool, now_ns: u64, start: Reading) -> Meter {
        Meter {
            host_on,
            start,
            next_ns: now_ns,
            ..Meter::default()
        }
    }

    /// Whether a window should open now.
    pub fn due(&self, now_ns: u64) -> bool {
        !self.host_on && self.open.is_none() && now_ns >= self.next_ns
    }

    /// Whether the open window should close now.
    pub fn ending(&self, now_ns: u64) -> bool {
        self.open
            .is_some_and(|(t, _)| now_ns.saturating_sub(t) >= WINDOW_NS)
    }

    pub fn opened(&mut self, now_ns: u64, r: Reading) {
        self.open = Some((now_ns, r));
    }

    pub fn closed(&mut self, now_ns: u64, r: Reading) {
        if let Some((t, r0)) = self.open.take() {
            self.bpf_ns += r.bpf_ns.saturating_sub(r0.bpf_ns);
            self.sockets += r.sockets.saturating_sub(r0.sockets);
            self.measured_ns += now_ns.saturating_sub(t);
        }
        self.next_ns = now_ns + EVERY_NS;
    }

    /// A window could not be opened (statistics refused): try again later.
    pub fn refused(&mut self, now_ns: u64) {
        self.next_ns = now_ns + EVERY_NS;
    }

    /// (BPF ns per socket, seconds measured, sockets measured), with `now` the reading at
    /// this moment (used when the host keeps statistics on, or a window is open).
    pub fn figures(&self, now_ns: u64, now: Reading, start_ns: u64) -> (Option<f64>, f64, u64) {
        let (mut bpf, mut sockets, mut ns) = (self.bpf_ns, self.sockets, self.measured_ns);
        if self.host_on {
            bpf = now.bpf_ns.saturating_sub(self.start.bpf_ns);
            sockets = now.sockets.saturating_sub(self.start.sockets);
            ns = now_ns.saturating_sub(start_ns);
        } else if let Some((t, r0)) = self.open {
            bpf += now.bpf_ns.saturating_sub(r0.bpf_ns);
            sockets += now.sockets.saturating_sub(r0.sockets);
            ns += now_ns.saturating_sub(t);
        }
        let per = (sockets > 0).then(|| bpf as f64 / sockets as f64);
        (per, ns as f64 / 1e9, sockets)
    }
}

/// The session's meter and its statistics window.
pub struct OwnCostMeter {
    pub meter: Meter,
    window: Option<Window>,
}

impl OwnCostMeter {
    pub fn new(now_ns: u64, start: Reading) -> OwnCostMeter {
        OwnCostMeter {
            meter: Meter::new(bpf_stats::on_for_host(), now_ns, start),
            window: None,
        }
    }
}

impl Session {
    fn reading(&self) -> Reading {
        Reading {
            bpf_ns: self.tracer.run_time().0,
            sockets: self.tracker.opened_total,
        }
    }

    /// Brings the per-process socket counters up to date (one batched read of TARGETS).
    fn refresh_counters(&mut self) {
        for (tgid, t) in self.tracer.targets() {
            self.tracker.set_counters(tgid, t);
        }
    }

    /// Opens and closes measuring windows; on the session's drain timer.
    pub(super) fn own_cost_poll(&mut self) {
        let now = mono_ns();
        if self.own.meter.ending(now) {
            self.refresh_counters();
            let r = self.reading();
            self.own.window = None;
            self.own.meter.closed(now, r);
        } else if self.own.meter.due(now) {
            match bpf_stats::window() {
                Some(w) => {
                    self.refresh_counters();
                    let r = self.reading();
                    self.own.window = Some(w);
                    self.own.meter.opened(now, r);
                }
                None => self.own.meter.refused(now),
            }
        }
    }

    /// The own-cost figures as of now (counters are synced by the caller).
    pub(super) fn own_cost(&self) -> OwnCost {
        let now = mono_ns();
        let (per, secs, sockets) = self.own.meter.figures(now, self.reading(), self.start_ns);
        let me = std::process::id();
        let wall = now.saturating_sub(self.start_ns) as f64 / 1e9;
        let cpu = procfs::cpu_seconds(me).unwrap_or(0.0);
        OwnCost {
            bpf_ns_per_socket: per,
            bpf_measured_s: secs,
            bpf_sockets: sockets,
            cpu_percent: if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 },
            rss_bytes: procfs::rss_bytes(me).unwrap_or(0),
            unwind_tables: self.tables.as_ref().map(|t| {
                let s = t.stats();
                TablesCost {
                    bytes: s.bytes,
                    cap_bytes: s.cap_bytes,
                    files: s.files,
                    processes: s.processes,
                    evictions: s.evictions,
                    build_cpu_s: s.build_s,
                    walked: s.walked,
                    fallbacks: s.fallbacks,
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn r(bpf_ns: u64, sockets: u64) -> Reading {
        Reading { bpf_ns, sockets }
    }

    #[test]
    fn windows_add_up() {
        let mut m = Meter::new(false, 0, r(0, 0));
        assert!(m.due(0));
        m.opened(0, r(100, 10));
        assert!(!m.due(S) && !m.ending(S));
        // While open, the figures include the window so far.
        assert_eq!(m.figures(S, r(1100, 20), 0), (Some(100.0), 1.0, 10));
        assert!(m.ending(2 * S));
        m.closed(2 * S, r(2100, 30));
        assert!(!m.due(2 * S + 1) && m.due(2 * S + EVERY_NS));
        // Between windows, BPF time is not counted (statistics off): readings then are ignored.
        assert_eq!(m.figures(10 * S, r(2100, 500), 0), (Some(100.0), 2.0, 20));
        m.opened(40 * S, r(2100, 500));
        m.closed(42 * S, r(5100, 510));
        assert_eq!(
            m.figures(50 * S, r(5100, 600), 0),
            (Some(5000.0 / 30.0), 4.0, 30)
        );
    }

    #[test]
    fn no_socket_no_figure() {
        let mut m = Meter::new(false, 0, r(0, 0));
        m.opened(0, r(0, 0));
        m.closed(2 * S, r(500, 0));
        assert_eq!(m.figures(3 * S, r(500, 0), 0), (None, 2.0, 0));
    }

    #[test]
    fn host_statistics_measure_all_along() {
        let m = Meter::new(true, 5 * S, r(1000, 7));
        assert!(!m.due(100 * S), "no windows of its own");
        assert_eq!(
            m.figures(15 * S, r(3000, 17), 5 * S),
            (Some(200.0), 10.0, 10)
        );
    }

    #[test]
    fn refused_statistics_retry_later() {
        let mut m = Meter::new(false, 0, r(0, 0));
        m.refused(0);
        assert!(!m.due(S));
        assert!(m.due(EVERY_NS));
    }
}
