//! Publishing: one connection and channel per transport, in confirm mode, reconnected
//! on failure, with the exchanges (and notification queues) declared once per channel.
//!
//! A publish returns once its frame is written (the transport has taken the message);
//! a watcher task then waits for the broker's confirm. A message the broker nacks, or
//! whose channel dies before it is confirmed, is published again (receivers drop the
//! rare duplicate by `_unique_id`, which is what oslo's duplicate filter is for); a
//! mandatory reply the broker returns because its queue does not exist (yet) is
//! retried every 250 ms, as oslo does, until its deadline. At most [`MAX_IN_FLIGHT`]
//! messages wait for confirms: beyond that, publishing waits.
//!
//! Publishing runs in the caller's context (a blocking thread's `block_on` or any
//! async runtime): only connecting and the confirm watchers run on the transport's
//! runtime, so a publish on a live channel costs no hand-off between threads.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection, PublisherConfirm};
use messaging_core::TransportError;
use messaging_core::timer;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connection::{self, Backoff, Kind, classify, connection_error, is_permanent};
use super::options::Options;

/// Messages published and not yet confirmed by the broker, at most.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// How long a message may keep being retried when its publisher set no deadline.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Something to declare before publishing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Declare {
    Exchange(String, Kind),
    /// A queue (with `x-expires` if given) bound to an exchange with a key: the
    /// notification publisher's default queue, so messages persist before a consumer.
    Queue {
        queue: String,
        expires_ms: Option<u32>,
        exchange: String,
        key: String,
    },
}

/// One message to publish.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) body: Vec<u8>,
    pub(crate) expiration: Option<Duration>,
    pub(crate) mandatory: bool,
    pub(crate) declare: Vec<Declare>,
}

struct Session {
    _connection: Connection,
    channel: Channel,
    declared: Mutex<HashSet<Declare>>,
}

pub(crate) struct Publisher {
    options: Options,
    runtime: Handle,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    in_flight: Arc<Semaphore>,
    /// Feeds the confirm watcher, started on the first publish.
    watcher: OnceLock<tokio::sync::mpsc::UnboundedSender<Sent>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher connecting (and watching confirms) on `runtime`.
    pub(crate) fn new(options: Options, runtime: Handle) -> Self {
        Publisher {
            options,
            runtime,
            session: tokio::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            watcher: OnceLock::new(),
        }
    }

    /// Waits until every message published so far is confirmed (or given up).
    pub(crate) async fn settle(&self) {
        let _all = self.in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
    }

