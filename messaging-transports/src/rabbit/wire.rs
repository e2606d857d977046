//! oslo.messaging's wire format on RabbitMQ (`_drivers/common.py`, `amqpdriver.py`).
//!
//! * Every RPC message and every `messagingv2` notification is a JSON object
//!   `{"oslo.version": "2.0", "oslo.message": "<the message, JSON-encoded again>"}`;
//!   a body without both keys is a version 1.0 message (the `messaging` notification
//!   driver sends those, with the same fields); both are read.
//! * Request: `method`, `args` (the keyword arguments), `namespace` and `version` when
//!   set, the context flattened as `_context_<key>`, `_unique_id` (duplicate
//!   suppression), and for calls `_msg_id`, `_reply_q` and `_timeout` (the
//!   call-monitor timeout, or null).
//! * Reply: `result`, `failure` (null, or a JSON *string* of `{class, module, message,
//!   tb, args, kwargs}`), `ending` (false for a call-monitor heartbeat), `_msg_id`,
//!   `_unique_id`.
//! * Notification: `message_id`, `publisher_id`, `event_type`, `priority` (upper
//!   case), `payload`, `timestamp`, `_unique_id`, and `_context_*`.
//!
//! Arguments, results and payloads are spliced in as raw JSON, so numbers travel
//! exactly as written (`3` stays `3`, `4.0` stays `4.0`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;

use bytes::Bytes;
use messaging_core::codec::CodecKind;
use messaging_core::{
    Context, Message, Meta, NotificationFormat, NotificationMeta, Priority, RemoteError,
    RequestMeta, Untrusted,
};
use serde_json::value::RawValue;

/// The envelope version this implementation speaks.
pub(crate) const VERSION: &str = "2.0";

/// A body that is not an oslo message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed oslo message: {0}")]
pub(crate) struct WireError(pub(crate) String);

/// A malformed-message error. What the decoder says may quote the body (a peer's
/// bytes), so it is cut and escaped before it can reach a log.
fn malformed(what: impl Into<String>) -> WireError {
    WireError(Untrusted::with_limit(&what.into(), 200).to_string())
}

// ===== writing =====

/// Writes a JSON object from raw members.
struct ObjectWriter {
    out: String,
    first: bool,
}

impl ObjectWriter {
    fn new() -> Self {
        ObjectWriter {
            out: String::from("{"),
            first: true,
        }
    }

    fn raw(&mut self, key: &str, raw_json: &str) {
        if !self.first {
            self.out.push_str(", ");
        }
        self.first = false;
        self.out
            .push_str(&serde_json::to_string(key).expect("strings serialize"));
        self.out.push_str(": ");
        self.out.push_str(raw_json);
    }

    fn value(&mut self, key: &str, value: &impl serde::Serialize) {
        let json = serde_json::to_string(value).expect("JSON values serialize");
        self.raw(key, &json);
    }

