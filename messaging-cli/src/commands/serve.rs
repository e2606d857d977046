//! `serve`: an RPC server with test endpoints.

use std::time::Duration;

use messaging_core::codec::Codec;
use messaging_core::rpc::{Endpoint, HandlerError, RpcDispatcher};
use messaging_core::{
    Context, Dispatch, Dispatcher, Executor, IncomingMessage, Meta, Subscription, Target,
};
use messaging_executors::{BlockingExecutor, EventLoopExecutor, ThreadPoolExecutor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::running::Serving;
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

/// Prints a JSON line per cast, then dispatches it like any request.
struct PrintCasts {
    rpc: RpcDispatcher,
    out: Output,
}

impl Dispatcher for PrintCasts {
    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch {
        for incoming in batch.iter().filter(|m| !m.is_call()) {
            let message = incoming.message();
            if let Meta::Request(meta) = &message.meta {
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
                if let Ok(line) = serde_json::to_string(&line) {
                    self.out.line(&compact(&line));
                }
            }
        }
        self.rpc.dispatch(batch)
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
    let transport = open_json(&args.url)?;
    let dispatcher = PrintCasts {
        rpc: RpcDispatcher::new(vec![endpoint()]).map_err(|e| CliError::failure(e.to_string()))?,
        out: out.clone(),
    };
    let (serving, epoch) = Serving::start(
        transport,
        Subscription::Rpc(target.clone()),
        dispatcher,
        executor(args.executor),
    )?;
    err.line(&format!(
        "serving {target} on {} ({epoch}); stop with Ctrl-C",
        serving.server().executor_name()
    ));
    shutdown.wait();
    serving.stop(grace, err, shutdown)
}
