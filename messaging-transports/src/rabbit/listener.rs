//! [`RabbitListener`]: a consumer task that keeps oslo's topology declared and consumed
//! (reconnecting when the connection drops), feeding a buffer bounded by the prefetch;
//! blocking and async polls take from the buffer.
//!
//! Acknowledgement follows oslo: an RPC request is acknowledged when the dispatcher
//! accepts it (before the handler runs: at-most-once); a notification after its
//! handler, or requeued. Deliveries still in the buffer at `stop()` go back to the
//! broker, and closing the channel at `cleanup()` returns anything else unacknowledged.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_lite::{Stream, StreamExt};
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use messaging_core::dispatch::{block_on, poll_once};
use messaging_core::reply::{Replier, ReplyEvent};
use messaging_core::{
    Acknowledger, IncomingMessage, ListenOptions, Listener, Message, Polled, TransportError,
};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::connection::{self, Backoff, Kind, connection_error};
use super::options::Options;
use super::publisher::{Publish, Publisher};
use super::wire::{self, DuplicateFilter};
use crate::buffer::{Buffer, OnStop};
use crate::consumer::{ConsumerTask, Phase, cleaned_up, stopped};

/// What a listener consumes.
#[derive(Clone, Debug)]
pub(crate) enum Topology {
    /// An RPC server: `<topic>`, `<topic>.<server>` and its own fanout queue.
    Rpc {
        exchange: String,
        topic: String,
        server: String,
        fanout_queue: String,
    },
    /// A notification listener: `(exchange, "<topic>.<priority>")` bindings, on queues
    /// named after the binding key, or all on the pool's queue.
    Notifications {
        bindings: Vec<(String, String)>,
        pool: Option<String>,
    },
}

struct QueueSpec {
    name: String,
    expires_ms: Option<u32>,
    exchange: String,
    exchange_kind: Kind,
    key: String,
}

impl Topology {
    fn queues(&self, options: &Options) -> Vec<QueueSpec> {
        match self {
            Topology::Rpc {
                exchange,
                topic,
                server,
                fanout_queue,
            } => vec![
                QueueSpec {
                    name: topic.clone(),
                    expires_ms: options.queue_ttl_ms,
                    exchange: exchange.clone(),
                    exchange_kind: Kind::Topic,
                    key: topic.clone(),
                },
                QueueSpec {
                    name: format!("{topic}.{server}"),
                    expires_ms: options.queue_ttl_ms,
                    exchange: exchange.clone(),
                    exchange_kind: Kind::Topic,
                    key: format!("{topic}.{server}"),
                },
                QueueSpec {
                    name: fanout_queue.clone(),
                    expires_ms: Some(options.transient_ttl_ms),
                    exchange: format!("{topic}_fanout"),
                    exchange_kind: Kind::Fanout,
                    key: topic.clone(),
                },
            ],
            Topology::Notifications { bindings, pool } => bindings
                .iter()
                .map(|(exchange, key)| QueueSpec {
                    name: pool.clone().unwrap_or_else(|| key.clone()),
                    expires_ms: options.queue_ttl_ms,
                    exchange: exchange.clone(),
                    exchange_kind: Kind::Topic,
                    key: key.clone(),
                })
                .collect(),
        }
    }

    fn is_rpc(&self) -> bool {
        matches!(self, Topology::Rpc { .. })
    }
}

/// A live consuming session.
pub(crate) struct Session {
    connection: Connection,
    channel: Channel,
    consumers: Vec<lapin::Consumer>,
}

