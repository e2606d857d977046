//! Notifications on NATS: stored in JetStream, each attempt acknowledged by the
//! server, retried within the send's budget (its retries and its deadline), stored
//! once however often it is sent.
//!
//! An attempt connects if the client never did (one connection attempt to each server
//! of the URL), makes sure of the stream and of the pool-less consumer, and publishes,
//! waiting for the server's acknowledgement (or for the client to reconnect: an
//! acknowledgement never comes over a dropped connection). A failure a reconnect may
//! fix (no server, no acknowledgement in time, the connection dropped before it) is
//! retried after 100 ms, doubling to 5 s; a permanent one (credentials refused, a
//! message too large, names too long) fails at once. Every attempt carries the same
//! `Nats-Msg-Id`, so JetStream stores the notification once even when an attempt whose
//! acknowledgement was lost did store it (within the stream's duplicate window, two
//! minutes).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use messaging_core::{Message, Priority, SendOptions, Target, TransportError, ids};

use super::{
    CONSUMER_RECHECK, Ensure, Inner, NatsTransport, SEND_TIMEOUT, connection_error, frame,
    message_limit,
};

/// The longest deadline a notification can have (a longer timeout is taken as this).
const LONGEST_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The first wait between attempts, and the longest.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const LONGEST_DELAY: Duration = Duration::from_secs(5);

/// What the `Nats-Msg-Id` header adds to a message on the wire (async-nats counts it
/// against the server's `max_payload`): `NATS/1.0\r\n`, `Nats-Msg-Id: <id>\r\n`,
/// `\r\n`.
fn header_len(id: &str) -> usize {
    "NATS/1.0\r\n".len() + "Nats-Msg-Id: ".len() + id.len() + "\r\n\r\n".len()
}

/// How often and until when a notification may be tried.
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// Attempts after the first, at most (`None`: until the deadline).
    retries: Option<u32>,
    deadline: Instant,
}

impl NatsTransport {
    /// [`Transport::notify_with`](messaging_core::Transport::notify_with) on NATS; see
    /// the module docs.
    pub(super) async fn send_notification(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        let (subject, consumer) = self.notification_names(target, priority, None)?;
        let budget = Budget {
            retries: options.retry,
            deadline: Instant::now()
                + options
                    .timeout
                    .unwrap_or(SEND_TIMEOUT)
                    .min(LONGEST_DEADLINE),
        };
        let notification = Notification {
            subject,
            consumer,
            body: frame::encode_message(&message, None, None),
            id: ids::hex_id(),
        };
        let inner = self.inner.clone();
        self.run(async move { inner.notify_within(&notification, budget).await })
            .await
    }
}

/// One notification, ready to publish.
struct Notification {
    subject: String,
    /// The pool-less durable consumer that stores it until a listener comes.
    consumer: String,
    body: Bytes,
    /// Its `Nats-Msg-Id`, the same for every attempt.
    id: String,
}

impl Inner {
    async fn notify_within(
        self: Arc<Self>,
        notification: &Notification,
        budget: Budget,
    ) -> Result<(), TransportError> {
        let mut retries = 0u32;
        let mut delay = FIRST_DELAY;
        let mut last: Option<TransportError> = None;
        loop {
            if Instant::now() >= budget.deadline {
                return Err(last.unwrap_or_else(|| {
                    TransportError::TimedOut(
                        "storing a notification: the deadline passed before the NATS server \
                         acknowledged it"
                            .to_owned(),
                    )
                }));
            }
            let deadline = tokio::time::Instant::from_std(budget.deadline);
            let error =
                match tokio::time::timeout_at(deadline, self.notify_once(notification)).await {
                    Ok(Ok(())) => {
                        if self.notify_failing.swap(false, Ordering::Relaxed) {
                            tracing::info!("storing notifications on NATS again");
                        }
                        return Ok(());
                    }
                    Ok(Err(error)) if error.is_permanent() => return Err(error),
                    Ok(Err(error)) => error,
                    // The deadline passed during the attempt: the loop ends above.
                    Err(_) => continue,
                };
            if budget.retries.is_some_and(|limit| retries >= limit) {
                return Err(error);
            }
            retries += 1;
            if !self.notify_failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "cannot store a notification on NATS; retrying with backoff");
            }
            let wait = delay.min(budget.deadline.saturating_duration_since(Instant::now()));
            tracing::debug!(%error, retry = retries, retry_in = ?wait, subject = %notification.subject, "notification not stored; retrying");
            last = Some(error);
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(LONGEST_DELAY);
        }
    }

    /// One attempt: connect if needed, make sure of the stream and the consumer,
    /// publish and wait for the server's acknowledgement.
    async fn notify_once(&self, notification: &Notification) -> Result<(), TransportError> {
        let (context, stream) = self.jetstream().await?;
        let limit = message_limit(self.options.max_message_size, &context.client());
        let size = notification.body.len() + header_len(&notification.id);
        if size > limit {
            return Err(TransportError::MessageTooLarge { size, limit });
        }
        let recheck = CONSUMER_RECHECK.min(self.options.consumer_ttl / 2);
        let name = &notification.consumer;
        let known = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .is_some_and(|ensured| ensured.elapsed() < recheck);
        if !known {
            self.consumer(
                &stream,
                name.clone(),
                notification.subject.clone(),
                Ensure::Create,
            )
            .await?;
            self.consumers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), Instant::now());
        }
        // Noticed from here on: a reconnection while the acknowledgement is awaited.
        let mut connected = self.connected.subscribe();
        let publish = PublishMessage::build()
            .payload(notification.body.clone())
            .message_id(&notification.id);
        let acknowledgement = context
            .send_publish(notification.subject.clone(), publish)
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::MaxPayloadExceeded => {
                    TransportError::MessageTooLarge { size, limit }
                }
                _ => connection_error("publishing a notification", e),
            })?;
        // The acknowledgement of a publish whose connection dropped never comes: the
        // attempt ends when the client reconnects (and is made again, with the same
        // id), not when the client's request timeout (5 s) passes.
        let reconnected = async {
            if connected.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            None
        };
        futures_lite::future::or(async { Some(acknowledgement.await) }, reconnected)
            .await
            .ok_or_else(|| {
                connection_error(
                    "storing a notification",
                    "the connection dropped before the server acknowledged it",
                )
            })?
            .map_err(|e| connection_error("storing a notification", e))?;
        Ok(())
    }
}
