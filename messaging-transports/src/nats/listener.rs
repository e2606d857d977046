//! NATS listeners. RPC: core subscriptions (a queue group for the topic, the server's
//! own subject, the fanout subject), at-most-once; after `stop()` the subscriptions are
//! removed and what was already received is still handed out (core NATS cannot take a
//! message back). Notifications: JetStream durable pull consumers, acknowledged after
//! dispatch or `Nak`ed for requeue; on `stop()` the messages not yet handed out are
//! `Nak`ed so they are redelivered at once.
//!
//! A request carries its caller's remaining wait; on arrival it becomes the message's
//! deadline ([`IncomingMessage::with_deadline`]), less [`TRANSIT_ALLOWANCE`] for the
//! time it spent on the way, so the dispatcher drops a request still waiting in line
//! when its caller has given up. A message larger
//! than the transport's limit (`max_message_size`, at most the server's `max_payload`)
//! is refused before any decoding, with one warning naming its size, the limit and its
//! subject: a request or reply is dropped, a notification terminated (never
//! redelivered).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures_lite::{Stream, StreamExt};
use messaging_core::dispatch::{block_on, poll_once};
use messaging_core::reply::{Replier, ReplyEvent};
use messaging_core::{
    Acknowledger, IncomingMessage, ListenOptions, Listener, Message, Polled, RemoteError,
    TransportError,
};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::{frame, message_limit};
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
    },
}

struct Shared {
    buffer: Buffer<Item>,
    client: async_nats::Client,
    runtime: Handle,
    name: String,
    max_message_size: Option<usize>,
}

