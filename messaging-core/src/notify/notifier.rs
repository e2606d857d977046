//! [`Notifier`]: sends notifications with oslo's seven priorities.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument;

use crate::codec::{Codec, Json};
use crate::error::{InvalidTarget, TransportError};
use crate::ids;
use crate::message::{Context, Message, Meta, NotificationMeta, Priority};
use crate::target::Target;
use crate::transport::{SendOptions, Transport};

/// oslo's default notification topic.
pub const DEFAULT_TOPIC: &str = "notifications";

/// Where a [`Notifier`] sends (oslo's notification drivers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NotifyDriver {
    /// Over the transport, to `<topic>.<priority>` for each topic (`messaging`,
    /// `messagingv2`).
    #[default]
    Messaging,
    /// To `tracing`, at the priority's level, target `messaging::notification`.
    Log,
    /// Nowhere.
    Noop,
}

/// An unknown driver name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown notification driver `{0}` (expected messaging, messagingv2, log or noop)")]
pub struct UnknownDriver(pub String);

impl FromStr for NotifyDriver {
    type Err = UnknownDriver;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "messaging" | "messagingv2" => Ok(NotifyDriver::Messaging),
            "log" => Ok(NotifyDriver::Log),
            "noop" => Ok(NotifyDriver::Noop),
            other => Err(UnknownDriver(other.to_owned())),
        }
    }
}

/// A notification could not be sent.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// A topic is missing.
    #[error(transparent)]
    InvalidTarget(#[from] InvalidTarget),
    /// The payload could not be encoded.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// The transport failed (the notification may have reached some topics).
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Sends notifications: `notifier.info(&ctx, "compute.instance.create.end", &payload)`.
///
/// Each notification carries a fresh `message_id` (uuid4), the publisher id, the event
/// type, the priority and a UTC timestamp; the payload is encoded with the transport's
/// codec. With the messaging driver it goes to `<topic>.<priority>` for every topic and
/// is stored until a listener takes it. The `with_*` methods return a modified copy
/// (oslo's `prepare()`).
///
/// # Examples
///
/// ```no_run
/// # async fn demo(transport: std::sync::Arc<dyn messaging_core::Transport>) -> Result<(), messaging_core::notify::NotifyError> {
/// use messaging_core::Context;
/// use messaging_core::notify::Notifier;
///
/// let notifier = Notifier::new(transport, "compute.host1").with_topics(["notifications"]);
/// notifier
///     .info(&Context::new(), "compute.instance.create.end", &serde_json::json!({"id": 1}))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Notifier {
    transport: Arc<dyn Transport>,
    publisher_id: String,
    driver: NotifyDriver,
    topics: Vec<String>,
    exchange: Option<String>,
    timeout: Option<Duration>,
}

impl Notifier {
    /// A notifier for `publisher_id`, on topic `notifications`, with the messaging driver.
    pub fn new(transport: Arc<dyn Transport>, publisher_id: impl Into<String>) -> Self {
        Notifier {
            transport,
            publisher_id: publisher_id.into(),
            driver: NotifyDriver::Messaging,
            topics: vec![DEFAULT_TOPIC.to_owned()],
            exchange: None,
            timeout: None,
        }
    }

    /// Sends to these topics instead.
    pub fn with_topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Uses another driver.
    pub fn with_driver(mut self, driver: NotifyDriver) -> Self {
        self.driver = driver;
        self
    }

    /// Sends as another publisher.
    pub fn with_publisher_id(mut self, publisher_id: impl Into<String>) -> Self {
        self.publisher_id = publisher_id.into();
        self
    }

    /// Sends to another exchange.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = Some(exchange.into());
        self
    }

    /// How long sending one notification (to all its topics) may take, connection
    /// retries included; see [`Transport::notify_with`] (default: the transport's own
    /// limit, 60 s on RabbitMQ). A transport that retries fails at the deadline with
    /// the last failure it saw, or [`TransportError::TimedOut`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether notifications go anywhere (the driver is not `noop`).
    pub fn is_enabled(&self) -> bool {
        self.driver != NotifyDriver::Noop
    }

    /// Sends one notification.
    ///
    /// # Errors
    ///
    /// An empty topic, a payload the codec cannot encode, or a transport failure.
    pub async fn notify<P: Serialize + ?Sized>(
        &self,
        context: &Context,
        priority: Priority,
        event_type: &str,
        payload: &P,
    ) -> Result<(), NotifyError> {
        let span = tracing::info_span!(
            "notify",
            %priority,
            event_type,
            publisher_id = %self.publisher_id,
            trace_id = context
                .get(crate::rpc::TRACE_ID)
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
        );
        self.notify_inner(context, priority, event_type, payload)
            .instrument(span)
            .await
    }

    async fn notify_inner<P: Serialize + ?Sized>(
        &self,
        context: &Context,
        priority: Priority,
        event_type: &str,
        payload: &P,
    ) -> Result<(), NotifyError> {
        let meta = NotificationMeta {
            message_id: ids::uuid4(),
            publisher_id: self.publisher_id.clone(),
            event_type: event_type.to_owned(),
            priority,
            timestamp: ids::utc_timestamp(),
        };
        match self.driver {
            NotifyDriver::Noop => Ok(()),
            NotifyDriver::Log => {
                log_notification(&meta, &Json.encode(payload)?);
                Ok(())
            }
            NotifyDriver::Messaging => {
                let codec = self.transport.codec();
                let body = codec.encode(payload)?;
                let message = Message::new(body)
                    .with_context(context.clone())
                    .with_meta(Meta::Notification(meta))
                    .with_codec(codec);
                // One deadline for every topic (`None`: too far to represent).
                let deadline = self.timeout.map(|t| Instant::now().checked_add(t));
                for topic in &self.topics {
                    let mut target = Target::new(topic.clone());
                    target.exchange = self.exchange.clone();
                    target.validate_for_send()?;
                    tracing::debug!(%target, %priority, event_type, "notify");
                    let options = SendOptions::with_timeout(match deadline {
                        Some(Some(deadline)) => {
                            Some(deadline.saturating_duration_since(Instant::now()))
                        }
                        Some(None) | None => self.timeout,
                    });
                    self.transport
                        .notify_with(&target, priority, message.clone(), &options)
                        .await?;
                }
                Ok(())
            }
        }
    }
}

