//! [`RpcDispatcher`]: routes requests to endpoints the way oslo.messaging does, runs
//! the handler, heartbeats the caller meanwhile, and replies.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;

use super::endpoint::{Endpoint, Method, NoArgs};
use super::error::{
    DISPATCHER_MODULE, HANDLER_PANIC, HandlerError, MESSAGE_TOO_LARGE, NO_SUCH_METHOD,
    UNSUPPORTED_VERSION,
};
use super::policy::{DefaultRpcAccessPolicy, RpcAccessPolicy, SharedPolicy};
use super::version;
use crate::dispatch::{Dispatch, Dispatcher};
use crate::error::TransportError;
use crate::error::panic_message;
use crate::message::{Meta, RemoteError, RequestMeta};
use crate::reply::{Replier, ReplyEvent};
use crate::timer::{self, Repeating};
use crate::transport::IncomingMessage;
use crate::untrusted::Untrusted;

/// The context key carrying the caller's trace id.
pub const TRACE_ID: &str = "trace_id";

/// The context key carrying the caller's call-monitor timeout in seconds (a number,
/// or `null` when the caller asked for no heartbeats), as oslo's RabbitMQ driver puts
/// `_timeout` into the `ctxt` dict every endpoint method receives. Read it with
/// [`Context::client_timeout`](crate::Context::client_timeout).
pub const CLIENT_TIMEOUT: &str = "client_timeout";

/// The method [`RpcDispatcherBuilder::rpc_ping_enabled`] adds: oslo's
/// `oslo_rpc_server_ping`, which answers `"pong"`.
pub const PING_METHOD: &str = "oslo_rpc_server_ping";

/// An endpoint list that cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint: {0}")]
pub struct InvalidEndpoint(String);

/// Dispatches RPC requests to [`Endpoint`]s, following oslo.messaging:
///
/// * a request is acknowledged on receipt (at-most-once); if the acknowledgement fails
///   it is discarded unprocessed;
/// * a request whose sender's deadline ([`IncomingMessage::deadline`]) has passed
///   when its handler would start is dropped with one debug line: its caller has
///   timed out, and nobody would read the reply;
/// * endpoints are tried in order; one serves a request if the request's namespace is
///   its namespace (or a legacy one) and its version is compatible
///   ([`version_is_compatible`](super::version_is_compatible)); the first such endpoint
///   that has the method and whose [access policy](RpcAccessPolicy) allows it wins;
/// * otherwise the caller gets `NoSuchMethod` if some endpoint served the namespace and
///   version, `UnsupportedVersion` if none did (under the default policy, methods
///   starting with `_` are never dispatched; a refused method is `NoSuchMethod`);
/// * the handler's [`Context`](crate::Context) is the caller's, plus
///   [`CLIENT_TIMEOUT`]: the caller's call-monitor timeout in seconds, or `null`
///   (oslo's `ctxt['client_timeout']`);
/// * while a handler for a call runs, the caller is heartbeated every half of its
///   call-monitor timeout; the heartbeat ends before the reply is sent, whatever the
///   outcome;
/// * a handler error reaches the caller as a [`RemoteError`] (with its `args` and
///   `kwargs`); unexpected ones are logged at error level, expected ones at debug; a
///   panic becomes a `HandlerPanic` remote error and the server keeps serving; errors
///   of casts are only logged.
///
/// [`new`](RpcDispatcher::new) takes oslo's defaults; [`builder`](RpcDispatcher::builder)
/// sets the access policy and `rpc_ping_enabled`.
#[derive(Clone, Debug)]
pub struct RpcDispatcher {
    endpoints: Arc<[Endpoint]>,
    policy: SharedPolicy,
}

impl RpcDispatcher {
    /// A dispatcher over `endpoints`, tried in order, with oslo's defaults: the
    /// [`DefaultRpcAccessPolicy`] and no ping method.
    ///
    /// # Errors
    ///
    /// See [`RpcDispatcherBuilder::build`].
    pub fn new(endpoints: Vec<Endpoint>) -> Result<Self, InvalidEndpoint> {
        Self::builder(endpoints).build()
    }

