//! What travels: [`Message`] (a request [`Context`] and an encoded body), notification
//! [`Priority`], and the typed [`RemoteError`] a failed call brings back.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::CodecKind;

// ===== Context =====

/// The request context that travels with a message (oslo's `ctxt` dict): user, project,
/// request id, trace ids and so on, as JSON values keyed by name.
///
/// # Examples
///
/// ```
/// use messaging_core::Context;
///
/// let mut ctx = Context::new();
/// ctx.insert("request_id", "req-1");
/// assert_eq!(ctx.get("request_id").and_then(|v| v.as_str()), Some("req-1"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Context(BTreeMap<String, serde_json::Value>);

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Context::default()
    }

    /// Sets a key, returning the previous value.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Option<serde_json::Value> {
        self.0.insert(key.into(), value.into())
    }

    /// Reads a key.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    /// Removes a key.
    pub fn remove(&mut self, key: &str) -> Option<serde_json::Value> {
        self.0.remove(key)
    }

    /// The caller's call-monitor timeout, in a context an RPC handler receives: the
    /// value of the [`CLIENT_TIMEOUT`](crate::rpc::CLIENT_TIMEOUT) key, which the
    /// dispatcher sets from the request (oslo's `ctxt['client_timeout']`, from the
    /// message's `_timeout`).
    ///
    /// `None` when the caller asked for no heartbeats (a cast, or a call without a
    /// call-monitor timeout: the key is then `null`), when the key is absent (a
    /// context that did not come from the dispatcher), or when it is not a
    /// non-negative number of seconds a [`Duration`](std::time::Duration) can hold.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use messaging_core::Context;
    ///
    /// let mut ctx = Context::new();
    /// assert_eq!(ctx.client_timeout(), None);
    /// ctx.insert("client_timeout", 2.5);
    /// assert_eq!(ctx.client_timeout(), Some(Duration::from_millis(2500)));
    /// ```
    pub fn client_timeout(&self) -> Option<std::time::Duration> {
        let seconds = self.get(crate::rpc::CLIENT_TIMEOUT)?.as_f64()?;
        std::time::Duration::try_from_secs_f64(seconds).ok()
    }

    /// Iterates over the entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the context has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys that hold credentials, which a notification must never carry: what
    /// oslo.context 6.5.0 leaves out of a context's `redacted_copy()` (`auth_token`,
    /// `service_token`) or drops before logging one (`auth_token_info`, which holds
    /// the token and the service catalog).
    ///
    /// [`redacted`](Context::redacted) says what becomes of each.
    pub const SENSITIVE_KEYS: &'static [&'static str] =
        &["auth_token", "service_token", "auth_token_info"];

    /// Whether `key` is one of [`SENSITIVE_KEYS`](Context::SENSITIVE_KEYS) (exact,
    /// case-sensitive, as oslo's attribute names are).
    pub fn is_sensitive(key: &str) -> bool {
        Self::SENSITIVE_KEYS.contains(&key)
    }

    /// A copy without credentials, as oslo.messaging's notifier sends a context
    /// (`_sanitize_context`: `ctxt.redacted_copy()`, serialized with `to_dict()`):
    ///
    /// | key | oslo.context 6.5.0 | here |
    /// |---|---|---|
    /// | `auth_token` | not copied, so `to_dict()` sends `"auth_token": null` | `null`, if present |
    /// | `service_token` | not copied, and never in `to_dict()` | removed |
    /// | `auth_token_info` | removed from log records (`get_logging_values`) | removed |
    ///
    /// The same holds inside every other value, at any depth (`{"request":
    /// {"auth_token": "…", "id": 1}}` goes out as `{"request": {"auth_token": null,
    /// "id": 1}}`): oslo's `to_dict()` carries only the identity fields, so a token
    /// tucked inside another value never leaves either. Everything else is kept as it
    /// is. (oslo sends an empty context when it is given
    /// a plain dict, which it cannot redact; a `Context` is always redacted and sent.
    /// oslo's `redacted_copy()` builds a new
    /// `RequestContext` from the identity fields only, so `read_only`,
    /// `show_deleted`, `resource_uuid` and `is_admin_project` go out with their
    /// defaults and a subclass's own fields are lost; none of them is a credential,
    /// and here they keep their values.) The [`Notifier`](crate::notify::Notifier)
    /// sends every notification's context redacted; RPC sends the context whole, as
    /// oslo does, since the server may need the token.
    ///
    /// # Examples
    ///
    /// ```
    /// use messaging_core::Context;
    ///
    /// let ctx: Context = [("user", "alice"), ("auth_token", "gAAAA-secret"), ("service_token", "s")]
    ///     .into_iter()
    ///     .collect();
    /// let safe = ctx.redacted();
    /// assert_eq!(safe.get("user").and_then(|v| v.as_str()), Some("alice"));
    /// assert_eq!(safe.get("auth_token"), Some(&serde_json::Value::Null));
    /// assert!(safe.get("service_token").is_none());
    /// assert!(!serde_json::to_string(&safe).unwrap().contains("secret"));
    /// ```
    pub fn redacted(&self) -> Context {
        let mut copy = self.clone();
        copy.redact();
        copy
    }

    /// Redacts the context in place: see [`redacted`](Context::redacted).
    pub fn redact(&mut self) {
        for key in Self::SENSITIVE_KEYS {
            if *key == "auth_token" {
                if let Some(value) = self.0.get_mut(*key) {
                    *value = serde_json::Value::Null;
                }
            } else {
                self.0.remove(*key);
            }
        }
        // Inside other values too (`{"request": {"auth_token": ...}}`), at any depth:
        // iteratively, so that no nesting can exhaust the stack.
        let mut pending: Vec<&mut serde_json::Value> = self.0.values_mut().collect();
        while let Some(value) = pending.pop() {
            match value {
                serde_json::Value::Object(map) => {
                    for key in Self::SENSITIVE_KEYS {
                        if *key == "auth_token" {
                            if let Some(value) = map.get_mut(*key) {
                                *value = serde_json::Value::Null;
                            }
                        } else {
                            map.remove(*key);
                        }
                    }
                    pending.extend(map.values_mut());
                }
                serde_json::Value::Array(items) => pending.extend(items.iter_mut()),
                _ => {}
            }
        }
    }
}

