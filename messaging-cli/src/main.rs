//! The `messaging` binary: argument parsing, logging to stderr, and SIGINT/SIGTERM
//! mapped to a clean stop. Everything else is in the `messaging_cli` library.

use std::process::ExitCode;

use clap::Parser;
use messaging_cli::{Cli, Output, Shutdown, run};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                messaging_cli::exit::USAGE
            } else {
                messaging_cli::exit::OK // --help, --version
            });
        }
    };
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .init();

    let shutdown = Shutdown::new();
    match Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    shutdown.trigger();
                }
            });
        }
        Err(error) => eprintln!("warning: cannot handle SIGINT/SIGTERM: {error}"),
    }
    let out = Output::new(std::io::stdout());
    let err = Output::new(std::io::stderr());
    ExitCode::from(run(cli, &out, &err, &shutdown))
}
