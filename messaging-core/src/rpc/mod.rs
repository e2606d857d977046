//! RPC over any transport: [`RpcClient`] sends calls and casts; [`RpcDispatcher`]
//! serves them from [`Endpoint`]s with typed handlers, behind any executor.
//!
//! Semantics follow oslo.messaging: calls and casts are at-most-once (requests are
//! acknowledged on receipt); a call gets its reply or a typed error; endpoints are
//! matched by namespace and version ([`version_is_compatible`]); a missing method is
//! `NoSuchMethod` when some endpoint serves the namespace and version, and
//! `UnsupportedVersion` otherwise; remote errors travel typed
//! ([`RemoteError`](crate::RemoteError): class, module, message, traceback, and the
//! `args` and `kwargs` a Python caller rebuilds the exception with).
//!
//! Parity details Python peers rely on:
//!
//! * access policies ([`RpcAccessPolicy`]): oslo's default (no `_` methods), explicit
//!   ([`Endpoint::expose`]) and legacy policies, or a closure; a refused method is
//!   `NoSuchMethod`, as in oslo;
//! * `rpc_ping_enabled` ([`RpcDispatcherBuilder::rpc_ping_enabled`]): the
//!   `oslo_rpc_server_ping` method answering `"pong"`, which [`RpcClient::ping`] calls;
//! * a handler's context carries [`CLIENT_TIMEOUT`] (oslo's `ctxt['client_timeout']`),
//!   read with [`Context::client_timeout`](crate::Context::client_timeout).
//!
//! [`server`] builds a ready [`ServerBuilder`] for an RPC server.

mod client;
mod dispatcher;
mod endpoint;
mod error;
mod policy;
mod version;

use std::sync::Arc;

pub use client::{DEFAULT_TIMEOUT, RpcClient};
pub use dispatcher::{
    CLIENT_TIMEOUT, InvalidEndpoint, PING_METHOD, RpcDispatcher, RpcDispatcherBuilder, TRACE_ID,
};
pub use endpoint::{Endpoint, NoArgs};
pub use error::{
    DISPATCHER_MODULE, HANDLER_PANIC, HandlerError, MESSAGE_TOO_LARGE, NO_SUCH_METHOD, RpcError,
    UNSUPPORTED_VERSION,
};
pub use policy::{
    DefaultRpcAccessPolicy, ExplicitRpcAccessPolicy, LegacyRpcAccessPolicy, RpcAccessPolicy,
};
pub use version::version_is_compatible;

use crate::executor::Executor;
use crate::server::{Server, ServerBuilder};
use crate::target::Target;
use crate::transport::{Subscription, Transport};

/// A [`ServerBuilder`] for an RPC server on `target` (topic and server) serving
/// `endpoints`, tried in order, with oslo's defaults (see [`RpcDispatcher::new`]); for
/// another access policy or `rpc_ping_enabled`, build the dispatcher with
/// [`RpcDispatcher::builder`] and pass it to [`Server::builder`].
///
/// # Errors
///
/// See [`RpcDispatcherBuilder::build`].
pub fn server(
    transport: Arc<dyn Transport>,
    target: Target,
    endpoints: Vec<Endpoint>,
    executor: impl Executor,
) -> Result<ServerBuilder, InvalidEndpoint> {
    let dispatcher = RpcDispatcher::new(endpoints)?;
    Ok(Server::builder(
        transport,
        Subscription::Rpc(target),
        dispatcher,
        executor,
    ))
}

#[cfg(test)]
mod parity_tests;
