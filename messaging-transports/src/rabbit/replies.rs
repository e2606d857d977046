//! The caller's side of calls: one reply queue per transport (`reply_<hex>`, reused for
//! every call, as oslo does), consumed by one task that routes each reply to its call
//! by `_msg_id`, and re-consumed after a reconnect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures_lite::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use messaging_core::reply::{Replier, ReplyEvent, ReplySender};
use messaging_core::{RemoteError, TransportError};

use super::connection::{self, Backoff, connection_error};
use super::options::Options;
use super::wire;

struct Pending {
    sender: ReplySender,
    /// A result that came without `ending` (pre-2015 servers send it separately).
    stashed: Option<Result<Bytes, RemoteError>>,
}

pub(crate) struct Replies {
    options: Options,
    queue: String,
    pending: Mutex<HashMap<String, Pending>>,
    started: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

struct Session {
    _connection: Connection,
    _channel: Channel,
    consumer: Consumer,
}

impl Replies {
    pub(crate) fn new(options: Options) -> Self {
        Replies {
            options,
            queue: format!("reply_{}", messaging_core::ids::hex_id()),
            pending: Mutex::new(HashMap::new()),
            started: tokio::sync::Mutex::new(false),
        }
    }

    /// The reply queue's name (the `_reply_q` of every call).
    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    async fn session(&self) -> Result<Session, TransportError> {
        let connection = connection::connect(&self.options, "reply").await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| connection_error("opening a channel", e))?;
        connection::declare_queue(
            &channel,
            &self.queue,
            Some(self.options.transient_ttl_ms),
            None,
        )
        .await?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| connection_error("consuming replies", e))?;
        Ok(Session {
            _connection: connection,
            _channel: channel,
            consumer,
        })
    }

    /// Makes sure the reply queue exists and is consumed (once per transport).
    pub(crate) async fn ensure_started(self: &Arc<Self>) -> Result<(), TransportError> {
        let mut started = self.started.lock().await;
        if *started {
            return Ok(());
        }
        let session = self.session().await?;
        tokio::spawn(consume(Arc::downgrade(self), session));
        *started = true;
        Ok(())
    }

    /// Registers a call waiting for `msg_id`.
    pub(crate) fn expect(&self, msg_id: String, sender: ReplySender) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= 64 && pending.len().is_power_of_two() {
            // Forget calls whose callers gave up (their receivers are gone).
            pending.retain(|_, p| !p.sender.is_closed());
        }
        pending.insert(
            msg_id,
            Pending {
                sender,
                stashed: None,
            },
        );
    }

    /// Forgets a call (its request could not be sent).
    pub(crate) fn forget(&self, msg_id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(msg_id);
    }

    fn deliver(&self, body: &[u8]) {
        let reply = match wire::decode_reply(body) {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(%error, "dropping an unreadable reply");
                return;
            }
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(call) = pending.get_mut(&reply.msg_id) else {
            tracing::debug!(msg_id = %reply.msg_id, "no call waiting for this reply");
            return;
        };
        let event = match (reply.outcome, reply.ending) {
            (None, false) => Some(ReplyEvent::Heartbeat),
            (Some(outcome), true) => Some(ReplyEvent::Reply(outcome)),
            (Some(outcome), false) => {
                call.stashed = Some(outcome);
                None
            }
            (None, true) => Some(ReplyEvent::Reply(
                call.stashed
                    .take()
                    .unwrap_or(Ok(Bytes::from_static(b"null"))),
            )),
        };
        let Some(event) = event else {
            return;
        };
        let ending = matches!(event, ReplyEvent::Reply(_));
        let _ = call.sender.send(event);
        if ending {
            pending.remove(&reply.msg_id);
        }
    }
}

/// Routes replies until the transport is gone, reconnecting when the connection drops.
async fn consume(replies: Weak<Replies>, mut session: Session) {
    loop {
        while let Some(delivery) = session.consumer.next().await {
            let Some(replies) = replies.upgrade() else {
                return;
            };
            match delivery {
                Ok(delivery) => replies.deliver(&delivery.data),
                Err(error) => {
                    tracing::warn!(%error, "reply consumer failed");
                    break;
                }
            }
        }
        let mut backoff = Backoff::new();
        let started = std::time::Instant::now();
        session = loop {
            let Some(replies) = replies.upgrade() else {
                return;
            };
            match replies.session().await {
                Ok(session) => {
                    tracing::info!(after = ?started.elapsed(), queue = %replies.queue, "reply queue consumed again");
                    break session;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "reply connection lost; reconnecting");
                    drop(replies);
                    tokio::time::sleep(delay).await;
                }
            }
        };
    }
}
