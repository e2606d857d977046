//! The `messaging` binary against the real brokers, as separate processes: `serve`
//! answers `call` and prints `cast`s; `listen` prints what `notify` sends; a
//! `simulate rpc-server` counts what a `simulate rpc-client` sends. Runs for RabbitMQ
//! and NATS when `MESSAGING_TEST_RABBIT_URL` / `MESSAGING_TEST_NATS_URL` are set.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_messaging");

fn url(variable: &str, option: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            Some(format!("{url}{separator}{option}"))
        }
        Err(_) => {
            eprintln!("skipped: {variable} is not set");
            None
        }
    }
}

/// A background `messaging` process with its stdout lines and stderr readiness.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn start(args: &[&str]) -> Background {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving") || line.contains("listening") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the process got ready");
        Background { child, lines }
    }

    fn line(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line");
        serde_json::from_str(&line).unwrap()
    }

    /// Waits for the process to end by itself (killing it after `limit`).
    fn wait(mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the process did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap().code()
    }
}

/// A test that fails half-way must not leave its server running.
impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn messaging(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// [`messaging`], killed (and the test failed) if it runs longer than `limit`.
fn messaging_within(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("messaging {args:?} did not finish within {limit:?}");
        }
    }
}

#[test]
fn serve_call_cast_notify_and_listen_over_rabbitmq() {
    if let Some(url) = url("MESSAGING_TEST_RABBIT_URL", "queue_ttl=600") {
        serve_call_cast_notify_and_listen(&url);
    }
}

#[test]
fn serve_call_cast_notify_and_listen_over_nats() {
    if let Some(url) = url("MESSAGING_TEST_NATS_URL", "consumer_ttl=600") {
        serve_call_cast_notify_and_listen(&url);
    }
}

fn serve_call_cast_notify_and_listen(url: &str) {
    let url = url.to_owned();
    let topic = format!(
        "cli_{}_{}",
        std::process::id(),
        url.split(':').next().unwrap_or("x")
    );
    let server = Background::start(&["serve", "--url", &url, "--topic", &topic, "--server", "s1"]);

    let out = messaging(&[
        "call",
        "--url",
        &url,
        "--topic",
        &topic,
        "echo",
        r#"{"value": {"a": 3, "b": 4.0}}"#,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"a\":3,\"b\":4.0}\n"
    );

    let out = messaging(&[
        "call",
        "--url",
        &url,
        "--topic",
        &topic,
        "--server",
        "s1",
        "fail",
        r#"{"message": "boom"}"#,
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: remote error: builtins.RuntimeError: boom"
    );

    let out = messaging(&[
        "call",
        "--url",
        &url,
        "--topic",
        "nobody_listens_here",
        "--timeout",
        "0.5",
        "echo",
        r#"{"value": 1}"#,
    ]);
    assert_eq!(out.status.code(), Some(4));

    let out = messaging(&[
        "cast",
        "--url",
        &url,
        "--topic",
        &topic,
        "echo",
        r#"{"value": "cast"}"#,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(server.line()["args"]["value"], "cast");

    let listener = Background::start(&["listen", "--url", &url, "--topic", &topic]);
    let out = messaging(&[
        "notify",
        "--url",
        &url,
        "--topic",
        &topic,
        "--priority",
        "warn",
        "--event-type",
        "cli.test",
        r#"{"id": 7}"#,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let note = listener.line();
    assert_eq!(
        (
            note["priority"].as_str(),
            note["event_type"].as_str(),
            note["payload"]["id"].as_i64()
        ),
        (Some("warn"), Some("cli.test"), Some(7))
    );

    assert_eq!(listener.terminate(), Some(0));
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn simulate_rpc_server_and_client_over_rabbitmq() {
    if let Some(url) = url("MESSAGING_TEST_RABBIT_URL", "queue_ttl=600") {
        simulate_rpc(&url);
    }
}

#[test]
fn simulate_rpc_server_and_client_over_nats() {
    if let Some(url) = url("MESSAGING_TEST_NATS_URL", "consumer_ttl=600") {
        simulate_rpc(&url);
    }
}

/// `simulate rpc-server` in one process, `simulate rpc-client -p 2 -m 200` in another:
/// both count the 400 calls.
fn simulate_rpc(url: &str) {
    let scheme = url.split(':').next().unwrap_or("x");
    let topic = format!("sim_{}_{scheme}", std::process::id());
    let json = |side: &str| {
        std::env::temp_dir()
            .join(format!("messaging-cli-brokers-{topic}-{side}.json"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (server_json, client_json) = (json("server"), json("client"));
    let server = Background::start(&[
        "simulate",
        "rpc-server",
        "--url",
        url,
        "--topic",
        &topic,
        "--server",
        "s1",
        "--expect",
        "400",
        "--json",
        &server_json,
    ]);
    let out = messaging_within(
        &[
            "simulate",
            "rpc-client",
            "--url",
            url,
            "--topic",
            &topic,
            "--server",
            "s1",
            "-p",
            "2",
            "-m",
            "200",
            "--timeout",
            "10",
            "--json",
            &client_json,
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("rpc-client (call): count 400  errors 0"),
        "{stdout}"
    );
    // --expect 400: the server ends by itself and prints its summary.
    let summary = server
        .lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the server's summary");
    assert!(
        summary.starts_with("rpc-server: count 400  errors 0"),
        "{summary}"
    );
    assert_eq!(server.wait(Duration::from_secs(30)), Some(0));
    for (path, mode) in [(&server_json, "rpc-server"), (&client_json, "rpc-client")] {
        let text = std::fs::read_to_string(path).unwrap();
        let _ = std::fs::remove_file(path);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["mode"], mode);
        assert_eq!(json["summary"]["count"], 400, "{json}");
        assert_eq!(json["summary"]["errors"], 0, "{json}");
        assert!(!text.contains("guest:guest"), "the password is hidden");
    }
}
