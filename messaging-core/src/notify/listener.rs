//! Notification endpoints and the [`NotificationDispatcher`].

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::filter::NotificationFilter;
use crate::codec::{Codec, CodecKind, UnsupportedCodec, bincode_can_decode};
use crate::dispatch::{Dispatch, Dispatcher};
use crate::error::panic_message;
use crate::message::{Context, Meta, NotificationMeta, Priority};
use crate::transport::IncomingMessage;
use crate::untrusted::Untrusted;

/// A received notification with its payload decoded as `P`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Notification<P> {
    /// The sender's context.
    pub context: Context,
    /// Who sent it.
    pub publisher_id: String,
    /// What happened.
    pub event_type: String,
    /// Its priority.
    pub priority: Priority,
    /// The payload.
    pub payload: P,
    /// oslo's metadata: the message id (uuid4).
    pub message_id: String,
    /// oslo's metadata: the UTC timestamp.
    pub timestamp: String,
}

/// What a handler did with a notification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NotificationResult {
    /// Done: acknowledge it.
    #[default]
    Handled,
    /// Put it back for another delivery (only if the listener allows requeue;
    /// otherwise it is acknowledged).
    Requeue,
}

/// One notification as it came off the transport.
#[derive(Clone)]
struct Raw {
    context: Context,
    meta: NotificationMeta,
    body: Bytes,
    codec: CodecKind,
}

impl Raw {
    fn decode<P: DeserializeOwned + Serialize>(
        self,
        filter: Option<&NotificationFilter>,
    ) -> Result<Option<Notification<P>>, String> {
        let payload: P = self.codec.decode(&self.body).map_err(|e| e.to_string())?;
        if let Some(filter) = filter.filter(|f| f.has_payload_rules()) {
            let json = serde_json::to_value(&payload).map_err(|e| e.to_string())?;
            if !filter.matches_payload(&json) {
                return Ok(None);
            }
        }
        Ok(Some(Notification {
            context: self.context,
            publisher_id: self.meta.publisher_id,
            event_type: self.meta.event_type,
            priority: self.meta.priority,
            payload,
            message_id: self.meta.message_id,
            timestamp: self.meta.timestamp,
        }))
    }
}

type Single = Arc<dyn Fn(Raw, Option<&NotificationFilter>) -> NotificationResult + Send + Sync>;
type Batch = Arc<dyn Fn(Vec<Raw>, Option<&NotificationFilter>) -> NotificationResult + Send + Sync>;

#[derive(Clone)]
enum Handler {
    Single(Single),
    Batch(Batch),
}

/// A registered handler and whether bincode can decode its payload type.
#[derive(Clone)]
struct Registered {
    handler: Handler,
    bincode_ok: bool,
}

/// Handlers for notification priorities, with an optional [`NotificationFilter`]
/// (oslo's notification endpoint with its `filter_rule`).
///
/// # Examples
///
/// ```
/// use messaging_core::Priority;
/// use messaging_core::notify::{Notification, NotificationEndpoint, NotificationFilter, NotificationResult};
///
/// let endpoint = NotificationEndpoint::new()
///     .on(Priority::Info, |n: Notification<serde_json::Value>| {
///         println!("{} from {}: {}", n.event_type, n.publisher_id, n.payload);
///         NotificationResult::Handled
///     })
///     .with_filter(NotificationFilter::new().event_type(r"compute\.")?);
/// assert_eq!(endpoint.priorities().collect::<Vec<_>>(), [Priority::Info]);
/// # Ok::<(), regex::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct NotificationEndpoint {
    filter: Option<NotificationFilter>,
    handlers: HashMap<Priority, Registered>,
}

impl NotificationEndpoint {
    /// An endpoint with no handlers.
    pub fn new() -> Self {
        NotificationEndpoint::default()
    }