macro_rules! priority_methods {
    ($($(#[$doc:meta])* $name:ident => $priority:ident,)*) => {
        impl Notifier {
            $(
                $(#[$doc])*
                pub async fn $name<P: Serialize + ?Sized>(
                    &self,
                    context: &Context,
                    event_type: &str,
                    payload: &P,
                ) -> Result<(), NotifyError> {
                    self.notify(context, Priority::$priority, event_type, payload).await
                }
            )*
        }
    };
}

priority_methods! {
    /// Sends at priority `audit`.
    audit => Audit,
    /// Sends at priority `debug`.
    debug => Debug,
    /// Sends at priority `info`.
    info => Info,
    /// Sends at priority `warn`.
    warn => Warn,
    /// Sends at priority `error`.
    error => Error,
    /// Sends at priority `critical`.
    critical => Critical,
    /// Sends at priority `sample`.
    sample => Sample,
}

fn log_notification(meta: &NotificationMeta, payload: &[u8]) {
    let payload = String::from_utf8_lossy(payload);
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: "messaging::notification",
                $level,
                publisher_id = %meta.publisher_id,
                event_type = %meta.event_type,
                priority = %meta.priority,
                message_id = %meta.message_id,
                timestamp = %meta.timestamp,
                payload = %payload,
                "notification"
            )
        };
    }
    match meta.priority {
        Priority::Debug => emit!(tracing::Level::DEBUG),
        Priority::Info | Priority::Audit | Priority::Sample => emit!(tracing::Level::INFO),
        Priority::Warn => emit!(tracing::Level::WARN),
        Priority::Error | Priority::Critical => emit!(tracing::Level::ERROR),
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("publisher_id", &self.publisher_id)
            .field("driver", &self.driver)
            .field("topics", &self.topics)
            .field("exchange", &self.exchange)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::codec::CodecKind;
    use crate::dispatch::block_on;
    use crate::reply::ReplyReceiver;
    use crate::transport::{ListenOptions, Listener};
    use crate::url::TransportUrl;
    use crate::{Subscription, TransportError};

    /// Records the timeout each notification was sent with.
    #[derive(Debug)]
    struct Recording {
        url: TransportUrl,
        timeouts: Mutex<Vec<Option<Duration>>>,
    }

    #[async_trait]
    impl Transport for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }

        fn url(&self) -> &TransportUrl {
            &self.url
        }

        fn codec(&self) -> CodecKind {
            CodecKind::Json
        }

        async fn cast(
            &self,
            _: &Target,
            _: Message,
            _: &SendOptions,
        ) -> Result<(), TransportError> {
            Err(TransportError::other("not here"))
        }

        async fn call(
            &self,
            _: &Target,
            _: Message,
            _: &SendOptions,
        ) -> Result<ReplyReceiver, TransportError> {
            Err(TransportError::other("not here"))
        }

        async fn notify(&self, _: &Target, _: Priority, _: Message) -> Result<(), TransportError> {
            panic!("the notifier sends with its options")
        }

        async fn notify_with(
            &self,
            _: &Target,
            _: Priority,
            _: Message,
            options: &SendOptions,
        ) -> Result<(), TransportError> {
            self.timeouts.lock().unwrap().push(options.timeout);
            Ok(())
        }

        fn listen(
            &self,
            _: &Subscription,
            _: &ListenOptions,
        ) -> Result<Box<dyn Listener>, TransportError> {
            Err(TransportError::other("not here"))
        }
    }

    /// `with_timeout` bounds the whole notification: each topic's send gets what is
    /// left of it; without it, the transport's own limit applies.
    #[test]
    fn the_timeout_goes_to_the_transport_for_every_topic() {
        let recording = Arc::new(Recording {
            url: TransportUrl::parse("recording://").unwrap(),
            timeouts: Mutex::new(Vec::new()),
        });
        let notifier = Notifier::new(recording.clone(), "p").with_topics(["a", "b"]);
        let timeout = Duration::from_secs(10);
        block_on(notifier.clone().with_timeout(timeout).info(
            &Context::new(),
            "e",
            &serde_json::json!({}),
        ))
        .unwrap();
        let sent = std::mem::take(&mut *recording.timeouts.lock().unwrap());
        assert_eq!(sent.len(), 2, "{sent:?}");
        let (first, second) = (sent[0].unwrap(), sent[1].unwrap());
        assert!(
            first <= timeout && first > timeout - Duration::from_secs(5),
            "{first:?}"
        );
        assert!(second <= first, "{second:?} after {first:?}");
        block_on(notifier.info(&Context::new(), "e", &serde_json::json!({}))).unwrap();
        assert_eq!(*recording.timeouts.lock().unwrap(), [None, None]);
    }
}
