//! `listen`: print notifications as JSON lines.
//!
//! A notification is acknowledged only once its line was written: one that cannot be
//! printed (a closed pipe, a full disk) is requeued, and so is every one taken after
//! it, once the listener has stopped (see `Unprinted`); the command then fails.
//! Nothing is consumed unseen.

use messaging_config::Purpose;
use messaging_core::notify::{
    Notification, NotificationDispatcher, NotificationEndpoint, NotificationResult,
};
use messaging_core::{Context, Priority, Subscription, Target};
use messaging_executors::ThreadPoolExecutor;
use serde::Serialize;
use serde_json::value::RawValue;

use super::running::{Serving, Unprinted};
use super::send::topics;
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
    let loaded = args
        .config
        .load(args.url.as_deref(), Purpose::Notifications)?;
    let url = loaded.url()?;
    let topics = topics(&args.topic, &loaded.config)?;
    let targets: Vec<Target> = topics
        .iter()
        .map(|topic| {
            let mut target = Target::new(topic.clone());
            target.exchange = args.exchange.clone();
            target
        })
        .collect();
    // Once a line could not be printed, every notification is requeued.
    let unprinted = Unprinted::default();
    let mut endpoint = NotificationEndpoint::new();
    for priority in Priority::ALL {
        let (out, unprinted, shutdown) = (out.clone(), unprinted.clone(), shutdown.clone());
        endpoint = endpoint.on(priority, move |n: Notification<Box<RawValue>>| {
            if unprinted.is_set() {
                return NotificationResult::Requeue;
            }
            let line = NotificationLine {
                priority: n.priority,
                event_type: &n.event_type,
                publisher_id: &n.publisher_id,
                payload: &n.payload,
                message_id: &n.message_id,
                timestamp: &n.timestamp,
                context: &n.context,
            };
            let printed = serde_json::to_string(&line)
                .map_err(std::io::Error::other)
                .and_then(|line| out.line(&compact(&line)));
            if let Err(error) = printed {
                unprinted.set(error, &shutdown);
                return NotificationResult::Requeue;
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            NotificationResult::Handled
        });
    }
    // Requeue allowed: for the notifications that could not be printed (held until
    // the listener is stopped, see `Unprinted`).
    let dispatcher = NotificationDispatcher::new(vec![endpoint], true);
    let subscription = Subscription::Notifications {
        targets,
        priorities: dispatcher.priorities(),
        pool: args.pool.clone(),
    };
    // Topics, exchange and pool, checked before connecting.
    subscription.validate().map_err(invalid_target)?;
    let transport = open_json(&url)?;
    // One worker keeps the printed lines in the order received.
    let executor = ThreadPoolExecutor::new().with_max_workers(1);
    let dispatcher = unprinted.deferring(dispatcher);
    // Kept until the requeues held back are made, after the listener's cleanup.
    let (serving, _) = Serving::start(
        transport.clone(),
        subscription,
        dispatcher,
        executor,
        shutdown,
    )?;
    err.note(&format!(
        "listening on {}; stop with Ctrl-C",
        topics.join(", ")
    ));
    let served = serving.serve(grace, err, shutdown, &unprinted, "notification");
    drop(transport);
    served
}
