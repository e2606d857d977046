//! `rabbit://`: RabbitMQ, speaking oslo.messaging's wire protocol, so Rust and Python
//! services share one bus. Enabled by the `rabbit` cargo feature.
//!
//! # URL
//!
//! `rabbit://user:pass@host1:5672,user:pass@host2:5672/vhost?options` (also `kombu://`,
//! `amqp://`, and `amqps://` for TLS). Hosts are tried in order on every (re)connect, or
//! from a random one with `kombu_failover_strategy=shuffle`. No host means
//! `guest:guest@localhost:5672`. Options (oslo's names): `control_exchange` (default
//! `openstack`), `rabbit_qos_prefetch_count` or `prefetch` (default 64),
//! `heartbeat_timeout_threshold` or `heartbeat` (AMQP heartbeat seconds, default 60),
//! `rabbit_transient_queues_ttl` (seconds, default 1800), `kombu_failover_strategy`,
//! `ssl`, `connect_timeout` (seconds), `codec` (`json` only; 0 for the TTL means no
//! expiry), and `queue_ttl` (ours:
//! also expire topic, server and notification queues — for tests on a shared broker).
//! An unknown option is an error.
//!
//! # Topology (oslo's, exactly)
//!
//! | purpose | exchange | queue | binding key |
//! |---|---|---|---|
//! | RPC to the topic | `<exchange or control_exchange>` (topic) | `<topic>` | `<topic>` |
//! | RPC to a server | same | `<topic>.<server>` | `<topic>.<server>` |
//! | fanout | `<topic>_fanout` (fanout, auto-delete) | `<topic>_fanout_<hex>` (`x-expires`) | `<topic>` |
//! | replies | default exchange | `reply_<hex>` per transport, reused (`x-expires`) | — |
//! | notifications | `<exchange or control_exchange>` (topic) | `<topic>.<priority>`, or `<pool>` | `<topic>.<priority>` |
//!
//! Exchanges and queues are not durable and not auto-deleted unless said; the notifier
//! declares the `<topic>.<priority>` queue so notifications persist before a listener.
//! Messages are JSON in oslo's 2.0 envelope (see the `wire` module), published with
//! `application/json`, `utf-8`, delivery mode 2, and for calls an expiration equal to
//! the call's timeout; replies are mandatory.
//!
//! # Delivery and faults
//!
//! Publishing uses publisher confirms, pipelined: a send returns once the broker has
//! the frame, and a message the broker nacks, returns (a mandatory reply whose queue is
//! missing: retried every 250 ms for a minute, as oslo does) or loses with its channel
//! is published again until its deadline; receivers drop the rare duplicate by
//! `_unique_id`. Errors no retry can fix (access refused, precondition failed: e.g. an
//! exchange another service declared durable) fail at once. Dropping the transport
//! waits up to 5 s for outstanding confirms.
//!
//! RPC requests are acknowledged on receipt (at-most-once); notifications after
//! dispatch, or requeued. A listener holds at most `prefetch` unacknowledged messages
//! per queue. When a connection drops, listeners reconnect with backoff (100 ms
//! doubling to 5 s) and consume again; publishes retry until their deadline; a pending
//! call gets its reply or fails with a timeout, never later. `stop()` + `wait()` during
//! a reconnect complete.
//!
//! The transport runs lapin on its own small tokio runtime (two threads); its futures
//! can be awaited from any runtime or blocked on.

mod connection;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod listener;
mod options;
mod publisher;
mod replies;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use messaging_core::codec::CodecKind;
use messaging_core::dispatch::block_on;
use messaging_core::reply::{ReplyReceiver, reply_channel};
use messaging_core::{
    ListenOptions, Listener, Message, Priority, SendOptions, Subscription, Target, Transport,
    TransportError, TransportUrl, ids,
};
use tokio::runtime::{Handle, Runtime};

pub use listener::RabbitListener;
use listener::Topology;
use options::Options;
use publisher::{Declare, Publish, Publisher};
use replies::Replies;

use connection::Kind;

