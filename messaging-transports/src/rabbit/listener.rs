//! [`RabbitListener`]: a consumer task that keeps oslo's topology declared and consumed
//! (reconnecting when the connection drops), feeding a buffer bounded by the prefetch;
//! blocking and async polls take from the buffer.
//!
//! Acknowledgement follows oslo: an RPC request is acknowledged when the dispatcher
//! accepts it (before the handler runs: at-most-once); a notification after its
//! handler, or requeued. Deliveries still in the buffer at `stop()` go back to the
//! broker, and closing the channel at `cleanup()` returns anything else unacknowledged.
//! `cleanup()` also deletes the listener's own queue (an RPC server's fanout queue), as
//! oslo does when it closes a listener's connection.
//!
//! A delivery larger than `max_message_size` is not decoded: a request or reply is
//! dropped, a notification rejected without requeue, with one log line. A request
//! carries its caller's deadline (its AMQP `expiration`, counted from its delivery), so
//! the dispatcher drops it if the caller has given up before a handler takes it.

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
use lapin::types::ShortString;
use lapin::{Channel, Connection};
use messaging_core::dispatch::{block_on, poll_once};
use messaging_core::{
    Acknowledger, IncomingMessage, ListenOptions, Listener, Message, Polled, TransportError,
    Untrusted, caller_deadline,
};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::compression;
use super::connection::{self, classify, fixed, short};
use super::declare::{Declares, Exchange, Queue};
use super::options::Options;
use super::publisher::Publisher;
use super::replier::{RabbitReplier, ReplyLedger};
use super::wire::{self, DuplicateFilter};
use crate::buffer::{Buffer, OnStop};
use crate::consumer::{ConsumerTask, Phase, cleaned_up, stopped};

/// What a listener consumes; its names were checked when the listener was made.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    /// Declared, bound and consumed in this order (a queue listed twice, a pool's, is
    /// consumed once).
    pub(crate) queues: Vec<QueueSpec>,
    /// RPC requests (else notifications).
    pub(crate) rpc: bool,
    /// A queue of this listener alone, deleted at cleanup (an RPC server's fanout
    /// queue).
    pub(crate) own_queue: Option<ShortString>,
    /// The stream queue among `queues` (an RPC server's fanout queue with
    /// `rabbit_stream_fanout`), if any.
    pub(crate) stream_queue: Option<ShortString>,
    /// Where the stream queue's consumer starts after a reconnect: one past the last
    /// offset handed out (oslo's `next_stream_offset`), or at its last chunk before any.
    /// Deliveries still buffered when a connection drops were not handed out, so they
    /// are read again.
    pub(crate) stream_offset: Arc<Mutex<Option<i64>>>,
}

/// A queue, the exchange it is bound to and its binding key.
#[derive(Clone, Debug)]
pub(crate) struct QueueSpec {
    pub(crate) queue: Queue,
    pub(crate) exchange: Exchange,
    pub(crate) key: ShortString,
}

/// A live consuming session.
pub(crate) struct Session {
    connection: Connection,
    channel: Channel,
    /// Each consumer with the queue it consumes.
    consumers: Vec<(ShortString, lapin::Consumer)>,
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
        .map_err(|e| classify("opening a channel", e))?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| classify("setting the prefetch", e))?;
    let mut consumers: Vec<(ShortString, lapin::Consumer)> = Vec::new();
    for spec in &topology.queues {
        let queue = &spec.queue;
        connection::declare_exchange(&channel, &spec.exchange).await?;
        connection::declare_queue(&channel, queue, Some((&spec.exchange.name, &spec.key))).await?;
        if consumers.iter().any(|(name, _)| *name == queue.name) {
            continue;
        }
        let stream = Declares::is_stream(queue);
        let offset = *topology
            .stream_offset
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let arguments = options.declares.consumer_arguments(stream, offset);
        let consumer = channel
            .basic_consume(
                queue.name.clone(),
                fixed(""),
                BasicConsumeOptions::default(),
                arguments.table(),
            )
            .await
            .map_err(|e| classify(&format!("consuming {}", queue.name), e))?;
        consumers.push((queue.name.clone(), consumer));
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
    /// For a call: the caller's reply queue and message id.
    reply: Option<(ShortString, String)>,
    client_timeout: Option<Duration>,
    /// When the caller stops waiting (its request's `expiration` after delivery).
    deadline: Option<Instant>,
    /// Its offset, if it came from the stream queue.
    stream_offset: Option<i64>,
}

