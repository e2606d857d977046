//! `call`, `cast`, `notify`.

use messaging_core::dispatch::block_on;
use messaging_core::notify::Notifier;
use messaging_core::rpc::RpcClient;
use messaging_core::{Priority, Target};

use super::{open_json, parse_context, parse_json, rpc_error};
use crate::{CliError, NotifyArgs, Output, SendArgs, seconds};

fn client(args: &SendArgs) -> Result<RpcClient, CliError> {
    let transport = open_json(&args.url)?;
    let mut target = Target::new(args.topic.clone()).with_fanout(args.fanout);
    target.server = args.server.clone();
    target.exchange = args.exchange.clone();
    target.namespace = args.namespace.clone();
    target.version = args.version.clone();
    Ok(RpcClient::new(transport, target).with_timeout(seconds(args.timeout, "--timeout")?))
}

fn kwargs(args: &SendArgs) -> Result<serde_json::Value, CliError> {
    let kwargs = parse_json(&args.kwargs, "JSON_KWARGS")?;
    if !kwargs.is_object() {
        return Err(CliError::usage("JSON_KWARGS must be a JSON object"));
    }
    Ok(kwargs)
}

pub(crate) fn call(args: &SendArgs, out: &Output) -> Result<(), CliError> {
    let (client, kwargs, context) = (
        client(args)?,
        kwargs(args)?,
        parse_context(args.context.as_deref())?,
    );
    let result: serde_json::Value = client
        .call_blocking(&context, &args.method, &kwargs)
        .map_err(rpc_error)?;
    out.line(&result.to_string());
    Ok(())
}

pub(crate) fn cast(args: &SendArgs) -> Result<(), CliError> {
    let (client, kwargs, context) = (
        client(args)?,
        kwargs(args)?,
        parse_context(args.context.as_deref())?,
    );
    client
        .cast_blocking(&context, &args.method, &kwargs)
        .map_err(rpc_error)
}

pub(crate) fn notify(args: &NotifyArgs) -> Result<(), CliError> {
    let priority: Priority = args
        .priority
        .parse()
        .map_err(|e: messaging_core::UnknownPriority| CliError::usage(e.to_string()))?;
    let payload = parse_json(&args.payload, "JSON_PAYLOAD")?;
    let notifier = Notifier::new(open_json(&args.url)?, args.publisher_id.clone())
        .with_topics(args.topic.iter().cloned());
    block_on(notifier.notify(&Default::default(), priority, &args.event_type, &payload))
        .map_err(|e| CliError::failure(e.to_string()))
}