/// The RabbitMQ transport. Cloning shares its connections.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), messaging_core::TransportError> {
/// let transport = messaging_transports::open("rabbit://guest:guest@127.0.0.1:5672/")?;
/// assert_eq!(transport.name(), "rabbit");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RabbitTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: TransportUrl,
    options: Options,
    runtime: Option<Runtime>,
    handle: Handle,
    publisher: Arc<Publisher>,
    replies: Arc<Replies>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the broker confirm what was published (a short-lived process would
        // otherwise exit with its last casts unconfirmed, possibly unsent).
        let publisher = self.publisher.clone();
        let settled = self.handle.spawn(async move { publisher.settle().await });
        let _ = block_on(messaging_core::timer::timeout(
            Duration::from_secs(5),
            settled,
        ));
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl RabbitTransport {
    /// A transport for the URL; see the module docs. Connections are opened on first
    /// use, so this fails only on a malformed URL.
    pub fn open(url: &TransportUrl) -> Result<Self, TransportError> {
        let options = Options::from_url(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("messaging-rabbit")
            .enable_all()
            .build()
            .map_err(|e| {
                TransportError::other(format!("cannot start the RabbitMQ runtime: {e}"))
            })?;
        let handle = runtime.handle().clone();
        Ok(RabbitTransport {
            inner: Arc::new(Inner {
                url: url.clone(),
                publisher: Arc::new(Publisher::new(options.clone(), handle.clone())),
                replies: Arc::new(Replies::new(options.clone())),
                options,
                runtime: Some(runtime),
                handle,
            }),
        })
    }

    fn exchange(&self, target: &Target) -> String {
        target
            .exchange
            .clone()
            .unwrap_or_else(|| self.inner.options.control_exchange.clone())
    }

    /// Where an RPC message goes: exchange, routing key, and what must exist.
    fn route(&self, target: &Target) -> (String, String, Vec<Declare>) {
        let topic = target.topic.clone().unwrap_or_default();
        if target.fanout {
            let exchange = format!("{topic}_fanout");
            let declare = vec![Declare::Exchange(exchange.clone(), Kind::Fanout)];
            return (exchange, String::new(), declare);
        }
        let exchange = self.exchange(target);
        let key = match &target.server {
            Some(server) => format!("{topic}.{server}"),
            None => topic,
        };
        let declare = vec![Declare::Exchange(exchange.clone(), Kind::Topic)];
        (exchange, key, declare)
    }

    /// Runs a future on the transport's runtime and awaits it from anywhere.
    async fn run<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T, TransportError>> + Send + 'static,
    ) -> Result<T, TransportError> {
        self.inner
            .handle
            .spawn(future)
            .await
            .map_err(|e| TransportError::other(format!("the RabbitMQ task failed: {e}")))?
    }
}

fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

fn wire_error(e: wire::WireError) -> TransportError {
    TransportError::other(e.to_string())
}

#[async_trait]
impl Transport for RabbitTransport {
    fn name(&self) -> &'static str {
        "rabbit"
    }

    fn url(&self) -> &TransportUrl {
        &self.inner.url
    }

    fn codec(&self) -> CodecKind {
        CodecKind::Json
    }

    async fn cast(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        let (exchange, routing_key, declare) = self.route(target);
        let body = wire::encode_request(&message, None, &ids::hex_id()).map_err(wire_error)?;
        let publish = Publish {
            exchange,
            routing_key,
            body,
            expiration: None,
            mandatory: false,
            declare,
        };
        self.inner
            .publisher
            .publish(publish, options.retry, deadline(options.timeout))
            .await
    }

    async fn call(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<ReplyReceiver, TransportError> {
        target.validate_for_call()?;
        let (exchange, routing_key, declare) = self.route(target);
        let (publisher, replies) = (&self.inner.publisher, &self.inner.replies);
        let (retry, timeout, monitor) =
            (options.retry, options.timeout, options.call_monitor_timeout);
        let deadline = deadline(timeout);
        if !replies.is_started() {
            // Declaring and consuming the reply queue needs the transport's runtime.
            let replies = replies.clone();
            self.run(async move { replies.ensure_started().await })
                .await?;
        }
        {
            let msg_id = ids::hex_id();
            let call = wire::CallInfo {
                msg_id: &msg_id,
                reply_q: replies.queue(),
                timeout: monitor.map(|t| t.as_secs_f64()),
            };
            let body =
                wire::encode_request(&message, Some(&call), &ids::hex_id()).map_err(wire_error)?;
            let (sender, receiver) = reply_channel();
            replies.expect(msg_id.clone(), sender);
            let publish = Publish {
                exchange,
                routing_key,
                body,
                expiration: timeout,
                mandatory: false,
                declare,
            };
            if let Err(error) = publisher.publish(publish, retry, deadline).await {
                replies.forget(&msg_id);
                return Err(error);
            }
            Ok(receiver)
        }
    }

    async fn notify(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        let exchange = self.exchange(target);
        let key = format!(
            "{}.{}",
            target.topic.as_deref().unwrap_or_default(),
            priority.as_str()
        );
        let body = wire::encode_notification(&message, &ids::hex_id()).map_err(wire_error)?;
        let publish = Publish {
            exchange: exchange.clone(),
            routing_key: key.clone(),
            body,
            expiration: None,
            mandatory: false,
            declare: vec![Declare::Queue {
                queue: key.clone(),
                expires_ms: self.inner.options.queue_ttl_ms,
                exchange,
                key,
            }],
        };
        self.inner
            .publisher
            .publish(publish, None, deadline(Some(Duration::from_secs(60))))
            .await
    }

    fn listen(
        &self,
        subscription: &Subscription,
        options: &ListenOptions,
    ) -> Result<Box<dyn Listener>, TransportError> {
        subscription.validate()?;
        let topology = match subscription {
            Subscription::Rpc(target) => {
                let topic = target.topic.clone().unwrap_or_default();
                Topology::Rpc {
                    exchange: self.exchange(target),
                    fanout_queue: format!("{topic}_fanout_{}", ids::hex_id()),
                    topic,
                    server: target.server.clone().unwrap_or_default(),
                }
            }
            Subscription::Notifications {
                targets,
                priorities,
                pool,
            } => Topology::Notifications {
                bindings: targets
                    .iter()
                    .flat_map(|target| {
                        priorities.iter().map(move |priority| {
                            (
                                self.exchange(target),
                                format!(
                                    "{}.{}",
                                    target.topic.as_deref().unwrap_or_default(),
                                    priority.as_str()
                                ),
                            )
                        })
                    })
                    .collect(),
                pool: pool.clone(),
            },
            other => {
                return Err(TransportError::other(format!(
                    "unsupported subscription {other}"
                )));
            }
        };
        let prefetch = self
            .inner
            .options
            .prefetch
            .max(options.batch_size.min(u16::MAX as usize) as u16);
        let (opts, topo) = (self.inner.options.clone(), topology.clone());
        let session = block_on(
            self.inner
                .handle
                .spawn(async move { listener::open_session(&opts, &topo, prefetch).await }),
        )
        .map_err(|e| TransportError::other(format!("the RabbitMQ task failed: {e}")))??;
        let spec = listener::Spec {
            options: self.inner.options.clone(),
            topology,
            prefetch,
            publisher: self.inner.publisher.clone(),
            runtime: self.inner.handle.clone(),
            name: subscription.to_string(),
        };
        Ok(Box::new(RabbitListener::start(session, spec, options)))
    }
}
