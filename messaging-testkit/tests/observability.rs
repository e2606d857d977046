//! What the framework logs and traces: expected handler errors reach the caller
//! without an error log; every call, cast and notification is a span on both sides,
//! linked by the caller's trace id; the notifier's log and noop drivers.
//!
//! Its own test binary: it installs a process-wide log capture, since handlers log on
//! executor threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier, NotifyDriver,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, NoArgs, RpcClient, TRACE_ID};
use messaging_core::{Context, Priority, Target, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{LogCapture, ServerThread, fake_transport};
use tracing::Level;

fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn server(topic: &str, endpoint: Endpoint) -> (Arc<dyn messaging_core::Transport>, ServerThread) {
    let transport = messaging_transports::open("memory:///observability").unwrap();
    let server = rpc::server(
        transport.clone(),
        Target::new(topic).with_server("s"),
        vec![endpoint],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    (transport, ServerThread::spawn(server).unwrap())
}

#[test]
fn expected_errors_reach_the_caller_without_an_error_log() {
    let logs = LogCapture::global();
    let marker = ids::hex_id();
    let (m1, m2) = (marker.clone(), marker.clone());
    let endpoint = Endpoint::new()
        .method(
            "expected",
            move |_ctx, _: NoArgs| -> Result<(), HandlerError> {
                Err(HandlerError::new("NotFound", format!("{m1} anticipated")).expected())
            },
        )
        .method(
            "unexpected",
            move |_ctx, _: NoArgs| -> Result<(), HandlerError> {
                Err(HandlerError::new("Broken", format!("{m2} unforeseen")))
            },
        );
    let topic = format!("obs-{marker}");
    let (transport, running) = server(&topic, endpoint);
    let client = RpcClient::new(transport, Target::new(topic));
    let errors_about = |what: &str| {
        logs.events()
            .iter()
            .filter(|e| e.level == Level::ERROR)
            .filter(|e| {
                e.fields
                    .iter()
                    .any(|(_, v)| v.contains(&marker) && v.contains(what))
            })
            .count()
    };
    let err = client
        .call_blocking::<_, ()>(&Context::new(), "expected", &NoArgs {})
        .unwrap_err();
    assert_eq!(err.remote().unwrap().class, "NotFound");
    let err = client
        .call_blocking::<_, ()>(&Context::new(), "unexpected", &NoArgs {})
        .unwrap_err();
    assert_eq!(err.remote().unwrap().class, "Broken");
    running.stop_and_wait().unwrap();
    assert_eq!(
        errors_about("anticipated"),
        0,
        "an expected error is not logged as an error"
    );
    assert_eq!(errors_about("unforeseen"), 1, "an unexpected one is, once");
}

#[test]
fn client_and_server_spans_share_the_callers_trace_id() {
    let logs = LogCapture::global();
    let trace_id = ids::hex_id();
    let topic = format!("obs-trace-{trace_id}");
    let endpoint = Endpoint::new().method("ping", |_ctx, _: NoArgs| Ok::<_, HandlerError>("pong"));
    let (transport, running) = server(&topic, endpoint);
    let client = RpcClient::new(transport.clone(), Target::new(topic.clone()));
    let mut ctx = Context::new();
    ctx.insert(TRACE_ID, trace_id.clone());
    let pong: String = client.call_blocking(&ctx, "ping", &NoArgs {}).unwrap();
    assert_eq!(pong, "pong");
    client.cast_blocking(&ctx, "ping", &NoArgs {}).unwrap();

    let (notifier_topic, inbox) = (format!("{topic}-n"), Arc::new(std::sync::Mutex::new(0)));
    let seen = inbox.clone();
    let listener = messaging_core::notify::listener(
        transport.clone(),
        vec![Target::new(notifier_topic.clone())],
        vec![
            NotificationEndpoint::new().on(Priority::Info, move |_: Notification<String>| {
                *seen.lock().unwrap() += 1;
                NotificationResult::Handled
            }),
        ],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    let listening = ServerThread::spawn(listener).unwrap();
    let notifier = Notifier::new(transport, "obs").with_topics([notifier_topic.as_str()]);
    block_on(notifier.info(&ctx, "obs.event", &"x".to_owned())).unwrap();
    eventually("the notification", || *inbox.lock().unwrap() == 1);

    let with_trace = |name: &str| {
        logs.spans()
            .iter()
            .filter(|s| s.name == name && s.field("trace_id") == Some(trace_id.as_str()))
            .count()
    };
    eventually("the server spans", || with_trace("rpc.server") == 2);
    assert_eq!(with_trace("rpc.call"), 1);
    assert_eq!(with_trace("rpc.cast"), 1);
    assert_eq!(with_trace("notify"), 1);
    assert_eq!(with_trace("notification"), 1);
    let call_span = logs
        .spans()
        .into_iter()
        .find(|s| s.name == "rpc.call" && s.field("trace_id") == Some(trace_id.as_str()))
        .unwrap();
    assert_eq!(call_span.field("method"), Some("ping"));
    running.stop_and_wait().unwrap();
    listening.stop_and_wait().unwrap();
}

#[test]
fn the_log_driver_logs_and_the_noop_driver_sends_nothing() {
    let logs = LogCapture::global();
    let (transport, fake) = fake_transport();
    let event_type = format!("obs.logged.{}", ids::hex_id());
    let notifier = Notifier::new(transport.clone(), "logger").with_driver(NotifyDriver::Log);
    block_on(notifier.warn(&Context::new(), &event_type, &serde_json::json!({"k": "v"}))).unwrap();
    let logged: Vec<_> = logs
        .events()
        .into_iter()
        .filter(|e| {
            e.fields
                .iter()
                .any(|(n, v)| n == "event_type" && *v == event_type)
        })
        .collect();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].level, Level::WARN);
    assert_eq!(logged[0].target, "messaging::notification");
    assert!(
        logged[0]
            .fields
            .iter()
            .any(|(n, v)| n == "payload" && v == r#"{"k":"v"}"#)
    );
    let noop = Notifier::new(transport, "quiet").with_driver(NotifyDriver::Noop);
    assert!(!noop.is_enabled());
    block_on(noop.info(&Context::new(), "nothing", &1)).unwrap();
    assert!(fake.sent().is_empty(), "neither driver used the transport");
}

/// Text from the wire (here a method name a peer chose: a forged log line and 100 KB)
/// reaches the server's spans and the caller's remote error cut and escaped.
#[test]
fn wire_text_reaches_spans_and_errors_cut_and_escaped() {
    let logs = LogCapture::global();
    let topic = format!("obs-forge-{}", ids::hex_id());
    let endpoint = Endpoint::new().method("ping", |_ctx, _: NoArgs| Ok::<_, HandlerError>("pong"));
    let (transport, running) = server(&topic, endpoint);
    let client = RpcClient::new(transport, Target::new(topic.clone()));
    let method = format!(
        "x\n2099-01-01T00:00:00Z ERROR forged {topic}{}",
        "A".repeat(100_000)
    );
    let err = client
        .call_blocking::<_, ()>(&Context::new(), &method, &NoArgs {})
        .unwrap_err();
    let remote = err.remote().expect("a remote error");
    assert_eq!(remote.class, "NoSuchMethod");
    assert!(
        remote.message.len() < 1_000 && remote.message.contains("x\\n2099"),
        "{}",
        &remote.message[..remote.message.len().min(300)]
    );
    running.stop_and_wait().unwrap();
    let methods: Vec<String> = logs
        .spans()
        .into_iter()
        .filter(|s| s.name == "rpc.server")
        .filter_map(|s| s.field("method").map(str::to_owned))
        .filter(|m| m.contains(&topic[..20]) || m.contains("forged"))
        .collect();
    assert!(!methods.is_empty(), "the server span was recorded");
    for method in methods {
        assert!(!method.contains('\n') && method.len() < 200, "{method}");
    }
}
