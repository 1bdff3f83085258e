//! `sockleak serve`'s /metrics: a report rendered as OpenMetrics with the official Rust client.
//! Label cardinality is bounded: the `top` most suspicious live processes get their own labels,
//! the rest are summed under pid="other"; exited processes age out.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::{collections::HashMap, sync::atomic::AtomicU64};

use crate::model::{ProcessReport, Report};

/// A label that can identify a process in /metrics (`--metrics-labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    Pid,
    Comm,
    Cgroup,
    /// The container id from the cgroup path.
    ContainerId,
    /// Kubernetes namespace, pod and container name (from the CRI runtime).
    Namespace,
    Pod,
    Container,
}

impl Label {
    pub const ALL: [Label; 7] = [
        Label::Pid,
        Label::Comm,
        Label::Cgroup,
        Label::ContainerId,
        Label::Namespace,
        Label::Pod,
        Label::Container,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Label::Pid => "pid",
            Label::Comm => "comm",
            Label::Cgroup => "cgroup",
            Label::ContainerId => "container_id",
            Label::Namespace => "namespace",
            Label::Pod => "pod",
            Label::Container => "container",
        }
    }

    fn of(self, p: &ProcessReport) -> String {
        let k8s = p.k8s.as_ref();
        match self {
            Label::Pid => p.pid.to_string(),
            Label::Comm => p.comm.clone(),
            Label::Cgroup => p.cgroup.clone().unwrap_or_default(),
            Label::ContainerId => p.container.clone().unwrap_or_default(),
            Label::Namespace => k8s.map(|k| k.namespace.clone()).unwrap_or_default(),
            Label::Pod => k8s.map(|k| k.pod.clone()).unwrap_or_default(),
            Label::Container => k8s.map(|k| k.container.clone()).unwrap_or_default(),
        }
    }
}

/// Parses `--metrics-labels` (`pid,comm,namespace`): known names, each once, in the order
/// given, at least one.
pub fn parse_labels(s: &str) -> Result<Vec<Label>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let Some(l) = Label::ALL.iter().find(|l| l.name() == part) else {
            let all: Vec<&str> = Label::ALL.iter().map(|l| l.name()).collect();
            return Err(format!(
                "`{part}` is not a label; choose from {}",
                all.join(", ")
            ));
        };
        if !out.contains(l) {
            out.push(*l);
        }
    }
    Ok(out)
}

