//! Validated trace settings, built from the command line.

use std::{path::PathBuf, time::Duration};

use crate::{
    cli::{Format, ServeArgs, TargetArgs, TraceArgs},
    error::UserError,
    host::cgroup::{self, Cgroup},
    host::cri::pods::{self, Filter},
    host::procfs,
    kernel::bpf::LoadOptions,
};

#[derive(Debug, Clone)]
pub struct Config {
    /// Requested processes (thread ids already mapped to their process).
    pub pids: Vec<u32>,
    /// Traced cgroup subtrees (`--cgroup`, `--container`).
    pub cgroups: Vec<Cgroup>,
    pub all: bool,
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub min_age_ns: u64,
    pub min_count: u64,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub load: LoadOptions,
    /// Set for `sockleak serve`.
    pub serve: Option<crate::serve::ServeOptions>,
    /// Uprobes may be attached to traced Go programs (see `gohttp`).
    pub uprobes: bool,
    pub stack_mode: crate::cli::StackMode,
    /// Ask JVMs for their perf map (`--java-perfmap`).
    pub java_perfmap: bool,
    /// Kubernetes names and filters (`--cri-socket`, `--namespace`, ...).
    pub kube: KubeOptions,
}

/// Where Kubernetes names come from and which containers the filters select.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// `--cri-socket`; else the usual paths are probed.
    pub socket: Option<PathBuf>,
    /// `--namespace`, `--pod`, `--container-name`, `--selector`; None when none was given.
    pub filter: Option<Filter>,
    /// `--cri-resync`: how often the runtime is listed.
    pub resync: Duration,
}

/// Checks a name the way Kubernetes validates it (lowercase, digits and '-', '.' in pod
/// names), so a typo like `--namespace Payments` is told at once, not as "no such namespace".
fn check_k8s_name(flag: &'static str, v: &str) -> Result<String, UserError> {
    let dots = flag == "pod";
    let max = if dots { 253 } else { 63 };
    let ok_char =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.');
    let bytes = v.as_bytes();
    let reason = if v.is_empty() {
        Some("is empty".to_string())
    } else if v.len() > max {
        Some(format!("is longer than {max} characters"))
    } else if !bytes.iter().all(|b| ok_char(*b)) {
        Some(format!(
            "Kubernetes names are lowercase letters, digits and '-'{}",
            if dots { " and '.'" } else { "" }
        ))
    } else if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        Some("must start and end with a letter or digit".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(UserError::BadK8sName {
            flag,
            value: v.to_string(),
            reason,
        }),
        None => Ok(v.to_string()),
    }
}

fn kube_filter(a: &TargetArgs) -> Result<Option<Filter>, UserError> {
    if let (Some(p), None) = (&a.pod, &a.namespace) {
        return Err(UserError::PodWithoutNamespace(p.clone()));
    }
    let selector = match &a.selector {
        Some(s) => pods::parse_selector(s).map_err(|reason| UserError::BadSelector {
            input: s.clone(),
            reason,
        })?,
        None => Vec::new(),
    };
    let f = Filter {
        namespace: a
            .namespace
            .as_deref()
            .map(|n| check_k8s_name("namespace", n))
            .transpose()?,
        pod: a
            .pod
            .as_deref()
            .map(|n| check_k8s_name("pod", n))
            .transpose()?,
        container: a
            .container_name
            .as_deref()
            .map(|n| check_k8s_name("container-name", n))
            .transpose()?,
        selector,
    };
    Ok((!f.is_empty()).then_some(f))
}

const MAX_SOCKETS_LIMIT: u32 = 1 << 24;
/// `--unwind-table-mib` at most: 128M rows, well within a row index.
const MAX_UNWIND_TABLE_MIB: u32 = 1024;

use sockleak_common::{
    target::{CgroupTarget, MAX_CGROUPS},
    unwind::UnwindRow,
};

impl Config {
    /// Only explicit pids: tracing ends when they (and their children) have all exited.
    pub fn pids_only(&self) -> bool {
        !self.all && self.cgroups.is_empty() && self.kube.filter.is_none()
    }

    pub fn for_trace(a: &TraceArgs) -> Result<Config, UserError> {
        let mut c = Config::new(&a.target, a.duration)?;
        c.format = a.format;
        c.output = a.output.clone();
        Ok(c)
    }

    pub fn for_serve(a: &ServeArgs) -> Result<Config, UserError> {
        let mut c = Config::new(&a.target, a.duration)?;
        if a.top == 0 {
            return Err(UserError::BadTop);
        }
        let web = match &a.web_config {
            Some(path) => {
                Some(
                    crate::serve::webconfig::load(path).map_err(|e| UserError::WebConfig {
                        path: path.clone(),
                        reason: e.0,
                    })?,
                )
            }
            None => None,
        };
        let metrics_labels =
            crate::serve::metrics::parse_labels(&a.metrics_labels).map_err(|reason| {
                UserError::BadMetricsLabels {
                    input: a.metrics_labels.clone(),
                    reason,
                }
            })?;
        c.serve = Some(crate::serve::ServeOptions {
            listen: a.listen,
            top: a.top,
            metrics_labels,
            web,
            report_endpoint: !a.no_report_endpoint,
        });
        Ok(c)
    }

