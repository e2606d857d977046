//! The body of every NATS message: a 4-byte big-endian length, a JSON header, then the
//! payload exactly as the codec encoded it.
//!
//! The header names the kind (request, reply, notification), carries the context, the
//! codec of the payload, and the kind's metadata (method, namespace, version,
//! call-monitor timeout and the caller's remaining wait for a request; reply outcome or
//! remote error; notification fields).
//!
//! Decoding is total: whatever the bytes, [`decode_message`] and [`decode_reply`]
//! return a value or a [`FrameError`], never panic, and allocate at most in proportion
//! to the body (the header is parsed by `serde_json`, whose nesting depth is bounded;
//! the payload is a slice of the body). Header numbers an outsider may send are
//! converted with checks: a call-monitor timeout that is not a positive number of
//! seconds up to [`LONGEST_WAIT`] is ignored (no heartbeats), and a caller's remaining
//! wait is a whole number of milliseconds that becomes a deadline only if the clock can
//! represent it.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use messaging_core::codec::CodecKind;
use messaging_core::{
    Context, Message, Meta, NotificationMeta, Priority, RemoteError, RequestMeta, Untrusted,
};
use serde::{Deserialize, Serialize};

/// The longest call-monitor timeout honoured; a longer one is ignored (a heartbeat
/// every half year is no heartbeat).
pub(crate) const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Header {
    kind: String,
    #[serde(default, skip_serializing_if = "Context::is_empty")]
    context: Context,
    codec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    /// The call-monitor timeout, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    monitor: Option<f64>,
    /// How long the caller still waited for the reply when it sent the request,
    /// milliseconds: a relative time, so no clock is compared across hosts. Absent in
    /// frames from the previous version, which are still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_error"
    )]
    error: Option<RemoteError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publisher_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
}

