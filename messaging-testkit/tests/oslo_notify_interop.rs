//! Notifications between Rust and the real Python oslo.messaging (18.3.1,
//! `interop/oslo_peer.py`) on RabbitMQ, in oslo's two message formats: the
//! `messaging` driver's 1.0 (no envelope) and `messagingv2`'s 2.0 (the
//! `oslo.version` envelope).
//!
//! * A Rust notifier with both drivers feeds an oslo notification listener: each
//!   notification arrives twice (one copy per driver) with its payload, event type,
//!   priority, publisher id, message id and redacted context intact; a plain AMQP
//!   queue bound beside it shows one body of each format.
//! * A Python notifier with each driver feeds a Rust listener, which reads both.
//!
//! Runs when `MESSAGING_TEST_RABBIT_URL` and `MESSAGING_TEST_OSLO_PYTHON` (the venv's
//! python, from `interop/setup-venv.sh`) are set.

mod raw_amqp;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier, NotifyDriver,
};
use messaging_core::{Context, Priority, Target, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::ServerThread;
use raw_amqp::Tap;
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

/// The lines a child prints, read on a thread of their own.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Peer {
    fn command(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut command = Command::new(&self.python);
        command
            .arg(SCRIPT)
            .arg(subcommand)
            .args(["--url", &self.url, "--log-level", "ERROR"])
            .args(args)
            .env("PYTHONWARNINGS", "ignore")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    /// Runs a one-shot subcommand and returns the JSON line it printed.
    fn run(&self, subcommand: &str, args: &[&str]) -> Value {
        let mut child = self.command(subcommand, args).spawn().expect("python runs");
        let lines = lines_of(&mut child);
        let Ok(line) = lines.recv_timeout(LIMIT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("oslo_peer {subcommand} {args:?} printed nothing within {LIMIT:?}")
        };
        // It exits once its transport is cleaned up.
        let _ = child.wait();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// Starts `listen` and returns once it printed `READY`.
    fn listen(&self, topic: &str) -> PythonListener {
        let mut child = self
            .command("listen", &["--topic", topic])
            .spawn()
            .expect("python runs");
        let lines = lines_of(&mut child);
        let ready = lines.recv_timeout(LIMIT);
        let listener = PythonListener { child, lines };
        assert_eq!(
            ready.as_deref(),
            Ok("READY"),
            "the oslo listener did not start"
        );
        listener
    }
}

/// An oslo notification listener in a child process, stopped (SIGTERM, then killed)
/// when dropped.
struct PythonListener {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PythonListener {
    /// The next `count` notifications it printed, waiting up to `limit` in all.
    fn notifications(&self, count: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(serde_json::from_str(&line).unwrap()),
                Err(_) => break,
            }
        }
        got
    }
}

impl Drop for PythonListener {
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

/// The queues an oslo listener of `topic` declares (one per priority).
fn listener_queues(topic: &str) -> Vec<String> {
    Priority::ALL
        .iter()
        .map(|p| format!("{topic}.{}", p.as_str()))
        .collect()
}

fn is_oslo_timestamp(text: &str) -> bool {
    // `2026-11-25 16:29:49.450261`
    let bytes = text.as_bytes();
    bytes.len() == 26
        && bytes[4] == b'-'
        && bytes[10] == b' '
        && bytes[19] == b'.'
        && text.bytes().filter(|b| b.is_ascii_digit()).count() == 20
}

#[test]
fn python_listeners_read_rust_messaging_and_messagingv2_notifications() {
    let Some(py) = peer() else { return };
    let topic = unique("interop_formats");
    let token = format!("gAAAAAB-{}", ids::hex_id());
    let python = py.listen(&topic);
    let tap = Tap::bind(
        &py.url,
        &unique("interop_formats_tap"),
        "openstack",
        &[format!("{topic}.info"), format!("{topic}.error")],
    );
    let notifier = Notifier::new(messaging_transports::open(&py.url).unwrap(), "rust.host1")
        .with_topics([topic.as_str()])
        .with_drivers([NotifyDriver::Messaging, NotifyDriver::MessagingV2]);
    let context: Context = [
        ("user", json!("u1")),
        ("project_id", json!("p1")),
        ("request_id", json!("req-interop-1")),
        ("roles", json!(["admin", "member"])),
        ("auth_token", json!(token)),
        ("service_token", json!(token)),
    ]
    .into_iter()
    .collect();
    let sent = [
        (
            Priority::Info,
            "compute.instance.create.end",
            json!({"id": 1, "name": "vm-1", "flavor": {"vcpus": 2, "ram": 4.5}}),
        ),
        (
            Priority::Error,
            "compute.instance.delete.error",
            json!({"id": 2, "reason": "naïve ünïcode"}),
        ),
    ];
    for (priority, event_type, payload) in &sent {
        block_on(notifier.notify(&context, *priority, event_type, payload)).unwrap();
    }
    let got = python.notifications(4, LIMIT);
    assert_eq!(got.len(), 4, "the oslo listener printed {got:?}");
    // oslo's amqp driver adds `client_timeout` to every context it unpacks.
    let expected_context = json!({
        "client_timeout": null,
        "user": "u1",
        "project_id": "p1",
        "request_id": "req-interop-1",
        "roles": ["admin", "member"],
        "auth_token": null,
    });
    for (priority, event_type, payload) in &sent {
        let copies: Vec<&Value> = got
            .iter()
            .filter(|n| n["event_type"] == *event_type)
            .collect();
        assert_eq!(copies.len(), 2, "one copy per driver: {got:?}");
        for copy in &copies {
            assert_eq!(copy["priority"], priority.as_str(), "{copy}");
            assert_eq!(copy["publisher_id"], "rust.host1", "{copy}");
            assert_eq!(copy["payload"], *payload, "{copy}");
            assert_eq!(copy["ctxt"], expected_context, "{copy}");
            let timestamp = copy["metadata"]["timestamp"].as_str().unwrap();
            assert!(is_oslo_timestamp(timestamp), "{timestamp}");
        }
        // Both copies are the same notification.
        assert_eq!(
            copies[0]["metadata"]["message_id"],
            copies[1]["metadata"]["message_id"]
        );
    }
    // On the wire: for each notification one body without the envelope and one in
    // it, neither with the token.
    let bodies = tap.take(4, LIMIT);
    assert_eq!(bodies.len(), 4);
    let mut formats = Vec::new();
    for body in &bodies {
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(!text.contains(&token), "{text}");
        let outer: Value = serde_json::from_str(&text).unwrap();
        let (format, inner) = match outer.get("oslo.message") {
            Some(inner) => {
                assert_eq!(outer["oslo.version"], "2.0");
                (
                    "2.0",
                    serde_json::from_str::<Value>(inner.as_str().unwrap()).unwrap(),
                )
            }
            None => ("1.0", outer),
        };
        formats.push((inner["event_type"].as_str().unwrap().to_owned(), format));
    }
    formats.sort();
    assert_eq!(
        formats,
        [
            ("compute.instance.create.end".to_owned(), "1.0"),
            ("compute.instance.create.end".to_owned(), "2.0"),
            ("compute.instance.delete.error".to_owned(), "1.0"),
            ("compute.instance.delete.error".to_owned(), "2.0"),
        ]
    );
    drop(python);
    py.run(
        "delete-queues",
        &listener_queues(&topic)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
}

/// What the Rust listener got: (priority, event type, publisher, payload, context).
type Inbox = Arc<Mutex<Vec<(Priority, String, String, Value, Context)>>>;

fn rust_listener(url: &str, topic: &str, inbox: Inbox) -> ServerThread {
    let mut endpoint = NotificationEndpoint::new();
    for priority in [Priority::Info, Priority::Error] {
        let inbox = inbox.clone();
        endpoint = endpoint.on(priority, move |n: Notification<Value>| {
            inbox.lock().unwrap().push((
                n.priority,
                n.event_type,
                n.publisher_id,
                n.payload,
                n.context,
            ));
            NotificationResult::Handled
        });
    }
    let server = messaging_core::notify::listener(
        messaging_transports::open(url).unwrap(),
        vec![Target::new(topic)],
        vec![endpoint],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

#[test]
fn a_rust_listener_reads_python_messaging_and_messagingv2_notifications() {
    let Some(py) = peer() else { return };
    let topic = unique("interop_py_formats");
    let inbox = Inbox::default();
    let listener = rust_listener(&py.url, &topic, inbox.clone());
    let tap = Tap::bind(
        &py.url,
        &unique("interop_py_formats_tap"),
        "openstack",
        &[format!("{topic}.info"), format!("{topic}.error")],
    );
    let token = format!("gAAAAAB-{}", ids::hex_id());
    let context = json!({
        "user": "u2",
        "project_id": "p2",
        "request_id": "req-interop-2",
        "auth_token": token,
    })
    .to_string();
    for (driver, priority, id) in [("messaging", "info", 1), ("messagingv2", "error", 2)] {
        let payload = json!({"id": id, "driver": driver}).to_string();
        let sent = py.run(
            "notify",
            &[
                "--topic",
                &topic,
                "--priority",
                priority,
                "--event-type",
                &format!("py.{driver}"),
                "--publisher-id",
                "python.host1",
                "--driver",
                driver,
                "--context",
                &context,
                &payload,
            ],
        );
        assert_eq!(sent, json!({"notified": "ok"}));
    }
    let deadline = Instant::now() + LIMIT;
    while inbox.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", inbox.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut got = inbox.lock().unwrap().clone();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    for ((priority, event_type, publisher, payload, context), (driver, expected_priority, id)) in
        got.iter().zip([
            ("messaging", Priority::Info, 1),
            ("messagingv2", Priority::Error, 2),
        ])
    {
        assert_eq!(*priority, expected_priority);
        assert_eq!(*event_type, format!("py.{driver}"));
        assert_eq!(publisher, "python.host1");
        assert_eq!(*payload, json!({"id": id, "driver": driver}));
        // oslo sent `RequestContext.from_dict(...).redacted_copy().to_dict()`.
        assert_eq!(context.get("user"), Some(&json!("u2")));
        assert_eq!(context.get("request_id"), Some(&json!("req-interop-2")));
        assert_eq!(context.get("auth_token"), Some(&Value::Null));
    }
    // Python did send one of each format.
    let bodies = tap.take(2, LIMIT);
    let enveloped: Vec<bool> = bodies
        .iter()
        .map(|b| {
            serde_json::from_slice::<Value>(b)
                .unwrap()
                .get("oslo.version")
                .is_some()
        })
        .collect();
    assert_eq!(enveloped.len(), 2);
    assert_eq!(
        enveloped.iter().filter(|e| **e).count(),
        1,
        "one 1.0 and one 2.0 body"
    );
    listener.stop_and_wait().unwrap();
    py.run(
        "delete-queues",
        &[&format!("{topic}.info"), &format!("{topic}.error")],
    );
}