    fn new(a: &TargetArgs, duration: Option<f64>) -> Result<Config, UserError> {
        let filter = kube_filter(a)?;
        let selective = !a.pids.is_empty()
            || !a.cgroups.is_empty()
            || !a.containers.is_empty()
            || filter.is_some();
        if a.all && selective {
            return Err(UserError::PidWithAll);
        }
        if !a.all && !selective {
            return Err(UserError::NoTarget);
        }
        if let Some(d) = duration
            && !(d.is_finite() && d > 0.0)
        {
            return Err(UserError::BadDuration(d));
        }
        if !(a.interval.is_finite() && a.interval > 0.0) {
            return Err(UserError::BadInterval(a.interval));
        }
        if !(a.min_age.is_finite() && a.min_age >= 0.0) {
            return Err(UserError::BadMinAge(a.min_age));
        }
        if a.ring_buffer_kib < 4
            || !a.ring_buffer_kib.is_power_of_two()
            || a.ring_buffer_kib > (1 << 20)
        {
            return Err(UserError::BadRingBuffer(a.ring_buffer_kib));
        }
        if a.stack_sample == 0 {
            return Err(UserError::BadStackSample(0));
        }
        if a.unwind_table_mib > MAX_UNWIND_TABLE_MIB {
            return Err(UserError::BadUnwindTableMib(a.unwind_table_mib));
        }
        // Tables are only walked for DWARF stacks.
        let unwind_mib = if a.no_stacks || a.stack_mode == crate::cli::StackMode::Fp {
            0
        } else {
            a.unwind_table_mib
        };
        if a.max_sockets == 0 || a.max_sockets > MAX_SOCKETS_LIMIT {
            return Err(UserError::BadMaxSockets(a.max_sockets));
        }
        let mut pids = Vec::new();
        for &raw in &a.pids {
            let pid = u32::try_from(raw)
                .ok()
                .filter(|p| *p > 0 && i32::try_from(*p).is_ok())
                .ok_or(UserError::BadPid(raw))?;
            // A thread id names its process: fds belong to the whole thread group.
            let tgid = procfs::tgid(pid).ok_or(UserError::NoSuchPid(pid))?;
            if procfs::is_kernel_thread(tgid) {
                return Err(UserError::KernelThread {
                    pid,
                    comm: procfs::comm(tgid).unwrap_or_else(|| "it".into()),
                });
            }
            if !pids.contains(&tgid) {
                pids.push(tgid);
            }
        }
        let mut cgroups: Vec<Cgroup> = Vec::new();
        for p in &a.cgroups {
            let c = cgroup::resolve_path(p)?;
            if !cgroups.contains(&c) {
                cgroups.push(c);
            }
        }
        for id in &a.containers {
            let c = cgroup::resolve_container(id)?;
            if !cgroups.contains(&c) {
                cgroups.push(c);
            }
        }
        if cgroups.len() > MAX_CGROUPS as usize {
            return Err(UserError::TooManyCgroups(MAX_CGROUPS));
        }
        Ok(Config {
            pids,
            load: LoadOptions {
                trace_all: a.all,
                capture_stacks: !a.no_stacks,
                max_sockets: a.max_sockets,
                stack_entries: a.stack_entries,
                ring_buffer_bytes: a.ring_buffer_kib * 1024,
                stack_sample: a.stack_sample,
                stack_copy_bytes: sockleak_common::stack::STACK_COPY_MAX as u32,
                stack_copy_ring_bytes: 4 << 20,
                unwind_table_rows: unwind_mib * ((1 << 20) / size_of::<UnwindRow>() as u32),
                cgroups: cgroups
                    .iter()
                    .map(|c| CgroupTarget {
                        id: c.id,
                        level: c.level,
                        flags: 0,
                    })
                    .collect(),
                offsets: Default::default(),
                task_fsbase: 0,
            },
            cgroups,
            all: a.all,
            duration: duration.map(Duration::from_secs_f64),
            interval: Duration::from_secs_f64(a.interval),
            min_age_ns: (a.min_age * 1e9) as u64,
            min_count: a.min_count.max(1),
            format: Format::Text,
            output: None,
            serve: None,
            uprobes: !a.no_uprobes,
            stack_mode: a.stack_mode,
            java_perfmap: a.java_perfmap,
            kube: KubeOptions {
                socket: a.cri_socket.clone(),
                filter,
                resync: Duration::from_secs_f64(a.cri_resync.clamp(0.5, 3600.0)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn target(args: &[&str]) -> TargetArgs {
        let cli = Cli::try_parse_from(["sockleak", "trace"].iter().chain(args)).unwrap();
        let Command::Trace(t) = cli.command else {
            unreachable!()
        };
        t.target
    }

    #[test]
    fn kubernetes_filters_are_checked_before_anything_runs() {
        let f = kube_filter(&target(&[
            "--namespace",
            "team-a",
            "--pod",
            "leaky-7d9f",
            "--container-name",
            "app",
            "--selector",
            "tier=web",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            f.describe(),
            "--namespace team-a --pod leaky-7d9f --container-name app --selector tier=web"
        );
        assert!(kube_filter(&target(&["--all"])).unwrap().is_none());
        let err = |args: &[&str]| kube_filter(&target(args)).unwrap_err().to_string();
        assert_eq!(
            err(&["--pod", "leaky"]),
            "--pod leaky: give its --namespace too (pod names are unique only within a namespace)"
        );
        assert_eq!(
            err(&["--namespace", "Payments"]),
            "--namespace \"Payments\": Kubernetes names are lowercase letters, digits and '-'"
        );
        assert_eq!(
            err(&["--namespace", "a", "--pod=-x"]),
            "--pod \"-x\": must start and end with a letter or digit"
        );
        assert!(err(&["--selector", "a in (b)"]).starts_with("--selector a in (b): set-based"));
        // Pod names may have dots; namespaces may not.
        assert!(kube_filter(&target(&["--namespace", "a", "--pod", "web.1"])).is_ok());
        assert!(kube_filter(&target(&["--namespace", "a.b"])).is_err());
        // A filter is a target: with --all it conflicts.
        let e = Config::new(&target(&["--all", "--namespace", "a"]), None).unwrap_err();
        assert!(matches!(e, UserError::PidWithAll), "{e}");
    }
}