/// Connects, declares the topology and starts consuming.
pub(crate) async fn open_session(
    options: &Options,
    topology: &Topology,
    prefetch: u16,
) -> Result<Session, TransportError> {
    let connection = connection::connect(options, "listen").await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| connection_error("opening a channel", e))?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| connection_error("setting the prefetch", e))?;
    let mut consumed: Vec<String> = Vec::new();
    let mut consumers = Vec::new();
    for queue in topology.queues(options) {
        connection::declare_exchange(&channel, &queue.exchange, queue.exchange_kind).await?;
        connection::declare_queue(
            &channel,
            &queue.name,
            queue.expires_ms,
            Some((&queue.exchange, &queue.key)),
        )
        .await?;
        if consumed.contains(&queue.name) {
            continue;
        }
        let consumer = channel
            .basic_consume(
                queue.name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| connection_error(&format!("consuming {}", queue.name), e))?;
        consumed.push(queue.name);
        consumers.push(consumer);
    }
    Ok(Session {
        connection,
        channel,
        consumers,
    })
}

/// One delivery waiting in the buffer.
struct Item {
    acker: Acker,
    message: Message,
    unique_id: Option<String>,
    reply: Option<(String, String)>,
    client_timeout: Option<Duration>,
}

/// The lifecycle the consumer task follows.
struct Shared {
    buffer: Buffer<Item>,
    duplicates: Arc<Mutex<DuplicateFilter>>,
    publisher: Arc<Publisher>,
    runtime: Handle,
    name: String,
}

impl Shared {
    fn incoming(self: &Arc<Self>, item: Item) -> IncomingMessage {
        let incoming = IncomingMessage::new(item.message)
            .with_acknowledger(RabbitAck {
                acker: item.acker,
                unique_id: item.unique_id,
                duplicates: self.duplicates.clone(),
            })
            .with_client_timeout(item.client_timeout);
        match item.reply {
            Some((reply_q, msg_id)) => incoming.with_replier(RabbitReplier {
                publisher: self.publisher.clone(),
                runtime: self.runtime.clone(),
                reply_q,
                msg_id,
            }),
            None => incoming,
        }
    }
}

/// What a listener is started with.
pub(crate) struct Spec {
    pub(crate) options: Options,
    pub(crate) topology: Topology,
    pub(crate) prefetch: u16,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) runtime: Handle,
    pub(crate) name: String,
}

/// A listener on RabbitMQ; see the module docs.
pub struct RabbitListener {
    shared: Arc<Shared>,
    consumer: ConsumerTask,
}