    fn context(&mut self, context: &Context) {
        for (key, value) in context.iter() {
            self.value(&format!("_context_{key}"), value);
        }
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Wraps a message in the 2.0 envelope.
fn envelope(inner: &str) -> Vec<u8> {
    let mut out = String::with_capacity(inner.len() + 48);
    let _ = write!(
        out,
        "{{\"oslo.version\": \"{VERSION}\", \"oslo.message\": {}}}",
        serde_json::to_string(inner).expect("strings serialize")
    );
    out.into_bytes()
}

fn json_body(message: &Message, what: &str) -> Result<String, WireError> {
    if message.codec != CodecKind::Json {
        return Err(malformed(format!(
            "{what} encoded with {}: the RabbitMQ transport speaks oslo's JSON only",
            message.codec
        )));
    }
    let text = std::str::from_utf8(&message.body)
        .map_err(|_| malformed(format!("{what} is not UTF-8 JSON")))?;
    if text.trim().is_empty() {
        return Ok("{}".to_owned());
    }
    Ok(text.to_owned())
}

/// What a call adds to a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallInfo<'a> {
    pub(crate) msg_id: &'a str,
    pub(crate) reply_q: &'a str,
    /// The call-monitor timeout in seconds, if any.
    pub(crate) timeout: Option<f64>,
}

/// Encodes an RPC request (call or cast).
pub(crate) fn encode_request(
    message: &Message,
    call: Option<&CallInfo<'_>>,
    unique_id: &str,
) -> Result<Vec<u8>, WireError> {
    let Meta::Request(meta) = &message.meta else {
        return Err(malformed("an RPC request needs request metadata"));
    };
    let args = json_body(message, "the arguments")?;
    let mut w = ObjectWriter::new();
    w.value("method", &meta.method);
    w.raw("args", &args);
    if let Some(namespace) = &meta.namespace {
        w.value("namespace", namespace);
    }
    w.value("version", &meta.version.as_deref().unwrap_or("1.0"));
    if let Some(call) = call {
        w.value("_msg_id", &call.msg_id);
        w.value("_reply_q", &call.reply_q);
        match call.timeout {
            // oslo sends whole seconds as an integer
            Some(t) if t.fract() == 0.0 && t <= u32::MAX as f64 => w.value("_timeout", &(t as u64)),
            Some(t) => w.value("_timeout", &t),
            None => w.raw("_timeout", "null"),
        }
    }
    w.value("_unique_id", &unique_id);
    w.context(&message.context);
    Ok(envelope(&w.finish()))
}

/// What a server replies.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReplyBody<'a> {
    /// `ending: false`, no result.
    Heartbeat,
    /// The encoded (JSON) result.
    Result(&'a [u8]),
    /// The handler's error.
    Failure(&'a RemoteError),
}

/// Encodes a reply (or heartbeat) to `msg_id`.
pub(crate) fn encode_reply(
    body: &ReplyBody<'_>,
    msg_id: &str,
    unique_id: &str,
) -> Result<Vec<u8>, WireError> {
    let mut w = ObjectWriter::new();
    match body {
        ReplyBody::Heartbeat => {
            w.raw("result", "null");
            w.raw("failure", "null");
            w.raw("ending", "false");
        }
        ReplyBody::Result(result) => {
            let text = std::str::from_utf8(result)
                .map_err(|_| malformed("the result is not UTF-8 JSON"))?;
            w.raw("result", if text.trim().is_empty() { "null" } else { text });
            w.raw("failure", "null");
            w.raw("ending", "true");
        }
        ReplyBody::Failure(remote) => {
            w.raw("result", "null");
            w.value("failure", &encode_failure(remote));
            w.raw("ending", "true");
        }
    }
    w.value("_msg_id", &msg_id);
    w.value("_unique_id", &unique_id);
    Ok(envelope(&w.finish()))
}

/// oslo's `serialize_remote_exception`: a JSON string (`_Remote` suffixes stripped),
/// with the error's positional and keyword arguments, which a Python caller passes to
/// the class to rebuild it.
fn encode_failure(remote: &RemoteError) -> String {
    let strip = |s: &str| s.strip_suffix("_Remote").unwrap_or(s).to_owned();
    serde_json::json!({
        "class": strip(&remote.class),
        "module": strip(&remote.module),
        "message": remote.message,
        "tb": remote.traceback,
        "args": remote.args,
        "kwargs": remote.kwargs,
    })
    .to_string()
}

/// Encodes a notification: in the 2.0 envelope (`messagingv2`), or for format 1.0
/// (`messaging`) the same object without it, as oslo's amqp driver sends them
/// (`_send(..., envelope=version == 2.0)`: `_unique_id` and `_context_*` in both).
pub(crate) fn encode_notification(
    message: &Message,
    unique_id: &str,
    format: NotificationFormat,
) -> Result<Vec<u8>, WireError> {
    let Meta::Notification(meta) = &message.meta else {
        return Err(malformed("a notification needs notification metadata"));
    };
    let payload = json_body(message, "the payload")?;
    let mut w = ObjectWriter::new();
    w.value("message_id", &meta.message_id);
    w.value("publisher_id", &meta.publisher_id);
    w.value("event_type", &meta.event_type);
    w.value("priority", &meta.priority.as_wire());
    w.raw("payload", &payload);
    w.value("timestamp", &meta.timestamp);
    w.value("_unique_id", &unique_id);
    w.context(&message.context);
    Ok(match format {
        NotificationFormat::V1 => w.finish().into_bytes(),
        NotificationFormat::V2 => envelope(&w.finish()),
    })
}

// ===== reading =====

type Fields = HashMap<String, Box<RawValue>>;

/// Unwraps the envelope; a body without it is a version 1.0 message.
fn open(body: &[u8]) -> Result<Fields, WireError> {
    let outer: Fields =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not a JSON object: {e}")))?;
    match (outer.get("oslo.version"), outer.get("oslo.message")) {
        (Some(version), Some(inner)) => {
            let version: String = serde_json::from_str(version.get())
                .map_err(|_| malformed("oslo.version is not a string"))?;
            if version.split('.').next() != Some("2") {
                return Err(malformed(format!("unsupported envelope version {version}")));
            }
            let inner: String = serde_json::from_str(inner.get())
                .map_err(|_| malformed("oslo.message is not a string"))?;
            serde_json::from_str(&inner)
                .map_err(|e| malformed(format!("oslo.message is not a JSON object: {e}")))
        }
        _ => Ok(outer),
    }
}

fn take_string(fields: &mut Fields, key: &str) -> Result<Option<String>, WireError> {
    match fields.remove(key) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Option<String>>(raw.get())
            .map_err(|_| malformed(format!("`{key}` is not a string"))),
    }
}

fn take_context(fields: &mut Fields) -> Result<Context, WireError> {
    let keys: Vec<String> = fields
        .keys()
        .filter(|k| k.starts_with("_context_"))
        .cloned()
        .collect();
    let mut context = Context::new();
    for key in keys {
        let raw = fields.remove(&key).expect("listed above");
        let value: serde_json::Value =
            serde_json::from_str(raw.get()).map_err(|e| malformed(format!("`{key}`: {e}")))?;
        context.insert(&key["_context_".len()..], value);
    }
    Ok(context)
}

fn raw_bytes(raw: Option<Box<RawValue>>, default: &'static str) -> Bytes {
    match raw {
        Some(raw) => Bytes::from(raw.get().to_owned()),
        None => Bytes::from_static(default.as_bytes()),
    }
}

/// A decoded request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) message: Message,
    pub(crate) msg_id: Option<String>,
    pub(crate) reply_q: Option<String>,
    pub(crate) timeout: Option<f64>,
    pub(crate) unique_id: Option<String>,
}

