//! `cargo xtask`: sockleak's build and test automation.

mod bench;
mod bpfstats;
mod build;
mod dist;
mod kfeatures;
mod procs;
mod run;
mod setup;
mod soak;
mod util;
mod vmtest;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sockleak build and test automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building sockleak needs (idempotent): nightly rust-src, LLVM 22, bpf-linker.
    Setup {
        /// Also install the test workloads' tools (Go, iproute2, bpftool).
        #[arg(long)]
        test_deps: bool,
    },
    /// Build the kernel object (target/bpfel-unknown-none/<profile>/sockleak).
    BuildEbpf {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build everything (release) and run sockleak as root: `cargo xtask run -- trace --pid N`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure sockleak's cost against baselines and bpftrace; writes docs/benchmarks.md.
    Bench {
        /// Runs per configuration (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Run one section alone and replace it in docs/benchmarks.md (`go-http`, `interpreted`,
        /// `no-fp`).
        #[arg(long)]
        only: Option<String>,
    },
    /// Long run under churn (not CI): RSS must stay flat and counts exact; writes docs/soak.md.
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Socket lifecycles per second across all workers.
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
    },
    /// Build the release binary and a Debian package in target/dist (needs dpkg-deb).
    Dist,
    /// List the BPF helpers, program and map types the built object uses, with the kernel
    /// release of each; fails if one is newer than the stated minimum.
    KernelFeatures {
        /// Also write the table to docs/kernel-features.md.
        #[arg(long)]
        write: bool,
    },
    /// Boot Debian's kernels (default 6.1, 6.12 and 5.10) with virtme-ng and run the kernel
    /// suite inside each; 5.10 must be refused in one line.
    Vmtest {
        /// A kernel series to boot (repeatable), e.g. 6.1.
        #[arg(long = "kernel", value_name = "VERSION")]
        kernels: Vec<String>,
    },
    /// Set up, build, run the unit tests and the privileged integration tests (as root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let res: Result<()> = match cli.cmd {
        Cmd::Setup { test_deps } => setup::setup(test_deps),
        Cmd::BuildEbpf { release } => build::build_ebpf(release),
        Cmd::Run { args } => run::run(&args),
        Cmd::Test { args } => run::test(&args),
        Cmd::Vmtest { kernels } => vmtest::vmtest(&kernels),
        Cmd::Dist => dist::dist().map(|_| ()),
        Cmd::KernelFeatures { write } => kfeatures::kernel_features(write),
        Cmd::Bench { runs, only } => bench::bench(runs, only.as_deref()),
        Cmd::Soak { minutes, rate } => soak::soak(minutes, rate),
    };
    if let Err(e) = res {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
