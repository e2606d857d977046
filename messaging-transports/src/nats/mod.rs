//! `nats://`: NATS, the second broker, enabled by the `nats` cargo feature. Core NATS
//! carries RPC; JetStream stores notifications.
//!
//! # URL
//!
//! `nats://user:pass@host1:4222,host2:4222?options` (`tls://` or `tls=true` for TLS).
//! The client connects to one of the servers and fails over to the others, reconnecting
//! on its own. Options: `codec` (`bincode`, the default, or `json`), `subject_prefix`
//! (default `msg`), `control_exchange` (default `openstack`), `prefetch` (the most
//! unacknowledged notifications a durable consumer hands out, JetStream's
//! `max_ack_pending`: it bounds what a listener holds and the largest batch; default
//! 1000), `connect_timeout` (seconds),
//! `consumer_ttl` (seconds a durable notification consumer survives without a listener,
//! default 7 days), `notification_max_age` (seconds, default 1 day),
//! `max_message_size` (bytes, default and upper bound: the server's advertised
//! `max_payload`, 1 MiB unless the server is configured otherwise). An unknown option
//! is an error.
//!
//! # Mapping
//!
//! Names become single subject tokens (percent-encoded: `compute.host1` →
//! `compute%2Ehost1`); `<p>` is the subject prefix and `<x>` the exchange.
//!
//! | oslo concept | NATS |
//! |---|---|
//! | call / cast to a topic | subject `<p>.<x>.rpc.<topic>`, consumed in queue group `<p>.<x>.rpc.<topic>`: the servers of a topic compete |
//! | call / cast to a server | subject `<p>.<x>.server.<topic>.<server>`, no group |
//! | fanout cast | subject `<p>.<x>.fanout.<topic>`, every server subscribes, no group |
//! | reply queue | one wildcard subscription `<inbox>.*` per transport; a call's reply subject is `<inbox>.<msg id>`; heartbeats and the reply are messages on it |
//! | notification | JetStream: published to `<p>.notify.<x>.<topic>.<priority>` (and the publish acknowledged by the server) in stream `<P>_NOTIFICATIONS` (file storage, interest retention; limits retention on nats-server 2.9.7 to 2.9.15, see below) |
//! | notification queue, pool | a durable pull consumer per `(topic, priority, pool)`, filtered on that subject, starting with the notifications published after it was created; listeners of one pool (or the pool-less listeners) share it and compete; each consumer gets its own copy |
//!
//! The notifier creates the pool-less consumer before its first publish, so
//! notifications are stored before any listener exists (as oslo's notifier declares
//! the `<topic>.<priority>` queue on RabbitMQ). Interest retention removes a
//! notification once every consumer acknowledged it; `notification_max_age` removes
//! it in any case.
//!
//! ## Durable consumers stay, until `consumer_ttl`
//!
//! A listener leaves its consumers on the server when it stops: one per topic and
//! priority it listened to (seven for a listener of every priority, as the
//! `messaging listen` command is) and pool. They are what stores notifications while
//! no listener runs: the pool-less one holds what was published before any listener
//! existed (the notifier creates it), a pool's holds what arrives while its listeners
//! restart, exactly as oslo's `<topic>.<priority>` and pool queues do on RabbitMQ
//! (where they stay until deleted by hand). No listener can tell whether it is the
//! last of its pool, or whether a notifier relies on the pool-less consumer, so none
//! deletes them: the server does, after `consumer_ttl` (7 days by default) without a
//! listener pulling from them, and with them what they stored. Shorten `consumer_ttl`
//! where listeners come and go, lengthen it where notifications must wait longer
//! for theirs. A notifier that outlives its pool-less consumer creates it again: it
//! makes sure the consumer exists at most every minute (or half `consumer_ttl`).
//!
//! ## nats-server 2.9.7 to 2.9.15
//!
//! These versions, when they start, purge from an interest-retention stream
//! everything below the acknowledgement floor of one of its consumers, picked by map
//! order, whenever another consumer has never acknowledged anything: stored
//! notifications of a topic nobody listened to yet are lost on a restart whenever a
//! listener of another topic has acknowledged newer ones (fixed in 2.9.16). On those
//! servers the transport creates the stream with limits retention instead, which the
//! check skips: notifications are kept for `notification_max_age` whether
//! acknowledged or not. A stream that already exists keeps its retention; on an
//! affected server an interest-retention stream gets one warning per transport
//! (upgrade the server, or delete the stream so that it is recreated).
//!
//! ## Frames
//!
//! Every message body is a small JSON header (kind, context, codec, method, namespace,
//! version, call-monitor timeout, the caller's remaining wait, notification fields,
//! reply outcome) followed by the payload exactly as the codec encoded it. Frames
//! without the remaining wait (from the previous version) are read as before; the
//! previous version ignores it.
//!
//! # Delivery and faults
//!
//! Calls and casts are at-most-once (core NATS); a call gets its reply or fails with a
//! timeout, heartbeats keeping a monitored call alive exactly as on RabbitMQ. A request
//! to a topic nobody serves is not an error on the wire: the caller times out, as with
//! oslo. A call carries the time its caller still waits (never a clock reading, so
//! hosts need not agree on the time); the server takes that, less a transit allowance
//! of 25 ms (at most half of it), as the request's deadline from its arrival, and drops
//! a request still waiting in line when it passes: nobody would read the reply.
//! Notifications are at-least-once: acknowledged after dispatch, `Nak`ed on
//! requeue (redelivered at once), redelivered after the acknowledgement wait if a
//! listener dies. When the connection drops, the client reconnects and restores its
//! subscriptions; JetStream pulls restart; stored notifications stay stored.
//!
//! A message larger than `max_message_size` fails to send with
//! [`TransportError::MessageTooLarge`] before anything is published. One that arrives
//! larger (from a peer with a larger limit) is refused before it is decoded, with one
//! warning naming its size, the limit and its subject (never its payload): a request
//! or a reply is dropped (the call times out), a notification terminated (never
//! redelivered). A reply over the replying side's limit is not sent; its caller gets a
//! `MessageTooLarge` remote error at once instead.
//!
//! Wrong credentials (an authorization violation) fail the operation at once with
//! [`TransportError::Refused`], a permanent error; nothing retries them.

