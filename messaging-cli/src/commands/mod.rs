//! The subcommands, and what they share: opening transports with the JSON codec
//! (dynamic arguments need a self-describing codec), parsing JSON arguments, and
//! mapping errors to exit codes.

pub(crate) mod demo;
pub(crate) mod listen;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod simulate;

use std::sync::Arc;

use messaging_core::rpc::RpcError;
use messaging_core::{Context, Transport, TransportError, TransportUrl};

use crate::{CliError, exit};

/// Opens `url`, with the JSON codec unless the URL names a codec.
pub(crate) fn open_json(url: &str) -> Result<Arc<dyn Transport>, CliError> {
    let parsed = TransportUrl::parse(url).map_err(|e| CliError::usage(e.to_string()))?;
    let url = if parsed.option("codec").is_some() {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&codec=json")
    } else {
        format!("{url}?codec=json")
    };
    messaging_transports::open(&url).map_err(transport_error)
}

pub(crate) fn transport_error(error: TransportError) -> CliError {
    match error {
        TransportError::InvalidUrl(_)
        | TransportError::UnknownScheme { .. }
        | TransportError::InvalidTarget(_) => CliError::usage(error.to_string()),
        other => CliError::failure(other.to_string()),
    }
}

pub(crate) fn rpc_error(error: RpcError) -> CliError {
    let code = match &error {
        RpcError::Remote(_) => exit::REMOTE,
        e if e.is_timeout() => exit::TIMEOUT,
        RpcError::InvalidTarget(_) | RpcError::InvalidVersion(_) | RpcError::VersionCap { .. } => {
            exit::USAGE
        }
        _ => exit::FAILURE,
    };
    let message = match &error {
        RpcError::Remote(remote) => format!(
            "remote error: {}.{}: {}",
            remote.module, remote.class, remote.message
        ),
        other => other.to_string(),
    };
    CliError { code, message }
}

pub(crate) fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(text)
        .map_err(|e| CliError::usage(format!("{what} is not valid JSON: {e}")))
}

pub(crate) fn parse_context(text: Option<&str>) -> Result<Context, CliError> {
    let Some(text) = text else {
        return Ok(Context::new());
    };
    match parse_json(text, "the context")? {
        serde_json::Value::Object(map) => Ok(map.into_iter().collect()),
        _ => Err(CliError::usage("the context must be a JSON object")),
    }
}
