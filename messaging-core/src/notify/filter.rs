//! [`NotificationFilter`]: oslo's regular-expression filter on notifications.

use std::collections::BTreeMap;

use regex::Regex;

use crate::message::{Context, NotificationMeta};

/// Selects the notifications an endpoint sees, by regular expressions matched at the
/// start of a value (Python's `re.match`): on the publisher id, the event type, and
/// keys of the context, the metadata (`message_id`, `timestamp`) and the payload. For a
/// keyed rule the key must exist and hold a string that matches. A notification that
/// does not pass is skipped (counted as handled).
///
/// # Examples
///
/// ```
/// use messaging_core::notify::NotificationFilter;
///
/// let filter = NotificationFilter::new()
///     .event_type(r"compute\.instance\..*")?
///     .publisher_id("compute")?
///     .payload("state", "active|error")?;
/// # let _ = filter;
/// # Ok::<(), regex::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct NotificationFilter {
    publisher_id: Option<Regex>,
    event_type: Option<Regex>,
    context: BTreeMap<String, Regex>,
    metadata: BTreeMap<String, Regex>,
    payload: BTreeMap<String, Regex>,
}

fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})"))
}

fn matches_str(rule: &Regex, value: Option<&serde_json::Value>) -> bool {
    value
        .and_then(serde_json::Value::as_str)
        .is_some_and(|s| rule.is_match(s))
}

impl NotificationFilter {
    /// A filter that passes everything.
    pub fn new() -> Self {
        NotificationFilter::default()
    }

    /// The publisher id must match.
    pub fn publisher_id(mut self, pattern: &str) -> Result<Self, regex::Error> {
        self.publisher_id = Some(anchored(pattern)?);
        Ok(self)
    }

    /// The event type must match.
    pub fn event_type(mut self, pattern: &str) -> Result<Self, regex::Error> {
        self.event_type = Some(anchored(pattern)?);
        Ok(self)
    }

    /// The context key must hold a matching string.
    pub fn context(mut self, key: &str, pattern: &str) -> Result<Self, regex::Error> {
        self.context.insert(key.to_owned(), anchored(pattern)?);
        Ok(self)
    }

    /// The metadata key (`message_id` or `timestamp`) must hold a matching string.
    pub fn metadata(mut self, key: &str, pattern: &str) -> Result<Self, regex::Error> {
        self.metadata.insert(key.to_owned(), anchored(pattern)?);
        Ok(self)
    }

    /// The payload's key must hold a matching string (the payload is looked at as JSON,
    /// whatever the codec).
    pub fn payload(mut self, key: &str, pattern: &str) -> Result<Self, regex::Error> {
        self.payload.insert(key.to_owned(), anchored(pattern)?);
        Ok(self)
    }

    /// Whether payload rules exist (they need the decoded payload).
    pub(crate) fn has_payload_rules(&self) -> bool {
        !self.payload.is_empty()
    }

    /// Checks everything but the payload.
    pub(crate) fn matches_envelope(&self, context: &Context, meta: &NotificationMeta) -> bool {
        if self
            .publisher_id
            .as_ref()
            .is_some_and(|r| !r.is_match(&meta.publisher_id))
        {
            return false;
        }
        if self
            .event_type
            .as_ref()
            .is_some_and(|r| !r.is_match(&meta.event_type))
        {
            return false;
        }
        if !self
            .context
            .iter()
            .all(|(key, rule)| matches_str(rule, context.get(key)))
        {
            return false;
        }
        self.metadata.iter().all(|(key, rule)| {
            let value = match key.as_str() {
                "message_id" => Some(meta.message_id.as_str()),
                "timestamp" => Some(meta.timestamp.as_str()),
                _ => None,
            };
            value.is_some_and(|v| rule.is_match(v))
        })
    }

    /// Checks the payload rules against the payload as JSON.
    pub(crate) fn matches_payload(&self, payload: &serde_json::Value) -> bool {
        self.payload
            .iter()
            .all(|(key, rule)| matches_str(rule, payload.get(key)))
    }
}
