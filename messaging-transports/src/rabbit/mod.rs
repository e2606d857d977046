//! `rabbit://`: RabbitMQ, speaking oslo.messaging's wire protocol, so Rust and Python
//! services share one bus. Enabled by the `rabbit` cargo feature.
//!
//! # URL
//!
//! `rabbit://user:pass@host1:5672,user:pass@host2:5672/vhost?options` (also `kombu://`,
//! `amqp://`, and `amqps://` for TLS). Hosts are tried in order on every (re)connect, or
//! from a random one with `kombu_failover_strategy=shuffle`. No host means
//! `guest:guest@localhost:5672`. Options (oslo's names): `control_exchange` (default
//! `openstack`; the rules of a target's exchange name), `rabbit_qos_prefetch_count` or
//! `prefetch` (default 64), `heartbeat_timeout_threshold` or `heartbeat` (AMQP
//! heartbeat seconds, default 60), `rabbit_transient_queues_ttl` (seconds, default
//! 1800; 0 means no expiry), `amqp_durable_queues` (default false; see below),
//! `kombu_failover_strategy`, `ssl`, `connect_timeout` (seconds), `codec` (`json`
//! only), `max_message_size` (bytes, default 134217728 = 128 MiB, RabbitMQ 3.x's own
//! default; at most 512 MiB), and `queue_ttl` (ours: also expire topic, server and
//! notification queues — for tests on a shared broker). oslo's queue options, with
//! oslo's defaults: `amqp_durable_queues`, `amqp_auto_delete`, `rabbit_ha_queues`,
//! `rabbit_quorum_queue`, `rabbit_transient_quorum_queue`,
//! `rabbit_quorum_delivery_limit`, `rabbit_quorum_max_memory_length`,
//! `rabbit_quorum_max_memory_bytes`, `rabbit_stream_fanout` (needs
//! `rabbit_transient_quorum_queue`, as in oslo) and `enable_cancel_on_failover`;
//! `use_queue_manager` (with `hostname`, default the machine's, and `processname`,
//! default the program's file name) names reply and fanout queues
//! `reply_<hostname>:<processname>:<n>` and `<topic>_fanout_<hostname>:<processname>:<n>`
//! instead of random hex, `n` counted per service generation as oslo's `QManager`
//! does, so a restarted service uses the same queues again.
//! `kombu_compression=gzip` compresses every body sent as kombu does (zlib,
//! `compression: application/x-gzip`); bodies received compressed are read whatever
//! the option says, inflating to at most `max_message_size` (see the `compression`
//! module; kombu's `bz2`, `lzma`, `brotli`, `zstd` are not available: an error to
//! ask for, a discarded message to receive).
//! Booleans are oslo.config's (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, any
//! case). An unknown option, or a combination oslo refuses (quorum with HA queues), is
//! an error. `direct_mandatory_flag` (default true): see Delivery. Listeners and the
//! reply consumer reconnect as oslo does: a lost connection is retried at once, then after `rabbit_retry_interval` (1 s)
//! growing by `rabbit_retry_backoff` (2 s) up to `rabbit_interval_max` (30 s); after the
//! broker cancelled a consumer (its queue deleted, its node down) a listener waits
//! `kombu_reconnect_delay` (1 s, at most 4.5) plus up to `kombu_reconnect_splay` (0)
//! before consuming again; a reply to a missing queue is retried for at most
//! `kombu_missing_consumer_retry_timeout` (or `kombu_reconnect_timeout`, 60 s).
//! `heartbeat_rate` is checked and otherwise unused: lapin sends heartbeats on its own
//! schedule, every half `heartbeat_timeout_threshold`.
//!
//! ## TLS
//!
//! `amqps://` or `ssl=true` connect over TLS (rustls), checking the broker's
//! certificate against the system's roots plus `ssl_ca_file` (PEM) and its name against
//! the host connected to (a certificate for `localhost` does not do for `127.0.0.1`).
//! `ssl_cert_file` + `ssl_key_file` (PEM; PKCS#8, PKCS#1 or SEC1 keys) present a client
//! certificate, and `rabbit_login_method=EXTERNAL` logs in as its identity (the broker's
//! `rabbitmq_auth_mechanism_ssl`); `AMQPLAIN` (oslo's default) and `PLAIN` send the
//! URL's user and password. `ssl_version` may be `TLSv1_2` or `TLSv1_3`: rustls
//! negotiates the highest both sides speak and never goes below 1.2, so older values
//! are errors, and so is `ssl_enforce_hostname_verification=false`, which rustls cannot
//! do. The files are read when the transport is opened: a missing or non-PEM file, or
//! one larger than 8 MiB (`/dev/zero`), is an
//! [`TransportError::InvalidUrl`] naming the option and the path, never the contents. A
//! certificate the other side rejects (an unknown issuer, another name, an expired
//! certificate) is a [`TransportError::Refused`] at once, not retried: measured 40–200
//! ms against a local node.
//!
//! # Topology (oslo's, exactly)
//!
//! | purpose | exchange | queue | binding key |
//! |---|---|---|---|
//! | RPC to the topic | `<exchange or control_exchange>` (topic) | `<topic>` | `<topic>` |
//! | RPC to a server | same | `<topic>.<server>` | `<topic>.<server>` |
//! | fanout | `<topic>_fanout` (fanout, auto-delete) | `<topic>_fanout_<hex>` (`x-expires`), or with stream fanout `<topic>_fanout` (a stream the topic's servers share) | `<topic>` |
//! | replies | default exchange | `reply_<hex>` per transport, reused (`x-expires`) | — |
//! | notifications | `<exchange or control_exchange>` (topic) | `<topic>.<priority>`, or `<pool>` | `<topic>.<priority>` |
//!
//! What each option declares (durability, auto-delete, `x-queue-type`,
//! `x-delivery-limit`, `x-max-in-memory-*`, `x-expires`, `x-max-age`, `x-ha-policy`,
//! consumer arguments `x-stream-offset` and `x-cancel-on-ha-failover`) is oslo 18.x's,
//! object by object: see the table in the `declare` module; a broker test compares a
//! Python and a Rust service's declarations for eight option sets. In short, with the
//! defaults nothing is durable or auto-deleted; `amqp_durable_queues` or
//! `rabbit_quorum_queue` make the topic exchanges and the topic, server and
//! notification queues durable (every service on the bus must agree: RabbitMQ refuses
//! to declare an existing exchange or queue with other properties; see Migrating);
//! `rabbit_transient_quorum_queue` makes reply and fanout queues quorum queues. The
//! notifier declares the `<topic>.<priority>` queue so notifications persist before a
//! listener. A stream fanout consumer starts at the stream's last chunk (oslo's
//! `x-stream-offset: last`: a server that starts may be handed fanouts published
//! shortly before it did), and after a reconnect one past the last offset it handed
//! out.
//!
//! ## Migrating
//!
//! RabbitMQ keeps an exchange or queue as first declared. Declaring it again with other
//! properties fails with 406 PRECONDITION_FAILED, which this transport reports as
//! [`TransportError::Refused`] naming the object, the property and the options that
//! decide it. Turning `rabbit_quorum_queue` on for a bus that runs with the defaults
//! therefore means, as with oslo: stop the services of the exchange, delete its
//! non-durable exchange and queues (`rabbitmqctl delete_queue`, or a policy), and start
//! them all with the new options. (oslo 18.3.1 falls back to a non-durable exchange
//! there and then fails on its quorum queue; this transport fails on the exchange,
//! saying so.)
//!
//! # Messages
//!
//! Messages are JSON in oslo's 2.0 envelope (see the `wire` module), except
//! notifications sent with [`NotificationFormat::V1`](messaging_core::NotificationFormat)
//! (oslo's `messaging` driver: the same JSON object without the envelope); both are
//! read. They are published with
//! `application/json`, `utf-8`, delivery mode 2 (persistent), and for calls an
//! expiration of the time left until the call's timeout.
//!
//! Names: every queue, exchange and routing key is at most 255 bytes (AMQP's short
//! string). Core refuses longer target names and the binding-key wildcards `*` and `#`;
//! a name this transport composes from valid ones that would be too long
//! (`<topic>.<server>`, `<topic>_fanout`, `<topic>_fanout_<32 hex digits>`,
//! `<topic>.<priority>`, a pool) is a [`TransportError::InvalidTarget`] from `cast`,
//! `call`, `notify` and `listen`. A `_reply_q` from the wire that is no queue name
//! (empty, or over 255 bytes) is handled as a request without a reply, with one log
//! line. Binding keys are only ever `<topic>`, `<topic>.<server>` and
//! `<topic>.<priority>`, all from checked names.
//!
//! # Delivery
//!
//! A cast to a topic or server, and a call, are published *mandatory* with publisher
//! confirms, and the send returns only once the broker confirmed the message and no
//! queue returned it: when the library says a message was sent, a queue took it. A
//! message the broker returns (no queue is bound to its routing key: a topic nobody
//! serves, or servers re-declaring their queues after a broker restart), nacks (then
//! on a new channel: a RabbitMQ 3.10 channel whose first publish to a quorum queue
//! found the node of its leader killed nacks every later one there), or
//! loses with its channel is published again, with backoff (100 ms doubling to 5 s),
//! within the send's budget: [`SendOptions::retry`] retries (`None`: no limit) and its
//! deadline ([`SendOptions::timeout`], 60 s when unset). When the budget runs out a
//! returned message fails with [`TransportError::Undeliverable`], anything else with
//! the last error, or [`TransportError::TimedOut`] when no attempt ended before the
//! deadline (a broker that does not answer). A call retries until its own timeout, so
//! a call nobody takes ends in the caller's timeout, as in oslo; with a retry limit it
//! fails with `Undeliverable` as soon as the limit is reached; with
//! [`SendOptions::at_least_once`] (oslo's `TransportOptions(at_least_once=True)`,
//! `RpcClient::with_at_least_once`) a call or cast no queue takes fails with
//! `Undeliverable` at once (measured: 0.7–180 ms against a 20 s timeout). A fanout
//! cast is not mandatory: a fanout to no server at all is not an error. Notifications
//! are confirmed too, within the budget of [`Transport::notify_with`]'s options (60 s
//! for [`Transport::notify`]). Receivers drop the rare duplicate a retry makes by
//! `_unique_id`. A send
//! dropped before it returns (a caller's timeout) may or may not have been delivered,
//! and is not retried further.
//!
//! A message confirmed into a queue that is not durable is still lost if the broker
//! deletes that queue before a consumer takes it (a broker restart deletes every
//! non-durable queue, with what it holds at that instant); `amqp_durable_queues=true`
//! keeps queues and their persistent messages across restarts.
//!
//! The cost: a send waits for the broker's confirm, one round trip. Sequential blocking
//! casts from one thread measured (debug build, 2 shared cores, local broker) 0.8–1.3
//! ms each, against 0.6–0.7 ms when a cast returned as soon as its frame was written.
//! Concurrent sends are not serialized: each waits for its own confirm, and up to 1024
//! messages are in flight on the channel at once (400 casts from one async caller:
//! 0.26–0.6 ms each; from 8 threads: 0.33–0.9 ms each). Senders that need throughput
//! send concurrently.
//!
//! Errors no retry can fix fail at once with [`TransportError::Refused`], logged by
//! nobody but the caller (lapin adds one line when the refusal closes a channel):
//! ACCESS_REFUSED (a wrong user or password, also at login, or no permission on a
//! resource), NOT_ALLOWED (an unknown virtual host), RESOURCE_LOCKED, and
//! PRECONDITION_FAILED (e.g. an exchange another service declared durable).
//! [`TransportError::MessageTooLarge`] refuses a message whose encoded body exceeds
//! `max_message_size` before anything is published.
//!
//! Replies are mandatory (unless `direct_mandatory_flag=false`, oslo's deprecated
//! switch: the broker then drops a reply whose queue is gone, silently) and sent
//! without blocking the handler. A reply whose queue
//! is missing is retried with backoff (at most 15 times) while the caller still waits
//! — until the deadline its request carried (the AMQP expiration), and never longer
//! than `kombu_missing_consumer_retry_timeout` (60 s) — then dropped with one log line, never with its contents. A reply queue
//! found missing is remembered for 60 s (the last 200, as oslo's
//! `ObsoleteReplyQueuesCache`), so later replies to it are dropped at once.
//!
//! # Receiving
//!
//! RPC requests are acknowledged when the dispatcher accepts them (at-most-once);
//! notifications after dispatch, or requeued. A listener holds at most `prefetch`
//! unacknowledged messages per queue. A request carries its caller's deadline (its
//! expiration, counted from delivery), so one whose caller gave up while it waited is
//! dropped before a handler takes it. A delivery larger than `max_message_size` is
//! never decoded: a request or reply is dropped, a notification rejected without
//! requeue, each with one warning naming size, limit and queue.
//!
//! # Faults and cleanup
//!
//! When a connection drops, listeners and the reply consumer reconnect on oslo's
//! schedule (see URL) and consume again; sends retry within their budget (100 ms
//! doubling to 5 s between attempts, as they must also meet their deadline); a pending call gets its reply
//! or fails with a timeout, never later. `stop()` + `wait()` during a reconnect
//! complete. Cleaning up a server's listener deletes its fanout queue (as oslo does
//! when it closes the listener's connection). Dropping the last clone of the transport
//! waits up to 5 s for outstanding confirms, then deletes the transport's reply queue
//! (waiting at most 1 s more; a queue the broker cannot be asked about expires after
//! `rabbit_transient_queues_ttl`).
//!
//! In a cluster, name every node in the URL: each (re)connect tries them in order.
//! Tested against three nodes with quorum queues (`tests/rabbit_cluster.rs` in
//! messaging-testkit, oslo's failover test): with the node that clients, a server and
//! a listener are connected to stopped (`stop_app`) or killed (`kill -9`), one node at a
//! time, they fail over and handle again after a pause of 0.1–0.7 s (measured; once
//! 4.4 s, when a listener's first reconnect failed and oslo's schedule waited), no
//! confirmed cast or notification is lost, no call hangs (one in about 4,000 ended in
//! its timeout), and a call whose handler ran across the fault is answered. A publish RabbitMQ nacks is retried on a new channel
//! (see Delivery).
//!
//! The transport runs lapin on its own small tokio runtime (two threads); its futures
//! can be awaited from any runtime or blocked on. (The workspace patches lapin so that
//! it never logs a returned message's body, nor at error level errors it also
//! returns: `vendor/lapin/PATCHED.md`.)

