//! The transport-generic functional suite, ported from oslo.messaging's functional
//! tests (`oslo_messaging/tests/functional`), plus the call-monitor, panic and context
//! guarantees of this project. It is the acceptance test of every transport: one
//! definition, run against a transport URL.
//!
//! ```ignore
//! // memory://, always:
//! messaging_testkit::functional_suite!(Some("memory:///functional".to_owned()));
//! // a broker, when its URL is in the environment (skipped, and said so, otherwise):
//! messaging_testkit::functional_suite!(std::env::var("MESSAGING_TEST_RABBIT_URL").ok());
//! ```
//!
//! Every scenario uses its own random topics and exchanges, so scenarios can run in
//! parallel on one broker, and runs under a watchdog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use messaging_core::codec::Codec;
use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationFilter, NotificationResult,
    Notifier,
};
use messaging_core::reply::ReplyEvent;
use messaging_core::rpc::{
    Endpoint, HandlerError, MESSAGE_TOO_LARGE, NO_SUCH_METHOD, NoArgs, RpcClient, RpcError,
    TRACE_ID, UNSUPPORTED_VERSION,
};
use messaging_core::{
    Context, Executor, ListenOptions, Message, Meta, Polled, Priority, RequestMeta, SendOptions,
    Server, Subscription, Target, Transport, ids,
};
use messaging_executors::{BlockingExecutor, EventLoopExecutor, ThreadPoolExecutor};
use serde::{Deserialize, Serialize};

use crate::fixtures::ServerThread;
use crate::watchdog::{SCENARIO_LIMIT, within};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const EVENTUALLY: Duration = Duration::from_secs(15);

// ===== plumbing =====

use crate::with_option;

fn open(url: &str) -> Arc<dyn Transport> {
    messaging_transports::open(url).unwrap_or_else(|e| panic!("cannot open {url}: {e}"))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &ids::hex_id()[..10])
}

/// Polls `check` until it holds or [`EVENTUALLY`] passes.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "not within {EVENTUALLY:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ===== the test endpoint (oslo's TestServerEndpoint) =====

#[derive(Debug, Default)]
struct ServerState {
    ival: Mutex<i64>,
    sval: Mutex<String>,
}

impl ServerState {
    fn ival(&self) -> i64 {
        *self.ival.lock().unwrap()
    }

