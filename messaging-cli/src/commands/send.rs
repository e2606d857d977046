//! `call`, `cast`, `notify`: each checks its inputs before connecting, sends within
//! `--timeout` (connection retries included), abandons the send on SIGINT/SIGTERM, and
//! drops its transport before returning.

use std::time::Duration;

use messaging_config::{Config, Origin, Purpose};
use messaging_core::notify::{NotifyDriver, NotifyError};
use messaging_core::rpc::{RpcClient, RpcError};
use messaging_core::{Context, Priority, Target};
use serde_json::value::RawValue;

use super::{
    Bounded, bounded, compact, invalid_target, json_argument, json_object, open_json,
    parse_context, reads_stdin, rpc_error, transport_error, unwritten,
};
use crate::config::config_error;
use crate::{CliError, NotifyArgs, Output, SendArgs, Shutdown, exit, seconds};

/// What `call` and `cast` send, checked.
struct Request {
    target: Target,
    timeout: Duration,
    kwargs: Box<RawValue>,
    context: Context,
}

/// `--timeout` when not given, and no config file sets `rpc_response_timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `--timeout`, else the config files' `rpc_response_timeout`, else
/// [`DEFAULT_TIMEOUT`].
fn send_timeout(flag: Option<f64>, config: &Config) -> Result<Duration, CliError> {
    match flag {
        Some(flag) => seconds(flag, "--timeout"),
        None if config.origin("DEFAULT", "rpc_response_timeout") != Origin::Default => {
            Ok(config.rpc_response_timeout())
        }
        None => Ok(DEFAULT_TIMEOUT),
    }
}

/// What `call` and `cast` send, and the URL they send it over (passwords included).
fn request(args: &SendArgs, shutdown: &Shutdown) -> Result<(Request, String), CliError> {
    let loaded = args.config.load(args.url.as_deref(), Purpose::Rpc)?;
    // Before reading any input: a missing URL is known now.
    let url = loaded.url()?;
    let config = &loaded.config;
    // Both from stdin cannot be told apart: refused before anything is read.
    if reads_stdin(&args.kwargs) && args.context.as_deref().is_some_and(reads_stdin) {
        return Err(CliError::usage(
            "--context - and JSON_KWARGS - cannot both read stdin: give one of them \
             inline or as @FILE",
        ));
    }
    let mut target = Target::new(args.topic.clone()).with_fanout(args.fanout);
    target.server = args.server.clone();
    target.exchange = args.exchange.clone();
    target.namespace = args.namespace.clone();
    target.version = args.version.clone();
    target.validate_for_send().map_err(invalid_target)?;
    let request = Request {
        target,
        timeout: send_timeout(args.timeout, config)?,
        kwargs: json_object(&args.kwargs, "JSON_KWARGS", shutdown)?,
        context: parse_context(args.context.as_deref(), shutdown)?,
    };
    Ok((request, url))
}

/// How long after `--timeout` a send stops waiting for a transport that does not end
/// it itself (RabbitMQ does, with what it saw: a refused connection, a message no
/// queue took; NATS casts and memory:// do not retry, so need no deadline).
const BACKSTOP: Duration = Duration::from_secs(1);

fn interrupted(what: &str) -> CliError {
    CliError::failure(format!("interrupted: the {what} was abandoned"))
}

fn timed_out(timeout: Duration, what: String) -> CliError {
    CliError {
        code: exit::TIMEOUT,
        message: format!("timed out after {timeout:?} {what}"),
    }
}

pub(crate) fn call(args: &SendArgs, out: &Output, shutdown: &Shutdown) -> Result<(), CliError> {
    let (request, url) = request(args, shutdown)?;
    request.target.validate_for_call().map_err(invalid_target)?;
    let client =
        RpcClient::new(open_json(&url)?, request.target.clone()).with_timeout(request.timeout);
    // The client's own deadline ends the call with its timeout error; the bound here
    // is a backstop.
    let call = client.call::<_, Box<RawValue>>(&request.context, &args.method, &request.kwargs);
    let result = match bounded(call, request.timeout.saturating_add(BACKSTOP), shutdown) {
        Bounded::Done(result) => result.map_err(rpc_error)?,
        Bounded::Interrupted => return Err(interrupted("call")),
        Bounded::TimedOut => {
            return Err(timed_out(
                request.timeout,
                format!(
                    "waiting for a reply to {} on {}",
                    args.method, request.target
                ),
            ));
        }
    };
    out.line(&compact(result.get())).map_err(unwritten)
}