/// What bounds a listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The most notifications pulled at once (the consumers' `max_ack_pending`).
    pub(crate) prefetch: usize,
    /// The URL's `max_message_size`, if any.
    pub(crate) max_message_size: Option<usize>,
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
            Item::Notification { message, delivery } => {
                IncomingMessage::new(message).with_acknowledger(JetStreamAck { delivery })
            }
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
        runtime: Handle,
        listen: &ListenOptions,
        limits: Limits,
        name: String,
    ) -> NatsListener {
        let on_stop = match source {
            Source::Rpc(_) => OnStop::Drain,
            Source::Notifications(_) => OnStop::GiveBack,
        };
        let shared = Arc::new(Shared {
            buffer: Buffer::new(listen, on_stop),
            client,
            runtime: runtime.clone(),
            name,
            max_message_size: limits.max_message_size,
        });
        let consumer = {
            let shared = shared.clone();
            ConsumerTask::spawn(&runtime, move |phases| async move {
                match source {
                    Source::Rpc(subscribers) => consume_rpc(shared, subscribers, phases).await,
                    Source::Notifications(consumers) => {
                        consume_notifications(shared, consumers, limits.prefetch, phases).await;
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
        loop {
            let next = futures_lite::future::or(async { Some(merged.next().await) }, async {
                stopped(&mut phases).await;
                None
            })
            .await;
            match next {
                None | Some(None) => break,
                Some(Some((_, message))) => {
                    let arrived = Instant::now();
                    if shared.too_large(&message, "dropping a request") {
                        continue;
                    }
                    match frame::decode_message(&message.payload) {
                        Ok(decoded) => shared.buffer.push(Item::Rpc {
                            message: decoded.message,
                            reply: message.reply.map(|r| r.to_string()),
                            monitor: decoded.monitor,
                            deadline: decoded.expires_in.and_then(|left| deadline(arrived, left)),
                        }),
                        Err(error) => {
                            tracing::warn!(listener = %shared.name, %error, "dropping a malformed request")
                        }
                    }
                }
            }
        }
    }
    // Take nothing new: remove the subscriptions and make sure the server knows.
    for subscriber in &mut subscribers {
        let _ = subscriber.unsubscribe().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), shared.client.flush()).await;
    cleaned_up(&mut phases).await;
}

/// How much earlier than its caller's remaining wait a request's deadline falls: the
/// time the request may have spent between its caller and this server, which no clock
/// both share can measure. Never more than half the remaining wait, so that calls with
/// short timeouts keep most of theirs.
pub(crate) const TRANSIT_ALLOWANCE: Duration = Duration::from_millis(25);

/// When the caller of a request that `arrived` with `left` to wait stops waiting.
fn deadline(arrived: Instant, left: Duration) -> Option<Instant> {
    arrived.checked_add(left - TRANSIT_ALLOWANCE.min(left / 2))
}

type Deliveries = Pin<Box<dyn Stream<Item = Result<jetstream::Message, String>> + Send>>;

async fn pull(
    consumers: &[jetstream::consumer::Consumer<jetstream::consumer::pull::Config>],
    prefetch: usize,
) -> Result<Deliveries, String> {
    let mut streams: Vec<Deliveries> = Vec::new();
    for consumer in consumers {
        let messages = consumer
            .stream()
            .max_messages_per_batch(prefetch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        streams.push(Box::pin(messages.map(|m| m.map_err(|e| e.to_string()))));
    }
    let first = streams
        .pop()
        .unwrap_or_else(|| Box::pin(futures_lite::stream::pending()));
    Ok(streams.into_iter().fold(first, |a, b| {
        Box::pin(futures_lite::stream::race(a, b)) as Deliveries
    }))
}

async fn consume_notifications(
    shared: Arc<Shared>,
    consumers: Vec<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>>,
    prefetch: usize,
    mut phases: watch::Receiver<Phase>,
) {
    let mut backoff = Duration::from_millis(100);
    'pulling: loop {
        let mut deliveries = match pull(&consumers, prefetch).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                tracing::warn!(listener = %shared.name, %error, retry_in = ?backoff, "cannot pull notifications");
                if tokio::time::timeout(backoff, stopped(&mut phases))
                    .await
                    .is_ok()
                {
                    break 'pulling;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let next = futures_lite::future::or(async { Some(deliveries.next().await) }, async {
                stopped(&mut phases).await;
                None
            })
            .await;
            match next {
                None => break 'pulling,
                Some(None) => continue 'pulling,
                Some(Some(Err(error))) => {
                    tracing::debug!(listener = %shared.name, %error, "pulling interrupted; pulling again");
                    continue 'pulling;
                }
                Some(Some(Ok(delivery))) => {
                    if shared.too_large(&delivery.message, "terminating a notification") {
                        let _ = delivery.ack_with(AckKind::Term).await;
                        continue;
                    }
                    match frame::decode_message(&delivery.message.payload) {
                        Ok(decoded) => shared.buffer.push(Item::Notification {
                            message: decoded.message,
                            delivery: Box::new(delivery),
                        }),
                        Err(error) => {
                            tracing::warn!(listener = %shared.name, %error, "terminating a malformed notification");
                            let _ = delivery.ack_with(AckKind::Term).await;
                        }
                    }
                }
            }
        }
    }
    // Give back what was pulled but not handed out: redelivered at once.
    for item in shared.buffer.take_all() {
        if let Item::Notification { delivery, .. } = item {
            let _ = delivery.ack_with(AckKind::Nak(None)).await;
        }
    }
    cleaned_up(&mut phases).await;
}

/// Settles a JetStream delivery: ack, or `Nak` for an immediate redelivery.
struct JetStreamAck {
    delivery: Box<jetstream::Message>,
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
        block_on(self.delivery.ack()).map_err(|e| TransportError::Acknowledge(e.to_string()))
    }

    fn requeue(self: Box<Self>, _message: Message) -> Result<(), TransportError> {
        block_on(self.delivery.ack_with(AckKind::Nak(None)))
            .map_err(|e| TransportError::Acknowledge(e.to_string()))
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
    /// Publishes the event. A reply larger than the transport's limit is not sent:
    /// the caller gets a small `MessageTooLarge` remote error instead (rather than
    /// waiting for its timeout), and this returns the error.
    fn send(&self, event: ReplyEvent) -> Result<(), TransportError> {
        let mut body: Bytes = match &event {
            ReplyEvent::Heartbeat => frame::encode_reply(None, self.codec),
            ReplyEvent::Reply(outcome) => frame::encode_reply(Some(outcome), self.codec),
        };
        let limit = message_limit(self.max_message_size, &self.client);
        let mut refused = None;
        if body.len() > limit {
            let error = TransportError::MessageTooLarge {
                size: body.len(),
                limit,
            };
            body = frame::encode_reply(
                Some(&Err(RemoteError::new(
                    "MessageTooLarge",
                    "messaging",
                    format!("the reply was not sent: {error}"),
                ))),
                self.codec,
            );
            refused = Some(error);
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
        refused.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_allows_for_transit_but_keeps_half_of_a_short_wait() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(60)),
            Some(now + Duration::from_secs(60) - TRANSIT_ALLOWANCE)
        );
        assert_eq!(
            deadline(now, Duration::from_millis(20)),
            Some(now + Duration::from_millis(10))
        );
        assert_eq!(deadline(now, Duration::ZERO), Some(now));
        assert_eq!(
            deadline(now, Duration::MAX),
            None,
            "no deadline the clock cannot hold"
        );
    }
}
