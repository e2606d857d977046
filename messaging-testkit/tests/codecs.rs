//! Handlers and codecs: a handler whose type the transport's codec cannot decode is
//! refused when its server is built (notifications), or its caller is told why
//! (calls), instead of messages being dropped silently.

use std::sync::mpsc;
use std::time::Duration;

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    self, ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient};
use messaging_core::{Context, Priority, ServerError, Target, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::ServerThread;
use serde_json::{Value, json};

fn value_listener(
    url: &str,
    topic: &str,
    seen: mpsc::Sender<Value>,
) -> Result<ServerThread, ServerError> {
    let endpoint = NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Value>| {
        let _ = seen.send(n.payload);
        NotificationResult::Handled
    });
    let server = notify::listener(
        messaging_transports::open(url).unwrap(),
        vec![Target::new(topic)],
        vec![endpoint],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build()?;
    Ok(ServerThread::spawn(server).expect("start"))
}

/// Issue 9, item 12: a `Notification<serde_json::Value>` listener on the default
/// memory:// codec (bincode) dropped every notification, acknowledged, with one log line.
#[test]
fn a_dynamic_notification_payload_on_bincode_is_refused_when_the_listener_is_built() {
    let topic = format!("codecs_{}", &ids::hex_id()[..10]);
    let (seen, _) = mpsc::channel();
    let err = value_listener("memory:///codecs", &topic, seen)
        .expect_err("a Value listener on bincode is refused");
    assert!(matches!(err, ServerError::UnsupportedCodec(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("the info notification handler") && text.contains("?codec=json"),
        "{text}"
    );
}

#[test]
fn a_dynamic_notification_payload_works_on_json() {
    let url = "memory:///codecs_json?codec=json";
    let topic = format!("codecs_{}", &ids::hex_id()[..10]);
    let (seen, received) = mpsc::channel();
    let listener = value_listener(url, &topic, seen).expect("JSON can feed a Value handler");
    let notifier = Notifier::new(messaging_transports::open(url).unwrap(), "codecs")
        .with_topics([topic.as_str()]);
    let payload = json!({"instance": {"id": 7, "tags": ["a", null]}});
    block_on(notifier.info(&Context::new(), "compute.instance.create.end", &payload)).unwrap();
    assert_eq!(
        received.recv_timeout(Duration::from_secs(10)).unwrap(),
        payload
    );
    listener.stop_and_wait().unwrap();
}

#[test]
fn a_typed_notification_payload_on_bincode_still_builds() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Created {
        id: u64,
    }
    let endpoint = NotificationEndpoint::new().on(Priority::Info, |_: Notification<Created>| {
        NotificationResult::Handled
    });
    let built = notify::listener(
        messaging_transports::open("memory:///codecs").unwrap(),
        vec![Target::new("typed")],
        vec![endpoint],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build();
    assert!(built.is_ok(), "{:?}", built.err());
}

/// A call whose argument type bincode cannot decode fails with a remote `TypeError`
/// that says what to do (an RPC server may mix such a method with typed ones, so it is
/// not refused at build time; its callers are told).
#[test]
fn a_dynamic_call_argument_on_bincode_tells_the_caller_to_use_json() {
    let url = "memory:///codecs_rpc";
    let topic = format!("codecs_{}", &ids::hex_id()[..10]);
    let endpoint = Endpoint::new().method("echo", |_ctx, v: Value| Ok::<_, HandlerError>(v));
    let server = rpc::server(
        messaging_transports::open(url).unwrap(),
        Target::new(topic.clone()).with_server("s"),
        vec![endpoint],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    let server = ServerThread::spawn(server).unwrap();
    let client = RpcClient::new(messaging_transports::open(url).unwrap(), Target::new(topic))
        .with_timeout(Duration::from_secs(10));
    let err = client
        .call_blocking::<_, Value>(&Context::new(), "echo", &json!({"a": 1}))
        .unwrap_err();
    let remote = err.remote().expect("a remote error");
    assert_eq!(remote.class, "TypeError");
    assert!(remote.message.contains("?codec=json"), "{}", remote.message);
    server.stop_and_wait().unwrap();
}
