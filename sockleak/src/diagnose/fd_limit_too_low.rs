//! `fd-limit-too-low`: the fd limit is itself the problem (seed incident 4: RLIMIT_NOFILE left
//! at 1024 under a supervisor). Emitted only when failures, usage or growth make the limit
//! matter, with advice for how the process was started: the limit comes from there, and a
//! `ulimit` in a login shell does not reach a daemon.

use super::{Evidence, dur, id};
use crate::{
    host::launcher::{Engine, Launcher},
    model::{Confidence, Diagnosis, ProcessReport},
};

/// Soft limits at or under this are the classic trap (1024 under systemd and supervisord).
const LOW: u64 = 4096;
/// A soft limit this many times below its hard limit is set far too low.
const FAR_BELOW: u64 = 8;
/// Open fds over this share of the soft limit make it matter.
const USAGE: f64 = 0.8;
/// Reaching the limit within this many seconds at the current growth makes it matter.
const HORIZON_S: f64 = 3600.0;

/// Why the limit matters now, if it does: (evidence, measured rather than projected).
fn matters(r: &ProcessReport) -> Option<(String, bool)> {
    let l = r
        .fd_limit
        .as_ref()
        .filter(|l| l.soft != u64::MAX && l.soft > 0)?;
    let emfile: u64 = r
        .failures
        .iter()
        .filter(|f| f.errno == "EMFILE")
        .map(|f| f.count)
        .sum();
    if emfile > 0 {
        let calls: Vec<&str> = r
            .failures
            .iter()
            .filter(|f| f.errno == "EMFILE")
            .map(|f| f.syscall.as_str())
            .collect();
        return Some((
            format!(
                "{} failed with EMFILE {emfile} times: the process hit its limit of {} fds",
                calls.join(", "),
                l.soft
            ),
            true,
        ));
    }
    let open = r.open_fds?;
    if open as f64 >= l.soft as f64 * USAGE {
        return Some((
            format!(
                "{open} of its {} fds are open ({:.0}%)",
                l.soft,
                open as f64 * 100.0 / l.soft as f64
            ),
            true,
        ));
    }
    let t = r.seconds_to_fd_limit.filter(|t| *t <= HORIZON_S)?;
    Some((
        format!(
            "open fds grow {:.1}/s: {open} now, the limit of {} is reached in about {}",
            r.growth_per_s,
            l.soft,
            dur(t)
        ),
        false,
    ))
}

/// Whether the pattern could fire: `gather` reads the launcher only then.
pub fn limit_matters(r: &ProcessReport) -> bool {
    matters(r).is_some()
}

/// The limit to ask for: up to the hard limit when that is not itself low (no privilege is
/// needed for that), else 65536.
fn target(soft: u64, hard: u64) -> u64 {
    if hard > soft && hard > LOW {
        hard.min(1 << 20)
    } else {
        65536
    }
}

