//! The caller's side of calls: one reply queue per transport (`reply_<hex>`, reused for
//! every call, as oslo does), consumed by one task that routes each reply to its call
//! by `_msg_id`, and re-consumed after a reconnect. Closing the transport deletes the
//! queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::ShortString;
use lapin::{Channel, Connection, Consumer};
use messaging_core::TransportError;
use messaging_core::reply::ReplySender;

use super::compression;
use super::connection::{self, classify, fixed, short};
use super::options::Options;
use super::wire;
use crate::pending::PendingCalls;

pub(crate) struct Replies {
    options: Options,
    /// The queue's name, given when the queue is first needed (with
    /// `use_queue_manager`, as oslo, the count goes to the transports that call).
    queue: OnceLock<ShortString>,
    pending: PendingCalls,
    started: tokio::sync::Mutex<bool>,
    /// `started`, readable without the lock.
    ready: AtomicBool,
    /// The channel consuming the queue (replaced on reconnect), to delete it with.
    channel: Mutex<Option<Channel>>,
    /// Set by [`close`](Replies::close): the queue is being deleted and must not be
    /// declared again.
    closing: AtomicBool,
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies")
            .field("queue", &self.queue.get())
            .finish_non_exhaustive()
    }
}

struct Session {
    _connection: Connection,
    consumer: Consumer,
}

impl Replies {
    pub(crate) fn new(options: Options) -> Result<Self, TransportError> {
        Ok(Replies {
            options,
            queue: OnceLock::new(),
            pending: PendingCalls::default(),
            started: tokio::sync::Mutex::new(false),
            ready: AtomicBool::new(false),
            channel: Mutex::new(None),
            closing: AtomicBool::new(false),
        })
    }

    /// The reply queue's name (the `_reply_q` of every call), once
    /// [`ensure_started`](Replies::ensure_started) succeeded.
    pub(crate) fn queue(&self) -> Option<&ShortString> {
        self.queue.get()
    }

    /// The queue's name, chosen on first use: `reply_<32 hex digits>`, or with
    /// `use_queue_manager` `reply_<hostname>:<processname>:<n>`.
    fn name(&self) -> Result<ShortString, TransportError> {
        if let Some(name) = self.queue.get() {
            return Ok(name.clone());
        }
        let unique = match &self.options.queue_manager {
            Some(manager) => manager.next().map_err(|e| {
                TransportError::other(format!("use_queue_manager: cannot count queue names: {e}"))
            })?,
            None => messaging_core::ids::hex_id(),
        };
        let name = short(&format!("reply_{unique}"))
            .map_err(|e| TransportError::other(format!("the reply queue name is {e}")))?;
        Ok(self.queue.get_or_init(|| name).clone())
    }

    async fn session(&self) -> Result<Session, TransportError> {
        let connection = connection::connect(&self.options, "reply").await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| classify("opening a channel", e))?;
        let name = self.name()?;
        let queue = self.options.declares.reply_queue(name.clone());
        connection::declare_queue(&channel, &queue, None).await?;
        let consumer = channel
            .basic_consume(
                name,
                fixed(""),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                self.options
                    .declares
                    .consumer_arguments(false, None)
                    .table(),
            )
            .await
            .map_err(|e| classify("consuming replies", e))?;
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) = Some(channel);
        Ok(Session {
            _connection: connection,
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

    /// Stops consuming and deletes the reply queue, waiting at most `limit`. Called
    /// when the transport is dropped; a queue never declared is left alone, and one
    /// the broker cannot be asked about (connection down) is left to its `x-expires`.
    pub(crate) async fn close(&self, limit: Duration) {
        self.closing.store(true, Ordering::Release);
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let (Some(channel), Some(queue)) =
            (channel.filter(|c| c.status().connected()), self.queue.get())
        else {
            return;
        };
        if let Err(error) = connection::delete_queue(&channel, queue, limit).await {
            tracing::debug!(%error, %queue, "the reply queue was not deleted");
        }
    }

    fn deliver(&self, delivery: &lapin::message::Delivery) {
        let limit = self.options.max_message_size;
        let body = &delivery.data;
        if body.len() > limit {
            tracing::warn!(
                size = body.len(),
                limit,
                queue = ?self.queue.get(),
                "dropping a reply larger than max_message_size"
            );
            return;
        }
        let body = match compression::body(delivery.properties.headers().as_ref(), body, limit) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, "dropping a reply");
                return;
            }
        };
        match wire::decode_reply(&body) {
            Ok(reply) => self
                .pending
                .deliver(&reply.msg_id, reply.outcome, reply.ending),
            Err(error) => tracing::warn!(%error, "dropping an unreadable reply"),
        }
    }
}

/// Routes replies until the transport is gone (or closing), reconnecting when the
/// connection drops.
async fn consume(replies: Weak<Replies>, mut session: Session) {
    loop {
        while let Some(delivery) = session.consumer.next().await {
            let Some(replies) = replies.upgrade() else {
                return;
            };
            match delivery {
                Ok(delivery) => replies.deliver(&delivery),
                Err(error) => {
                    if !replies.closing.load(Ordering::Acquire) {
                        tracing::warn!(%error, "reply consumer failed");
                    }
                    break;
                }
            }
        }
        let mut delays = None;
        let started = std::time::Instant::now();
        session = loop {
            let Some(replies) = replies.upgrade() else {
                return;
            };
            if replies.closing.load(Ordering::Acquire) {
                return;
            }
            match replies.session().await {
                Ok(session) => {
                    tracing::info!(after = ?started.elapsed(), queue = ?replies.queue.get(), "reply queue consumed again");
                    break session;
                }
                Err(error) => {
                    let schedule = replies.options.reconnect;
                    let delay = delays
                        .get_or_insert_with(|| schedule.delays())
                        .next()
                        .unwrap_or(schedule.max);
                    tracing::warn!(%error, retry_in = ?delay, "reply connection lost; reconnecting");
                    drop(replies);
                    tokio::time::sleep(delay).await;
                }
            }
        };
    }
}
