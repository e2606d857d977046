//! RPC against hostile peers: method names an access policy must refuse (`_`, empty,
//! unicode, control characters, `oslo_rpc_server_ping` with ping off), ping with junk
//! keyword arguments, and, on RabbitMQ, a peer speaking oslo's wire by hand: replies
//! whose failure JSON has enormous or deeply nested `args`/`kwargs`, wrong types or
//! is no JSON at all, and requests whose `_timeout` is negative, zero, tiny, 1e308, a
//! string or not JSON. Every call ends (an error or a result), nothing panics, the
//! server keeps serving. Tests that measure print what they measured to stderr.
//!
//! The memory tests always run; RabbitMQ runs with `MESSAGING_TEST_RABBIT_URL`.

mod raw_amqp;

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use messaging_core::rpc::{
    Endpoint, ExplicitRpcAccessPolicy, HandlerError, NO_SUCH_METHOD, NoArgs, PING_METHOD,
    RpcClient, RpcDispatcher, RpcError,
};
use messaging_core::{Context, Server, Subscription, Target, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{ServerThread, with_option, within};
use raw_amqp::{Tap, amqp_uri};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &ids::hex_id()[..10])
}

/// `get`, and (for policies that can dispatch it) `_private`, exposed.
fn endpoint(private: bool) -> Endpoint {
    let endpoint = Endpoint::new().method("get", |_ctx, _: NoArgs| Ok::<_, HandlerError>(1));
    match private {
        true => endpoint
            .method("_private", |_ctx, _: NoArgs| Ok::<_, HandlerError>(2))
            .expose("_private"),
        false => endpoint,
    }
}

/// A server with `dispatcher` on `url`, and a client for it.
fn serve(url: &str, dispatcher: RpcDispatcher) -> (ServerThread, RpcClient) {
    let transport = messaging_transports::open(url).unwrap();
    let topic = unique("hostile_rpc");
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
        RpcClient::new(transport, Target::new(topic)).with_timeout(Duration::from_secs(10));
    (running, client)
}

fn class(error: &RpcError) -> Option<&str> {
    error.remote().map(|r| r.class.as_str())
}

// ===== method names and ping, in memory =====

#[test]
fn odd_method_names_are_no_such_method_under_every_policy() {
    within(LIMIT, "odd method names", || {
        let long = "m".repeat(100_000);
        let names = [
            "",
            "_",
            "__",
            "_private",
            "ünïcödé",
            "get\0",
            "get\n",
            "\u{202e}teg",
            "GET",
            " get",
            PING_METHOD,
            long.as_str(),
        ];
        for (policy, dispatcher) in [
            (
                "default",
                RpcDispatcher::new(vec![endpoint(false)]).unwrap(),
            ),
            (
                "explicit",
                RpcDispatcher::builder(vec![endpoint(true)])
                    .access_policy(ExplicitRpcAccessPolicy)
                    .build()
                    .unwrap(),
            ),
        ] {
            let (running, client) = serve("memory://?codec=json", dispatcher);
            let ctx = Context::new();
            for name in names {
                if policy == "explicit" && name == "_private" {
                    continue;
                }
                let result = client.call_blocking::<_, Value>(&ctx, name, &NoArgs {});
                match result {
                    Err(error) => assert_eq!(
                        class(&error),
                        Some(NO_SUCH_METHOD),
                        "{policy}: {:?}: {error}",
                        name.chars().take(20).collect::<String>()
                    ),
                    Ok(v) => panic!("{policy}: {name:?} answered {v}"),
                }
            }
            // Still serving.
            let expected = if policy == "explicit" {
                "_private"
            } else {
                "get"
            };
            assert!(
                client
                    .call_blocking::<_, i64>(&ctx, expected, &NoArgs {})
                    .is_ok()
            );
            running.stop_and_wait().unwrap();
        }
    });
}

