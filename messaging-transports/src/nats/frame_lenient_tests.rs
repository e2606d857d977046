//! A peer's remote error with fields of the wrong type still reads (as the RabbitMQ
//! wire reads oslo's failures), so its caller gets the error instead of waiting out
//! its timeout.

use super::*;
use serde_json::json;

fn error_of(error: &str) -> RemoteError {
    let header = format!(r#"{{"kind":"reply","codec":"json","outcome":"error","error":{error}}}"#);
    let mut body = (header.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(header.as_bytes());
    decode_reply(&Bytes::from(body))
        .unwrap()
        .unwrap()
        .unwrap_err()
}

#[test]
fn fields_of_the_wrong_type_fall_back_instead_of_failing_the_frame() {
    let e = error_of(r#"{"class":"E","module":"m","message":"x","args":{"a":1},"kwargs":[1]}"#);
    assert_eq!(
        (e.class.as_str(), e.module.as_str(), e.message.as_str()),
        ("E", "m", "x")
    );
    assert_eq!(e.args, [json!({"a": 1})]);
    assert!(e.kwargs.is_empty());
    let e = error_of(r#"{"class":7,"module":["m"],"message":{"m":1},"traceback":"t","args":null}"#);
    assert_eq!((e.class.as_str(), e.module.as_str()), ("RemoteError", ""));
    assert_eq!(e.message, r#"{"m":1}"#);
    assert!(e.traceback.is_empty() && e.args.is_empty());
    let e = error_of(r#"{"class":"E","traceback":["a",2]}"#);
    assert_eq!(e.traceback, ["a", "2"]);
    let e = error_of("[1,2]");
    assert_eq!(
        (e.class.as_str(), e.message.as_str()),
        ("RemoteError", "[1,2]")
    );
    // What our own encoder writes reads back the same.
    let remote = RemoteError::new("Q", "n", "over")
        .with_args([json!(1)])
        .with_kwarg("k", json!({"a": [1]}));
    let frame = encode_reply(Some(&Err(remote.clone())), CodecKind::Json);
    assert_eq!(decode_reply(&frame).unwrap().unwrap().unwrap_err(), remote);
}
