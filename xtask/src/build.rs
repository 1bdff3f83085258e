//! `cargo xtask build-ebpf`: the kernel object, built with nightly and bpf-linker.

use anyhow::{Result, bail};

use crate::{
    setup::bpf_linker_ok,
    util::{cargo, run},
};

pub fn build_ebpf(release: bool) -> Result<()> {
    if !bpf_linker_ok() {
        bail!(
            "bpf-linker {} is not installed: run `cargo xtask setup`",
            crate::setup::BPF_LINKER_VERSION
        );
    }
    let mut c = cargo();
    c.args([
        "+nightly",
        "build",
        "--package",
        "sockleak-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ]);
    if release {
        c.arg("--release");
    }
    // BTF (func_info for bpf_loop callbacks) comes from debug info, which every crate of the
    // object needs, the build-std ones included (memcpy and friends). Global BPF functions
    // (verified once, on their own) must stay exported through the link. No UB checks: in a
    // debug build they add null/alignment checks to raw-pointer accesses (map values, memcpy),
    // whose panic paths end a BPF subprogram with a call the verifier refuses.
    c.env(
        "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
        "-C debuginfo=2 -C link-arg=--btf -C link-arg=--export=sockleak_unwind_capture -Z ub-checks=no",
    );
    run(&mut c)?;
    // Guard the stated minimum kernel: the object may use nothing newer.
    let profile = if release { "release" } else { "debug" };
    crate::kfeatures::check_built(
        &crate::util::workspace_root()
            .join(format!("target/bpfel-unknown-none/{profile}/sockleak")),
    )
}
