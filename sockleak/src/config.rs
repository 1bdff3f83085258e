//! Validated trace settings, built from the command line.

use std::{path::PathBuf, time::Duration};

use crate::{
    cli::{Format, ServeArgs, TargetArgs, TraceArgs},
    error::UserError,
    host::cgroup::{self, Cgroup},
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
}

const MAX_SOCKETS_LIMIT: u32 = 1 << 24;

use sockleak_common::target::{CgroupTarget, MAX_CGROUPS};

impl Config {
    /// Only explicit pids: tracing ends when they (and their children) have all exited.
    pub fn pids_only(&self) -> bool {
        !self.all && self.cgroups.is_empty()
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
        c.serve = Some(crate::serve::ServeOptions {
            listen: a.listen,
            top: a.top,
            web,
            report_endpoint: !a.no_report_endpoint,
        });
        Ok(c)
    }

    fn new(a: &TargetArgs, duration: Option<f64>) -> Result<Config, UserError> {
        let selective = !a.pids.is_empty() || !a.cgroups.is_empty() || !a.containers.is_empty();
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
                cgroups: cgroups
                    .iter()
                    .map(|c| CgroupTarget {
                        id: c.id,
                        level: c.level,
                        flags: 0,
                    })
                    .collect(),
                offsets: Default::default(),
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
        })
    }
}