impl<K: Into<String>, V: Into<serde_json::Value>> FromIterator<(K, V)> for Context {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Context(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

// ===== Message =====

/// What an RPC request carries besides its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestMeta {
    /// The method to call.
    pub method: String,
    /// The endpoint namespace (`None`: the null namespace).
    pub namespace: Option<String>,
    /// The interface version the caller needs (`None`: `1.0`).
    pub version: Option<String>,
}

impl RequestMeta {
    /// Metadata for a call or cast of `method`.
    pub fn new(method: impl Into<String>) -> Self {
        RequestMeta {
            method: method.into(),
            namespace: None,
            version: None,
        }
    }
}

/// What a notification carries besides its payload (oslo's message fields).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotificationMeta {
    /// A uuid4 with dashes.
    pub message_id: String,
    /// Who sent it, e.g. `compute.host1`.
    pub publisher_id: String,
    /// What happened, e.g. `compute.instance.create.end`.
    pub event_type: String,
    /// Its priority.
    pub priority: Priority,
    /// UTC, `2026-11-25 16:29:49.450261`.
    pub timestamp: String,
}

impl NotificationMeta {
    /// Metadata for a notification.
    pub fn new(
        message_id: impl Into<String>,
        publisher_id: impl Into<String>,
        event_type: impl Into<String>,
        priority: Priority,
        timestamp: impl Into<String>,
    ) -> Self {
        NotificationMeta {
            message_id: message_id.into(),
            publisher_id: publisher_id.into(),
            event_type: event_type.into(),
            priority,
            timestamp: timestamp.into(),
        }
    }
}

