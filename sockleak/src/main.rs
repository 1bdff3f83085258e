use std::process::ExitCode;

use clap::Parser;
use sockleak::{
    cli::{Cli, Command},
    config::Config,
    error::UserError,
    trace,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    env_logger::Builder::new()
        .parse_filters(&cli.log)
        .format_target(false)
        .format_timestamp(None)
        .init();
    let res = match &cli.command {
        Command::Trace(args) => Config::for_trace(args)
            .map_err(anyhow::Error::from)
            .and_then(trace::run),
        Command::Serve(args) => Config::for_serve(args)
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

/// Help and version print as clap renders them; usage errors become one line.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("sockleak: {first} (see `{}`)", help_hint(std::env::args()));
            ExitCode::from(2)
        }
    }
}

/// The help of the subcommand that was run, else the top-level help.
fn help_hint(args: impl Iterator<Item = String>) -> &'static str {
    for a in args.skip(1) {
        match a.as_str() {
            "trace" => return "sockleak trace --help",
            "serve" => return "sockleak serve --help",
            _ => {}
        }
    }
    "sockleak --help"
}

#[cfg(test)]
mod tests {
    use super::help_hint;

    fn args(v: &[&str]) -> impl Iterator<Item = String> {
        v.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn hint_names_the_subcommand_run() {
        assert_eq!(
            help_hint(args(&["sockleak", "serve", "--bogus"])),
            "sockleak serve --help"
        );
        assert_eq!(
            help_hint(args(&["sockleak", "--log", "debug", "trace", "-x"])),
            "sockleak trace --help"
        );
        assert_eq!(help_hint(args(&["sockleak", "--bogus"])), "sockleak --help");
    }
}