impl std::fmt::Debug for RabbitListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitListener")
            .field("subscription", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl RabbitListener {
    pub(crate) fn start(session: Session, spec: Spec, listen: &ListenOptions) -> RabbitListener {
        let shared = Arc::new(Shared {
            buffer: Buffer::new(listen, OnStop::GiveBack),
            duplicates: Arc::default(),
            publisher: spec.publisher,
            runtime: spec.runtime.clone(),
            name: spec.name,
        });
        let consumer = {
            let shared = shared.clone();
            ConsumerTask::spawn(&spec.runtime, move |phases| {
                consume(
                    shared,
                    spec.options,
                    spec.topology,
                    spec.prefetch,
                    session,
                    phases,
                )
            })
        };
        RabbitListener { shared, consumer }
    }
}

#[async_trait]
impl Listener for RabbitListener {
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

impl Drop for RabbitListener {
    fn drop(&mut self) {
        if self.consumer.is_running() {
            self.cleanup();
        }
    }
}

type Deliveries = Pin<Box<dyn Stream<Item = Result<lapin::message::Delivery, String>> + Send>>;

/// All consumers as one stream. A consumer that ends (the broker cancelled it: its
/// queue was deleted, its node went down) ends with an error, so that the listener
/// reconnects and consumes again instead of silently missing that queue.
fn merge(consumers: Vec<lapin::Consumer>) -> Deliveries {
    let mut streams = consumers.into_iter().map(|consumer| {
        let tag = consumer.tag().to_string();
        Box::pin(
            consumer
                .map(|delivery| delivery.map_err(|e| e.to_string()))
                .chain(futures_lite::stream::once(Err(format!(
                    "the broker cancelled consumer {tag}"
                )))),
        ) as Deliveries
    });
    let first = streams
        .next()
        .unwrap_or_else(|| Box::pin(futures_lite::stream::pending()));
    streams.fold(first, |merged, next| {
        Box::pin(futures_lite::stream::race(merged, next))
    })
}

/// The consumer task: consume, reconnect, and on stop hand back what was not taken.
async fn consume(
    shared: Arc<Shared>,
    options: Options,
    topology: Topology,
    prefetch: u16,
    mut session: Session,
    mut phases: watch::Receiver<Phase>,
) {
    struct Closed(Arc<Shared>);
    impl Drop for Closed {
        fn drop(&mut self) {
            self.0.buffer.close();
        }
    }
    let _closed = Closed(shared.clone());
    let rpc = topology.is_rpc();
    'session: loop {
        let tags: Vec<String> = session
            .consumers
            .iter()
            .map(|c| c.tag().to_string())
            .collect();
        let mut deliveries = merge(std::mem::take(&mut session.consumers));
        loop {
            let next = futures_lite::future::or(async { Some(deliveries.next().await) }, async {
                stopped(&mut phases).await;
                None
            })
            .await;
            match next {
                None => {
                    // Stopped: take nothing new, give back what was not taken.
                    for tag in tags {
                        let _ = session
                            .channel
                            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                            .await;
                    }
                    let returned = shared.buffer.take_all();
                    for item in returned {
                        let _ = item
                            .acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..BasicNackOptions::default()
                            })
                            .await;
                    }
                    break 'session;
                }
                Some(Some(Ok(delivery))) => {
                    handle(&shared, rpc, delivery).await;
                }
                Some(Some(Err(error))) => {
                    tracing::warn!(listener = %shared.name, %error, "consumer failed");
                    break;
                }
                Some(None) => {
                    tracing::warn!(listener = %shared.name, "consumer ended");
                    break;
                }
            }
        }
        // The connection is gone: deliveries still buffered cannot be acknowledged any
        // more (the broker requeues them), so they are dropped here, not handed out.
        drop(shared.buffer.take_all());
        let mut backoff = Backoff::new();
        let lost = Instant::now();
        session = loop {
            if *phases.borrow() != Phase::Running {
                break 'session;
            }
            // A stop does not wait for a reconnect attempt to give up.
            let attempt = futures_lite::future::or(
                async { Some(open_session(&options, &topology, prefetch).await) },
                async {
                    stopped(&mut phases.clone()).await;
                    None
                },
            )
            .await;
            let Some(attempt) = attempt else {
                break 'session;
            };
            match attempt {
                Ok(session) => {
                    tracing::info!(listener = %shared.name, after = ?lost.elapsed(), "reconnected; consuming again");
                    break session;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(listener = %shared.name, %error, retry_in = ?delay, "reconnecting");
                    let _ = tokio::time::timeout(delay, stopped(&mut phases)).await;
                }
            }
        };
    }
    // Keep the channel open while notifications taken before the stop are acknowledged;
    // closing it at cleanup returns anything unacknowledged to the broker.
    cleaned_up(&mut phases).await;
    let _ = session.channel.close(200, "OK".into()).await;
    let _ = session.connection.close(200, "OK".into()).await;
}

fn is_duplicate(shared: &Shared, unique_id: Option<&str>) -> bool {
    shared
        .duplicates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .seen(unique_id)
}

