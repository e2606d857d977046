//! Publishing: one connection and channel per transport, in confirm mode, reconnected
//! on failure, with the exchanges (and notification queues) declared once per channel.
//!
//! A publish returns once the broker has confirmed the message: acked and, for a
//! mandatory message, not returned (a queue took it). A message the broker returns (no
//! queue is bound to its routing key), nacks, or loses with its channel is published
//! again with backoff (100 ms doubling to 5 s) until its [`Budget`] runs out: its
//! retries and its deadline. A nacked message is published again on a new connection
//! and channel, as one whose channel died: RabbitMQ 3.10 nacks every publish to a
//! quorum queue on a channel whose first publish there found the node of the queue's
//! recorded leader down (a node killed in a cluster), for as long as the channel lives. Then the publish fails, a returned message with
//! [`TransportError::Undeliverable`], anything else with the last error
//! ([`TransportError::TimedOut`] if no attempt ended before the deadline). Errors no retry
//! can fix ([`TransportError::is_permanent`]) fail at once. Receivers drop the rare
//! duplicate a retry makes by `_unique_id` (what oslo's duplicate filter is for).
//!
//! Concurrent publishes share the channel and are in flight together, each waiting
//! for its own confirm (at most [`MAX_IN_FLIGHT`]; beyond that, publishing waits).
//! Publishing runs in the caller's context (a blocking thread's `block_on` or any async
//! runtime): only connecting runs on the transport's runtime, so a publish on a live
//! channel costs no hand-off between threads. [`Publisher::publish_detached`] (replies)
//! hands the message to lapin in the caller's context and finishes on the runtime.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{Channel, Confirmation, Connection};
use messaging_core::TransportError;
use messaging_core::dispatch::poll_once;
use messaging_core::timer;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::compression;
use super::connection::{self, Backoff, classify, connection_error};
use super::declare::{Exchange, Queue};
use super::options::Options;

/// Messages published and not yet confirmed by the broker, at most.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// How long a message may keep being retried when its sender set no deadline.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// The longest deadline a send can have (a longer timeout is taken as this one).
const LONGEST_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Something to declare before publishing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Declare {
    Exchange(Exchange),
    /// A queue bound to an exchange with a key: the notification publisher's default
    /// queue, so messages persist before a consumer.
    Queue {
        queue: Queue,
        exchange: Exchange,
        key: ShortString,
    },
}

/// One message to publish.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) exchange: ShortString,
    pub(crate) routing_key: ShortString,
    pub(crate) body: Vec<u8>,
    /// When the message expires: each attempt sends the time left as the AMQP
    /// `expiration`.
    pub(crate) expires: Option<Instant>,
    /// Whether the broker must return the message when no queue takes it (it is then
    /// retried, and finally [`TransportError::Undeliverable`]).
    pub(crate) mandatory: bool,
    /// Whether a returned message fails at once with
    /// [`TransportError::Undeliverable`] instead of being retried within the budget
    /// (oslo's `at_least_once`).
    pub(crate) returned_is_final: bool,
    pub(crate) declare: Vec<Declare>,
}

/// How often and how long a message may be tried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Attempts after the first, at most (`None`: until the deadline).
    pub(crate) retries: Option<u32>,
    /// No attempt starts, and no confirm is awaited, past this.
    pub(crate) deadline: Instant,
}

impl Budget {
    /// At most `retries` retries (`None`: no limit) within `timeout` from now (60 s
    /// when `None`).
    pub(crate) fn new(retries: Option<u32>, timeout: Option<Duration>) -> Budget {
        let timeout = timeout.map_or(DEFAULT_DEADLINE, |t| t.min(LONGEST_DEADLINE));
        Budget {
            retries,
            deadline: Instant::now() + timeout,
        }
    }
}

/// How one attempt failed: the broker nacked the message (its channel is retired), or
/// anything else.
#[derive(Debug)]
enum Failure {
    Nacked,
    Other(TransportError),
}

impl From<TransportError> for Failure {
    fn from(error: TransportError) -> Self {
        Failure::Other(error)
    }
}

struct Session {
    _connection: Connection,
    channel: Channel,
    declared: Mutex<HashSet<Declare>>,
}

