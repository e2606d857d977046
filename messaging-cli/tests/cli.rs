//! The `messaging` commands, tested in-process over `memory://` (which only connects
//! clients and servers inside one process), plus the binary's exit codes.

use std::io::Write;
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use messaging_cli::{Cli, Output, Shutdown, exit, run};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

struct Ran {
    code: u8,
    out: String,
    err: String,
}

fn messaging(args: &[&str]) -> Ran {
    let (out, err) = (Buffer::default(), Buffer::default());
    let cli = Cli::try_parse_from(std::iter::once("messaging").chain(args.iter().copied()))
        .expect("valid arguments");
    let code = run(
        cli,
        &Output::new(out.clone()),
        &Output::new(err.clone()),
        &Shutdown::new(),
    );
    Ran {
        code,
        out: out.text(),
        err: err.text(),
    }
}

/// A `serve` or `listen` running on its own thread until dropped.
struct Background {
    shutdown: Shutdown,
    out: Buffer,
    thread: Option<thread::JoinHandle<u8>>,
}

impl Background {
    fn start(args: &[&str], ready: &str) -> Background {
        let (out, err) = (Buffer::default(), Buffer::default());
        let shutdown = Shutdown::new();
        let cli = Cli::try_parse_from(std::iter::once("messaging").chain(args.iter().copied()))
            .expect("valid arguments");
        let thread = {
            let (out, err, shutdown) = (
                Output::new(out.clone()),
                Output::new(err.clone()),
                shutdown.clone(),
            );
            thread::spawn(move || run(cli, &out, &err, &shutdown))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !err.text().contains(ready) {
            assert!(Instant::now() < deadline, "not ready: {}", err.text());
            thread::sleep(Duration::from_millis(5));
        }
        Background {
            shutdown,
            out,
            thread: Some(thread),
        }
    }

    fn wait_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.out.lines().len() < n {
            assert!(Instant::now() < deadline, "only {:?}", self.out.lines());
            thread::sleep(Duration::from_millis(5));
        }
        self.out.lines()
    }

