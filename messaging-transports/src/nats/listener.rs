//! NATS listeners. RPC: core subscriptions (a queue group for the topic, the server's
//! own subject, the fanout subject), at-most-once; after `stop()` the subscriptions are
//! removed and what was already buffered is still handed out (core NATS cannot take a
//! message back); what the client had queued beyond the buffer is dropped, with one
//! warning saying how many. Notifications: JetStream durable pull consumers, pulled
//! one request at a time (up to `prefetch` notifications, waiting up to
//! [`PULL_EXPIRES`]; again at once after a reconnection), acknowledged after dispatch
//! or `Nak`ed for requeue, and told to JetStream as in progress every third of the
//! consumers' acknowledgement wait while the listener holds them ([`InProgress`]). On
//! `stop()` each pull's inbox is drained (unsubscribed, and what the server had already
//! sent received) and everything not handed out is `Nak`ed, so it is redelivered at
//! once; `cleanup()` returns once the server has seen all that, so nothing published
//! afterwards goes to a stopped listener. Only a notification the server sends within
//! the round trip of the unsubscription can still be lost on the way and come back
//! after the acknowledgement wait (`notification_ack_wait`, 30 s by default), as it
//! does when a listener dies or its connection drops with notifications on the way.
//!
//! A request carries its caller's remaining wait; on arrival it becomes the message's
//! deadline ([`IncomingMessage::with_deadline`]), less [`TRANSIT_ALLOWANCE`](messaging_core::TRANSIT_ALLOWANCE) for the
//! time it spent on the way, so the dispatcher drops a request still waiting in line
//! when its caller has given up. A message larger than the transport's limit (`max_message_size`, at most the server's `max_payload`)
//! is refused before any decoding, with one warning naming its size, the limit and its
//! subject: a request or reply is dropped, a notification terminated (never
//! redelivered).
//!
//! An RPC listener's buffer holds at most `prefetch` requests; when it is full the
//! consumer task keeps reading its subscriptions, holds at most `max_pending` requests
//! per subscription waiting for room, and drops what arrives beyond them, counted and
//! reported (see the module docs of [`crate::nats`]). Stopping waits for the server at
//! most [`STOP_WAIT`], and not at all while the client is disconnected; settling a
//! notification never blocks (a `Nak`, ack or termination the client cannot queue at
//! once is queued by a task on the runtime).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::StatusCode;
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures_lite::{Stream, StreamExt};
use messaging_core::dispatch::poll_once;
use messaging_core::reply::{Replier, ReplyEvent};
use messaging_core::{
    Acknowledger, IncomingMessage, ListenOptions, Listener, Message, Polled, TransportError,
    caller_deadline,
};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::{Losses, STOP_WAIT, frame, message_limit};
use crate::buffer::{Buffer, OnStop};
use crate::consumer::{ConsumerTask, Phase, cleaned_up, stopped};

/// What the consumer task delivers.
pub(crate) enum Item {
    /// A request; `reply` is the caller's reply subject for a call.
    Rpc {
        message: Message,
        reply: Option<String>,
        monitor: Option<Duration>,
        /// When the caller stops waiting (set on arrival from its remaining wait).
        deadline: Option<Instant>,
    },
    /// A notification with its JetStream message, to acknowledge.
    Notification {
        message: Message,
        delivery: Box<jetstream::Message>,
        /// Keeps it told as in progress until it is settled or dropped.
        held: Option<Held>,
    },
}

struct Shared {
    buffer: Buffer<Item>,
    client: async_nats::Client,
    runtime: Handle,
    name: String,
    max_message_size: Option<usize>,
    /// The most requests one subscription holds waiting for room in the buffer.
    max_pending: usize,
    /// Where drops and refusals are counted.
    losses: Arc<Losses>,
    /// The notifications this listener holds, told to JetStream as in progress.
    in_progress: Arc<InProgress>,
}