/// How a notification is written on oslo's wire (RabbitMQ): oslo's message format 1.0
/// (the `messaging` driver) or 2.0 (`messagingv2`).
///
/// * [`V1`](NotificationFormat::V1): the message as a plain JSON object (`message_id`,
///   `publisher_id`, `event_type`, `priority`, `payload`, `timestamp`, `_unique_id`,
///   `_context_*`), for consumers that predate the envelope;
/// * [`V2`](NotificationFormat::V2) (the default): the same object JSON-encoded again
///   inside `{"oslo.version": "2.0", "oslo.message": "..."}`.
///
/// oslo listeners read both. Transports without oslo's wire (`memory://`, and
/// `nats://`, whose frames are this project's own) send both the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NotificationFormat {
    /// No envelope (oslo's `messaging` driver).
    V1,
    /// The `oslo.version` 2.0 envelope (oslo's `messagingv2` driver).
    #[default]
    V2,
}

/// The kind of a message, with its kind-specific metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Meta {
    /// A plain message (transport tests, custom protocols).
    #[default]
    None,
    /// An RPC call or cast.
    Request(RequestMeta),
    /// A notification.
    Notification(NotificationMeta),
}

/// A message as transports carry it: a [`Context`], kind-specific [`Meta`], and a body
/// encoded with [`codec`](Message::codec). Cloning is cheap (the body is
/// reference-counted), which is what fanout needs.
///
/// `Debug` shows the body's length, never its bytes.
#[derive(Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// The request context.
    pub context: Context,
    /// What kind of message it is.
    pub meta: Meta,
    /// The codec the body was encoded with.
    pub codec: CodecKind,
    /// The encoded body (RPC arguments, a notification payload, ...).
    pub body: Bytes,
}

impl Message {
    /// A plain message with an empty context.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            context: Context::new(),
            meta: Meta::None,
            codec: CodecKind::default(),
            body: body.into(),
        }
    }

    /// Returns the message with its context replaced.
    pub fn with_context(mut self, context: Context) -> Self {
        self.context = context;
        self
    }

    /// Returns the message with its metadata replaced.
    pub fn with_meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }

    /// Returns the message with its codec replaced.
    pub fn with_codec(mut self, codec: CodecKind) -> Self {
        self.codec = codec;
        self
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("context", &self.context)
            .field("meta", &self.meta)
            .field("codec", &self.codec)
            .field("body_len", &self.body.len())
            .finish()
    }
}

// ===== Priority =====

/// Notification priority, oslo's seven levels. Sent upper-case on the wire
/// ([`as_wire`](Priority::as_wire)), used lower-case in queue names and by listeners
/// ([`as_str`](Priority::as_str)). There is no `WARNING`: `warning` parses as [`Warn`](Priority::Warn).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// `audit`
    Audit,
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn` (also parsed from `warning`)
    Warn,
    /// `error`
    Error,
    /// `critical`
    Critical,
    /// `sample`
    Sample,
}

impl Priority {
    /// Every priority, in oslo's order.
    pub const ALL: [Priority; 7] = [
        Priority::Audit,
        Priority::Debug,
        Priority::Info,
        Priority::Warn,
        Priority::Error,
        Priority::Critical,
        Priority::Sample,
    ];

    /// The lower-case name (`info`), as in queue names `<topic>.<priority>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Audit => "audit",
            Priority::Debug => "debug",
            Priority::Info => "info",
            Priority::Warn => "warn",
            Priority::Error => "error",
            Priority::Critical => "critical",
            Priority::Sample => "sample",
        }
    }

    /// The upper-case name (`INFO`) that notifiers put in messages.
    pub fn as_wire(self) -> &'static str {
        match self {
            Priority::Audit => "AUDIT",
            Priority::Debug => "DEBUG",
            Priority::Info => "INFO",
            Priority::Warn => "WARN",
            Priority::Error => "ERROR",
            Priority::Critical => "CRITICAL",
            Priority::Sample => "SAMPLE",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown priority name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown notification priority `{0}` (expected audit, debug, info, warn, error, critical or sample)"
)]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if lower == "warning" {
            return Ok(Priority::Warn);
        }
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == lower)
            .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

