//! RPC over any transport: [`RpcClient`] sends calls and casts; [`RpcDispatcher`]
//! serves them from [`Endpoint`]s with typed handlers, behind any executor.
//!
//! Semantics follow oslo.messaging: calls and casts are at-most-once (requests are
//! acknowledged on receipt); a call gets its reply or a typed error; endpoints are
//! matched by namespace and version ([`version_is_compatible`]); a missing method is
//! `NoSuchMethod` when some endpoint serves the namespace and version, and
//! `UnsupportedVersion` otherwise; remote errors travel typed
//! ([`RemoteError`](crate::RemoteError): class, module, message, traceback).
//!
//! [`server`] builds a ready [`ServerBuilder`] for an RPC server.

mod client;
mod dispatcher;
mod endpoint;
mod error;
mod version;

use std::sync::Arc;

pub use client::{DEFAULT_TIMEOUT, RpcClient};
pub use dispatcher::{InvalidEndpoint, RpcDispatcher, TRACE_ID};
pub use endpoint::{Endpoint, NoArgs};
pub use error::{
    DISPATCHER_MODULE, HANDLER_PANIC, HandlerError, MESSAGE_TOO_LARGE, NO_SUCH_METHOD, RpcError,
    UNSUPPORTED_VERSION,
};
pub use version::version_is_compatible;

use crate::executor::Executor;
use crate::server::{Server, ServerBuilder};
use crate::target::Target;
use crate::transport::{Subscription, Transport};

/// A [`ServerBuilder`] for an RPC server on `target` (topic and server) serving
/// `endpoints`, tried in order.
///
/// # Errors
///
/// See [`RpcDispatcher::new`].
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
