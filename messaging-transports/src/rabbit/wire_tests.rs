//! The wire format against what the real Python library sent.

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/oslo-wire/",
            $name
        ))
    };
}

fn inner(body: &[u8]) -> serde_json::Value {
    let outer: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(outer["oslo.version"], "2.0");
    serde_json::from_str(outer["oslo.message"].as_str().unwrap()).unwrap()
}

fn request_meta(message: &Message) -> &RequestMeta {
    match &message.meta {
        Meta::Request(meta) => meta,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn a_python_call_decodes() {
    let request = decode_request(fixture!("call_request.json")).unwrap();
    let meta = request_meta(&request.message);
    assert_eq!(meta.method, "echo");
    assert_eq!(meta.version.as_deref(), Some("1.0"));
    assert_eq!(meta.namespace, None);
    assert_eq!(request.message.body, r#"{"value": "hello-wire-2"}"#);
    assert_eq!(request.message.codec, CodecKind::Json);
    assert_eq!(
        request.msg_id.as_deref(),
        Some("3400cc6d45604df3b8f5894becb7ada9")
    );
    assert_eq!(
        request.reply_q.as_deref(),
        Some("reply_b64e9ef0e6d548db8c5d4353fc22b772")
    );
    assert_eq!(request.timeout, None);
    assert_eq!(
        request.unique_id.as_deref(),
        Some("c3b006fd9c1845a79cbc53a38ba9d6ba")
    );
    let ctx = &request.message.context;
    assert_eq!(ctx.get("user_id").unwrap(), "demo-user");
    assert_eq!(ctx.get("project_id").unwrap(), "demo-project");
    assert_eq!(
        ctx.get("request_id").unwrap(),
        "req-11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(ctx.len(), 3);
}

#[test]
fn a_python_request_context_decodes_with_its_nulls_and_booleans() {
    let request = decode_request(fixture!("call_request_requestcontext.json")).unwrap();
    let ctx = &request.message.context;
    assert_eq!(ctx.get("user").unwrap(), "demo-user");
    assert_eq!(
        ctx.get("is_admin").unwrap(),
        &serde_json::Value::Bool(false)
    );
    assert_eq!(ctx.get("domain").unwrap(), &serde_json::Value::Null);
}

#[test]
fn python_casts_and_fanouts_decode_without_reply_fields() {
    for body in [
        &fixture!("cast.json")[..],
        &fixture!("cast_fanout.json")[..],
    ] {
        let request = decode_request(body).unwrap();
        assert_eq!(request_meta(&request.message).method, "sink");
        assert_eq!((request.msg_id, request.reply_q), (None, None));
        assert!(request.unique_id.is_some());
    }
}

#[test]
fn a_python_reply_and_failure_decode() {
    let reply = decode_reply(fixture!("call_reply.json")).unwrap();
    assert_eq!(reply.msg_id, "3400cc6d45604df3b8f5894becb7ada9");
    assert!(reply.ending);
    assert_eq!(
        reply.outcome,
        Some(Ok(Bytes::from_static(b"\"hello-wire-2\"")))
    );
    let failed = decode_reply(fixture!("call_error_reply.json")).unwrap();
    let Some(Err(remote)) = failed.outcome else {
        panic!("expected a failure: {failed:?}")
    };
    assert_eq!(remote.class, "NoSuchMethod");
    assert_eq!(remote.module, "oslo_messaging.rpc.dispatcher");
    assert_eq!(
        remote.message,
        "Endpoint does not support RPC method no_such_method"
    );
    assert!(remote.traceback[0].starts_with("Traceback"));
}

#[test]
fn python_notifications_decode_with_and_without_envelope() {
    let v1 = decode_notification(fixture!("notification_v1.json")).unwrap();
    let Meta::Notification(meta) = &v1.message.meta else {
        panic!()
    };
    assert_eq!(meta.priority, Priority::Info);
    assert_eq!(meta.event_type, "bench.event");
    assert_eq!(meta.publisher_id, "bench.host");
    assert_eq!(meta.message_id, "c424306e-de45-43c3-a2a3-9265ef83e823");
    assert_eq!(meta.timestamp, "2026-11-25 17:02:54.130971");
    assert_eq!(
        v1.message.body,
        r#"{"value": "hello-notification", "n": 1}"#
    );
    let v2 = decode_notification(fixture!("notification_v2_requestcontext.json")).unwrap();
    assert_eq!(v2.message.context.get("user").unwrap(), "demo-user");
    assert!(v2.unique_id.is_some());
}

fn our_request(call: Option<&CallInfo<'_>>) -> Vec<u8> {
    let mut meta = RequestMeta::new("echo");
    meta.version = Some("1.0".into());
    let mut ctx = Context::new();
    ctx.insert("request_id", "req-1");
    ctx.insert("user_id", "demo-user");
    let message = Message::new(r#"{"value": "hello-wire-2"}"#)
        .with_context(ctx)
        .with_meta(Meta::Request(meta))
        .with_codec(CodecKind::Json);
    encode_request(&message, call, "0123456789abcdef0123456789abcdef").unwrap()
}

#[test]
fn our_call_has_the_shape_python_sends() {
    let call = CallInfo {
        msg_id: "3400cc6d45604df3b8f5894becb7ada9",
        reply_q: "reply_b64e9ef0e6d548db8c5d4353fc22b772",
        timeout: None,
    };
    let ours = inner(&our_request(Some(&call)));
    let theirs = inner(fixture!("call_request.json"));
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let mut expected = keys(&theirs);
    expected.retain(|k| k != "_context_project_id");
    assert_eq!(keys(&ours), expected);
    assert_eq!(ours["args"], theirs["args"]);
    assert_eq!(ours["_timeout"], serde_json::Value::Null);
    // And it decodes back.
    let back = decode_request(&our_request(Some(&call))).unwrap();
    assert_eq!(back.msg_id.as_deref(), Some(call.msg_id));
    assert_eq!(back.message.context.get("user_id").unwrap(), "demo-user");
}

#[test]
fn our_cast_has_no_reply_fields_and_a_monitor_timeout_is_whole_seconds() {
    let cast = inner(&our_request(None));
    assert!(
        cast.get("_msg_id").is_none()
            && cast.get("_reply_q").is_none()
            && cast.get("_timeout").is_none()
    );
    let call = CallInfo {
        msg_id: "m",
        reply_q: "reply_q",
        timeout: Some(4.0),
    };
    assert_eq!(
        inner(&our_request(Some(&call)))["_timeout"].to_string(),
        "4"
    );
    let call = CallInfo {
        timeout: Some(0.5),
        ..call
    };
    assert_eq!(
        inner(&our_request(Some(&call)))["_timeout"].to_string(),
        "0.5"
    );
}

#[test]
fn our_replies_have_the_shape_python_sends() {
    let ok =
        inner(&encode_reply(&ReplyBody::Result(b"{\"a\": 3, \"b\": 4.0}"), "m1", "u1").unwrap());
    assert_eq!(ok["ending"], true);
    assert_eq!(ok["failure"], serde_json::Value::Null);
    assert_eq!(
        ok["result"].to_string(),
        r#"{"a":3,"b":4.0}"#,
        "numbers as written"
    );
    let heartbeat = inner(&encode_reply(&ReplyBody::Heartbeat, "m1", "u2").unwrap());
    assert_eq!(
        (
            &heartbeat["result"],
            &heartbeat["failure"],
            &heartbeat["ending"]
        ),
        (
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::Value::Bool(false)
        )
    );
    let remote =
        RemoteError::new("ValueError_Remote", "builtins", "bad").with_traceback(vec!["tb".into()]);
    let failed = inner(&encode_reply(&ReplyBody::Failure(&remote), "m1", "u3").unwrap());
    let failure: serde_json::Value =
        serde_json::from_str(failed["failure"].as_str().unwrap()).unwrap();
    assert_eq!(
        failure["class"], "ValueError",
        "the _Remote suffix is stripped"
    );
    assert_eq!(failure["module"], "builtins");
    assert_eq!(failure["message"], "bad");
    assert_eq!(failure["tb"], serde_json::json!(["tb"]));
    assert_eq!(failure["args"], serde_json::json!(["bad"]));
    // Round trips.
    let back =
        decode_reply(&encode_reply(&ReplyBody::Failure(&remote), "m1", "u3").unwrap()).unwrap();
    assert_eq!(back.outcome.unwrap().unwrap_err().class, "ValueError");
    let hb = decode_reply(&encode_reply(&ReplyBody::Heartbeat, "m1", "u2").unwrap()).unwrap();
    assert_eq!((hb.outcome, hb.ending), (None, false));
    let null =
        decode_reply(&encode_reply(&ReplyBody::Result(b"null"), "m1", "u4").unwrap()).unwrap();
    assert_eq!(null.outcome, Some(Ok(Bytes::from_static(b"null"))));
}

#[test]
fn our_notification_has_the_shape_python_sends() {
    let meta = NotificationMeta::new(
        "c0b7a7e2-f6da-4af2-8d29-c1c1e2bae08a",
        "bench.host",
        "bench.event",
        Priority::Info,
        "2026-11-25 17:02:54.173774",
    );
    let message = Message::new(r#"{"value": "hello-notification-v2", "n": 3}"#)
        .with_meta(Meta::Notification(meta))
        .with_codec(CodecKind::Json);
    let ours = inner(
        &encode_notification(
            &message,
            "b7a1ff7ac3704199b60cd24c49eb45f1",
            NotificationFormat::V2,
        )
        .unwrap(),
    );
    let theirs = inner(fixture!("notification_v2_requestcontext.json"));
    for key in [
        "message_id",
        "publisher_id",
        "event_type",
        "priority",
        "payload",
        "timestamp",
        "_unique_id",
    ] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
}

/// oslo's `messaging` driver (format 1.0): the same object, no envelope, byte for
/// byte the layout Python sent.
#[test]
fn our_v1_notification_is_what_python_sends_without_an_envelope() {
    let meta = NotificationMeta::new(
        "c424306e-de45-43c3-a2a3-9265ef83e823",
        "bench.host",
        "bench.event",
        Priority::Info,
        "2026-11-25 17:02:54.130971",
    );
    let message = Message::new(r#"{"value": "hello-notification", "n": 1}"#)
        .with_meta(Meta::Notification(meta))
        .with_codec(CodecKind::Json);
    let ours = encode_notification(
        &message,
        "455f6ed916a447c0a01793f4800781af",
        NotificationFormat::V1,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(ours.clone()).unwrap(),
        std::str::from_utf8(fixture!("notification_v1.json"))
            .unwrap()
            .trim_end()
    );
    // And it reads back, context included.
    let mut ctx = Context::new();
    ctx.insert("user", "demo-user");
    let with_context = encode_notification(
        &message.clone().with_context(ctx),
        "u1",
        NotificationFormat::V1,
    )
    .unwrap();
    let back = decode_notification(&with_context).unwrap();
    assert_eq!(back.message.context.get("user").unwrap(), "demo-user");
    assert_eq!(back.unique_id.as_deref(), Some("u1"));
    assert_eq!(back.message.body, message.body);
}

#[test]
fn malformed_bodies_are_errors_not_panics() {
    for body in [
        &b""[..],
        b"not json",
        b"[1, 2]",
        br#"{"oslo.version": "3.0", "oslo.message": "{}"}"#,
        br#"{"oslo.version": "2.0", "oslo.message": "not json"}"#,
        br#"{"oslo.version": "2.0", "oslo.message": 7}"#,
        br#"{"args": {}}"#,
        br#"{"method": 5}"#,
        br#"{"method": "m", "_timeout": "soon"}"#,
        br#"{"method": "m", "_context_x": }"#,
    ] {
        assert!(
            decode_request(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(
        decode_reply(br#"{"result": 1}"#).is_err(),
        "a reply needs its _msg_id"
    );
    assert!(decode_notification(br#"{"priority": "LOUD"}"#).is_err());
    assert_eq!(decode_failure("not json").class, "RemoteError");
    let bincode = Message::new(vec![1u8, 2]).with_meta(Meta::Request(RequestMeta::new("m")));
    assert!(
        encode_request(&bincode, None, "u").is_err(),
        "only JSON goes on oslo's wire"
    );
}

#[test]
fn the_duplicate_filter_remembers_the_last_sixteen_acknowledged() {
    let mut filter = DuplicateFilter::default();
    assert!(
        !filter.seen(Some("a")),
        "not acknowledged yet: a redelivery is not a duplicate"
    );
    filter.remember("a");
    assert!(filter.seen(Some("a")));
    for i in 0..16 {
        filter.remember(&i.to_string());
    }
    assert!(!filter.seen(Some("a")), "forgotten after 16 others");
    assert!(!filter.seen(None));
}

/// A peer's bytes quoted by a decoding error are cut and escaped: a 10 MB string body
/// made a 10 MB log line, and a version holding ESC and a newline forged a log line.
#[test]
fn errors_quote_a_peers_bytes_cut_and_escaped() {
    let huge = format!("\"{}\"", "A".repeat(10_000_000));
    let forged = r#"{"oslo.version": "9\u001b[2J\n2099-01-01T00:00:00Z ERROR forged", "oslo.message": "{}"}"#;
    for body in [huge.as_bytes(), forged.as_bytes()] {
        for error in [
            decode_request(body).unwrap_err(),
            decode_reply(body).unwrap_err(),
            decode_notification(body).unwrap_err(),
        ] {
            let text = error.to_string();
            assert!(text.len() < 400, "{} bytes", text.len());
            assert!(!text.chars().any(char::is_control), "{text}");
        }
    }
}