fn advice(l: &Launcher, pid: u32, n: u64) -> (String, String) {
    let live = format!("for the running process now: prlimit --pid {pid} --nofile={n}:{n}");
    match l {
        Launcher::Systemd { unit } => (
            format!("started by systemd as {unit}, whose LimitNOFILE= sets the limit"),
            format!(
                "Raise it in the unit: `systemctl edit {unit}`, add `[Service]` and `LimitNOFILE={n}`, then `systemctl restart {unit}` (a ulimit in a login shell does not reach services); {live}"
            ),
        ),
        Launcher::Supervisord(s) => {
            let own = s
                .fd_limit
                .map(|f| format!(" (its own limit: soft {}, hard {})", f.soft, f.hard))
                .unwrap_or_default();
            let raise_own = match s.fd_limit {
                Some(f) if f.hard < n => format!(
                    "; supervisord's own hard limit {} is lower, so first raise LimitNOFILE={n} where supervisord is started (its systemd unit)",
                    f.hard
                ),
                _ => String::new(),
            };
            (
                format!(
                    "started by supervisord (pid {}){own}, whose programs inherit its limit",
                    s.pid
                ),
                format!(
                    "Set `minfds={n}` in the [supervisord] section of supervisord.conf and restart supervisord (it raises its own limit at start, and its programs inherit it){raise_own}; {live}"
                ),
            )
        }
        Launcher::Container {
            engine,
            id,
            kubernetes: true,
        } => (
            format!(
                "runs in a Kubernetes container{} ({}), which gets the container runtime's default limit",
                engine.map(|e| format!(" under {}", e.name())).unwrap_or_default(),
                &id[..12.min(id.len())]
            ),
            format!(
                "Kubernetes has no per-pod fd limit: raise LimitNOFILE={n} in the container runtime's systemd unit on the node (containerd.service or crio.service) and restart it, or raise the soft limit up to the hard one in the container's entrypoint (`ulimit -n`); {live}"
            ),
        ),
        Launcher::Container { engine, id, .. } => {
            let cli = match engine {
                Some(Engine::Podman) => "podman",
                Some(Engine::Docker) => "docker",
                _ => "docker/podman",
            };
            (
                format!(
                    "runs in a {} container ({}), which was started with this limit",
                    engine.map_or("", Engine::name),
                    &id[..12.min(id.len())]
                ),
                format!(
                    "Recreate the container with `{cli} run --ulimit nofile={n}:{n}` (or set the engine's default: default-ulimits in docker's daemon.json, default_ulimits in podman's containers.conf); {live}"
                ),
            )
        }
        Launcher::Shell(s) => (
            format!(
                "started from a {} shell (pid {}), whose limit it inherited",
                s.comm, s.pid
            ),
            format!(
                "Run `ulimit -n {n}` in the shell that starts it (up to that shell's hard limit; for new logins, nofile in /etc/security/limits.conf); a daemon started by a service manager does not inherit it; {live}"
            ),
        ),
        Launcher::Unknown => (
            "how it was started could not be told (no service manager, container or shell above it)".into(),
            format!(
                "Raise the limit where it is started (LimitNOFILE= for a systemd service, `ulimit -n {n}` in its start script, --ulimit for a container); {live}"
            ),
        ),
    }
}

