//! [`RpcClient`]: call, cast and fanout cast, with oslo's per-call overrides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::dispatcher::{PING_METHOD, TRACE_ID};
use super::endpoint::NoArgs;
use super::error::RpcError;
use super::version::{self, version_is_compatible};
use crate::codec::{Codec, CodecKind};
use crate::dispatch::block_on;
use crate::error::TransportError;
use crate::ids;
use crate::message::{Context, Message, Meta, RequestMeta};
use bytes::Bytes;

use crate::reply::{RecvError, ReplyEvent};
use crate::target::Target;
use crate::timer::{Elapsed, timeout_at};
use crate::transport::{SendOptions, Transport};

/// A call waiting for its reply: the overall deadline and the call-monitor deadline,
/// and what each reply event means. Shared by the async and the blocking paths.
struct Waiting<'a> {
    client: &'a RpcClient,
    method: &'a str,
    timeout: Duration,
    started: Instant,
    /// `None`: a timeout too long to represent, i.e. none.
    deadline: Option<Instant>,
    monitor: Option<(Duration, Option<Instant>)>,
}

impl<'a> Waiting<'a> {
    fn new(client: &'a RpcClient, method: &'a str) -> Self {
        let timeout = client.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let started = Instant::now();
        Waiting {
            client,
            method,
            timeout,
            started,
            deadline: started.checked_add(timeout),
            monitor: client
                .call_monitor_timeout
                .map(|t| (t, Instant::now().checked_add(t))),
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        match (self.deadline, self.monitor.and_then(|(_, at)| at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A send that failed once the deadline had passed failed because of it (a
    /// transport gives up publishing at the caller's deadline): report the timeout.
    fn send_failed(&self, error: TransportError) -> RpcError {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.timed_out()
        } else {
            error.into()
        }
    }

    fn timed_out(&self) -> RpcError {
        RpcError::Timeout {
            method: self.method.to_owned(),
            target: self.client.target.to_string(),
            after: self.timeout,
        }
    }

    /// What an event (or its absence) means: `None` to keep waiting, or the outcome.
    fn on(&mut self, event: Result<ReplyEvent, RecvError>) -> Option<Result<Bytes, RpcError>> {
        match event {
            Ok(ReplyEvent::Heartbeat) => {
                tracing::trace!("heartbeat");
                if let Some((t, at)) = self.monitor.as_mut() {
                    *at = Instant::now().checked_add(*t);
                }
                None
            }
            Ok(ReplyEvent::Reply(Ok(body))) => {
                tracing::debug!(elapsed = ?self.started.elapsed(), "reply");
                Some(Ok(body))
            }
            Ok(ReplyEvent::Reply(Err(remote))) => {
                tracing::debug!(error = %remote, "remote error");
                Some(Err(RpcError::Remote(Box::new(remote))))
            }
            Err(RecvError::Disconnected) => Some(Err(RpcError::ReplyLost {
                method: self.method.to_owned(),
                target: self.client.target.to_string(),
            })),
            Err(RecvError::Timeout) => {
                if self.deadline.is_some_and(|d| Instant::now() >= d) {
                    return Some(Err(self.timed_out()));
                }
                match self.monitor {
                    Some((t, at)) if at.is_some_and(|at| Instant::now() >= at) => {
                        Some(Err(RpcError::MonitorTimeout {
                            method: self.method.to_owned(),
                            target: self.client.target.to_string(),
                            after: t,
                        }))
                    }
                    _ => None,
                }
            }
        }
    }
}

/// Awaits `future`, bounded by `deadline` if there is one.
async fn until<F: std::future::Future>(
    deadline: Option<Instant>,
    future: F,
) -> Result<F::Output, Elapsed> {
    match deadline {
        Some(deadline) => timeout_at(deadline, future).await,
        None => Ok(future.await),
    }
}

/// oslo's `rpc_response_timeout` default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends RPC calls and casts to a [`Target`] over a [`Transport`].
///
/// The `with_*` methods return a modified copy, like oslo's `prepare()`: a client is
/// cheap to clone and to specialise per call. Arguments are one serde value matching
/// the remote method's keyword arguments; they are encoded with the transport's codec.
///
/// * [`call`](RpcClient::call) waits for the reply or fails with a typed error: a
///   [`Timeout`](RpcError::Timeout) after the timeout (60 s by default), a
///   [`Remote`](RpcError::Remote) error raised by the handler, ... With a
///   call-monitor timeout, the server heartbeats while the handler runs and the call
///   fails fast ([`MonitorTimeout`](RpcError::MonitorTimeout)) when heartbeats stop.
/// * [`cast`](RpcClient::cast) returns once the transport took the message
///   (at-most-once, no reply); with [`with_fanout`](RpcClient::with_fanout) it goes to
///   every server of the topic.
///
/// Every call and cast runs in a `tracing` span; the context carries a `trace_id`
/// (kept if the caller set one) so the server's span can be linked to it.
///
/// The futures need no particular runtime; the `_blocking` variants drive them on the
/// calling thread.
///
/// # Examples
///
/// A client and a server over the in-memory transport are in the crate-level docs of
/// `messaging-executors`; the client side alone looks like this:
///
/// ```no_run
/// # async fn demo(transport: std::sync::Arc<dyn messaging_core::Transport>) -> Result<(), messaging_core::rpc::RpcError> {
/// use std::time::Duration;
/// use messaging_core::{Context, Target};
/// use messaging_core::rpc::RpcClient;
///
/// let client = RpcClient::new(transport, Target::new("compute")).with_timeout(Duration::from_secs(5));
/// let sum: i64 = client
///     .clone()
///     .with_server("host1")
///     .call(&Context::new(), "add", &serde_json::json!({"a": 1, "b": 2}))
///     .await?;
/// client.with_fanout(true).cast(&Context::new(), "refresh", &serde_json::json!({})).await?;
/// # let _ = sum; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RpcClient {
    transport: Arc<dyn Transport>,
    target: Target,
    timeout: Option<Duration>,
    version_cap: Option<String>,
    retry: Option<u32>,
    call_monitor_timeout: Option<Duration>,
    at_least_once: bool,
}

impl RpcClient {
    /// A client for `target` (a topic at least; see [`Target`]).
    pub fn new(transport: Arc<dyn Transport>, target: Target) -> Self {
        RpcClient {
            transport,
            target,
            timeout: None,
            version_cap: None,
            retry: None,
            call_monitor_timeout: None,
            at_least_once: false,
        }
    }

    /// The target calls go to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends to another exchange.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.target.exchange = Some(exchange.into());
        self
    }

    /// Sends to another topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.target.topic = Some(topic.into());
        self
    }

    /// Sends to one server of the topic.
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.target.server = Some(server.into());
        self
    }

