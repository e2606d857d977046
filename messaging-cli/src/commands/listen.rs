//! `listen`: print notifications as JSON lines.

use messaging_core::notify::{
    Notification, NotificationDispatcher, NotificationEndpoint, NotificationResult,
};
use messaging_core::{Context, Priority, Subscription, Target};
use messaging_executors::ThreadPoolExecutor;
use serde::Serialize;
use serde_json::value::RawValue;

use super::running::Serving;
use super::{compact, invalid_target, open_json};
use crate::{CliError, ListenArgs, MAX_SECONDS, Output, Shutdown, positive_seconds, seconds};

/// One printed notification.
#[derive(Serialize)]
struct NotificationLine<'a> {
    priority: Priority,
    event_type: &'a str,
    publisher_id: &'a str,
    /// Verbatim (numbers as sent).
    payload: &'a RawValue,
    message_id: &'a str,
    timestamp: &'a str,
    context: &'a Context,
}

pub(crate) fn run(
    args: &ListenArgs,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    let grace = positive_seconds(args.grace, "--grace", MAX_SECONDS)?;
    let delay = seconds(args.handler_delay, "--handler-delay")?;
    let targets: Vec<Target> = args
        .topic
        .iter()
        .map(|topic| {
            let mut target = Target::new(topic.clone());
            target.exchange = args.exchange.clone();
            target
        })
        .collect();
    let mut endpoint = NotificationEndpoint::new();
    for priority in Priority::ALL {
        let out = out.clone();
        endpoint = endpoint.on(priority, move |n: Notification<Box<RawValue>>| {
            let line = NotificationLine {
                priority: n.priority,
                event_type: &n.event_type,
                publisher_id: &n.publisher_id,
                payload: &n.payload,
                message_id: &n.message_id,
                timestamp: &n.timestamp,
                context: &n.context,
            };
            if let Ok(line) = serde_json::to_string(&line) {
                out.line(&compact(&line));
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            NotificationResult::Handled
        });
    }
    let dispatcher = NotificationDispatcher::new(vec![endpoint], false);
    let subscription = Subscription::Notifications {
        targets,
        priorities: dispatcher.priorities(),
        pool: args.pool.clone(),
    };
    // Topics, exchange and pool, checked before connecting.
    subscription.validate().map_err(invalid_target)?;
    let transport = open_json(&args.url)?;
    // One worker keeps the printed lines in the order received.
    let executor = ThreadPoolExecutor::new().with_max_workers(1);
    let (serving, _) = Serving::start(transport, subscription, dispatcher, executor)?;
    err.line(&format!(
        "listening on {}; stop with Ctrl-C",
        args.topic.join(", ")
    ));
    shutdown.wait();
    serving.stop(grace, err, shutdown)
}
