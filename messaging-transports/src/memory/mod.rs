//! `memory://`: the embedded in-memory transport, the default for tests, examples and
//! single-process services.
//!
//! It follows oslo.messaging's fake driver:
//!
//! * every exchange holds, per topic, one shared queue per notification pool (plus the
//!   pool-less one) and one queue per server;
//! * a message to a topic goes into every shared queue of the topic: the servers of a
//!   topic compete for it, and every pool gets its own copy;
//! * a message to a server goes into that server's queue, created if missing, so it is
//!   stored until the server listens (store-and-forward);
//! * a fanout cast goes into every server queue of the topic, and is dropped if the topic
//!   has no server;
//! * notifications go to topic `<topic>.<priority>` and are stored before any listener
//!   exists; a new pool starts with a copy of what waits in the pool-less queue;
//! * a requeued message goes back to the end of its queue;
//! * an RPC server polls its server queue first, then the topic's shared queue.
//!
//! Sending cannot fail in a way a retry or a reconnect fixes (there is no connection),
//! so [`SendOptions::retry`] has nothing to count: a notification is stored, or
//! refused at once for good (an invalid target, a body over `max_message_size`),
//! whatever the retry. Messages are not written to any wire format, so
//! [`SendOptions::notification_format`] (oslo's `messaging` vs `messagingv2`) changes
//! nothing either.
//!
//! Unlike oslo's fake driver (which sleeps 50 ms between polls), nothing here polls by
//! sleeping: a waiting listener is woken by the message meant for it, and the longest
//! waiting listener of a queue gets the next message.
//!
//! Transports opened on the same URL share one bus: `memory://` (the default bus) or
//! `memory:///name` (a bus per virtual host), so a client and a server opened
//! separately in one process talk to each other. A bus lives while any transport on it
//! does. [`MemoryTransport::new`] makes a private bus.
//!
//! # URL options
//!
//! `codec` (`bincode`, the default, or `json`): what senders encode bodies with;
//! `control_exchange` (default `openstack`): the exchange of targets that name none;
//! `max_message_size` (bytes, default [`DEFAULT_MAX_MESSAGE_SIZE`], `0` for no limit):
//! a larger body fails to send with [`TransportError::MessageTooLarge`], and a larger
//! result is refused as a reply (the caller gets a remote `MessageTooLarge` error), as
//! on a broker, so a service tested on `memory://` meets the limit before production
//! does.
//! An unknown option is an error.

mod bus;
mod listener;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use messaging_core::codec::CodecKind;
use messaging_core::reply::{ReplyReceiver, reply_channel};
use messaging_core::{
    InvalidTransportUrl, ListenOptions, Listener, Message, Priority, SendOptions, Subscription,
    Target, Transport, TransportError, TransportUrl,
};

use bus::{Bus, Caller, Envelope};
pub use listener::MemoryListener;

/// The control exchange used when a target names none (oslo's default).
pub const DEFAULT_EXCHANGE: &str = "openstack";

/// The default `max_message_size`: 128 MiB, RabbitMQ 3.x's own limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 << 20;

/// The URL options this transport understands.
pub(crate) const KNOWN_OPTIONS: &[&str] = &["codec", "control_exchange", "max_message_size"];

/// The in-memory transport. Cloning shares the bus.
///
/// # Examples
///
/// ```
/// use messaging_core::{Message, SendOptions, Subscription, Target, Transport, Polled};
/// use messaging_core::dispatch::block_on;
/// use messaging_transports::memory::MemoryTransport;
///
/// let transport = MemoryTransport::new();
/// let target = Target::new("compute").with_server("host1");
/// let listener = transport.listen(&Subscription::Rpc(target.clone()), &Default::default())?;
/// block_on(transport.cast(&target, Message::new("hello"), &SendOptions::default()))?;
/// match listener.poll(None)? {
///     Polled::Messages(batch) => assert_eq!(batch[0].message().body, "hello"),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), messaging_core::TransportError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MemoryTransport {
    bus: Arc<Bus>,
    url: TransportUrl,
    default_exchange: String,
    codec: CodecKind,
    /// The largest body sent (`usize::MAX`: no limit).
    max_message_size: usize,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Bus>>> {
    static BUSES: OnceLock<Mutex<HashMap<String, Weak<Bus>>>> = OnceLock::new();
    BUSES.get_or_init(Default::default)
}

