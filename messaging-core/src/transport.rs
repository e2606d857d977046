//! The transport side of the contract: [`Transport`] sends and creates listeners,
//! a [`Listener`] hands out [`IncomingMessage`]s, and each incoming message can be
//! acknowledged, requeued and replied to.
//!
//! One listener contract serves all three executor shapes: a blocking loop polls with a
//! timeout in the caller's thread ([`Listener::poll`]), a thread pool's poller does the
//! same, and an async loop awaits without a thread per message
//! ([`Listener::poll_async`]). A transport built on an async client bridges to this
//! contract once, inside the transport.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::codec::CodecKind;
use crate::error::{InvalidTarget, Joined, TransportError};
use crate::message::{Message, NotificationFormat, Priority, RemoteError};
use crate::reply::{Replier, ReplyEvent, ReplyReceiver};
use crate::target::Target;
use crate::url::TransportUrl;

// ===== Subscription =====

/// What a server consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subscription {
    /// An RPC server: messages for the target's topic (shared with the other servers of
    /// the topic), for the target's server, and fanout casts to the topic.
    Rpc(Target),
    /// A notification listener: `<topic>.<priority>` for every target and priority. With
    /// a pool, listeners of the same pool share one copy of each notification; every
    /// pool (and the pool-less listeners together) gets its own copy.
    Notifications {
        /// Topics (and exchanges) to consume.
        targets: Vec<Target>,
        /// Priorities to consume.
        priorities: Vec<Priority>,
        /// The pool, if any.
        pool: Option<String>,
    },
}

impl Subscription {
    /// Checks oslo's target rules for the subscription, and the pool's name by the
    /// rules of [`Target::validate_names`] (it becomes a queue or consumer name).
    pub fn validate(&self) -> Result<(), InvalidTarget> {
        match self {
            Subscription::Rpc(target) => target.validate_for_listen(),
            Subscription::Notifications { targets, pool, .. } => {
                targets
                    .iter()
                    .try_for_each(Target::validate_for_notification_listen)?;
                if let Some(pool) = pool
                    && let Err(problem) = crate::target::check_name("pool", pool)
                {
                    let target = targets.first().cloned().unwrap_or_default();
                    return Err(InvalidTarget::new(problem, &target));
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subscription::Rpc(target) => write!(f, "{target}"),
            Subscription::Notifications {
                targets,
                priorities,
                pool,
            } => {
                write!(
                    f,
                    "notifications [{}] priorities [{}]",
                    Joined(targets),
                    Joined(priorities)
                )?;
                if let Some(pool) = pool {
                    write!(f, " pool {pool}")?;
                }
                Ok(())
            }
        }
    }
}

// ===== options =====

/// How a listener hands out messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// The most messages one poll returns (at least 1; RPC servers use 1).
    pub batch_size: usize,
    /// Once a batch has its first message, how long a poll may keep waiting to fill it.
    /// `None`: return what is available at once.
    pub batch_timeout: Option<Duration>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            batch_size: 1,
            batch_timeout: None,
        }
    }
}

impl ListenOptions {
    /// Options for batches of up to `batch_size` messages, waiting at most
    /// `batch_timeout` to fill one.
    pub fn batch(batch_size: usize, batch_timeout: Option<Duration>) -> Self {
        ListenOptions {
            batch_size: batch_size.max(1),
            batch_timeout,
        }
    }
}

/// Per-send options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// How long the caller will wait for a reply; brokers may use it to expire the
    /// request. For a cast or a notification ([`Transport::notify_with`]): how long
    /// the transport may take to have the message taken, connection retries included
    /// (a transport that retries gives up then, with the last failure it saw, or
    /// [`TransportError::TimedOut`] if it saw none).
    pub timeout: Option<Duration>,
    /// For a call: ask the server to heartbeat every half of this while the handler
    /// runs (oslo's `call_monitor_timeout`, sent as `_timeout`).
    pub call_monitor_timeout: Option<Duration>,
    /// Connection retries: `None` forever (within `timeout`), `Some(0)` none,
    /// `Some(n)` at most `n` (oslo's `retry`: `-1`, `0`, `n`). A transport that
    /// cannot fail in a way a retry fixes (`memory://`) has nothing to retry.
    pub retry: Option<u32>,
    /// oslo's `TransportOptions(at_least_once=True)`: a call or cast that no queue
    /// takes fails at once with [`TransportError::Undeliverable`] instead of being
    /// retried until its timeout. RabbitMQ knows at once (the broker returns the
    /// mandatory message); on `memory://` a message always has a queue (one is made for
    /// a topic nobody serves yet, as in oslo's fake driver) and on `nats://` a request
    /// to nobody is not seen, so there it changes nothing.
    pub at_least_once: bool,
    /// For a notification: oslo's message format 1.0 (no envelope, the `messaging`
    /// driver) or 2.0 (`messagingv2`, the default). Only a transport that speaks
    /// oslo's wire (RabbitMQ) writes them differently.
    pub notification_format: NotificationFormat,
}

