//! `listen`: print notifications as JSON lines.

use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult,
};
use messaging_core::{Priority, Target};
use messaging_executors::ThreadPoolExecutor;

use super::{open_json, transport_error};
use crate::{CliError, ListenArgs, Output, Shutdown};

pub(crate) fn run(
    args: &ListenArgs,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    let transport = open_json(&args.url)?;
    let mut endpoint = NotificationEndpoint::new();
    for priority in Priority::ALL {
        let out = out.clone();
        endpoint = endpoint.on(priority, move |n: Notification<serde_json::Value>| {
            let line = serde_json::json!({
                "priority": n.priority,
                "event_type": n.event_type,
                "publisher_id": n.publisher_id,
                "payload": n.payload,
                "message_id": n.message_id,
                "timestamp": n.timestamp,
                "context": n.context,
            });
            out.line(&line.to_string());
            NotificationResult::Handled
        });
    }
    let targets = args
        .topic
        .iter()
        .map(|topic| {
            let mut target = Target::new(topic.clone());
            target.exchange = args.exchange.clone();
            target
        })
        .collect();
    let mut options = ListenerOptions::new();
    if let Some(pool) = &args.pool {
        options = options.pool(pool.clone());
    }
    // One worker keeps the printed lines in the order received.
    let executor = ThreadPoolExecutor::new().with_max_workers(1);
    let server =
        messaging_core::notify::listener(transport, targets, vec![endpoint], options, executor)
            .build()
            .map_err(|e| CliError::usage(e.to_string()))?;
    server.start().map_err(|e| match e {
        messaging_core::ServerError::Listen { source, .. } => transport_error(source),
        other => CliError::failure(other.to_string()),
    })?;
    err.line(&format!(
        "listening on {}; stop with Ctrl-C",
        args.topic.join(", ")
    ));
    shutdown.wait();
    server
        .stop()
        .map_err(|e| CliError::failure(e.to_string()))?;
    server
        .wait()
        .map_err(|e| CliError::failure(e.to_string()))?;
    Ok(())
}