mod frame;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod listener;
mod options;
mod subjects;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use futures_lite::StreamExt;
use messaging_core::codec::CodecKind;
use messaging_core::dispatch::block_on;
use messaging_core::reply::{ReplyReceiver, reply_channel};
use messaging_core::{
    ListenOptions, Listener, Message, Priority, SendOptions, Subscription, Target, Transport,
    TransportError, TransportUrl, ids,
};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::OnceCell;

pub use listener::NatsListener;
use listener::Source;
use options::Options;
use subjects::Subjects;

use crate::pending::PendingCalls;

/// The NATS transport. Cloning shares its connection.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), messaging_core::TransportError> {
/// let transport = messaging_transports::open("nats://127.0.0.1:4222")?;
/// assert_eq!(transport.name(), "nats");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NatsTransport {
    inner: Arc<Inner>,
}

/// How often a notifier makes sure at most that the consumer storing its
/// notifications still exists (less if half of `consumer_ttl` is shorter).
const CONSUMER_RECHECK: Duration = Duration::from_secs(60);

struct Inner {
    url: TransportUrl,
    options: Options,
    subjects: Subjects,
    runtime: Option<Runtime>,
    handle: Handle,
    client: OnceCell<async_nats::Client>,
    replies: OnceCell<String>,
    pending: Arc<PendingCalls>,
    stream: OnceCell<stream::Stream>,
    /// The consumers this transport's notifier ensured exist, and when: it ensures
    /// them again after [`CONSUMER_RECHECK`] (the server may have removed one after
    /// `consumer_ttl` without a listener).
    consumers: Mutex<HashMap<String, Instant>>,
    /// Bumped each time the client (re)connects; notification pulls watch it.
    connected: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Publishes are buffered by the client: send them before going away (a
        // short-lived process would otherwise exit with its last casts unsent).
        if let Some(client) = self.client.get().cloned() {
            let flushed = self.handle.spawn(async move { client.flush().await });
            let _ = block_on(messaging_core::timer::timeout(
                Duration::from_secs(5),
                flushed,
            ));
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn connection_error(what: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Connection {
        message: format!("{what}: {error}"),
        source: None,
    }
}

/// A failed connection: wrong credentials are a permanent [`TransportError::Refused`]
/// (retrying cannot help), anything else a connection error. Neither names a secret:
/// the client's errors say what the server answered, never what was sent.
fn connect_error(error: async_nats::ConnectError) -> TransportError {
    match error.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation
        | async_nats::ConnectErrorKind::Authentication => TransportError::Refused {
            message: format!("NATS refused the connection: {error}"),
            source: None,
        },
        _ => connection_error("cannot connect to NATS", error),
    }
}

/// The largest message body this transport sends or accepts: the URL's
/// `max_message_size`, and never more than the server's advertised `max_payload`.
pub(crate) fn message_limit(option: Option<usize>, client: &async_nats::Client) -> usize {
    let server = client.max_payload();
    option.map_or(server, |limit| limit.min(server))
}

/// Refuses a frame larger than `limit` before it is published.
fn check_size(body: &[u8], limit: usize) -> Result<(), TransportError> {
    if body.len() > limit {
        return Err(TransportError::MessageTooLarge {
            size: body.len(),
            limit,
        });
    }
    Ok(())
}

/// Whether a nats-server of this version, when it starts, purges from an
/// interest-retention stream the messages stored for a consumer that has not
/// acknowledged anything yet. 2.9.7 to 2.9.15 check such streams for "orphaned"
/// messages on startup and take the lowest acknowledgement floor of the stream's
/// consumers, but a consumer with no acknowledgement (floor 0) resets that minimum
/// instead of lowering it: depending on the order in which the server iterates its
/// consumers, everything below another consumer's floor is purged, including
/// notifications stored for a listener that does not exist yet. 2.9.16 replaced the
/// check with a per-consumer one.
pub(crate) fn purges_unacknowledged_on_restart(version: &str) -> bool {
    let mut numbers = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    matches!(
        (numbers.next(), numbers.next(), numbers.next()),
        (Some(Ok(2)), Some(Ok(9)), Some(Ok(7..=15)))
    )
}

impl Inner {
    async fn client(&self) -> Result<async_nats::Client, TransportError> {
        self.client
            .get_or_try_init(|| async {
                let connected = self.connected.clone();
                let mut options = async_nats::ConnectOptions::new()
                    .event_callback(move |event| {
                        if matches!(event, async_nats::Event::Connected) {
                            connected.send_modify(|n| *n += 1);
                        }
                        std::future::ready(())
                    })
                    .name(format!("messaging-rs:{}", std::process::id()))
                    .connection_timeout(self.options.connect_timeout)
                    .require_tls(self.options.tls);
                if let (Some(user), Some(password)) = (&self.options.user, &self.options.password) {
                    options = options.user_and_password(user.clone(), password.expose().to_owned());
                }
                let servers: Vec<async_nats::ServerAddr> = self
                    .options
                    .servers
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        TransportError::other(format!("invalid NATS server address: {e}"))
                    })?;
                options.connect(servers).await.map_err(connect_error)
            })
            .await
            .cloned()
    }