// ===== RemoteError =====

/// An error raised by a remote handler, as it travels back to the caller: oslo's
/// failure JSON (`class`, `module`, `message`, `tb`, `args`, `kwargs`). Match on
/// [`class`](RemoteError::class) to handle a specific remote error.
///
/// [`args`](RemoteError::args) and [`kwargs`](RemoteError::kwargs) are the
/// exception's constructor arguments: a Python caller whose `allowed_remote_exmods`
/// lists [`module`](RemoteError::module) rebuilds the error as
/// `module.class(*args, **kwargs)`, and an error raised by a Python server arrives
/// with the `args` and `kwargs` it was raised with (a nova-style exception keeps its
/// keyword arguments in `kwargs`). Every transport carries them unchanged.
///
/// # Examples
///
/// ```
/// use messaging_core::RemoteError;
/// use serde_json::json;
///
/// let err = RemoteError::new("QuotaExceeded", "nova.exception", "quota exceeded")
///     .with_kwarg("overs", json!(["cores"]))
///     .with_kwarg("allowed", 4);
/// // Like Python's `Exception(message)`: the message is the one positional argument.
/// assert_eq!(err.args, [json!("quota exceeded")]);
/// assert_eq!(err.kwargs["allowed"], 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("remote error: {module}.{class}: {message}")]
#[non_exhaustive]
pub struct RemoteError {
    /// The error's class (e.g. `ValueError`, `NoSuchMethod`).
    pub class: String,
    /// The module the class lives in (e.g. `builtins`).
    pub module: String,
    /// The error message.
    pub message: String,
    /// Traceback lines, possibly empty.
    pub traceback: Vec<String>,
    /// The positional arguments the error was built with (Python's `exc.args`).
    #[serde(default, with = "json_text")]
    pub args: Vec<serde_json::Value>,
    /// The keyword arguments the error was built with (the `kwargs` attribute of an
    /// oslo or nova-style exception; empty for most errors).
    #[serde(default, with = "json_text")]
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

impl RemoteError {
    /// A remote error with an empty traceback, no keyword arguments and the message as
    /// its one positional argument (what Python's `Exception(message)` has).
    pub fn new(
        class: impl Into<String>,
        module: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        RemoteError {
            class: class.into(),
            module: module.into(),
            args: vec![serde_json::Value::String(message.clone())],
            message,
            traceback: Vec::new(),
            kwargs: serde_json::Map::new(),
        }
    }

    /// Returns the error with a traceback.
    pub fn with_traceback(mut self, traceback: Vec<String>) -> Self {
        self.traceback = traceback;
        self
    }

    /// Returns the error with these positional arguments instead of its current ones.
    pub fn with_args<I, V>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<serde_json::Value>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Returns the error with one more keyword argument (replacing one of the same
    /// name).
    pub fn with_kwarg(
        mut self,
        name: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.kwargs.insert(name.into(), value.into());
        self
    }

    /// Returns the error with these keyword arguments added (replacing any of the same
    /// names).
    pub fn with_kwargs<I, K, V>(mut self, kwargs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<serde_json::Value>,
    {
        self.kwargs
            .extend(kwargs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }
}

/// Serde for the JSON values inside a [`RemoteError`]: as they are in self-describing
/// formats (JSON), as one JSON text in the others (bincode), which cannot decode a
/// `serde_json::Value`.
mod json_text {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<T: Serialize, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            value.serialize(serializer)
        } else {
            let text = serde_json::to_string(value).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(&text)
        }
    }

    pub(super) fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        if deserializer.is_human_readable() {
            T::deserialize(deserializer)
        } else {
            let text = String::deserialize(deserializer)?;
            serde_json::from_str(&text).map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse_case_insensitively_and_warning_is_warn() {
        assert_eq!("INFO".parse::<Priority>().unwrap(), Priority::Info);
        assert_eq!("warning".parse::<Priority>().unwrap(), Priority::Warn);
        assert!("loud".parse::<Priority>().is_err());
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), p);
            assert_eq!(p.as_wire().to_ascii_lowercase(), p.as_str());
        }
    }