mod compression;
mod connection;
mod declare;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod listener;
mod options;
mod publisher;
mod queue_manager;
mod replier;
mod replies;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::types::ShortString;
use messaging_core::codec::CodecKind;
use messaging_core::dispatch::block_on;
use messaging_core::reply::{ReplyReceiver, reply_channel};
use messaging_core::{
    InvalidTarget, ListenOptions, Listener, Message, Priority, SendOptions, Subscription, Target,
    Transport, TransportError, TransportUrl, ids,
};
use tokio::runtime::{Handle, Runtime};

use connection::{TooLong, short};
use declare::Declares;
pub use listener::RabbitListener;
use listener::{QueueSpec, Topology};
pub(crate) use options::KNOWN as KNOWN_OPTIONS;
use options::Options;

/// Checks a URL's options as opening a transport does, without opening one.
pub(crate) fn check(url: &TransportUrl) -> Result<(), TransportError> {
    Options::from_url(url).map(drop)
}
use publisher::{Budget, Declare, Publish, Publisher};
use replier::ReplyLedger;
use replies::Replies;

/// The RabbitMQ transport. Cloning shares its connections.
///
/// Dropping the last clone waits up to 5 s for the broker to confirm what was
/// published, then deletes the transport's reply queue (waiting at most 1 s more).
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
    /// Reply queues found gone, shared by this transport's servers.
    replies_sent: Arc<ReplyLedger>,
}