pub(crate) struct Publisher {
    options: Options,
    runtime: Handle,
    session: Arc<Mutex<Option<Arc<Session>>>>,
    /// One connection attempt at a time, held by the attempt itself (so a sender that
    /// stops waiting does not waste it). Holds how the last one failed (and when it
    /// ended), so that senders that waited for it share its failure instead of each
    /// trying again.
    connecting: Arc<tokio::sync::Mutex<Option<(Instant, TransportError)>>>,
    /// Whether the last connection attempt failed (and that was logged).
    failing: Arc<AtomicBool>,
    in_flight: Semaphore,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Publisher {
    /// A publisher connecting on `runtime`.
    pub(crate) fn new(options: Options, runtime: Handle) -> Self {
        Publisher {
            options,
            runtime,
            session: Arc::default(),
            connecting: Arc::default(),
            failing: Arc::default(),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Waits until no message published so far awaits its confirm.
    pub(crate) async fn settle(&self) {
        let _all = self.in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
    }

    /// Publishes `message` and waits until the broker took it (see the module docs),
    /// reconnecting and retrying within `budget`.
    pub(crate) async fn publish(
        &self,
        message: &Publish,
        budget: Budget,
    ) -> Result<(), TransportError> {
        let mut backoff = Backoff::new();
        let mut retries = 0u32;
        let mut last: Option<TransportError> = None;
        loop {
            if Instant::now() >= budget.deadline {
                // Nothing else seen: the broker does not answer.
                return Err(last.unwrap_or_else(|| {
                    TransportError::TimedOut(
                        "publishing: the deadline passed before the broker confirmed".to_owned(),
                    )
                }));
            }
            let error = match timer::timeout_at(budget.deadline, self.attempt(message)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) if error.is_permanent() => return Err(error),
                Ok(Err(error @ TransportError::Undeliverable(_))) if message.returned_is_final => {
                    return Err(error);
                }
                Ok(Err(error)) => error,
                Err(_) => continue,
            };
            if budget.retries.is_some_and(|r| retries >= r) {
                return Err(error);
            }
            retries += 1;
            // The last wait ends at the deadline: a caller gets its timeout then, not
            // an earlier error.
            let delay = backoff
                .next_delay()
                .min(budget.deadline.saturating_duration_since(Instant::now()));
            tracing::debug!(
                %error,
                retry = retries,
                retry_in = ?delay,
                exchange = %message.exchange,
                routing_key = %message.routing_key,
                "publish not confirmed; retrying"
            );
            last = Some(error);
            timer::sleep(delay).await;
        }
    }

    /// [`publish`](Publisher::publish) without waiting: on a live channel the message
    /// is handed to lapin before this returns; the confirm and any retries are awaited
    /// on the transport's runtime, and `done` gets the outcome.
    pub(crate) fn publish_detached(
        self: &Arc<Self>,
        message: Publish,
        budget: Budget,
        done: impl FnOnce(Result<(), TransportError>) + Send + 'static,
    ) {
        let this = self.clone();
        let publishing = async move { done(this.publish(&message, budget).await) };
        if let Err(unfinished) = poll_once(publishing) {
            self.runtime.spawn(unfinished);
        }
    }

    /// One attempt: publish on the current (or a new) channel and await the confirm. A
    /// channel that died on the way, or that the broker nacked the message on, is
    /// retired, so the next attempt reconnects: RabbitMQ (3.10) nacks every publish to
    /// a quorum queue on a channel whose first publish there found the node of the
    /// queue's recorded leader down (the channel keeps asking that node), so retrying
    /// on the same channel could never succeed; a new channel asks for the leader
    /// afresh. Publishes still awaiting their confirms on the old channel finish there;
    /// lapin closes it, and its connection, when the last of them lets go.
    async fn attempt(&self, message: &Publish) -> Result<(), TransportError> {
        let session = self.session().await?;
        let (result, retire) = match self.publish_on(&session, message).await {
            Ok(()) => (Ok(()), false),
            Err(Failure::Nacked) => (
                Err(connection_error(
                    "publishing",
                    "the broker could not take the message (nack)",
                )),
                true,
            ),
            Err(Failure::Other(error)) => (Err(error), !session.channel.status().connected()),
        };
        if retire {
            let mut current = lock(&self.session);
            if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                *current = None;
            }
        }
        result
    }

    async fn publish_on(&self, session: &Session, message: &Publish) -> Result<(), Failure> {
        for declare in &message.declare {
            if lock(&session.declared).contains(declare) {
                continue;
            }
            match declare {
                Declare::Exchange(exchange) => {
                    connection::declare_exchange(&session.channel, exchange).await?;
                }
                Declare::Queue {
                    queue,
                    exchange,
                    key,
                } => {
                    connection::declare_exchange(&session.channel, exchange).await?;
                    connection::declare_queue(&session.channel, queue, Some((&exchange.name, key)))
                        .await?;
                }
            }
            lock(&session.declared).insert(declare.clone());
        }
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| TransportError::Closed("the publisher"))?;
        let expiration = message
            .expires
            .map(|at| at.saturating_duration_since(Instant::now()));
        let mut properties = connection::properties(expiration);
        let compressed;
        let body = match self.options.compression {
            Some(kind) => {
                properties = compression::mark(properties, kind);
                compressed = compression::compress(&message.body);
                &compressed
            }
            None => &message.body,
        };
        let confirm = session
            .channel
            .basic_publish(
                message.exchange.clone(),
                message.routing_key.clone(),
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .map_err(|e| classify("publishing", e))?;
        match confirm.await {
            Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Ack(Some(_returned))) => Err(TransportError::Undeliverable(
                if message.exchange.as_str().is_empty() {
                    format!("no queue `{}`", message.routing_key)
                } else {
                    format!(
                        "no queue is bound to `{}` on exchange `{}`",
                        message.routing_key, message.exchange
                    )
                },
            )
            .into()),
            Ok(Confirmation::Nack(_)) => Err(Failure::Nacked),
            Err(error) => Err(classify("waiting for the broker's confirm", error).into()),
        }
    }