/// What a listener shares with its transport.
pub(crate) struct FromTransport {
    /// The client's runtime: acknowledgements, replies.
    pub(crate) runtime: Handle,
    /// Where the consumer task runs.
    pub(crate) consumer_runtime: Handle,
    /// Bumped each time the client (re)connects.
    pub(crate) connected: watch::Receiver<u64>,
    /// Where drops and refusals are counted.
    pub(crate) losses: Arc<Losses>,
}

// ===== in progress =====

/// The notifications a listener holds (pulled and buffered, or handed out and not yet
/// settled), by their acknowledgement subjects. Every third of the consumers'
/// acknowledgement wait, each is told to JetStream as in progress (`+WPI`), which
/// restarts its wait: none is redelivered while the listener has it, however long it
/// waits in the buffer or its handler runs, and one the listener loses (its connection
/// dropped with the notification on the way, the process died) is redelivered after
/// the wait.
#[derive(Debug, Default)]
pub(crate) struct InProgress {
    next: std::sync::atomic::AtomicU64,
    subjects: std::sync::Mutex<std::collections::HashMap<u64, String>>,
}

impl InProgress {
    /// Holds the delivery whose acknowledgement subject is `subject` until the
    /// returned [`Held`] is dropped.
    fn hold(self: &Arc<Self>, subject: String) -> Held {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(key, subject);
        Held {
            registry: self.clone(),
            key,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, String>> {
        self.subjects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells JetStream, every `interval`, that the held notifications are in
    /// progress, for as long as the registry lives (the listener, or a notification it
    /// handed out). A tick's publishes wait at most `interval` for room in the
    /// client's outgoing queue: while the server is away there is nobody to tell.
    async fn tell(
        registry: std::sync::Weak<InProgress>,
        client: async_nats::Client,
        interval: Duration,
    ) {
        loop {
            tokio::time::sleep(interval).await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let subjects: Vec<String> = registry.lock().values().cloned().collect();
            drop(registry);
            let _ = tokio::time::timeout(interval, async {
                for subject in subjects {
                    let _ = client.publish(subject, Bytes::from_static(b"+WPI")).await;
                }
            })
            .await;
        }
    }
}

/// A notification's place in its listener's [`InProgress`]: removed when dropped
/// (after its acknowledgement, `Nak` or termination was sent).
#[derive(Debug)]
pub(crate) struct Held {
    registry: Arc<InProgress>,
    key: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

// ===== the listener =====

/// What bounds a listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The most notifications pulled at once (the consumers' `max_ack_pending`).
    pub(crate) prefetch: usize,
    /// The URL's `max_message_size`, if any.
    pub(crate) max_message_size: Option<usize>,
    /// The URL's `max_pending`: the most requests one RPC subscription holds waiting
    /// for room in the buffer.
    pub(crate) max_pending: usize,
    /// The notification consumers' acknowledgement wait.
    pub(crate) ack_wait: Duration,
}

impl Shared {
    /// Whether the message is larger than the listener accepts; if so, says so once
    /// (size, limit, subject; never the payload) and `what` happens to it.
    fn too_large(&self, message: &async_nats::Message, what: &str) -> bool {
        let limit = message_limit(self.max_message_size, &self.client);
        let size = message.payload.len();
        if size <= limit {
            return false;
        }
        tracing::warn!(
            listener = %self.name,
            size,
            limit,
            subject = %message.subject,
            "{what} larger than max_message_size"
        );
        self.losses.rejected_one();
        true
    }

    fn incoming(&self, item: Item) -> IncomingMessage {
        match item {
            Item::Rpc {
                message,
                reply,
                monitor,
                deadline,
            } => {
                let codec = message.codec;
                let incoming = IncomingMessage::new(message)
                    .with_client_timeout(monitor)
                    .with_deadline(deadline);
                match reply {
                    Some(subject) => incoming.with_replier(NatsReplier {
                        client: self.client.clone(),
                        runtime: self.runtime.clone(),
                        subject,
                        codec,
                        max_message_size: self.max_message_size,
                    }),
                    None => incoming,
                }
            }
            Item::Notification {
                message,
                delivery,
                held,
            } => IncomingMessage::new(message).with_acknowledger(JetStreamAck {
                delivery,
                runtime: self.runtime.clone(),
                _held: held,
            }),
        }
    }
}

/// A listener on NATS; see the module docs.
pub struct NatsListener {
    shared: Arc<Shared>,
    consumer: ConsumerTask,
}

impl std::fmt::Debug for NatsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsListener")
            .field("subscription", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// What a listener consumes.
pub(crate) enum Source {
    /// Core subscriptions, already made.
    Rpc(Vec<async_nats::Subscriber>),
    /// Durable pull consumers.
    Notifications(Vec<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>>),
}

impl NatsListener {
    pub(crate) fn start(
        source: Source,
        client: async_nats::Client,
        transport: FromTransport,
        listen: &ListenOptions,
        limits: Limits,
        name: String,
    ) -> NatsListener {
        let FromTransport {
            runtime,
            consumer_runtime,
            connected,
            losses,
        } = transport;
        // Core NATS does not bound what it hands out: the buffer does. JetStream does
        // (`max_ack_pending`).
        let buffer = match source {
            Source::Rpc(_) => Buffer::new(listen, OnStop::Drain).with_capacity(limits.prefetch),
            Source::Notifications(_) => Buffer::new(listen, OnStop::GiveBack),
        };
        let shared = Arc::new(Shared {
            buffer,
            client,
            runtime: runtime.clone(),
            name,
            max_message_size: limits.max_message_size,
            max_pending: limits.max_pending,
            losses,
            in_progress: Arc::default(),
        });
        if let Source::Notifications(consumers) = &source {
            // The consumers' own wait: one the server did not update keeps its own.
            let ack_wait = consumers
                .iter()
                .map(|c| c.cached_info().config.ack_wait)
                .filter(|wait| !wait.is_zero())
                .min()
                .unwrap_or(limits.ack_wait);
            runtime.spawn(InProgress::tell(
                Arc::downgrade(&shared.in_progress),
                shared.client.clone(),
                ack_wait / 3,
            ));
        }
        let consumer = {
            let shared = shared.clone();
            ConsumerTask::spawn(&consumer_runtime, move |phases| async move {
                match source {
                    Source::Rpc(subscribers) => consume_rpc(shared, subscribers, phases).await,
                    Source::Notifications(consumers) => {
                        let pulls = Pulls {
                            batch: limits.prefetch,
                            connected,
                        };
                        consume_notifications(shared, consumers, pulls, phases).await;
                    }
                }
            })
        };
        NatsListener { shared, consumer }
    }
}

#[async_trait]
impl Listener for NatsListener {
    fn poll(&self, timeout: Option<Duration>) -> Result<Polled, TransportError> {
        Ok(self
            .shared
            .buffer
            .poll(timeout, &|item| self.shared.incoming(item)))
    }

    async fn poll_async(&self) -> Result<Polled, TransportError> {
        let convert = |item| self.shared.incoming(item);
        Ok(self.shared.buffer.poll_async(&convert).await)
    }

    fn stop(&self) {
        self.shared.buffer.stop();
        self.consumer.stop();
    }

    fn cleanup(&self) {
        self.stop();
        self.consumer.cleanup(&self.shared.name);
        self.shared.buffer.close();
    }
}

impl Drop for NatsListener {
    fn drop(&mut self) {
        if self.consumer.is_running() {
            self.cleanup();
        }
    }
}

async fn consume_rpc(
    shared: Arc<Shared>,
    mut subscribers: Vec<async_nats::Subscriber>,
    mut phases: watch::Receiver<Phase>,
) {
    // Requests received but not in the buffer yet (it was full), oldest first, with
    // the subscription each came from, and how many each subscription holds there.
    let mut pending: VecDeque<(usize, Item)> = VecDeque::new();
    let mut held = vec![0usize; subscribers.len()];
    let dropped = shared.losses.listener(&shared.name);
    {
        type Messages<'a> = Pin<Box<dyn Stream<Item = (usize, async_nats::Message)> + Send + 'a>>;
        let mut streams: Vec<Messages<'_>> = Vec::new();
        for (i, subscriber) in subscribers.iter_mut().enumerate() {
            streams.push(Box::pin(subscriber.map(move |m| (i, m))));
        }
        let first = streams
            .pop()
            .unwrap_or_else(|| Box::pin(futures_lite::stream::pending()));
        let mut merged = streams.into_iter().fold(first, |a, b| {
            Box::pin(futures_lite::stream::race(a, b)) as Messages<'_>
        });
        enum Next {
            Stop,
            Room,
            Message(Option<(usize, async_nats::Message)>),
        }
        loop {
            // Into the buffer, oldest first, as far as it has room.
            while let Some((i, item)) = pending.pop_front() {
                match shared.buffer.try_push(item) {
                    Ok(()) => held[i] -= 1,
                    Err(item) => {
                        pending.push_front((i, item));
                        break;
                    }
                }
            }
            // Never waits for room alone: the subscriptions are read all the time, so
            // that what does not fit is dropped here, counted and reported exactly,
            // rather than in the client's queue.
            let waiting = !pending.is_empty();
            let next = futures_lite::future::or(
                async {
                    stopped(&mut phases).await;
                    Next::Stop
                },
                futures_lite::future::or(
                    async {
                        if waiting {
                            shared.buffer.room().await;
                        } else {
                            futures_lite::future::pending::<()>().await;
                        }
                        Next::Room
                    },
                    async { Next::Message(merged.next().await) },
                ),
            )
            .await;
            let (i, message) = match next {
                Next::Stop | Next::Message(None) => break,
                Next::Room => continue,
                Next::Message(Some(received)) => received,
            };
            let arrived = Instant::now();
            if held[i] >= shared.max_pending {
                // Before decoding: a flood costs as little as possible.
                shared.losses.pending_dropped_one(&dropped);
                continue;
            }
            if shared.too_large(&message, "dropping a request") {
                continue;
            }
            match frame::decode_message(&message.payload) {
                Ok(decoded) => {
                    pending.push_back((
                        i,
                        Item::Rpc {
                            message: decoded.message,
                            reply: message.reply.map(|r| r.to_string()),
                            monitor: decoded.monitor,
                            deadline: decoded
                                .expires_in
                                .and_then(|left| caller_deadline(arrived, left)),
                        },
                    ));
                    held[i] += 1;
                }
                Err(error) => {
                    tracing::warn!(listener = %shared.name, %error, "dropping a malformed request");
                    shared.losses.rejected_one();
                }
            }
        }
    }
    // What was received but never reached the buffer goes with the subscriptions: say
    // how much (core NATS cannot take it back).
    let left = tokio::task::unconstrained(async {
        let mut left = pending.len();
        for subscriber in &mut subscribers {
            while let Ok(Some(_)) = poll_once(subscriber.next()) {
                left += 1;
            }
        }
        left
    })
    .await;
    if left > 0 {
        shared.losses.dropped_on_stop(left as u64);
        tracing::warn!(
            listener = %shared.name,
            dropped = left,
            "stopped with requests received but not buffered; dropped (calls and casts \
             are at-most-once on core NATS: their calls time out)"
        );
    }
    // Take nothing new: remove the subscriptions and make sure the server knows, within
    // STOP_WAIT. A disconnected client has nothing to tell: the server dropped them
    // with the connection, and dropping the subscribers keeps the client from
    // restoring them.
    if is_connected(&shared.client) {
        let _ = tokio::time::timeout(STOP_WAIT, async {
            for subscriber in &mut subscribers {
                let _ = subscriber.unsubscribe().await;
            }
            let _ = shared.client.flush().await;
        })
        .await;
    }
    drop(subscribers);
    cleaned_up(&mut phases).await;
}

/// How long one pull request waits on the server for notifications before it ends
/// and the next one is sent: it also bounds how long a pull request lost with its
/// connection goes unnoticed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// Pulls every consumer of the listener, each on a task of its own, until `stop()`;
/// then gives back what was pulled but not handed out.
async fn consume_notifications(
    shared: Arc<Shared>,
    consumers: Vec<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>>,
    pulls: Pulls,
    mut phases: watch::Receiver<Phase>,
) {
    let tasks: Vec<_> = consumers
        .iter()
        .map(|consumer| {
            let info = consumer.cached_info();
            let subject = format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                info.stream_name, info.name
            );
            tokio::spawn(pull(shared.clone(), subject, pulls.clone(), phases.clone()))
        })
        .collect();
    // The pulls end on `stop()`, each draining its inbox within STOP_WAIT.
    stopped(&mut phases).await;
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    for task in tasks {
        let _ = task.await;
    }
    // Give back what was pulled but not handed out: redelivered at once.
    for item in shared.buffer.take_all() {
        if let Item::Notification { delivery, .. } = item {
            let _ = settle(&shared.runtime, *delivery, AckKind::Nak(None));
        }
    }
    // The server has seen the `Nak`s before `cleanup()` returns (within the budget).
    if is_connected(&shared.client) {
        let _ = tokio::time::timeout_at(deadline, shared.client.flush()).await;
    }
    cleaned_up(&mut phases).await;
}

/// What the pulls of a listener share.
#[derive(Clone)]
pub(crate) struct Pulls {
    /// The most notifications one pull request asks for (the consumers'
    /// `max_ack_pending`).
    pub(crate) batch: usize,
    /// Bumped each time the client (re)connects: pull requests do not survive a lost
    /// connection, so a pull asks again at once.
    pub(crate) connected: watch::Receiver<u64>,
}

/// Whether the client is connected (as far as it knows).
fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// `future`'s output, or `None` if the listener stops first: a send to a client whose
/// outgoing queue is full (the server away) must not keep a listener from stopping.
async fn unless_stopped<F: std::future::Future>(
    phases: &mut watch::Receiver<Phase>,
    future: F,
) -> Option<F::Output> {
    futures_lite::future::or(async { Some(future.await) }, async {
        stopped(phases).await;
        None
    })
    .await
}

/// What a pull waits for next.
enum Next {
    Stop,
    Reconnected,
    Expired,
    Delivery(Option<async_nats::Message>),
}

/// Pulls one durable consumer through an inbox of its own: one pull request at a
/// time, for up to a batch, waiting up to [`PULL_EXPIRES`]. On `stop()` the inbox is
/// drained (unsubscribed, and everything the server sent before it saw that received)
/// and what arrived is given back, so no notification is left to the acknowledgement
/// wait by a stopped listener.
async fn pull(
    shared: Arc<Shared>,
    subject: String,
    pulls: Pulls,
    mut phases: watch::Receiver<Phase>,
) {
    let Pulls {
        batch,
        mut connected,
    } = pulls;
    let client = shared.client.clone();
    let context = jetstream::new(client.clone());
    let request = Bytes::from(format!(
        r#"{{"batch":{batch},"expires":{}}}"#,
        PULL_EXPIRES.as_nanos()
    ));
    let mut inbox: Option<(String, async_nats::Subscriber)> = None;
    let mut backoff = Duration::from_millis(100);
    'pulling: loop {
        let (reply, subscriber) = match &mut inbox {
            Some((reply, subscriber)) => (reply.clone(), subscriber),
            slot @ None => {
                let reply = client.new_inbox();
                let Some(subscribed) =
                    unless_stopped(&mut phases, client.subscribe(reply.clone())).await
                else {
                    break 'pulling;
                };
                match subscribed {
                    Ok(subscriber) => (reply.clone(), &mut slot.insert((reply, subscriber)).1),
                    Err(error) => {
                        tracing::warn!(listener = %shared.name, %error, retry_in = ?backoff, "cannot pull notifications");
                        if pause(&mut phases, &mut backoff).await {
                            break 'pulling;
                        }
                        continue;
                    }
                }
            }
        };
        let Some(requested) = unless_stopped(
            &mut phases,
            client.publish_with_reply(subject.clone(), reply, request.clone()),
        )
        .await
        else {
            break 'pulling;
        };
        if let Err(error) = requested {
            tracing::warn!(listener = %shared.name, %error, retry_in = ?backoff, "cannot pull notifications");
            if pause(&mut phases, &mut backoff).await {
                break 'pulling;
            }
            continue;
        }
        let mut left = batch;
        // A request lost with its connection never answers: ask again after this.
        let mut lost = std::pin::pin!(tokio::time::sleep(PULL_EXPIRES + Duration::from_secs(1)));
        loop {
            let next = futures_lite::future::or(
                async {
                    stopped(&mut phases).await;
                    Next::Stop
                },
                futures_lite::future::or(
                    async {
                        if connected.changed().await.is_err() {
                            futures_lite::future::pending::<()>().await;
                        }
                        Next::Reconnected
                    },
                    futures_lite::future::or(
                        async {
                            lost.as_mut().await;
                            Next::Expired
                        },
                        async { Next::Delivery(subscriber.next().await) },
                    ),
                ),
            )
            .await;
            let message = match next {
                Next::Stop => break 'pulling,
                Next::Reconnected | Next::Expired => continue 'pulling,
                Next::Delivery(None) => {
                    inbox = None;
                    continue 'pulling;
                }
                Next::Delivery(Some(message)) => message,
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    backoff = Duration::from_millis(100);
                    deliver(&shared, &context, message).await;
                    left -= 1;
                    if left == 0 {
                        continue 'pulling;
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // The request expired: the next one.
                Some(StatusCode::TIMEOUT) => continue 'pulling,
                // Anything else ended the request for a reason that may last (the
                // consumer is gone, JetStream is unavailable, too many requests...).
                Some(status) => {
                    tracing::debug!(listener = %shared.name, %status, description = ?message.description, retry_in = ?backoff, "pull request ended");
                    if pause(&mut phases, &mut backoff).await {
                        break 'pulling;
                    }
                    continue 'pulling;
                }
            }
        }
    }
    // The server may still hold this pull's request and have notifications on their
    // way to it: unsubscribe, receive everything it sent before it saw that, give it
    // back. A disconnected client has nothing to wait for: the server dropped the
    // request with the connection, and what it had sent is redelivered after the
    // acknowledgement wait.
    let Some((_, mut subscriber)) = inbox else {
        return;
    };
    if !is_connected(&shared.client) {
        return;
    }
    let _ = tokio::time::timeout(STOP_WAIT, async {
        if subscriber.drain().await.is_err() {
            return;
        }
        while let Some(message) = subscriber.next().await {
            if message.status.is_none() && message.reply.is_some() {
                let delivery = jetstream::Message {
                    message,
                    context: context.clone(),
                };
                let _ = settle(&shared.runtime, delivery, AckKind::Nak(None));
            }
        }
    })
    .await;
}

/// Waits `backoff` (doubling it up to 5 s); true if the listener stopped meanwhile.
async fn pause(phases: &mut watch::Receiver<Phase>, backoff: &mut Duration) -> bool {
    let stopped = tokio::time::timeout(*backoff, stopped(phases))
        .await
        .is_ok();
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    stopped
}

/// Hands a delivered notification to the buffer, or terminates it if it is too large
/// or unreadable (redelivering it could not help).
async fn deliver(shared: &Shared, context: &jetstream::Context, message: async_nats::Message) {
    let delivery = jetstream::Message {
        message,
        context: context.clone(),
    };
    if shared.too_large(&delivery.message, "terminating a notification") {
        let _ = settle(&shared.runtime, delivery, AckKind::Term);
        return;
    }
    match frame::decode_message(&delivery.message.payload) {
        Ok(decoded) => {
            let held = delivery
                .message
                .reply
                .as_ref()
                .map(|subject| shared.in_progress.hold(subject.to_string()));
            shared.buffer.push(Item::Notification {
                message: decoded.message,
                delivery: Box::new(delivery),
                held,
            })
        }
        Err(error) => {
            tracing::warn!(listener = %shared.name, %error, "terminating a malformed notification");
            shared.losses.rejected_one();
            let _ = settle(&shared.runtime, delivery, AckKind::Term);
        }
    }
}

/// Sends a delivery's acknowledgement (`Ack`, `Nak`, `Term`) without waiting: the
/// client queues it at once unless its outgoing queue is full (the server away for a
/// while); then a task on `runtime` queues it when there is room. An error is one the
/// client reported at once.
fn settle(
    runtime: &Handle,
    delivery: jetstream::Message,
    kind: AckKind,
) -> Result<(), TransportError> {
    match poll_once(async move { delivery.ack_with(kind).await }) {
        Ok(done) => done.map_err(|e| TransportError::Acknowledge(e.to_string())),
        Err(unfinished) => {
            runtime.spawn(async move {
                if let Err(error) = unfinished.await {
                    tracing::debug!(%error, "a notification's acknowledgement was not sent");
                }
            });
            Ok(())
        }
    }
}

/// Settles a JetStream delivery: ack, or `Nak` for an immediate redelivery; never
/// blocks (see [`settle`]). The delivery is told as in progress until then.
struct JetStreamAck {
    delivery: Box<jetstream::Message>,
    runtime: Handle,
    _held: Option<Held>,
}

impl std::fmt::Debug for JetStreamAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamAck")
            .field("subject", &self.delivery.message.subject)
            .finish()
    }
}

impl Acknowledger for JetStreamAck {
    fn acknowledge(self: Box<Self>) -> Result<(), TransportError> {
        settle(&self.runtime, *self.delivery, AckKind::Ack)
    }

