//! The `messaging` command: a demo on the in-memory transport, `call` / `cast` /
//! `notify` against a live bus, a test server (`serve`), a notification printer
//! (`listen`) and a load generator (`simulate`, after oslo.messaging's
//! `tools/simulator.py`).
//!
//! The binary (`src/main.rs`) only parses arguments, maps SIGINT/SIGTERM to a
//! [`Shutdown`] and calls [`run`]; everything else is here, so that the commands are
//! tested in-process (over `memory://`, which only works inside one process).
//!
//! Results go to stdout, progress and logs to stderr. Exit codes: see [`exit`]. A
//! result that cannot be written (a closed pipe, a full disk) is a failure, never a
//! success: `call`, `demo` and the `simulate` summaries fail with exit 1; `listen` and
//! `serve` requeue the notification or cast they could not print (before acknowledging
//! it, before its handler runs), and every one taken after it, stop, and fail (on NATS
//! a cast cannot be given back: calls and casts there are at-most-once, and the error
//! says it was lost).
//! Errors, usage errors included, are one line on stderr.
//!
//! SIGINT/SIGTERM (the binary turns each into a [`Shutdown`] request): the first one
//! ends what the command is waiting for at once, exit 1 ("interrupted"): reading a
//! JSON argument from stdin or a file (a FIFO without a writer), connecting (a
//! server or listener starting on a broker that does not answer), a send; `serve`,
//! `listen` and the `simulate` servers stop taking messages and drain within
//! `--grace`. A second one always exits at once with status 1: it ends a drain, and
//! the binary exits by itself if the command has not returned shortly after.
//!
//! Inputs are checked before anything is sent: targets with core's
//! [`Target`](messaging_core::Target) name rules, seconds within
//! `0..=`[`MAX_SECONDS`], counts within their documented bounds; JSON arguments and
//! payloads (inline, `@FILE` or `-` for stdin, at most [`MAX_JSON_INPUT`] bytes) travel
//! verbatim, so numbers arrive exactly as written. The transport URL comes from `--url`
//! or, when that is not given, from the `MESSAGING_URL` environment variable, or else
//! from the oslo.config files given with `--config-file` / `--config-dir` (see
//! [`ConfigArgs`]: `call`, `cast`, `serve` and the RPC modes of `simulate` use the RPC
//! transport, `notify`, `listen` and the notify modes the notification one); errors quote it as given, passwords hidden.

mod commands;
mod config;
mod output;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use commands::simulate::oslo_short_flags;
pub use config::{ConfigArgs, GlobalConfigArgs};
pub use output::{Output, Shutdown};

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A failure other than the ones below (transport, connection, codec; a message
    /// no queue took), a result that could not be written to stdout, an interruption
    /// (SIGINT/SIGTERM while reading input, connecting or sending; a second one,
    /// whatever the command was doing), or a server that had to exit before its
    /// handlers finished.
    pub const FAILURE: u8 = 1;
    /// Bad usage or input: arguments (one line on stderr, as every error), JSON, URL,
    /// target, a message too large, `-` (stdin) given to two options.
    pub const USAGE: u8 = 2;
    /// The remote handler raised an error.
    pub const REMOTE: u8 = 3;
    /// No reply (call) or no acceptance by the broker (cast, notify) within
    /// `--timeout`, with no other failure seen (a broker that does not answer): a
    /// failure the transport saw before giving up at the timeout (a refused connection,
    /// a message no queue took) is reported as itself, exit 1.
    pub const TIMEOUT: u8 = 4;
}

const EXIT_CODES: &str = "\
The URL comes from --url, or else from the MESSAGING_URL environment variable (keeps the \
password out of `ps`), or else from transport_url in the --config-file/--config-dir files \
(oslo.config files such as nova.conf; flags win over them).

Exit codes: 0 success, 1 failure (transport, connection, output not written, \
interrupted), 2 usage error (arguments, JSON, URL, target, message too large), 3 remote \
error, 4 timeout (nothing else seen). SIGINT/SIGTERM interrupt reading input, connecting \
and sending at once; a second one always exits at once.";