impl Default for MemoryTransport {
    fn default() -> Self {
        MemoryTransport::new()
    }
}

impl MemoryTransport {
    /// A transport on a new, private bus.
    pub fn new() -> Self {
        MemoryTransport {
            bus: Arc::new(Bus::default()),
            url: TransportUrl::parse("memory://").expect("a valid URL"),
            default_exchange: DEFAULT_EXCHANGE.to_owned(),
            codec: CodecKind::Bincode,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    /// Returns the transport with senders using `codec`.
    pub fn with_codec(mut self, codec: CodecKind) -> Self {
        self.codec = codec;
        self
    }

    /// A transport on the shared bus named by the URL's virtual host (`memory://` and
    /// `fake://` use the default bus), with the options the [module docs](self) list.
    pub fn open(url: &TransportUrl) -> Result<Self, TransportError> {
        if !matches!(url.driver(), "memory" | "fake") {
            return Err(TransportError::UnknownScheme {
                scheme: url.scheme().to_owned(),
                hint: " (the in-memory transport handles memory:// and fake://)".to_owned(),
            });
        }
        let (codec, max_message_size) = Self::options(url)?;
        let name = url.virtual_host().unwrap_or_default().to_owned();
        let bus = {
            let mut buses = registry().lock().unwrap_or_else(|p| p.into_inner());
            buses.retain(|_, bus| bus.strong_count() > 0);
            match buses.get(&name).and_then(Weak::upgrade) {
                Some(bus) => bus,
                None => {
                    let bus = Arc::new(Bus::default());
                    buses.insert(name, Arc::downgrade(&bus));
                    bus
                }
            }
        };
        Ok(MemoryTransport {
            bus,
            url: url.clone(),
            default_exchange: url
                .option("control_exchange")
                .unwrap_or(DEFAULT_EXCHANGE)
                .to_owned(),
            codec,
            max_message_size,
        })
    }

    /// Checks a `memory://` URL's options as [`open`](Self::open) does, without
    /// touching any bus.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidUrl`] for an unknown option or a bad value.
    pub fn check(url: &TransportUrl) -> Result<(), TransportError> {
        Self::options(url).map(drop)
    }

    /// The codec and the largest body the URL's options ask for.
    fn options(url: &TransportUrl) -> Result<(CodecKind, usize), TransportError> {
        let bad =
            |reason: String| TransportError::InvalidUrl(InvalidTransportUrl::new(url, reason));
        if let Some(unknown) = url
            .options()
            .keys()
            .find(|k| !KNOWN_OPTIONS.contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown option `{unknown}` (known: {})",
                KNOWN_OPTIONS.join(", ")
            )));
        }
        let codec = match url.option("codec") {
            Some(name) => name
                .parse()
                .map_err(|e: messaging_core::codec::UnknownCodec| bad(e.to_string()))?,
            None => CodecKind::Bincode,
        };
        let max_message_size = match url.option("max_message_size") {
            None => DEFAULT_MAX_MESSAGE_SIZE,
            Some(value) => match value.parse::<usize>() {
                Ok(0) => usize::MAX,
                Ok(bytes) => bytes,
                Err(_) => {
                    return Err(bad(format!(
                        "`max_message_size` must be a whole number of bytes (0: no limit), got `{value}`"
                    )));
                }
            },
        };
        Ok((codec, max_message_size))
    }

    /// Refuses a body larger than `max_message_size`.
    fn check_size(&self, message: &Message) -> Result<(), TransportError> {
        let size = message.body.len();
        if size > self.max_message_size {
            return Err(TransportError::MessageTooLarge {
                size,
                limit: self.max_message_size,
            });
        }
        Ok(())
    }

    fn exchange<'a>(&'a self, target: &'a Target) -> &'a str {
        target.exchange.as_deref().unwrap_or(&self.default_exchange)
    }

    fn deliver(&self, target: &Target, envelope: Envelope) {
        let exchange = self.exchange(target);
        let topic = target.topic.as_deref().unwrap_or_default();
        let mut state = self.bus.lock();
        let wakeups = if target.fanout {
            let (servers, wakeups) = state.deliver_fanout(exchange, topic, &envelope);
            if servers == 0 {
                tracing::debug!(%target, "fanout cast to a topic with no server: dropped");
            }
            wakeups
        } else if let Some(server) = &target.server {
            let queue = state.server_queue(exchange, topic, server);
            let mut wakeups = Default::default();
            state.push(queue, envelope, &mut wakeups);
            wakeups
        } else {
            state.deliver_to_topic(exchange, topic, envelope)
        };
        drop(state);
        wakeups.wake();
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn url(&self) -> &TransportUrl {
        &self.url
    }

    fn codec(&self) -> CodecKind {
        self.codec
    }

    async fn cast(
        &self,
        target: &Target,
        message: Message,
        _options: &SendOptions,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        self.check_size(&message)?;
        self.deliver(target, Envelope::cast(message));
        Ok(())
    }

    async fn call(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<ReplyReceiver, TransportError> {
        target.validate_for_call()?;
        self.check_size(&message)?;
        let (reply, receiver) = reply_channel();
        self.deliver(
            target,
            Envelope::new(
                message,
                Some(Caller {
                    reply,
                    client_timeout: options.call_monitor_timeout,
                    deadline: options
                        .timeout
                        .and_then(|t| std::time::Instant::now().checked_add(t)),
                    max_reply: self.max_message_size,
                }),
            ),
        );
        Ok(receiver)
    }

    async fn notify(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        self.check_size(&message)?;
        let topic = format!(
            "{}.{}",
            target.topic.as_deref().unwrap_or_default(),
            priority.as_str()
        );
        let wakeups = self.bus.lock().deliver_to_topic(
            self.exchange(target),
            &topic,
            Envelope::cast(message),
        );
        wakeups.wake();
        Ok(())
    }

    fn listen(
        &self,
        subscription: &Subscription,
        options: &ListenOptions,
    ) -> Result<Box<dyn Listener>, TransportError> {
        subscription.validate()?;
        let mut state = self.bus.lock();
        let queues = match subscription {
            Subscription::Rpc(target) => {
                let exchange = self.exchange(target);
                let topic = target.topic.as_deref().unwrap_or_default();
                let server = target.server.as_deref().unwrap_or_default();
                vec![
                    state.server_queue(exchange, topic, server),
                    state.shared_queue(exchange, topic, None),
                ]
            }
            Subscription::Notifications {
                targets,
                priorities,
                pool,
            } => {
                let mut queues = Vec::new();
                for target in targets {
                    for priority in priorities {
                        let topic = format!(
                            "{}.{}",
                            target.topic.as_deref().unwrap_or_default(),
                            priority.as_str()
                        );
                        let q = state.shared_queue(self.exchange(target), &topic, pool.as_deref());
                        if !queues.contains(&q) {
                            queues.push(q);
                        }
                    }
                }
                queues
            }
            other => {
                return Err(TransportError::other(format!(
                    "unsupported subscription {other}"
                )));
            }
        };
        let (id, cond, seq) = state.add_listener(queues, options.clone());
        drop(state);
        Ok(Box::new(MemoryListener::new(
            self.bus.clone(),
            id,
            cond,
            seq,
        )))
    }
}
