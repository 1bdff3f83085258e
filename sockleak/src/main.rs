use std::process::ExitCode;

use clap::Parser;
use sockleak::{
    cli::{Cli, Command},
    config::Config,
    error::UserError,
    trace,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log)
        .format_target(false)
        .format_timestamp(None)
        .init();
    let res = match &cli.command {
        Command::Trace(args) => Config::from_args(args)
            .map_err(anyhow::Error::from)
            .and_then(trace::run),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: a user error says what to do; anything else gets its context chain.
            match e.downcast_ref::<UserError>() {
                Some(u) => eprintln!("sockleak: {u}"),
                None => eprintln!("sockleak: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