/// The lifecycle the consumer task follows.
struct Shared {
    buffer: Buffer<Item>,
    duplicates: Arc<Mutex<DuplicateFilter>>,
    publisher: Arc<Publisher>,
    ledger: Arc<ReplyLedger>,
    max_message_size: usize,
    direct_mandatory: bool,
    reply_retry_for: Duration,
    /// The topology's [`stream_offset`](Topology::stream_offset).
    stream_offset: Arc<Mutex<Option<i64>>>,
    name: String,
}

impl Shared {
    fn incoming(self: &Arc<Self>, item: Item) -> IncomingMessage {
        if let Some(offset) = item.stream_offset {
            let mut next = self.stream_offset.lock().unwrap_or_else(|p| p.into_inner());
            *next = Some(next.unwrap_or(0).max(offset.saturating_add(1)));
        }
        let incoming = IncomingMessage::new(item.message)
            .with_acknowledger(RabbitAck {
                acker: item.acker,
                unique_id: item.unique_id,
                duplicates: self.duplicates.clone(),
            })
            .with_client_timeout(item.client_timeout)
            .with_deadline(item.deadline);
        match item.reply {
            Some((reply_q, msg_id)) => incoming.with_replier(RabbitReplier {
                publisher: self.publisher.clone(),
                ledger: self.ledger.clone(),
                reply_q,
                msg_id,
                deadline: item.deadline,
                max_message_size: self.max_message_size,
                mandatory: self.direct_mandatory,
                retry_for: self.reply_retry_for,
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
    pub(crate) ledger: Arc<ReplyLedger>,
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
            ledger: spec.ledger,
            max_message_size: spec.options.max_message_size,
            direct_mandatory: spec.options.direct_mandatory,
            reply_retry_for: spec.options.missing_consumer_retry_timeout,
            stream_offset: spec.topology.stream_offset.clone(),
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

/// A delivery and the queue it came from.
type Delivered = (ShortString, lapin::message::Delivery);
type Deliveries = Pin<Box<dyn Stream<Item = Result<Delivered, Ended>> + Send>>;

/// Why consuming stopped.
#[derive(Debug)]
enum Ended {
    /// The broker cancelled a consumer: its queue was deleted, or its node went down.
    Cancelled(String),
    /// The channel or connection failed.
    Failed(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Cancelled(tag) => write!(f, "the broker cancelled consumer {tag}"),
            Ended::Failed(error) => f.write_str(error),
        }
    }
}

/// All consumers as one stream. A consumer that ends (the broker cancelled it: its
/// queue was deleted, its node went down) ends with [`Ended::Cancelled`], so that the
/// listener reconnects and consumes again instead of silently missing that queue.
fn merge(consumers: Vec<(ShortString, lapin::Consumer)>) -> Deliveries {
    let mut streams = consumers.into_iter().map(|(queue, consumer)| {
        let tag = consumer.tag().to_string();
        Box::pin(
            consumer
                .map(move |delivery| {
                    delivery
                        .map(|delivery| (queue.clone(), delivery))
                        .map_err(|e| Ended::Failed(e.to_string()))
                })
                .chain(futures_lite::stream::once(Err(Ended::Cancelled(tag)))),
        ) as Deliveries
    });
    let first = streams
        .next()
        .unwrap_or_else(|| Box::pin(futures_lite::stream::pending()));
    streams.fold(first, |merged, next| {
        Box::pin(futures_lite::stream::race(merged, next))
    })
}

/// How long cleanup waits for the broker to delete the listener's own queue.
const DELETE_ON_CLEANUP: Duration = Duration::from_secs(1);

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
    let rpc = topology.rpc;
    'session: loop {
        let mut cancelled = false;
        let tags: Vec<ShortString> = session.consumers.iter().map(|(_, c)| c.tag()).collect();
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
                            .basic_cancel(tag, BasicCancelOptions::default())
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
                Some(Some(Ok((queue, delivery)))) => {
                    // Only the stream queue's own deliveries carry a trusted offset (a
                    // peer may set the header on anything it publishes).
                    let offset = if topology.stream_queue.as_ref() == Some(&queue) {
                        stream_offset(&delivery)
                    } else {
                        None
                    };
                    handle(&shared, rpc, &queue, delivery, offset).await;
                }
                Some(Some(Err(error))) => {
                    tracing::warn!(listener = %shared.name, %error, "consumer failed");
                    cancelled = matches!(error, Ended::Cancelled(_));
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
        let lost = Instant::now();
        if cancelled {
            // oslo's kombu_reconnect_delay (+ splay): give a failover time to settle.
            let (delay, splay) = options.cancel_delay;
            let delay = delay + splay.mul_f64(fastrand::f64());
            let _ = tokio::time::timeout(delay, stopped(&mut phases)).await;
        }
        let mut delays = options.reconnect.delays();
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
                    let delay = delays.next().unwrap_or(options.reconnect.max);
                    tracing::warn!(listener = %shared.name, %error, retry_in = ?delay, "reconnecting");
                    let _ = tokio::time::timeout(delay, stopped(&mut phases)).await;
                }
            }
        };
    }
    // Keep the channel open while notifications taken before the stop are acknowledged;
    // closing it at cleanup returns anything unacknowledged to the broker.
    cleaned_up(&mut phases).await;
    if let Some(queue) = &topology.own_queue
        && session.channel.status().connected()
        && let Err(error) =
            connection::delete_queue(&session.channel, queue, DELETE_ON_CLEANUP).await
    {
        tracing::debug!(listener = %shared.name, %error, "the fanout queue was not deleted");
    }
    let _ = session.channel.close(200, fixed("OK")).await;
    let _ = session.connection.close(200, fixed("OK")).await;
}