    /// Calls methods of this namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.target.namespace = Some(namespace.into());
        self
    }

    /// Asks for this interface version (`major.minor[.revision]`).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.target.version = Some(version.into());
        self
    }

    /// Casts to every server of the topic (calls refuse fanout).
    pub fn with_fanout(mut self, fanout: bool) -> Self {
        self.target.fanout = fanout;
        self
    }

    /// How long a call waits for its reply (60 s by default; zero fails at once
    /// unless the reply is already there).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Refuses to send a version above `cap`.
    pub fn with_version_cap(mut self, cap: impl Into<String>) -> Self {
        self.version_cap = Some(cap.into());
        self
    }

    /// Connection retries: `0` none, `n` at most `n` (default: forever).
    pub fn with_retry(mut self, retry: u32) -> Self {
        self.retry = Some(retry);
        self
    }

    /// oslo's `transport_options=TransportOptions(at_least_once=True)`: a call or cast
    /// that no queue takes — a topic or server nobody serves — fails at once with
    /// [`TransportError::Undeliverable`](crate::TransportError::Undeliverable)
    /// (as [`RpcError::Transport`]) instead of waiting out its timeout. See
    /// [`SendOptions::at_least_once`] for what each transport can tell. Off by default.
    pub fn with_at_least_once(mut self, at_least_once: bool) -> Self {
        self.at_least_once = at_least_once;
        self
    }

    /// Ask the server to heartbeat every `timeout / 2`; fail the call when neither a
    /// reply nor a heartbeat arrives within `timeout`.
    pub fn with_call_monitor_timeout(mut self, timeout: Duration) -> Self {
        self.call_monitor_timeout = Some(timeout);
        self
    }

    /// Whether the version cap allows sending `version` (the target's version if
    /// `None`). Always true without a cap.
    pub fn can_send_version(&self, version: Option<&str>) -> bool {
        let Some(cap) = &self.version_cap else {
            return true;
        };
        let version = version.or(self.target.version.as_deref()).unwrap_or("1.0");
        version_is_compatible(cap, version)
    }

    fn check_version(&self) -> Result<(), RpcError> {
        let Some(version) = &self.target.version else {
            return Ok(());
        };
        if version::parse(version).is_none() {
            return Err(RpcError::InvalidVersion(version.clone()));
        }
        if let Some(cap) = &self.version_cap
            && !version_is_compatible(cap, version)
        {
            return Err(RpcError::VersionCap {
                version: version.clone(),
                cap: cap.clone(),
            });
        }
        Ok(())
    }

    fn message<A: Serialize + ?Sized>(
        &self,
        context: &Context,
        method: &str,
        args: &A,
    ) -> Result<(Message, CodecKind, String), RpcError> {
        self.check_version()?;
        let codec = self.transport.codec();
        let body = codec.encode(args)?;
        let mut context = context.clone();
        let trace_id = match context.get(TRACE_ID).and_then(|v| v.as_str()) {
            Some(id) => id.to_owned(),
            None => {
                let id = ids::hex_id();
                context.insert(TRACE_ID, id.clone());
                id
            }
        };
        let mut meta = RequestMeta::new(method);
        meta.namespace = self.target.namespace.clone();
        meta.version = self.target.version.clone();
        let message = Message::new(body)
            .with_context(context)
            .with_meta(Meta::Request(meta))
            .with_codec(codec);
        Ok((message, codec, trace_id))
    }

    /// Calls `method` and waits for its result.
    ///
    /// # Errors
    ///
    /// See [`RpcError`]: invalid target or version, version cap, codec, transport,
    /// timeout, monitor timeout, remote error, lost reply.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the call: the request may still be processed, and
    /// its reply is discarded.
    pub async fn call<A, R>(&self, context: &Context, method: &str, args: &A) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.target.validate_for_call()?;
        let (message, codec, trace_id) = self.message(context, method, args)?;
        let span = tracing::info_span!(
            "rpc.call",
            method,
            target = %self.target,
            trace_id = %trace_id,
        );
        self.call_inner(message, codec, method)
            .instrument(span)
            .await
    }

    fn send_options(&self, timeout: Duration) -> SendOptions {
        SendOptions {
            timeout: Some(timeout),
            call_monitor_timeout: self.call_monitor_timeout,
            retry: self.retry,
            at_least_once: self.at_least_once,
            ..SendOptions::default()
        }
    }

    async fn call_inner<R: DeserializeOwned>(
        &self,
        message: Message,
        codec: CodecKind,
        method: &str,
    ) -> Result<R, RpcError> {
        let mut waiting = Waiting::new(self, method);
        let options = self.send_options(waiting.timeout);
        let mut replies = until(
            waiting.deadline,
            self.transport.call(&self.target, message, &options),
        )
        .await
        .map_err(|Elapsed| waiting.timed_out())?
        .map_err(|e| waiting.send_failed(e))?;
        loop {
            let event = until(waiting.wake_at(), replies.recv()).await;
            let event = match event {
                Ok(Some(event)) => Ok(event),
                Ok(None) => Err(RecvError::Disconnected),
                Err(Elapsed) => Err(RecvError::Timeout),
            };
            if let Some(done) = waiting.on(event) {
                return done.and_then(|body| Ok(codec.decode(&body)?));
            }
        }
    }

    /// [`call`](RpcClient::call), blocking the calling thread. It waits on the reply
    /// channel itself (spinning briefly, then parking), without the timer thread.
    pub fn call_blocking<A, R>(
        &self,
        context: &Context,
        method: &str,
        args: &A,
    ) -> Result<R, RpcError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.target.validate_for_call()?;
        let (message, codec, trace_id) = self.message(context, method, args)?;
        let span =
            tracing::info_span!("rpc.call", method, target = %self.target, trace_id = %trace_id);
        let _enter = span.enter();
        let mut waiting = Waiting::new(self, method);
        let options = self.send_options(waiting.timeout);
        let mut replies = block_on(until(
            waiting.deadline,
            self.transport.call(&self.target, message, &options),
        ))
        .map_err(|Elapsed| waiting.timed_out())?
        .map_err(|e| waiting.send_failed(e))?;
        loop {
            let event = replies.recv_deadline(waiting.wake_at());
            if let Some(done) = waiting.on(event) {
                return done.and_then(|body| Ok(codec.decode(&body)?));
            }
        }
    }

    /// Pings the target's server: calls oslo's `oslo_rpc_server_ping`, which a server
    /// answers with `"pong"` when it runs with `rpc_ping_enabled` (ours:
    /// [`RpcDispatcherBuilder::rpc_ping_enabled`](super::RpcDispatcherBuilder::rpc_ping_enabled)).
    /// The call goes to the target's exchange, topic and server, in the null namespace
    /// at version `1.0` (where oslo's ping endpoint lives), whatever namespace and
    /// version this client calls; the timeout, retries and call-monitor timeout are
    /// this client's. Returns what the server answered (`"pong"` from oslo and from
    /// us).
    ///
    /// # Errors
    ///
    /// As [`call`](RpcClient::call); a server without ping answers with a
    /// [`Remote`](RpcError::Remote) `NoSuchMethod`
    /// ([`NO_SUCH_METHOD`](super::NO_SUCH_METHOD)), and a
    /// [`Timeout`](RpcError::Timeout) means nobody answered.
    ///
    /// # Cancel safety
    ///
    /// As [`call`](RpcClient::call).
    pub async fn ping(&self, context: &Context) -> Result<String, RpcError> {
        self.ping_client()
            .call(context, PING_METHOD, &NoArgs {})
            .await
    }

    /// [`ping`](RpcClient::ping), blocking the calling thread.
    pub fn ping_blocking(&self, context: &Context) -> Result<String, RpcError> {
        self.ping_client()
            .call_blocking(context, PING_METHOD, &NoArgs {})
    }

    fn ping_client(&self) -> RpcClient {
        let mut client = self.clone();
        client.target.namespace = None;
        client.target.version = None;
        client
    }

    /// Casts `method`: returns once the transport took the message.
    ///
    /// # Errors
    ///
    /// Invalid target or version, version cap, codec, transport.
    pub async fn cast<A>(&self, context: &Context, method: &str, args: &A) -> Result<(), RpcError>
    where
        A: Serialize + ?Sized,
    {
        self.target.validate_for_send()?;
        let (message, _, trace_id) = self.message(context, method, args)?;
        let span = tracing::info_span!(
            "rpc.cast",
            method,
            target = %self.target,
            fanout = self.target.fanout,
            trace_id = %trace_id,
        );
        let options = SendOptions {
            timeout: self.timeout,
            call_monitor_timeout: None,
            retry: self.retry,
            at_least_once: self.at_least_once,
            ..SendOptions::default()
        };
        self.transport
            .cast(&self.target, message, &options)
            .instrument(span)
            .await?;
        Ok(())
    }

    /// [`cast`](RpcClient::cast), blocking the calling thread.
    pub fn cast_blocking<A>(
        &self,
        context: &Context,
        method: &str,
        args: &A,
    ) -> Result<(), RpcError>
    where
        A: Serialize + ?Sized,
    {
        block_on(self.cast(context, method, args))
    }
}