/// The largest number of seconds any option takes (a year): larger values would only
/// overflow clocks.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// The most bytes read for one JSON argument from a file or stdin (64 MiB).
pub const MAX_JSON_INPUT: usize = 64 << 20;

/// The default `--grace` of the servers: seconds to let handlers finish after a stop.
pub const DEFAULT_GRACE: f64 = 30.0;

/// Talk to services over a message bus (oslo.messaging compatible).
#[derive(Debug, Parser)]
#[command(name = "messaging", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log more on stderr (-v debug, -vv trace, including the AMQP client's own logs);
    /// RUST_LOG overrides. Colours only on a terminal, never with NO_COLOR set.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How verbose the logs are: the `-v` count, and at least 1 (debug) with
    /// `simulate -d` (oslo's `--debug`).
    pub fn verbosity(&self) -> u8 {
        match &self.command {
            Command::Simulate(args) if args.common.debug => self.verbose.max(1),
            _ => self.verbose,
        }
    }
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
    /// sleep(seconds); print one JSON line per cast received. SIGINT/SIGTERM: stop taking
    /// messages and let the handlers finish within --grace; a second one: exit at once.
    #[command(after_help = EXIT_CODES)]
    Serve(ServeArgs),
    /// Print one JSON line per notification received. SIGINT/SIGTERM: stop taking
    /// notifications and finish within --grace; a second one: exit at once.
    #[command(after_help = EXIT_CODES)]
    Listen(ListenArgs),
    /// Load generator after oslo.messaging's tools/simulator.py, taking its flags and
    /// interoperating with it: run an rpc-server or notify-server in one process and an
    /// rpc-client or notify-client in another; print progress each second and a
    /// throughput and latency summary.
    #[command(after_help = SIMULATE_HELP)]
    Simulate(SimulateArgs),
}

/// `messaging demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of load per executor (split between calls, casts and notifications),
    /// more than 0 and at most 60.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Concurrent calling clients (threads), 1 to 1024.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
}

/// `messaging call` and `messaging cast`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Transport URL, e.g. rabbit://guest:guest@127.0.0.1:5672/ (--url wins over
    /// MESSAGING_URL, which wins over transport_url of the config files' DEFAULT
    /// section).
    #[arg(long, env = "MESSAGING_URL", hide_env_values = true)]
    pub url: Option<String>,
    /// Config files (the RPC transport: transport_url of DEFAULT, and the section of
    /// its transport).
    #[command(flatten)]
    pub config: ConfigArgs,
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
    /// Seconds the whole send may take, connection retries included: until the reply
    /// (call) or until the broker took the message (cast); a failure seen by then (a
    /// refused connection, no queue for the cast) is reported instead of a timeout.
    /// Default: rpc_response_timeout if the config files set it, else 30.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Send to every server of the topic (casts only).
    #[arg(long)]
    pub fanout: bool,
    /// Request context, as a JSON object (inline, @FILE or - for stdin; not - with
    /// JSON_KWARGS - as well).
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// The method.
    pub method: String,
    /// Keyword arguments, as a JSON object: inline, @FILE, or - for stdin (at most
    /// 64 MiB). Sent verbatim: numbers arrive exactly as written.
    #[arg(value_name = "JSON_KWARGS", default_value = "{}")]
    pub kwargs: String,
}