    #[test]
    fn message_debug_hides_body() {
        let m = Message::new(&b"secret payload"[..]);
        let text = format!("{m:?}");
        assert!(
            text.contains("body_len: 14") && !text.contains("secret"),
            "{text}"
        );
    }

    /// oslo.context 6.5.0's `RequestContext(auth_token=..., service_token=...)
    /// .redacted_copy().to_dict()` has `"auth_token": null` and no service token;
    /// the redacted context has neither secret and keeps everything else.
    #[test]
    fn redaction_removes_every_credential_and_keeps_the_rest() {
        let ctx: Context = [
            ("user", serde_json::json!("u")),
            ("auth_token", serde_json::json!("tok-123")),
            ("service_token", serde_json::json!("svc-456")),
            (
                "auth_token_info",
                serde_json::json!({"token": {"id": "tok-123"}}),
            ),
            ("read_only", serde_json::json!(true)),
        ]
        .into_iter()
        .collect();
        let safe = ctx.redacted();
        let text = serde_json::to_string(&safe).unwrap();
        assert_eq!(
            text, r#"{"auth_token":null,"read_only":true,"user":"u"}"#,
            "{text}"
        );
        // Redacting twice changes nothing; a context without secrets is unchanged
        // (no `auth_token: null` is added).
        assert_eq!(safe.redacted(), safe);
        let plain: Context = [("user", "u")].into_iter().collect();
        assert_eq!(plain.redacted(), plain);
        for key in Context::SENSITIVE_KEYS {
            assert!(Context::is_sensitive(key));
        }
        assert!(!Context::is_sensitive("AUTH_TOKEN") && !Context::is_sensitive("user"));
    }

    #[test]
    fn remote_error_arguments_survive_json_and_bincode() {
        use crate::codec::{Codec, CodecKind};
        let err = RemoteError::new("QuotaExceeded", "nova.exception", "over quota")
            .with_traceback(vec!["tb".into()])
            .with_args([serde_json::json!("over quota"), serde_json::json!(2)])
            .with_kwarg("overs", serde_json::json!(["cores", "ram"]))
            .with_kwargs([("allowed", serde_json::json!({"cores": 4}))]);
        for codec in [CodecKind::Json, CodecKind::Bincode] {
            let bytes = codec.encode(&err).unwrap();
            assert_eq!(codec.decode::<RemoteError>(&bytes).unwrap(), err, "{codec}");
        }
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["kwargs"]["overs"], serde_json::json!(["cores", "ram"]));
        assert_eq!(json["args"][1], 2, "native JSON in JSON: {json}");
    }

    #[test]
    fn remote_errors_without_arguments_still_decode() {
        let old = r#"{"class":"E","module":"m","message":"x","traceback":[]}"#;
        let err: RemoteError = serde_json::from_str(old).unwrap();
        assert!(err.args.is_empty() && err.kwargs.is_empty());
        assert_eq!(
            RemoteError::new("E", "m", "x").args,
            [serde_json::json!("x")]
        );
    }

    #[test]
    fn context_collects_and_serializes_as_a_map() {
        let ctx: Context = [("user", "u1"), ("project", "p1")].into_iter().collect();
        assert_eq!(
            serde_json::to_string(&ctx).unwrap(),
            r#"{"project":"p1","user":"u1"}"#
        );
    }
}
