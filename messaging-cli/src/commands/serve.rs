//! `serve`: an RPC server with test endpoints.

use std::time::Duration;

use messaging_config::Purpose;
use messaging_core::codec::Codec;
use messaging_core::rpc::{Endpoint, HandlerError, RpcDispatcher};
use messaging_core::{
    Context, Dispatch, Dispatcher, Executor, IncomingMessage, Meta, Subscription, Target,
};
use messaging_executors::{BlockingExecutor, EventLoopExecutor, ThreadPoolExecutor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::running::{Serving, Unprinted};
use super::{compact, invalid_target, open_json};
use crate::{CliError, ExecutorChoice, MAX_SECONDS, Output, ServeArgs, Shutdown, positive_seconds};

#[derive(Deserialize)]
struct Echo {
    /// Kept verbatim, so that numbers come back exactly as sent.
    value: Box<RawValue>,
}

#[derive(Deserialize)]
struct Fail {
    message: String,
}

#[derive(Deserialize)]
struct Sleep {
    seconds: f64,
}

/// The built-in endpoints: `echo(value)` (the value back, verbatim), `fail(message)`,
/// `sleep(seconds)`.
pub(crate) fn endpoint() -> Endpoint {
    Endpoint::new()
        .method("echo", |_ctx, args: Echo| Ok::<_, HandlerError>(args.value))
        .method("fail", |_ctx, args: Fail| -> Result<(), HandlerError> {
            Err(HandlerError::new("RuntimeError", args.message)
                .with_module("builtins")
                .expected())
        })
        .method("sleep", |_ctx, args: Sleep| {
            let duration = Duration::try_from_secs_f64(args.seconds).map_err(|_| {
                HandlerError::new("ValueError", "seconds must be a non-negative number")
                    .with_module("builtins")
                    .expected()
            })?;
            std::thread::sleep(duration);
            Ok::<_, HandlerError>(args.seconds)
        })
}

pub(crate) fn executor(choice: ExecutorChoice) -> Box<dyn Executor> {
    match choice {
        ExecutorChoice::Blocking => Box::new(BlockingExecutor::new()),
        ExecutorChoice::ThreadPool => Box::new(ThreadPoolExecutor::new()),
        ExecutorChoice::EventLoop => Box::new(EventLoopExecutor::new()),
    }
}

/// One printed cast.
#[derive(Serialize)]
struct CastLine<'a> {
    method: &'a str,
    namespace: Option<&'a str>,
    version: Option<&'a str>,
    /// Verbatim (numbers as sent).
    args: &'a RawValue,
    context: &'a Context,
}

/// Prints a JSON line per cast, then dispatches it like any request. A cast whose
/// line cannot be written is requeued before its handler runs, and so is every cast
/// taken after it (calls, which print nothing, are still answered) while the server
/// stops: see [`run`].
struct PrintCasts {
    rpc: RpcDispatcher,
    out: Output,
    /// Set once a line could not be printed.
    unprinted: Unprinted,
    shutdown: Shutdown,
}

impl PrintCasts {
    /// The line printed for a cast.
    fn line(incoming: &IncomingMessage) -> Option<Result<String, std::io::Error>> {
        let message = incoming.message();
        let Meta::Request(meta) = &message.meta else {
            return None;
        };
        let args: Box<RawValue> = message.codec.decode(&message.body).unwrap_or_else(|e| {
            let text = format!("<undecodable: {e}>");
            serde_json::value::to_raw_value(&text).expect("strings serialize")
        });
        let line = CastLine {
            method: &meta.method,
            namespace: meta.namespace.as_deref(),
            version: meta.version.as_deref(),
            args: &args,
            context: &message.context,
        };
        Some(
            serde_json::to_string(&line)
                .map(|line| compact(&line))
                .map_err(std::io::Error::other),
        )
    }
}

impl Dispatcher for PrintCasts {
    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch {
        let mut handled = Vec::with_capacity(batch.len());
        for incoming in batch {
            if incoming.is_call() {
                handled.push(incoming);
                continue;
            }
            if !self.unprinted.is_set()
                && let Some(printed) = Self::line(&incoming)
                && let Err(error) = printed.and_then(|line| self.out.line(&line))
            {
                self.unprinted.set(error, &self.shutdown);
            }
            if self.unprinted.is_set() {
                self.unprinted.hold(incoming);
                continue;
            }
            handled.push(incoming);
        }
        self.rpc.dispatch(handled)
    }
}

pub(crate) fn run(
    args: &ServeArgs,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    let grace = positive_seconds(args.grace, "--grace", MAX_SECONDS)?;
    let mut target = Target::new(args.topic.clone()).with_server(args.server.clone());
    target.exchange = args.exchange.clone();
    target.validate_for_listen().map_err(invalid_target)?;
    let loaded = args.config.load(args.url.as_deref(), Purpose::Rpc)?;
    let transport = open_json(&loaded.url()?)?;
    let unprinted = Unprinted::default();
    let dispatcher = PrintCasts {
        // oslo's rpc_ping_enabled: `oslo_rpc_server_ping` answers "pong".
        rpc: RpcDispatcher::builder(vec![endpoint()])
            .rpc_ping_enabled(loaded.config.rpc_ping_enabled())
            .build()
            .map_err(|e| CliError::failure(e.to_string()))?,
        out: out.clone(),
        unprinted: unprinted.clone(),
        shutdown: shutdown.clone(),
    };
    // Kept until the requeues held back are made, after the listener's cleanup.
    let (serving, epoch) = Serving::start(
        transport.clone(),
        Subscription::Rpc(target.clone()),
        dispatcher,
        match args.executor {
            // oslo's executor_thread_pool_size (64 unless the files say otherwise).
            ExecutorChoice::ThreadPool => Box::new(
                ThreadPoolExecutor::new()
                    .with_max_workers(loaded.config.executor_thread_pool_size()),
            ),
            other => executor(other),
        },
        shutdown,
    )?;
    err.note(&format!(
        "serving {target} on {} ({epoch}); stop with Ctrl-C",
        serving.server().executor_name()
    ));
    let served = serving.serve(grace, err, shutdown, &unprinted, "cast");
    drop(transport);
    served
}
