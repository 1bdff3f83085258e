//! Embeds the kernel object built by `cargo xtask build-ebpf` so the binary is self-contained.
//! Without it (plain `cargo check`/`clippy`, no bpf-linker) an empty stub is embedded and
//! sockleak says at run time how to build the real one, as aya's own test tree does.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("..").join("target"));
    println!("cargo::rerun-if-env-changed=SOCKLEAK_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");

    let candidates: Vec<PathBuf> = match env::var_os("SOCKLEAK_EBPF_OBJECT") {
        Some(p) => vec![PathBuf::from(p)],
        None => ["release", "debug"]
            .iter()
            .map(|profile| {
                target_dir
                    .join("bpfel-unknown-none")
                    .join(profile)
                    .join("sockleak")
            })
            .collect(),
    };
    for c in &candidates {
        println!("cargo::rerun-if-changed={}", c.display());
    }
    // The newest object wins, so switching between `build-ebpf` and `build-ebpf --release`
    // embeds whichever was built last.
    let newest = candidates
        .iter()
        .filter_map(|p| Some((fs::metadata(p).ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p);
    let dest = out.join("sockleak.bpf.o");
    match newest {
        Some(p) => {
            fs::copy(p, &dest).expect("copy eBPF object into OUT_DIR");
        }
        None => {
            println!(
                "cargo::warning=no eBPF object found; embedding a stub (run `cargo xtask build-ebpf --release` first for a working binary)"
            );
            fs::write(&dest, b"").expect("write stub eBPF object");
        }
    }
}