async fn handle(shared: &Shared, rpc: bool, delivery: lapin::message::Delivery) {
    if rpc {
        match wire::decode_request(&delivery.data) {
            Ok(request) => {
                if is_duplicate(shared, request.unique_id.as_deref()) {
                    tracing::info!(listener = %shared.name, "ignoring duplicate message");
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                    return;
                }
                let reply = request.reply_q.zip(request.msg_id);
                shared.buffer.push(Item {
                    acker: delivery.acker,
                    message: request.message,
                    unique_id: request.unique_id,
                    reply,
                    client_timeout: request
                        .timeout
                        .and_then(|t| Duration::try_from_secs_f64(t).ok()),
                });
            }
            Err(error) => {
                tracing::warn!(listener = %shared.name, %error, "dropping a malformed request");
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        }
    } else {
        match wire::decode_notification(&delivery.data) {
            Ok(notification) => {
                if is_duplicate(shared, notification.unique_id.as_deref()) {
                    tracing::info!(listener = %shared.name, "ignoring duplicate notification");
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                    return;
                }
                shared.buffer.push(Item {
                    acker: delivery.acker,
                    message: notification.message,
                    unique_id: notification.unique_id,
                    reply: None,
                    client_timeout: None,
                });
            }
            Err(error) => {
                tracing::warn!(listener = %shared.name, %error, "rejecting a malformed notification");
                let _ = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
            }
        }
    }
}

/// Settles a delivery on its channel; an acknowledged message is remembered by the
/// duplicate filter.
#[derive(Debug)]
struct RabbitAck {
    acker: Acker,
    unique_id: Option<String>,
    duplicates: Arc<Mutex<DuplicateFilter>>,
}

impl Acknowledger for RabbitAck {
    /// The ack reaches lapin on the first poll; this does not wait for lapin's I/O
    /// thread to write it (that would park the handler's thread until that thread
    /// wakes it, per message). A write that fails later means the connection died, and
    /// the broker then redelivers whatever was not acknowledged.
    fn acknowledge(self: Box<Self>) -> Result<(), TransportError> {
        if let Ok(Err(e)) = poll_once(self.acker.ack(BasicAckOptions::default())) {
            return Err(TransportError::Acknowledge(e.to_string()));
        }
        if let Some(id) = &self.unique_id {
            self.duplicates
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remember(id);
        }
        Ok(())
    }

    fn requeue(self: Box<Self>, _message: Message) -> Result<(), TransportError> {
        block_on(self.acker.nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        }))
        .map(drop)
        .map_err(|e| TransportError::Acknowledge(e.to_string()))
    }
}

/// Replies to one call: published to the default exchange, routed by the caller's
/// `_reply_q`, mandatory, retried for up to a minute while the broker is unreachable.
#[derive(Debug)]
struct RabbitReplier {
    publisher: Arc<Publisher>,
    runtime: Handle,
    reply_q: String,
    msg_id: String,
}

impl Replier for RabbitReplier {
    fn send(&self, event: ReplyEvent) -> Result<(), TransportError> {
        let body = match &event {
            ReplyEvent::Heartbeat => wire::encode_reply(
                &wire::ReplyBody::Heartbeat,
                &self.msg_id,
                &messaging_core::ids::hex_id(),
            ),
            ReplyEvent::Reply(Ok(result)) => wire::encode_reply(
                &wire::ReplyBody::Result(result),
                &self.msg_id,
                &messaging_core::ids::hex_id(),
            ),
            ReplyEvent::Reply(Err(remote)) => wire::encode_reply(
                &wire::ReplyBody::Failure(remote),
                &self.msg_id,
                &messaging_core::ids::hex_id(),
            ),
        }
        .map_err(|e| TransportError::Reply(e.to_string()))?;
        let message = Publish {
            exchange: String::new(),
            routing_key: self.reply_q.clone(),
            body,
            expiration: None,
            mandatory: true,
            declare: Vec::new(),
        };
        let publisher = self.publisher.clone();
        let reply_q = self.reply_q.clone();
        let send = async move {
            // oslo keeps trying a reply for a minute (its queue may be re-declared).
            let deadline = Instant::now() + Duration::from_secs(60);
            if let Err(error) = publisher.publish(message, None, Some(deadline)).await {
                tracing::warn!(%error, %reply_q, "the reply could not be sent; abandoning it");
            }
        };
        // The first poll hands the frames to lapin (on a live channel), so the reply
        // leaves without waiting for the runtime to schedule a task; the runtime only
        // finishes what is left (or reconnects).
        if let Err(unfinished) = poll_once(send) {
            self.runtime.spawn(unfinished);
        }
        Ok(())
    }
}
