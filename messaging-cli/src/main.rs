//! The `messaging` binary: argument parsing, logging to stderr, and SIGINT/SIGTERM
//! mapped to stop requests (see [`Shutdown`]). Everything else is in the
//! `messaging_cli` library.
//!
//! Every command returns to `main`, which returns its exit code: nothing calls
//! `std::process::exit`, so the transports' destructors (which settle unconfirmed
//! publishes and remove reply queues) always run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use messaging_cli::{Cli, Output, Shutdown, default_log_filter, log_colours, run};
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(log_colours(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_log_filter(cli.verbose).into()),
        )
        .init();

    let shutdown = Shutdown::new();
    match Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                // Every signal is one more request: the second one ends a drain.
                for _ in signals.forever() {
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
