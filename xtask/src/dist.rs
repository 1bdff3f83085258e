//! `cargo xtask dist`: what production hosts install, built without anything beyond Debian's
//! own `dpkg-deb`: target/dist/sockleak (the release binary, BPF object embedded) and
//! target/dist/sockleak_<version>_<arch>.deb with the systemd unit, the alert rules and the
//! DaemonSet.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    build::build_ebpf,
    setup::setup,
    util::{cargo, output, run, workspace_root},
};

/// Where the packaged binary lives (the unit in deploy/ is for a hand install in /usr/local).
const BIN: &str = "/usr/bin/sockleak";

fn version() -> Result<String> {
    let toml = fs::read_to_string(workspace_root().join("Cargo.toml"))?;
    toml.lines()
        .find_map(|l| {
            let v = l.strip_prefix("version = \"")?;
            Some(v.trim_end_matches('"').to_string())
        })
        .context("no version in Cargo.toml")
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = to.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = to.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(to, text)?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn dir_size_kib(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    walk(dir).div_ceil(1024)
}

/// Builds the release binary and the .deb; returns the .deb's path.
pub fn dist() -> Result<PathBuf> {
    setup(false)?;
    build_ebpf(true)?;
    run(cargo().args(["build", "--release", "--package", "sockleak"]))?;
    let root = workspace_root();
    let out = root.join("target/dist");
    fs::create_dir_all(&out)?;
    let bin = root.join("target/release/sockleak");
    copy(&bin, &out.join("sockleak"), 0o755)?;

    let version = version()?;
    let arch = output("dpkg", &["--print-architecture"])
        .map(|s| s.trim().to_string())
        .context("dpkg --print-architecture: the .deb is built with Debian's dpkg-deb")?;
    let name = format!("sockleak_{version}_{arch}");
    let stage = out.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    copy(&bin, &stage.join(BIN.trim_start_matches('/')), 0o755)?;
    // The debug info stays in target/release; the package carries symbols only.
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg(stage.join(BIN.trim_start_matches('/'))))?;
    let unit = fs::read_to_string(root.join("deploy/sockleak.service"))?
        .replace("/usr/local/bin/sockleak", BIN)
        .replace(
            "Install the binary at /usr/local/bin/sockleak.",
            "Installed by the sockleak package.",
        );
    write(
        &stage.join("lib/systemd/system/sockleak.service"),
        &unit,
        0o644,
    )?;
    let share = stage.join("usr/share/sockleak");
    for f in [
        "prometheus-rules.yaml",
        "prometheus-rules.test.yaml",
        "daemonset.yaml",
        "web-config.example.yml",
    ] {
        copy(&root.join("deploy").join(f), &share.join(f), 0o644)?;
    }
    let doc = stage.join("usr/share/doc/sockleak");
    copy(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    for f in ["json-output.md", "benchmarks.md"] {
        copy(&root.join("docs").join(f), &doc.join(f), 0o644)?;
    }
    write(
        &doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: sockleak\n\nFiles: *\nLicense: MIT OR Apache-2.0\n",
        0o644,
    )?;

    let debian = stage.join("DEBIAN");
    let mut control = String::new();
    let _ = writeln!(control, "Package: sockleak");
    let _ = writeln!(control, "Version: {version}");
    let _ = writeln!(control, "Architecture: {arch}");
    let _ = writeln!(
        control,
        "Maintainer: sockleak developers <sockleak@example.invalid>"
    );
    let _ = writeln!(control, "Installed-Size: {}", dir_size_kib(&stage));
    let _ = writeln!(control, "Depends: libc6");
    let _ = writeln!(control, "Section: admin");
    let _ = writeln!(control, "Priority: optional");
    let _ = writeln!(
        control,
        "Description: find socket leaks in live Linux processes with eBPF\n \
         sockleak traces socket creation, connect, accept and close with eBPF tracepoints,\n \
         and reports which process leaks sockets, from which call site, to where, in\n \
         which TCP state, how fast, when it hits its fd limit, and the known cause and fix.\n \
         Needs Linux >= 5.15 with BTF. The sockleak.service unit (an exporter on\n \
         127.0.0.1:9669) is installed but not enabled."
    );
    write(&debian.join("control"), &control, 0o644)?;
    // The unit is shipped, not started: tracing every process is the administrator's call.
    let reload = "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi\n";
    write(&debian.join("postinst"), reload, 0o755)?;
    write(&debian.join("postrm"), reload, 0o755)?;
    write(
        &debian.join("prerm"),
        "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl stop sockleak.service >/dev/null 2>&1 || true; fi\n",
        0o755,
    )?;
    let deb = out.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    fs::remove_dir_all(&stage)?;
    if !deb.exists() {
        bail!("dpkg-deb made no {}", deb.display());
    }
    eprintln!(
        "xtask: built {} and {}",
        out.join("sockleak").display(),
        deb.display()
    );
    Ok(deb)
}
