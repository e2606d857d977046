//! Remote errors in our NATS framing keep their `args` and `kwargs`, and frames of the
//! previous version (without them) still read.

use super::*;
use serde_json::json;

#[test]
fn a_remote_errors_args_and_kwargs_survive_the_frame() {
    let remote = RemoteError::new("QuotaExceeded", "nova.exception", "over quota")
        .with_args([json!("over quota"), json!(3)])
        .with_kwarg("overs", json!(["cores"]))
        .with_kwarg("limit", json!({"cores": 4, "ram": null}));
    for codec in [CodecKind::Json, CodecKind::Bincode] {
        let frame = encode_reply(Some(&Err(remote.clone())), codec);
        let back = decode_reply(&frame).unwrap().unwrap().unwrap_err();
        assert_eq!(back, remote, "{codec}");
    }
}

#[test]
fn an_error_from_a_frame_without_args_or_kwargs_still_reads() {
    let header = r#"{"kind":"reply","codec":"json","outcome":"error","error":{"class":"E","module":"m","message":"x","traceback":[]}}"#;
    let mut body = (header.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(header.as_bytes());
    let back = decode_reply(&Bytes::from(body))
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!((back.class.as_str(), back.message.as_str()), ("E", "x"));
    assert!(back.args.is_empty() && back.kwargs.is_empty());
}