    /// The current session, or a new one: connected outside the session lock, one
    /// attempt at a time, and a failure shared with every sender that waited for it.
    async fn session(&self) -> Result<Arc<Session>, TransportError> {
        let live = || {
            lock(&self.session)
                .as_ref()
                .filter(|s| s.channel.status().connected())
                .cloned()
        };
        if let Some(session) = live() {
            return Ok(session);
        }
        let asked = Instant::now();
        let mut last_failure = self.connecting.clone().lock_owned().await;
        if let Some(session) = live() {
            return Ok(session);
        }
        if let Some((ended, error)) = last_failure.as_ref()
            && *ended >= asked
        {
            return Err(error.clone());
        }
        // Connecting needs the transport's runtime (lapin spawns its I/O there). The
        // attempt finishes, and keeps its session, even if this sender stops waiting.
        let (options, slot, failing) = (
            self.options.clone(),
            self.session.clone(),
            self.failing.clone(),
        );
        self.runtime
            .spawn(async move {
                let connected = async {
                    let connection = connection::connect(&options, "publish").await?;
                    let channel = connection
                        .create_channel()
                        .await
                        .map_err(|e| classify("opening a channel", e))?;
                    channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await
                        .map_err(|e| classify("enabling publisher confirms", e))?;
                    Ok::<_, TransportError>(Arc::new(Session {
                        _connection: connection,
                        channel,
                        declared: Mutex::new(HashSet::new()),
                    }))
                }
                .await;
                match connected {
                    Ok(session) => {
                        *last_failure = None;
                        if failing.swap(false, Ordering::Relaxed) {
                            tracing::info!("connected to RabbitMQ again for publishing");
                        }
                        *lock(&slot) = Some(session.clone());
                        Ok(session)
                    }
                    Err(error) => {
                        // A refusal goes back to the sender, which reports it; an
                        // outage is logged once, not once per attempt.
                        if !error.is_permanent() && !failing.swap(true, Ordering::Relaxed) {
                            tracing::warn!(%error, "cannot publish to RabbitMQ; retrying with backoff");
                        }
                        *last_failure = Some((Instant::now(), error.clone()));
                        Err(error)
                    }
                }
            })
            .await
            .map_err(|e| TransportError::other(format!("the connecting task failed: {e}")))?
    }
}