    fn sval(&self) -> String {
        self.sval.lock().unwrap().clone()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Increment {
    increment: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Text {
    text: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Millis {
    ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Key {
    key: String,
}

fn test_endpoint(state: Arc<ServerState>) -> Endpoint {
    let (s1, s2, s3) = (state.clone(), state.clone(), state);
    Endpoint::new()
        .method("add", move |_ctx, args: Increment| {
            let mut ival = s1.ival.lock().unwrap();
            *ival += args.increment;
            Ok::<_, HandlerError>(*ival)
        })
        .method("subtract", move |_ctx, args: Increment| {
            let mut ival = s2.ival.lock().unwrap();
            if *ival - args.increment < 0 {
                return Err(HandlerError::new("ValueError", "ival can't go negative!")
                    .with_module("builtins"));
            }
            *ival -= args.increment;
            Ok(*ival)
        })
        .method("append", move |_ctx, args: Text| {
            let mut sval = s3.sval.lock().unwrap();
            sval.push_str(&args.text);
            Ok::<_, HandlerError>(sval.clone())
        })
        .method("long_running_task", |_ctx, args: Millis| {
            std::thread::sleep(Duration::from_millis(args.ms));
            Ok::<_, HandlerError>(args.ms)
        })
        .method("context_value", |ctx: Context, args: Key| {
            let value = ctx
                .get(&args.key)
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            Ok::<_, HandlerError>(value)
        })
        .method("echo", |_ctx, value: serde_json::Value| {
            Ok::<_, HandlerError>(value)
        })
        .method("panic", |_ctx, _: NoArgs| -> Result<(), HandlerError> {
            panic!("the handler panicked on purpose")
        })
        .async_method("async_add", |_ctx, args: Increment| async move {
            Ok::<_, HandlerError>(args.increment + 1)
        })
}

struct RpcServer {
    name: String,
    state: Arc<ServerState>,
    running: Option<ServerThread>,
}

/// oslo's RpcServerGroupFixture: servers `server_<i>` on one topic.
struct Group {
    url: String,
    topic: String,
    exchange: Option<String>,
    servers: Vec<RpcServer>,
}

impl Group {
    fn start(url: &str, servers: usize) -> Group {
        Group::start_on(url, unique("topic"), None, servers, || {
            Box::new(ThreadPoolExecutor::new())
        })
    }

    fn start_on(
        url: &str,
        topic: String,
        exchange: Option<String>,
        servers: usize,
        executor: impl Fn() -> Box<dyn Executor>,
    ) -> Group {
        let mut group = Group {
            url: url.to_owned(),
            topic,
            exchange,
            servers: Vec::new(),
        };
        for i in 0..servers {
            group.add(&format!("server_{i}"), executor(), Vec::new());
        }
        group
    }

    fn add(&mut self, name: &str, executor: Box<dyn Executor>, extra: Vec<Endpoint>) {
        let state = Arc::new(ServerState::default());
        let mut target = Target::new(self.topic.clone()).with_server(name);
        target.exchange = self.exchange.clone();
        let mut endpoints = extra;
        endpoints.push(test_endpoint(state.clone()));
        let server = messaging_core::rpc::server(open(&self.url), target, endpoints, executor)
            .expect("valid endpoints")
            .name(format!("{}/{name}", self.topic))
            .build()
            .expect("a valid server");
        self.servers.push(RpcServer {
            name: name.to_owned(),
            state,
            running: Some(ServerThread::spawn(server).expect("start")),
        });
    }

    fn client(&self) -> RpcClient {
        let mut client = RpcClient::new(open(&self.url), Target::new(self.topic.clone()))
            .with_timeout(CALL_TIMEOUT);
        if let Some(exchange) = &self.exchange {
            client = client.with_exchange(exchange.clone());
        }
        client
    }

    fn server_client(&self, i: usize) -> RpcClient {
        self.client().with_server(self.servers[i].name.clone())
    }

    fn stop(mut self) {
        for server in &mut self.servers {
            if let Some(running) = server.running.take() {
                running.stop_and_wait().expect("stop and wait");
            }
        }
    }
}

fn call<R: serde::de::DeserializeOwned>(
    client: &RpcClient,
    method: &str,
    args: &impl Serialize,
) -> Result<R, RpcError> {
    client.call_blocking(&Context::new(), method, args)
}

fn add(client: &RpcClient, increment: i64) -> i64 {
    call(client, "add", &Increment { increment }).expect("add")
}

fn append(client: &RpcClient, text: &str) -> String {
    call(client, "append", &Text { text: text.into() }).expect("append")
}

fn cast(client: &RpcClient, method: &str, args: &impl Serialize) {
    client
        .cast_blocking(&Context::new(), method, args)
        .expect("cast");
}

// ===== RPC calls =====

/// `CallTestCase.test_specific_server`: calls to one server of a group reach only it.
pub fn call_specific_server(url: &str) {
    let group = Group::start(url, 3);
    let client = group.server_client(1);
    assert_eq!(append(&client, "open"), "open");
    assert_eq!(append(&client, "stack"), "openstack");
    assert_eq!(add(&client, 2), 2);
    assert_eq!(add(&client, 10), 12);
    assert_eq!(
        call::<i64>(&client, "subtract", &Increment { increment: 3 }).unwrap(),
        9
    );
    for (i, server) in group.servers.iter().enumerate() {
        let expected = if i == 1 { (9, "openstack") } else { (0, "") };
        assert_eq!(
            (server.state.ival(), server.state.sval().as_str()),
            expected
        );
    }
    group.stop();
}

/// `CallTestCase.test_server_in_group`: calls to the topic spread over the group, each
/// server seeing its share in order.
pub fn calls_to_a_topic_spread_over_the_group(url: &str) {
    let group = Group::start(url, 3);
    let client = group.client();
    let sent: Vec<String> = (0..14).map(|i| format!("{},", i)).collect();
    for text in &sent {
        append(&client, text);
    }
    let mut seen = Vec::new();
    for server in &group.servers {
        let sval = server.state.sval();
        assert!(!sval.is_empty(), "{} got no call", server.name);
        let parts: Vec<String> = sval.split_inclusive(',').map(str::to_owned).collect();
        let mut positions = parts
            .iter()
            .map(|p| sent.iter().position(|s| s == p).unwrap());
        let mut last = positions.next().unwrap();
        for p in positions {
            assert!(
                p > last,
                "{} saw its calls out of order: {sval}",
                server.name
            );
            last = p;
        }
        seen.extend(parts);
    }
    seen.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(seen, expected, "every call went to exactly one server");
    group.stop();
}

/// `CallTestCase.test_different_exchanges`: groups in different exchanges (each on
/// its own topic, as in oslo: queue names are global on a broker) are isolated, and a
/// topic bound only in exchange `a` cannot be reached through another exchange.
pub fn exchanges_are_isolated(url: &str) {
    let thread_pool = || Box::new(ThreadPoolExecutor::new()) as Box<dyn Executor>;
    let default = Group::start_on(url, unique("topic"), None, 2, thread_pool);
    let a = Group::start_on(url, unique("topic"), Some(unique("a")), 2, thread_pool);
    let b = Group::start_on(url, unique("topic"), Some(unique("b")), 2, thread_pool);
    assert_eq!(add(&default.server_client(1), 1), 1);
    for _ in 0..4 {
        add(&a.client(), 10);
    }
    let total = |g: &Group| g.servers.iter().map(|s| s.state.ival()).sum::<i64>();
    assert_eq!((total(&default), total(&a), total(&b)), (1, 40, 0));
    let wrong_exchange = RpcClient::new(open(url), Target::new(a.topic.clone()))
        .with_exchange(b.exchange.clone().expect("b has an exchange"))
        .with_timeout(Duration::from_millis(300));
    let err = call::<i64>(&wrong_exchange, "add", &Increment { increment: 1 }).unwrap_err();
    assert!(
        err.is_timeout(),
        "a's topic is not reachable through b's exchange: {err}"
    );
    assert_eq!((total(&a), total(&b)), (40, 0));
    default.stop();
    a.stop();
    b.stop();
}

/// `CallTestCase.test_timeout` and `test_client_call_timeout`: a call nobody serves
/// times out with a typed error; a zero timeout fails at once.
pub fn timeout_on_a_missing_topic(url: &str) {
    let client = RpcClient::new(open(url), Target::new(unique("no_such_topic")))
        .with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = call::<i64>(&client, "add", &Increment { increment: 1 }).unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let err = call::<i64>(
        &client.with_timeout(Duration::ZERO),
        "add",
        &Increment { increment: 1 },
    )
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

/// `CallTestCase.test_exception`: a handler's error reaches the caller typed.
pub fn exceptions_reach_the_caller_typed(url: &str) {
    let group = Group::start(url, 1);
    let client = group.client();
    add(&client, 2);
    let err = call::<i64>(&client, "subtract", &Increment { increment: 3 }).unwrap_err();
    let remote = err
        .remote()
        .unwrap_or_else(|| panic!("expected a remote error, got {err}"));
    assert_eq!(remote.class, "ValueError");
    assert_eq!(remote.module, "builtins");
    assert_eq!(remote.message, "ival can't go negative!");
    assert_eq!(
        group.servers[0].state.ival(),
        2,
        "the failed call changed nothing"
    );
    group.stop();
}

/// `CallTestCase.test_timeout_with_concurrently_queues`: a slow call does not block
/// other calls to the same server.
pub fn a_slow_call_does_not_block_other_calls(url: &str) {
    let group = Group::start(url, 1);
    let slow = group.client().with_timeout(Duration::from_millis(500));
    let slow_call =
        std::thread::spawn(move || call::<u64>(&slow, "long_running_task", &Millis { ms: 2_000 }));
    std::thread::sleep(Duration::from_millis(50));
    let client = group.client();
    for _ in 0..10 {
        add(&client, 1);
    }
    assert_eq!(group.servers[0].state.ival(), 10);
    let err = slow_call.join().unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    group.stop();
}

/// A request still queued when its caller's timeout passes is dropped, not handled:
/// nobody waits for its reply (oslo relies on the broker's message TTL for this; a
/// request already taken from the broker must be dropped by the server).
pub fn requests_whose_caller_gave_up_are_not_handled(url: &str) {
    let mut group = Group::start_on(url, unique("topic"), None, 0, || {
        Box::new(BlockingExecutor::new())
    });
    let (started, holding) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(released);
    let gate = Endpoint::new()
        .with_namespace("gate")
        .method("hold", move |_ctx, _: NoArgs| {
            let _ = started.send(());
            let _ = released.lock().unwrap().recv_timeout(EVENTUALLY);
            Ok::<_, HandlerError>(())
        });
    // One blocking server: requests wait in line behind `hold`.
    group.add("server_0", Box::new(BlockingExecutor::new()), vec![gate]);
    let holder = group.client().with_namespace("gate");
    let hold = std::thread::spawn(move || call::<()>(&holder, "hold", &NoArgs {}));
    holding.recv_timeout(EVENTUALLY).expect("hold() started");
    let impatient = group.client().with_timeout(Duration::from_millis(300));
    let err = call::<i64>(&impatient, "add", &Increment { increment: 1 }).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    release.send(()).unwrap();
    hold.join().unwrap().expect("hold()");
    assert_eq!(
        add(&group.client(), 0),
        0,
        "the request whose caller had timed out was handled"
    );
    group.stop();
}

/// A result larger than the transport takes (`max_message_size`) reaches the caller
/// as a `MessageTooLarge` remote error at once, instead of a timeout; the server
/// keeps serving.
pub fn a_result_too_large_for_the_transport_is_a_remote_error(url: &str) {
    let url = with_option(url, "max_message_size", "5000");
    let group = Group::start(&url, 1);
    let client = group.server_client(0);
    let text = "x".repeat(3000);
    assert_eq!(append(&client, &text).len(), 3000);
    let started = Instant::now();
    let err = call::<String>(&client, "append", &Text { text }).unwrap_err();
    let remote = err
        .remote()
        .unwrap_or_else(|| panic!("a remote error, not {err}"));
    assert_eq!(remote.class, MESSAGE_TOO_LARGE, "{remote:?}");
    assert!(remote.message.contains("append()"), "{remote:?}");
    assert!(
        started.elapsed() < CALL_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(add(&client, 1), 1, "the server keeps serving");
    group.stop();
}

/// `CallTestCase.test_endpoint_version_namespace`: namespace and version select the
/// endpoint; a wrong one is `UnsupportedVersion`.
pub fn endpoint_version_and_namespace(url: &str) {
    let mut group = Group::start(url, 0);
    let versioned = Endpoint::new()
        .with_namespace("Name1")
        .with_version("7.5")
        .method("add", |_ctx, args: Increment| {
            Ok::<_, HandlerError>(args.increment + 100)
        });
    group.add(
        "server_0",
        Box::new(ThreadPoolExecutor::new()),
        vec![versioned],
    );
    let client = group.client();
    let v75 = client.clone().with_namespace("Name1").with_version("7.5");
    assert_eq!(add(&v75, 1), 101);
    let v76 = client.clone().with_namespace("Name1").with_version("7.6");
    let err = call::<i64>(&v76, "add", &Increment { increment: 1 }).unwrap_err();
    assert_eq!(
        err.remote().map(|r| r.class.as_str()),
        Some(UNSUPPORTED_VERSION),
        "{err}"
    );
    let other = client.clone().with_namespace("Name2").with_version("7.5");
    let err = call::<i64>(&other, "add", &Increment { increment: 1 }).unwrap_err();
    assert_eq!(
        err.remote().map(|r| r.class.as_str()),
        Some(UNSUPPORTED_VERSION),
        "{err}"
    );
    assert_eq!(
        add(&client, 1),
        1,
        "the null namespace still reaches the default endpoint"
    );
    group.stop();
}

/// `NoSuchMethod` when an endpoint serves the namespace and version but lacks the
/// method; `UnsupportedVersion` when none serves them; private names never resolve.
pub fn no_such_method_and_unsupported_version_are_distinct(url: &str) {
    let group = Group::start(url, 1);
    let client = group.client();
    let err = call::<i64>(&client, "no_such", &NoArgs {}).unwrap_err();
    assert_eq!(
        err.remote().map(|r| r.class.as_str()),
        Some(NO_SUCH_METHOD),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("Endpoint does not support RPC method no_such"),
        "{err}"
    );
    let err = call::<i64>(&client, "_private", &NoArgs {}).unwrap_err();
    assert_eq!(
        err.remote().map(|r| r.class.as_str()),
        Some(NO_SUCH_METHOD),
        "{err}"
    );
    let err = call::<i64>(
        &client.clone().with_version("2.0"),
        "add",
        &Increment { increment: 1 },
    )
    .unwrap_err();
    assert_eq!(
        err.remote().map(|r| r.class.as_str()),
        Some(UNSUPPORTED_VERSION),
        "{err}"
    );
    let err = call::<i64>(
        &client.clone().with_version("1.x"),
        "add",
        &Increment { increment: 1 },
    )
    .unwrap_err();
    assert!(matches!(err, RpcError::InvalidVersion(_)), "{err}");
    let err = call::<i64>(
        &client.with_version_cap("1.1").with_version("1.2"),
        "add",
        &Increment { increment: 1 },
    )
    .unwrap_err();
    assert!(matches!(err, RpcError::VersionCap { .. }), "{err}");
    group.stop();
}

/// A handler that panics becomes an error reply; the server keeps serving.
pub fn handler_panic_is_a_remote_error_and_the_server_keeps_serving(url: &str) {
    let group = Group::start(url, 1);
    let client = group.client();
    let err = call::<()>(&client, "panic", &NoArgs {}).unwrap_err();
    let remote = err
        .remote()
        .unwrap_or_else(|| panic!("expected a remote error, got {err}"));
    assert_eq!(remote.class, messaging_core::rpc::HANDLER_PANIC);
    assert!(remote.message.contains("panicked on purpose"), "{remote}");
    assert_eq!(add(&client, 5), 5);
    group.stop();
}

/// The request context reaches the handler; the client's trace id travels in it.
pub fn context_and_trace_id_reach_the_handler(url: &str) {
    let group = Group::start(url, 1);
    let client = group.client();
    let mut ctx = Context::new();
    ctx.insert("user", "u1");
    let user: Option<String> = client
        .call_blocking(&ctx, "context_value", &Key { key: "user".into() })
        .unwrap();
    assert_eq!(user.as_deref(), Some("u1"));
    let trace: Option<String> = client
        .call_blocking(
            &ctx,
            "context_value",
            &Key {
                key: TRACE_ID.into(),
            },
        )
        .unwrap();
    assert_eq!(
        trace.as_deref().map(str::len),
        Some(32),
        "a trace id was generated: {trace:?}"
    );
    ctx.insert(TRACE_ID, "0123456789abcdef0123456789abcdef");
    let trace: Option<String> = client
        .call_blocking(
            &ctx,
            "context_value",
            &Key {
                key: TRACE_ID.into(),
            },
        )
        .unwrap();
    assert_eq!(
        trace.as_deref(),
        Some("0123456789abcdef0123456789abcdef"),
        "the caller's trace id is kept"
    );
    group.stop();
}

/// A handler can extend the context it received and pass it on to a nested call; the
/// trace id travels through both hops.
pub fn context_can_be_extended_for_nested_calls(url: &str) {
    let downstream = Group::start(url, 1);
    let next = downstream.client();
    let relay = Endpoint::new().method("relay", move |mut ctx: Context, args: Key| {
        ctx.insert("hop", "relay");
        let value: Option<String> = next
            .call_blocking(&ctx, "context_value", &args)
            .map_err(|e| HandlerError::new("NestedCallFailed", e.to_string()))?;
        Ok::<_, HandlerError>(value)
    });
    let mut upstream = Group::start(url, 0);
    upstream.add("relay", Box::new(ThreadPoolExecutor::new()), vec![relay]);
    let mut ctx = Context::new();
    ctx.insert(TRACE_ID, "feedfacefeedfacefeedfacefeedface");
    let client = upstream.client();
    let hop: Option<String> = client
        .call_blocking(&ctx, "relay", &Key { key: "hop".into() })
        .unwrap();
    assert_eq!(
        hop.as_deref(),
        Some("relay"),
        "the extension reached the nested call"
    );
    let trace: Option<String> = client
        .call_blocking(
            &ctx,
            "relay",
            &Key {
                key: TRACE_ID.into(),
            },
        )
        .unwrap();
    assert_eq!(trace.as_deref(), Some("feedfacefeedfacefeedfacefeedface"));
    upstream.stop();
    downstream.stop();
}

/// Dynamic JSON arguments and results work end to end with the JSON codec.
pub fn dynamic_json_arguments(url: &str) {
    let url = with_option(url, "codec", "json");
    let group = Group::start(&url, 1);
    let value = serde_json::json!({"a": [1, 2.5, "three", null], "b": {"nested": true}, "n": 3});
    let back: serde_json::Value = call(&group.client(), "echo", &value).unwrap();
    assert_eq!(back, value);
    assert_eq!(back["n"].to_string(), "3", "numbers stay as sent");
    group.stop();
}

/// Calls reach servers on every executor, sync and async handlers alike.
pub fn every_executor_serves_calls(url: &str) {
    let mut group = Group::start(url, 0);
    group.add("blocking", Box::new(BlockingExecutor::new()), Vec::new());
    group.add(
        "thread-pool",
        Box::new(ThreadPoolExecutor::new()),
        Vec::new(),
    );
    group.add("event-loop", Box::new(EventLoopExecutor::new()), Vec::new());
    for i in 0..3 {
        let client = group.server_client(i);
        assert_eq!(add(&client, 3), 3);
        assert_eq!(
            call::<i64>(&client, "async_add", &Increment { increment: 3 }).unwrap(),
            4
        );
    }
    group.stop();
}

// ===== RPC casts =====

/// `CastTestCase.test_specific_server`.
pub fn cast_to_a_specific_server(url: &str) {
    let group = Group::start(url, 3);
    let client = group.server_client(1);
    cast(
        &client,
        "append",
        &Text {
            text: "open".into(),
        },
    );
    cast(
        &client,
        "append",
        &Text {
            text: "stack".into(),
        },
    );
    cast(&client, "add", &Increment { increment: 2 });
    cast(&client, "add", &Increment { increment: 10 });
    let state = &group.servers[1].state;
    eventually("casts processed", || {
        state.ival() == 12 && state.sval().len() == 9
    });
    assert!(["openstack", "stackopen"].contains(&state.sval().as_str()));
    for i in [0, 2] {
        assert_eq!(group.servers[i].state.ival(), 0);
    }
    group.stop();
}

/// `CastTestCase.test_server_in_group`: casts to the topic spread over the group.
pub fn casts_to_a_topic_spread_over_the_group(url: &str) {
    let group = Group::start(url, 2);
    let client = group.client();
    for _ in 0..20 {
        cast(&client, "add", &Increment { increment: 1 });
        std::thread::sleep(Duration::from_millis(2));
    }
    let total = || group.servers.iter().map(|s| s.state.ival()).sum::<i64>();
    eventually("20 casts processed", || total() == 20);
    for server in &group.servers {
        assert!(server.state.ival() > 0, "{} got no cast", server.name);
    }
    group.stop();
}

/// `CastTestCase.test_fanout`: a fanout cast reaches every server.
pub fn fanout_casts_reach_every_server(url: &str) {
    let group = Group::start(url, 3);
    let client = group.client().with_fanout(true);
    cast(
        &client,
        "append",
        &Text {
            text: "open".into(),
        },
    );
    cast(
        &client,
        "append",
        &Text {
            text: "stack".into(),
        },
    );
    cast(&client, "add", &Increment { increment: 2 });
    cast(&client, "add", &Increment { increment: 10 });
    for server in &group.servers {
        eventually("fanout processed", || {
            server.state.ival() == 12 && server.state.sval().len() == 9
        });
        assert!(["openstack", "stackopen"].contains(&server.state.sval().as_str()));
    }
    group.stop();
}

// ===== call monitor =====

/// `CallTestCase.test_monitor_long_call`: heartbeats keep a long call alive past the
/// monitor timeout; without them the plain timeout applies.
pub fn call_monitor_keeps_a_long_call_alive(url: &str) {
    let group = Group::start(url, 1);
    let client = group.client();
    let err = call::<u64>(
        &client.clone().with_timeout(Duration::from_millis(200)),
        "long_running_task",
        &Millis { ms: 800 },
    )
    .unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    // Heartbeats every 750 ms keep a 2.5 s call alive past its 1.5 s monitor timeout;
    // the margin (a heartbeat may be 750 ms late) keeps a loaded machine from failing
    // it (with 500 ms, two runs failed while four builds shared the 2 cores).
    let done: u64 = call(
        &client.with_call_monitor_timeout(Duration::from_millis(1_500)),
        "long_running_task",
        &Millis { ms: 2_500 },
    )
    .unwrap();
    assert_eq!(done, 2_500);
    group.stop();
}

/// A call whose server stops heartbeating fails with `MonitorTimeout` long before its
/// own timeout.
pub fn a_silent_server_fails_a_monitored_call_fast(url: &str) {
    let transport = open(url);
    let topic = unique("silent");
    // A "server" that takes the call and never answers.
    let listener = transport
        .listen(
            &Subscription::Rpc(Target::new(topic.clone()).with_server("mute")),
            &ListenOptions::default(),
        )
        .unwrap();
    let client = RpcClient::new(open(url), Target::new(topic))
        .with_timeout(Duration::from_secs(30))
        .with_call_monitor_timeout(Duration::from_millis(300));
    let caller = std::thread::spawn(move || {
        let started = Instant::now();
        (
            call::<i64>(&client, "add", &Increment { increment: 1 }),
            started.elapsed(),
        )
    });
    let taken = match listener.poll(Some(CALL_TIMEOUT)).unwrap() {
        Polled::Messages(batch) => batch,
        other => panic!("the call did not arrive: {other:?}"),
    };
    let (result, elapsed) = caller.join().unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, RpcError::MonitorTimeout { .. }), "{err}");
    assert!(elapsed < Duration::from_secs(30));
    drop(taken);
    listener.stop();
    listener.cleanup();
}

/// The server heartbeats while a handler runs and stops with the call, whatever the
/// outcome: success, handler error, `NoSuchMethod`, `UnsupportedVersion` (oslo leaks a
/// heartbeat thread on the last two).
pub fn heartbeats_end_with_the_call(url: &str) {
    let group = Group::start(url, 1);
    let transport = open(url);
    let target = Target::new(group.topic.clone());
    let codec = transport.codec();
    let monitor = Duration::from_millis(60);
    let cases: [(&str, Option<&str>, Bytes); 4] = [
        (
            "long_running_task",
            None,
            codec.encode(&Millis { ms: 200 }).unwrap(),
        ),
        (
            "subtract",
            None,
            codec.encode(&Increment { increment: 1 }).unwrap(),
        ),
        ("no_such", None, codec.encode(&NoArgs {}).unwrap()),
        (
            "add",
            Some("9.0"),
            codec.encode(&Increment { increment: 1 }).unwrap(),
        ),
    ];
    for (method, version, body) in cases {
        let mut meta = RequestMeta::new(method);
        meta.version = version.map(str::to_owned);
        let message = Message::new(body)
            .with_meta(Meta::Request(meta))
            .with_codec(codec);
        let options = SendOptions::default().call_monitor_timeout(monitor);
        let mut replies = block_on(transport.call(&target, message, &options)).unwrap();
        let mut heartbeats = 0;
        loop {
            match replies.recv_timeout(Some(CALL_TIMEOUT)) {
                Ok(ReplyEvent::Heartbeat) => heartbeats += 1,
                Ok(ReplyEvent::Reply(_)) => break,
                Err(e) => panic!("{method}: no reply: {e}"),
            }
        }
        if method == "long_running_task" {
            assert!(
                heartbeats >= 2,
                "{method}: only {heartbeats} heartbeats in 200 ms"
            );
        }
        match replies.recv_timeout(Some(monitor * 4)) {
            Ok(ReplyEvent::Heartbeat) => panic!("{method}: a heartbeat after the reply"),
            Ok(other) => panic!("{method}: unexpected {other:?}"),
            Err(_) => {}
        }
    }
    group.stop();
}

// ===== notifications =====

#[derive(Clone, Debug, PartialEq)]
struct Received {
    priority: Priority,
    event_type: String,
    publisher_id: String,
    payload: String,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

fn recording_endpoint(priorities: &[Priority], inbox: Inbox) -> NotificationEndpoint {
    let mut endpoint = NotificationEndpoint::new();
    for &priority in priorities {
        let inbox = inbox.clone();
        endpoint = endpoint.on(priority, move |n: Notification<String>| {
            inbox.lock().unwrap().push(Received {
                priority: n.priority,
                event_type: n.event_type,
                publisher_id: n.publisher_id,
                payload: n.payload,
            });
            NotificationResult::Handled
        });
    }
    endpoint
}

fn start_listener(
    url: &str,
    topics: &[&str],
    endpoints: Vec<NotificationEndpoint>,
    options: ListenerOptions,
) -> ServerThread {
    let targets = topics.iter().map(|t| Target::new(*t)).collect();
    let server: Server = messaging_core::notify::listener(
        open(url),
        targets,
        endpoints,
        options,
        ThreadPoolExecutor::new(),
    )
    .build()
    .expect("a valid listener");
    ServerThread::spawn(server).expect("start the listener")
}

fn notify(notifier: &Notifier, priority: Priority, event_type: &str, payload: &str) {
    block_on(notifier.notify(&Context::new(), priority, event_type, &payload.to_owned()))
        .expect("notify");
}

fn count(inbox: &Inbox) -> usize {
    inbox.lock().unwrap().len()
}

/// `NotifyTestCase.test_simple`.
pub fn notify_simple(url: &str) {
    let topic = unique("notifications");
    let inbox = Inbox::default();
    let listener = start_listener(
        url,
        &[&topic],
        vec![recording_endpoint(&[Priority::Info], inbox.clone())],
        ListenerOptions::new(),
    );
    let notifier = Notifier::new(open(url), "abc").with_topics([topic.as_str()]);
    notify(&notifier, Priority::Info, "test", "Hello World!");
    eventually("the notification arrived", || count(&inbox) == 1);
    assert_eq!(
        inbox.lock().unwrap()[0],
        Received {
            priority: Priority::Info,
            event_type: "test".into(),
            publisher_id: "abc".into(),
            payload: "Hello World!".into(),
        }
    );
    listener.stop_and_wait().unwrap();
}

/// Notifications sent before any listener exists are stored and delivered later.
pub fn notifications_are_stored_before_a_listener_exists(url: &str) {
    let topic = unique("stored");
    let notifier = Notifier::new(open(url), "early").with_topics([topic.as_str()]);
    // Declares the topic's queue where a broker needs it: the first listener has not
    // existed yet, the notifier's send does it.
    notify(&notifier, Priority::Info, "early", "before");
    let inbox = Inbox::default();
    let listener = start_listener(
        url,
        &[&topic],
        vec![recording_endpoint(&[Priority::Info], inbox.clone())],
        ListenerOptions::new(),
    );
    eventually("the stored notification arrived", || count(&inbox) == 1);
    listener.stop_and_wait().unwrap();
}

/// `NotifyTestCase.test_multiple_topics`: one listener on two topics.
pub fn notify_multiple_topics(url: &str) {
    let (a, b) = (unique("a"), unique("b"));
    let inbox = Inbox::default();
    let listener = start_listener(
        url,
        &[&a, &b],
        vec![recording_endpoint(&[Priority::Info], inbox.clone())],
        ListenerOptions::new(),
    );
    notify(
        &Notifier::new(open(url), "pub_a").with_topics([a.as_str()]),
        Priority::Info,
        "test",
        "from a",
    );
    notify(
        &Notifier::new(open(url), "pub_b").with_topics([b.as_str()]),
        Priority::Info,
        "test",
        "from b",
    );
    eventually("both arrived", || count(&inbox) == 2);
    let mut got: Vec<(String, String)> = inbox
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.publisher_id.clone(), r.payload.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("pub_a".into(), "from a".into()),
            ("pub_b".into(), "from b".into())
        ]
    );
    listener.stop_and_wait().unwrap();
}

/// `NotifyTestCase.test_multiple_servers`: listeners on one topic compete.
pub fn notify_competing_listeners(url: &str) {
    let topic = unique("competing");
    let inboxes = [Inbox::default(), Inbox::default()];
    let listeners: Vec<ServerThread> = inboxes
        .iter()
        .map(|inbox| {
            start_listener(
                url,
                &[&topic],
                vec![recording_endpoint(&[Priority::Info], inbox.clone())],
                ListenerOptions::new(),
            )
        })
        .collect();
    let notifier = Notifier::new(open(url), "pub").with_topics([topic.as_str()]);
    for i in 0..8 {
        notify(&notifier, Priority::Info, "test", &i.to_string());
        std::thread::sleep(Duration::from_millis(5));
    }
    eventually("all 8 arrived once", || {
        count(&inboxes[0]) + count(&inboxes[1]) == 8
    });
    assert!(
        count(&inboxes[0]) > 0 && count(&inboxes[1]) > 0,
        "both listeners got some"
    );
    for listener in listeners {
        listener.stop_and_wait().unwrap();
    }
}

/// `NotifyTestCase.test_independent_topics`.
pub fn notify_independent_topics(url: &str) {
    let (one, two) = (unique("one"), unique("two"));
    let (inbox1, inbox2) = (Inbox::default(), Inbox::default());
    let l1 = start_listener(
        url,
        &[&one],
        vec![recording_endpoint(&[Priority::Info], inbox1.clone())],
        ListenerOptions::new(),
    );
    let l2 = start_listener(
        url,
        &[&two],
        vec![recording_endpoint(&[Priority::Info], inbox2.clone())],
        ListenerOptions::new(),
    );
    let n1 = Notifier::new(open(url), "pub").with_topics([one.as_str()]);
    let n2 = Notifier::new(open(url), "pub").with_topics([two.as_str()]);
    for i in 0..8 {
        notify(&n1, Priority::Info, "one", &i.to_string());
        notify(&n2, Priority::Info, "two", &i.to_string());
    }
    eventually("8 each", || count(&inbox1) == 8 && count(&inbox2) == 8);
    assert!(inbox1.lock().unwrap().iter().all(|r| r.event_type == "one"));
    assert!(inbox2.lock().unwrap().iter().all(|r| r.event_type == "two"));
    l1.stop_and_wait().unwrap();
    l2.stop_and_wait().unwrap();
}

/// `NotifyTestCase.test_all_categories`: every priority arrives as itself.
pub fn notify_all_priorities(url: &str) {
    let topic = unique("priorities");
    let inbox = Inbox::default();
    let listener = start_listener(
        url,
        &[&topic],
        vec![recording_endpoint(&Priority::ALL, inbox.clone())],
        ListenerOptions::new(),
    );
    let notifier = Notifier::new(open(url), "pub").with_topics([topic.as_str()]);
    for priority in Priority::ALL {
        notify(&notifier, priority, "test", priority.as_str());
    }
    eventually("all seven arrived", || count(&inbox) == 7);
    for received in inbox.lock().unwrap().iter() {
        assert_eq!(received.priority.as_str(), received.payload);
    }
    listener.stop_and_wait().unwrap();
}

/// `NotifyTestCase.test_simple_batch`: 205 notifications at batch size 100 arrive as
/// 100, 100, 5.
pub fn notify_batches(url: &str) {
    let topic = unique("batch");
    let notifier = Notifier::new(open(url), "pub").with_topics([topic.as_str()]);
    notify(&notifier, Priority::Info, "warm-up", "declare");
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let b = batches.clone();
    let endpoint = NotificationEndpoint::new().on_batch(
        Priority::Info,
        move |batch: Vec<Notification<String>>| {
            b.lock().unwrap().push(batch.len());
            NotificationResult::Handled
        },
    );
    let listener = start_listener(
        url,
        &[&topic],
        vec![endpoint],
        ListenerOptions::new().batch(100, Some(Duration::from_secs(1))),
    );
    eventually("the warm-up batch", || batches.lock().unwrap().len() == 1);
    batches.lock().unwrap().clear();
    // The listener is stopped while the batch is sent, so it finds them all waiting.
    listener.stop_and_wait().unwrap();
    for i in 0..205 {
        notify(&notifier, Priority::Info, "test", &i.to_string());
    }
    let listener = {
        let b = batches.clone();
        let endpoint = NotificationEndpoint::new().on_batch(
            Priority::Info,
            move |batch: Vec<Notification<String>>| {
                b.lock().unwrap().push(batch.len());
                NotificationResult::Handled
            },
        );
        start_listener(
            url,
            &[&topic],
            vec![endpoint],
            ListenerOptions::new().batch(100, Some(Duration::from_secs(1))),
        )
    };
    eventually("205 delivered", || {
        batches.lock().unwrap().iter().sum::<usize>() == 205
    });
    assert_eq!(*batches.lock().unwrap(), [100, 100, 5]);
    listener.stop_and_wait().unwrap();
}

/// Pools: each pool gets one copy; listeners inside a pool compete.
pub fn notify_pools_get_one_copy_each(url: &str) {
    let topic = unique("pools");
    let notifier = Notifier::new(open(url), "pub").with_topics([topic.as_str()]);
    let pool_a = unique("pool_a");
    let pool_b = unique("pool_b");
    let inboxes: Vec<Inbox> = (0..3).map(|_| Inbox::default()).collect();
    let listeners = vec![
        start_listener(
            url,
            &[&topic],
            vec![recording_endpoint(&[Priority::Info], inboxes[0].clone())],
            ListenerOptions::new().pool(pool_a.clone()),
        ),
        start_listener(
            url,
            &[&topic],
            vec![recording_endpoint(&[Priority::Info], inboxes[1].clone())],
            ListenerOptions::new().pool(pool_a),
        ),
        start_listener(
            url,
            &[&topic],
            vec![recording_endpoint(&[Priority::Info], inboxes[2].clone())],
            ListenerOptions::new().pool(pool_b),
        ),
    ];
    for i in 0..10 {
        notify(&notifier, Priority::Info, "test", &i.to_string());
    }
    eventually("pool a got 10 in all, pool b 10", || {
        count(&inboxes[0]) + count(&inboxes[1]) == 10 && count(&inboxes[2]) == 10
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        count(&inboxes[0]) + count(&inboxes[1]),
        10,
        "one copy per pool, not per listener"
    );
    for listener in listeners {
        listener.stop_and_wait().unwrap();
    }
}

/// A handler that asks for requeue gets the notification again.
pub fn notify_requeue_redelivers(url: &str) {
    let topic = unique("requeue");
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let a = attempts.clone();
    let endpoint =
        NotificationEndpoint::new().on(Priority::Info, move |n: Notification<String>| {
            let mut attempts = a.lock().unwrap();
            let seen = attempts.entry(n.payload).or_default();
            *seen += 1;
            if *seen == 1 {
                NotificationResult::Requeue
            } else {
                NotificationResult::Handled
            }
        });
    let listener = start_listener(
        url,
        &[&topic],
        vec![endpoint],
        ListenerOptions::new().allow_requeue(true),
    );
    let notifier = Notifier::new(open(url), "pub").with_topics([topic.as_str()]);
    notify(&notifier, Priority::Info, "test", "again");
    eventually("redelivered once", || {
        attempts.lock().unwrap().get("again") == Some(&2)
    });
    listener.stop_and_wait().unwrap();
}

/// Filters select by publisher, event type, context and payload.
pub fn notify_filters(url: &str) {
    let topic = unique("filters");
    let inbox = Inbox::default();
    let filter = NotificationFilter::new()
        .event_type(r"compute\.instance\.")
        .and_then(|f| f.publisher_id("compute"))
        .expect("valid patterns");
    let endpoint = recording_endpoint(&[Priority::Info], inbox.clone()).with_filter(filter);
    let listener = start_listener(url, &[&topic], vec![endpoint], ListenerOptions::new());
    let compute = Notifier::new(open(url), "compute.host1").with_topics([topic.as_str()]);
    let network = Notifier::new(open(url), "network.host1").with_topics([topic.as_str()]);
    notify(
        &compute,
        Priority::Info,
        "compute.instance.create.end",
        "kept",
    );
    notify(
        &compute,
        Priority::Info,
        "compute.volume.attach",
        "wrong event",
    );
    notify(
        &network,
        Priority::Info,
        "compute.instance.create.end",
        "wrong publisher",
    );
    notify(
        &compute,
        Priority::Info,
        "compute.instance.delete.end",
        "kept too",
    );
    eventually("two kept", || count(&inbox) == 2);
    std::thread::sleep(Duration::from_millis(100));
    let mut payloads: Vec<String> = inbox
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.payload.clone())
        .collect();
    payloads.sort();
    assert_eq!(payloads, ["kept", "kept too"]);
    listener.stop_and_wait().unwrap();
}

// ===== running the suite =====

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every scenario, by name.
        pub const SCENARIOS: &[(&str, fn(&str))] = &[$((stringify!($name), $name)),*];

        /// Generates one `#[test]` per functional scenario, run against the transport URL
        /// the expression gives (`Option<String>`; `None` skips each test with a message
        /// saying so). Invoke it inside a module.
        #[macro_export]
        macro_rules! functional_suite {
            ($url:expr) => {
                $(
                    #[test]
                    fn $name() {
                        match $url {
                            ::std::option::Option::Some(url) => {
                                $crate::functional::run_one(stringify!($name), &url)
                            }
                            ::std::option::Option::None => {
                                eprintln!("skipped: {}: no transport URL configured", stringify!($name))
                            }
                        }
                    }
                )*
            };
        }
    };
}

scenarios!(
    call_specific_server,
    calls_to_a_topic_spread_over_the_group,
    exchanges_are_isolated,
    timeout_on_a_missing_topic,
    exceptions_reach_the_caller_typed,
    a_slow_call_does_not_block_other_calls,
    requests_whose_caller_gave_up_are_not_handled,
    a_result_too_large_for_the_transport_is_a_remote_error,
    endpoint_version_and_namespace,
    no_such_method_and_unsupported_version_are_distinct,
    handler_panic_is_a_remote_error_and_the_server_keeps_serving,
    context_and_trace_id_reach_the_handler,
    context_can_be_extended_for_nested_calls,
    dynamic_json_arguments,
    every_executor_serves_calls,
    cast_to_a_specific_server,
    casts_to_a_topic_spread_over_the_group,
    fanout_casts_reach_every_server,
    call_monitor_keeps_a_long_call_alive,
    a_silent_server_fails_a_monitored_call_fast,
    heartbeats_end_with_the_call,
    notify_simple,
    notifications_are_stored_before_a_listener_exists,
    notify_multiple_topics,
    notify_competing_listeners,
    notify_independent_topics,
    notify_all_priorities,
    notify_batches,
    notify_pools_get_one_copy_each,
    notify_requeue_redelivers,
    notify_filters,
);

/// Runs one scenario by name against `url`, under the watchdog.
///
/// # Panics
///
/// If the scenario fails, hangs, or does not exist.
pub fn run_one(name: &str, url: &str) {
    let (_, scenario) = SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no functional scenario named {name}"));
    let (scenario, url) = (*scenario, url.to_owned());
    within(SCENARIO_LIMIT, name, move || scenario(&url));
}

/// Runs every scenario against `url`, in turn.
///
/// # Panics
///
/// At the first scenario that fails or hangs, naming it.
pub fn run_all(url: &str) {
    for (name, _) in SCENARIOS {
        run_one(name, url);
    }
}