    /// Starts building a dispatcher over `endpoints`, tried in order.
    ///
    /// # Examples
    ///
    /// An RPC server that answers oslo's ping and dispatches only exposed methods:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use messaging_core::rpc::{Endpoint, ExplicitRpcAccessPolicy, HandlerError, NoArgs, RpcDispatcher};
    /// use messaging_core::{Executor, Server, ServerBuilder, Subscription, Target, Transport};
    ///
    /// fn server(transport: Arc<dyn Transport>, executor: impl Executor) -> ServerBuilder {
    ///     let endpoint = Endpoint::new()
    ///         .method("status", |_ctx, _: NoArgs| Ok::<_, HandlerError>("ok"))
    ///         .expose("status");
    ///     let dispatcher = RpcDispatcher::builder(vec![endpoint])
    ///         .access_policy(ExplicitRpcAccessPolicy)
    ///         .rpc_ping_enabled(true)
    ///         .build()
    ///         .expect("valid endpoints");
    ///     let target = Target::new("compute").with_server("host1");
    ///     Server::builder(transport, Subscription::Rpc(target), dispatcher, executor)
    /// }
    /// ```
    pub fn builder(endpoints: Vec<Endpoint>) -> RpcDispatcherBuilder {
        RpcDispatcherBuilder {
            endpoints,
            policy: SharedPolicy::new(DefaultRpcAccessPolicy),
            default_policy: true,
            ping: false,
        }
    }

    /// The endpoints, in the order they are tried (the ping endpoint last, if added).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn find(&self, meta: &RequestMeta) -> Result<Method, Box<RemoteError>> {
        let version = meta.version.as_deref().unwrap_or("1.0");
        let mut compatible = false;
        for endpoint in self.endpoints.iter() {
            if !endpoint.serves(meta.namespace.as_deref(), version) {
                continue;
            }
            if let Some(method) = endpoint.methods.get(&meta.method)
                && self.policy.policy.is_allowed(endpoint, &meta.method)
            {
                return Ok(method.clone());
            }
            compatible = true;
        }
        Err(Box::new(if compatible {
            RemoteError::new(
                NO_SUCH_METHOD,
                DISPATCHER_MODULE,
                format!(
                    "Endpoint does not support RPC method {}",
                    Untrusted::with_limit(&meta.method, 200)
                ),
            )
        } else {
            RemoteError::new(
                UNSUPPORTED_VERSION,
                DISPATCHER_MODULE,
                format!(
                    "Endpoint does not support RPC version {}. Attempted method: {}",
                    Untrusted::with_limit(version, 200),
                    Untrusted::with_limit(&meta.method, 200)
                ),
            )
        }))
    }

    fn dispatch_one(&self, mut incoming: IncomingMessage) -> Dispatch {
        if let Err(error) = incoming.acknowledge() {
            tracing::warn!(%error, "discarding RPC request due to failed acknowledge");
            return Dispatch::nothing();
        }
        let message = std::mem::take(incoming.message_mut());
        let Meta::Request(meta) = message.meta else {
            let remote = RemoteError::new(
                "InvalidMessage",
                "messaging",
                "the message is not an RPC request",
            );
            tracing::warn!("dropping a message that is not an RPC request");
            finish(
                &mut incoming,
                "?",
                Ok(Err(HandlerError::from_remote(remote).expected())),
            );
            return Dispatch::nothing();
        };
        let trace_id = message
            .context
            .get(TRACE_ID)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        // Every field comes from the wire: shown cut and escaped.
        let span = tracing::info_span!(
            "rpc.server",
            method = shown(&meta.method),
            namespace = meta.namespace.as_deref().map(shown),
            version = meta.version.as_deref().map(shown),
            call = incoming.is_call(),
            trace_id = shown(&trace_id),
        );
        let method = match self.find(&meta) {
            Ok(method) => method,
            Err(remote) => {
                let _enter = span.enter();
                tracing::debug!(error = %remote, "no endpoint for the request");
                let err = HandlerError::from_remote(remote).expected();
                finish(&mut incoming, &meta.method, Ok(Err(err)));
                return Dispatch::nothing();
            }
        };
        let (mut context, body, codec) = (message.context, message.body, message.codec);
        context.insert(CLIENT_TIMEOUT, seconds(incoming.client_timeout()));
        match method {
            Method::Blocking(handler) => Dispatch::blocking(move || {
                let _enter = span.enter();
                if expired(&incoming) {
                    return;
                }
                let heartbeat = Heartbeat::start(&incoming);
                let outcome = catch_unwind(AssertUnwindSafe(|| handler(context, body, codec)))
                    .map_err(|panic| panic_message(&*panic));
                drop(heartbeat);
                finish(&mut incoming, &meta.method, outcome);
            }),
            Method::Async(handler) => Dispatch::future(
                async move {
                    if expired(&incoming) {
                        return;
                    }
                    let heartbeat = Heartbeat::start(&incoming);
                    let outcome = CatchUnwind::new(move || handler(context, body, codec)).await;
                    drop(heartbeat);
                    finish(&mut incoming, &meta.method, outcome);
                }
                .instrument(span),
            ),
        }
    }
}

