//! The `messaging` command: a demo on the in-memory transport, `call` / `cast` /
//! `notify` against a live bus, a test server (`serve`) and a notification printer
//! (`listen`).
//!
//! The binary (`src/main.rs`) only parses arguments, maps SIGINT/SIGTERM to a
//! [`Shutdown`] and calls [`run`]; everything else is here, so that the commands are
//! tested in-process (over `memory://`, which only works inside one process).
//!
//! Results go to stdout, progress and logs to stderr. Exit codes: see [`exit`].

mod commands;
mod output;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use output::{Output, Shutdown};

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A failure other than the ones below (transport, connection, codec).
    pub const FAILURE: u8 = 1;
    /// Bad usage: arguments, JSON, URL or target.
    pub const USAGE: u8 = 2;
    /// The remote handler raised an error.
    pub const REMOTE: u8 = 3;
    /// No reply in time.
    pub const TIMEOUT: u8 = 4;
}

const EXIT_CODES: &str = "\
Exit codes: 0 success, 1 failure (transport, connection), 2 usage error \
(arguments, JSON, URL, target), 3 remote error, 4 timeout.";

/// Talk to services over a message bus (oslo.messaging compatible).
#[derive(Debug, Parser)]
#[command(name = "messaging", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log more on stderr (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run servers on each executor over memory:// and load them for a few seconds;
    /// print messages/s and latency per executor. No broker needed.
    Demo(DemoArgs),
    /// Call METHOD and print its JSON result.
    #[command(after_help = EXIT_CODES)]
    Call(SendArgs),
    /// Cast METHOD (no reply).
    #[command(after_help = EXIT_CODES)]
    Cast(SendArgs),
    /// Send a notification.
    #[command(after_help = EXIT_CODES)]
    Notify(NotifyArgs),
    /// Run an RPC server with the endpoints echo(value), fail(message) and
    /// sleep(seconds); print one JSON line per cast received; stop on SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Print one JSON line per notification received; stop on SIGINT/SIGTERM.
    Listen(ListenArgs),
}

/// `messaging demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of load per executor (split between calls, casts and notifications).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Concurrent calling clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
}

/// `messaging call` and `messaging cast`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Transport URL, e.g. rabbit://guest:guest@127.0.0.1:5672/.
    #[arg(long)]
    pub url: String,
    /// Topic of the service.
    #[arg(long)]
    pub topic: String,
    /// A specific server of the topic.
    #[arg(long)]
    pub server: Option<String>,
    /// Exchange (default: the transport's control exchange).
    #[arg(long)]
    pub exchange: Option<String>,
    /// Endpoint namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Interface version, major.minor.
    #[arg(long)]
    pub version: Option<String>,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Send to every server of the topic (casts only).
    #[arg(long)]
    pub fanout: bool,
    /// Request context, as a JSON object.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// The method.
    pub method: String,
    /// Keyword arguments, as a JSON object.
    #[arg(value_name = "JSON_KWARGS", default_value = "{}")]
    pub kwargs: String,
}

/// `messaging notify`.
#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// Transport URL.
    #[arg(long)]
    pub url: String,
    /// Topic (repeatable).
    #[arg(long, default_value = "notifications")]
    pub topic: Vec<String>,
    /// audit, debug, info, warn, error, critical or sample.
    #[arg(long)]
    pub priority: String,
    /// Event type, e.g. compute.instance.create.end.
    #[arg(long)]
    pub event_type: String,
    /// Publisher id.
    #[arg(long, default_value = "messaging-cli")]
    pub publisher_id: String,
    /// The payload, as JSON.
    #[arg(value_name = "JSON_PAYLOAD")]
    pub payload: String,
}

/// Which executor `serve` runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorChoice {
    /// Handlers in the serving thread, one at a time.
    Blocking,
    /// Handlers on a thread pool.
    ThreadPool,
    /// Handlers as tokio tasks.
    EventLoop,
}

/// `messaging serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Transport URL.
    #[arg(long)]
    pub url: String,
    /// Topic to serve.
    #[arg(long)]
    pub topic: String,
    /// This server's name.
    #[arg(long)]
    pub server: String,
    /// Exchange (default: the transport's control exchange).
    #[arg(long)]
    pub exchange: Option<String>,
    /// Executor.
    #[arg(long, value_enum, default_value_t = ExecutorChoice::ThreadPool)]
    pub executor: ExecutorChoice,
}

/// `messaging listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Transport URL.
    #[arg(long)]
    pub url: String,
    /// Topic (repeatable).
    #[arg(long, default_value = "notifications")]
    pub topic: Vec<String>,
    /// Join this pool (listeners of a pool share one copy of each notification).
    #[arg(long)]
    pub pool: Option<String>,
    /// Exchange (default: the transport's control exchange).
    #[arg(long)]
    pub exchange: Option<String>,
}

/// A command failed: what to print on stderr, and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// One of [`exit`]'s codes.
    pub code: u8,
    /// The message.
    pub message: String,
}

impl CliError {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    pub(crate) fn failure(message: impl Into<String>) -> Self {
        CliError {
            code: exit::FAILURE,
            message: message.into(),
        }
    }
}

/// Runs a parsed command. Returns the exit code, having written results to `out` and
/// errors to `err`. `serve` and `listen` run until `shutdown` is triggered.
pub fn run(cli: Cli, out: &Output, err: &Output, shutdown: &Shutdown) -> u8 {
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(&args, out, err),
        Command::Call(args) => commands::send::call(&args, out),
        Command::Cast(args) => commands::send::cast(&args),
        Command::Notify(args) => commands::send::notify(&args),
        Command::Serve(args) => commands::serve::run(&args, out, err, shutdown),
        Command::Listen(args) => commands::listen::run(&args, out, err, shutdown),
    };
    match result {
        Ok(()) => exit::OK,
        Err(error) => {
            err.line(&format!("error: {}", error.message));
            error.code
        }
    }
}

pub(crate) fn seconds(value: f64, what: &str) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| CliError::usage(format!("{what} must be a non-negative number of seconds")))
}
