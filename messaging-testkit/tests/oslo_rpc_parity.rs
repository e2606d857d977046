//! RPC details Python peers rely on, against the real Python oslo.messaging (18.3.1,
//! `interop/oslo_peer.py`) on RabbitMQ. Each test asks a Python server and a Rust
//! server the same questions from the same Python client and requires the same
//! answers:
//!
//! * access policies (default, explicit, legacy) and `rpc_ping_enabled`: which methods
//!   run, and a refused method is `NoSuchMethod`;
//! * the context a handler receives carries `client_timeout` (oslo's `_timeout`);
//! * remote errors keep their `args` and `kwargs` both ways: a Python client rebuilds
//!   a Rust handler's error as `klass(*args, **kwargs)` when its module is allowed, a
//!   Rust client sees a Python exception's arguments, and a Rust server relaying a
//!   Python error passes it on intact.
//!
//! Runs when `MESSAGING_TEST_RABBIT_URL` and `MESSAGING_TEST_OSLO_PYTHON` (the venv's
//! python, from `interop/setup-venv.sh`) are set; `.ci/run` sets both.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use messaging_core::rpc::{
    DefaultRpcAccessPolicy, Endpoint, ExplicitRpcAccessPolicy, HandlerError, LegacyRpcAccessPolicy,
    NoArgs, RpcClient, RpcDispatcher, RpcError,
};
use messaging_core::{Context, Server, Subscription, Target, Transport, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::ServerThread;
use serde::Deserialize;
use serde_json::{Map, Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/oslo_peer.py");
const LIMIT: Duration = Duration::from_secs(90);
const EXMODS: &str = "oslo_peer_exceptions";

// ===== the Python peer =====

struct Peer {
    url: String,
    python: String,
}

fn peer() -> Option<Peer> {
    match (
        std::env::var("MESSAGING_TEST_RABBIT_URL"),
        std::env::var("MESSAGING_TEST_OSLO_PYTHON"),
    ) {
        (Ok(url), Ok(python)) => Some(Peer { url, python }),
        _ => {
            eprintln!(
                "skipped: MESSAGING_TEST_RABBIT_URL and MESSAGING_TEST_OSLO_PYTHON are not both set"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &ids::hex_id()[..10])
}

/// Output lines of a child process, read on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

impl Peer {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.python);
        command
            .arg(SCRIPT)
            .args(&args[..1])
            .args(["--url", &self.url])
            .args(&args[1..])
            .args(["--log-level", "CRITICAL"])
            .env("PYTHONWARNINGS", "ignore")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    /// Runs `calls` on `topic` and returns one JSON value per call.
    fn calls(&self, topic: &str, extra: &[&str], calls: &[Value]) -> Vec<Value> {
        let batch = Value::from(calls.to_vec()).to_string();
        let mut args = vec!["calls", "--topic", topic, "--timeout", "30"];
        args.extend_from_slice(extra);
        args.push(&batch);
        let mut child = self.command(&args).spawn().expect("python runs");
        let lines = lines_of(&mut child);
        let out: Vec<Value> = (0..calls.len())
            .map(|i| {
                let line = lines.recv_timeout(LIMIT).unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("oslo_peer calls printed {i} of {} lines", calls.len())
                });
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
            })
            .collect();
        let _ = child.wait();
        out
    }

    /// Spawns Python RPC servers, each `server --topic T --server py1 <extra>`, and
    /// waits until all are ready.
    fn servers(&self, specs: &[(&str, &[&str])]) -> Background {
        let mut background = Background {
            children: Vec::new(),
        };
        let mut ready = Vec::new();
        for (topic, extra) in specs {
            let mut args = vec!["server", "--topic", topic, "--server", "py1"];
            args.extend_from_slice(extra);
            let mut child = self.command(&args).spawn().expect("python runs");
            ready.push(lines_of(&mut child));
            background.children.push(child);
        }
        for lines in ready {
            let line = lines.recv_timeout(LIMIT).expect("the peer got ready");
            assert_eq!(line, "READY");
        }
        background
    }

    fn delete_queues(&self, topics: &[String]) {
        let mut queues = Vec::new();
        for topic in topics {
            queues.extend([
                topic.clone(),
                format!("{topic}.py1"),
                format!("{topic}.rs1"),
            ]);
        }
        let mut args = vec!["delete-queues"];
        args.extend(queues.iter().map(String::as_str));
        let mut child = self.command(&args).spawn().expect("python runs");
        let _ = lines_of(&mut child).recv_timeout(LIMIT);
        let _ = child.wait();
    }
}

/// Long-running peers, stopped with SIGTERM (then killed) when dropped: all signalled
/// first, then all waited for, since each takes seconds to stop.
struct Background {
    children: Vec<Child>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for child in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ===== the Rust mirror of the peer's server =====

#[derive(Deserialize)]
struct Raise {
    module: String,
    cls: String,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
}

#[derive(Deserialize)]
struct Relay {
    topic: String,
    #[serde(flatten)]
    raise: Value,
}

#[derive(Deserialize)]
struct Echo {
    value: Value,
}

fn echo(_ctx: Context, args: Echo) -> Result<Value, HandlerError> {
    Ok(args.value)
}

/// The peer server's endpoints, in Rust: `whoami` in the null namespace; in the
/// `parity` namespace `raise_error` (an error naming any class, with the given args
/// and kwargs), `relay` (calls a Python server's `raise_error` and passes its error
/// on), and the echo methods for the access policies, exposed as the peer exposes them.
/// The default policy refuses private names at build, so they are left out under it
/// (a call to one is then `NoSuchMethod`, as it is in oslo).
fn rust_server(
    transport: Arc<dyn Transport>,
    topic: &str,
    policy: &str,
    ping: bool,
) -> ServerThread {
    let relay_transport = transport.clone();
    let whoami = Endpoint::new().method("whoami", |ctx: Context, _: NoArgs| {
        Ok::<_, HandlerError>(ctx)
    });
    let mut parity = Endpoint::new()
        .with_namespace("parity")
        .method(
            "raise_error",
            |_ctx, r: Raise| -> Result<(), HandlerError> {
                let message = format!("{}: {:?} {:?}", r.cls, r.args, r.kwargs);
                Err(HandlerError::new(r.cls, message)
                    .with_module(r.module)
                    .with_args(r.args)
                    .with_kwargs(r.kwargs)
                    .expected())
            },
        )
        .method(
            "relay",
            move |ctx, r: Relay| -> Result<Value, HandlerError> {
                let client = RpcClient::new(relay_transport.clone(), Target::new(r.topic))
                    .with_namespace("parity")
                    .with_timeout(Duration::from_secs(20));
                match client.call_blocking::<_, Value>(&ctx, "raise_error", &r.raise) {
                    Ok(value) => Ok(value),
                    Err(RpcError::Remote(remote)) => Err(HandlerError::from_remote(remote)),
                    Err(other) => Err(HandlerError::new("RelayFailed", other.to_string())),
                }
            },
        )
        .method("exposed_echo", echo)
        .method("echo", echo)
        .expose("raise_error")
        .expose("relay")
        .expose("exposed_echo");
    if policy != "default" {
        parity = parity
            .method("_private_echo", echo)
            .method("_exposed_private_echo", echo)
            .expose("_exposed_private_echo");
    }
    let builder = RpcDispatcher::builder(vec![whoami, parity]).rpc_ping_enabled(ping);
    let builder = match policy {
        "default" => builder.access_policy(DefaultRpcAccessPolicy),
        "explicit" => builder.access_policy(ExplicitRpcAccessPolicy),
        "legacy" => builder.access_policy(LegacyRpcAccessPolicy),
        other => panic!("unknown policy {other}"),
    };
    let server = Server::builder(
        transport,
        Subscription::Rpc(Target::new(topic).with_server("rs1")),
        builder.build().unwrap(),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

/// What a Python client reported, without what legitimately differs between servers
/// (messages and tracebacks): the result, or the error's type (and the remote type
/// of an `oslo_messaging.RemoteError`).
fn outcome(reported: &Value) -> Value {
    match reported.get("error") {
        None => reported.clone(),
        Some(error) => json!({"type": error["type"], "exc_type": error["exc_type"]}),
    }
}

/// A rebuilt exception as a Python client reported it: type, classes, args, kwargs.
fn rebuilt(reported: &Value) -> Value {
    let error = &reported["error"];
    json!({
        "type": error["type"],
        "module": error["module"],
        "classes": error["classes"],
        "args": error["args"],
        "kwargs": error["kwargs"],
        "exc_type": error["exc_type"],
    })
}

// ===== tests =====

#[test]
fn access_policies_and_ping_answer_python_clients_as_oslo_does() {
    let Some(py) = peer() else { return };
    let transport = messaging_transports::open(&py.url).unwrap();
    let cases = [
        ("default", true),
        ("explicit", true),
        ("legacy", true),
        ("default", false),
    ];
    let topics: Vec<(String, String)> = cases
        .iter()
        .map(|_| (unique("parity_py_policy"), unique("parity_rs_policy")))
        .collect();
    let flags: Vec<Vec<&str>> = cases
        .iter()
        .map(|(policy, ping)| {
            let mut flags = vec!["--access-policy", policy];
            if *ping {
                flags.push("--rpc-ping-enabled");
            }
            flags
        })
        .collect();
    let specs: Vec<(&str, &[&str])> = topics
        .iter()
        .zip(&flags)
        .map(|((py_topic, _), flags)| (py_topic.as_str(), flags.as_slice()))
        .collect();
    let _python = py.servers(&specs);
    let _rust: Vec<ServerThread> = cases
        .iter()
        .zip(&topics)
        .map(|((policy, ping), (_, rs_topic))| {
            rust_server(transport.clone(), rs_topic, policy, *ping)
        })
        .collect();

    let parity =
        |method: &str| json!({"method": method, "namespace": "parity", "kwargs": {"value": 1}});
    let calls = [
        parity("exposed_echo"),
        parity("echo"),
        parity("_private_echo"),
        parity("_exposed_private_echo"),
        json!({"method": "oslo_rpc_server_ping", "kwargs": {"any": ["thing"]}}),
    ];
    let ok = json!({"result": 1});
    let refused = json!({"type": "RemoteError", "exc_type": "NoSuchMethod"});
    let pong = json!({"result": "pong"});
    let expected = [
        [&ok, &ok, &refused, &refused, &pong], // default: no `_` names
        [&ok, &refused, &refused, &ok, &refused], // explicit: exposed only, ping is not
        [&ok, &ok, &ok, &ok, &pong],           // legacy: everything
        [&ok, &ok, &refused, &refused, &refused], // rpc_ping_enabled off
    ];
    // Every batch at once: each Python client takes seconds to start.
    let answers: Vec<(Vec<Value>, Vec<Value>)> = std::thread::scope(|scope| {
        let batches: Vec<_> = topics
            .iter()
            .map(|(py_topic, rs_topic)| {
                let (py, calls) = (&py, &calls);
                let python = scope.spawn(move || py.calls(py_topic, &[], calls));
                let rust = scope.spawn(move || py.calls(rs_topic, &[], calls));
                (python, rust)
            })
            .collect();
        batches
            .into_iter()
            .map(|(python, rust)| (python.join().unwrap(), rust.join().unwrap()))
            .collect()
    });
    for ((case, (python, rust)), expected) in cases.iter().zip(answers).zip(expected) {
        let python: Vec<Value> = python.iter().map(outcome).collect();
        let rust: Vec<Value> = rust.iter().map(outcome).collect();
        let expected: Vec<Value> = expected.into_iter().cloned().collect();
        assert_eq!(python, expected, "oslo, {case:?}");
        assert_eq!(rust, python, "ours answers as oslo does, {case:?}");
    }
    drop(_rust);
    drop(_python);
    py.delete_queues(
        &topics
            .into_iter()
            .flat_map(|(a, b)| [a, b])
            .collect::<Vec<_>>(),
    );
}

#[test]
fn a_rust_client_pings_a_python_server_that_enables_it() {
    let Some(py) = peer() else { return };
    let (on, off) = (unique("parity_ping_on"), unique("parity_ping_off"));
    let _python = py.servers(&[(&on, &["--rpc-ping-enabled"]), (&off, &[])]);
    let transport = messaging_transports::open(&py.url).unwrap();
    let client = |topic: &str| {
        RpcClient::new(transport.clone(), Target::new(topic)).with_timeout(Duration::from_secs(20))
    };
    let ctx = Context::new();
    assert_eq!(client(&on).ping_blocking(&ctx).unwrap(), "pong");
    let server_ping = client(&on).with_server("py1").with_namespace("parity");
    assert_eq!(server_ping.ping_blocking(&ctx).unwrap(), "pong");
    let err = client(&off).ping_blocking(&ctx).unwrap_err();
    assert_eq!(
        err.remote().map(|r| r.class.as_str()),
        Some("NoSuchMethod"),
        "{err}"
    );
    drop(_python);
    py.delete_queues(&[on, off]);
}

#[test]
fn client_timeout_reaches_rust_handlers_as_it_reaches_oslo_endpoints() {
    let Some(py) = peer() else { return };
    let transport = messaging_transports::open(&py.url).unwrap();
    let (py_topic, rs_topic) = (unique("parity_py_ctx"), unique("parity_rs_ctx"));
    let _python = py.servers(&[(&py_topic, &[])]);
    let _rust = rust_server(transport.clone(), &rs_topic, "default", false);

    let whoami = |extra: Value| {
        let mut call = json!({"method": "whoami", "context": {"user": "u1"}});
        call.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        call
    };
    let calls = [
        whoami(json!({})),
        whoami(json!({"call_monitor_timeout": 7})),
        whoami(json!({"call_monitor_timeout": 2.5})),
    ];
    let python = py.calls(&py_topic, &[], &calls);
    assert_eq!(
        python,
        [
            json!({"result": {"user": "u1", "client_timeout": null}}),
            json!({"result": {"user": "u1", "client_timeout": 7}}),
            json!({"result": {"user": "u1", "client_timeout": 2.5}}),
        ],
        "what oslo gives its endpoints"
    );
    let rust = py.calls(&rs_topic, &[], &calls);
    assert_eq!(rust, python, "what we give our handlers");
    assert_eq!(rust[1]["result"]["client_timeout"].to_string(), "7");

    // A Rust client's call-monitor timeout reaches a Python endpoint the same way.
    let mut ctx = Context::new();
    ctx.insert("user", "u2");
    let seen: Value = RpcClient::new(transport, Target::new(py_topic.clone()))
        .with_timeout(Duration::from_secs(20))
        .with_call_monitor_timeout(Duration::from_secs(7))
        .call_blocking(&ctx, "whoami", &json!({}))
        .unwrap();
    assert_eq!(
        (&seen["user"], &seen["client_timeout"]),
        (&json!("u2"), &json!(7)),
        "{seen}"
    );
    drop(_rust);
    drop(_python);
    py.delete_queues(&[py_topic, rs_topic]);
}

#[test]
fn remote_errors_keep_args_and_kwargs_both_ways() {
    let Some(py) = peer() else { return };
    let transport = messaging_transports::open(&py.url).unwrap();
    let (py_topic, rs_topic) = (unique("parity_py_err"), unique("parity_rs_err"));
    let _python = py.servers(&[(&py_topic, &[])]);
    let _rust = rust_server(transport.clone(), &rs_topic, "default", false);

    let quota_kwargs =
        json!({"resource": "cores", "requested": 8, "limit": {"cores": 4, "ram": null}});
    let quota = json!({"module": EXMODS, "cls": "QuotaExceeded", "kwargs": quota_kwargs});
    let positional =
        json!({"module": EXMODS, "cls": "Positional", "args": [404, "gone", "a", 1.5]});
    let quota_message = "Quota exceeded for cores: requested 8, limit {'cores': 4, 'ram': None}";

    // A Python exception reaches a Rust client with its args and kwargs.
    let client = RpcClient::new(transport.clone(), Target::new(py_topic.clone()))
        .with_namespace("parity")
        .with_timeout(Duration::from_secs(20));
    let ctx = Context::new();
    let err = client
        .call_blocking::<_, Value>(&ctx, "raise_error", &quota)
        .unwrap_err();
    let remote = err.remote().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        (
            remote.class.as_str(),
            remote.module.as_str(),
            remote.message.as_str()
        ),
        ("QuotaExceeded", EXMODS, quota_message)
    );
    assert_eq!(remote.args, [json!(quota_message)]);
    assert_eq!(Value::Object(remote.kwargs.clone()), quota_kwargs);
    let err = client
        .call_blocking::<_, Value>(&ctx, "raise_error", &positional)
        .unwrap_err();
    let remote = err.remote().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        remote.args,
        [json!(404), json!("gone"), json!("a"), json!(1.5)]
    );
    assert!(remote.kwargs.is_empty());

    // A Python client rebuilds errors from either server alike: the Rust handler's
    // error with kwargs and with positional args, and a Python error a Rust server
    // relays.
    let raise =
        |kwargs: &Value| json!({"method": "raise_error", "namespace": "parity", "kwargs": kwargs});
    let mut relayed = quota.clone();
    relayed["topic"] = json!(py_topic);
    let calls = [
        raise(&quota),
        raise(&positional),
        json!({"method": "relay", "namespace": "parity", "kwargs": relayed}),
    ];
    let direct = py.calls(&py_topic, &["--allowed-exmods", EXMODS], &calls[..2]);
    let via_rust = py.calls(&rs_topic, &["--allowed-exmods", EXMODS], &calls);
    let expected_quota = json!({
        "type": "QuotaExceeded_Remote",
        "module": "oslo_peer_exceptions_Remote",
        "classes": [
            "oslo_peer_exceptions_Remote.QuotaExceeded_Remote",
            "oslo_peer_exceptions.QuotaExceeded",
            "oslo_peer_exceptions.PeerException",
            "builtins.Exception",
            "builtins.BaseException",
            "builtins.object"
        ],
        "args": [quota_message],
        "kwargs": quota_kwargs,
        "exc_type": null,
    });
    assert_eq!(rebuilt(&direct[0]), expected_quota, "oslo to oslo");
    assert_eq!(
        rebuilt(&via_rust[0]),
        expected_quota,
        "ours to oslo: {}",
        via_rust[0]
    );
    assert_eq!(rebuilt(&direct[1])["args"], json!([404, "gone", "a", 1.5]));
    assert_eq!(
        rebuilt(&via_rust[1]),
        rebuilt(&direct[1]),
        "{}",
        via_rust[1]
    );
    assert_eq!(
        rebuilt(&via_rust[2]),
        expected_quota,
        "a Python error relayed by a Rust server: {}",
        via_rust[2]
    );
    assert!(
        via_rust[2]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(quota_message),
        "the relayed message is the original one: {}",
        via_rust[2]
    );

    // Without the module allowed, both arrive as oslo's RemoteError naming the class;
    // kwargs Python's class cannot take make it fall back to RemoteError too.
    let not_allowed = [raise(&quota)];
    let python = py.calls(&py_topic, &[], &not_allowed);
    let rust = py.calls(&rs_topic, &[], &not_allowed);
    assert_eq!(
        outcome(&python[0]),
        json!({"type": "RemoteError", "exc_type": "QuotaExceeded"})
    );
    assert_eq!(outcome(&rust[0]), outcome(&python[0]));
    let bad_kwargs = json!({"module": "builtins", "cls": "ValueError", "args": ["bad"], "kwargs": {"field": "x"}});
    let rust = py.calls(&rs_topic, &[], &[raise(&bad_kwargs)]);
    assert_eq!(
        outcome(&rust[0]),
        json!({"type": "RemoteError", "exc_type": "ValueError"}),
        "ValueError(**kwargs) fails in Python, which falls back: {}",
        rust[0]
    );
    drop(_rust);
    drop(_python);
    py.delete_queues(&[py_topic, rs_topic]);
}
