//! `serve`: an RPC server with test endpoints.

use std::time::Duration;

use messaging_core::codec::Codec;
use messaging_core::rpc::{Endpoint, HandlerError, RpcDispatcher};
use messaging_core::{
    Dispatch, Dispatcher, Executor, IncomingMessage, Meta, Server, Subscription, Target,
};
use messaging_executors::{BlockingExecutor, EventLoopExecutor, ThreadPoolExecutor};
use serde::Deserialize;

use super::{open_json, transport_error};
use crate::{CliError, ExecutorChoice, Output, ServeArgs, Shutdown};

#[derive(Deserialize)]
struct Echo {
    value: serde_json::Value,
}

#[derive(Deserialize)]
struct Fail {
    message: String,
}

#[derive(Deserialize)]
struct Sleep {
    seconds: f64,
}

/// The built-in endpoints: `echo(value)`, `fail(message)`, `sleep(seconds)`.
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
                let args: serde_json::Value = message
                    .codec
                    .decode(&message.body)
                    .unwrap_or_else(|e| serde_json::Value::String(format!("<undecodable: {e}>")));
                let line = serde_json::json!({
                    "method": meta.method,
                    "namespace": meta.namespace,
                    "version": meta.version,
                    "args": args,
                    "context": message.context,
                });
                self.out.line(&line.to_string());
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
    let transport = open_json(&args.url)?;
    let mut target = Target::new(args.topic.clone()).with_server(args.server.clone());
    target.exchange = args.exchange.clone();
    let dispatcher = PrintCasts {
        rpc: RpcDispatcher::new(vec![endpoint()]).map_err(|e| CliError::failure(e.to_string()))?,
        out: out.clone(),
    };
    let server = Server::builder(
        transport,
        Subscription::Rpc(target.clone()),
        dispatcher,
        executor(args.executor),
    )
    .build()
    .map_err(|e| CliError::usage(e.to_string()))?;
    let epoch = server.start().map_err(|e| match e {
        messaging_core::ServerError::Listen { source, .. } => transport_error(source),
        other => CliError::failure(other.to_string()),
    })?;
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || server.execute())
    };
    err.line(&format!(
        "serving {target} on {} ({epoch}); stop with Ctrl-C",
        server.executor_name()
    ));
    shutdown.wait();
    err.line("stopping: finishing the calls in progress");
    server
        .stop()
        .map_err(|e| CliError::failure(e.to_string()))?;
    server
        .wait()
        .map_err(|e| CliError::failure(e.to_string()))?;
    match serving.join() {
        Ok(result) => result
            .map(drop)
            .map_err(|e| CliError::failure(e.to_string())),
        Err(_) => Err(CliError::failure("the serving thread panicked")),
    }
}
