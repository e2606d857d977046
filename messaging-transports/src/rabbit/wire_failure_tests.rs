//! Remote errors on oslo's wire: `args` and `kwargs` both ways, pinned against
//! failure strings the real oslo.messaging produced.

use super::*;
use serde_json::json;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/oslo-wire/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn an_oslo_failure_with_kwargs_decodes_intact() {
    let remote = decode_failure(&fixture("failure_kwargs.json"));
    assert_eq!(
        (remote.class.as_str(), remote.module.as_str()),
        ("QuotaExceeded", "oslo_peer_exceptions")
    );
    let message = "Quota exceeded for cores: requested 8, limit {'cores': 4, 'ram': None}";
    assert_eq!(remote.message, message);
    assert_eq!(remote.args, [json!(message)]);
    assert_eq!(
        serde_json::Value::Object(remote.kwargs.clone()),
        json!({"resource": "cores", "requested": 8, "limit": {"cores": 4, "ram": null}})
    );
    assert!(remote.traceback.len() >= 2, "{remote:?}");
}

#[test]
fn an_oslo_failure_with_several_positional_arguments_decodes_intact() {
    let remote = decode_failure(&fixture("failure_positional.json"));
    assert_eq!(remote.class, "Positional");
    assert_eq!(
        remote.args,
        [json!(404), json!("gone"), json!("a"), json!(1.5)]
    );
    assert!(remote.kwargs.is_empty());
}

#[test]
fn what_we_encode_has_oslos_shape_and_round_trips() {
    let theirs: serde_json::Value = serde_json::from_str(&fixture("failure_kwargs.json")).unwrap();
    let remote = decode_failure(&fixture("failure_kwargs.json"));
    let ours: serde_json::Value = serde_json::from_str(&encode_failure(&remote)).unwrap();
    assert_eq!(ours, theirs, "the same failure JSON, member for member");

    let remote = RemoteError::new("Conflict", "my.errors", "taken")
        .with_args([json!("taken"), json!(409)])
        .with_kwarg("name", "vm1");
    let body = encode_reply(&ReplyBody::Failure(&remote), "m1", "u1").unwrap();
    let back = decode_reply(&body).unwrap().outcome.unwrap().unwrap_err();
    assert_eq!(back, remote);
}

#[test]
fn odd_args_and_kwargs_are_read_as_python_would_pass_them() {
    let missing = decode_failure(r#"{"class": "E", "module": "m", "message": "x"}"#);
    assert!(missing.args.is_empty() && missing.kwargs.is_empty());
    let odd = decode_failure(r#"{"class": "E", "message": "x", "args": "one", "kwargs": [1]}"#);
    assert_eq!(odd.args, [json!("one")]);
    assert!(odd.kwargs.is_empty());
    let null = decode_failure(r#"{"class": "E", "args": null, "kwargs": null}"#);
    assert!(null.args.is_empty() && null.kwargs.is_empty());
}
