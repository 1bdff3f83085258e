//! cgroup v2: where it is mounted (pure v2 at /sys/fs/cgroup, or hybrid at
//! /sys/fs/cgroup/unified), which cgroup a process is in, which container that is, and which
//! processes live in a subtree. No container runtime API: only /proc and the cgroup fs.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::{error::UserError, host::procfs};

/// A traced cgroup subtree, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Directory in the cgroup2 mount.
    pub dir: PathBuf,
    /// Path relative to the cgroup2 root, as /proc/PID/cgroup shows it ("/system.slice/x").
    pub path: String,
    /// cgroup id: the inode of the directory.
    pub id: u64,
    /// Depth below the root.
    pub level: u32,
}

/// Mount point of the cgroup2 hierarchy, from a mountinfo text.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // "36 25 0:30 / /sys/fs/cgroup/unified rw,... shared:10 - cgroup2 cgroup2 rw,..."
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

pub fn cgroup2_mount() -> Option<PathBuf> {
    parse_cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The v2 path from a /proc/PID/cgroup text (the "0::" line).
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_string())
}

pub fn cgroup_of(pid: u32) -> Option<String> {
    parse_proc_cgroup(&fs::read_to_string(procfs::proc_path(pid, "cgroup")).ok()?)
}

/// A container id in a cgroup path: a 64-hex component, bare or wrapped the way docker
/// (`docker-ID.scope`, `/docker/ID`), containerd (`cri-containerd-ID.scope`), CRI-O
/// (`crio-ID.scope`) and podman (`libpod-ID.scope`) write it.
pub fn container_id(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|comp| {
        let c = comp.strip_suffix(".scope").unwrap_or(comp);
        let id = c.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

/// The container id in a cgroup path and the container's own cgroup: the path up to the
/// component that holds the id (a process may sit in a cgroup below it).
pub fn container_cgroup(path: &str) -> Option<(String, String)> {
    let id = container_id(path)?;
    let comps: Vec<&str> = path.split('/').collect();
    let upto = comps.iter().rposition(|c| c.contains(&id))?;
    Some((id, comps[..=upto].join("/")))
}

/// Validates a `--cgroup` argument: an absolute path inside the cgroup2 mount, or a path
/// relative to its root.
pub fn resolve_path(arg: &Path) -> Result<Cgroup, UserError> {
    let bad = |why: &str| UserError::BadCgroup {
        path: arg.to_path_buf(),
        reason: why.to_string(),
    };
    let root =
        cgroup2_mount().ok_or_else(|| bad("no cgroup2 hierarchy is mounted on this host"))?;
    let dir = if arg.is_absolute() {
        arg.to_path_buf()
    } else {
        root.join(arg)
    };
    let dir = fs::canonicalize(&dir).map_err(|_| {
        bad(&format!(
            "does not exist (cgroup v2 is mounted at {}; give a directory under it, or a path relative to it)",
            root.display()
        ))
    })?;
    let rel = dir.strip_prefix(&root).map_err(|_| {
        bad(&format!(
            "is not inside the cgroup v2 hierarchy at {} (a cgroup v1 path?)",
            root.display()
        ))
    })?;
    if !dir.join("cgroup.procs").exists() {
        return Err(bad("is not a cgroup directory (no cgroup.procs)"));
    }
    let id = fs::metadata(&dir).map_err(|e| bad(&e.to_string()))?.ino();
    let level = rel.components().count() as u32;
    Ok(Cgroup {
        path: format!("/{}", rel.display()),
        dir,
        id,
        level,
    })
}

/// Resolves `--container ID` (full id or unique prefix) through the cgroups of running
/// processes.
pub fn resolve_container(prefix: &str) -> Result<Cgroup, UserError> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UserError::BadContainer {
            id: prefix,
            reason: "container ids are hexadecimal".into(),
        });
    }
    let mut found: Vec<(String, String)> = Vec::new(); // (id, cgroup path)
    for pid in procfs::all_pids() {
        let Some(path) = cgroup_of(pid) else { continue };
        let Some((id, dir)) = container_cgroup(&path) else {
            continue;
        };
        if id.starts_with(&prefix) && !found.iter().any(|(i, _)| *i == id) {
            found.push((id, dir));
        }
    }
    match found.len() {
        0 => {
            let running: Vec<String> = procfs::all_pids()
                .into_iter()
                .filter_map(|p| container_id(&cgroup_of(p)?))
                .map(|id| id[..12].to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            Err(UserError::BadContainer {
                id: prefix,
                reason: if running.is_empty() {
                    "no running process is in a container cgroup".into()
                } else {
                    format!(
                        "matches no running container; running: {}",
                        running.join(", ")
                    )
                },
            })
        }
        1 => {
            let (_, path) = found.remove(0);
            resolve_path(Path::new(path.trim_start_matches('/')))
        }
        _ => Err(UserError::BadContainer {
            id: prefix,
            reason: format!(
                "matches {} containers, give more of the id: {}",
                found.len(),
                found
                    .iter()
                    .map(|(id, _)| &id[..16])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Processes in a cgroup subtree now.
pub fn pids_in(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts() {
        let hybrid = "25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      36 25 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_cgroup2_mount(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
    }

    #[test]
    fn proc_cgroup_lines() {
        let hybrid =
            "12:pids:/docker/x\n1:name=systemd:/docker/x\n0::/system.slice/docker-x.scope\n";
        assert_eq!(
            parse_proc_cgroup(hybrid).as_deref(),
            Some("/system.slice/docker-x.scope")
        );
        assert_eq!(parse_proc_cgroup("3:cpu:/a\n"), None);
    }

    #[test]
    fn container_ids() {
        let id = "4f2b0c3a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!("/docker/{id}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"
            ),
            format!("/machine.slice/libpod-{id}.scope/container"),
            format!("/kubepods/burstable/pod1/crio-{id}.scope"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(id), "{path}");
        }
        assert_eq!(container_id("/user.slice/session-2.scope"), None);
        assert_eq!(
            container_cgroup(&format!("/machine.slice/libpod-{id}.scope/container")),
            Some((id.to_string(), format!("/machine.slice/libpod-{id}.scope")))
        );
        assert_eq!(container_id(""), None);
    }
}