#[test]
fn ping_takes_any_keyword_arguments_and_is_refused_when_off() {
    within(LIMIT, "ping", || {
        let on = RpcDispatcher::builder(vec![endpoint(false)])
            .rpc_ping_enabled(true)
            .build()
            .unwrap();
        let (running, client) = serve("memory://?codec=json", on);
        let ctx = Context::new();
        let deep = (0..100).fold(json!(1), |v, _| json!([v]));
        for junk in [
            json!({}),
            json!({"x": 1, "y": [1, 2, {"z": null}], "deep": deep}),
            json!({"": "empty name", "ü": "x", "_timeout": "soon"}),
        ] {
            let answer: String = client.call_blocking(&ctx, PING_METHOD, &junk).unwrap();
            assert_eq!(answer, "pong", "{junk}");
        }
        // Not keyword arguments at all: a list, a number, null.
        for junk in [json!([1, 2]), json!(7), json!(null), json!("s")] {
            match client.call_blocking::<_, Value>(&ctx, PING_METHOD, &junk) {
                Ok(answer) => assert_eq!(answer, json!("pong"), "{junk}"),
                Err(error) => assert!(error.remote().is_some(), "{junk}: {error}"),
            }
        }
        running.stop_and_wait().unwrap();
        let (running, client) = serve(
            "memory://?codec=json",
            RpcDispatcher::new(vec![endpoint(false)]).unwrap(),
        );
        let error = client.ping_blocking(&ctx).unwrap_err();
        assert_eq!(class(&error), Some(NO_SUCH_METHOD), "{error}");
        running.stop_and_wait().unwrap();
    });
}

// ===== a hostile peer on RabbitMQ =====

fn rabbit_url() -> Option<String> {
    let Ok(url) = std::env::var("MESSAGING_TEST_RABBIT_URL") else {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return None;
    };
    Some(with_option(&url, "queue_ttl", "600"))
}

/// A plain AMQP connection of the test's own: publishes as a hostile peer would.
struct Peer {
    runtime: tokio::runtime::Runtime,
    _connection: Connection,
    channel: lapin::Channel,
}

