//! `messaging notify --driver`: oslo's notification drivers, repeatable. Unknown names
//! and `routing` (which needs a routing table) are usage errors; `messaging` and
//! `messagingv2` together send one copy each (on RabbitMQ with
//! `MESSAGING_TEST_RABBIT_URL`).

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult,
};
use messaging_core::{Priority, Target, ids};
use messaging_executors::ThreadPoolExecutor;

struct Ran {
    code: Option<i32>,
    err: String,
}

fn messaging(args: &[&str]) -> Ran {
    let output = Command::new(env!("CARGO_BIN_EXE_messaging"))
        .args(args)
        .env_remove("MESSAGING_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Ran {
        code: output.status.code(),
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn notify(url: &str, topic: &str, drivers: &[&str]) -> Ran {
    let mut args = vec![
        "notify",
        "--url",
        url,
        "--topic",
        topic,
        "--priority",
        "info",
        "--event-type",
        "cli.drivers",
        "--timeout",
        "20",
    ];
    for driver in drivers {
        args.extend(["--driver", driver]);
    }
    args.push(r#"{"n": 7}"#);
    messaging(&args)
}

#[test]
fn unknown_drivers_and_routing_are_usage_errors() {
    let kafka = notify("memory://", "t", &["messagingv2", "kafka"]);
    assert_eq!(kafka.code, Some(2), "{}", kafka.err);
    assert!(
        kafka.err.contains("unknown notification driver `kafka`"),
        "{}",
        kafka.err
    );
    let routing = notify("memory://", "t", &["routing"]);
    assert_eq!(routing.code, Some(2), "{}", routing.err);
    assert!(routing.err.contains("routing table"), "{}", routing.err);
    let fine = notify("memory://", "t", &["log", "noop"]);
    assert_eq!(fine.code, Some(0), "{}", fine.err);
}

#[test]
fn messaging_and_messagingv2_each_send_a_copy() {
    let Ok(url) = std::env::var("MESSAGING_TEST_RABBIT_URL") else {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return;
    };
    let topic = format!("cli_drivers_{}", &ids::hex_id()[..10]);
    let url = format!(
        "{url}{}queue_ttl=120",
        if url.contains('?') { "&" } else { "?" }
    );
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let endpoint = NotificationEndpoint::new().on(
        Priority::Info,
        move |n: Notification<serde_json::Value>| {
            let _ = tx.lock().unwrap().send(n.payload);
            NotificationResult::Handled
        },
    );
    let server = messaging_core::notify::listener(
        messaging_transports::open(&url).unwrap(),
        vec![Target::new(topic.clone())],
        vec![endpoint],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    server.start().unwrap();
    let ran = notify(&url, &topic, &["messaging", "messagingv2"]);
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let limit = Duration::from_secs(30);
    assert_eq!(rx.recv_timeout(limit), Ok(serde_json::json!({"n": 7})));
    assert_eq!(rx.recv_timeout(limit), Ok(serde_json::json!({"n": 7})));
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "two copies, not more"
    );
    server.stop().unwrap();
    server.wait().unwrap();
}
