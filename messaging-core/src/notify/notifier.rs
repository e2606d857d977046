//! [`Notifier`]: sends notifications with oslo's seven priorities, through one or more
//! drivers.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tracing::Instrument;

use super::driver::{NotifyDriver, Retry, UnknownDriver};
use super::error::{NotifyError, SendFailure};
use super::mask;
use super::routing::RoutingTable;
use crate::codec::{Codec, Json};
use crate::ids;
use crate::message::{Context, Message, Meta, NotificationMeta, Priority};
use crate::target::Target;
use crate::transport::{SendOptions, Transport};

/// oslo's default notification topic.
pub const DEFAULT_TOPIC: &str = "notifications";

/// How long "until it is sent" lasts when retrying forever without a timeout: a year
/// (what RabbitMQ's transport takes as its longest deadline).
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Sends notifications: `notifier.info(&ctx, "compute.instance.create.end", &payload)`.
///
/// Each notification carries a fresh `message_id` (uuid4), the publisher id, the event
/// type, the priority, a UTC timestamp and the context **redacted**
/// ([`Context::redacted`]: no token leaves the service in a notification, as with
/// oslo's notifier); the payload is encoded with the transport's codec. The `with_*`
/// methods return a modified copy (oslo's `prepare()`), cheap to make.
///
/// # Drivers
///
/// A notifier has one or more [`NotifyDriver`]s (oslo's `driver` option is a list),
/// `messagingv2` by default. Each notification goes through every driver in turn:
/// the messaging drivers send it to `<topic>.<priority>` for every topic (stored
/// until a listener takes it; `messaging` without oslo's envelope, `messagingv2` in
/// it), `log` writes it to `tracing`, `noop` drops it, and `routing` hands it to the
/// drivers its [`RoutingTable`] chooses ([`with_routing`](Notifier::with_routing)).
/// A driver listed twice counts once; a driver the routing table chooses as well as
/// listed sends twice, as in oslo.
///
/// # Failures
///
/// A failing send does not stop the others: every driver and every topic is tried,
/// then the failures are returned ([`NotifyError`]). oslo's notifier logs them
/// instead and returns nothing, so its callers cannot tell; to behave as it does,
/// ignore or log the error.
///
/// # Retries and timeouts
///
/// A send that fails in a way a reconnect may fix (the broker is down) is retried
/// by the transport on RabbitMQ and NATS. Without [`with_retry`](Notifier::with_retry)
/// or [`with_timeout`](Notifier::with_timeout) each send (one driver to one topic) is
/// retried within the transport's own limit (60 s). With `with_retry` it is retried
/// that often (oslo's `retry`:
/// [`Retry::Forever`] is oslo's `-1`, its default), however long that takes, unless
/// `with_timeout` bounds the whole notification too.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(transport: std::sync::Arc<dyn messaging_core::Transport>) -> Result<(), messaging_core::notify::NotifyError> {
/// use messaging_core::Context;
/// use messaging_core::notify::{Notifier, NotifyDriver};
///
/// let notifier = Notifier::new(transport, "compute.host1")
///     .with_topics(["notifications"])
///     .with_drivers([NotifyDriver::MessagingV2, NotifyDriver::Log])
///     .with_retry(3);
/// notifier
///     .info(&Context::new(), "compute.instance.create.end", &serde_json::json!({"id": 1}))
///     .await?;
/// # Ok(()) }
/// ```
///
/// Built from oslo's `[oslo_messaging_notifications]` options:
///
/// ```no_run
/// # fn demo(transport: std::sync::Arc<dyn messaging_core::Transport>) -> Result<(), Box<dyn std::error::Error>> {
/// use messaging_core::notify::{Notifier, Retry, RoutingTable};
///
/// # let (drivers, topics, retry) = (vec!["messagingv2".to_owned()], vec!["notifications".to_owned()], -1i64);
/// // drivers: Vec<String>, topics: Vec<String>, retry: i64 as oslo.config read them
/// let notifier = Notifier::new(transport, "compute.host1")
///     .with_driver_names(&drivers)?
///     .with_topics(topics)
///     .with_retry(Retry::from_oslo(retry))
///     .with_routing(RoutingTable::new()); // or RoutingTable::from_yaml_file(path)? (feature `yaml`)
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Notifier {
    transport: Arc<dyn Transport>,
    publisher_id: String,
    drivers: Vec<NotifyDriver>,
    routing: Option<Arc<RoutingTable>>,
    topics: Vec<String>,
    exchange: Option<String>,
    timeout: Option<Duration>,
    retry: Option<Retry>,
}