/// How long dropping a transport waits for confirms, and then for its reply queue to
/// be deleted.
const SETTLE_ON_DROP: Duration = Duration::from_secs(5);
const DELETE_ON_DROP: Duration = Duration::from_secs(1);

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the broker confirm what was published (a short-lived process would
        // otherwise exit with its last casts unconfirmed, possibly unsent).
        let publisher = self.publisher.clone();
        let settled = self.handle.spawn(async move { publisher.settle().await });
        let _ = block_on(messaging_core::timer::timeout(SETTLE_ON_DROP, settled));
        // Nobody can wait for a reply any more: the reply queue goes (late replies
        // then come back to their servers, which drop them).
        let replies = self.replies.clone();
        let closed = self
            .handle
            .spawn(async move { replies.close(DELETE_ON_DROP).await });
        let _ = block_on(messaging_core::timer::timeout(
            DELETE_ON_DROP + Duration::from_millis(100),
            closed,
        ));
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Where an RPC message goes, and what must exist first.
struct Route {
    exchange: ShortString,
    routing_key: ShortString,
    declare: Vec<Declare>,
}

/// A name composed from `target` (`<topic>.<server>`, `<topic>_fanout`, ...) as an AMQP
/// short string, or [`InvalidTarget`] if it is longer than AMQP allows.
fn name(what: &str, value: &str, target: &Target) -> Result<ShortString, TransportError> {
    short(value).map_err(|TooLong(len)| {
        InvalidTarget::new(
            format!("the RabbitMQ {what} would be {len} bytes long (AMQP allows at most 255)"),
            target,
        )
        .into()
    })
}

/// The routing key (and pool-less queue name) of `target`'s notifications of
/// `priority`: `<topic>.<priority>`.
fn notification_key(target: &Target, priority: Priority) -> Result<ShortString, TransportError> {
    name(
        "routing key `<topic>.<priority>`",
        &format!(
            "{}.{}",
            target.topic.as_deref().unwrap_or_default(),
            priority.as_str()
        ),
        target,
    )
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
                replies: Arc::new(Replies::new(options.clone())?),
                replies_sent: Arc::new(ReplyLedger::new()),
                options,
                runtime: Some(runtime),
                handle,
            }),
        })
    }

    fn declares(&self) -> &Declares {
        &self.inner.options.declares
    }

    fn exchange(&self, target: &Target) -> Result<ShortString, TransportError> {
        let exchange = target
            .exchange
            .as_deref()
            .unwrap_or(&self.inner.options.control_exchange);
        name("exchange name", exchange, target)
    }

    /// Where an RPC message goes: exchange, routing key, and what must exist.
    fn route(&self, target: &Target) -> Result<Route, TransportError> {
        let topic = target.topic.as_deref().unwrap_or_default();
        if target.fanout {
            let exchange = name(
                "fanout exchange name `<topic>_fanout`",
                &format!("{topic}_fanout"),
                target,
            )?;
            return Ok(Route {
                declare: vec![Declare::Exchange(
                    self.declares().fanout_exchange(exchange.clone()),
                )],
                exchange,
                routing_key: ShortString::default(),
            });
        }
        let exchange = self.exchange(target)?;
        let routing_key = match &target.server {
            Some(server) => name(
                "routing key `<topic>.<server>`",
                &format!("{topic}.{server}"),
                target,
            )?,
            None => name("routing key", topic, target)?,
        };
        Ok(Route {
            declare: vec![Declare::Exchange(
                self.declares().topic_exchange(exchange.clone()),
            )],
            exchange,
            routing_key,
        })
    }

    /// Refuses a body larger than `max_message_size` before anything is published.
    fn check_size(&self, body: &[u8]) -> Result<(), TransportError> {
        let limit = self.inner.options.max_message_size;
        if body.len() > limit {
            return Err(TransportError::MessageTooLarge {
                size: body.len(),
                limit,
            });
        }
        Ok(())
    }

    /// The queues an RPC server consumes: `<topic>`, `<topic>.<server>` and its
    /// fanout queue (its own, or with stream fanout the topic's stream).
    fn rpc_topology(&self, target: &Target) -> Result<Topology, TransportError> {
        let declares = self.declares();
        let topic_name = target.topic.as_deref().unwrap_or_default();
        let server = target.server.as_deref().unwrap_or_default();
        let exchange = declares.topic_exchange(self.exchange(target)?);
        let topic = name("queue name", topic_name, target)?;
        let server_queue = name(
            "queue name `<topic>.<server>`",
            &format!("{topic_name}.{server}"),
            target,
        )?;
        let fanout_exchange = name(
            "fanout exchange name `<topic>_fanout`",
            &format!("{topic_name}_fanout"),
            target,
        )?;
        let unique = match &self.inner.options.queue_manager {
            Some(manager) => manager.next().map_err(|e| {
                TransportError::other(format!("use_queue_manager: cannot count queue names: {e}"))
            })?,
            None => ids::hex_id(),
        };
        let fanout_queue = name(
            if declares.fanout_queue_is_own() {
                "fanout queue name `<topic>_fanout_<32 hex digits or queue manager name>`"
            } else {
                "stream fanout queue name `<topic>_fanout`"
            },
            &declares.fanout_queue_name(topic_name, &unique),
            target,
        )?;
        Ok(Topology {
            queues: vec![
                QueueSpec {
                    queue: declares.topic_queue(topic.clone()),
                    exchange: exchange.clone(),
                    key: topic.clone(),
                },
                QueueSpec {
                    queue: declares.topic_queue(server_queue.clone()),
                    exchange,
                    key: server_queue,
                },
                QueueSpec {
                    queue: declares.fanout_queue(fanout_queue.clone()),
                    exchange: declares.fanout_exchange(fanout_exchange),
                    key: topic,
                },
            ],
            rpc: true,
            stream_queue: (!declares.fanout_queue_is_own()).then(|| fanout_queue.clone()),
            own_queue: declares.fanout_queue_is_own().then_some(fanout_queue),
            stream_offset: Arc::default(),
        })
    }

    /// The queues a notification listener consumes: one per `<topic>.<priority>`, or
    /// the pool's queue bound with every key.
    fn notification_topology(
        &self,
        targets: &[Target],
        priorities: &[Priority],
        pool: Option<&str>,
    ) -> Result<Topology, TransportError> {
        let declares = self.declares();
        let mut queues = Vec::new();
        for target in targets {
            let exchange = declares.topic_exchange(self.exchange(target)?);
            let pool = pool
                .map(|pool| name("pool queue name", pool, target))
                .transpose()?;
            for priority in priorities {
                let key = notification_key(target, *priority)?;
                queues.push(QueueSpec {
                    queue: declares.topic_queue(pool.clone().unwrap_or_else(|| key.clone())),
                    exchange: exchange.clone(),
                    key,
                });
            }
        }
        Ok(Topology {
            queues,
            rpc: false,
            own_queue: None,
            stream_queue: None,
            stream_offset: Arc::default(),
        })
    }
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

    /// Returns once the broker confirmed the message and, unless it is a fanout, a
    /// queue took it; see the module docs.
    async fn cast(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        let budget = Budget::new(options.retry, options.timeout);
        let route = self.route(target)?;
        let body = wire::encode_request(&message, None, &ids::hex_id()).map_err(wire_error)?;
        self.check_size(&body)?;
        let publish = Publish {
            exchange: route.exchange,
            routing_key: route.routing_key,
            body,
            expires: None,
            // A fanout to no server at all is not an error.
            mandatory: !target.fanout,
            returned_is_final: options.at_least_once,
            declare: route.declare,
        };
        self.inner.publisher.publish(&publish, budget).await
    }

    /// Returns once a queue took the request (see the module docs); a request no
    /// queue takes is retried until the call's timeout.
    async fn call(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<ReplyReceiver, TransportError> {
        target.validate_for_call()?;
        let budget = Budget::new(options.retry, options.timeout);
        let route = self.route(target)?;
        let replies = &self.inner.replies;
        if !replies.is_started() {
            // Declaring and consuming the reply queue needs the transport's runtime.
            let replies = replies.clone();
            self.inner
                .handle
                .spawn(async move { replies.ensure_started().await })
                .await
                .map_err(|e| TransportError::other(format!("the RabbitMQ task failed: {e}")))??;
        }
        let msg_id = ids::hex_id();
        let call = wire::CallInfo {
            msg_id: &msg_id,
            // Named once started (above); an unnamed queue would make a call without
            // a reply, which times out.
            reply_q: replies.queue().map_or("", |q| q.as_str()),
            timeout: options.call_monitor_timeout.map(|t| t.as_secs_f64()),
        };
        let body =
            wire::encode_request(&message, Some(&call), &ids::hex_id()).map_err(wire_error)?;
        self.check_size(&body)?;
        let (sender, receiver) = reply_channel();
        replies.expect(msg_id.clone(), sender);
        let publish = Publish {
            exchange: route.exchange,
            routing_key: route.routing_key,
            body,
            // The broker drops a request nobody waits for any more.
            expires: options.timeout.map(|_| budget.deadline),
            mandatory: true,
            returned_is_final: options.at_least_once,
            declare: route.declare,
        };
        if let Err(error) = self.inner.publisher.publish(&publish, budget).await {
            replies.forget(&msg_id);
            return Err(error);
        }
        Ok(receiver)
    }

    /// Returns once the broker confirmed the notification (stored in the
    /// `<topic>.<priority>` queue the notifier declares); retried for up to 60 s.
    async fn notify(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
    ) -> Result<(), TransportError> {
        self.notify_with(target, priority, message, &SendOptions::default())
            .await
    }

    /// [`notify`](Transport::notify), retried within the options' timeout (60 s when
    /// none) and retries, in their notification format.
    async fn notify_with(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        let budget = Budget::new(options.retry, options.timeout);
        let exchange = self.exchange(target)?;
        let key = notification_key(target, priority)?;
        let body = wire::encode_notification(&message, &ids::hex_id(), options.notification_format)
            .map_err(wire_error)?;
        self.check_size(&body)?;
        let publish = Publish {
            exchange: exchange.clone(),
            routing_key: key.clone(),
            body,
            expires: None,
            mandatory: false,
            returned_is_final: false,
            declare: vec![Declare::Queue {
                queue: self.declares().topic_queue(key.clone()),
                exchange: self.declares().topic_exchange(exchange),
                key,
            }],
        };
        self.inner.publisher.publish(&publish, budget).await
    }

    fn listen(
        &self,
        subscription: &Subscription,
        options: &ListenOptions,
    ) -> Result<Box<dyn Listener>, TransportError> {
        subscription.validate()?;
        let topology = match subscription {
            Subscription::Rpc(target) => self.rpc_topology(target)?,
            Subscription::Notifications {
                targets,
                priorities,
                pool,
            } => self.notification_topology(targets, priorities, pool.as_deref())?,
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
            ledger: self.inner.replies_sent.clone(),
            runtime: self.inner.handle.clone(),
            name: subscription.to_string(),
        };
        Ok(Box::new(RabbitListener::start(session, spec, options)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(url: &str) -> RabbitTransport {
        RabbitTransport::open(&TransportUrl::parse(url).unwrap()).unwrap()
    }

    fn invalid_target(result: Result<impl std::fmt::Debug, TransportError>) -> String {
        match result {
            Err(TransportError::InvalidTarget(e)) => e.reason().to_owned(),
            other => panic!("expected InvalidTarget, got {other:?}"),
        }
    }

    /// Every name the transport composes is checked before lapin sees it: a target
    /// whose names are each valid but compose into more than 255 bytes is refused with
    /// a typed error, never a panic, for sending and for listening.
    #[test]
    fn composed_names_longer_than_amqp_allows_are_invalid_targets() {
        let rabbit = transport("rabbit://127.0.0.1:1/");
        let topic = "t".repeat(250);
        let server = Target::new(topic.clone()).with_server("server-1");
        assert!(invalid_target(rabbit.route(&server).map(|_| ())).contains("<topic>.<server>"));
        let fanout = Target::new(topic.clone()).with_fanout(true);
        assert!(invalid_target(rabbit.route(&fanout).map(|_| ())).contains("<topic>_fanout"));
        assert!(rabbit.route(&Target::new(topic.clone())).is_ok());
        // listening: the topic fits, its fanout queue does not.
        let listen = Target::new("t".repeat(220)).with_server("s");
        assert!(invalid_target(rabbit.rpc_topology(&listen).map(|_| ())).contains("fanout queue"));
        let notifications = [Target::new("t".repeat(250))];
        assert!(
            invalid_target(
                rabbit
                    .notification_topology(&notifications, &[Priority::Critical], None)
                    .map(|_| ())
            )
            .contains("<topic>.<priority>")
        );
        let pool = "p".repeat(256);
        assert!(
            invalid_target(
                rabbit
                    .notification_topology(&[Target::new("t")], &[Priority::Info], Some(&pool))
                    .map(|_| ())
            )
            .contains("pool queue")
        );
        // The same through the Transport API: an error, not a panic inside lapin.
        let message = Message::new("{}").with_meta(messaging_core::Meta::Request(
            messaging_core::RequestMeta::new("m"),
        ));
        let sent = block_on(rabbit.cast(&server, message, &SendOptions::default()));
        assert!(
            matches!(sent, Err(TransportError::InvalidTarget(_))),
            "{sent:?}"
        );
        let listened = rabbit.listen(&Subscription::Rpc(listen), &ListenOptions::default());
        assert!(matches!(listened, Err(TransportError::InvalidTarget(_))));
    }

    fn notification() -> Message {
        Message::new("{}")
            .with_meta(messaging_core::Meta::Notification(
                messaging_core::NotificationMeta::new(
                    ids::uuid4(),
                    "p",
                    "e",
                    Priority::Info,
                    ids::utc_timestamp(),
                ),
            ))
            .with_codec(CodecKind::Json)
    }

    /// `notify_with` gives up at the options' timeout (not the 60 s of `notify`), with
    /// the failure it saw: a refused connection.
    #[test]
    fn a_notification_ends_at_its_timeout_with_the_failure_seen() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let rabbit = transport(&format!("rabbit://guest:guest@127.0.0.1:{port}/"));
        let started = std::time::Instant::now();
        let sent = block_on(rabbit.notify_with(
            &Target::new("t"),
            Priority::Info,
            notification(),
            &SendOptions::with_timeout(Some(Duration::from_millis(800))),
        ));
        let took = started.elapsed();
        assert!(
            matches!(&sent, Err(TransportError::Connection { message, .. })
                if message.contains("Connection refused")),
            "{sent:?}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    /// A broker that accepts the connection and never answers: nothing seen before the
    /// deadline, a `TimedOut` error (not a made-up connection failure), at the deadline.
    #[test]
    fn a_broker_that_never_answers_is_a_timeout() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let rabbit = transport(&format!("rabbit://guest:guest@127.0.0.1:{port}/"));
        let timeout = Some(Duration::from_millis(500));
        let message = Message::new("{}")
            .with_meta(messaging_core::Meta::Request(
                messaging_core::RequestMeta::new("m"),
            ))
            .with_codec(CodecKind::Json);
        let cast = block_on(rabbit.cast(
            &Target::new("t"),
            message,
            &SendOptions::with_timeout(timeout),
        ));
        assert!(matches!(&cast, Err(e) if e.is_timeout()), "{cast:?}");
        let notified = block_on(rabbit.notify_with(
            &Target::new("t"),
            Priority::Info,
            notification(),
            &SendOptions::with_timeout(timeout),
        ));
        assert!(
            matches!(&notified, Err(e) if e.is_timeout()),
            "{notified:?}"
        );
    }
}
