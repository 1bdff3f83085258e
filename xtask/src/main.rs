//! `cargo xtask`: sockleak's build and test automation.

mod build;
mod run;
mod setup;
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
    };
    if let Err(e) = res {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
