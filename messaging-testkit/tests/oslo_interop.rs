//! Interop with the real Python oslo.messaging (18.3.1, `interop/oslo_peer.py`) on
//! RabbitMQ, in both directions: a Python client calls, casts and fanouts to Rust
//! servers; a Rust client calls and casts to a Python server; a Python notifier feeds
//! Rust listeners and a Rust notifier feeds Python listeners, with pools.
//!
//! Runs when `MESSAGING_TEST_RABBIT_URL` and `MESSAGING_TEST_OSLO_PYTHON` (the venv's
//! python, from `interop/setup-venv.sh`) are set; `.ci/run` sets both.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, NoArgs, RpcClient, RpcError};
use messaging_core::{Context, Priority, Target, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::ServerThread;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/oslo_peer.py");
const LIMIT: Duration = Duration::from_secs(60);

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
            .args(["--log-level", "ERROR"])
            .env("PYTHONWARNINGS", "ignore")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    /// Runs a one-shot subcommand (call, cast, notify) and returns its JSON line.
    fn run(&self, args: &[&str]) -> Value {
        let mut child = self.command(args).spawn().expect("python runs");
        let lines = lines_of(&mut child);
        let line = lines.recv_timeout(LIMIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("oslo_peer {args:?} printed nothing within {LIMIT:?}")
        });
        let _ = child.wait();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// Starts a long-running subcommand (server, listen) and waits for `READY`.
    fn start(&self, args: &[&str]) -> Background {
        let mut child = self.command(args).spawn().expect("python runs");
        let lines = lines_of(&mut child);
        let ready = lines.recv_timeout(LIMIT).expect("the peer got ready");
        assert_eq!(ready, "READY", "oslo_peer {args:?}");
        Background { child, lines }
    }

    fn delete_queues(&self, queues: &[String]) {
        let mut args = vec!["delete-queues"];
        args.extend(queues.iter().map(String::as_str));
        self.run(&args);
    }
}

struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn line(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(LIMIT)
            .expect("a line from the peer");
        serde_json::from_str(&line).unwrap()
    }

    fn lines_for(&self, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(serde_json::from_str(&line).unwrap()),
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ===== a Rust server for Python clients =====

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Serialize, Deserialize)]
struct Echo {
    value: Value,
}

#[derive(Deserialize)]
struct Fail {
    message: String,
}

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

