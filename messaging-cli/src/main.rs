//! The `messaging` binary: argument parsing, logging to stderr, and SIGINT/SIGTERM
//! mapped to stop requests (see [`Shutdown`]). Everything else is in the
//! `messaging_cli` library.
//!
//! Every command returns to `main`, which returns its exit code: the transports'
//! destructors (which settle unconfirmed publishes and remove reply queues) run. The
//! one exception is a second SIGINT/SIGTERM that the command has not answered within
//! [`FORCED_EXIT_AFTER`] (it is stuck in a destructor or in a call that cannot be
//! abandoned): the process then exits at once with status 1, whatever it was doing.
//!
//! Usage errors are one line on stderr (exit 2); `--help` and `--version` print clap's
//! text on stdout (exit 0, or 1 if it cannot be written). Before parsing, oslo
//! simulator's two-letter flags `-tg` / `-tp` after `simulate` become `--targets` /
//! `--topic` ([`oslo_short_flags`]).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use messaging_cli::{
    Cli, Output, Shutdown, default_log_filter, exit, handle_signals, log_colours, oslo_short_flags,
    run, usage_error_line,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// How long a command has to return after a second SIGINT/SIGTERM (it normally does
/// at once) before the process exits without it.
const FORCED_EXIT_AFTER: Duration = Duration::from_millis(500);

/// Set once [`run`] returned: the process is exiting by itself.
static RETURNED: AtomicBool = AtomicBool::new(false);

/// Writes `line` on stderr, ignoring failures (there is nowhere left to report them).
fn stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn main() -> ExitCode {
    // oslo's simulator.py spells two flags -tg and -tp, which clap cannot parse.
    let cli = match Cli::try_parse_from(oslo_short_flags(std::env::args_os())) {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            stderr_line(&usage_error_line(&error));
            return ExitCode::from(exit::USAGE);
        }
        // --help, --version: on stdout, which must take it.
        Err(help) => {
            return match help.print().and_then(|()| std::io::stdout().flush()) {
                Ok(()) => ExitCode::from(exit::OK),
                Err(error) => {
                    stderr_line(&format!("error: cannot write to stdout: {error}"));
                    ExitCode::from(exit::FAILURE)
                }
            };
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
                .unwrap_or_else(|_| default_log_filter(cli.verbosity()).into()),
        )
        .init();

    let shutdown = Shutdown::new();
    match Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                handle_signals(
                    signals.forever(),
                    &shutdown,
                    &RETURNED,
                    FORCED_EXIT_AFTER,
                    || {
                        stderr_line("error: stopped again: exiting at once");
                        std::process::exit(i32::from(exit::FAILURE));
                    },
                );
            });
        }
        Err(error) => stderr_line(&format!("warning: cannot handle SIGINT/SIGTERM: {error}")),
    }
    let out = Output::new(std::io::stdout());
    let err = Output::new(std::io::stderr());
    let code = run(cli, &out, &err, &shutdown);
    RETURNED.store(true, Ordering::SeqCst);
    ExitCode::from(code)
}