impl SendOptions {
    /// Options with a reply timeout.
    pub fn with_timeout(timeout: Option<Duration>) -> Self {
        SendOptions {
            timeout,
            ..SendOptions::default()
        }
    }

    /// Returns the options with a call-monitor timeout.
    pub fn call_monitor_timeout(mut self, timeout: Duration) -> Self {
        self.call_monitor_timeout = Some(timeout);
        self
    }

    /// Returns the options with a retry limit.
    pub fn retry(mut self, retry: u32) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Returns the options with a notification format.
    pub fn notification_format(mut self, format: NotificationFormat) -> Self {
        self.notification_format = format;
        self
    }

    /// Returns the options with [`at_least_once`](SendOptions::at_least_once) set.
    pub fn at_least_once(mut self, at_least_once: bool) -> Self {
        self.at_least_once = at_least_once;
        self
    }
}

// ===== Transport =====

/// A message transport: the in-memory bus, RabbitMQ, NATS, or a test double.
///
/// Sending is async; the futures must not depend on a particular async runtime being
/// current, so a blocking caller may drive them with
/// [`block_on`](crate::dispatch::block_on). Transports are shared (`Arc<dyn Transport>`)
/// between clients and servers.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The transport's name, e.g. `memory`.
    fn name(&self) -> &'static str;

    /// The URL the transport was opened with (passwords redacted when displayed).
    fn url(&self) -> &TransportUrl;

    /// The codec senders on this transport encode bodies with (receivers decode with
    /// each message's own codec).
    fn codec(&self) -> CodecKind;

    /// Sends a one-way message (a cast; a fanout cast when `target.fanout`).
    /// Returns once the transport has taken the message.
    async fn cast(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError>;

    /// Sends a request that expects a reply; the returned receiver yields heartbeats and
    /// then the reply. The transport does not time the call out: the caller waits on the
    /// receiver with its own deadline.
    async fn call(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<ReplyReceiver, TransportError>;

    /// Publishes a notification to `<topic>.<priority>`; stored until a listener takes it.
    async fn notify(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
    ) -> Result<(), TransportError>;

    /// [`notify`](Transport::notify) within `options`: a transport that retries a
    /// publish (RabbitMQ, NATS) gives up at their `timeout` (connection retries
    /// included) and after their `retry` retries, with the last failure it saw, or
    /// [`TransportError::TimedOut`] if it saw none; one that speaks oslo's wire writes
    /// their `notification_format`. The default ignores the options.
    async fn notify_with(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        let _ = options;
        self.notify(target, priority, message).await
    }

    /// Creates a listener for a subscription. Called by a server's `start()`.
    fn listen(
        &self,
        subscription: &Subscription,
        options: &ListenOptions,
    ) -> Result<Box<dyn Listener>, TransportError>;
}

// ===== Listener =====

/// The outcome of one poll.
#[derive(Debug)]
pub enum Polled {
    /// Between 1 and `batch_size` messages, in delivery order.
    Messages(Vec<IncomingMessage>),
    /// The timeout passed with nothing to deliver.
    Idle,
    /// The listener was stopped and everything it had taken has been handed out:
    /// no poll will return a message again.
    Closed,
}

/// Hands out the messages of one subscription. Created by [`Transport::listen`], driven
/// by one executor, stopped and cleaned up by the server.
///
/// Contract:
/// * a message returned by a poll is the caller's: it must be processed (the executor
///   drains everything it polled before `wait()` returns);
/// * after [`stop`](Listener::stop) returns, the listener takes nothing new from the
///   transport; polls hand out whatever it had already committed to deliver and then
///   return [`Polled::Closed`] at once, waking any poll that is blocked;
/// * [`cleanup`](Listener::cleanup) releases the listener's resources and gives back to
///   the broker anything it holds but never handed out;
/// * nothing sleeps to poll: a blocked poll is woken by the arrival of a message or by
///   `stop()`.
#[async_trait]
pub trait Listener: Send + Sync + fmt::Debug + 'static {
    /// Blocks the calling thread until at least one message is available, the timeout
    /// passes (`None`: no limit) or the listener is stopped.
    fn poll(&self, timeout: Option<Duration>) -> Result<Polled, TransportError>;

    /// Waits asynchronously until at least one message is available or the listener is
    /// stopped. Never returns [`Polled::Idle`].
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: a message is taken only in the poll that
    /// completes the future, so dropping it loses nothing.
    async fn poll_async(&self) -> Result<Polled, TransportError>;

    /// Stops taking messages; see the trait docs. Idempotent, non-blocking, callable
    /// from any thread.
    fn stop(&self);

    /// Releases the listener. Called once, after the executor has drained.
    fn cleanup(&self);
}

