//! `cargo xtask vmtest [--kernel VERSION]...`: boots the Debian kernels production hosts run
//! (6.1 and 6.12 by default, and 5.10, which sockleak must refuse in one line) with
//! virtme-ng and runs the kernel suite inside each: the privileged integration tests that
//! cover every hook family, built once on the host (release). Everything is fetched into
//! target/vmtest: Debian's kernel packages through a private apt state, virtme-ng from PyPI
//! into a venv; qemu (bookworm-backports), busybox-static, kmod and udev are installed on the
//! host when missing.

mod debian;
mod guest;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use sockleak::kernel::features::{MIN_KERNEL, major_minor};

use self::{
    guest::Expect,
    vm::{Accel, Boot},
};
use crate::util::{cargo, output, run, workspace_root};

/// The kernels checked by default, and what each must show.
const KERNELS: &[&str] = &["6.1", "6.12", "5.10"];

/// Exactly what sockleak says on Debian 11's 5.10 (what its probes find missing).
const REFUSAL_5_10: &str = "sockleak: kernel 5.10 lacks bpf_get_current_task_btf (5.11), \
bpf_get_current_ancestor_cgroup_id (5.14), bpf_task_pt_regs (5.15), bpf_loop (5.17) \
(sockleak needs 5.17 or later); nothing was attached";

/// virtme-ng from PyPI, pinned (its guest init ships in the wheel: nothing to build).
const VIRTME_NG: &str = "virtme-ng==1.42";

fn expectation(series: &str) -> Expect {
    if series == "5.10" {
        return Expect::Refusal(REFUSAL_5_10.into());
    }
    match major_minor(series) {
        Some(r) if r < MIN_KERNEL => Expect::RefusalLike {
            starts: format!("sockleak: kernel {series} lacks "),
            ends: format!("(sockleak needs {MIN_KERNEL} or later); nothing was attached"),
        },
        _ => Expect::Suite,
    }
}

pub fn vmtest(kernels: &[String]) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let work = root.join("target/vmtest");
    let kernels: Vec<String> = if kernels.is_empty() {
        KERNELS.iter().map(|s| s.to_string()).collect()
    } else {
        kernels.to_vec()
    };
    for k in &kernels {
        if major_minor(k).is_none() {
            bail!("--kernel {k}: expected a kernel series such as 6.1 or 5.10");
        }
    }
    // The integration tests' own tools (Go, gcc, bpftool, iproute2, liburing, ...).
    crate::setup::setup(true)?;
    let apt = debian::Apt::new(&work.join("apt"))?;
    host_tools(&apt)?;
    let vng = virtme(&work)?;
    crate::build::build_ebpf(true)?;
    let binaries = build_suite()?;
    let sockleak = root.join("target/release/sockleak");
    let t_setup = started.elapsed();

    let tmp = root.join("target/tmp");
    std::fs::create_dir_all(&tmp)?;
    let host_path = std::env::var("PATH").unwrap_or_default();
    let guest_path = format!("{host_path}:/usr/local/sbin:/usr/sbin:/sbin");
    let vng_path = format!("{}:{host_path}", vng.parent().unwrap_or(&work).display());
    let mut accel: Option<(Accel, String)> = None;
    let mut results = Vec::new();
    for series in &kernels {
        let t = Instant::now();
        let (tree, release) = apt.kernel(series, &work.join("kernels"))?;
        let vmlinuz = tree.join("boot").join(format!("vmlinuz-{release}"));
        let (acc, why) = accel.get_or_insert_with(|| vm::accel(&vmlinuz)).clone();
        eprintln!("xtask: vmtest: {series} ({release}) under {why}");
        let expect = expectation(series);
        let plan = guest::Plan {
            path: &guest_path,
            time_scale: if acc == Accel::Kvm { 2 } else { 10 },
            nofile: nofile(),
            sockleak: &sockleak.display().to_string(),
            binaries: &binaries,
        };
        let script = work.join(format!("guest-{series}.sh"));
        std::fs::write(&script, guest::script(&plan, &expect))?;
        make_executable(&script)?;
        let log = work.join(format!("{series}.log"));
        let (code, stdout) = vm::boot(&Boot {
            vng: &vng,
            vmlinuz: &vmlinuz,
            accel: acc,
            rw: std::slice::from_ref(&tmp),
            script: &script,
            cwd: &root,
            path: &vng_path,
            timeout: if expect == Expect::Suite {
                Duration::from_secs(50 * 60)
            } else {
                Duration::from_secs(10 * 60)
            },
            log: &log,
            tag: series,
        })?;
        let outcome = guest::parse(&stdout);
        let verdict = guest::judge(&outcome, &expect);
        let secs = t.elapsed().as_secs();
        let times: Vec<String> = outcome
            .binaries
            .iter()
            .map(|(n, _, ms)| format!("{n} {:.0}s", *ms as f64 / 1000.0))
            .collect();
        let line = match &verdict {
            Ok(s) => format!("{series} ({release}, {acc:?}): {s} in {secs}s"),
            Err(e) => format!(
                "{series} ({release}, {acc:?}): FAILED: {e} (vng exit {code:?}; log {})",
                log.display()
            ),
        };
        let line = if times.is_empty() {
            line
        } else {
            format!("{line} [{}]", times.join(", "))
        };
        eprintln!("xtask: vmtest: {line}");
        results.push((verdict.is_ok(), line));
    }
    eprintln!(
        "xtask: vmtest summary (setup and build {}s, total {}s):",
        t_setup.as_secs(),
        started.elapsed().as_secs()
    );
    for (_, l) in &results {
        eprintln!("  {l}");
    }
    if results.iter().any(|(ok, _)| !ok) {
        bail!("the kernel matrix failed");
    }
    Ok(())
}