impl Dispatcher for RpcDispatcher {
    fn dispatch(&self, mut batch: Vec<IncomingMessage>) -> Dispatch {
        if batch.len() == 1 {
            let incoming = batch.pop().expect("one message");
            return self.dispatch_one(incoming);
        }
        // RPC listeners deliver one message at a time; a larger batch runs in order.
        let work: Vec<Dispatch> = batch.into_iter().map(|m| self.dispatch_one(m)).collect();
        Dispatch::blocking(move || work.into_iter().for_each(Dispatch::run))
    }
}

// ===== RpcDispatcherBuilder =====

/// Builds an [`RpcDispatcher`]; made by [`RpcDispatcher::builder`]. Defaults are
/// oslo's: the [`DefaultRpcAccessPolicy`], no ping method.
#[derive(Debug)]
#[must_use = "a builder does nothing until built"]
pub struct RpcDispatcherBuilder {
    endpoints: Vec<Endpoint>,
    policy: SharedPolicy,
    /// Whether `policy` is the default one, set by no call to `access_policy`.
    default_policy: bool,
    ping: bool,
}

impl RpcDispatcherBuilder {
    /// Which endpoint methods callers may invoke (oslo's `access_policy`); the
    /// [`DefaultRpcAccessPolicy`] unless set. See [`RpcAccessPolicy`].
    pub fn access_policy(mut self, policy: impl RpcAccessPolicy) -> Self {
        self.policy = SharedPolicy::new(policy);
        self.default_policy = false;
        self
    }

    /// oslo's `rpc_ping_enabled` option (off by default): adds, after the given
    /// endpoints, an endpoint in the null namespace at version `1.0` whose method
    /// [`PING_METHOD`] (`oslo_rpc_server_ping`) takes any keyword arguments and returns
    /// `"pong"`, as oslo's `PingEndpoint` does. Callers ping with
    /// [`RpcClient::ping`](super::RpcClient::ping) or, from Python,
    /// `client.call(ctxt, 'oslo_rpc_server_ping')`.
    ///
    /// As in oslo: when an endpoint already has a method of that name, a warning is
    /// logged and no ping endpoint is added (the endpoint's own method answers); the
    /// access policy applies to the ping method too, and the
    /// [`ExplicitRpcAccessPolicy`](super::ExplicitRpcAccessPolicy) refuses it (it is
    /// not exposed).
    pub fn rpc_ping_enabled(mut self, enabled: bool) -> Self {
        self.ping = enabled;
        self
    }

    /// Checks the endpoints and builds the dispatcher.
    ///
    /// # Errors
    ///
    /// An endpoint version that is not `major.minor[.revision]`, an empty method name,
    /// or, when no [`access_policy`](RpcDispatcherBuilder::access_policy) was set, a
    /// method name starting with `_`: the default policy would never dispatch it.
    /// Private methods are for the
    /// [`LegacyRpcAccessPolicy`](super::LegacyRpcAccessPolicy), the
    /// [`ExplicitRpcAccessPolicy`](super::ExplicitRpcAccessPolicy) with
    /// [`Endpoint::expose`], or a policy of your own.
    pub fn build(self) -> Result<RpcDispatcher, InvalidEndpoint> {
        let RpcDispatcherBuilder {
            mut endpoints,
            policy,
            default_policy,
            ping,
        } = self;
        for endpoint in &endpoints {
            if version::parse(&endpoint.version).is_none() {
                return Err(InvalidEndpoint(format!(
                    "version `{}` is not major.minor[.revision]",
                    endpoint.version
                )));
            }
            if endpoint.has_method("") {
                return Err(InvalidEndpoint("a method name is empty".to_owned()));
            }
            if default_policy
                && let Some(name) = endpoint.method_names().find(|name| name.starts_with('_'))
            {
                return Err(InvalidEndpoint(format!(
                    "method `{name}` is private: the default access policy would never dispatch it"
                )));
            }
        }
        let declared = endpoints.iter().any(|e| e.has_method(PING_METHOD));
        if declared {
            tracing::warn!(
                "`{PING_METHOD}` is a reserved endpoint method, which answers ping calls; \
                 avoid oslo_* names"
            );
        }
        if ping {
            if declared {
                tracing::warn!(
                    "rpc_ping_enabled is set but an endpoint already declares \
                     `{PING_METHOD}`: not adding the ping endpoint"
                );
            } else {
                endpoints.push(ping_endpoint());
            }
        }
        Ok(RpcDispatcher {
            endpoints: endpoints.into(),
            policy,
        })
    }
}

/// oslo's `PingEndpoint`: `oslo_rpc_server_ping(ctxt, **kwargs)` returns `'pong'`.
fn ping_endpoint() -> Endpoint {
    // NoArgs ignores whatever keyword arguments a JSON caller sends (`**kwargs`).
    Endpoint::new().method(PING_METHOD, |_ctx, _: NoArgs| Ok::<_, HandlerError>("pong"))
}