// ===== deadlines =====

/// How much earlier than its sender's remaining wait a received request's deadline
/// falls ([`caller_deadline`]): the time the request may have spent between its
/// sender and the server, which no clock they both share can measure.
pub const TRANSIT_ALLOWANCE: Duration = Duration::from_millis(25);

/// When the sender of a request that `arrived` with `time_left` to wait (what it said
/// when it sent the request: remaining time travels across the wire, clock readings
/// do not) stops waiting: `time_left` after arrival, less [`TRANSIT_ALLOWANCE`] (at
/// most half of `time_left`, so that short timeouts keep most of theirs). `None` if no
/// `Instant` can represent it. Transports give the result to
/// [`IncomingMessage::with_deadline`].
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use messaging_core::{TRANSIT_ALLOWANCE, caller_deadline};
///
/// let now = Instant::now();
/// let left = Duration::from_secs(30);
/// assert_eq!(caller_deadline(now, left), Some(now + left - TRANSIT_ALLOWANCE));
/// assert_eq!(caller_deadline(now, Duration::from_millis(20)), Some(now + Duration::from_millis(10)));
/// assert_eq!(caller_deadline(now, Duration::ZERO), Some(now));
/// assert_eq!(caller_deadline(now, Duration::MAX), None);
/// ```
pub fn caller_deadline(arrived: Instant, time_left: Duration) -> Option<Instant> {
    arrived.checked_add(time_left - TRANSIT_ALLOWANCE.min(time_left / 2))
}

// ===== IncomingMessage =====

/// How a transport settles a message it delivered. Consumed by use, so a message can
/// never be acknowledged twice.
pub trait Acknowledger: Send + fmt::Debug + 'static {
    /// The message was processed (or, for RPC, accepted): the broker may forget it.
    fn acknowledge(self: Box<Self>) -> Result<(), TransportError>;
    /// Puts the message back at the end of its queue for another delivery.
    fn requeue(self: Box<Self>, message: Message) -> Result<(), TransportError>;
}

/// A message delivered to a server, with the means to settle it and, for a call, to
/// reply to the caller.
///
/// Dropping it without [`acknowledge`](IncomingMessage::acknowledge) or
/// [`requeue`](IncomingMessage::requeue) leaves its fate to the transport: the
/// in-memory transport treats it as acknowledged (it was taken off the queue), a broker
/// transport returns unacknowledged messages to their queue when the listener is
/// cleaned up. `Debug` never shows the body.
///
/// # Examples
///
/// A message as a test would build it (see `messaging-testkit` for recording doubles):
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use messaging_core::{IncomingMessage, Message};
/// use messaging_core::reply::{reply_channel, ReplyEvent};
///
/// let (tx, mut rx) = reply_channel();
/// let mut incoming = IncomingMessage::new(Message::new("ping")).with_replier(tx);
/// assert!(incoming.is_call());
/// incoming.reply(Ok(Bytes::from_static(b"pong")))?;
/// assert!(incoming.reply(Ok(Bytes::new())).is_err()); // at most one reply
/// assert_eq!(
///     rx.recv_timeout(Some(Duration::from_secs(1))),
///     Ok(ReplyEvent::Reply(Ok(Bytes::from_static(b"pong"))))
/// );
/// # Ok::<(), messaging_core::TransportError>(())
/// ```
pub struct IncomingMessage {
    message: Message,
    acknowledger: Option<Box<dyn Acknowledger>>,
    replier: Option<Arc<dyn Replier>>,
    replied: bool,
    client_timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl IncomingMessage {
    /// A message with no acknowledger (acknowledge and requeue succeed and do
    /// nothing) and no replier (a cast).
    pub fn new(message: Message) -> Self {
        IncomingMessage {
            message,
            acknowledger: None,
            replier: None,
            replied: false,
            client_timeout: None,
            deadline: None,
        }
    }

    /// Attaches the transport's acknowledger.
    pub fn with_acknowledger(mut self, acknowledger: impl Acknowledger) -> Self {
        self.acknowledger = Some(Box::new(acknowledger));
        self
    }

    /// Makes the message a call whose replies go to `replier`.
    pub fn with_replier(mut self, replier: impl Replier) -> Self {
        self.replier = Some(Arc::new(replier));
        self
    }

    /// Sets the caller's call-monitor timeout (oslo's `_timeout`).
    pub fn with_client_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.client_timeout = timeout;
        self
    }