pub(crate) fn cast(args: &SendArgs, shutdown: &Shutdown) -> Result<(), CliError> {
    let (request, url) = request(args, shutdown)?;
    // The transport gives up at the timeout with what it saw (a refused connection, a
    // message no queue took) or a timeout; the bound is a backstop for transports
    // that do not retry.
    let client =
        RpcClient::new(open_json(&url)?, request.target.clone()).with_timeout(request.timeout);
    let cast = client.cast(&request.context, &args.method, &request.kwargs);
    let timed_out = || {
        timed_out(
            request.timeout,
            format!("casting {} to {}", args.method, request.target),
        )
    };
    match bounded(cast, request.timeout.saturating_add(BACKSTOP), shutdown) {
        Bounded::Done(Ok(())) => Ok(()),
        Bounded::Done(Err(RpcError::Transport(e))) if e.is_timeout() => Err(timed_out()),
        Bounded::Done(Err(e)) => Err(rpc_error(e)),
        Bounded::Interrupted => Err(interrupted("cast")),
        Bounded::TimedOut => Err(timed_out()),
    }
}

/// The notification topics: `--topic` (repeated), else the config files' `topics`
/// (whose default is `notifications`).
pub(crate) fn topics(flags: &[String], config: &Config) -> Result<Vec<String>, CliError> {
    let topics = if flags.is_empty() {
        config.notification_settings().topics.clone()
    } else {
        flags.to_vec()
    };
    if topics.is_empty() {
        return Err(CliError::usage(
            "no topic: give --topic, or set topics in [oslo_messaging_notifications]",
        ));
    }
    Ok(topics)
}

pub(crate) fn notify(args: &NotifyArgs, shutdown: &Shutdown) -> Result<(), CliError> {
    let priority: Priority = args
        .priority
        .parse()
        .map_err(|e: messaging_core::UnknownPriority| CliError::usage(e.to_string()))?;
    // Flags first: a usage error is reported before any file is read.
    let flagged = args
        .driver
        .iter()
        .map(|name| name.parse::<NotifyDriver>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::usage(e.to_string()))?;
    let loaded = args
        .config
        .load(args.url.as_deref(), Purpose::Notifications)?;
    let url = loaded.url()?;
    let topics = topics(&args.topic, &loaded.config)?;
    for topic in &topics {
        Target::new(topic.clone())
            .validate_for_send()
            .map_err(invalid_target)?;
    }
    let timeout = seconds(args.timeout, "--timeout")?;
    let payload = json_argument(&args.payload, "JSON_PAYLOAD", shutdown)?;
    // As for casts: the transport gives up at the timeout, the bound is a backstop.
    // The files' drivers, retry and routing table; --driver wins over their drivers,
    // and with neither the command sends messagingv2 (as oslo's
    // oslo-messaging-send-notification does), not nothing.
    let mut notifier =
        messaging_config::notifier(&loaded.config, open_json(&url)?, args.publisher_id.clone())
            .map_err(config_error)?;
    if !flagged.is_empty() {
        notifier = notifier.with_drivers(flagged);
    } else if notifier.drivers().is_empty() {
        notifier = notifier.with_drivers([NotifyDriver::MessagingV2]);
    }
    if notifier.drivers().contains(&NotifyDriver::Routing) && notifier.routing().is_none() {
        return Err(CliError::usage(
            "the routing driver needs a routing table: set routing_config in the \
             [oslo_messaging_notifications] section of a --config-file",
        ));
    }
    let notifier = notifier
        .with_topics(topics.iter().cloned())
        .with_timeout(timeout);
    let context = Context::new();
    let notification = notifier.notify(&context, priority, &args.event_type, &payload);
    let timed_out = || {
        timed_out(
            timeout,
            format!("sending the notification to {}", topics.join(", ")),
        )
    };
    match bounded(notification, timeout.saturating_add(BACKSTOP), shutdown) {
        Bounded::Done(Ok(())) => Ok(()),
        Bounded::Done(Err(NotifyError::InvalidTarget(e))) => Err(invalid_target(e)),
        Bounded::Done(Err(NotifyError::Transport(e))) if e.is_timeout() => Err(timed_out()),
        Bounded::Done(Err(NotifyError::Transport(e))) => Err(transport_error(e)),
        Bounded::Done(Err(e)) => Err(CliError::failure(e.to_string())),
        Bounded::Interrupted => Err(interrupted("notification")),
        Bounded::TimedOut => Err(timed_out()),
    }
}