/// This process's RLIMIT_NOFILE (soft, hard).
fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return (1024, 4096);
    }
    (r.rlim_cur, r.rlim_max)
}

fn make_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// qemu (from bookworm-backports: the machine's qemu-utils is that version, and bookworm's
/// qemu-system 7.2 does not go with it), busybox-static (virtme-ng's initramfs), kmod (depmod
/// for the downloaded kernels' modules) and udev (virtme-ng's guest finds its I/O ports
/// through udev; without it every exit code is 255).
fn host_tools(apt: &debian::Apt) -> Result<()> {
    let bookworm = std::fs::read_to_string("/etc/os-release")
        .is_ok_and(|s| s.lines().any(|l| l == "VERSION_CODENAME=bookworm"));
    let qemu_missing = debian::installed("qemu-system-x86").is_none();
    let missing: Vec<&str> = ["busybox-static", "kmod", "udev"]
        .into_iter()
        .filter(|p| debian::installed(p).is_none())
        .collect();
    if !bookworm {
        if qemu_missing || !missing.is_empty() {
            bail!(
                "vmtest installs its host tools on Debian 12 (bookworm) only: install qemu-system-x86 (8 or later), \
                 busybox-static, kmod and udev by hand"
            );
        }
        return Ok(());
    }
    if !crate::util::is_root() && (qemu_missing || !missing.is_empty()) {
        bail!("vmtest must install qemu-system-x86, busybox-static, kmod and udev: run it as root");
    }
    if qemu_missing {
        apt.install(&["qemu-system-x86"], true)?;
    }
    apt.install(&missing, false)
}

/// virtme-ng in a venv under target/vmtest (its scripts call each other through PATH).
fn virtme(work: &Path) -> Result<PathBuf> {
    let venv = work.join("venv");
    let vng = venv.join("bin/vng");
    let want = VIRTME_NG.trim_start_matches("virtme-ng==");
    let have = output(
        &venv.join("bin/python3").display().to_string(),
        &[
            "-c",
            "import importlib.metadata as m; print(m.version('virtme-ng'))",
        ],
    );
    if vng.exists() && have.as_deref().map(str::trim) == Some(want) {
        return Ok(vng);
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("creating a Python venv for virtme-ng (Debian's python3 needs python3-venv)")?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", VIRTME_NG]))?;
    Ok(vng)
}

/// Builds the suite's test binaries once, in release (the guest runs them under emulation);
/// returns (test binary name, executable).
fn build_suite() -> Result<Vec<(String, String)>> {
    let mut c = cargo();
    c.args([
        "test",
        "--release",
        "--package",
        "sockleak",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for (name, _, _) in guest::SUITE {
        c.args(["--test", name]);
    }
    eprintln!("xtask: $ cargo test --release --no-run (the kernel suite)");
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the kernel suite failed");
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str())
        else {
            continue;
        };
        if guest::SUITE.iter().any(|(n, _, _)| *n == name) {
            bins.push((name.to_string(), exe.to_string()));
        }
    }
    for (name, _, _) in guest::SUITE {
        if !bins.iter().any(|(n, _)| n == name) {
            bail!("cargo built no test binary for tests/{name}.rs");
        }
    }
    Ok(bins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_kernel_must_show() {
        assert_eq!(expectation("6.1"), Expect::Suite);
        assert_eq!(expectation("6.12"), Expect::Suite);
        assert_eq!(expectation("5.10"), Expect::Refusal(REFUSAL_5_10.into()));
        match expectation("5.15") {
            Expect::RefusalLike { starts, ends } => {
                assert_eq!(starts, "sockleak: kernel 5.15 lacks ");
                assert!(ends.ends_with("(sockleak needs 5.17 or later); nothing was attached"));
            }
            e => panic!("{e:?}"),
        }
        // The line sockleak prints, from the same decision it unit-tests.
        assert!(REFUSAL_5_10.starts_with("sockleak: kernel 5.10 lacks "));
        assert!(REFUSAL_5_10.ends_with(&format!(
            "(sockleak needs {MIN_KERNEL} or later); nothing was attached"
        )));
    }
}