/// The `x-stream-offset` RabbitMQ gives every delivery from a stream queue.
fn stream_offset(delivery: &lapin::message::Delivery) -> Option<i64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        lapin::types::AMQPValue::LongLongInt(offset) => Some(*offset),
        lapin::types::AMQPValue::LongInt(offset) => Some(i64::from(*offset)),
        lapin::types::AMQPValue::LongUInt(offset) => Some(i64::from(*offset)),
        _ => None,
    }
}

fn is_duplicate(shared: &Shared, unique_id: Option<&str>) -> bool {
    shared
        .duplicates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .seen(unique_id)
}

/// The caller's deadline: the request's AMQP `expiration` (milliseconds: the time its
/// caller had left when it was published), counted from now, its delivery, less the
/// transit allowance ([`caller_deadline`]).
fn deadline(delivery: &lapin::message::Delivery) -> Option<Instant> {
    let expiration = delivery.properties.expiration().as_ref()?;
    let ms = expiration.as_str().trim().parse::<u64>().ok()?;
    caller_deadline(Instant::now(), Duration::from_millis(ms))
}

async fn handle(
    shared: &Shared,
    rpc: bool,
    queue: &ShortString,
    delivery: lapin::message::Delivery,
    offset: Option<i64>,
) {
    let limit = shared.max_message_size;
    if delivery.data.len() > limit {
        tracing::warn!(
            listener = %shared.name,
            %queue,
            size = delivery.data.len(),
            limit,
            "discarding a message larger than max_message_size"
        );
        let _ = if rpc {
            delivery.acker.ack(BasicAckOptions::default()).await
        } else {
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
        };
        return;
    }
    let data = match compression::body(
        delivery.properties.headers().as_ref(),
        &delivery.data,
        limit,
    ) {
        Ok(data) => data,
        Err(error) => {
            tracing::warn!(listener = %shared.name, %queue, %error, "discarding a message");
            let _ = if rpc {
                delivery.acker.ack(BasicAckOptions::default()).await
            } else {
                delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
            };
            return;
        }
    };
    if rpc {
        match wire::decode_request(&data) {
            Ok(request) => {
                if is_duplicate(shared, request.unique_id.as_deref()) {
                    tracing::info!(listener = %shared.name, "ignoring duplicate message");
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                    return;
                }
                let reply = match (request.reply_q, request.msg_id) {
                    (Some(reply_q), Some(msg_id)) => match short(&reply_q) {
                        Ok(reply_q) if !reply_q.as_str().is_empty() => Some((reply_q, msg_id)),
                        Ok(_) | Err(_) => {
                            tracing::warn!(
                                listener = %shared.name,
                                msg_id = %Untrusted::new(&msg_id),
                                reply_q_bytes = reply_q.len(),
                                "a request's `_reply_q` is not a queue name (empty or over 255 bytes); handling it without a reply"
                            );
                            None
                        }
                    },
                    _ => None,
                };
                shared.buffer.push(Item {
                    deadline: deadline(&delivery),
                    acker: delivery.acker,
                    message: request.message,
                    unique_id: request.unique_id,
                    reply,
                    client_timeout: request
                        .timeout
                        .and_then(|t| Duration::try_from_secs_f64(t).ok()),
                    stream_offset: offset,
                });
            }
            Err(error) => {
                tracing::warn!(listener = %shared.name, %error, "dropping a malformed request");
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        }
    } else {
        match wire::decode_notification(&data) {
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
                    deadline: None,
                    stream_offset: offset,
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