/// A remote error as a peer wrote it, read as the RabbitMQ wire reads oslo's failures:
/// fields of the wrong type do not make the reply unreadable (its caller would wait
/// out its timeout), they fall back: a `class` that is not a string is
/// `RemoteError`, a `module` is empty, a `message` is the value's JSON text, a
/// `traceback` is empty; `args` that is not a list is one argument (none if `null` or
/// missing), `kwargs` that is not an object is none. An error that is not an object
/// is a `RemoteError` whose message is its JSON text.
fn lenient_error<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RemoteError>, D::Error> {
    use serde_json::Value;
    let Some(value) = Option::<Value>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let Value::Object(mut error) = value else {
        return Ok(Some(RemoteError::new("RemoteError", "", value.to_string())));
    };
    let mut string = |key: &str| match error.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(None),
        Some(other) => Err(Some(other)),
    };
    let class = string("class").unwrap_or_else(|_| "RemoteError".to_owned());
    let module = string("module").unwrap_or_default();
    let message =
        string("message").unwrap_or_else(|other| other.map(|v| v.to_string()).unwrap_or_default());
    let mut remote = RemoteError::new(class, module, message);
    remote.traceback = match error.remove("traceback") {
        Some(Value::Array(lines)) => lines
            .into_iter()
            .map(|line| match line {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    remote.args = match error.remove("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(args)) => args,
        Some(one) => vec![one],
    };
    remote.kwargs = match error.remove("kwargs") {
        Some(Value::Object(kwargs)) => kwargs,
        _ => serde_json::Map::new(),
    };
    Ok(Some(remote))
}

/// A decoded request or notification, with what a caller said about waiting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    /// The message.
    pub(crate) message: Message,
    /// The call-monitor timeout of a call (heartbeats every half of it).
    pub(crate) monitor: Option<Duration>,
    /// How long the caller still waited for the reply when it sent the request.
    pub(crate) expires_in: Option<Duration>,
}

/// A frame that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed NATS message: {0}")]
pub(crate) struct FrameError(String);

impl FrameError {
    /// What is wrong, which may quote the frame (a peer's bytes): cut and escaped
    /// before it can reach a log.
    fn new(what: impl AsRef<str>) -> Self {
        FrameError(Untrusted::with_limit(what.as_ref(), 200).to_string())
    }
}

fn frame(header: &Header, payload: &[u8]) -> Bytes {
    let header = serde_json::to_vec(header).expect("headers serialize");
    let mut out = BytesMut::with_capacity(4 + header.len() + payload.len());
    out.put_u32(header.len() as u32);
    out.put_slice(&header);
    out.put_slice(payload);
    out.freeze()
}

fn unframe(body: &Bytes) -> Result<(Header, Bytes), FrameError> {
    if body.len() < 4 {
        return Err(FrameError::new("shorter than its length prefix"));
    }
    let len = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let end = 4usize
        .checked_add(len)
        .filter(|end| *end <= body.len())
        .ok_or_else(|| FrameError::new(format!("header length {len} exceeds the body")))?;
    let header: Header = serde_json::from_slice(&body[4..end])
        .map_err(|e| FrameError::new(format!("header: {e}")))?;
    Ok((header, body.slice(end..)))
}

fn codec(name: &str) -> Result<CodecKind, FrameError> {
    name.parse()
        .map_err(|e: messaging_core::codec::UnknownCodec| FrameError::new(e.to_string()))
}

/// Encodes a request (call or cast) or a notification; a call gives its call-monitor
/// timeout and how long its caller waits for the reply.
pub(crate) fn encode_message(
    message: &Message,
    monitor: Option<Duration>,
    expires_in: Option<Duration>,
) -> Bytes {
    let mut header = Header {
        context: message.context.clone(),
        codec: message.codec.to_string(),
        monitor: monitor.map(|t| t.as_secs_f64()),
        expires_ms: expires_in.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        ..Header::default()
    };
    match &message.meta {
        Meta::Request(meta) => {
            header.kind = "request".into();
            header.method = Some(meta.method.clone());
            header.namespace = meta.namespace.clone();
            header.version = meta.version.clone();
        }
        Meta::Notification(meta) => {
            header.kind = "notification".into();
            header.message_id = Some(meta.message_id.clone());
            header.publisher_id = Some(meta.publisher_id.clone());
            header.event_type = Some(meta.event_type.clone());
            header.priority = Some(meta.priority);
            header.timestamp = Some(meta.timestamp.clone());
        }
        _ => header.kind = "plain".into(),
    }
    frame(&header, &message.body)
}

/// Decodes a request or a notification.
pub(crate) fn decode_message(body: &Bytes) -> Result<Decoded, FrameError> {
    let (header, payload) = unframe(body)?;
    let meta = match header.kind.as_str() {
        "request" => {
            let mut meta = RequestMeta::new(
                header
                    .method
                    .ok_or_else(|| FrameError::new("a request without a method"))?,
            );
            meta.namespace = header.namespace;
            meta.version = header.version;
            Meta::Request(meta)
        }
        "notification" => Meta::Notification(NotificationMeta::new(
            header.message_id.unwrap_or_default(),
            header.publisher_id.unwrap_or_default(),
            header.event_type.unwrap_or_default(),
            header
                .priority
                .ok_or_else(|| FrameError::new("a notification without a priority"))?,
            header.timestamp.unwrap_or_default(),
        )),
        "plain" => Meta::None,
        other => return Err(FrameError::new(format!("unexpected kind `{other}`"))),
    };
    let message = Message::new(payload)
        .with_context(header.context)
        .with_meta(meta)
        .with_codec(codec(&header.codec)?);
    Ok(Decoded {
        message,
        monitor: header
            .monitor
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .filter(|t| !t.is_zero() && *t <= LONGEST_WAIT),
        expires_in: header.expires_ms.map(Duration::from_millis),
    })
}

/// A reply: `None` is a heartbeat.
pub(crate) fn encode_reply(
    outcome: Option<&Result<Bytes, RemoteError>>,
    codec: CodecKind,
) -> Bytes {
    let mut header = Header {
        kind: "reply".into(),
        codec: codec.to_string(),
        ..Header::default()
    };
    let payload: &[u8] = match outcome {
        None => {
            header.outcome = Some("heartbeat".into());
            &[]
        }
        Some(Ok(result)) => {
            header.outcome = Some("ok".into());
            result
        }
        Some(Err(remote)) => {
            header.outcome = Some("error".into());
            header.error = Some(remote.clone());
            &[]
        }
    };
    frame(&header, payload)
}

/// A decoded reply: `None` is a heartbeat.
pub(crate) fn decode_reply(body: &Bytes) -> Result<Option<Result<Bytes, RemoteError>>, FrameError> {
    let (header, payload) = unframe(body)?;
    if header.kind != "reply" {
        return Err(FrameError::new(format!(
            "expected a reply, got `{}`",
            header.kind
        )));
    }
    match header.outcome.as_deref() {
        Some("heartbeat") => Ok(None),
        Some("ok") => Ok(Some(Ok(payload))),
        Some("error") => Ok(Some(Err(header.error.unwrap_or_else(|| {
            RemoteError::new("RemoteError", "", "an error without details")
        })))),
        other => Err(FrameError::new(format!("unknown reply outcome {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(header: &str, payload: &[u8]) -> Bytes {
        let mut body = (header.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(header.as_bytes());
        body.extend_from_slice(payload);
        Bytes::from(body)
    }

    #[test]
    fn requests_notifications_and_replies_round_trip() {
        let mut ctx = Context::new();
        ctx.insert("user", "ü1");
        let mut meta = RequestMeta::new("add");
        meta.version = Some("1.2".into());
        let request = Message::new(vec![1u8, 2, 3])
            .with_context(ctx)
            .with_meta(Meta::Request(meta));
        let back = decode_message(&encode_message(
            &request,
            Some(Duration::from_millis(2500)),
            Some(Duration::from_millis(1234)),
        ))
        .unwrap();
        assert_eq!(
            back,
            Decoded {
                message: request,
                monitor: Some(Duration::from_millis(2500)),
                expires_in: Some(Duration::from_millis(1234)),
            }
        );

        let note = Message::new("{}")
            .with_meta(Meta::Notification(NotificationMeta::new(
                "id",
                "pub",
                "ev",
                Priority::Sample,
                "ts",
            )))
            .with_codec(CodecKind::Json);
        let back = decode_message(&encode_message(&note, None, None)).unwrap();
        assert_eq!(
            (back.message, back.monitor, back.expires_in),
            (note, None, None)
        );

        assert_eq!(
            decode_reply(&encode_reply(None, CodecKind::Bincode)).unwrap(),
            None
        );
        let ok = Ok(Bytes::from_static(b"\x05"));
        assert_eq!(
            decode_reply(&encode_reply(Some(&ok), CodecKind::Bincode)).unwrap(),
            Some(ok)
        );
        let err = Err(RemoteError::new("ValueError", "builtins", "bad"));
        assert_eq!(
            decode_reply(&encode_reply(Some(&err), CodecKind::Json)).unwrap(),
            Some(err)
        );
    }

    #[test]
    fn frames_of_the_previous_version_are_still_read() {
        // A request as the previous version sent it: no `expires_ms`.
        let body = with_header(
            r#"{"kind":"request","codec":"bincode","method":"add","monitor":2.5}"#,
            b"\x01",
        );
        let decoded = decode_message(&body).unwrap();
        assert_eq!(decoded.expires_in, None);
        assert_eq!(decoded.monitor, Some(Duration::from_millis(2500)));
        // And the previous version ignores the new field (serde ignores unknown keys).
        let encoded = encode_message(
            &Message::new(vec![1u8]).with_meta(Meta::Request(RequestMeta::new("add"))),
            None,
            Some(Duration::from_secs(3)),
        );
        let len = u32::from_be_bytes(encoded[..4].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&encoded[4..4 + len]).unwrap();
        assert_eq!(header["expires_ms"], 3000);
    }

    #[test]
    fn errors_quote_a_peers_bytes_cut_and_escaped() {
        let frame = |header: String| {
            let mut body = (header.len() as u32).to_be_bytes().to_vec();
            body.extend_from_slice(header.as_bytes());
            Bytes::from(body)
        };
        for header in [
            format!(r#"{{"kind":"{}","codec":"json"}}"#, "K".repeat(500_000)),
            r#"{"kind":"x[2J
2099 ERROR forged","codec":"json"}"#
                .to_owned(),
            format!(
                r#"{{"kind":"request","method":"m","codec":"{}"}}"#,
                "C".repeat(500_000)
            ),
        ] {
            for error in [
                decode_message(&frame(header.clone())).unwrap_err(),
                decode_reply(&frame(header)).unwrap_err(),
            ] {
                let text = error.to_string();
                assert!(text.len() < 400, "{} bytes", text.len());
                assert!(!text.chars().any(char::is_control), "{text}");
            }
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"\x00\x00",
            b"\xff\xff\xff\xff{}",
            b"\x00\x00\x00\x02{}",
            b"\x00\x00\x00\x01x",
        ] {
            assert!(decode_message(&Bytes::copy_from_slice(body)).is_err());
            assert!(decode_reply(&Bytes::copy_from_slice(body)).is_err());
        }
        assert!(
            decode_message(&with_header(r#"{"kind":"request","codec":"bincode"}"#, b"")).is_err(),
            "a request needs a method"
        );
    }

    #[test]
    fn hostile_header_numbers_are_ignored_or_refused_never_trusted() {
        let request = |fields: &str| {
            decode_message(&with_header(
                &format!(r#"{{"kind":"request","codec":"json","method":"m"{fields}}}"#),
                b"",
            ))
        };
        // Monitor seconds that are no usable timeout: ignored, the request still served.
        for monitor in [
            "-1",
            "0",
            "-0.0",
            "1e-300",
            "1e18",
            "1.8446744073709552e19",
            "1e300",
        ] {
            let decoded = request(&format!(r#","monitor":{monitor}"#)).unwrap();
            assert_eq!(decoded.monitor, None, "monitor {monitor}");
        }
        assert_eq!(
            request(r#","monitor":60"#).unwrap().monitor,
            Some(Duration::from_secs(60))
        );
        // JSON has no NaN or infinity; out-of-range numbers are malformed headers.
        for monitor in ["NaN", "Infinity", "1e400", "\"5\""] {
            assert!(
                request(&format!(r#","monitor":{monitor}"#)).is_err(),
                "{monitor}"
            );
        }
        // Remaining wait: any whole number of milliseconds, the largest included.
        assert_eq!(
            request(r#","expires_ms":18446744073709551615"#)
                .unwrap()
                .expires_in,
            Some(Duration::from_millis(u64::MAX))
        );
        for expires in ["-1", "1.5", "18446744073709551616", "null"] {
            let decoded = request(&format!(r#","expires_ms":{expires}"#));
            assert!(
                decoded.is_err() || decoded.unwrap().expires_in.is_none(),
                "{expires}"
            );
        }
        // Unknown priorities, kinds and codecs, wrong types, deep nesting.
        let note = |fields: &str| {
            decode_message(&with_header(
                &format!(r#"{{"kind":"notification","codec":"json"{fields}}}"#),
                b"",
            ))
        };
        assert!(note(r#","priority":"urgent""#).is_err());
        assert!(note(r#","priority":7"#).is_err());
        assert!(note(r#","priority":"info""#).is_ok());
        assert!(decode_message(&with_header(r#"{"kind":"x","codec":"json"}"#, b"")).is_err());
        assert!(decode_message(&with_header(r#"{"kind":"plain","codec":"xml"}"#, b"")).is_err());
        assert!(
            decode_reply(&with_header(
                r#"{"kind":"reply","codec":"json","outcome":"maybe"}"#,
                b""
            ))
            .is_err()
        );
        let deep = format!(
            r#"{{"kind":"plain","codec":"json","context":{{"k":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(decode_message(&with_header(&deep, b"")).is_err());
    }

    /// A small deterministic generator (no extra dependency): the lead's fuzz
    /// harness runs millions of inputs; this keeps a few thousand in every test run.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_and_mutated_frames_never_panic() {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let request = encode_message(
            &Message::new(vec![7u8; 16])
                .with_meta(Meta::Request(RequestMeta::new("add")))
                .with_context({
                    let mut c = Context::new();
                    c.insert("user", "u");
                    c
                }),
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(5)),
        );
        let reply = encode_reply(Some(&Err(RemoteError::new("E", "m", "x"))), CodecKind::Json);
        for round in 0..20_000 {
            let mut body = if round % 2 == 0 {
                request.to_vec()
            } else {
                reply.to_vec()
            };
            match noise.next() % 4 {
                // Flip a few bytes (the length prefix included).
                0 | 1 => {
                    for _ in 0..=noise.next() % 4 {
                        let at = (noise.next() as usize) % body.len();
                        body[at] = noise.next() as u8;
                    }
                }
                // Cut it short.
                2 => body.truncate((noise.next() as usize) % body.len()),
                // Pure noise.
                _ => {
                    body = (0..noise.next() % 64).map(|_| noise.next() as u8).collect();
                }
            }
            let body = Bytes::from(body);
            if let Ok(decoded) = decode_message(&body) {
                assert!(decoded.message.body.len() <= body.len());
                assert!(decoded.monitor.is_none_or(|t| t <= LONGEST_WAIT));
            }
            let _ = decode_reply(&body);
        }
    }
}

#[cfg(test)]
#[path = "frame_error_tests.rs"]
mod error_tests;

#[cfg(test)]
#[path = "frame_lenient_tests.rs"]
mod lenient_tests;
