//! `--java-perfmap`: asks a JVM to write `/tmp/perf-PID.map` (`jcmd PID Compiler.perfmap`) so
//! its JIT-compiled frames can be named. This acts on the target (the JVM writes a file), so
//! it only runs behind the explicit flag, at most once per `MIN_INTERVAL` per process, and
//! only when a stack of that JVM has unnamed frames.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hashbrown::HashMap;
use log::{debug, warn};

use crate::host::procfs;

/// Code compiled since the last dump is named by the next one, no sooner than this.
const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// A JVM that does not answer its attach socket in this time is left alone.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct JavaPerfMaps {
    enabled: bool,
    last: HashMap<u32, Instant>,
    /// Processes whose dump failed: told once, not retried.
    failed: hashbrown::HashSet<u32>,
}

impl JavaPerfMaps {
    pub fn new(enabled: bool) -> Self {
        JavaPerfMaps {
            enabled,
            ..Default::default()
        }
    }

    /// Whether a fresh dump may be asked of `pid` now.
    pub fn due(&self, pid: u32, now: Instant) -> bool {
        self.enabled
            && !self.failed.contains(&pid)
            && self
                .last
                .get(&pid)
                .is_none_or(|t| now.duration_since(*t) >= MIN_INTERVAL)
    }

    /// Asks JVM `pid` for its perf map. Returns whether the map was written.
    pub fn refresh(&mut self, pid: u32) -> bool {
        let now = Instant::now();
        if !self.due(pid, now) {
            return false;
        }
        self.last.insert(pid, now);
        match dump(pid) {
            Ok(()) => true,
            Err(e) => {
                self.failed.insert(pid);
                warn!("pid {pid}: --java-perfmap could not name its Java frames: {e}");
                false
            }
        }
    }

    pub fn forget(&mut self, pid: u32) {
        self.last.remove(&pid);
        self.failed.remove(&pid);
    }
}

/// The jcmd of the JDK the JVM runs from (`bin/java` → `bin/jcmd`), else the first on PATH.
pub fn jcmd_for(java: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    let sibling = java.parent().map(|d| d.join("jcmd"));
    sibling
        .into_iter()
        .chain(
            path_var
                .unwrap_or("")
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join("jcmd")),
        )
        .find(|p| p.is_file())
}

/// Runs `jcmd PID Compiler.perfmap` as the JVM's own user: the attach socket accepts only its
/// owner's credentials.
fn dump(pid: u32) -> Result<(), String> {
    let exe = std::fs::read_link(procfs::proc_path(pid, "exe"))
        .map_err(|e| format!("cannot read its executable: {e}"))?;
    let path_var = std::env::var("PATH").ok();
    let jcmd = jcmd_for(&exe, path_var.as_deref()).ok_or_else(|| {
        format!(
            "no jcmd next to {} or on PATH: install the JDK's tools (e.g. openjdk-17-jdk-headless)",
            exe.display()
        )
    })?;
    let (uid, gid) = procfs::owner(pid).ok_or("cannot read its user")?;
    let started = Instant::now();
    let mut child = Command::new(&jcmd)
        .arg(pid.to_string())
        .arg("Compiler.perfmap")
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", jcmd.display()))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                debug!(
                    "pid {pid}: perf map written by {} in {:?}",
                    jcmd.display(),
                    started.elapsed()
                );
                return Ok(());
            }
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    use std::io::Read;
                    let _ = s.read_to_string(&mut err);
                }
                let first = err.lines().next().unwrap_or("").trim().to_string();
                return Err(format!("{} exited with {status}: {first}", jcmd.display()));
            }
            Ok(None) if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} got no answer in {TIMEOUT:?} (is it a HotSpot JVM with attach enabled?)",
                    jcmd.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {}: {e}", jcmd.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_and_off_by_default() {
        let now = Instant::now();
        assert!(!JavaPerfMaps::new(false).due(1, now));
        let mut m = JavaPerfMaps::new(true);
        assert!(m.due(1, now));
        m.last.insert(1, now);
        assert!(!m.due(1, now + Duration::from_millis(500)));
        assert!(m.due(1, now + MIN_INTERVAL));
        assert!(m.due(2, now));
        m.failed.insert(3);
        assert!(!m.due(3, now));
    }

    #[test]
    fn jcmd_is_found_next_to_java_then_on_path() {
        let d = std::env::temp_dir().join(format!("sockleak-jcmd-{}", std::process::id()));
        let (jdk, other) = (d.join("jdk/bin"), d.join("other"));
        std::fs::create_dir_all(&jdk).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("jcmd"), "").unwrap();
        let path = other.to_string_lossy().into_owned();
        assert_eq!(
            jcmd_for(&jdk.join("java"), Some(&path)),
            Some(other.join("jcmd"))
        );
        std::fs::write(jdk.join("jcmd"), "").unwrap();
        assert_eq!(
            jcmd_for(&jdk.join("java"), Some(&path)),
            Some(jdk.join("jcmd"))
        );
        assert_eq!(jcmd_for(Path::new("/nonexistent/java"), None), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