    fn stop(mut self) -> u8 {
        self.shutdown.trigger();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(bus: &str, executor: &str) -> Background {
    Background::start(
        &[
            "serve",
            "--url",
            bus,
            "--topic",
            "svc",
            "--server",
            "s1",
            "--executor",
            executor,
        ],
        "serving",
    )
}

#[test]
fn call_prints_the_json_result_with_numbers_as_sent() {
    for executor in ["blocking", "thread-pool", "event-loop"] {
        let bus = format!("memory:///cli-call-{executor}");
        let server = serve(&bus, executor);
        let ran = messaging(&[
            "call",
            "--url",
            &bus,
            "--topic",
            "svc",
            "echo",
            r#"{"value": {"a": 3, "b": 4.0, "c": [true, null, "x"]}}"#,
        ]);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
        assert_eq!(ran.out, "{\"a\":3,\"b\":4.0,\"c\":[true,null,\"x\"]}\n");
        let ran = messaging(&[
            "call",
            "--url",
            &bus,
            "--topic",
            "svc",
            "--server",
            "s1",
            "sleep",
            r#"{"seconds": 0.01}"#,
        ]);
        assert_eq!(
            (ran.code, ran.out.as_str()),
            (exit::OK, "0.01\n"),
            "{}",
            ran.err
        );
        assert_eq!(server.stop(), exit::OK);
    }
}

#[test]
fn a_remote_error_names_its_class_and_message_on_stderr() {
    let bus = "memory:///cli-fail";
    let _server = serve(bus, "thread-pool");
    let ran = messaging(&[
        "call",
        "--url",
        bus,
        "--topic",
        "svc",
        "fail",
        r#"{"message": "it broke"}"#,
    ]);
    assert_eq!(ran.code, exit::REMOTE);
    assert_eq!(ran.out, "");
    assert_eq!(
        ran.err.trim(),
        "error: remote error: builtins.RuntimeError: it broke"
    );
    let ran = messaging(&["call", "--url", bus, "--topic", "svc", "nope"]);
    assert_eq!(ran.code, exit::REMOTE);
    assert!(ran.err.contains("NoSuchMethod"), "{}", ran.err);
}

#[test]
fn timeouts_and_usage_errors_have_their_own_exit_codes() {
    let ran = messaging(&[
        "call",
        "--url",
        "memory:///cli-nobody",
        "--topic",
        "svc",
        "--timeout",
        "0.2",
        "echo",
        r#"{"value": 1}"#,
    ]);
    assert_eq!(ran.code, exit::TIMEOUT, "{}", ran.err);
    assert!(ran.err.contains("timed out"), "{}", ran.err);
    for (args, expected) in [
        (
            vec![
                "call",
                "--url",
                "memory://",
                "--topic",
                "t",
                "m",
                "{not json",
            ],
            "not valid JSON",
        ),
        (
            vec!["call", "--url", "memory://", "--topic", "t", "m", "[1]"],
            "must be a JSON object",
        ),
        (
            vec!["call", "--url", "kafka://h", "--topic", "t", "m"],
            "no transport for scheme",
        ),
        (
            vec![
                "call",
                "--url",
                "rabbit://u:secret@h:x/",
                "--topic",
                "t",
                "m",
            ],
            "the port is not a number",
        ),
        (
            vec![
                "call",
                "--url",
                "memory://",
                "--topic",
                "t",
                "--fanout",
                "m",
            ],
            "cannot be used with fanout",
        ),
        (
            vec![
                "call",
                "--url",
                "memory://",
                "--topic",
                "t",
                "--timeout=-1",
                "m",
            ],
            "--timeout",
        ),
        (
            vec![
                "notify",
                "--url",
                "memory://",
                "--priority",
                "loud",
                "--event-type",
                "e",
                "{}",
            ],
            "unknown notification priority",
        ),
    ] {
        let ran = messaging(&args);
        assert_eq!(ran.code, exit::USAGE, "{args:?}: {}", ran.err);
        assert!(ran.err.contains(expected), "{args:?}: {}", ran.err);
        assert!(
            !ran.err.contains("secret"),
            "passwords never printed: {}",
            ran.err
        );
    }
}

#[test]
fn serve_prints_a_json_line_per_cast() {
    let bus = "memory:///cli-cast";
    let server = serve(bus, "blocking");
    let ran = messaging(&[
        "cast",
        "--url",
        bus,
        "--topic",
        "svc",
        "--context",
        r#"{"user": "u1"}"#,
        "echo",
        r#"{"value": 7}"#,
    ]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    server.wait_lines(1); // the next cast goes to another queue: keep the order
    let ran = messaging(&[
        "cast",
        "--url",
        bus,
        "--topic",
        "svc",
        "--fanout",
        "echo",
        r#"{"value": 8}"#,
    ]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    let lines = server.wait_lines(2);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["method"], "echo");
    assert_eq!(first["args"]["value"], 7);
    assert_eq!(first["context"]["user"], "u1");
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["args"]["value"], 8);
    assert_eq!(server.stop(), exit::OK);
}

#[test]
fn listen_prints_a_json_line_per_notification() {
    let bus = "memory:///cli-notify";
    let listener = Background::start(
        &["listen", "--url", bus, "--topic", "events", "--pool", "p1"],
        "listening",
    );
    for priority in ["info", "ERROR", "warning"] {
        let ran = messaging(&[
            "notify",
            "--url",
            bus,
            "--topic",
            "events",
            "--priority",
            priority,
            "--event-type",
            "compute.instance.create.end",
            "--publisher-id",
            "compute.host1",
            r#"{"id": 1}"#,
        ]);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
    }
    let lines = listener.wait_lines(3);
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each priority is its own queue: no order between them.
    let mut priorities: Vec<&str> = parsed
        .iter()
        .map(|v| v["priority"].as_str().unwrap())
        .collect();
    priorities.sort_unstable();
    assert_eq!(priorities, ["error", "info", "warn"]);
    for line in &parsed {
        assert_eq!(line["event_type"], "compute.instance.create.end");
        assert_eq!(line["publisher_id"], "compute.host1");
        assert_eq!(line["payload"]["id"], 1);
        assert_eq!(line["message_id"].as_str().map(str::len), Some(36));
    }
    assert_eq!(listener.stop(), exit::OK);
}

#[test]
fn demo_prints_a_row_per_executor() {
    let ran = messaging(&["demo", "--duration", "0.3", "--clients", "2"]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    let lines: Vec<&str> = ran.out.lines().collect();
    assert!(lines[0].starts_with("executor"), "{}", ran.out);
    for (line, executor) in lines[1..]
        .iter()
        .zip(["blocking", "thread-pool", "event-loop"])
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], executor);
        let calls: u64 = fields[1].parse().unwrap();
        assert!(calls > 0, "{line}");
    }
    assert_eq!(ran.err.matches("stopped cleanly").count(), 3);
}

#[test]
fn the_binary_reports_usage_errors_and_help() {
    let bin = env!("CARGO_BIN_EXE_messaging");
    let out = Process::new(bin)
        .args(["call", "--url", "memory://"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("required"));
    for command in [&[][..], &["call"][..], &["serve"][..], &["demo"][..]] {
        let out = Process::new(bin)
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{command:?} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
    let out = Process::new(bin)
        .args([
            "call",
            "--url",
            "memory://",
            "--topic",
            "t",
            "--timeout",
            "0.1",
            "m",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::TIMEOUT)));
}

#[cfg(unix)]
#[test]
fn the_binary_stops_cleanly_on_sigterm() {
    let bin = env!("CARGO_BIN_EXE_messaging");
    let mut child = Process::new(bin)
        .args([
            "serve",
            "--url",
            "memory://",
            "--topic",
            "t",
            "--server",
            "s",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let status = Process::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "a clean stop exits 0");
            break;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
}
