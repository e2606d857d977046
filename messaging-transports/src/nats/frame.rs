//! The body of every NATS message: a 4-byte big-endian length, a JSON header, then the
//! payload exactly as the codec encoded it.
//!
//! The header names the kind (request, reply, notification), carries the context, the
//! codec of the payload, and the kind's metadata (method, namespace, version and
//! call-monitor timeout; reply outcome or remote error; notification fields).

use bytes::{BufMut, Bytes, BytesMut};
use messaging_core::codec::CodecKind;
use messaging_core::{
    Context, Message, Meta, NotificationMeta, Priority, RemoteError, RequestMeta,
};
use serde::{Deserialize, Serialize};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    monitor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// A frame that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed NATS message: {0}")]
pub(crate) struct FrameError(String);

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
        return Err(FrameError("shorter than its length prefix".into()));
    }
    let len = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let end = 4usize
        .checked_add(len)
        .filter(|end| *end <= body.len())
        .ok_or_else(|| FrameError(format!("header length {len} exceeds the body")))?;
    let header: Header =
        serde_json::from_slice(&body[4..end]).map_err(|e| FrameError(format!("header: {e}")))?;
    Ok((header, body.slice(end..)))
}

fn codec(name: &str) -> Result<CodecKind, FrameError> {
    name.parse()
        .map_err(|e: messaging_core::codec::UnknownCodec| FrameError(e.to_string()))
}

/// Encodes a request (call or cast) or a notification.
pub(crate) fn encode_message(message: &Message, monitor: Option<f64>) -> Bytes {
    let mut header = Header {
        context: message.context.clone(),
        codec: message.codec.to_string(),
        monitor,
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

/// A decoded request or notification, with the call-monitor timeout of a call.
pub(crate) fn decode_message(body: &Bytes) -> Result<(Message, Option<f64>), FrameError> {
    let (header, payload) = unframe(body)?;
    let meta = match header.kind.as_str() {
        "request" => {
            let mut meta = RequestMeta::new(
                header
                    .method
                    .ok_or_else(|| FrameError("a request without a method".into()))?,
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
                .ok_or_else(|| FrameError("a notification without a priority".into()))?,
            header.timestamp.unwrap_or_default(),
        )),
        "plain" => Meta::None,
        other => return Err(FrameError(format!("unexpected kind `{other}`"))),
    };
    let message = Message::new(payload)
        .with_context(header.context)
        .with_meta(meta)
        .with_codec(codec(&header.codec)?);
    Ok((message, header.monitor))
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
        return Err(FrameError(format!(
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
        other => Err(FrameError(format!("unknown reply outcome {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_replies_round_trip() {
        let mut ctx = Context::new();
        ctx.insert("user", "ü1");
        let mut meta = RequestMeta::new("add");
        meta.version = Some("1.2".into());
        let request = Message::new(vec![1u8, 2, 3])
            .with_context(ctx)
            .with_meta(Meta::Request(meta));
        let (back, monitor) = decode_message(&encode_message(&request, Some(2.5))).unwrap();
        assert_eq!((back, monitor), (request, Some(2.5)));

        let note = Message::new("{}")
            .with_meta(Meta::Notification(NotificationMeta::new(
                "id",
                "pub",
                "ev",
                Priority::Sample,
                "ts",
            )))
            .with_codec(CodecKind::Json);
        assert_eq!(
            decode_message(&encode_message(&note, None)).unwrap().0,
            note
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
        let header = br#"{"kind":"request","codec":"bincode"}"#;
        let mut body = (header.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(header);
        assert!(
            decode_message(&Bytes::from(body)).is_err(),
            "a request needs a method"
        );
    }
}
