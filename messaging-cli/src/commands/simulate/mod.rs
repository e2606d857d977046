//! `simulate`: a load generator after oslo.messaging's `tools/simulator.py`, taking its
//! flags and speaking its messages, so that either side can be oslo's.
//!
//! * `rpc-server` serves `info(message)`: it stamps `server_ts` and returns the
//!   message; it also serves oslo's `sync_start` / `sync_done` (`rpc-client --sync`)
//!   and stops a second after the last client is done. `notify-server` and
//!   `batch-notify-server` listen for `info` notifications. They record the one-way
//!   latency from the message's `client_ts` (wall clock, so meaningful when both ends
//!   share a clock) and the payload bytes.
//! * `rpc-client` calls (or casts, or fanout-casts) `info` and `notify-client` sends
//!   `compute.start` notifications, from `-p` threads sharing one transport, each
//!   with its own client object (like an oslo service's green threads). A call's
//!   latency is its round trip on the client's monotonic clock.
//!
//! The message is oslo's `Message(seq, cargo, client_ts, server_ts, return_ts)` as a
//! JSON list ([`message`]); the servers also accept the object form
//! `{"seq", "cargo", "client_ts", "server_ts"}`.

mod argv;
mod client;
mod message;
mod payload;
mod server;
mod stats;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use messaging_config::Purpose;
use messaging_core::TransportUrl;
use serde_json::Value;

pub use self::argv::oslo_short_flags;
use self::client::{ClientRun, Load, send_load};
use self::server::{ServerRun, Side, serve};
use self::stats::Collector;
use crate::{
    CliError, ExecutorChoice, MAX_SECONDS, Output, Shutdown, SimCommon, SimulateArgs, SimulateMode,
    positive_seconds,
};

/// How often the control loops wake between whole seconds (stop conditions).
const POLL: Duration = Duration::from_millis(20);
const SECOND: Duration = Duration::from_secs(1);

pub(crate) fn run(
    args: &SimulateArgs,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    // The URL the mode runs on: --url (or MESSAGING_URL), else the config files', else
    // memory://. Resolved once, so that every part of the run opens the same.
    let mut common = args.common.clone();
    let purpose = match args.mode {
        SimulateMode::NotifyServer(_)
        | SimulateMode::BatchNotifyServer(_)
        | SimulateMode::NotifyClient(_) => Purpose::Notifications,
        SimulateMode::RpcServer(_) | SimulateMode::RpcClient(_) => Purpose::Rpc,
    };
    if !common.config.0.sources.is_empty() {
        let loaded = common.config.0.load(common.url.as_deref(), purpose)?;
        common.url = Some(loaded.url()?);
    }
    let common = &common;
    match &args.mode {
        SimulateMode::RpcServer(a) => {
            let run = ServerRun {
                side: Side::Rpc,
                args: a,
                requeue: false,
                batch: None,
            };
            serve(common, run, out, err, shutdown)
        }
        SimulateMode::NotifyServer(a) => {
            let run = ServerRun {
                side: Side::Notify,
                args: &a.server,
                requeue: a.requeue,
                batch: None,
            };
            serve(common, run, out, err, shutdown)
        }
        SimulateMode::BatchNotifyServer(a) => {
            let run = ServerRun {
                side: Side::BatchNotify,
                args: &a.notify.server,
                requeue: a.notify.requeue,
                batch: Some((a.batch_size, a.batch_timeout)),
            };
            serve(common, run, out, err, shutdown)
        }
        SimulateMode::RpcClient(a) => {
            let load = if a.fanout {
                Load::Fanout
            } else if a.cast {
                Load::Cast
            } else {
                Load::Call
            };
            let run = ClientRun {
                load,
                args: &a.client,
                sync: a.sync,
            };
            send_load(common, run, out, err, shutdown)
        }
        SimulateMode::NotifyClient(a) => {
            let run = ClientRun {
                load: Load::Notify,
                args: a,
                sync: None,
            };
            send_load(common, run, out, err, shutdown)
        }
    }
}

fn executor_name(choice: ExecutorChoice) -> &'static str {
    match choice {
        ExecutorChoice::Blocking => "blocking",
        ExecutorChoice::ThreadPool => "thread-pool",
        ExecutorChoice::EventLoop => "event-loop",
    }
}

/// The URL with its password hidden.
impl SimCommon {
    /// The transport URL (after [`run`] resolved it): memory:// unless one was given.
    pub(crate) fn transport_url(&self) -> &str {
        self.url.as_deref().unwrap_or("memory://")
    }
}

fn redacted(url: &str) -> Result<String, CliError> {
    TransportUrl::parse(url)
        .map(|u| u.to_string())
        .map_err(|e| CliError::usage(e.to_string()))
}

fn limit_seconds(value: Option<f64>, what: &str) -> Result<Option<Duration>, CliError> {
    value
        .map(|v| positive_seconds(v, what, MAX_SECONDS))
        .transpose()
}

/// The `--json` file, created before the run so that a bad path fails early.
struct JsonFile(Option<(File, String)>);

impl JsonFile {
    fn create(path: Option<&Path>) -> Result<Self, CliError> {
        match path {
            None => Ok(JsonFile(None)),
            Some(path) => File::create(path)
                .map(|f| JsonFile(Some((f, path.display().to_string()))))
                .map_err(|e| CliError::usage(format!("cannot write {}: {e}", path.display()))),
        }
    }

    fn write(self, value: &Value) -> Result<(), CliError> {
        let Some((mut file, path)) = self.0 else {
            return Ok(());
        };
        serde_json::to_writer_pretty(&mut file, value)
            .map_err(std::io::Error::from)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.flush())
            .map_err(|e| CliError::failure(format!("cannot write {path}: {e}")))
    }
}

/// Ticks `collectors` for every whole second passed since the run started.
fn tick_until(
    now: Instant,
    next_tick: &mut Instant,
    collectors: &mut [&mut Collector],
    err: &Output,
) {
    while now >= *next_tick {
        for collector in collectors.iter_mut() {
            collector.tick(err, true);
        }
        *next_tick += SECOND;
    }
}