    async fn jetstream(&self) -> Result<(jetstream::Context, stream::Stream), TransportError> {
        let client = self.client().await?;
        let context = jetstream::new(client.clone());
        let stream = self
            .stream
            .get_or_try_init(|| async {
                let version = client.server_info().version;
                let purges = purges_unacknowledged_on_restart(&version);
                let stream = context
                    .get_or_create_stream(stream::Config {
                        name: self.subjects.stream(),
                        subjects: vec![self.subjects.stream_subjects()],
                        retention: if purges {
                            stream::RetentionPolicy::Limits
                        } else {
                            stream::RetentionPolicy::Interest
                        },
                        storage: stream::StorageType::File,
                        max_age: self.options.max_age,
                        ..stream::Config::default()
                    })
                    .await
                    .map_err(|e| connection_error("cannot create the notification stream", e))?;
                let retention = stream.cached_info().config.retention;
                if purges && retention == stream::RetentionPolicy::Interest {
                    tracing::warn!(
                        stream = %self.subjects.stream(),
                        server_version = %version,
                        "this nats-server loses stored notifications on restart \
                         (fixed in 2.9.16) and the stream has interest retention: \
                         upgrade the server, or delete the stream so that it is \
                         recreated with limits retention"
                    );
                }
                Ok::<_, TransportError>(stream)
            })
            .await?
            .clone();
        Ok((context, stream))
    }

