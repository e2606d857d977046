//! The RPC details Python peers rely on, end to end over every transport (Rust on both
//! sides): remote errors keep their `args` and `kwargs`, a handler reads the caller's
//! call-monitor timeout from its context (`client_timeout`), `rpc_ping_enabled` answers
//! [`RpcClient::ping`], and an access policy refuses methods as `NoSuchMethod`.
//!
//! The in-memory transport always runs (bincode and JSON); NATS and RabbitMQ run when
//! `MESSAGING_TEST_NATS_URL` / `MESSAGING_TEST_RABBIT_URL` are set (`.ci/run` sets
//! them), otherwise they say they were skipped. RabbitMQ queues expire after 10
//! minutes unused (`queue_ttl`).

use std::time::Duration;

use messaging_core::rpc::{
    CLIENT_TIMEOUT, Endpoint, HandlerError, NO_SUCH_METHOD, NoArgs, PING_METHOD, RpcClient,
    RpcDispatcher,
};
use messaging_core::{Context, RemoteError, Server, Subscription, Target, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{ServerThread, with_option};
use serde_json::json;

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &ids::hex_id()[..10])
}

/// The error `raise_quota` raises.
fn quota() -> RemoteError {
    RemoteError::new(
        "QuotaExceeded",
        "nova.exception",
        "Quota exceeded for cores",
    )
    .with_args([json!("Quota exceeded for cores"), json!(3)])
    .with_kwarg("overs", json!(["cores"]))
    .with_kwarg("allowed", json!({"cores": 4, "ram": null}))
    .with_kwarg("ratio", 0.5)
}

fn endpoint() -> Endpoint {
    Endpoint::new()
        .method(
            "raise_quota",
            |_ctx, _: NoArgs| -> Result<(), HandlerError> {
                let q = quota();
                Err(HandlerError::new(q.class, q.message)
                    .with_module(q.module)
                    .with_args(q.args)
                    .with_kwargs(q.kwargs))
            },
        )
        .method("client_timeout", |ctx: Context, _: NoArgs| {
            let millis = ctx.client_timeout().map(|t| t.as_millis() as u64);
            let raw = ctx.get(CLIENT_TIMEOUT).map(|v| v.to_string());
            Ok::<_, HandlerError>((millis, raw))
        })
        .method("shown", |_ctx, _: NoArgs| Ok::<_, HandlerError>(1))
        .method("hidden", |_ctx, _: NoArgs| Ok::<_, HandlerError>(2))
        .expose("raise_quota")
        .expose("client_timeout")
        .expose("shown")
}

/// A server on `url` with a policy of exposed methods plus oslo's ping (a closure
/// policy, since the explicit one refuses ping), and a client for it.
fn serve(url: &str) -> (ServerThread, RpcClient) {
    let transport = messaging_transports::open(url).unwrap();
    let topic = unique("rpc_parity");
    let dispatcher = RpcDispatcher::builder(vec![endpoint()])
        .access_policy(|e: &Endpoint, m: &str| e.is_exposed(m) || m == PING_METHOD)
        .rpc_ping_enabled(true)
        .build()
        .unwrap();
    let server = Server::builder(
        transport.clone(),
        Subscription::Rpc(Target::new(topic.clone()).with_server("s1")),
        dispatcher,
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    let running = ServerThread::spawn(server).unwrap();
    let client =
        RpcClient::new(transport, Target::new(topic)).with_timeout(Duration::from_secs(20));
    (running, client)
}

fn parity_over(url: &str) {
    let (running, client) = serve(url);
    let ctx = Context::new();

    let err = client
        .call_blocking::<_, ()>(&ctx, "raise_quota", &NoArgs {})
        .unwrap_err();
    assert_eq!(err.remote(), Some(&quota()), "{url}: {err:?}");

    type Seen = (Option<u64>, Option<String>);
    let seen: Seen = client
        .clone()
        .with_call_monitor_timeout(Duration::from_millis(2500))
        .call_blocking(&ctx, "client_timeout", &NoArgs {})
        .unwrap();
    assert_eq!(seen, (Some(2500), Some("2.5".to_owned())), "{url}");
    let seen: Seen = client
        .clone()
        .with_call_monitor_timeout(Duration::from_secs(7))
        .call_blocking(&ctx, "client_timeout", &NoArgs {})
        .unwrap();
    assert_eq!(seen, (Some(7000), Some("7".to_owned())), "{url}");
    let seen: Seen = client
        .call_blocking(&ctx, "client_timeout", &NoArgs {})
        .unwrap();
    assert_eq!(seen, (None, Some("null".to_owned())), "{url}");

    assert_eq!(client.ping_blocking(&ctx).unwrap(), "pong", "{url}");
    let namespaced = client.clone().with_namespace("other").with_version("3.0");
    assert_eq!(
        messaging_core::dispatch::block_on(namespaced.ping(&ctx)).unwrap(),
        "pong",
        "{url}: ping ignores the client's namespace and version"
    );

    assert_eq!(
        client
            .call_blocking::<_, i64>(&ctx, "shown", &NoArgs {})
            .unwrap(),
        1
    );
    let refused = client
        .call_blocking::<_, i64>(&ctx, "hidden", &NoArgs {})
        .unwrap_err();
    assert_eq!(
        refused.remote().map(|r| r.class.as_str()),
        Some(NO_SUCH_METHOD),
        "{url}: {refused}"
    );
    running.stop_and_wait().unwrap();
}

#[test]
fn parity_over_memory_with_bincode() {
    parity_over("memory:///rpc_parity_bincode");
}

#[test]
fn parity_over_memory_with_json() {
    parity_over("memory:///rpc_parity_json?codec=json");
}

#[test]
fn parity_over_nats() {
    let Ok(url) = std::env::var("MESSAGING_TEST_NATS_URL") else {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return;
    };
    parity_over(&url);
    parity_over(&with_option(&url, "codec", "json"));
}

#[test]
fn parity_over_rabbit() {
    let Ok(url) = std::env::var("MESSAGING_TEST_RABBIT_URL") else {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return;
    };
    parity_over(&with_option(&url, "queue_ttl", "600"));
}

#[test]
fn a_server_without_ping_answers_no_such_method() {
    let transport = messaging_transports::open("memory:///rpc_parity_no_ping").unwrap();
    let server = messaging_core::rpc::server(
        transport.clone(),
        Target::new("no_ping").with_server("s1"),
        vec![endpoint()],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    let running = ServerThread::spawn(server).unwrap();
    let client = RpcClient::new(transport, Target::new("no_ping"));
    let err = client.ping_blocking(&Context::new()).unwrap_err();
    assert_eq!(err.remote().map(|r| r.class.as_str()), Some(NO_SUCH_METHOD));
    running.stop_and_wait().unwrap();
}
