//! Booting a kernel with virtme-ng: the host's root shared read-only, a command run as root,
//! its exit code and output back. KVM when it works, emulation (TCG) when it does not.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// Modules udev would load for the emulated machine (KVM, crypto, ACPI, AHCI, ...): the guest
/// needs none of them, and under emulation each costs boot time.
const MODULE_BLACKLIST: &str = "module_blacklist=kvm_amd,kvm_intel,kvm,ccp,irqbypass,\
crct10dif_pclmul,crc32_pclmul,crc32c_intel,ghash_clmulni_intel,sha512_ssse3,sha256_ssse3,\
sha1_ssse3,aesni_intel,crypto_simd,cryptd,sr_mod,cdrom,sg,iTCO_wdt,iTCO_vendor_support,\
intel_pmc_bxt,evdev,ahci,libahci,libata,psmouse,serio_raw,pcspkr,i6300esb,i2c_i801,i2c_smbus,\
lpc_ich,qemu_fw_cfg,button,joydev,floppy,parport_pc,ppdev";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// How long a KVM guest may take to print its first kernel line before KVM counts as broken
/// (nested KVM on some cloud machines hangs in the firmware instead of failing).
const KVM_PROBE: Duration = Duration::from_secs(20);

/// KVM if /dev/kvm works (a kernel boots far enough to print), else TCG; with the reason.
/// SOCKLEAK_VM_ACCEL=kvm|tcg decides instead.
pub fn accel(vmlinuz: &Path) -> (Accel, String) {
    match std::env::var("SOCKLEAK_VM_ACCEL").as_deref() {
        Ok("kvm") => return (Accel::Kvm, "KVM (SOCKLEAK_VM_ACCEL=kvm)".into()),
        Ok("tcg") => return (Accel::Tcg, "emulation (SOCKLEAK_VM_ACCEL=tcg)".into()),
        _ => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (
            Accel::Tcg,
            "emulation (TCG): /dev/kvm is missing or not usable".into(),
        );
    }
    match kvm_boots(vmlinuz) {
        Ok(true) => (Accel::Kvm, "KVM: a KVM guest booted".into()),
        Ok(false) => (
            Accel::Tcg,
            format!(
                "emulation (TCG): /dev/kvm is there, but a KVM guest printed nothing in {}s \
                 (nested virtualization that hangs); about 10x slower",
                KVM_PROBE.as_secs()
            ),
        ),
        Err(e) => (
            Accel::Tcg,
            format!("emulation (TCG): probing KVM failed ({e:#})"),
        ),
    }
}

/// Boots `vmlinuz` under KVM with no root fs: a working KVM prints "Linux version" at once.
fn kvm_boots(vmlinuz: &Path) -> Result<bool> {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-enable-kvm",
            "-cpu",
            "host",
            "-machine",
            "q35",
            "-m",
            "256",
        ])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
        ])
        .arg(vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let out = child.stdout.take().context("qemu's stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let mut r = BufReader::new(out);
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(13).any(|w| w == b"Linux version") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let booted = rx.recv_timeout(KVM_PROBE).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    Ok(booted)
}

pub struct Boot<'a> {
    pub vng: &'a Path,
    pub vmlinuz: &'a Path,
    pub accel: Accel,
    /// Host directories the guest may write (the rest of the host is read-only there).
    pub rw: &'a [PathBuf],
    pub script: &'a Path,
    pub cwd: &'a Path,
    /// PATH for vng itself (its scripts call each other through PATH).
    pub path: &'a str,
    pub timeout: Duration,
    /// Each output line goes here too, as it comes.
    pub log: &'a Path,
    pub tag: &'a str,
}

/// Boots the kernel, runs the script, returns (exit code, guest stdout).
pub fn boot(b: &Boot) -> Result<(Option<i32>, String)> {
    let mut c = Command::new(b.vng);
    c.arg("--run").arg(b.vmlinuz);
    if b.accel == Accel::Tcg {
        c.arg("--disable-kvm");
    }
    c.args([
        "--cpus",
        "2",
        "--memory",
        "2G",
        "--append",
        MODULE_BLACKLIST,
    ]);
    for d in b.rw {
        c.arg("--rwdir").arg(d);
    }
    // The script runs as root in the guest, in this directory.
    c.arg("--exec").arg(b.script);
    // qemu opens /proc/self/fd/1 per stream: files there would overwrite each other; pipes
    // keep stdout and stderr whole.
    // Its own process group: a timeout stops qemu with it.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c.current_dir(b.cwd)
        .env("PATH", b.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child: Child = c
        .spawn()
        .with_context(|| format!("starting {}", b.vng.display()))?;
    let log = std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::File::create(b.log).with_context(|| format!("creating {}", b.log.display()))?,
    ));
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let pump = |stream: Box<dyn Read + Send>, keep: bool| {
        let tx = tx.clone();
        let log = log.clone();
        let tag = b.tag.to_string();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{tag}] {line}");
                if let Ok(mut f) = log.lock() {
                    let _ = writeln!(f, "{line}");
                }
                if keep {
                    let _ = tx.send(Some(line));
                }
            }
            let _ = tx.send(None);
        })
    };
    let out = pump(Box::new(child.stdout.take().context("vng stdout")?), true);
    let err = pump(Box::new(child.stderr.take().context("vng stderr")?), false);
    drop(tx);
    let deadline = Instant::now() + b.timeout;
    let mut stdout = String::new();
    let mut open = 2;
    while open > 0 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Some(line)) => {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            Ok(None) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "[{}] timed out after {}s: stopping the VM",
                    b.tag,
                    b.timeout.as_secs()
                );
                // SAFETY: plain syscall; the group is vng's own (process_group(0) above).
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait()?;
    let _ = (out.join(), err.join());
    Ok((status.code(), stdout))
}