    async fn consumer(
        &self,
        stream: &stream::Stream,
        name: String,
        subject: String,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, TransportError> {
        stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: subject,
                    ack_policy: consumer::AckPolicy::Explicit,
                    // A new consumer starts with what is published from now on, as a
                    // queue declared now does: on a limits-retention stream it must not
                    // replay the stream's history.
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_wait: Duration::from_secs(300),
                    max_ack_pending: (self.options.prefetch as i64).max(1),
                    inactive_threshold: self.options.consumer_ttl,
                    ..consumer::pull::Config::default()
                },
            )
            .await
            .map_err(|e| connection_error(&format!("cannot create consumer {name}"), e))
    }

    /// The transport's reply subscription, started on first use: routes each reply to
    /// its call by the last token of its subject.
    async fn inbox(&self) -> Result<String, TransportError> {
        self.replies
            .get_or_try_init(|| async {
                let client = self.client().await?;
                let prefix = client.new_inbox();
                let mut subscriber = client
                    .subscribe(format!("{prefix}.*"))
                    .await
                    .map_err(|e| connection_error("cannot subscribe to replies", e))?;
                let pending = self.pending.clone();
                let option = self.options.max_message_size;
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        if message.status.is_some() {
                            continue; // e.g. "no responders": the caller times out, as with oslo
                        }
                        let limit = message_limit(option, &client);
                        if message.payload.len() > limit {
                            tracing::warn!(
                                size = message.payload.len(),
                                limit,
                                subject = %message.subject,
                                "dropping a reply larger than max_message_size; its call will time out"
                            );
                            continue;
                        }
                        let Some(id) = message.subject.rsplit('.').next() else {
                            continue;
                        };
                        match frame::decode_reply(&message.payload) {
                            Ok(Some(outcome)) => pending.deliver(id, Some(outcome), true),
                            Ok(None) => pending.deliver(id, None, false),
                            Err(error) => tracing::warn!(%error, "dropping an unreadable reply"),
                        }
                    }
                });
                Ok(prefix)
            })
            .await
            .cloned()
    }
}

