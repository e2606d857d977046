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

use super::endpoint::{Endpoint, Method};
use super::error::{
    DISPATCHER_MODULE, HANDLER_PANIC, HandlerError, MESSAGE_TOO_LARGE, NO_SUCH_METHOD,
    UNSUPPORTED_VERSION,
};
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
///   with the method wins;
/// * otherwise the caller gets `NoSuchMethod` if some endpoint served the namespace and
///   version, `UnsupportedVersion` if none did (methods starting with `_` are never
///   exposed);
/// * while a handler for a call runs, the caller is heartbeated every half of its
///   call-monitor timeout; the heartbeat ends before the reply is sent, whatever the
///   outcome;
/// * a handler error reaches the caller as a [`RemoteError`]; unexpected ones are
///   logged at error level, expected ones at debug; a panic becomes a `HandlerPanic`
///   remote error and the server keeps serving; errors of casts are only logged.
#[derive(Clone, Debug)]
pub struct RpcDispatcher {
    endpoints: Arc<[Endpoint]>,
}

impl RpcDispatcher {
    /// A dispatcher over `endpoints`, tried in order.
    ///
    /// # Errors
    ///
    /// An endpoint version that is not `major.minor[.revision]`, or a method name that
    /// is empty or starts with `_`.
    pub fn new(endpoints: Vec<Endpoint>) -> Result<Self, InvalidEndpoint> {
        for endpoint in &endpoints {
            if version::parse(&endpoint.version).is_none() {
                return Err(InvalidEndpoint(format!(
                    "version `{}` is not major.minor[.revision]",
                    endpoint.version
                )));
            }
            if let Some(name) = endpoint
                .method_names()
                .find(|name| name.is_empty() || name.starts_with('_'))
            {
                return Err(InvalidEndpoint(format!(
                    "method name `{name}` is empty or private"
                )));
            }
        }
        Ok(RpcDispatcher {
            endpoints: endpoints.into(),
        })
    }

    fn find(&self, meta: &RequestMeta) -> Result<Method, RemoteError> {
        let version = meta.version.as_deref().unwrap_or("1.0");
        let mut compatible = false;
        for endpoint in self.endpoints.iter() {
            if !endpoint.serves(meta.namespace.as_deref(), version) {
                continue;
            }
            if !meta.method.starts_with('_')
                && let Some(method) = endpoint.methods.get(&meta.method)
            {
                return Ok(method.clone());
            }
            compatible = true;
        }
        Err(if compatible {
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
        })
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
        let (context, body, codec) = (message.context, message.body, message.codec);
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
