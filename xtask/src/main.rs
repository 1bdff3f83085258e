//! `cargo xtask`: sockleak's build and test automation.

mod bench;
mod bpfstats;
mod build;
mod dist;
mod procs;
mod run;
mod setup;
mod soak;
mod util;

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
        /// Only one section, printed (docs/benchmarks.md is left alone): `interpreted`.
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
        Cmd::Dist => dist::dist().map(|_| ()),
        Cmd::Bench { runs, only } => match only.as_deref() {
            None => bench::bench(runs),
            Some("interpreted") => bench::only_interpreted(runs),
            Some(other) => Err(anyhow::anyhow!(
                "--only {other}: the sections that run alone are: interpreted"
            )),
        },
        Cmd::Soak { minutes, rate } => soak::soak(minutes, rate),
    };
    if let Err(e) = res {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