pub fn check(r: &ProcessReport, ev: &Evidence) -> Vec<Diagnosis> {
    let Some((why, measured)) = matters(r) else {
        return Vec::new();
    };
    let Some(l) = r.fd_limit.as_ref() else {
        return Vec::new();
    };
    let low = l.soft <= LOW || l.soft.saturating_mul(FAR_BELOW) <= l.hard;
    // A generous limit hit by a leak is the leak's problem, which its own diagnosis names.
    let leaking = !r.suspects.is_empty();
    if !low && leaking {
        return Vec::new();
    }
    let n = target(l.soft, l.hard);
    let launcher = ev.launcher.clone().unwrap_or(Launcher::Unknown);
    let (how, fix) = advice(&launcher, r.pid, n);
    let mut evidence = vec![
        why,
        format!("soft limit {}, hard limit {}", l.soft, l.hard),
        how,
    ];
    if leaking {
        let held: u64 = r.suspects.iter().map(|s| s.count).sum();
        evidence.push(format!(
            "{held} sockets look leaked (see the other diagnoses and suspects): a higher limit only buys time until they are fixed"
        ));
    }
    vec![Diagnosis {
        pattern: id::FD_LIMIT_TOO_LOW,
        summary: if l.soft < l.hard && l.soft.saturating_mul(FAR_BELOW) <= l.hard {
            format!(
                "The soft fd limit {} is far below the hard limit {}: the process runs out of fds long before it has to",
                l.soft, l.hard
            )
        } else {
            format!("The fd limit {} is too low for this process", l.soft)
        },
        evidence,
        fix,
        call_site: None,
        origin_call: None,
        confidence: if measured {
            Confidence::Certain
        } else {
            Confidence::Likely
        },
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        diagnose::fixture, host::launcher::Ancestor, host::procfs::FdLimit, model::FdLimitJson,
    };

    fn hitting(soft: u64, hard: u64) -> ProcessReport {
        let mut r = fixture::process();
        r.fd_limit = Some(FdLimitJson { soft, hard });
        r.open_fds = Some(soft);
        r.failures
            .push(fixture::failure("accept4", "EMFILE", 300, 3.0));
        r
    }

    fn with(l: Launcher) -> Evidence {
        Evidence {
            launcher: Some(l),
            ..Evidence::default()
        }
    }

    #[test]
    fn advice_fits_how_it_was_started() {
        let r = hitting(1024, 524288);
        let d = check(
            &r,
            &with(Launcher::Systemd {
                unit: "api.service".into(),
            }),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].confidence, Confidence::Certain);
        assert!(d[0].evidence[0].contains("EMFILE 300 times"));
        assert!(
            d[0].fix.contains("systemctl edit api.service"),
            "{}",
            d[0].fix
        );
        assert!(d[0].fix.contains("LimitNOFILE=524288"));
        assert!(d[0].fix.contains("prlimit --pid 42 --nofile=524288:524288"));

        let sup = Ancestor {
            pid: 9,
            comm: "supervisord".into(),
            fd_limit: Some(FdLimit {
                soft: 1024,
                hard: 4096,
            }),
        };
        let d = check(&hitting(1024, 4096), &with(Launcher::Supervisord(sup)));
        assert!(d[0].fix.contains("minfds=65536"), "{}", d[0].fix);
        assert!(d[0].fix.contains("supervisord's own hard limit 4096"));
        assert!(d[0].evidence[2].contains("soft 1024, hard 4096"));

        let id = "a".repeat(64);
        let podman = Launcher::Container {
            engine: Some(Engine::Podman),
            id: id.clone(),
            kubernetes: false,
        };
        let d = check(&hitting(512, 512), &with(podman));
        assert!(
            d[0].fix.contains("podman run --ulimit nofile=65536:65536"),
            "{}",
            d[0].fix
        );
        assert!(!d[0].fix.contains("systemctl"));
        assert!(d[0].evidence[2].contains("podman container (aaaaaaaaaaaa)"));

        let k8s = Launcher::Container {
            engine: Some(Engine::Containerd),
            id,
            kubernetes: true,
        };
        assert!(
            check(&hitting(1024, 1024), &with(k8s))[0]
                .fix
                .contains("containerd.service")
        );

        let shell = Ancestor {
            pid: 5,
            comm: "bash".into(),
            fd_limit: None,
        };
        assert!(
            check(&hitting(1024, 1024), &with(Launcher::Shell(shell)))[0]
                .fix
                .contains("ulimit -n 65536")
        );
    }

    #[test]
    fn no_advice_where_the_limit_does_not_matter() {
        // 0 sockets, 0 of 4096 fds: the case that used to get advice.
        let mut r = fixture::process();
        r.fd_limit = Some(FdLimitJson {
            soft: 4096,
            hard: 524288,
        });
        r.open_fds = Some(0);
        assert!(!limit_matters(&r));
        assert!(check(&r, &with(Launcher::Unknown)).is_empty());
    }

    #[test]
    fn growth_makes_it_likely() {
        let mut r = fixture::process();
        r.fd_limit = Some(FdLimitJson {
            soft: 1024,
            hard: 1024,
        });
        r.open_fds = Some(200);
        r.growth_per_s = 2.0;
        r.seconds_to_fd_limit = Some(412.0);
        let d = check(&r, &with(Launcher::Unknown));
        assert_eq!(d[0].confidence, Confidence::Likely);
        assert!(
            d[0].evidence[0].contains("reached in about 7m"),
            "{}",
            d[0].evidence[0]
        );
    }

    #[test]
    fn a_generous_limit_hit_by_a_leak_is_the_leaks_problem() {
        let mut r = hitting(65536, 65536);
        r.suspects
            .push(fixture::suspect(65000, "ESTABLISHED", "leak (a.c:1)"));
        assert!(check(&r, &with(Launcher::Unknown)).is_empty());
        // A low one gets both, and says the leak comes first.
        let mut r = hitting(1024, 1024);
        r.suspects
            .push(fixture::suspect(1000, "ESTABLISHED", "leak (a.c:1)"));
        let d = check(&r, &with(Launcher::Unknown));
        assert!(d[0].evidence.iter().any(|e| e.contains("only buys time")));
    }
}