fn rust_server(url: &str, topic: &str, server: &str, seen: Seen) -> ServerThread {
    let (s1, s2) = (seen.clone(), seen);
    let default = Endpoint::new()
        .method("add", |_ctx, args: Add| {
            Ok::<_, HandlerError>(args.a + args.b)
        })
        .method("echo", move |_ctx, args: Echo| {
            s1.lock().unwrap().push(("echo".into(), args.value.clone()));
            Ok::<_, HandlerError>(args.value)
        })
        .method("fail", |_ctx, args: Fail| -> Result<(), HandlerError> {
            Err(HandlerError::new("ValueError", args.message).with_module("builtins"))
        })
        .method("quota", |_ctx, _: NoArgs| -> Result<(), HandlerError> {
            Err(
                HandlerError::new("QuotaExceeded", "quota exceeded for instances")
                    .with_module("nova.exception"),
            )
        })
        .method("whoami", |ctx: Context, _: NoArgs| {
            Ok::<_, HandlerError>(ctx)
        });
    let namespaced = Endpoint::new()
        .with_namespace("ns1")
        .with_version("2.1")
        .method("ns_echo", move |_ctx, args: Echo| {
            s2.lock()
                .unwrap()
                .push(("ns_echo".into(), args.value.clone()));
            Ok::<_, HandlerError>(json!({"ns": "ns1", "value": args.value}))
        });
    let server = rpc::server(
        messaging_transports::open(url).unwrap(),
        Target::new(topic).with_server(server),
        vec![default, namespaced],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

#[test]
fn a_python_client_calls_a_rust_server() {
    let Some(py) = peer() else { return };
    let topic = unique("interop_rpc");
    let running = rust_server(&py.url, &topic, "rs1", Seen::default());
    let call = |extra: &[&str], method: &str, kwargs: &str| {
        let mut args = vec!["call", "--topic", &topic, "--timeout", "20"];
        args.extend_from_slice(extra);
        args.extend([method, kwargs]);
        py.run(&args)
    };
    assert_eq!(
        call(&[], "add", r#"{"a": 1, "b": 2}"#),
        json!({"result": 3})
    );
    let nested = json!({"list": [1, 2.5, "three", null, true], "map": {"unicode": "ünï", "big": 12345678901234_i64}});
    let echoed = call(
        &["--server", "rs1"],
        "echo",
        &json!({"value": nested}).to_string(),
    );
    assert_eq!(echoed["result"], nested);
    let whoami = call(
        &["--context", r#"{"user": "u1", "request_id": "req-1"}"#],
        "whoami",
        "{}",
    );
    assert_eq!(whoami["result"]["user"], "u1");
    assert_eq!(whoami["result"]["request_id"], "req-1");
    let ns = call(
        &["--namespace", "ns1", "--version", "2.1"],
        "ns_echo",
        r#"{"value": 7}"#,
    );
    assert_eq!(ns["result"], json!({"ns": "ns1", "value": 7}));

    // Errors arrive as Python sees its own: builtins rebuilt, others as RemoteError.
    let failed = call(&[], "fail", r#"{"message": "boom"}"#);
    assert_eq!(
        (
            failed["error"]["type"].as_str(),
            failed["error"]["module"].as_str()
        ),
        (Some("ValueError"), Some("builtins"))
    );
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("boom"),
        "{failed}"
    );
    let quota = call(&[], "quota", "{}");
    assert_eq!(quota["error"]["type"], "RemoteError");
    assert_eq!(quota["error"]["exc_type"], "QuotaExceeded");
    assert_eq!(quota["error"]["value"], "quota exceeded for instances");
    let unsupported = call(&["--version", "1.5"], "echo", r#"{"value": 1}"#);
    assert_eq!(
        unsupported["error"]["exc_type"], "UnsupportedVersion",
        "{unsupported}"
    );
    let missing = call(&[], "no_such", "{}");
    assert_eq!(missing["error"]["exc_type"], "NoSuchMethod", "{missing}");
    running.stop_and_wait().unwrap();
    py.delete_queues(&[topic.clone(), format!("{topic}.rs1")]);
}

#[test]
fn python_casts_and_fanouts_reach_rust_servers() {
    let Some(py) = peer() else { return };
    let topic = unique("interop_cast");
    let (seen1, seen2) = (Seen::default(), Seen::default());
    let s1 = rust_server(&py.url, &topic, "rs1", seen1.clone());
    let s2 = rust_server(&py.url, &topic, "rs2", seen2.clone());
    assert_eq!(
        py.run(&[
            "cast",
            "--topic",
            &topic,
            "--server",
            "rs2",
            "echo",
            r#"{"value": "direct"}"#
        ]),
        json!({"cast": "ok"})
    );
    assert_eq!(
        py.run(&[
            "cast",
            "--topic",
            &topic,
            "--fanout",
            "echo",
            r#"{"value": "fanout"}"#
        ]),
        json!({"cast": "ok"})
    );
    let deadline = Instant::now() + LIMIT;
    let values = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    while (values(&seen1).len(), values(&seen2).len()) != (1, 2) {
        assert!(
            Instant::now() < deadline,
            "s1 {:?}, s2 {:?}",
            values(&seen1),
            values(&seen2)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(values(&seen1), [json!("fanout")]);
    let mut s2_values = values(&seen2);
    s2_values.sort_by_key(|v| v.to_string());
    assert_eq!(s2_values, [json!("direct"), json!("fanout")]);
    s1.stop_and_wait().unwrap();
    s2.stop_and_wait().unwrap();
    py.delete_queues(&[
        topic.clone(),
        format!("{topic}.rs1"),
        format!("{topic}.rs2"),
    ]);
}

#[derive(Serialize)]
struct Sleep {
    seconds: f64,
}

#[test]
fn a_rust_client_calls_and_casts_to_a_python_server() {
    let Some(py) = peer() else { return };
    let topic = unique("interop_py_server");
    let server = py.start(&["server", "--topic", &topic, "--server", "py1"]);
    let client = RpcClient::new(
        messaging_transports::open(&py.url).unwrap(),
        Target::new(topic.clone()),
    )
    .with_timeout(Duration::from_secs(20));
    let ctx = Context::new();
    let sum: i64 = client
        .call_blocking(&ctx, "add", &json!({"a": 1, "b": 2}))
        .unwrap();
    assert_eq!(sum, 3);
    let nested = json!({"a": 3, "b": 4.0, "c": ["x", null]});
    let echoed: Value = client
        .call_blocking(
            &ctx,
            "echo",
            &Echo {
                value: nested.clone(),
            },
        )
        .unwrap();
    assert_eq!(echoed, nested);
    assert_eq!(echoed["b"].to_string(), "4.0", "numbers as sent");

    let err = client
        .call_blocking::<_, Value>(&ctx, "fail", &json!({"message": "boom"}))
        .unwrap_err();
    let remote = err
        .remote()
        .unwrap_or_else(|| panic!("a remote error, got {err}"));
    assert_eq!(
        (
            remote.class.as_str(),
            remote.module.as_str(),
            remote.message.as_str()
        ),
        ("ValueError", "builtins", "boom")
    );
    assert!(
        remote.traceback.iter().any(|l| l.contains("Traceback")),
        "{remote:?}"
    );

    let ns: Value = client
        .clone()
        .with_namespace("ns1")
        .with_version("2.1")
        .call_blocking(&ctx, "ns_echo", &json!({"value": 5}))
        .unwrap();
    assert_eq!(ns, json!({"ns": "ns1", "value": 5}));
    let err = client
        .clone()
        .with_version("1.5")
        .call_blocking::<_, Value>(&ctx, "echo", &json!({"value": 1}))
        .unwrap_err();
    assert_eq!(
        err.remote().map(|r| r.class.as_str()),
        Some("UnsupportedVersion"),
        "{err}"
    );

    let mut ctx = Context::new();
    ctx.insert("user", "u1");
    let who: Value = client.call_blocking(&ctx, "whoami", &json!({})).unwrap();
    assert_eq!(who["user"], "u1");

    // Call-monitor heartbeats from oslo (it needs a monitor timeout of 2 s or more).
    let slept: f64 = client
        .clone()
        .with_call_monitor_timeout(Duration::from_secs(2))
        .call_blocking(&ctx, "sleep", &Sleep { seconds: 3.0 })
        .unwrap();
    assert_eq!(slept, 3.0);
    let err = client
        .clone()
        .with_timeout(Duration::from_secs(1))
        .call_blocking::<_, f64>(&ctx, "sleep", &Sleep { seconds: 2.0 })
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");

    // Drain the lines the calls printed, then a cast and a fanout cast.
    let _ = server.lines_for(Duration::from_millis(500));
    client
        .cast_blocking(&ctx, "echo", &json!({"value": "cast"}))
        .unwrap();
    let line = server.line();
    assert_eq!(
        (line["method"].as_str(), &line["args"]["value"]),
        (Some("echo"), &json!("cast"))
    );
    assert_eq!(line["ctxt"]["user"], "u1");
    client
        .clone()
        .with_fanout(true)
        .cast_blocking(&ctx, "echo", &json!({"value": "fanout"}))
        .unwrap();
    assert_eq!(server.line()["args"]["value"], "fanout");
    drop(server);
    py.delete_queues(&[topic.clone(), format!("{topic}.py1")]);
}

#[derive(Clone, Serialize, Deserialize)]
struct Payload {
    id: u64,
}

/// What a Rust listener got: priority, event type, publisher, payload id.
type Inbox = Arc<Mutex<Vec<(Priority, String, String, u64)>>>;

fn rust_listener(url: &str, topic: &str, pool: &str, inbox: Inbox) -> ServerThread {
    let endpoint = NotificationEndpoint::new()
        .on(Priority::Info, {
            let inbox = inbox.clone();
            move |n: Notification<Payload>| {
                inbox.lock().unwrap().push((
                    n.priority,
                    n.event_type,
                    n.publisher_id,
                    n.payload.id,
                ));
                NotificationResult::Handled
            }
        })
        .on(Priority::Warn, move |n: Notification<Payload>| {
            inbox
                .lock()
                .unwrap()
                .push((n.priority, n.event_type, n.publisher_id, n.payload.id));
            NotificationResult::Handled
        });
    let listener = messaging_core::notify::listener(
        messaging_transports::open(url).unwrap(),
        vec![Target::new(topic)],
        vec![endpoint],
        ListenerOptions::new().pool(pool),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    ServerThread::spawn(listener).unwrap()
}

#[test]
fn a_python_notifier_feeds_rust_listeners_in_pools() {
    let Some(py) = peer() else { return };
    let topic = unique("interop_notes");
    let (pool_a, pool_b) = (unique("pool_a"), unique("pool_b"));
    let inboxes: Vec<Inbox> = (0..3).map(|_| Arc::default()).collect();
    let listeners = [
        rust_listener(&py.url, &topic, &pool_a, inboxes[0].clone()),
        rust_listener(&py.url, &topic, &pool_a, inboxes[1].clone()),
        rust_listener(&py.url, &topic, &pool_b, inboxes[2].clone()),
    ];
    for (id, priority) in [(1, "info"), (2, "warning"), (3, "info")] {
        let payload = json!({"id": id}).to_string();
        let sent = py.run(&[
            "notify",
            "--topic",
            &topic,
            "--priority",
            priority,
            "--event-type",
            "compute.instance.create.end",
            "--publisher-id",
            "compute.host1",
            &payload,
        ]);
        assert_eq!(sent, json!({"notified": "ok"}));
    }
    let count = |i: usize| inboxes[i].lock().unwrap().len();
    let deadline = Instant::now() + LIMIT;
    while count(0) + count(1) < 3 || count(2) < 3 {
        assert!(
            Instant::now() < deadline,
            "pool a {} + {}, pool b {}",
            count(0),
            count(1),
            count(2)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(0) + count(1), 3, "one copy for pool a");
    let mut b = inboxes[2].lock().unwrap().clone();
    b.sort_by_key(|(_, _, _, id)| *id);
    assert_eq!(
        b[1],
        (
            Priority::Warn,
            "compute.instance.create.end".to_owned(),
            "compute.host1".to_owned(),
            2
        )
    );
    for listener in listeners {
        listener.stop_and_wait().unwrap();
    }
    py.delete_queues(&[
        pool_a,
        pool_b,
        format!("{topic}.info"),
        format!("{topic}.warn"),
    ]);
}

#[test]
fn a_rust_notifier_feeds_python_listeners_in_pools() {
    let Some(py) = peer() else { return };
    let topic = unique("interop_py_notes");
    let (pool_a, pool_b) = (unique("pool_a"), unique("pool_b"));
    let listeners = [
        py.start(&["listen", "--topic", &topic, "--pool", &pool_a]),
        py.start(&["listen", "--topic", &topic, "--pool", &pool_a]),
        py.start(&["listen", "--topic", &topic, "--pool", &pool_b]),
    ];
    let notifier = Notifier::new(messaging_transports::open(&py.url).unwrap(), "rust.host1")
        .with_topics([topic.as_str()]);
    for id in 0..4 {
        let priority = if id % 2 == 0 {
            Priority::Info
        } else {
            Priority::Error
        };
        block_on(notifier.notify(&Context::new(), priority, "rust.event", &Payload { id }))
            .unwrap();
    }
    let mut pool_a_lines = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while pool_a_lines.len() < 4 && Instant::now() < deadline {
        for listener in &listeners[..2] {
            pool_a_lines.extend(listener.lines_for(Duration::from_millis(100)));
        }
    }
    let mut pool_b_lines = Vec::new();
    while pool_b_lines.len() < 4 && Instant::now() < deadline {
        pool_b_lines.extend(listeners[2].lines_for(Duration::from_millis(100)));
    }
    for listener in &listeners[..2] {
        pool_a_lines.extend(listener.lines_for(Duration::from_millis(300)));
    }
    assert_eq!(
        pool_a_lines.len(),
        4,
        "one copy for pool a: {pool_a_lines:?}"
    );
    assert_eq!(pool_b_lines.len(), 4, "{pool_b_lines:?}");
    let mut ids: Vec<u64> = pool_b_lines
        .iter()
        .map(|l| l["payload"]["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2, 3]);
    let first = pool_b_lines
        .iter()
        .find(|l| l["payload"]["id"] == 1)
        .unwrap();
    assert_eq!(
        (
            first["priority"].as_str(),
            first["event_type"].as_str(),
            first["publisher_id"].as_str()
        ),
        (Some("error"), Some("rust.event"), Some("rust.host1"))
    );
    assert_eq!(
        first["metadata"]["message_id"].as_str().map(str::len),
        Some(36)
    );
    drop(listeners);
    let mut queues = vec![pool_a, pool_b];
    queues.extend(Priority::ALL.iter().map(|p| format!("{topic}.{p}")));
    py.delete_queues(&queues);
}

// ===== declares: option by option, Rust declares what oslo declares =====

/// oslo's queue options exercised, each with `rabbit_transient_queues_ttl` and
/// `rabbit_qos_prefetch_count` added (the TTL picks out each combination's reply queues).
const DECLARE_COMBINATIONS: &[&str] = &[
    "",
    "amqp_durable_queues=true",
    "amqp_auto_delete=true",
    "rabbit_ha_queues=true",
    "rabbit_quorum_queue=true&rabbit_quorum_delivery_limit=5\
     &rabbit_quorum_max_memory_length=1000&rabbit_quorum_max_memory_bytes=1048576",
    "rabbit_transient_quorum_queue=true&rabbit_quorum_delivery_limit=3",
    "rabbit_stream_fanout=true&rabbit_transient_quorum_queue=true",
    "enable_cancel_on_failover=true",
];

/// One declared object as `rabbitmqctl` lists it, names made comparable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Declared {
    what: &'static str,
    name: String,
    /// type (exchanges), durable, auto-delete and arguments as listed.
    properties: String,
}

fn rabbitmqctl_list(command: &str, columns: &[&str]) -> Vec<Value> {
    let output = Command::new("rabbitmqctl")
        .arg(command)
        .args(columns)
        .args(["--formatter", "json", "-q"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(output.status.success(), "rabbitmqctl {command}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("rabbitmqctl prints JSON")
}

/// The name with the side's own topic, exchange and pool replaced by `T`, `X`, `P`, and
/// the random part of a fanout queue by `*`; `None` for another side's objects.
fn comparable(name: &str, topic: &str, exchange: &str, pool: &str) -> Option<String> {
    if name == exchange {
        return Some("X".into());
    }
    if name == pool {
        return Some("P".into());
    }
    let rest = name.strip_prefix(topic)?;
    let rest = match rest.strip_prefix("_fanout_") {
        Some(hex) if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => "_fanout_*",
        _ => rest,
    };
    Some(format!("T{rest}"))
}

/// Arguments as listed, in key order (RabbitMQ lists them in the order declared, which
/// means nothing to it).
fn arguments(listed: &Value) -> String {
    let mut args = listed.as_array().cloned().unwrap_or_default();
    args.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
    Value::Array(args).to_string()
}

/// The reply queues whose `x-expires` is `ttl_ms` (one per side).
fn reply_queues(queues: &[Value], ttl_ms: u64) -> Vec<(String, String)> {
    queues
        .iter()
        .filter(|q| q["name"].as_str().is_some_and(|n| n.starts_with("reply_")))
        .filter(|q| {
            q["arguments"].as_array().is_some_and(|args| {
                args.iter()
                    .any(|a| a[0] == "x-expires" && a[2].as_u64() == Some(ttl_ms))
            })
        })
        .map(|q| {
            let properties = format!(
                "{} {} {}",
                q["durable"],
                q["auto_delete"],
                arguments(&q["arguments"])
            );
            (q["name"].as_str().unwrap().to_owned(), properties)
        })
        .collect()
}

/// What one side declared: its exchanges, queues and consumers' arguments.
fn declared_by(
    exchanges: &[Value],
    queues: &[Value],
    consumers: &[Value],
    (topic, exchange, pool): (&str, &str, &str),
) -> Vec<Declared> {
    let mut out = Vec::new();
    for e in exchanges {
        if let Some(name) = comparable(e["name"].as_str().unwrap_or(""), topic, exchange, pool) {
            out.push(Declared {
                what: "exchange",
                name,
                properties: format!(
                    "{} {} {} {}",
                    e["type"],
                    e["durable"],
                    e["auto_delete"],
                    arguments(&e["arguments"])
                ),
            });
        }
    }
    for q in queues {
        if let Some(name) = comparable(q["name"].as_str().unwrap_or(""), topic, exchange, pool) {
            out.push(Declared {
                what: "queue",
                name,
                properties: format!(
                    "{} {} {}",
                    q["durable"],
                    q["auto_delete"],
                    arguments(&q["arguments"])
                ),
            });
        }
    }
    for c in consumers {
        let queue = c["queue_name"].as_str().unwrap_or("");
        if let Some(name) = comparable(queue, topic, exchange, pool) {
            out.push(Declared {
                what: "consumer of",
                name,
                properties: arguments(&c["arguments"]),
            });
        }
    }
    out.sort();
    out
}

/// Both sides up for one combination: a server (topic, server and fanout queues), a
/// call (the reply queue) and a notification listener in a pool.
struct DeclaringSides {
    python: Vec<Background>,
    rust: Vec<ServerThread>,
    /// Kept until the listing is made: dropping it deletes its reply queue.
    client: RpcClient,
    py: (String, String, String),
    rs: (String, String, String),
    ttl_ms: u64,
}

fn declare_both_sides(py: &Peer, options: &str, ttl_s: u64) -> DeclaringSides {
    let query = match options {
        "" => format!("rabbit_transient_queues_ttl={ttl_s}&rabbit_qos_prefetch_count=10"),
        o => format!("{o}&rabbit_transient_queues_ttl={ttl_s}&rabbit_qos_prefetch_count=10"),
    };
    let url = format!("{}?{query}", py.url);
    let py_side = (unique("decl_py"), unique("decl_px"), unique("decl_pp"));
    let rs_side = (unique("decl_rs"), unique("decl_rx"), unique("decl_rp"));
    let peer = Peer {
        url: url.clone(),
        python: py.python.clone(),
    };
    let (topic, exchange, pool) = &py_side;
    let python = vec![
        peer.start(&[
            "server",
            "--topic",
            topic,
            "--server",
            "s1",
            "--exchange",
            exchange,
        ]),
        peer.start(&[
            "listen",
            "--topic",
            topic,
            "--pool",
            pool,
            "--exchange",
            exchange,
        ]),
    ];
    let called = peer.run(&[
        "call",
        "--topic",
        topic,
        "--exchange",
        exchange,
        "add",
        r#"{"a": 1, "b": 2}"#,
    ]);
    assert_eq!(called, json!({"result": 3}), "{options}");

    let (topic, exchange, pool) = &rs_side;
    let target = Target::new(topic.clone()).with_exchange(exchange.clone());
    let server = rpc::server(
        messaging_transports::open(&url).unwrap(),
        target.clone().with_server("s1"),
        vec![Endpoint::new().method("add", |_ctx, args: Add| {
            Ok::<_, HandlerError>(args.a + args.b)
        })],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    let listener = messaging_core::notify::listener(
        messaging_transports::open(&url).unwrap(),
        vec![target.clone()],
        vec![
            NotificationEndpoint::new().on(Priority::Info, |_: Notification<Value>| {
                NotificationResult::Handled
            }),
        ],
        ListenerOptions::new().pool(pool),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    let rust = vec![
        ServerThread::spawn(server).unwrap(),
        ServerThread::spawn(listener).unwrap(),
    ];
    let client = RpcClient::new(messaging_transports::open(&url).unwrap(), target)
        .with_timeout(Duration::from_secs(20));
    let sum: i64 = client
        .call_blocking(&Context::new(), "add", &json!({"a": 1, "b": 2}))
        .unwrap_or_else(|e| panic!("{options}: {e}"));
    assert_eq!(sum, 3);
    DeclaringSides {
        python,
        rust,
        client,
        py: py_side,
        rs: rs_side,
        ttl_ms: ttl_s * 1000,
    }
}

#[test]
fn every_queue_option_declares_what_oslo_declares() {
    let Some(py) = peer() else { return };
    // Each combination gets its own reply-queue TTL, random per run so that reply
    // queues a previous run left (they expire with it) are told apart.
    let random = u64::from_str_radix(&ids::hex_id()[..4], 16).unwrap();
    let base = 600 + (random % 300) * 10;
    let sides: Vec<(&str, DeclaringSides)> = std::thread::scope(|scope| {
        let handles: Vec<_> = DECLARE_COMBINATIONS
            .iter()
            .enumerate()
            .map(|(i, options)| {
                let py = &py;
                scope.spawn(move || (*options, declare_both_sides(py, options, base + i as u64)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let exchanges = rabbitmqctl_list(
        "list_exchanges",
        &["name", "type", "durable", "auto_delete", "arguments"],
    );
    let queues = rabbitmqctl_list(
        "list_queues",
        &["name", "durable", "auto_delete", "arguments"],
    );
    let consumers = rabbitmqctl_list("list_consumers", &["queue_name", "arguments"]);
    let mut failures = Vec::new();
    let mut cleanup_queues = Vec::new();
    let mut cleanup_exchanges = Vec::new();
    for (options, side) in &sides {
        let as_ref = |(t, x, p): &(String, String, String)| (t.clone(), x.clone(), p.clone());
        let (pt, px, pp) = as_ref(&side.py);
        let (rt, rx, rp) = as_ref(&side.rs);
        let python = declared_by(&exchanges, &queues, &consumers, (&pt, &px, &pp));
        let rust = declared_by(&exchanges, &queues, &consumers, (&rt, &rx, &rp));
        // Failures are collected, not raised, so that the clean-up below always runs.
        if python.len() < 8 {
            failures.push(format!(
                "`{options}`: too little found for Python: {python:#?}"
            ));
        } else if python != rust {
            failures.push(format!(
                "`{options}`:\n  python: {python:#?}\n  rust:   {rust:#?}"
            ));
        }
        let replies = reply_queues(&queues, side.ttl_ms);
        match replies.as_slice() {
            [(_, a), (_, b)] if a == b => {}
            other => failures.push(format!("`{options}`: reply queues {other:#?}")),
        }
        // Deleted once the clients are dropped: deleting a live client's reply queue
        // would only make it declare the queue again.
        cleanup_queues.extend(replies.into_iter().map(|(name, _)| name));
        for (t, x, p) in [(&pt, &px, &pp), (&rt, &rx, &rp)] {
            cleanup_queues.extend([
                t.clone(),
                format!("{t}.s1"),
                format!("{t}_fanout"),
                p.clone(),
            ]);
            cleanup_exchanges.extend([x.clone(), format!("{t}_fanout")]);
        }
    }
    for (_, side) in sides {
        drop(side.python);
        drop(side.client);
        for server in side.rust {
            server.stop_and_wait().unwrap();
        }
    }
    py.delete_queues(&cleanup_queues);
    let mut args = vec!["delete-exchanges"];
    args.extend(cleanup_exchanges.iter().map(String::as_str));
    py.run(&args);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ===== mixed deployments: Python and Rust services on one production topic =====

/// The queue options a production bus runs with (issue 10, item 2).
const MIXED_OPTIONS: &[&str] = &[
    "rabbit_quorum_queue=true",
    "amqp_durable_queues=true",
    "rabbit_stream_fanout=true&rabbit_transient_quorum_queue=true&rabbit_qos_prefetch_count=10",
];

/// A Rust server `rs1` on `topic` in `exchange`: `echo` records and returns its value.
fn rust_server_in(url: &str, exchange: &str, topic: &str, seen: Seen) -> ServerThread {
    let server = rpc::server(
        messaging_transports::open(url).unwrap(),
        Target::new(topic)
            .with_exchange(exchange)
            .with_server("rs1"),
        vec![Endpoint::new().method("echo", move |_ctx, args: Echo| {
            seen.lock()
                .unwrap()
                .push(("echo".into(), args.value.clone()));
            Ok::<_, HandlerError>(args.value)
        })],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

/// The `echo` values a Python server printed within `wait`.
fn echoed_by(python: &Background, wait: Duration) -> Vec<Value> {
    python
        .lines_for(wait)
        .into_iter()
        .filter(|l| l["method"] == "echo")
        .map(|l| l["args"]["value"].clone())
        .collect()
}

/// One option set, one start order: calls, casts and fanouts both ways between a
/// Python and a Rust server of one topic, and notifications both ways.
fn mixed_deployment(py: &Peer, options: &str, python_first: bool) -> Vec<String> {
    let url = format!("{}?{options}", py.url);
    let peer = Peer {
        url: url.clone(),
        python: py.python.clone(),
    };
    let (topic, exchange) = (unique("mixed"), unique("mixed_x"));
    let (notes, pool) = (unique("mixed_notes"), unique("mixed_pool"));
    let seen = Seen::default();
    let inbox = Inbox::default();
    let start_python = || {
        (
            peer.start(&[
                "server",
                "--topic",
                &topic,
                "--server",
                "py1",
                "--exchange",
                &exchange,
            ]),
            peer.start(&["listen", "--topic", &notes, "--exchange", &exchange]),
        )
    };
    let rust_listener_in = |inbox: Inbox| {
        let endpoint =
            NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Payload>| {
                inbox.lock().unwrap().push((
                    n.priority,
                    n.event_type,
                    n.publisher_id,
                    n.payload.id,
                ));
                NotificationResult::Handled
            });
        let listener = messaging_core::notify::listener(
            messaging_transports::open(&url).unwrap(),
            vec![Target::new(notes.clone()).with_exchange(exchange.clone())],
            vec![endpoint],
            ListenerOptions::new().pool(&pool),
            ThreadPoolExecutor::new(),
        )
        .build()
        .unwrap();
        ServerThread::spawn(listener).unwrap()
    };
    let (python, rust) = if python_first {
        let python = start_python();
        let rust = (
            rust_server_in(&url, &exchange, &topic, seen.clone()),
            rust_listener_in(inbox.clone()),
        );
        (python, rust)
    } else {
        let rust = (
            rust_server_in(&url, &exchange, &topic, seen.clone()),
            rust_listener_in(inbox.clone()),
        );
        (start_python(), rust)
    };
    let (py_server, py_listener) = &python;
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(format!("{options} (python first: {python_first}): {what}"));
        }
    };

    // Python → Rust: a call and a cast to rs1.
    let called = peer.run(&[
        "call",
        "--topic",
        &topic,
        "--exchange",
        &exchange,
        "--server",
        "rs1",
        "--timeout",
        "20",
        "echo",
        r#"{"value": "py-call"}"#,
    ]);
    check(
        called == json!({"result": "py-call"}),
        format!("python call: {called}"),
    );
    let cast = peer.run(&[
        "cast",
        "--topic",
        &topic,
        "--exchange",
        &exchange,
        "--server",
        "rs1",
        "echo",
        r#"{"value": "py-cast"}"#,
    ]);
    check(
        cast == json!({"cast": "ok"}),
        format!("python cast: {cast}"),
    );
    // Rust → Python: a call and a cast to py1.
    let client = RpcClient::new(
        messaging_transports::open(&url).unwrap(),
        Target::new(topic.clone()).with_exchange(exchange.clone()),
    )
    .with_timeout(Duration::from_secs(20));
    let ctx = Context::new();
    let answer: Result<Value, _> = client.clone().with_server("py1").call_blocking(
        &ctx,
        "echo",
        &Echo {
            value: json!("rs-call"),
        },
    );
    check(
        matches!(&answer, Ok(v) if *v == json!("rs-call")),
        format!("rust call: {answer:?}"),
    );
    let cast = client.clone().with_server("py1").cast_blocking(
        &ctx,
        "echo",
        &Echo {
            value: json!("rs-cast"),
        },
    );
    check(cast.is_ok(), format!("rust cast: {cast:?}"));
    // Fanouts from each side reach both servers.
    let fanout = peer.run(&[
        "cast",
        "--topic",
        &topic,
        "--exchange",
        &exchange,
        "--fanout",
        "echo",
        r#"{"value": "py-fanout"}"#,
    ]);
    check(
        fanout == json!({"cast": "ok"}),
        format!("python fanout: {fanout}"),
    );
    let fanout = client.clone().with_fanout(true).cast_blocking(
        &ctx,
        "echo",
        &Echo {
            value: json!("rs-fanout"),
        },
    );
    check(fanout.is_ok(), format!("rust fanout: {fanout:?}"));

    // Notifications both ways.
    let notified = peer.run(&[
        "notify",
        "--topic",
        &notes,
        "--exchange",
        &exchange,
        "--priority",
        "info",
        "--event-type",
        "mixed.py",
        "--publisher-id",
        "py",
        r#"{"id": 1}"#,
    ]);
    check(
        notified == json!({"notified": "ok"}),
        format!("python notify: {notified}"),
    );
    let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "rs")
        .with_topics([notes.as_str()])
        .with_exchange(exchange.clone());
    let sent = block_on(notifier.notify(&ctx, Priority::Info, "mixed.rs", &Payload { id: 2 }));
    check(sent.is_ok(), format!("rust notify: {sent:?}"));

    let mut py_echoed = Vec::new();
    let mut py_notes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rust_echoed = || {
        let mut v: Vec<Value> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect();
        v.sort_by_key(|v| v.to_string());
        v
    };
    while Instant::now() < deadline
        && (py_echoed.len() < 4
            || py_notes.len() < 2
            || rust_echoed().len() < 4
            || inbox.lock().unwrap().len() < 2)
    {
        py_echoed.extend(echoed_by(py_server, Duration::from_millis(200)));
        py_notes.extend(py_listener.lines_for(Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(20));
    }
    py_echoed.extend(echoed_by(py_server, Duration::from_millis(300)));
    py_echoed.sort_by_key(|v| v.to_string());
    check(
        py_echoed
            == vec![
                json!("rs-call"),
                json!("rs-cast"),
                json!("py-fanout"),
                json!("rs-fanout"),
            ]
            .tap_sorted(),
        format!("the Python server got {py_echoed:?}"),
    );
    let expected_rust = vec![
        json!("py-call"),
        json!("py-cast"),
        json!("py-fanout"),
        json!("rs-fanout"),
    ]
    .tap_sorted();
    check(
        rust_echoed() == expected_rust,
        format!("the Rust server got {:?}", rust_echoed()),
    );
    // Each listener (the Python one on `<topic>.info`, the Rust one in a pool) gets
    // one copy of each side's notification.
    let mut py_events: Vec<_> = py_notes.iter().map(|n| n["event_type"].clone()).collect();
    py_events.sort_by_key(|v| v.to_string());
    check(
        py_events == vec![json!("mixed.py"), json!("mixed.rs")],
        format!("the Python listener got {py_notes:?}"),
    );
    let mut got = inbox.lock().unwrap().clone();
    got.sort_by_key(|n| n.3);
    check(
        got == vec![
            (Priority::Info, "mixed.py".into(), "py".into(), 1),
            (Priority::Info, "mixed.rs".into(), "rs".into(), 2),
        ],
        format!("the Rust listener got {got:?}"),
    );
    drop(python);
    rust.0.stop_and_wait().unwrap();
    rust.1.stop_and_wait().unwrap();
    let mut queues = vec![
        topic.clone(),
        format!("{topic}.py1"),
        format!("{topic}.rs1"),
        format!("{topic}_fanout"),
        pool.clone(),
    ];
    queues.extend(
        [
            "audit", "debug", "info", "warn", "error", "critical", "sample",
        ]
        .iter()
        .map(|p| format!("{notes}.{p}")),
    );
    py.delete_queues(&queues);
    py.run(&["delete-exchanges", &exchange, &format!("{topic}_fanout")]);
    failures
}

trait TapSorted {
    fn tap_sorted(self) -> Self;
}

impl TapSorted for Vec<Value> {
    fn tap_sorted(mut self) -> Self {
        self.sort_by_key(|v| v.to_string());
        self
    }
}

#[test]
fn python_and_rust_services_share_quorum_durable_and_stream_topics_both_ways() {
    let Some(py) = peer() else { return };
    let failures: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = MIXED_OPTIONS
            .iter()
            .flat_map(|options| [(*options, true), (*options, false)])
            .map(|(options, python_first)| {
                let py = &py;
                scope.spawn(move || mixed_deployment(py, options, python_first))
            })
            .collect();
        runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// oslo's `kombu_compression=gzip` on both sides, and on one side only: calls work
/// both ways (each side reads a compressed body by its header, compressing or not).
#[test]
fn compressed_messages_flow_both_ways_with_kombu_compression() {
    let Some(py) = peer() else { return };
    let compressed = Peer {
        url: format!("{}?kombu_compression=gzip", py.url),
        python: py.python.clone(),
    };
    // Python (compressing, then not) calls a compressing Rust server.
    let topic = unique("interop_zlib");
    let running = rust_server(&compressed.url, &topic, "rs1", Seen::default());
    for caller in [&compressed, &py] {
        let answer = caller.run(&[
            "call",
            "--topic",
            &topic,
            "--timeout",
            "20",
            "add",
            r#"{"a": 2, "b": 3}"#,
        ]);
        assert_eq!(answer, json!({"result": 5}), "{}", caller.url);
    }
    running.stop_and_wait().unwrap();
    // A compressing Rust client calls a compressing Python server.
    let py_topic = unique("interop_zlib_py");
    let server = compressed.start(&["server", "--topic", &py_topic, "--server", "py1"]);
    let client = RpcClient::new(
        messaging_transports::open(&compressed.url).unwrap(),
        Target::new(py_topic.clone()),
    )
    .with_timeout(Duration::from_secs(20));
    let sum: i64 = client
        .call_blocking(&Context::new(), "add", &json!({"a": 4, "b": 5}))
        .unwrap();
    assert_eq!(sum, 9);
    drop(server);
    py.delete_queues(&[
        topic.clone(),
        format!("{topic}.rs1"),
        py_topic.clone(),
        format!("{py_topic}.py1"),
    ]);
}