    /// Handles notifications of `priority` one at a time. Registering a priority again
    /// replaces its handler.
    ///
    /// A payload type that needs a self-describing format (`serde_json::Value`,
    /// `#[serde(flatten)]`, untagged enums) cannot be decoded from bincode: a listener
    /// with such a handler on a bincode transport (memory:// and nats:// by default)
    /// fails to build with [`ServerError::UnsupportedCodec`](crate::ServerError::UnsupportedCodec);
    /// open the transport with `?codec=json`, as oslo's wire (RabbitMQ) always is.
    pub fn on<P, F>(mut self, priority: Priority, handler: F) -> Self
    where
        P: DeserializeOwned + Serialize + 'static,
        F: Fn(Notification<P>) -> NotificationResult + Send + Sync + 'static,
    {
        let single: Single = Arc::new(move |raw: Raw, filter| match raw.decode::<P>(filter) {
            Ok(Some(notification)) => handler(notification),
            Ok(None) => NotificationResult::Handled,
            Err(error) => {
                tracing::error!(%error, "undecodable notification payload: dropped");
                NotificationResult::Handled
            }
        });
        self.handlers.insert(
            priority,
            Registered {
                handler: Handler::Single(single),
                bincode_ok: bincode_can_decode::<P>(),
            },
        );
        self
    }

    /// Handles notifications of `priority` in batches (used by batch listeners; on a
    /// plain listener each batch holds one notification). A `Requeue` result requeues
    /// the whole batch. Payload types as for [`on`](NotificationEndpoint::on).
    pub fn on_batch<P, F>(mut self, priority: Priority, handler: F) -> Self
    where
        P: DeserializeOwned + Serialize + 'static,
        F: Fn(Vec<Notification<P>>) -> NotificationResult + Send + Sync + 'static,
    {
        let batch: Batch = Arc::new(move |raws: Vec<Raw>, filter| {
            let mut notifications = Vec::with_capacity(raws.len());
            for raw in raws {
                match raw.decode::<P>(filter) {
                    Ok(Some(n)) => notifications.push(n),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, "undecodable notification payload: dropped");
                    }
                }
            }
            if notifications.is_empty() {
                return NotificationResult::Handled;
            }
            handler(notifications)
        });
        self.handlers.insert(
            priority,
            Registered {
                handler: Handler::Batch(batch),
                bincode_ok: bincode_can_decode::<P>(),
            },
        );
        self
    }

    /// Only notifications passing `filter` reach this endpoint.
    pub fn with_filter(mut self, filter: NotificationFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The priorities this endpoint handles.
    pub fn priorities(&self) -> impl Iterator<Item = Priority> + '_ {
        let mut priorities: Vec<Priority> = self.handlers.keys().copied().collect();
        priorities.sort();
        priorities.into_iter()
    }
}

impl fmt::Debug for NotificationEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationEndpoint")
            .field("priorities", &self.priorities().collect::<Vec<_>>())
            .field("filter", &self.filter)
            .finish()
    }
}

/// Dispatches notifications to endpoints, the way oslo.messaging does:
///
/// * the handlers for a notification's priority run in endpoint order, skipping
///   endpoints whose filter rejects it; the first `Requeue` stops the chain;
/// * a handler that panics counts as `Requeue` (oslo: an exception requeues);
/// * afterwards the message is requeued if the result is `Requeue` and requeue is
///   allowed, and acknowledged otherwise (ack after dispatch);
/// * in batch mode, the batch is split by priority and each part goes to the batch
///   handlers of that priority.
#[derive(Clone, Debug)]
pub struct NotificationDispatcher {
    endpoints: Arc<[NotificationEndpoint]>,
    allow_requeue: bool,
}

impl NotificationDispatcher {
    /// A dispatcher over `endpoints`. `allow_requeue` false turns every `Requeue`
    /// into an acknowledgement (oslo's default for listeners).
    pub fn new(endpoints: Vec<NotificationEndpoint>, allow_requeue: bool) -> Self {
        NotificationDispatcher {
            endpoints: endpoints.into(),
            allow_requeue,
        }
    }

