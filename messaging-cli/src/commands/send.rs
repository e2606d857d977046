//! `call`, `cast`, `notify`: each checks its inputs before connecting, sends within
//! `--timeout` (connection retries included), abandons the send on SIGINT/SIGTERM, and
//! drops its transport before returning.

use std::time::Duration;

use messaging_core::notify::{Notifier, NotifyError};
use messaging_core::rpc::RpcClient;
use messaging_core::{Context, Priority, Target};
use serde_json::value::RawValue;

use super::{
    Bounded, bounded, compact, invalid_target, json_argument, json_object, open_json,
    parse_context, rpc_error, transport_error,
};
use crate::{CliError, NotifyArgs, Output, SendArgs, Shutdown, exit, seconds};

/// What `call` and `cast` send, checked.
struct Request {
    target: Target,
    timeout: Duration,
    kwargs: Box<RawValue>,
    context: Context,
}

fn request(args: &SendArgs) -> Result<Request, CliError> {
    let mut target = Target::new(args.topic.clone()).with_fanout(args.fanout);
    target.server = args.server.clone();
    target.exchange = args.exchange.clone();
    target.namespace = args.namespace.clone();
    target.version = args.version.clone();
    target.validate_for_send().map_err(invalid_target)?;
    Ok(Request {
        target,
        timeout: seconds(args.timeout, "--timeout")?,
        kwargs: json_object(&args.kwargs, "JSON_KWARGS")?,
        context: parse_context(args.context.as_deref())?,
    })
}

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
    let request = request(args)?;
    request.target.validate_for_call().map_err(invalid_target)?;
    let client =
        RpcClient::new(open_json(&args.url)?, request.target.clone()).with_timeout(request.timeout);
    // The client's own deadline ends the call with its timeout error; the bound here
    // is a backstop.
    let call = client.call::<_, Box<RawValue>>(&request.context, &args.method, &request.kwargs);
    let backstop = request.timeout.saturating_add(Duration::from_secs(1));
    let result = match bounded(call, backstop, shutdown) {
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
    out.line(&compact(result.get()));
    Ok(())
}

pub(crate) fn cast(args: &SendArgs, shutdown: &Shutdown) -> Result<(), CliError> {
    let request = request(args)?;
    // The transport's own deadline comes a little later, so that the bound below
    // decides: a cast that took too long is a timeout, whatever the transport was doing.
    let client = RpcClient::new(open_json(&args.url)?, request.target.clone())
        .with_timeout(request.timeout.saturating_add(Duration::from_secs(1)));
    let cast = client.cast(&request.context, &args.method, &request.kwargs);
    match bounded(cast, request.timeout, shutdown) {
        Bounded::Done(result) => result.map_err(rpc_error),
        Bounded::Interrupted => Err(interrupted("cast")),
        Bounded::TimedOut => Err(timed_out(
            request.timeout,
            format!("casting {} to {}", args.method, request.target),
        )),
    }
}

pub(crate) fn notify(args: &NotifyArgs, shutdown: &Shutdown) -> Result<(), CliError> {
    let priority: Priority = args
        .priority
        .parse()
        .map_err(|e: messaging_core::UnknownPriority| CliError::usage(e.to_string()))?;
    for topic in &args.topic {
        Target::new(topic.clone())
            .validate_for_send()
            .map_err(invalid_target)?;
    }
    let timeout = seconds(args.timeout, "--timeout")?;
    let payload = json_argument(&args.payload, "JSON_PAYLOAD")?;
    let notifier = Notifier::new(open_json(&args.url)?, args.publisher_id.clone())
        .with_topics(args.topic.iter().cloned());
    let context = Context::new();
    let notification = notifier.notify(&context, priority, &args.event_type, &payload);
    match bounded(notification, timeout, shutdown) {
        Bounded::Done(Ok(())) => Ok(()),
        Bounded::Done(Err(NotifyError::InvalidTarget(e))) => Err(invalid_target(e)),
        Bounded::Done(Err(NotifyError::Transport(e))) => Err(transport_error(e)),
        Bounded::Done(Err(e)) => Err(CliError::failure(e.to_string())),
        Bounded::Interrupted => Err(interrupted("notification")),
        Bounded::TimedOut => Err(timed_out(
            timeout,
            format!("sending the notification to {}", args.topic.join(", ")),
        )),
    }
}