    /// Publishes: reconnecting as needed, at most `retry` more attempts (`None`:
    /// until the deadline), never past `deadline` (60 s when `None`). Returns once the
    /// broker has the frame; its confirm is awaited (and the message republished if
    /// needed) in the background.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        message: Publish,
        retry: Option<u32>,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + DEFAULT_DEADLINE);
        let message = Arc::new(message);
        let confirm = self.send(&message, retry, deadline).await?;
        self.watch(message, confirm, deadline);
        Ok(())
    }

    async fn send(
        &self,
        message: &Publish,
        retry: Option<u32>,
        deadline: Instant,
    ) -> Result<(PublisherConfirm, OwnedSemaphorePermit, Arc<Session>), TransportError> {
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            let attempt = timer::timeout_at(deadline, self.try_send(message)).await;
            let error = match attempt {
                Ok(Ok(sent)) => return Ok(sent),
                Ok(Err(error)) if is_permanent(&error) => return Err(error),
                Ok(Err(error)) => error,
                Err(_) => connection_error("publishing", "the deadline passed"),
            };
            attempts += 1;
            let delay = backoff.next_delay();
            if retry.is_some_and(|r| attempts > r) || Instant::now() + delay >= deadline {
                return Err(error);
            }
            tracing::warn!(%error, retry_in = ?delay, "publish failed; reconnecting");
            timer::sleep(delay).await;
        }
    }

    /// The current session, or a new one (connected outside the session lock, one
    /// attempt at a time).
    async fn session(&self) -> Result<Arc<Session>, TransportError> {
        if let Some(session) = self
            .session
            .lock()
            .await
            .as_ref()
            .filter(|s| s.channel.status().connected())
        {
            return Ok(session.clone());
        }
        let _connecting = self.connecting.lock().await;
        if let Some(session) = self
            .session
            .lock()
            .await
            .as_ref()
            .filter(|s| s.channel.status().connected())
        {
            return Ok(session.clone());
        }
        // Connecting needs the transport's runtime (lapin spawns its I/O there).
        let options = self.options.clone();
        let session = self
            .runtime
            .spawn(async move {
                let connection = connection::connect(&options, "publish").await?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| connection_error("opening a channel", e))?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| connection_error("enabling publisher confirms", e))?;
                Ok::<_, TransportError>(Arc::new(Session {
                    _connection: connection,
                    channel,
                    declared: Mutex::new(HashSet::new()),
                }))
            })
            .await
            .map_err(|e| TransportError::other(format!("the connecting task failed: {e}")))??;
        *self.session.lock().await = Some(session.clone());
        Ok(session)
    }

    async fn forget(&self, dead: &Arc<Session>) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
            *current = None;
        }
    }

    async fn try_send(
        &self,
        message: &Publish,
    ) -> Result<(PublisherConfirm, OwnedSemaphorePermit, Arc<Session>), TransportError> {
        let session = self.session().await?;
        let result = self.send_on(&session, message).await;
        if let Err(error) = &result
            && !is_permanent(error)
        {
            self.forget(&session).await;
        }
        result.map(|(confirm, permit)| (confirm, permit, session))
    }

    async fn send_on(
        &self,
        session: &Session,
        message: &Publish,
    ) -> Result<(PublisherConfirm, OwnedSemaphorePermit), TransportError> {
        for declare in &message.declare {
            let known = session
                .declared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(declare);
            if known {
                continue;
            }
            match declare {
                Declare::Exchange(name, kind) => {
                    connection::declare_exchange(&session.channel, name, *kind).await?;
                }
                Declare::Queue {
                    queue,
                    expires_ms,
                    exchange,
                    key,
                } => {
                    connection::declare_exchange(&session.channel, exchange, Kind::Topic).await?;
                    connection::declare_queue(
                        &session.channel,
                        queue,
                        *expires_ms,
                        Some((exchange, key)),
                    )
                    .await?;
                }
            }
            session
                .declared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(declare.clone());
        }
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TransportError::Closed("the publisher"))?;
        let confirm = session
            .channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                connection::properties(message.expiration),
            )
            .await
            .map_err(|e| classify("publishing", e))?;
        Ok((confirm, permit))
    }

    /// Hands a published message to the confirm watcher: one task per publisher that
    /// awaits the broker's confirms in publish order (a task per message would cost a
    /// wake-up of the runtime per message). A message that is not simply acked gets
    /// its own retry task, so one slow retry holds up no other confirm.
    fn watch(
        self: &Arc<Self>,
        message: Arc<Publish>,
        sent: (PublisherConfirm, OwnedSemaphorePermit, Arc<Session>),
        deadline: Instant,
    ) {
        let watcher = self.watcher.get_or_init(|| {
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            self.runtime
                .spawn(watch_confirms(Arc::downgrade(self), receiver));
            sender
        });
        let (confirm, permit, session) = sent;
        let _ = watcher.send(Sent {
            message,
            confirm,
            permit,
            session,
            deadline,
        });
    }
}

/// A message whose confirm is awaited.
struct Sent {
    message: Arc<Publish>,
    confirm: PublisherConfirm,
    permit: OwnedSemaphorePermit,
    session: Arc<Session>,
    deadline: Instant,
}

/// Awaits confirms in order; anything but a plain ack goes to [`retry`].
async fn watch_confirms(
    publisher: Weak<Publisher>,
    mut sent: tokio::sync::mpsc::UnboundedReceiver<Sent>,
) {
    while let Some(Sent {
        message,
        confirm,
        permit,
        session,
        deadline,
    }) = sent.recv().await
    {
        let outcome = confirm.await;
        drop(permit);
        if matches!(
            outcome,
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested)
        ) {
            continue;
        }
        if let Some(publisher) = publisher.upgrade() {
            tokio::spawn(retry(publisher, message, outcome, session, deadline));
        }
    }
}

/// Republishes what the broker nacked, what a dead channel lost, and (every 250 ms) a
/// mandatory message it returned, until the deadline.
async fn retry(
    this: Arc<Publisher>,
    message: Arc<Publish>,
    mut outcome: lapin::Result<Confirmation>,
    mut session: Arc<Session>,
    deadline: Instant,
) {
    loop {
        let again = match outcome {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => return,
            Ok(Confirmation::Ack(Some(_returned))) => {
                // Unroutable: for a reply, the caller's queue is missing.
                if !message.mandatory {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                "returned: no queue for its routing key"
            }
            Ok(Confirmation::Nack(_)) => "nacked by the broker",
            Err(error) => {
                this.forget(&session).await;
                tracing::debug!(%error, "the channel closed before the broker confirmed");
                "its channel closed before the confirm"
            }
        };
        if Instant::now() >= deadline {
            tracing::warn!(
                exchange = %message.exchange,
                routing_key = %message.routing_key,
                reason = again,
                "giving up on a message the broker did not take"
            );
            return;
        }
        match this.send(&message, None, deadline).await {
            Ok((confirm, permit, new_session)) => {
                session = new_session;
                outcome = confirm.await;
                drop(permit);
            }
            Err(error) => {
                tracing::warn!(%error, routing_key = %message.routing_key, "a message could not be republished");
                return;
            }
        }
    }
}