impl Peer {
    fn connect(url: &str) -> Peer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (connection, channel) = runtime.block_on(async {
            let connection = Connection::connect(&amqp_uri(url), ConnectionProperties::default())
                .await
                .unwrap();
            let channel = connection.create_channel().await.unwrap();
            (connection, channel)
        });
        Peer {
            runtime,
            _connection: connection,
            channel,
        }
    }

    /// Publishes `body` to `exchange` with `key`.
    fn publish(&self, exchange: &str, key: &str, body: &[u8]) {
        self.runtime.block_on(async {
            self.channel
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }

    /// The next message of `queue`, waiting up to `limit`.
    fn get(&self, queue: &str, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let got = self.runtime.block_on(async {
                self.channel
                    .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
            });
            if let Some(message) = got {
                return Some(message.delivery.data.clone());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// oslo's envelope around `message`.
fn envelope(message: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"oslo.version": "2.0", "oslo.message": message.to_string()}))
        .unwrap()
}

/// The inner message of an envelope.
fn unwrap_envelope(body: &[u8]) -> Value {
    let outer: Value = serde_json::from_slice(body).unwrap();
    serde_json::from_str(outer["oslo.message"].as_str().unwrap()).unwrap()
}

/// The failure strings a hostile server answers with, and what each is.
fn hostile_failures() -> Vec<(&'static str, String)> {
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let failure = |args: &str, kwargs: &str| {
        format!(
            r#"{{"class": "E", "module": "m", "message": "boom", "tb": [], "args": {args}, "kwargs": {kwargs}}}"#
        )
    };
    let big_list = format!("[{}]", vec!["1234567890"; 400_000].join(","));
    let big_map = format!(
        "{{{}}}",
        (0..100_000)
            .map(|i| format!(r#""k{i}": "{}""#, "v".repeat(30)))
            .collect::<Vec<_>>()
            .join(",")
    );
    vec![
        ("4 MB of args", failure(&big_list, "{}")),
        ("4 MB of kwargs", failure("[]", &big_map)),
        ("args nested 120 deep", failure(&nested(120), "{}")),
        ("args nested 5000 deep", failure(&nested(5000), "{}")),
        (
            "kwargs nested 5000 deep",
            failure("[]", &format!(r#"{{"k": {}}}"#, nested(5000))),
        ),
        ("args an object", failure(r#"{"a": 1}"#, "{}")),
        ("kwargs a list", failure("[]", "[1, 2]")),
        ("args a string", failure(r#""x""#, r#""y""#)),
        ("args null", failure("null", "null")),
        (
            "numbers as strings",
            r#"{"class": 7, "module": ["m"], "message": {"m": 1}, "tb": "x", "args": "1", "kwargs": "2"}"#
                .to_owned(),
        ),
        ("no JSON", "Traceback (most recent call last):\n\x1b[31m".to_owned()),
        ("empty", String::new()),
        ("a bare number", "1e999".to_owned()),
        ("4 MB of message", failure("[]", "{}").replace("boom", &"b".repeat(4 << 20))),
    ]
}

#[test]
fn hostile_failure_replies_end_the_call_with_a_remote_error() {
    let Some(url) = rabbit_url() else { return };
    within(LIMIT * 3, "hostile failures", move || {
        let topic = unique("hostile_failure");
        // The "server": a plain queue bound where the call goes.
        let tap = Tap::bind(
            &url,
            &unique("hostile_tap"),
            "openstack",
            &[format!("{topic}.s1")],
        );
        let peer = Peer::connect(&url);
        let client = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(topic.clone()).with_server("s1"),
        )
        .with_timeout(Duration::from_secs(20));
        for (what, failure) in hostile_failures() {
            let call = {
                let client = client.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let result =
                        client.call_blocking::<_, Value>(&Context::new(), "get", &NoArgs {});
                    (result, started.elapsed())
                })
            };
            let request = tap.take(1, Duration::from_secs(10));
            assert_eq!(request.len(), 1, "{what}: no request");
            let request = unwrap_envelope(&request[0]);
            let reply = json!({
                "result": null,
                "failure": failure,
                "ending": true,
                "_msg_id": request["_msg_id"],
                "_unique_id": ids::hex_id(),
            });
            peer.publish("", request["_reply_q"].as_str().unwrap(), &envelope(&reply));
            let (result, took) = call.join().expect("the caller does not panic");
            let error = result.unwrap_err();
            let remote = error
                .remote()
                .unwrap_or_else(|| panic!("{what}: not a remote error: {error}"));
            let shown = error.to_string();
            eprintln!(
                "{what}: {took:?}, class {:?}, {} args, {} kwargs, message {} bytes, \
                 Display {} bytes",
                remote.class,
                remote.args.len(),
                remote.kwargs.len(),
                remote.message.len(),
                shown.len()
            );
            assert!(took < Duration::from_secs(15), "{what}: {took:?}");
        }
    });
}

#[test]
fn hostile_timeouts_in_requests_never_stop_the_server() {
    let Some(url) = rabbit_url() else { return };
    within(LIMIT, "hostile _timeout", move || {
        #[derive(serde::Deserialize)]
        struct Nap {
            ms: u64,
        }
        let slow = Endpoint::new().method("nap", |_ctx, nap: Nap| {
            std::thread::sleep(Duration::from_millis(nap.ms));
            Ok::<_, HandlerError>(nap.ms)
        });
        let (running, client) = serve(&url, RpcDispatcher::new(vec![slow]).unwrap());
        let peer = Peer::connect(&url);
        let reply_q = unique("hostile_reply");
        // A reply queue of the peer's own (auto-deleted with its connection).
        peer.runtime.block_on(async {
            peer.channel
                .queue_declare(
                    reply_q.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        auto_delete: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap();
        });
        let topic = client.target().topic.clone().unwrap();
        let cases: &[(&str, &str)] = &[
            ("negative", "-1"),
            ("zero", "0"),
            ("tiny", "1e-9"),
            ("huge", "1e308"),
            ("a year and more", "40000000"),
            ("a string", r#""soon""#),
            ("a boolean", "true"),
            ("a list", "[1]"),
        ];
        let mut answered = 0;
        for (what, timeout) in cases {
            let msg_id = ids::hex_id();
            // The `_timeout` spliced in as written (`NaN` is not JSON, see below).
            let message = format!(
                r#"{{"method": "nap", "args": {{"ms": 300}}, "namespace": null, "version": "1.0", "_msg_id": "{msg_id}", "_reply_q": "{reply_q}", "_timeout": {timeout}, "_unique_id": "{}"}}"#,
                ids::hex_id()
            );
            let body = serde_json::to_vec(&json!({"oslo.version": "2.0", "oslo.message": message}))
                .unwrap();
            peer.publish("openstack", &format!("{topic}.s1"), &body);
            // Heartbeats (if any) then the reply, or nothing for a refused request.
            let mut heartbeats = 0;
            let started = Instant::now();
            while let Some(body) = peer.get(&reply_q, Duration::from_secs(3)) {
                let reply = unwrap_envelope(&body);
                if reply["ending"] == json!(true) {
                    assert_eq!(reply["result"], json!(300), "{what}: {reply}");
                    answered += 1;
                    break;
                }
                heartbeats += 1;
            }
            eprintln!(
                "_timeout {what} ({timeout}): {heartbeats} heartbeats, {:?}",
                started.elapsed()
            );
            assert!(
                heartbeats < 100,
                "{what}: {heartbeats} heartbeats in 300 ms"
            );
        }
        // JSON oslo's Python would write for NaN and infinity: not JSON, refused.
        for bad in ["NaN", "Infinity", "-Infinity"] {
            let message = format!(
                r#"{{"method": "nap", "args": {{"ms": 1}}, "_msg_id": "{}", "_reply_q": "{reply_q}", "_timeout": {bad}}}"#,
                ids::hex_id()
            );
            let body = serde_json::to_vec(&json!({"oslo.version": "2.0", "oslo.message": message}))
                .unwrap();
            peer.publish("openstack", &format!("{topic}.s1"), &body);
        }
        eprintln!("answered {answered} of {}", cases.len());
        // The numbers are served (no heartbeats: too short, or too long to come);
        // `_timeout` of another type makes the request malformed: dropped.
        assert_eq!(answered, 5);
        // Still serving.
        assert_eq!(
            client
                .call_blocking::<_, u64>(&Context::new(), "nap", &json!({"ms": 1}))
                .unwrap(),
            1
        );
        running.stop_and_wait().unwrap();
    });
}

// ===== a hostile peer on NATS =====

/// A frame of our NATS format: the length of `header`, `header`, no payload.
fn nats_frame(header: &str) -> Vec<u8> {
    let mut body = (header.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(header.as_bytes());
    body
}

#[test]
fn hostile_error_frames_on_nats_end_the_call_with_a_remote_error() {
    let Ok(url) = std::env::var("MESSAGING_TEST_NATS_URL") else {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return;
    };
    within(LIMIT * 3, "hostile NATS replies", move || {
        use futures_lite::StreamExt;
        let prefix = unique("hostile");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let address = url.split('?').next().unwrap().trim_start_matches("nats://");
        let (peer, mut requests) = runtime.block_on(async {
            let peer = async_nats::connect(address).await.unwrap();
            let requests = peer.subscribe(format!("{prefix}.>")).await.unwrap();
            peer.flush().await.unwrap();
            (peer, requests)
        });
        let topic = unique("hostile_nats");
        let client = RpcClient::new(
            messaging_transports::open(&format!("{url}?subject_prefix={prefix}")).unwrap(),
            Target::new(topic).with_server("s1"),
        )
        .with_timeout(Duration::from_secs(5));
        let nested = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        let error = |args: &str, kwargs: &str| {
            format!(
                r#"{{"kind":"reply","codec":"json","outcome":"error","error":{{"class":"E","module":"m","message":"boom","traceback":[],"args":{args},"kwargs":{kwargs}}}}}"#
            )
        };
        let cases = [
            ("args an object", error(r#"{"a":1}"#, "{}")),
            ("kwargs a list", error("[]", "[1,2]")),
            ("args a string", error(r#""x""#, r#""y""#)),
            ("args null", error("null", "null")),
            ("args nested 5000 deep", error(&nested, "{}")),
            (
                "class a number",
                r#"{"kind":"reply","codec":"json","outcome":"error","error":{"class":7}}"#
                    .to_owned(),
            ),
            (
                "no error",
                r#"{"kind":"reply","codec":"json","outcome":"error"}"#.to_owned(),
            ),
        ];
        let mut timed_out = Vec::new();
        for (what, header) in &cases {
            let call = {
                let client = client.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let result =
                        client.call_blocking::<_, Value>(&Context::new(), "get", &NoArgs {});
                    (result, started.elapsed())
                })
            };
            let request = runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), requests.next()).await
                })
                .expect("a request")
                .expect("the subscription lives");
            let reply = request.reply.expect("a call has a reply subject");
            runtime.block_on(async {
                peer.publish(reply, nats_frame(header).into())
                    .await
                    .unwrap();
                peer.flush().await.unwrap();
            });
            let (result, took) = call.join().expect("the caller does not panic");
            let error = result.unwrap_err();
            eprintln!(
                "{what}: {took:?}: {}",
                error.to_string().chars().take(120).collect::<String>()
            );
            if error.remote().is_none() {
                timed_out.push(*what);
            }
        }
        assert!(
            timed_out.is_empty(),
            "these waited out the timeout: {timed_out:?}"
        );
    });
}