/// Decodes an RPC request as a server receives it.
pub(crate) fn decode_request(body: &[u8]) -> Result<Request, WireError> {
    let mut fields = open(body)?;
    let method = take_string(&mut fields, "method")?.ok_or_else(|| malformed("no `method`"))?;
    let args = raw_bytes(fields.remove("args"), "{}");
    let mut meta = RequestMeta::new(method);
    meta.namespace = take_string(&mut fields, "namespace")?;
    meta.version = take_string(&mut fields, "version")?;
    let msg_id = take_string(&mut fields, "_msg_id")?;
    let reply_q = take_string(&mut fields, "_reply_q")?;
    let timeout = match fields.remove("_timeout") {
        None => None,
        Some(raw) => serde_json::from_str::<Option<f64>>(raw.get())
            .map_err(|_| malformed("`_timeout` is not a number"))?,
    };
    let unique_id = take_string(&mut fields, "_unique_id")?;
    let context = take_context(&mut fields)?;
    Ok(Request {
        message: Message::new(args)
            .with_context(context)
            .with_meta(Meta::Request(meta))
            .with_codec(CodecKind::Json),
        msg_id,
        reply_q,
        timeout,
        unique_id,
    })
}

/// A decoded reply.
#[derive(Debug, PartialEq)]
pub(crate) struct Reply {
    pub(crate) msg_id: String,
    /// `None`: a heartbeat (no result, no failure, not ending).
    pub(crate) outcome: Option<Result<Bytes, RemoteError>>,
    pub(crate) ending: bool,
}

/// Decodes a reply as a caller receives it. Replies from before oslo's single-reply
/// change (`{result, failure}` then `{ending: true}`) decode too: a result without
/// `ending` is kept by the caller until the ending arrives.
pub(crate) fn decode_reply(body: &[u8]) -> Result<Reply, WireError> {
    let mut fields = open(body)?;
    let msg_id = take_string(&mut fields, "_msg_id")?.ok_or_else(|| malformed("no `_msg_id`"))?;
    let ending = match fields.remove("ending") {
        None => false,
        Some(raw) => serde_json::from_str::<Option<bool>>(raw.get())
            .map_err(|_| malformed("`ending` is not a boolean"))?
            .unwrap_or(false),
    };
    let failure = take_string(&mut fields, "failure")?;
    let result = fields.remove("result");
    let outcome = match (failure, result) {
        (Some(failure), _) => Some(Err(decode_failure(&failure))),
        (None, Some(result)) if result.get() != "null" || ending => {
            Some(Ok(Bytes::from(result.get().to_owned())))
        }
        (None, _) if ending => Some(Ok(Bytes::from_static(b"null"))),
        (None, _) => None,
    };
    Ok(Reply {
        msg_id,
        outcome,
        ending,
    })
}