/// `messaging notify`.
#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// Transport URL, e.g. rabbit://guest:guest@127.0.0.1:5672/ (--url wins over
    /// MESSAGING_URL, which wins over the config files' notification transport_url:
    /// that of the oslo_messaging_notifications section, else DEFAULT's).
    #[arg(long, env = "MESSAGING_URL", hide_env_values = true)]
    pub url: Option<String>,
    /// Config files (the notification transport, and topics).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Topic (repeatable). Default: topics of the config files'
    /// oslo_messaging_notifications section, else notifications.
    #[arg(long)]
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
    /// Notification driver (repeatable): messagingv2 (oslo's envelope), messaging (no
    /// envelope, for consumers that predate it), log (to the log, secrets masked),
    /// routing (the routing_config of the config files) or noop. Default: the config
    /// files' drivers, else messagingv2.
    #[arg(long = "driver", value_name = "DRIVER")]
    pub driver: Vec<String>,
    /// Seconds the whole send may take (until the broker took it, connection retries
    /// included); a failure seen by then (a refused connection) is reported instead of
    /// a timeout.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// The payload, as JSON: inline, @FILE, or - for stdin (at most 64 MiB). Sent
    /// verbatim: numbers arrive exactly as written.
    #[arg(value_name = "JSON_PAYLOAD")]
    pub payload: String,
}

/// Which executor `serve` runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorChoice {
    /// Handlers in the serving thread, one at a time.
    Blocking,
    /// Handlers on a thread pool (oslo's `threading` is an alias).
    #[value(alias = "threading")]
    ThreadPool,
    /// Handlers as tokio tasks (oslo's `eventlet` is an alias: green threads).
    #[value(alias = "eventlet")]
    EventLoop,
}

/// `messaging serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Transport URL, e.g. rabbit://guest:guest@127.0.0.1:5672/ (--url wins over
    /// MESSAGING_URL, which wins over transport_url of the config files' DEFAULT
    /// section).
    #[arg(long, env = "MESSAGING_URL", hide_env_values = true)]
    pub url: Option<String>,
    /// Config files (the RPC transport, and executor_thread_pool_size for the thread
    /// pool).
    #[command(flatten)]
    pub config: ConfigArgs,
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
    /// Seconds to let the handlers in progress finish after SIGINT/SIGTERM (a "possible
    /// hang" warning after half of it, or after 30 s if that is sooner); then, or at a
    /// second signal, exit with status 1 without waiting.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_GRACE)]
    pub grace: f64,
}

/// `messaging listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Transport URL, e.g. rabbit://guest:guest@127.0.0.1:5672/ (--url wins over
    /// MESSAGING_URL, which wins over the config files' notification transport_url:
    /// that of the oslo_messaging_notifications section, else DEFAULT's).
    #[arg(long, env = "MESSAGING_URL", hide_env_values = true)]
    pub url: Option<String>,
    /// Config files (the notification transport, and topics).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Topic (repeatable). Default: topics of the config files'
    /// oslo_messaging_notifications section, else notifications.
    #[arg(long)]
    pub topic: Vec<String>,
    /// Join this pool (listeners of a pool share one copy of each notification).
    #[arg(long)]
    pub pool: Option<String>,
    /// Exchange (default: the transport's control exchange).
    #[arg(long)]
    pub exchange: Option<String>,
    /// Seconds to let the handlers in progress finish after SIGINT/SIGTERM (a "possible
    /// hang" warning after half of it, or after 30 s if that is sooner); then, or at a
    /// second signal, exit with status 1 without waiting.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_GRACE)]
    pub grace: f64,
    /// Seconds each notification's handler sleeps after printing it (a slow consumer,
    /// e.g. to try the drain on stop).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub handler_delay: f64,
}

const SIMULATE_HELP: &str = "\
Typical use, two terminals:
  messaging simulate rpc-server --url rabbit://guest:guest@127.0.0.1:5672/
  messaging simulate rpc-client --url rabbit://guest:guest@127.0.0.1:5672/ -p 8 -m 2000
memory:// connects only within one process: use `rpc-client --with-server` (or
`notify-client --with-server`) there. Run `messaging simulate MODE --help` for the
flags and the --json keys.