    /// Every priority some endpoint handles: what a listener must subscribe to.
    pub fn priorities(&self) -> Vec<Priority> {
        let mut all: Vec<Priority> = self
            .endpoints
            .iter()
            .flat_map(NotificationEndpoint::priorities)
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn run(&self, priority: Priority, raws: Vec<Raw>) -> NotificationResult {
        for endpoint in self.endpoints.iter() {
            let Some(Registered { handler, .. }) = endpoint.handlers.get(&priority) else {
                continue;
            };
            let filter = endpoint.filter.as_ref();
            let passing: Vec<Raw> = raws
                .iter()
                .filter(|raw| filter.is_none_or(|f| f.matches_envelope(&raw.context, &raw.meta)))
                .cloned()
                .collect();
            if passing.is_empty() {
                continue;
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| match handler {
                Handler::Single(single) => {
                    let mut result = NotificationResult::Handled;
                    for raw in passing {
                        if single(raw, filter) == NotificationResult::Requeue {
                            result = NotificationResult::Requeue;
                        }
                    }
                    result
                }
                Handler::Batch(batch) => batch(passing, filter),
            }));
            let result = outcome.unwrap_or_else(|panic| {
                tracing::error!(panic = %panic_message(&*panic), "notification handler panicked");
                NotificationResult::Requeue
            });
            if result == NotificationResult::Requeue {
                return result;
            }
        }
        NotificationResult::Handled
    }
}

impl Dispatcher for NotificationDispatcher {
    /// Refuses a payload type bincode cannot decode when the transport speaks bincode:
    /// every such notification would be dropped.
    fn check_codec(&self, codec: CodecKind) -> Result<(), UnsupportedCodec> {
        if codec != CodecKind::Bincode {
            return Ok(());
        }
        for endpoint in self.endpoints.iter() {
            for priority in endpoint.priorities() {
                if !endpoint.handlers[&priority].bincode_ok {
                    return Err(UnsupportedCodec {
                        handler: format!("the {priority} notification handler"),
                        codec,
                    });
                }
            }
        }
        Ok(())
    }

    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch {
        let this = self.clone();
        Dispatch::blocking(move || {
            let mut groups: Vec<(Priority, Vec<IncomingMessage>, Vec<Raw>)> = Vec::new();
            for mut incoming in batch {
                let message = incoming.message().clone();
                let Meta::Notification(meta) = message.meta else {
                    tracing::warn!("dropping a message that is not a notification");
                    let _ = incoming.acknowledge();
                    continue;
                };
                let priority = meta.priority;
                let raw = Raw {
                    context: message.context,
                    meta,
                    body: message.body,
                    codec: message.codec,
                };
                match groups.iter_mut().find(|(p, _, _)| *p == priority) {
                    Some((_, messages, raws)) => {
                        messages.push(incoming);
                        raws.push(raw);
                    }
                    None => groups.push((priority, vec![incoming], vec![raw])),
                }
            }
            for (priority, messages, raws) in groups {
                let first = raws.first().map(|r| (&r.meta, &r.context));
                let span = tracing::info_span!(
                    "notification",
                    %priority,
                    count = messages.len(),
                    // From the wire: shown cut and escaped.
                    event_type = %Untrusted::new(
                        first.map(|(m, _)| m.event_type.as_str()).unwrap_or_default()
                    ),
                    publisher_id = %Untrusted::new(
                        first.map(|(m, _)| m.publisher_id.as_str()).unwrap_or_default()
                    ),
                    trace_id = %Untrusted::new(
                        first
                            .and_then(|(_, c)| c.get(crate::rpc::TRACE_ID))
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                    ),
                );
                let _enter = span.enter();
                let result = this.run(priority, raws);
                for mut incoming in messages {
                    let settled = if result == NotificationResult::Requeue && this.allow_requeue {
                        incoming.requeue()
                    } else {
                        incoming.acknowledge()
                    };
                    if let Err(error) = settled {
                        tracing::warn!(%error, "cannot settle the notification");
                    }
                }
            }
        })
    }
}