/// A call-monitor timeout as oslo's `_timeout` would carry it: whole seconds as an
/// integer, others as a float, none as `null`.
fn seconds(timeout: Option<Duration>) -> serde_json::Value {
    match timeout {
        None => serde_json::Value::Null,
        Some(t) if t.subsec_nanos() == 0 => t.as_secs().into(),
        Some(t) => t.as_secs_f64().into(),
    }
}

// ===== helpers =====

/// A span field from the wire, cut and escaped.
fn shown(value: &str) -> tracing::field::DisplayValue<Untrusted<'_>> {
    tracing::field::display(Untrusted::new(value))
}

/// Whether the sender gave up on the request before its handler could start.
fn expired(incoming: &IncomingMessage) -> bool {
    let expired = incoming.is_expired();
    if expired {
        tracing::debug!("dropping a request whose sender's deadline has passed");
    }
    expired
}

/// Sends the reply (for a call) and logs failures.
fn finish(
    incoming: &mut IncomingMessage,
    method: &str,
    outcome: Result<Result<Bytes, HandlerError>, String>,
) {
    let reply = match outcome {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            if error.is_expected() {
                tracing::debug!(%error, "expected error during message handling");
            } else {
                tracing::error!(%error, "error during message handling");
            }
            Err(error.into_remote())
        }
        Err(panic) => {
            tracing::error!(%panic, "handler panicked; the server keeps serving");
            Err(RemoteError::new(
                HANDLER_PANIC,
                "messaging",
                format!("the handler of {method}() panicked: {panic}"),
            ))
        }
    };
    if !incoming.is_call() {
        return;
    }
    let sent = match incoming.reply(reply) {
        Err(TransportError::MessageTooLarge { size, limit }) => {
            // The caller would only time out: tell it why instead.
            tracing::warn!(
                size,
                limit,
                "the result is too large to send; replying with an error"
            );
            incoming.reply(Err(RemoteError::new(
                MESSAGE_TOO_LARGE,
                "messaging",
                format!(
                    "the result of {method}() is {size} bytes, more than the transport's limit of {limit} bytes"
                ),
            )))
        }
        sent => sent,
    };
    if let Err(error) = sent {
        tracing::warn!(%error, "cannot send the reply");
    }
}

/// Heartbeats a caller while its handler runs. Dropping it stops the heartbeat and
/// waits for one being sent, so no heartbeat ever follows the reply.
struct Heartbeat {
    _repeat: Repeating,
    active: Arc<Mutex<bool>>,
}

/// The shortest call-monitor timeout honoured (heartbeats every half of it).
const MIN_MONITOR: Duration = Duration::from_millis(10);

impl Heartbeat {
    fn start(incoming: &IncomingMessage) -> Option<Heartbeat> {
        let timeout = incoming.client_timeout()?;
        let replier: Arc<dyn Replier> = incoming.replier()?;
        if timeout < MIN_MONITOR {
            tracing::warn!(
                ?timeout,
                "client provided an invalid call-monitor timeout; no heartbeats"
            );
            return None;
        }
        let active = Arc::new(Mutex::new(true));
        let flag = active.clone();
        let repeat = timer::repeat(timeout / 2, move || {
            let active = flag.lock().unwrap_or_else(|p| p.into_inner());
            if *active && let Err(error) = replier.send(ReplyEvent::Heartbeat) {
                tracing::debug!(%error, "heartbeat failed");
            }
        });
        Some(Heartbeat {
            _repeat: repeat,
            active,
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

/// Runs a future-making closure and its future, turning a panic in either into an
/// error message.
struct CatchUnwind<Fut> {
    make: Option<Box<dyn FnOnce() -> Fut + Send>>,
    future: Option<Pin<Box<Fut>>>,
}

impl<Fut> CatchUnwind<Fut> {
    fn new(make: impl FnOnce() -> Fut + Send + 'static) -> Self {
        CatchUnwind {
            make: Some(Box::new(make)),
            future: None,
        }
    }
}

impl<Fut: Future> Future for CatchUnwind<Fut> {
    type Output = Result<Fut::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(make) = this.make.take() {
            match catch_unwind(AssertUnwindSafe(make)) {
                Ok(future) => this.future = Some(Box::pin(future)),
                Err(panic) => return Poll::Ready(Err(panic_message(&*panic))),
            }
        }
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(Err("polled after completion".to_owned()));
        };
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => {
                this.future = None;
                Poll::Ready(Ok(output))
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => {
                this.future = None;
                Poll::Ready(Err(panic_message(&*panic)))
            }
        }
    }
}

impl<Fut> Unpin for CatchUnwind<Fut> {}
