//! How a process was started, judged from its ancestors and its cgroup: where its fd limit came
//! from, and so where a higher one must be set. `detect` is pure; `of` reads /proc.

use crate::{
    host::cgroup,
    host::procfs::{self, FdLimit},
};

/// A process above the one being judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    pub fd_limit: Option<FdLimit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Podman,
    Docker,
    Containerd,
    CriO,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
            Engine::Containerd => "containerd",
            Engine::CriO => "CRI-O",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    /// supervisord (the nearest one above): its children inherit its limit.
    Supervisord(Ancestor),
    /// A container; `engine` when the cgroup names it.
    Container {
        engine: Option<Engine>,
        id: String,
        kubernetes: bool,
    },
    /// A systemd service (the unit's cgroup).
    Systemd {
        unit: String,
    },
    /// An interactive shell it inherited its limit from.
    Shell(Ancestor),
    Unknown,
}

const SHELLS: &[&str] = &["bash", "sh", "dash", "zsh", "fish", "ksh", "tcsh", "csh"];

/// Judges from the ancestors (nearest first) and the cgroup path (cgroup v2, or a v1 line).
pub fn detect(ancestors: &[Ancestor], cgroup_path: &str) -> Launcher {
    if let Some(a) = ancestors.iter().find(|a| a.comm == "supervisord") {
        return Launcher::Supervisord(a.clone());
    }
    if let Some(id) = cgroup::container_id(cgroup_path).or_else(|| libpod_id(cgroup_path)) {
        let engine = if cgroup_path.contains("libpod") {
            Some(Engine::Podman)
        } else if cgroup_path.contains("docker") {
            Some(Engine::Docker)
        } else if cgroup_path.contains("crio") {
            Some(Engine::CriO)
        } else if cgroup_path.contains("containerd") {
            Some(Engine::Containerd)
        } else {
            None
        };
        return Launcher::Container {
            engine,
            id,
            kubernetes: cgroup_path.contains("kubepods"),
        };
    }
    // The unit's own cgroup: the last ".service" component, not a user manager's.
    if let Some(unit) = cgroup_path
        .split('/')
        .rev()
        .find(|c| c.ends_with(".service") && !c.starts_with("user@"))
    {
        return Launcher::Systemd {
            unit: unit.to_string(),
        };
    }
    if let Some(a) = ancestors.iter().find(|a| SHELLS.contains(&a.comm.as_str())) {
        return Launcher::Shell(a.clone());
    }
    Launcher::Unknown
}

/// Podman's cgroupfs layout names the container `libpod-<64 hex>` (also without `.scope`).
fn libpod_id(path: &str) -> Option<String> {
    path.split('/').find_map(|c| {
        let id = c.strip_prefix("libpod-")?;
        let id = id.strip_suffix(".scope").unwrap_or(id);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

/// A process's ancestors, nearest first, up to (not including) pid 1.
pub fn ancestors(pid: u32) -> Vec<Ancestor> {
    let mut out = Vec::new();
    let mut cur = pid;
    for _ in 0..64 {
        let Some(ppid) = std::fs::read_to_string(procfs::proc_path(cur, "stat"))
            .ok()
            .and_then(|s| procfs::parse_stat_ppid(&s))
        else {
            break;
        };
        if ppid <= 1 {
            break;
        }
        out.push(Ancestor {
            pid: ppid,
            comm: procfs::comm(ppid).unwrap_or_default(),
            fd_limit: procfs::fd_limit(ppid),
        });
        cur = ppid;
    }
    out
}

/// How `pid` was started.
pub fn of(pid: u32, cgroup_path: Option<&str>) -> Launcher {
    let path = cgroup_path
        .map(str::to_string)
        .or_else(|| cgroup::cgroup_of(pid))
        .unwrap_or_default();
    detect(&ancestors(pid), &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(pid: u32, comm: &str) -> Ancestor {
        Ancestor {
            pid,
            comm: comm.into(),
            fd_limit: Some(FdLimit {
                soft: 1024,
                hard: 4096,
            }),
        }
    }

    const ID: &str = "3f2a0b1c3f2a0b1c3f2a0b1c3f2a0b1c3f2a0b1c3f2a0b1c3f2a0b1c3f2a0b1c";

    #[test]
    fn supervisord_wins_over_its_own_unit() {
        let l = detect(
            &[a(50, "supervisord"), a(40, "bash")],
            "/system.slice/supervisor.service",
        );
        assert_eq!(l, Launcher::Supervisord(a(50, "supervisord")));
    }

    #[test]
    fn containers_by_engine() {
        let podman = format!("/libpod_parent/libpod-{ID}");
        assert_eq!(
            detect(&[a(9, "conmon")], &podman),
            Launcher::Container {
                engine: Some(Engine::Podman),
                id: ID.into(),
                kubernetes: false
            }
        );
        let docker = format!("/system.slice/docker-{ID}.scope");
        assert!(matches!(
            detect(&[], &docker),
            Launcher::Container {
                engine: Some(Engine::Docker),
                ..
            }
        ));
        let k8s = format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope");
        assert_eq!(
            detect(&[], &k8s),
            Launcher::Container {
                engine: Some(Engine::Containerd),
                id: ID.into(),
                kubernetes: true
            }
        );
    }

    #[test]
    fn systemd_units_and_shells() {
        assert_eq!(
            detect(&[a(7, "bash")], "/system.slice/api.service"),
            Launcher::Systemd {
                unit: "api.service".into()
            }
        );
        // A user manager is not the unit; the shell in the login session is what matters.
        assert_eq!(
            detect(
                &[a(7, "bash"), a(6, "sshd")],
                "/user.slice/user-0.slice/session-3.scope"
            ),
            Launcher::Shell(a(7, "bash"))
        );
        assert_eq!(
            detect(
                &[],
                "/user.slice/user-1000.slice/user@1000.service/app.slice/web.service"
            ),
            Launcher::Systemd {
                unit: "web.service".into()
            }
        );
        assert_eq!(detect(&[a(3, "cron")], "/"), Launcher::Unknown);
    }
}