oslo.messaging's tools/simulator.py: its command lines work here as they are, and the
two interoperate (the same messages, methods, topics and --sync protocol: its clients
drive these servers, these clients drive its servers). Its global flags (--url,
-d/--debug, -tp/--topic, -s/--server, -tg/--targets, -l, -j/--json) go before or
after the mode:
  messaging simulate --url rabbit://guest:guest@127.0.0.1:5672/ -l 60 rpc-server -e threading
  messaging simulate --url rabbit://guest:guest@127.0.0.1:5672/ rpc-client -tg t.s -p 8 --is-cast
-tg and -tp are two-letter short flags, which the argument parser does not have: the
binary rewrites them (whole words after `simulate`, or -tg=V / -tp=V, up to `--`) to
--targets and --topic before parsing. Where this command differs from oslo's:
  -m           default 1000 (oslo: 1)
  -e           eventlet means event-loop (tokio tasks), threading means thread-pool;
               default thread-pool (oslo: eventlet); -e also on the notify servers
  -w           fractions of a second; 0 (the default) is no wait (oslo: -1); not negative;
               the notify servers wait before every message (oslo's only before a requeue)
  -l           fractions of a second; with -m too, -l wins (as in oslo) and a warning says so
  --is-fanout  implies --is-cast (oslo's calls with fanout fail: a call cannot fan out)
  -tg          without it rpc-client sends to --topic/--server (oslo ignores those and
               sends to its -tg default, profiler_topic.profiler_server: the same target);
               the servers ignore it, with a warning
  --requeue    batch-notify-server requeues each batch holding a message not seen before
               (oslo's ignores --requeue); requeued deliveries are counted apart, not in count
  --timeout    also bounds each notification's send (oslo's notify-client ignores it)
  --exit-wait  also on notify-client
  -j FILE      this command's JSON layout (keys: `MODE --help`), not oslo's
  -d           debug logs on stderr, like -v (summaries go to stdout in this command's
               format; oslo logs everything, summaries included, on stdout)
  added        --expect, --grace, --with-server, --payload-size, --seed, --batch-size,
               --batch-timeout";

/// The `--json` keys, shown by `messaging simulate MODE --help`.
const SIMULATE_JSON: &str = "\
Output. Every second a progress line on stderr; at the end one summary line per side on
stdout (count, errors by kind, duration, msg/s, bytes/s, latency min/mean/p50/p90/p99/max).
Latency is the round trip for calls (client clock), the time the send took for casts and
notifications (client side), and the one-way delay from the client's wall-clock stamp to
the handler (server side; meaningful on one machine). Bytes count the payload text.

Messages are oslo's: Message(seq, cargo, client_ts, server_ts, return_ts) as a JSON list
(seconds since the epoch), the keyword argument `message` of `info` (calls, casts) or the
payload of an `info` notification with event type compute.start from publisher-N; the
servers also take the object form {seq, cargo, client_ts, server_ts}. rpc-server answers
with the message, server_ts stamped, and also serves oslo's sync_start/sync_done.

--json FILE writes one object with these keys (always present; null where they do not
apply):
  mode                 rpc-server | rpc-client | notify-server | batch-notify-server |
                       notify-client
  url                  the transport URL, password hidden
  topic, server        as given
  targets              rpc-client: [\"TOPIC.SERVER\", ...] sent to (SERVER empty: any
                       server; fanout: \"TOPIC\"); null otherwise
  executor             the server's executor (clients: the --with-server one, or null)
  send                 call | cast | fanout | notify (clients), null (servers)
  clients              -p (clients), null (servers)
  messages_per_client  -m, or null with -l and for servers
  duration_limit_s     -l, or null
  payload              {\"kind\": \"fixed\", \"size\": BYTES} | {\"kind\": \"oslo-distribution\"}
                       (clients), null (servers)
  latency_kind         round-trip | send | one-way
  requeued             notify servers: deliveries requeued by --requeue; null otherwise
  summary              {count, errors, errors_by_kind: {KIND: n}, duration_s, msgs_per_s,
                        bytes, bytes_per_s, latency_us: {min, p50, p90, p99, max, mean}}
  series               [{second, count, errors, bytes, latency_us}] one per second
  server_side          with --with-server: {executor, latency_kind, summary, series} of
                       the in-process server; otherwise null
count counts successful messages (answered calls, accepted casts and notifications,
received messages), errors the failed ones; error kinds: timeout, remote, transport,
reply-lost, codec, mismatch, invalid, other. latency_us is null when nothing was
measured. Summary percentiles come from a log-linear histogram (within 0.4%); per-second
ones are exact.

Stopping: SIGINT/SIGTERM, -l, --expect or (rpc-server) the last --sync client's
sync_done (after 1 s, as in oslo) ends a server: it stops taking messages and lets the
ones in progress finish within --grace; a (further) signal or the end of the grace
period makes it exit 1 at once. The URL comes from --url, or else from the MESSAGING_URL
environment variable, or else is memory://.

Exit codes: 0 done (even with some errors), 1 transport failure, every message failed,
or a server left messages unfinished, 2 usage error.";

/// `messaging simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The flags of every mode (oslo's global flags): before or after the mode.
    #[command(flatten)]
    pub common: SimCommon,
    /// The role to play.
    #[command(subcommand)]
    pub mode: SimulateMode,
}

/// The roles of `messaging simulate` (oslo's simulator modes).
#[derive(Debug, Subcommand)]
pub enum SimulateMode {
    /// Serve `info(message)`: stamp the server time and return the message; and oslo's
    /// sync_start/sync_done. Runs until SIGINT/SIGTERM, -l SECONDS, --expect N messages
    /// or 1 s after the last --sync client is done.
    #[command(after_long_help = SIMULATE_JSON)]
    RpcServer(SimServerArgs),
    /// Call (or cast) `info(message)` from -p concurrent clients, -m messages each
    /// (or for -l seconds).
    #[command(after_long_help = SIMULATE_JSON)]
    RpcClient(SimRpcClientArgs),
    /// Listen for `info` notifications on the topic and count them. Runs until
    /// SIGINT/SIGTERM, -l SECONDS or --expect N messages.
    #[command(after_long_help = SIMULATE_JSON)]
    NotifyServer(SimNotifyServerArgs),
    /// notify-server taking the notifications in batches (--batch-size, at most
    /// --batch-timeout apart; oslo's: 1000 and 5 s).
    #[command(after_long_help = SIMULATE_JSON)]
    BatchNotifyServer(SimBatchServerArgs),
    /// Send `info` notifications with event type `compute.start` from -p concurrent
    /// clients, -m messages each (or for -l seconds).
    #[command(after_long_help = SIMULATE_JSON)]
    NotifyClient(SimClientArgs),
}

/// The flags every `simulate` mode has: oslo's global flags, accepted before or after
/// the mode.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Options of every mode (before or after it)")]
pub struct SimCommon {
    /// Transport URL; memory:// connects only within one process (see --with-server).
    /// --url wins over MESSAGING_URL, which wins over the config files'
    /// transport_url (the notification one for the notify modes); with none of them,
    /// memory://.
    #[arg(long, env = "MESSAGING_URL", hide_env_values = true, global = true)]
    pub url: Option<String>,
    /// Config files (the transport URL and its options).
    #[command(flatten)]
    pub config: GlobalConfigArgs,
    /// Topic (also -tp, as in oslo).
    #[arg(long, default_value = "profiler_topic", global = true)]
    pub topic: String,
    /// Server name (clients: the server called; an empty name calls any server of the
    /// topic).
    #[arg(short, long, default_value = "profiler_server", global = true)]
    pub server: String,
    /// rpc-client: send to these targets instead of --topic/--server, client i to the
    /// i-th (modulo their number); each TOPIC.SERVER is split at its first dot, and
    /// an empty SERVER calls any server of the topic (also -tg, as in oslo). Takes
    /// every following word (as oslo's does): end it with another flag, or give it
    /// after the mode.
    #[arg(long, value_name = "TOPIC.SERVER", num_args = 1.., global = true)]
    pub targets: Vec<String>,
    /// Servers: stop after SECONDS (default: on SIGINT/SIGTERM). Clients: send for
    /// SECONDS instead of -m messages.
    #[arg(short = 'l', long, value_name = "SECONDS", global = true)]
    pub duration: Option<f64>,
    /// Write the summary and the per-second series as JSON to FILE (keys: see
    /// `MODE --help`).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub json: Option<PathBuf>,
    /// Debug logs on stderr (like -v), each message sent and received included.
    #[arg(short, long, global = true)]
    pub debug: bool,
}

/// `messaging simulate rpc-server`, and what the notify servers share with it.
#[derive(Debug, Args)]
pub struct SimServerArgs {
    /// Executor (oslo's names work too: eventlet is event-loop, threading is
    /// thread-pool).
    #[arg(short, long, value_enum, default_value_t = ExecutorChoice::ThreadPool)]
    pub executor: ExecutorChoice,
    /// Stop once N messages were received.
    #[arg(long, value_name = "N")]
    pub expect: Option<u64>,
    /// Seconds each handler sleeps before answering (a slow service).
    #[arg(short = 'w', long, value_name = "SECONDS", default_value_t = 0.0)]
    pub wait_before_answer: f64,
    /// Seconds to let the handlers in progress finish after SIGINT/SIGTERM (a "possible
    /// hang" warning after half of it, or after 30 s if that is sooner); then, or at a
    /// second signal, exit with status 1 without waiting.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_GRACE)]
    pub grace: f64,
}

/// `messaging simulate notify-server`.
#[derive(Debug, Args)]
pub struct SimNotifyServerArgs {
    /// The flags shared with rpc-server.
    #[command(flatten)]
    pub server: SimServerArgs,
    /// Requeue each message once (after the -w wait): it is handled at its second
    /// delivery. Requeued deliveries are counted apart.
    #[arg(long)]
    pub requeue: bool,
}

/// `messaging simulate batch-notify-server`.
#[derive(Debug, Args)]
pub struct SimBatchServerArgs {
    /// The flags shared with notify-server.
    #[command(flatten)]
    pub notify: SimNotifyServerArgs,
    /// The most notifications in one batch.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch_size: usize,
    /// Seconds to wait at most to fill a batch.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub batch_timeout: f64,
}

/// `messaging simulate notify-client`, and what `rpc-client` shares with it.
///
/// The `-p` clients are threads sharing one transport (one connection, as an oslo
/// service's green threads share its transport), each with its own client object.
#[derive(Debug, Args)]
pub struct SimClientArgs {
    /// Concurrent clients (threads sharing one transport).
    #[arg(short = 'p', long, value_name = "N", default_value_t = 1)]
    pub clients: usize,
    /// Messages per client [default: 1000] (ignored with -l).
    #[arg(short, long, value_name = "N")]
    pub messages: Option<u64>,
    /// Seconds each client waits after each message.
    #[arg(short = 'w', long, value_name = "SECONDS", default_value_t = 0.0)]
    pub wait_after: f64,
    /// Seconds each message may take: a call's wait for its reply, a cast's or a
    /// notification's send; a message that times out counts as an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    pub timeout: f64,
    /// Seconds to keep the connection open after the summary (oslo's --exit-wait).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub exit_wait: f64,
    /// A fixed payload of BYTES random lowercase letters (default: lengths drawn from
    /// oslo's measured Nova message lengths, 500 to 11500 bytes).
    #[arg(long, value_name = "BYTES")]
    pub payload_size: Option<usize>,
    /// Seed of the payload generator (the same seed sends the same texts).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also run the server in this process (the only way with memory://), and report
    /// both sides.
    #[arg(long)]
    pub with_server: bool,
    /// Executor of the --with-server server.
    #[arg(short, long, value_enum, default_value_t = ExecutorChoice::ThreadPool, requires = "with_server")]
    pub executor: ExecutorChoice,
}

/// How `rpc-client --sync` tells the servers when it starts and finishes (oslo's
/// `sync_start`/`sync_done`): the server stops 1 s after the last client is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// Call the server each client sends to.
    Call,
    /// Cast to every server of the topic.
    Fanout,
}

/// `messaging simulate rpc-client`.
#[derive(Debug, Args)]
pub struct SimRpcClientArgs {
    /// The flags shared with notify-client.
    #[command(flatten)]
    pub client: SimClientArgs,
    /// Cast instead of call (no reply; the server measures the one-way latency).
    #[arg(long, visible_alias = "is-cast")]
    pub cast: bool,
    /// Cast to every server of the topic (implies --cast).
    #[arg(long, visible_alias = "is-fanout")]
    pub fanout: bool,
    /// Each client calls (or fanout-casts) sync_start before its first message and
    /// sync_done 1 s after its last: a server run this way stops when every client is
    /// done.
    #[arg(long, value_enum, value_name = "MODE")]
    pub sync: Option<SyncMode>,
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
/// errors to `err` (one line, control characters escaped); a result `out` did not
/// take is a failure. `serve`, `listen` and the `simulate` servers run until
/// `shutdown` is triggered (or `out` fails), then drain (a further trigger ends the
/// drain at once); `call`, `cast` and `notify` abandon their send when it is
/// triggered; `demo` stops early; the `simulate` clients abandon their sends. A
/// trigger while a command reads a JSON argument (stdin, a file) or starts a server
/// (connecting) fails it at once, leaving that read or connection to a thread that
/// ends with the process. Every transport and server the command opened is dropped
/// before this returns, except a server that was told to exit without waiting for its
/// handlers, or one still connecting.
pub fn run(cli: Cli, out: &Output, err: &Output, shutdown: &Shutdown) -> u8 {
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(&args, out, err, shutdown),
        Command::Call(args) => commands::send::call(&args, out, shutdown),
        Command::Cast(args) => commands::send::cast(&args, shutdown),
        Command::Notify(args) => commands::send::notify(&args, shutdown),
        Command::Serve(args) => commands::serve::run(&args, out, err, shutdown),
        Command::Listen(args) => commands::listen::run(&args, out, err, shutdown),
        Command::Simulate(args) => commands::simulate::run(&args, out, err, shutdown),
    };
    match result {
        Ok(()) => exit::OK,
        Err(error) => {
            err.note(&format!("error: {}", one_line(&error.message)));
            error.code
        }
    }
}

/// What the binary does with SIGINT/SIGTERM, each item of `signals` being one: one
/// more [`Shutdown::trigger`] (the first stops the command, the second ends a drain).
/// From the second one on, if `returned` (the command returned) is not set within
/// `forced_after`, `exit_now` is called: the command is stuck where it cannot be
/// abandoned (a destructor, a call with no deadline), and the binary exits 1 at once.
/// Returns when `signals` ends.
pub fn handle_signals<I: IntoIterator>(
    signals: I,
    shutdown: &Shutdown,
    returned: &std::sync::atomic::AtomicBool,
    forced_after: Duration,
    exit_now: impl Fn(),
) {
    for _ in signals {
        shutdown.trigger();
        if shutdown.requests() >= 2 {
            std::thread::sleep(forced_after);
            if !returned.load(std::sync::atomic::Ordering::SeqCst) {
                exit_now();
            }
        }
    }
}

/// A command-line parsing error (one that clap reports on stderr, exit [`exit::USAGE`])
/// as one line, `error: ...`, control characters escaped: its message, with any list
/// or tip on the same line, without the usage paragraph, ending with clap's
/// "try '--help'" advice. (`--help` and `--version` are not errors: clap prints them
/// as they are.)
///
/// # Examples
///
/// ```
/// use clap::Parser;
/// use messaging_cli::{Cli, usage_error_line};
///
/// let error = Cli::try_parse_from(["messaging", "call", "--url", "memory://"]).unwrap_err();
/// assert_eq!(
///     usage_error_line(&error),
///     "error: the following required arguments were not provided: --topic <TOPIC>, \
///      <METHOD>; for more information, try '--help'"
/// );
/// ```
pub fn usage_error_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut parts = Vec::new();
    let mut advice = "for more information, try '--help'".to_owned();
    if error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // The whole help, for a command given without its subcommand.
        let command = text
            .lines()
            .find_map(|l| l.strip_prefix("Usage: "))
            .map(|usage| {
                usage
                    .split_whitespace()
                    .take_while(|w| !w.starts_with(['[', '<', '-']))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "messaging".to_owned());
        let subcommands: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim_end() != "Commands:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
            .collect();
        parts.push(format!(
            "error: `{command}` needs a command: {}",
            subcommands.join(", ")
        ));
    } else {
        for paragraph in text.split("\n\n") {
            let lines: Vec<&str> = paragraph
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let Some((first, rest)) = lines.split_first() else {
                continue;
            };
            if first.starts_with("Usage:") {
                continue;
            }
            if let Some(more) = first.strip_prefix("For more information, ") {
                advice = format!("for more information, {}", more.trim_end_matches('.'));
                continue;
            }
            let separator = if first.ends_with(':') { ", " } else { " " };
            parts.push(if rest.is_empty() {
                (*first).to_owned()
            } else {
                format!("{first} {}", rest.join(separator))
            });
        }
    }
    if parts.is_empty() {
        parts.push(format!("error: {}", error.kind()));
    }
    parts.push(advice);
    let line = one_line(&parts.join("; "));
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`, ...), so that an error
/// is one line and cannot drive the terminal, whatever names or broker texts it quotes.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// `value` seconds, for option `what`: from 0 to [`MAX_SECONDS`].
pub(crate) fn seconds(value: f64, what: &str) -> Result<Duration, CliError> {
    if (0.0..=MAX_SECONDS).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(CliError::usage(format!(
            "{what} must be a number of seconds from 0 to {MAX_SECONDS}, got {value:?}"
        )))
    }
}

/// `value` seconds, for option `what`: more than 0 and at most `max`.
pub(crate) fn positive_seconds(value: f64, what: &str, max: f64) -> Result<Duration, CliError> {
    if value > 0.0 && value <= max {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(CliError::usage(format!(
            "{what} must be a number of seconds more than 0 and at most {max}, got {value:?}"
        )))
    }
}

/// Whether log lines on stderr get colours (ANSI escapes): only on a terminal, and
/// never when `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The log filter for `-v` given `verbose` times, when `RUST_LOG` is not set. The AMQP
/// client's own logs (which can quote whole messages) only come with `-vv`; the
/// transports report its failures themselves.
pub fn default_log_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn,lapin=off",
        1 => "debug,lapin=error",
        _ => "trace",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_without_escapes() {
        assert_eq!(one_line("a\nb\u{1b}[31mc\td"), "a\\nb\\u{1b}[31mc\\td");
        assert_eq!(one_line("plain é"), "plain é");
    }

    #[test]
    fn seconds_say_their_range() {
        assert_eq!(seconds(1.5, "--x").unwrap(), Duration::from_millis(1500));
        assert_eq!(seconds(0.0, "--x").unwrap(), Duration::ZERO);
        for bad in [-1.0, 1e300, f64::NAN, f64::INFINITY, MAX_SECONDS + 1.0] {
            let error = seconds(bad, "--timeout").unwrap_err();
            assert_eq!(error.code, exit::USAGE);
            assert!(
                error.message.contains("from 0 to 31536000"),
                "{}",
                error.message
            );
        }
        assert!(
            seconds(1e300, "--timeout")
                .unwrap_err()
                .message
                .ends_with("got 1e300")
        );
        assert!(positive_seconds(0.0, "--grace", 10.0).is_err());
        assert!(positive_seconds(10.0, "--grace", 10.0).is_ok());
        assert!(positive_seconds(f64::NAN, "--grace", 10.0).is_err());
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new(""))));
    }
}