    fn requeue(self: Box<Self>, _message: Message) -> Result<(), TransportError> {
        settle(&self.runtime, *self.delivery, AckKind::Nak(None))
    }
}

/// Replies to one call on its reply subject.
#[derive(Debug)]
struct NatsReplier {
    client: async_nats::Client,
    runtime: Handle,
    subject: String,
    codec: messaging_core::codec::CodecKind,
    max_message_size: Option<usize>,
}

impl Replier for NatsReplier {
    /// Publishes the event. A reply larger than the transport's limit is not sent and
    /// returns [`TransportError::MessageTooLarge`]: the RPC dispatcher then replies
    /// with a small `MessageTooLarge` remote error instead, so the caller does not wait
    /// for its timeout.
    fn send(&self, event: ReplyEvent) -> Result<(), TransportError> {
        let body: Bytes = match &event {
            ReplyEvent::Heartbeat => frame::encode_reply(None, self.codec),
            ReplyEvent::Reply(outcome) => frame::encode_reply(Some(outcome), self.codec),
        };
        let limit = message_limit(self.max_message_size, &self.client);
        if body.len() > limit {
            return Err(TransportError::MessageTooLarge {
                size: body.len(),
                limit,
            });
        }
        let (client, subject) = (self.client.clone(), self.subject.clone());
        let publish = async move {
            if let Err(error) = client.publish(subject, body).await {
                tracing::warn!(%error, "the reply could not be sent");
            }
        };
        // The publish is a send on the client's command channel: done at once unless
        // the channel is full, and only then left to the runtime.
        if let Err(unfinished) = poll_once(publish) {
            self.runtime.spawn(unfinished);
        }
        Ok(())
    }
}