impl NatsTransport {
    /// A transport for the URL; see the module docs. The connection is opened on first
    /// use, so this fails only on a malformed URL.
    pub fn open(url: &TransportUrl) -> Result<Self, TransportError> {
        let options = Options::from_url(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("messaging-nats")
            .enable_all()
            .build()
            .map_err(|e| TransportError::other(format!("cannot start the NATS runtime: {e}")))?;
        Ok(NatsTransport {
            inner: Arc::new(Inner {
                url: url.clone(),
                subjects: Subjects::new(&options.prefix),
                options,
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
                client: OnceCell::new(),
                replies: OnceCell::new(),
                pending: Arc::default(),
                stream: OnceCell::new(),
                consumers: Mutex::new(HashMap::new()),
                connected: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    fn exchange<'a>(&'a self, target: &'a Target) -> &'a str {
        target
            .exchange
            .as_deref()
            .unwrap_or(&self.inner.options.control_exchange)
    }

    fn subject(&self, target: &Target) -> String {
        let (exchange, topic) = (
            self.exchange(target),
            target.topic.as_deref().unwrap_or_default(),
        );
        if target.fanout {
            self.inner.subjects.fanout(exchange, topic)
        } else if let Some(server) = &target.server {
            self.inner.subjects.server(exchange, topic, server)
        } else {
            self.inner.subjects.topic(exchange, topic)
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T, TransportError>> + Send + 'static,
    ) -> Result<T, TransportError> {
        self.inner
            .handle
            .spawn(future)
            .await
            .map_err(|e| TransportError::other(format!("the NATS task failed: {e}")))?
    }
}

#[async_trait]
impl Transport for NatsTransport {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn url(&self) -> &TransportUrl {
        &self.inner.url
    }

    fn codec(&self) -> CodecKind {
        self.inner.options.codec
    }

    async fn cast(
        &self,
        target: &Target,
        message: Message,
        _options: &SendOptions,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        let (inner, subject) = (self.inner.clone(), self.subject(target));
        let body = frame::encode_message(&message, None, None);
        // Once connected, a publish is a send on the client's command channel, which
        // works from any thread: no hand-off to the runtime.
        if let Some(client) = self.inner.client.get() {
            check_size(
                &body,
                message_limit(self.inner.options.max_message_size, client),
            )?;
            return client
                .publish(subject, body)
                .await
                .map_err(|e| connection_error("publishing", e));
        }
        self.run(async move {
            let client = inner.client().await?;
            check_size(
                &body,
                message_limit(inner.options.max_message_size, &client),
            )?;
            client
                .publish(subject, body)
                .await
                .map_err(|e| connection_error("publishing", e))
        })
        .await
    }

    async fn call(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<ReplyReceiver, TransportError> {
        target.validate_for_call()?;
        let started = Instant::now();
        let (inner, subject) = (self.inner.clone(), self.subject(target));
        let (client, inbox) = match (self.inner.client.get(), self.inner.replies.get()) {
            (Some(client), Some(inbox)) => (client.clone(), inbox.clone()),
            _ => {
                // First call: connect and subscribe to replies on the runtime.
                let inner = inner.clone();
                self.run(async move {
                    let inbox = inner.inbox().await?;
                    Ok((inner.client().await?, inbox))
                })
                .await?
            }
        };
        // The caller's timeout travels as the time it still waits, measured now: the
        // server turns it into a deadline when the request arrives and drops the
        // request if it is still waiting in line when that passes.
        let left = options.timeout.map(|t| t.saturating_sub(started.elapsed()));
        let body = frame::encode_message(&message, options.call_monitor_timeout, left);
        check_size(
            &body,
            message_limit(inner.options.max_message_size, &client),
        )?;
        let id = ids::hex_id();
        let (sender, receiver) = reply_channel();
        inner.pending.expect(id.clone(), sender);
        if let Err(error) = client
            .publish_with_reply(subject, format!("{inbox}.{id}"), body)
            .await
        {
            inner.pending.forget(&id);
            return Err(connection_error("publishing", error));
        }
        Ok(receiver)
    }

    async fn notify(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        let inner = self.inner.clone();
        let (exchange, topic) = (
            self.exchange(target).to_owned(),
            target.topic.clone().unwrap_or_default(),
        );
        let body = frame::encode_message(&message, None, None);
        self.run(async move {
            let (context, stream) = inner.jetstream().await?;
            check_size(
                &body,
                message_limit(inner.options.max_message_size, &context.client()),
            )?;
            let subject = inner.subjects.notification(&exchange, &topic, priority);
            let name = inner.subjects.consumer(&exchange, &topic, priority, None);
            let recheck = CONSUMER_RECHECK.min(inner.options.consumer_ttl / 2);
            let known = inner
                .consumers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .is_some_and(|ensured| ensured.elapsed() < recheck);
            if !known {
                inner
                    .consumer(&stream, name.clone(), subject.clone())
                    .await?;
                inner
                    .consumers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name, Instant::now());
            }
            context
                .publish(subject, body)
                .await
                .map_err(|e| connection_error("publishing a notification", e))?
                .await
                .map_err(|e| connection_error("storing a notification", e))?;
            Ok(())
        })
        .await
    }

    fn listen(
        &self,
        subscription: &Subscription,
        options: &ListenOptions,
    ) -> Result<Box<dyn Listener>, TransportError> {
        subscription.validate()?;
        let inner = self.inner.clone();
        let prefetch = self.inner.options.prefetch;
        if options.batch_size > prefetch {
            tracing::warn!(
                batch_size = options.batch_size,
                prefetch,
                "batches are capped by the consumer's prefetch (max_ack_pending)"
            );
        }
        let source = match subscription {
            Subscription::Rpc(target) => {
                let exchange = self.exchange(target).to_owned();
                let topic = target.topic.clone().unwrap_or_default();
                let server = target.server.clone().unwrap_or_default();
                block_on(self.inner.handle.spawn(async move {
                    let client = inner.client().await?;
                    let subjects = &inner.subjects;
                    let subscribe_error =
                        |e: async_nats::SubscribeError| connection_error("subscribing", e);
                    let subscribers = vec![
                        client
                            .queue_subscribe(
                                subjects.topic(&exchange, &topic),
                                subjects.group(&exchange, &topic),
                            )
                            .await
                            .map_err(subscribe_error)?,
                        client
                            .subscribe(subjects.server(&exchange, &topic, &server))
                            .await
                            .map_err(subscribe_error)?,
                        client
                            .subscribe(subjects.fanout(&exchange, &topic))
                            .await
                            .map_err(subscribe_error)?,
                    ];
                    client
                        .flush()
                        .await
                        .map_err(|e| connection_error("subscribing", e))?;
                    Ok::<_, TransportError>(Source::Rpc(subscribers))
                }))
            }
            Subscription::Notifications {
                targets,
                priorities,
                pool,
            } => {
                let bindings: Vec<(String, String, Priority)> = targets
                    .iter()
                    .flat_map(|t| {
                        let exchange = self.exchange(t).to_owned();
                        let topic = t.topic.clone().unwrap_or_default();
                        priorities
                            .iter()
                            .map(move |p| (exchange.clone(), topic.clone(), *p))
                    })
                    .collect();
                let pool = pool.clone();
                block_on(self.inner.handle.spawn(async move {
                    let (_, stream) = inner.jetstream().await?;
                    let mut consumers = Vec::new();
                    for (exchange, topic, priority) in bindings {
                        let subject = inner.subjects.notification(&exchange, &topic, priority);
                        let name =
                            inner
                                .subjects
                                .consumer(&exchange, &topic, priority, pool.as_deref());
                        consumers.push(inner.consumer(&stream, name, subject).await?);
                    }
                    Ok::<_, TransportError>(Source::Notifications(consumers))
                }))
            }
            other => {
                return Err(TransportError::other(format!(
                    "unsupported subscription {other}"
                )));
            }
        }
        .map_err(|e| TransportError::other(format!("the NATS task failed: {e}")))??;
        let client = block_on(self.inner.handle.spawn({
            let inner = self.inner.clone();
            async move { inner.client().await }
        }))
        .map_err(|e| TransportError::other(format!("the NATS task failed: {e}")))??;
        Ok(Box::new(NatsListener::start(
            source,
            client,
            self.inner.handle.clone(),
            options,
            listener::Limits {
                prefetch,
                max_message_size: self.inner.options.max_message_size,
            },
            self.inner.connected.subscribe(),
            subscription.to_string(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_that_purge_unacknowledged_notifications_on_restart() {
        for version in ["2.9.7", "2.9.10", "v2.9.15", "2.9.15-beta.1"] {
            assert!(purges_unacknowledged_on_restart(version), "{version}");
        }
        for version in [
            "2.9.6", "2.9.16", "2.10.0", "2.11.4", "3.9.10", "", "garbage",
        ] {
            assert!(!purges_unacknowledged_on_restart(version), "{version}");
        }
    }

    #[test]
    fn wrong_credentials_are_refused_and_other_failures_are_connection_errors() {
        let refused = connect_error(async_nats::ConnectError::new(
            async_nats::ConnectErrorKind::AuthorizationViolation,
        ));
        assert!(
            matches!(refused, TransportError::Refused { .. }) && refused.is_permanent(),
            "{refused:?}"
        );
        let down = connect_error(async_nats::ConnectError::new(
            async_nats::ConnectErrorKind::Io,
        ));
        assert!(
            matches!(down, TransportError::Connection { .. }),
            "{down:?}"
        );
    }
}