impl Notifier {
    /// A notifier for `publisher_id`, on topic `notifications`, with the `messagingv2`
    /// driver.
    pub fn new(transport: Arc<dyn Transport>, publisher_id: impl Into<String>) -> Self {
        Notifier {
            transport,
            publisher_id: publisher_id.into(),
            drivers: vec![NotifyDriver::MessagingV2],
            routing: None,
            topics: vec![DEFAULT_TOPIC.to_owned()],
            exchange: None,
            timeout: None,
            retry: None,
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

    /// Uses this one driver instead.
    pub fn with_driver(self, driver: NotifyDriver) -> Self {
        self.with_drivers([driver])
    }

    /// Uses these drivers instead, each once, in the order given (none: nothing is
    /// sent).
    pub fn with_drivers(mut self, drivers: impl IntoIterator<Item = NotifyDriver>) -> Self {
        self.drivers.clear();
        for driver in drivers {
            if !self.drivers.contains(&driver) {
                self.drivers.push(driver);
            }
        }
        self
    }

    /// Uses the drivers of these names (oslo's `driver` option:
    /// `["messagingv2", "log"]`) instead; see [`with_drivers`](Notifier::with_drivers).
    ///
    /// # Errors
    ///
    /// [`UnknownDriver`] for the first name that is not a driver's.
    pub fn with_driver_names<I, S>(self, names: I) -> Result<Self, UnknownDriver>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let drivers = names
            .into_iter()
            .map(|name| name.as_ref().parse())
            .collect::<Result<Vec<NotifyDriver>, _>>()?;
        Ok(self.with_drivers(drivers))
    }

    /// The table the `routing` driver follows (without one it routes nothing, as
    /// oslo's without a `routing_config`). Has no effect unless the drivers include
    /// [`NotifyDriver::Routing`].
    pub fn with_routing(mut self, table: RoutingTable) -> Self {
        self.routing = Some(Arc::new(table));
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

    /// How long sending one notification (through every driver, to every topic) may
    /// take, connection retries included; see [`Transport::notify_with`]. A transport
    /// that retries fails at the deadline with the last failure it saw, or
    /// [`TransportError::TimedOut`](crate::TransportError::TimedOut).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How often a failed send is retried (oslo's `retry`; see [`Retry`]):
    /// `with_retry(0)` fails after one attempt, `with_retry(n)` after `n + 1`,
    /// `with_retry(Retry::Forever)` keeps trying until the broker takes the
    /// notification. Unless [`with_timeout`](Notifier::with_timeout) is set too, the
    /// number of retries is the only limit (an attempt the broker never answers at
    /// all, e.g. under a memory alarm, is bounded only by a timeout).
    pub fn with_retry(mut self, retry: impl Into<Retry>) -> Self {
        self.retry = Some(retry.into());
        self
    }

    /// The drivers, in order.
    pub fn drivers(&self) -> &[NotifyDriver] {
        &self.drivers
    }

    /// The routing driver's table, if one was given.
    pub fn routing(&self) -> Option<&RoutingTable> {
        self.routing.as_deref()
    }

    /// The topics each notification goes to (as `<topic>.<priority>`).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The retry limit set with [`with_retry`](Notifier::with_retry); `None`: the
    /// transport's own.
    pub fn retry(&self) -> Option<Retry> {
        self.retry
    }

    /// The publisher id notifications carry.
    pub fn publisher_id(&self) -> &str {
        &self.publisher_id
    }

    /// Whether notifications go anywhere: some driver is not `noop`. (oslo's
    /// `is_enabled()` is true for an empty driver list; here it is false, since
    /// nothing is sent.)
    pub fn is_enabled(&self) -> bool {
        self.drivers.iter().any(|d| *d != NotifyDriver::Noop)
    }

    /// Sends one notification through every driver.
    ///
    /// # Errors
    ///
    /// An invalid topic or a payload the codec cannot encode (nothing is sent), or
    /// the sends that failed (the others went out); see [`NotifyError`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped before it returns, the notification may have gone
    /// out through some drivers and not others.
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

    /// The drivers this notification goes through: the routing driver replaced by
    /// what its table chooses.
    fn drivers_for(&self, event_type: &str, priority: Priority) -> Vec<NotifyDriver> {
        let mut drivers = Vec::with_capacity(self.drivers.len());
        for driver in &self.drivers {
            if *driver == NotifyDriver::Routing {
                match &self.routing {
                    Some(table) => {
                        let chosen = table.drivers_for(event_type, priority);
                        tracing::debug!(event_type, %priority, ?chosen, "routing");
                        drivers.extend(chosen);
                    }
                    None => tracing::debug!(
                        event_type,
                        "the routing driver has no routing table: routed nowhere"
                    ),
                }
            } else {
                drivers.push(*driver);
            }
        }
        drivers
    }

    async fn notify_inner<P: Serialize + ?Sized>(
        &self,
        context: &Context,
        priority: Priority,
        event_type: &str,
        payload: &P,
    ) -> Result<(), NotifyError> {
        let drivers = self.drivers_for(event_type, priority);
        let messaging = drivers.iter().any(|d| d.format().is_some());
        // Everything that can fail before sending is checked first: then nothing
        // is sent.
        let mut targets = Vec::new();
        let mut message = None;
        if messaging {
            for topic in &self.topics {
                let mut target = Target::new(topic.clone());
                target.exchange = self.exchange.clone();
                target.validate_for_send()?;
                targets.push((topic, target));
            }
        }
        let meta = NotificationMeta {
            message_id: ids::uuid4(),
            publisher_id: self.publisher_id.clone(),
            event_type: event_type.to_owned(),
            priority,
            timestamp: ids::utc_timestamp(),
        };
        if messaging {
            let codec = self.transport.codec();
            message = Some(
                Message::new(codec.encode(payload)?)
                    .with_context(context.redacted())
                    .with_meta(Meta::Notification(meta.clone()))
                    .with_codec(codec),
            );
        }
        let logged = match drivers.contains(&NotifyDriver::Log) {
            true => Some(Json.encode(payload)?),
            false => None,
        };
        // One deadline for every driver and topic (`None`: too far to represent).
        let budget = match (self.timeout, self.retry) {
            (Some(timeout), _) => Some(timeout),
            (None, Some(_)) => Some(FOREVER),
            (None, None) => None,
        };
        let deadline = budget.map(|t| (t, Instant::now().checked_add(t)));
        let mut failures = Vec::new();
        for driver in drivers {
            match (driver, driver.format(), &message, &logged) {
                (_, Some(format), Some(message), _) => {
                    for (topic, target) in &targets {
                        tracing::debug!(%target, %priority, event_type, %driver, "notify");
                        let mut options = SendOptions::with_timeout(match deadline {
                            Some((_, Some(at))) => {
                                Some(at.saturating_duration_since(Instant::now()))
                            }
                            Some((timeout, None)) => Some(timeout),
                            None => None,
                        })
                        .notification_format(format);
                        options.retry = self.retry.and_then(Retry::as_option);
                        let sent = self
                            .transport
                            .notify_with(target, priority, message.clone(), &options)
                            .await;
                        if let Err(error) = sent {
                            tracing::debug!(%target, %driver, %error, "notification not sent");
                            failures.push(SendFailure {
                                driver,
                                topic: (*topic).clone(),
                                error,
                            });
                        }
                    }
                }
                (NotifyDriver::Log, _, _, Some(payload)) => log_notification(&meta, payload),
                _ => {}
            }
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(NotifyError::Transport(
                failures.pop().expect("one failure").error,
            )),
            _ => Err(NotifyError::Several(failures)),
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

/// The `log` driver: one event at the priority's level, the payload's secrets masked
/// (oslo's log driver masks them with `mask_dict_password`); a payload nested too deep
/// to read back is not written.
fn log_notification(meta: &NotificationMeta, payload: &Bytes) {
    let payload = match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(mut value) => {
            mask::mask_secrets(&mut value);
            value.to_string()
        }
        // Nested deeper than serde_json reads (128 levels): its secrets cannot be
        // found, so it is not written at all.
        Err(_) => format!(
            "({} bytes not shown: nested too deep to mask the secrets in it)",
            payload.len()
        ),
    };
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
            .field("drivers", &self.drivers)
            .field("routing", &self.routing)
            .field("topics", &self.topics)
            .field("exchange", &self.exchange)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
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
    use crate::message::NotificationFormat;
    use crate::notify::Route;
    use crate::reply::ReplyReceiver;
    use crate::transport::{ListenOptions, Listener};
    use crate::url::TransportUrl;
    use crate::{Subscription, TransportError};

    /// One notification as the transport was asked to send it.
    #[derive(Debug, Clone)]
    struct Sent {
        topic: String,
        format: NotificationFormat,
        timeout: Option<Duration>,
        retry: Option<u32>,
        context: Context,
        event_type: String,
    }

    /// Records every notification with its options; fails those to `failing` topics.
    #[derive(Debug)]
    struct Recording {
        url: TransportUrl,
        failing: Vec<String>,
        sent: Mutex<Vec<Sent>>,
    }

    impl Recording {
        fn new(failing: &[&str]) -> Arc<Recording> {
            Arc::new(Recording {
                url: TransportUrl::parse("recording://").unwrap(),
                failing: failing.iter().map(|s| s.to_string()).collect(),
                sent: Mutex::new(Vec::new()),
            })
        }

        fn take(&self) -> Vec<Sent> {
            std::mem::take(&mut *self.sent.lock().unwrap())
        }
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
            target: &Target,
            _: Priority,
            message: Message,
            options: &SendOptions,
        ) -> Result<(), TransportError> {
            let topic = target.topic.clone().unwrap_or_default();
            let Meta::Notification(meta) = &message.meta else {
                panic!("not a notification: {message:?}")
            };
            self.sent.lock().unwrap().push(Sent {
                topic: topic.clone(),
                format: options.notification_format,
                timeout: options.timeout,
                retry: options.retry,
                context: message.context.clone(),
                event_type: meta.event_type.clone(),
            });
            if self.failing.contains(&topic) {
                return Err(TransportError::Connection {
                    message: format!("{topic} is down"),
                    source: None,
                });
            }
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

    fn info(notifier: &Notifier, event_type: &str) -> Result<(), NotifyError> {
        let mut ctx = Context::new();
        ctx.insert("user", "u1");
        ctx.insert("auth_token", "tok-secret");
        ctx.insert("service_token", "svc-secret");
        block_on(notifier.info(&ctx, event_type, &serde_json::json!({"id": 1})))
    }

    /// `with_timeout` bounds the whole notification: each topic's send gets what is
    /// left of it; without it (and without a retry), the transport's own limit
    /// applies.
    #[test]
    fn the_timeout_goes_to_the_transport_for_every_topic() {
        let recording = Recording::new(&[]);
        let notifier = Notifier::new(recording.clone(), "p").with_topics(["a", "b"]);
        let timeout = Duration::from_secs(10);
        info(&notifier.clone().with_timeout(timeout), "e").unwrap();
        let sent = recording.take();
        assert_eq!(sent.len(), 2, "{sent:?}");
        let (first, second) = (sent[0].timeout.unwrap(), sent[1].timeout.unwrap());
        assert!(
            first <= timeout && first > timeout - Duration::from_secs(5),
            "{first:?}"
        );
        assert!(second <= first, "{second:?} after {first:?}");
        info(&notifier, "e").unwrap();
        let sent = recording.take();
        assert_eq!(
            sent.iter()
                .map(|s| (s.timeout, s.retry))
                .collect::<Vec<_>>(),
            [(None, None), (None, None)]
        );
    }

    /// oslo's `retry` reaches the transport: a limit as it is, forever as no limit;
    /// either way without a timeout the retries are the only bound (a deadline of a
    /// year, not the transport's 60 s).
    #[test]
    fn the_retry_goes_to_the_transport() {
        let recording = Recording::new(&[]);
        let notifier = Notifier::new(recording.clone(), "p");
        for (retry, expected) in [
            (Retry::Limit(0), Some(0)),
            (Retry::Limit(3), Some(3)),
            (Retry::Forever, None),
        ] {
            info(&notifier.clone().with_retry(retry), "e").unwrap();
            let sent = recording.take();
            assert_eq!(sent[0].retry, expected, "{retry:?}");
            assert!(sent[0].timeout.unwrap() > Duration::from_secs(300 * 24 * 3600));
        }
        info(
            &notifier.with_retry(2).with_timeout(Duration::from_secs(5)),
            "e",
        )
        .unwrap();
        let sent = recording.take();
        assert_eq!(sent[0].retry, Some(2));
        assert!(sent[0].timeout.unwrap() <= Duration::from_secs(5));
    }

    /// No token leaves in a notification: the transport is handed the redacted
    /// context.
    #[test]
    fn the_transport_gets_the_redacted_context() {
        let recording = Recording::new(&[]);
        info(&Notifier::new(recording.clone(), "p"), "e").unwrap();
        let sent = recording.take();
        assert_eq!(sent.len(), 1);
        let context = serde_json::to_string(&sent[0].context).unwrap();
        assert_eq!(context, r#"{"auth_token":null,"user":"u1"}"#);
    }

    /// `messaging` sends format 1.0 and `messagingv2` 2.0, each to every topic; a
    /// driver listed twice sends once; `noop` and `log` send nothing over the
    /// transport.
    #[test]
    fn every_driver_sends_in_its_format_to_every_topic() {
        let recording = Recording::new(&[]);
        let notifier = Notifier::new(recording.clone(), "p")
            .with_topics(["a", "b"])
            .with_driver_names(["messaging", "noop", "messagingv2", "log", "messaging"])
            .unwrap();
        assert_eq!(
            notifier.drivers(),
            [
                NotifyDriver::Messaging,
                NotifyDriver::Noop,
                NotifyDriver::MessagingV2,
                NotifyDriver::Log
            ]
        );
        info(&notifier, "e").unwrap();
        let sent: Vec<(String, NotificationFormat)> = recording
            .take()
            .into_iter()
            .map(|s| (s.topic, s.format))
            .collect();
        assert_eq!(
            sent,
            [
                ("a".to_owned(), NotificationFormat::V1),
                ("b".to_owned(), NotificationFormat::V1),
                ("a".to_owned(), NotificationFormat::V2),
                ("b".to_owned(), NotificationFormat::V2),
            ]
        );
        assert!(notifier.is_enabled());
        assert!(
            !notifier
                .clone()
                .with_driver(NotifyDriver::Noop)
                .is_enabled()
        );
        let none = notifier.with_drivers([]);
        assert!(!none.is_enabled());
        info(&none, "e").unwrap();
        assert!(recording.take().is_empty());
    }

    /// A failing send stops nothing: every driver and topic is tried, and the
    /// caller gets each failure (one alone as it is).
    #[test]
    fn a_failing_send_does_not_stop_the_others() {
        let recording = Recording::new(&["down"]);
        let notifier = Notifier::new(recording.clone(), "p")
            .with_topics(["down", "up"])
            .with_drivers([NotifyDriver::Messaging, NotifyDriver::MessagingV2]);
        let error = info(&notifier, "e").unwrap_err();
        assert_eq!(
            recording.take().len(),
            4,
            "every driver and topic was tried"
        );
        let NotifyError::Several(failures) = &error else {
            panic!("{error:?}")
        };
        let failed: Vec<(NotifyDriver, &str)> = failures
            .iter()
            .map(|f| (f.driver, f.topic.as_str()))
            .collect();
        assert_eq!(
            failed,
            [
                (NotifyDriver::Messaging, "down"),
                (NotifyDriver::MessagingV2, "down")
            ]
        );
        assert_eq!(error.transport_errors().len(), 2);
        assert_eq!(
            error.to_string(),
            "2 notification sends failed: messaging to `down`: connection failed: down is \
             down; messagingv2 to `down`: connection failed: down is down"
        );
        let one = info(&notifier.with_driver(NotifyDriver::MessagingV2), "e").unwrap_err();
        assert!(
            matches!(
                &one,
                NotifyError::Transport(TransportError::Connection { .. })
            ),
            "{one:?}"
        );
        assert_eq!(one.transport_errors().len(), 1);
        assert_eq!(recording.take().len(), 2);
    }

    /// An invalid topic is found before anything is sent.
    #[test]
    fn an_invalid_topic_sends_nothing() {
        let recording = Recording::new(&[]);
        let notifier = Notifier::new(recording.clone(), "p").with_topics(["ok", ""]);
        assert!(matches!(
            info(&notifier, "e"),
            Err(NotifyError::InvalidTarget(_))
        ));
        assert!(recording.take().is_empty());
        // Without a messaging driver the topics are not used, so not checked.
        info(&notifier.with_driver(NotifyDriver::Log), "e").unwrap();
    }

    #[test]
    fn an_unknown_driver_name_is_an_error() {
        let notifier = Notifier::new(Recording::new(&[]), "p");
        assert_eq!(
            notifier
                .with_driver_names(["log", "kafka"])
                .map(|n| n.drivers().to_vec()),
            Err(UnknownDriver("kafka".to_owned()))
        );
    }

    /// The routing driver sends through what its table chooses, and through nothing
    /// without a table; a driver listed and also chosen sends twice, as in oslo.
    #[test]
    fn the_routing_driver_sends_through_the_drivers_its_table_chooses() {
        let recording = Recording::new(&[]);
        let table = RoutingTable::new().group(
            "g",
            [
                Route::new(NotifyDriver::Messaging).accepted_events(["compute.*"]),
                Route::new(NotifyDriver::MessagingV2).accepted_priorities(["error"]),
            ],
        );
        let routing = Notifier::new(recording.clone(), "p").with_driver(NotifyDriver::Routing);
        info(&routing, "compute.x").unwrap();
        assert!(recording.take().is_empty(), "no table, no route");
        let routing = routing.with_routing(table);
        assert!(routing.routing().is_some());
        info(&routing, "compute.x").unwrap();
        info(&routing, "network.x").unwrap();
        block_on(routing.error(&Context::new(), "compute.y", &1)).unwrap();
        let sent: Vec<(String, NotificationFormat)> = recording
            .take()
            .into_iter()
            .map(|s| (s.event_type, s.format))
            .collect();
        assert_eq!(
            sent,
            [
                ("compute.x".to_owned(), NotificationFormat::V1),
                ("compute.y".to_owned(), NotificationFormat::V1),
                ("compute.y".to_owned(), NotificationFormat::V2),
            ]
        );
        let both = routing.with_drivers([NotifyDriver::Messaging, NotifyDriver::Routing]);
        info(&both, "compute.z").unwrap();
        assert_eq!(recording.take().len(), 2);
    }
}