/// oslo's failure JSON string into a [`RemoteError`], with the `args` and `kwargs`
/// the exception was raised with; anything unreadable still arrives as an error, never
/// as a panic.
///
/// As oslo's `deserialize_remote_exception` reads them: missing `args` or `kwargs`
/// are empty; `args` that is not a list is one argument, and `kwargs` that is not an
/// object is dropped (Python could not pass either to a class).
pub(crate) fn decode_failure(failure: &str) -> RemoteError {
    #[derive(serde::Deserialize)]
    struct Failure {
        #[serde(default)]
        class: Option<String>,
        #[serde(default)]
        module: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        tb: Option<Vec<String>>,
        #[serde(default)]
        args: Option<serde_json::Value>,
        #[serde(default)]
        kwargs: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Failure>(failure) {
        Ok(f) => {
            let args = match f.args {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(serde_json::Value::Array(args)) => args,
                Some(one) => vec![one],
            };
            let kwargs = match f.kwargs {
                Some(serde_json::Value::Object(kwargs)) => kwargs,
                _ => serde_json::Map::new(),
            };
            let mut remote = RemoteError::new(
                f.class.unwrap_or_else(|| "RemoteError".to_owned()),
                f.module.unwrap_or_default(),
                f.message.unwrap_or_default(),
            )
            .with_traceback(f.tb.unwrap_or_default());
            remote.args = args;
            remote.kwargs = kwargs;
            remote
        }
        Err(_) => RemoteError::new("RemoteError", "", failure.to_owned()),
    }
}

/// A decoded notification.
#[derive(Debug)]
pub(crate) struct DecodedNotification {
    pub(crate) message: Message,
    pub(crate) unique_id: Option<String>,
}

/// Decodes a notification (version 1.0 or 2.0).
pub(crate) fn decode_notification(body: &[u8]) -> Result<DecodedNotification, WireError> {
    let mut fields = open(body)?;
    let priority =
        take_string(&mut fields, "priority")?.ok_or_else(|| malformed("no `priority`"))?;
    let priority = Priority::from_str(&priority).map_err(|e| malformed(e.to_string()))?;
    let meta = NotificationMeta::new(
        take_string(&mut fields, "message_id")?.unwrap_or_default(),
        take_string(&mut fields, "publisher_id")?.unwrap_or_default(),
        take_string(&mut fields, "event_type")?.unwrap_or_default(),
        priority,
        take_string(&mut fields, "timestamp")?.unwrap_or_default(),
    );
    let payload = raw_bytes(fields.remove("payload"), "null");
    let unique_id = take_string(&mut fields, "_unique_id")?;
    let context = take_context(&mut fields)?;
    Ok(DecodedNotification {
        message: Message::new(payload)
            .with_context(context)
            .with_meta(Meta::Notification(meta))
            .with_codec(CodecKind::Json),
        unique_id,
    })
}

/// oslo's duplicate filter: the `_unique_id`s of the last 16 messages acknowledged. A
/// message is remembered only once acknowledged, so a requeued message is delivered
/// again rather than taken for a duplicate.
#[derive(Debug, Default)]
pub(crate) struct DuplicateFilter {
    recent: std::collections::VecDeque<String>,
}

impl DuplicateFilter {
    const SIZE: usize = 16;

    /// Whether `unique_id` belongs to one of the last 16 acknowledged messages.
    pub(crate) fn seen(&self, unique_id: Option<&str>) -> bool {
        unique_id.is_some_and(|id| self.recent.iter().any(|seen| seen == id))
    }

    /// Remembers an acknowledged message.
    pub(crate) fn remember(&mut self, unique_id: &str) {
        if self.recent.iter().any(|seen| seen == unique_id) {
            return;
        }
        if self.recent.len() == Self::SIZE {
            self.recent.pop_front();
        }
        self.recent.push_back(unique_id.to_owned());
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "wire_failure_tests.rs"]
mod failure_tests;
