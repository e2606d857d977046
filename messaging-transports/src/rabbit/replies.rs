//! The caller's side of calls: one reply queue per transport (`reply_<hex>`, reused for
//! every call, as oslo does), consumed by one task that routes each reply to its call
//! by `_msg_id`, and re-consumed after a reconnect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use futures_lite::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use messaging_core::TransportError;
use messaging_core::reply::ReplySender;

use super::connection::{self, Backoff, connection_error};
use super::options::Options;
use super::wire;
use crate::pending::PendingCalls;

pub(crate) struct Replies {
    options: Options,
    queue: String,
    pending: PendingCalls,
    started: tokio::sync::Mutex<bool>,
    /// `started`, readable without the lock.
    ready: AtomicBool,
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
            pending: PendingCalls::default(),
            started: tokio::sync::Mutex::new(false),
            ready: AtomicBool::new(false),
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
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether [`ensure_started`](Replies::ensure_started) has succeeded: from then on,
    /// calls need nothing of the runtime to register and publish.
    pub(crate) fn is_started(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Registers a call waiting for `msg_id`.
    pub(crate) fn expect(&self, msg_id: String, sender: ReplySender) {
        self.pending.expect(msg_id, sender);
    }

    /// Forgets a call (its request could not be sent).
    pub(crate) fn forget(&self, msg_id: &str) {
        self.pending.forget(msg_id);
    }

    fn deliver(&self, body: &[u8]) {
        match wire::decode_reply(body) {
            Ok(reply) => self
                .pending
                .deliver(&reply.msg_id, reply.outcome, reply.ending),
            Err(error) => tracing::warn!(%error, "dropping an unreadable reply"),
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