/// A process's labels, in the order chosen, then the metric's own.
type Labels = Vec<(&'static str, String)>;

fn labels(p: &ProcessReport, sel: &[Label]) -> Labels {
    sel.iter().map(|l| (l.name(), l.of(p))).collect()
}

/// The processes beyond `top`, summed.
fn other(sel: &[Label]) -> Labels {
    sel.iter()
        .map(|l| {
            let v = match l {
                Label::Pid | Label::Comm => "other",
                _ => "",
            };
            (l.name(), v.to_string())
        })
        .collect()
}

fn with(l: &Labels, extra: &[(&'static str, String)]) -> Labels {
    let mut v = l.clone();
    v.extend(extra.iter().cloned());
    v
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cause {
    cause: String,
}

/// sockleak's own cost.
#[derive(Debug, Clone, Default)]
pub struct SelfStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub events: u64,
    /// The report's own-cost figures (BPF time per socket, unwind tables).
    pub cost: crate::model::OwnCost,
}

/// Suspect call sites labelled per process (largest first); the rest are summed.
const SITES_PER_PROCESS: usize = 5;

type FGauge = Gauge<f64, AtomicU64>;

pub fn render(report: &Report, top: usize, sel: &[Label], own: SelfStats) -> String {
    let mut reg = Registry::with_prefix("sockleak");
    let live = Family::<Labels, Gauge>::default();
    let open = Family::<Labels, Gauge>::default();
    let soft = Family::<Labels, Gauge>::default();
    let ratio = Family::<Labels, FGauge>::default();
    let to_limit = Family::<Labels, FGauge>::default();
    let growth = Family::<Labels, FGauge>::default();
    let states = Family::<Labels, Gauge>::default();
    let suspects = Family::<Labels, Gauge>::default();
    let leaked = Family::<Labels, Gauge>::default();
    let failures = Family::<Labels, Counter>::default();
    let diagnoses = Family::<Labels, Gauge>::default();
    let lost = Family::<Cause, Counter>::default();
    reg.register(
        "live_sockets",
        "Socket fds open in the process",
        live.clone(),
    );
    reg.register("open_fds", "All fds open in the process", open.clone());
    reg.register(
        "fd_soft_limit",
        "Soft RLIMIT_NOFILE of the process",
        soft.clone(),
    );
    reg.register(
        "fd_usage_ratio",
        "Open fds over the soft limit",
        ratio.clone(),
    );
    reg.register(
        "seconds_to_fd_limit",
        "Predicted seconds until the soft fd limit at the recent growth (absent when not growing)",
        to_limit.clone(),
    );
    reg.register(
        "socket_growth_per_second",
        "Live sockets gained per second",
        growth.clone(),
    );
    reg.register(
        "tcp_sockets",
        "Live TCP socket fds by state",
        states.clone(),
    );
    reg.register(
        "leak_suspects",
        "Call sites holding leaked sockets",
        suspects.clone(),
    );
    reg.register(
        "leaked_sockets",
        "Leaked sockets per call site (the largest sites per process)",
        leaked.clone(),
    );
    reg.register(
        "failures",
        "Failed socket/socketpair/accept/connect calls by syscall and errno",
        failures.clone(),
    );
    reg.register(
        "diagnosis",
        "Known leak patterns found in the process (docs/json-output.md lists them): entries per pattern and confidence",
        diagnoses.clone(),
    );
    reg.register(
        "lost_events",
        "Events the kernel side could not deliver or record, by cause",
        lost.clone(),
    );
    let cpu = Counter::<f64, AtomicU64>::default();
    let rss: Gauge = Gauge::default();
    let events = Counter::<u64>::default();
    reg.register("self_cpu_seconds", "CPU time used by sockleak", cpu.clone());
    reg.register(
        "self_resident_bytes",
        "sockleak's resident memory",
        rss.clone(),
    );
    reg.register("self_events", "Kernel events processed", events.clone());
    let alive: Vec<&ProcessReport> = report.processes.iter().filter(|p| !p.exited).collect();
    // Limits and predictions of processes that share their labels (pid left out) do not sum:
    // the highest limit and usage, the shortest time to the limit, the summed growth.
    let mut soft_max: HashMap<Labels, u64> = HashMap::new();
    let mut ratio_max: HashMap<Labels, f64> = HashMap::new();
    let mut to_limit_min: HashMap<Labels, f64> = HashMap::new();
    let mut growth_sum: HashMap<Labels, f64> = HashMap::new();
    for (i, p) in alive.iter().enumerate() {
        let (l, own_labels) = if i < top {
            (labels(p, sel), true)
        } else {
            (other(sel), false)
        };
        live.get_or_create(&l).inc_by(p.live_sockets as i64);
        open.get_or_create(&l)
            .inc_by(p.open_fds.unwrap_or(0) as i64);
        suspects.get_or_create(&l).inc_by(p.suspects.len() as i64);
        for (state, n) in &p.tcp_states {
            states
                .get_or_create(&with(&l, &[("state", state.clone())]))
                .inc_by(*n as i64);
        }
        for (k, s) in p.suspects.iter().enumerate() {
            let site = if own_labels && k < SITES_PER_PROCESS {
                s.call_site.clone().unwrap_or_else(|| s.origin.clone())
            } else {
                "other".into()
            };
            leaked
                .get_or_create(&with(&l, &[("call_site", site)]))
                .inc_by(s.count as i64);
        }
        for f in &p.failures {
            failures
                .get_or_create(&with(
                    &l,
                    &[("syscall", f.syscall.clone()), ("errno", f.errno.clone())],
                ))
                .inc_by(f.count);
        }
        for d in &p.diagnoses {
            let confidence = serde_json::to_value(d.confidence)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            diagnoses
                .get_or_create(&with(
                    &l,
                    &[
                        ("pattern", d.pattern.to_string()),
                        ("confidence", confidence),
                    ],
                ))
                .inc();
        }
        if !own_labels {
            continue; // limits and predictions do not sum
        }
        if let Some(lim) = &p.fd_limit {
            let e = soft_max.entry(l.clone()).or_insert(0);
            *e = (*e).max(lim.soft);
        }
        if let Some(r) = p.fd_usage_ratio {
            let e = ratio_max.entry(l.clone()).or_insert(r);
            *e = e.max(r);
        }
        if let Some(s) = p.seconds_to_fd_limit {
            let e = to_limit_min.entry(l.clone()).or_insert(s);
            *e = e.min(s);
        }
        *growth_sum.entry(l).or_insert(0.0) += p.growth_per_s;
    }
    for (l, v) in soft_max {
        soft.get_or_create(&l)
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    for (l, v) in ratio_max {
        ratio.get_or_create(&l).set(v);
    }
    for (l, v) in to_limit_min {
        to_limit.get_or_create(&l).set(v);
    }
    for (l, v) in growth_sum {
        growth.get_or_create(&l).set(v);
    }
    for (cause, n) in &report.lost {
        lost.get_or_create(&Cause {
            cause: cause.to_string(),
        })
        .inc_by(*n);
    }
    cpu.inc_by(own.cpu_seconds);
    rss.set(i64::try_from(own.rss_bytes).unwrap_or(i64::MAX));
    events.inc_by(own.events);
    own_cost(&mut reg, &own.cost);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// The own-cost figures of the report's own-cost line (absent when not measured or off).
fn own_cost(reg: &mut Registry, c: &crate::model::OwnCost) {
    if let Some(ns) = c.bpf_ns_per_socket {
        // Base units: promtool refuses abbreviated ones (`_ns`).
        let g = FGauge::default();
        g.set(ns / 1e9);
        reg.register(
            "self_bpf_seconds_per_socket",
            "BPF run time of sockleak's programs (host-wide) per socket made by a traced process, in seconds (measured in windows while the kernel's run-time statistics are on)",
            g,
        );
    }
    let Some(t) = &c.unwind_tables else {
        return;
    };
    let bytes: Gauge = Gauge::default();
    bytes.set(i64::try_from(t.bytes).unwrap_or(i64::MAX));
    reg.register(
        "self_unwind_table_bytes",
        "Kernel memory holding unwind rows for code without frame pointers",
        bytes,
    );
    let cap: Gauge = Gauge::default();
    cap.set(i64::try_from(t.cap_bytes).unwrap_or(i64::MAX));
    reg.register(
        "self_unwind_table_capacity_bytes",
        "Size of the kernel's unwind row array (--unwind-table-mib, preallocated)",
        cap,
    );
    let walked = Counter::<u64>::default();
    walked.inc_by(t.walked);
    reg.register(
        "self_kernel_walked_stacks",
        "Stacks walked in the kernel with unwind tables",
        walked,
    );
    let fallbacks = Counter::<u64>::default();
    fallbacks.inc_by(t.fallbacks);
    reg.register(
        "self_stack_copy_fallbacks",
        "Kernel table walks that stopped short and copied the stack instead",
        fallbacks,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{Failure, FdLimitJson, Suspect};

    fn proc_(pid: u32, live: u64) -> ProcessReport {
        ProcessReport {
            pid,
            ns_pid: None,
            comm: format!("p{pid}"),
            cgroup: None,
            container: None,
            k8s: None,
            exited: false,
            fd_limit: Some(FdLimitJson {
                soft: 1024,
                hard: 4096,
            }),
            open_fds: Some(live + 3),
            live_sockets: live,
            opened: live,
            closed: 0,
            preexisting: 0,
            unseen_opened: 0,
            unseen_closed: 0,
            direct_sockets: 0,
            growth_per_s: 1.0,
            seconds_to_fd_limit: Some(100.0),
            fd_usage_ratio: Some(0.5),
            limit_advice: None,
            diagnoses: vec![crate::model::Diagnosis {
                pattern: "close-wait-not-closed",
                summary: String::new(),
                evidence: vec![],
                fix: String::new(),
                call_site: None,
                confidence: crate::model::Confidence::Certain,
                origin_call: None,
            }],
            warnings: vec![],
            tcp_states: BTreeMap::from([("ESTABLISHED".to_string(), live)]),
            listening: vec![],
            suspects: vec![Suspect {
                count: live,
                oldest_age_s: 1.0,
                before_tracing: 0,
                origin: "socket".into(),
                kinds: BTreeMap::new(),
                remotes: vec![],
                locals: vec![],
                states: BTreeMap::new(),
                max_idle_s: None,
                state_age_s: BTreeMap::new(),
                state_age_at_least: vec![],
                senders: vec![],
                call_site: Some("leak (a.c:1)".into()),
                call_site_note: None,
                stack: vec![],
                stack_count: live,
                other_stacks: vec![],
                origin_call: None,
            }],
            failures: vec![Failure {
                syscall: "accept4".into(),
                errno: "EMFILE".into(),
                count: 7,
                first_s: 0.0,
                last_s: 1.0,
                tid: 1,
                open_fds_at_failure: None,
                remote: None,
                spinning: false,
                listen_backlog: None,
                port_range: None,
                ports_in_use_to_remote: None,
                host_files: None,
                note: None,
                call_site: None,
                call_site_note: None,
                stack: vec![],
            }],
            stack_fallbacks: vec![],
        }
    }

    #[test]
    fn top_processes_labelled_rest_summed() {
        let mut r = Report {
            kind: "report",
            duration_s: 1.0,
            lost_events: 0,
            lost: BTreeMap::from([("ring_buffer_full", 2)]),
            counts_are_lower_bounds: true,
            unseen_opened: 0,
            unseen_closed: 0,
            time_wait: vec![],
            processes: vec![proc_(10, 5), proc_(11, 3), proc_(12, 2)],
            own_cost: Default::default(),
        };
        let mut gone = proc_(13, 9);
        gone.exited = true;
        r.processes.push(gone);
        let sel = parse_labels("pid,comm,cgroup,container").unwrap();
        let text = render(&r, 1, &sel, SelfStats::default());
        assert!(
            text.contains(
                "sockleak_live_sockets{pid=\"10\",comm=\"p10\",cgroup=\"\",container=\"\"} 5"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sockleak_live_sockets{pid=\"other\",comm=\"other\",cgroup=\"\",container=\"\"} 5"
            ),
            "{text}"
        );
        assert!(!text.contains("pid=\"13\""), "exited processes age out");
        assert!(text.contains("sockleak_failures_total{pid=\"other\",comm=\"other\",cgroup=\"\",container=\"\",syscall=\"accept4\",errno=\"EMFILE\"} 14"));
        assert!(text.contains("sockleak_lost_events_total{cause=\"ring_buffer_full\"} 2"));
        assert!(text.contains("call_site=\"leak (a.c:1)\""));
        assert!(text.contains("sockleak_diagnosis{pid=\"10\",comm=\"p10\",cgroup=\"\",container=\"\",pattern=\"close-wait-not-closed\",confidence=\"certain\"} 1"), "{text}");
        assert!(text.contains("sockleak_diagnosis{pid=\"other\",comm=\"other\",cgroup=\"\",container=\"\",pattern=\"close-wait-not-closed\",confidence=\"certain\"} 2"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }

    fn in_pod(pid: u32, live: u64, ns: &str, pod: &str, container: &str) -> ProcessReport {
        let mut p = proc_(pid, live);
        p.container = Some(format!("{pid:064x}"));
        p.k8s = Some(crate::model::K8s {
            namespace: ns.into(),
            pod: pod.into(),
            pod_uid: format!("uid-{pod}"),
            container: container.into(),
        });
        p
    }

    #[test]
    fn chosen_labels_only_and_series_that_share_them_are_merged() {
        let mut a = in_pod(10, 5, "team-a", "web-1", "app");
        a.fd_usage_ratio = Some(0.9);
        a.seconds_to_fd_limit = Some(50.0);
        let b = in_pod(11, 3, "team-a", "web-2", "app");
        let c = in_pod(12, 2, "team-b", "db-0", "app");
        let r = Report {
            kind: "report",
            duration_s: 1.0,
            lost_events: 0,
            lost: BTreeMap::new(),
            counts_are_lower_bounds: false,
            unseen_opened: 0,
            unseen_closed: 0,
            time_wait: vec![],
            own_cost: Default::default(),
            processes: vec![a, b, c],
        };
        let sel = parse_labels("namespace,container").unwrap();
        let text = render(&r, 20, &sel, SelfStats::default());
        // Two pods of team-a/app: one series, counts summed, the worst limit figures.
        assert!(
            text.contains("sockleak_live_sockets{namespace=\"team-a\",container=\"app\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("sockleak_live_sockets{namespace=\"team-b\",container=\"app\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sockleak_fd_usage_ratio{namespace=\"team-a\",container=\"app\"} 0.9"),
            "{text}"
        );
        assert!(
            text.contains(
                "sockleak_seconds_to_fd_limit{namespace=\"team-a\",container=\"app\"} 50.0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sockleak_socket_growth_per_second{namespace=\"team-a\",container=\"app\"} 2.0"
            ),
            "{text}"
        );
        assert!(text.contains("sockleak_failures_total{namespace=\"team-a\",container=\"app\",syscall=\"accept4\",errno=\"EMFILE\"} 14"), "{text}");
        assert!(!text.contains("pod="), "pod left out: {text}");
        assert!(!text.contains("pid="), "pid left out: {text}");
        // The default set names everything.
        let all = parse_labels("pid,comm,cgroup,container_id,namespace,pod,container").unwrap();
        let text = render(&r, 20, &all, SelfStats::default());
        let id = format!("{:064x}", 11);
        assert!(text.contains(&format!("sockleak_live_sockets{{pid=\"11\",comm=\"p11\",cgroup=\"\",container_id=\"{id}\",namespace=\"team-a\",pod=\"web-2\",container=\"app\"}} 3")), "{text}");
    }

    #[test]
    fn metrics_labels_parse() {
        assert_eq!(
            parse_labels("namespace, container,namespace").unwrap(),
            vec![Label::Namespace, Label::Container]
        );
        let e = parse_labels("namespace,node").unwrap_err();
        assert_eq!(
            e,
            "`node` is not a label; choose from pid, comm, cgroup, container_id, namespace, pod, container"
        );
        assert!(parse_labels("").is_err());
    }
}