    /// Sets when the sender stops waiting for this message to be handled (for a call:
    /// its reply timeout, carried across the wire as remaining time). Transports set it
    /// from what the sender said; the RPC dispatcher drops a request whose deadline has
    /// passed before its handler starts, since nobody waits for the reply any more.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// When the sender stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the sender's deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, mutably (a dispatcher may move the body out before replying).
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.message
    }

    /// Whether the sender waits for a reply.
    pub fn is_call(&self) -> bool {
        self.replier.is_some()
    }

    /// The caller's call-monitor timeout, if it asked for heartbeats.
    pub fn client_timeout(&self) -> Option<Duration> {
        self.client_timeout
    }

    /// Acknowledges the message. Later calls (and a later requeue) do nothing.
    pub fn acknowledge(&mut self) -> Result<(), TransportError> {
        match self.acknowledger.take() {
            Some(acknowledger) => acknowledger.acknowledge(),
            None => Ok(()),
        }
    }

    /// Whether [`requeue`](IncomingMessage::requeue) can give the message back: false
    /// once it was acknowledged, and for messages of transports without
    /// acknowledgements (calls and casts on core NATS are at-most-once: a message taken
    /// is a message delivered).
    pub fn can_requeue(&self) -> bool {
        self.acknowledger.is_some()
    }

    /// Returns the message to the end of its queue. Does nothing if it was already
    /// acknowledged, or cannot be given back ([`can_requeue`](IncomingMessage::can_requeue)).
    pub fn requeue(mut self) -> Result<(), TransportError> {
        match self.acknowledger.take() {
            Some(acknowledger) => acknowledger.requeue(std::mem::take(&mut self.message)),
            None => Ok(()),
        }
    }

    /// Sends the reply to the caller: the encoded result or a remote error. At most
    /// once: a second reply, or a reply to a cast, is an error — except after
    /// [`TransportError::MessageTooLarge`], which means nothing was sent, so that a
    /// smaller reply (an error saying so) can follow.
    pub fn reply(&mut self, result: Result<Bytes, RemoteError>) -> Result<(), TransportError> {
        let Some(replier) = &self.replier else {
            return Err(TransportError::Reply("the message is a cast".to_owned()));
        };
        if self.replied {
            return Err(TransportError::Reply("already replied".to_owned()));
        }
        self.replied = true;
        let sent = replier.send(ReplyEvent::Reply(result));
        if let Err(TransportError::MessageTooLarge { .. }) = sent {
            // Refused before anything went out: a smaller reply may still follow.
            self.replied = false;
        }
        sent
    }

    /// Tells the caller the call is still being worked on.
    pub fn heartbeat(&self) -> Result<(), TransportError> {
        match &self.replier {
            Some(replier) if !self.replied => replier.send(ReplyEvent::Heartbeat),
            Some(_) => Ok(()),
            None => Err(TransportError::Reply("the message is a cast".to_owned())),
        }
    }

    /// A handle for sending heartbeats from another thread while the call runs.
    pub fn replier(&self) -> Option<Arc<dyn Replier>> {
        self.replier.clone()
    }
}

/// The pieces of an [`IncomingMessage`], for transports that wrap another transport's
/// messages (a test double injecting faults, a metrics layer) and put them back together
/// with [`IncomingMessage::from_parts`].
#[derive(Debug)]
#[non_exhaustive]
pub struct IncomingParts {
    /// The message.
    pub message: Message,
    /// How it is settled, if the transport needs to know.
    pub acknowledger: Option<Box<dyn Acknowledger>>,
    /// Where replies go, for a call.
    pub replier: Option<Arc<dyn Replier>>,
    /// The caller's call-monitor timeout.
    pub client_timeout: Option<Duration>,
    /// When the sender stops waiting.
    pub deadline: Option<Instant>,
}

impl IncomingMessage {
    /// Takes the message apart (a reply already sent is forgotten: only unsettled,
    /// unreplied messages should be taken apart).
    pub fn into_parts(mut self) -> IncomingParts {
        IncomingParts {
            message: std::mem::take(&mut self.message),
            acknowledger: self.acknowledger.take(),
            replier: self.replier.take(),
            client_timeout: self.client_timeout,
            deadline: self.deadline,
        }
    }

    /// Puts a message back together.
    pub fn from_parts(parts: IncomingParts) -> Self {
        IncomingMessage {
            message: parts.message,
            acknowledger: parts.acknowledger,
            replier: parts.replier,
            replied: false,
            client_timeout: parts.client_timeout,
            deadline: parts.deadline,
        }
    }
}

impl fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("message", &self.message)
            .field("is_call", &self.is_call())
            .field("settled", &self.acknowledger.is_none())
            .finish()
    }
}
