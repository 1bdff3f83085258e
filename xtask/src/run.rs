//! `cargo xtask run` and `cargo xtask test`.

use std::process::Command;

use anyhow::Result;

use crate::{
    build::build_ebpf,
    setup::setup,
    util::{cargo, is_root, run as sh, workspace_root},
};

pub fn run(args: &[String]) -> Result<()> {
    setup(false)?;
    build_ebpf(true)?;
    sh(cargo().args(["build", "--release", "--package", "sockleak"]))?;
    let bin = workspace_root().join("target/release/sockleak");
    let mut c = if is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    let status = c.args(args).status()?;
    std::process::exit(status.code().unwrap_or(1));
}

pub fn test(args: &[String]) -> Result<()> {
    setup(true)?;
    build_ebpf(true)?;
    // The package test (tests/package.rs) installs what `cargo xtask dist` builds.
    let deb = crate::dist::dist()?;
    // Unit and integration tests in one run; the integration tests load the real programs,
    // so they run as root (in CI a test that cannot load BPF fails rather than skips).
    let mut c = if is_root() {
        cargo()
    } else {
        eprintln!("xtask: not root: running the tests under sudo");
        let mut c = Command::new("sudo");
        c.args(["-E", "cargo"]).current_dir(workspace_root());
        c
    };
    c.env("SOCKLEAK_DEB", &deb);
    c.args([
        "test",
        "--workspace",
        "--exclude",
        "sockleak-ebpf",
        "--all-features",
    ]);
    if !args.is_empty() {
        c.arg("--").args(args);
    }
    sh(&mut c)
}
