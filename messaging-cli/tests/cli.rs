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

#[cfg(target_os = "linux")]
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while !catches_sigint_and_sigterm(child.id()) {
        assert!(Instant::now() < deadline, "no signal handlers");
        thread::sleep(Duration::from_millis(5));
    }
    // Serving: a signal while the server is still starting ends it as interrupted
    // (exit 1, see `stop.rs`); a clean stop is a stop of a running server.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("serving ") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
            "serve ended before serving"
        );
    }
    let drain = thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let status = Process::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "a clean stop exits 0");
            let _ = drain.join();
            break;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- hardening (issue 9)

/// What a run of the binary did.
struct Exited {
    code: Option<i32>,
    out: String,
    err: String,
    took: Duration,
}

/// Runs the binary with `env` and `stdin`, killing it (and failing) after `limit`.
fn binary(args: &[&str], env: &[(&str, &str)], stdin: &[u8], limit: Duration) -> Exited {
    use std::process::Stdio;
    let mut command = Process::new(env!("CARGO_BIN_EXE_messaging"));
    command
        .args(args)
        .env_remove("MESSAGING_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => {
            let output = output.unwrap();
            Exited {
                code: output.status.code(),
                out: String::from_utf8_lossy(&output.stdout).into_owned(),
                err: String::from_utf8_lossy(&output.stderr).into_owned(),
                took: started.elapsed(),
            }
        }
        Err(_) => {
            let _ = Process::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("messaging {args:?} still running after {limit:?}");
        }
    }
}

const USAGE: Option<i32> = Some(exit::USAGE as i32);

/// One line on stderr, `error: ...`, and no panic.
fn assert_one_error_line(ran: &Exited, context: &str) {
    assert_eq!(ran.err.lines().count(), 1, "{context}: {}", ran.err);
    assert!(ran.err.starts_with("error: "), "{context}: {}", ran.err);
    assert!(!ran.err.contains("panicked"), "{context}: {}", ran.err);
}

#[test]
fn large_numbers_and_large_arguments_travel_verbatim() {
    let bus = "memory:///cli-verbatim";
    let server = serve(bus, "thread-pool");
    let big = "123456789012345678901234567890";
    let kwargs = format!("{{\"value\": {{\"n\": {big}, \"x\": -1.50e-400, \"f\": 4.0}}}}");
    let ran = messaging(&["call", "--url", bus, "--topic", "svc", "echo", &kwargs]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    assert_eq!(
        ran.out,
        format!("{{\"n\":{big},\"x\":-1.50e-400,\"f\":4.0}}\n")
    );

    // More than 128 KiB (the most one argument can carry on Linux), from a file.
    let text = "y".repeat(200 * 1024);
    let path = std::env::temp_dir().join(format!("messaging-cli-{}.json", std::process::id()));
    std::fs::write(&path, format!("{{\"value\": [\"{text}\", {big}]}}")).unwrap();
    let file = format!("@{}", path.display());
    let ran = messaging(&["call", "--url", bus, "--topic", "svc", "echo", &file]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    assert_eq!(ran.out, format!("[\"{text}\",{big}]\n"));

    // A cast's arguments as `serve` prints them.
    let ran = messaging(&["cast", "--url", bus, "--topic", "svc", "echo", &kwargs]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    let lines = server.wait_lines(1);
    assert!(
        lines[0].contains(&format!("\"args\":{{\"value\":{{\"n\":{big},")),
        "{}",
        lines[0]
    );
    drop(server);

    // A notification's payload as `listen` prints it.
    let listener = Background::start(&["listen", "--url", bus, "--topic", "big"], "listening");
    let payload = format!("[{big}, 1.0]");
    let ran = messaging(&[
        "notify",
        "--url",
        bus,
        "--topic",
        "big",
        "--priority",
        "info",
        "--event-type",
        "e",
        &payload,
    ]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    let lines = listener.wait_lines(1);
    assert!(
        lines[0].contains(&format!("\"payload\":[{big},1.0]")),
        "{}",
        lines[0]
    );
}

#[test]
fn errors_quote_the_url_as_given_and_the_codec_is_json() {
    let ran = messaging(&[
        "call",
        "--url",
        "nats://me:s3cret@h:4222/?prefetch=x",
        "--topic",
        "t",
        "m",
    ]);
    assert_eq!(ran.code, exit::USAGE);
    assert_eq!(
        ran.err,
        "error: invalid transport URL `nats://me:***@h:4222/?prefetch=x`: `prefetch` must be a whole number from 1 to 100000, got `x`\n"
    );
    let ran = messaging(&[
        "call",
        "--url",
        "nats://me:s3cret@h/?codec=bincode",
        "--topic",
        "t",
        "m",
    ]);
    assert_eq!(ran.code, exit::USAGE);
    assert!(ran.err.contains("JSON only"), "{}", ran.err);
    assert!(!ran.err.contains("s3cret"), "{}", ran.err);
}

#[test]
fn counts_durations_and_timeouts_are_bounded() {
    for (args, expected) in [
        (
            vec!["demo", "--clients", "100000"],
            "--clients must be from 1 to 1024, got 100000",
        ),
        (
            vec!["demo", "--clients", "0"],
            "--clients must be from 1 to 1024",
        ),
        (
            vec!["demo", "--duration", "1e300"],
            "--duration must be a number of seconds more than 0 and at most 60, got 1e300",
        ),
        (
            vec!["demo", "--duration", "0"],
            "--duration must be a number of seconds more than 0",
        ),
        (
            vec![
                "call",
                "--url",
                "memory://",
                "--topic",
                "t",
                "--timeout",
                "1e300",
                "m",
            ],
            "--timeout must be a number of seconds from 0 to 31536000, got 1e300",
        ),
        (
            vec![
                "notify",
                "--url",
                "memory://",
                "--priority",
                "info",
                "--event-type",
                "e",
                "--timeout",
                "NaN",
                "{}",
            ],
            "--timeout must be a number of seconds from 0 to 31536000, got NaN",
        ),
        (
            vec![
                "serve",
                "--url",
                "memory://",
                "--topic",
                "t",
                "--server",
                "s",
                "--grace",
                "0",
            ],
            "--grace must be a number of seconds more than 0",
        ),
        (
            vec!["listen", "--url", "memory://", "--handler-delay=-1"],
            "--handler-delay must be a number of seconds from 0",
        ),
        (
            vec!["simulate", "rpc-client", "-l", "1e19"],
            "--duration must be a number of seconds more than 0 and at most 31536000",
        ),
    ] {
        let ran = messaging(&args);
        assert_eq!(ran.code, exit::USAGE, "{args:?}: {}", ran.err);
        assert!(ran.err.contains(expected), "{args:?}: {}", ran.err);
        assert_eq!(ran.err.lines().count(), 1, "{args:?}: {}", ran.err);
    }
}

/// Names longer than 255 bytes, empty, with AMQP wildcards or control characters, in
/// every field and every command: exit 2 with one line, before any connection (the URL
/// points at a closed port), never a panic.
#[test]
fn bad_names_exit_2_with_one_line_in_every_command() {
    let url = "rabbit://guest:guest@127.0.0.1:1/";
    let long = "n".repeat(256);
    for bad in [long.as_str(), "", "#", "a.*", "a\u{1b}[31mb", "a\nb"] {
        let commands: Vec<Vec<&str>> = vec![
            vec!["call", "--topic", bad, "m"],
            vec!["call", "--topic", "t", "--server", bad, "m"],
            vec!["call", "--topic", "t", "--exchange", bad, "m"],
            vec!["cast", "--topic", bad, "m"],
            vec!["cast", "--topic", "t", "--fanout", "--exchange", bad, "m"],
            vec!["cast", "--topic", "t", "--server", bad, "m"],
            vec![
                "notify",
                "--topic",
                bad,
                "--priority",
                "info",
                "--event-type",
                "e",
                "{}",
            ],
            vec!["serve", "--topic", bad, "--server", "s"],
            vec!["serve", "--topic", "t", "--server", bad],
            vec!["serve", "--topic", "t", "--server", "s", "--exchange", bad],
            vec!["listen", "--topic", bad],
            vec!["listen", "--topic", "t", "--exchange", bad],
            vec!["listen", "--topic", "t", "--pool", bad],
        ];
        for mut args in commands {
            args.extend(["--url", url]);
            let ran = binary(&args, &[], b"", Duration::from_secs(20));
            let context = format!(
                "{:?}",
                args.iter().map(|a| a.len().min(20)).collect::<Vec<_>>()
            );
            assert_eq!(ran.code, USAGE, "{} {context}: {}", args[0], ran.err);
            assert_one_error_line(&ran, args[0]);
            assert!(!ran.err.contains('\u{1b}'), "{}", ran.err);
        }
    }
}

/// Names each within core's rules that compose to more than NATS takes (a subject over
/// 2000 bytes, a consumer name over 255): exit 2 with one line, before any connection
/// (the URL points at a closed port). Before, the command tried to connect and failed
/// with a connection error (or, with a server, the server refused or dropped it).
#[test]
fn composed_nats_names_too_long_exit_2_with_one_line_before_connecting() {
    let url = "nats://127.0.0.1:1?connect_timeout=1";
    let dots = ".".repeat(255);
    let long = "t".repeat(250);
    let commands: Vec<Vec<&str>> = vec![
        vec![
            "call",
            "--topic",
            &dots,
            "--server",
            &dots,
            "--exchange",
            &dots,
            "m",
        ],
        vec![
            "cast",
            "--topic",
            &dots,
            "--server",
            &dots,
            "--exchange",
            &dots,
            "m",
        ],
        vec![
            "notify",
            "--topic",
            &long,
            "--priority",
            "info",
            "--event-type",
            "e",
            "{}",
        ],
        vec![
            "serve",
            "--topic",
            &dots,
            "--server",
            &dots,
            "--exchange",
            &dots,
        ],
        vec!["listen", "--topic", &long],
    ];
    for mut args in commands {
        args.extend(["--url", url]);
        let ran = binary(&args, &[], b"", Duration::from_secs(20));
        assert_eq!(ran.code, USAGE, "{}: {}", args[0], ran.err);
        assert_one_error_line(&ran, args[0]);
        assert!(
            ran.err.contains("bytes long (at most"),
            "{}: {}",
            args[0],
            ran.err
        );
    }
}

#[test]
fn the_url_can_come_from_messaging_url() {
    let limit = Duration::from_secs(20);
    let call = ["call", "--topic", "t", "--timeout", "0.1", "m"];
    // memory:// from the environment: nobody answers, a timeout.
    let ran = binary(&call, &[("MESSAGING_URL", "memory://")], b"", limit);
    assert_eq!(ran.code, Some(i32::from(exit::TIMEOUT)), "{}", ran.err);
    // --url wins over the environment.
    let mut with_url = call.to_vec();
    with_url.extend(["--url", "memory://"]);
    let ran = binary(&with_url, &[("MESSAGING_URL", "kafka://x")], b"", limit);
    assert_eq!(ran.code, Some(i32::from(exit::TIMEOUT)), "{}", ran.err);
    let ran = binary(&call, &[("MESSAGING_URL", "kafka://x")], b"", limit);
    assert_eq!(ran.code, USAGE);
    assert!(
        ran.err.contains("no transport for scheme `kafka`"),
        "{}",
        ran.err
    );
    // Neither: a usage error naming both.
    let ran = binary(&call, &[], b"", limit);
    assert_eq!(ran.code, USAGE);
    assert!(ran.err.contains("--url"), "{}", ran.err);
    // The help names the variable but never shows its value.
    let secret = [("MESSAGING_URL", "rabbit://u:s3cret@h/")];
    for command in ["call", "cast", "notify", "serve", "listen"] {
        let ran = binary(&[command, "--help"], &secret, b"", limit);
        assert_eq!(ran.code, Some(0));
        assert!(ran.out.contains("MESSAGING_URL"), "{command}: {}", ran.out);
        assert!(!ran.out.contains("s3cret"), "{command}: {}", ran.out);
    }
}

#[test]
fn json_arguments_come_from_stdin_or_a_file_within_a_bound() {
    let limit = Duration::from_secs(20);
    let call = |kwargs: &'static str| {
        vec![
            "call",
            "--url",
            "memory://",
            "--topic",
            "t",
            "--timeout",
            "0.1",
            "m",
            kwargs,
        ]
    };
    // Read and accepted (then nobody answers).
    let big = format!("{{\"v\": \"{}\"}}", "z".repeat(300 * 1024));
    let ran = binary(&call("-"), &[], big.as_bytes(), limit);
    assert_eq!(ran.code, Some(i32::from(exit::TIMEOUT)), "{}", ran.err);
    let ran = binary(&call("-"), &[], b"[1]", limit);
    assert_eq!(ran.code, USAGE);
    assert_eq!(ran.err, "error: JSON_KWARGS must be a JSON object\n");
    let ran = binary(&call("-"), &[], b"{\"secret\": ", limit);
    assert_eq!(ran.code, USAGE);
    assert!(
        ran.err.contains("JSON_KWARGS is not valid JSON"),
        "{}",
        ran.err
    );
    assert!(!ran.err.contains("secret"), "{}", ran.err);
    // An endless source is cut at the bound, not read into memory.
    let ran = binary(&call("@/dev/zero"), &[], b"", limit);
    assert_eq!(ran.code, USAGE);
    assert_eq!(
        ran.err,
        "error: JSON_KWARGS: /dev/zero holds more than 64 MiB\n"
    );
    let ran = binary(&call("@/nonexistent/args.json"), &[], b"", limit);
    assert_eq!(ran.code, USAGE);
    assert!(
        ran.err.contains("cannot read /nonexistent/args.json"),
        "{}",
        ran.err
    );
}

/// A TCP port that accepts connections and never answers: a broker that hangs.
fn silent_broker() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn cast_and_notify_end_at_their_timeout() {
    let silent = silent_broker();
    let port = silent.local_addr().unwrap().port();
    for url in [
        format!("rabbit://guest:guest@127.0.0.1:{port}/"),
        format!("nats://127.0.0.1:{port}"),
    ] {
        let sends: [&[&str]; 2] = [
            &["cast", "--topic", "t", "m"],
            &["notify", "--priority", "info", "--event-type", "e", "{}"],
        ];
        for send in sends {
            let mut args = send.to_vec();
            args.extend(["--url", &url, "--timeout", "1"]);
            let ran = binary(&args, &[], b"", Duration::from_secs(30));
            assert_eq!(
                ran.code,
                Some(i32::from(exit::TIMEOUT)),
                "{args:?}: {}",
                ran.err
            );
            assert_one_error_line(&ran, send[0]);
            assert!(ran.err.contains("timed out after 1s"), "{}", ran.err);
            assert!(
                ran.took >= Duration::from_millis(950) && ran.took < Duration::from_secs(8),
                "{args:?}: took {:?}",
                ran.took
            );
        }
    }
}

/// Whether `pid` has handlers for SIGINT and SIGTERM installed (Linux).
#[cfg(target_os = "linux")]
fn catches_sigint_and_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (2 - 1)) != 0 && mask & (1 << (15 - 1)) != 0)
}

#[cfg(target_os = "linux")]
#[test]
fn a_signal_abandons_a_send_at_once() {
    use std::process::Stdio;
    let silent = silent_broker();
    let port = silent.local_addr().unwrap().port();
    for (args, what) in [
        (
            vec![
                "call".to_owned(),
                "--url".to_owned(),
                format!("nats://127.0.0.1:{port}"),
            ],
            "call",
        ),
        (
            vec![
                "cast".to_owned(),
                "--url".to_owned(),
                format!("rabbit://guest:guest@127.0.0.1:{port}/"),
            ],
            "cast",
        ),
    ] {
        let child = Process::new(env!("CARGO_BIN_EXE_messaging"))
            .args(&args)
            .args(["--topic", "t", "--timeout", "120", "m"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !catches_sigint_and_sigterm(child.id()) {
            assert!(Instant::now() < deadline, "no signal handlers");
            thread::sleep(Duration::from_millis(5));
        }
        let sent = Instant::now();
        Process::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = child.id();
        thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = Process::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("{what}: SIGINT did not end it");
            });
        let output = output.unwrap();
        assert!(
            sent.elapsed() < Duration::from_secs(7),
            "{what}: {:?}",
            sent.elapsed()
        );
        assert_eq!(output.status.code(), Some(i32::from(exit::FAILURE)));
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            format!("error: interrupted: the {what} was abandoned\n")
        );
    }
}

#[cfg(target_os = "linux")] // script(1) of util-linux
#[test]
fn logs_have_colours_only_on_a_terminal_without_no_color() {
    // -v: the notifier logs each send at debug level.
    let notify = [
        "-v",
        "notify",
        "--url",
        "memory://",
        "--priority",
        "info",
        "--event-type",
        "e",
        "{}",
    ];
    let ran = binary(&notify, &[], b"", Duration::from_secs(20));
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    assert!(ran.err.contains("DEBUG"), "{}", ran.err);
    assert!(!ran.err.contains('\u{1b}'), "{}", ran.err);
    // On a terminal (script(1) gives it one): colours, unless NO_COLOR is set.
    let command = format!("{} {}", env!("CARGO_BIN_EXE_messaging"), notify.join(" "));
    for (no_color, coloured) in [(None, true), (Some("1"), false)] {
        let mut script = Process::new("script");
        script.args(["-qec", &command, "/dev/null"]);
        script.env_remove("NO_COLOR").env_remove("RUST_LOG");
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        let output = script.output().expect("script(1) from util-linux");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("DEBUG"), "{text}");
        assert_eq!(
            text.contains('\u{1b}'),
            coloured,
            "NO_COLOR={no_color:?}: {text:?}"
        );
    }
}

#[test]
fn notify_reports_a_bad_topic_as_a_usage_error() {
    let ran = messaging(&[
        "notify",
        "--url",
        "memory://",
        "--topic",
        "ok",
        "--topic",
        "",
        "--priority",
        "info",
        "--event-type",
        "e",
        "{}",
    ]);
    assert_eq!(ran.code, exit::USAGE, "{}", ran.err);
    assert_eq!(ran.err, "error: the topic name is empty: <Target topic=>\n");
}

// ---------------------------------------------------------------- output not written

/// A writer that fails the way stdout does on a full disk (`StorageFull`) or a closed
/// pipe (`BrokenPipe`).
struct Failing(std::io::ErrorKind);

impl Write for Failing {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.0.into())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Err(self.0.into())
    }
}

/// [`messaging`] with a stdout that fails with `kind`, failing the test if it has not
/// returned within 60 s (a watchdog: `listen` and `serve` run until stopped).
fn messaging_failing_stdout(args: &[&str], kind: std::io::ErrorKind) -> Ran {
    let (err, shutdown) = (Buffer::default(), Shutdown::new());
    let cli = Cli::try_parse_from(std::iter::once("messaging").chain(args.iter().copied()))
        .expect("valid arguments");
    let (done, code) = std::sync::mpsc::channel();
    {
        let (err, shutdown) = (Output::new(err.clone()), shutdown.clone());
        thread::spawn(move || {
            let _ = done.send(run(cli, &Output::new(Failing(kind)), &err, &shutdown));
        });
    }
    let code = code
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            shutdown.trigger();
            shutdown.trigger();
            panic!("{args:?} still running: {}", err.text())
        });
    Ran {
        code,
        out: String::new(),
        err: err.text(),
    }
}

/// The last line of `err`: the error, one line.
fn last_line(err: &str) -> &str {
    err.lines().last().unwrap_or_default()
}

#[test]
fn call_and_demo_fail_when_stdout_takes_nothing() {
    use std::io::ErrorKind::{BrokenPipe, StorageFull};
    let bus = "memory:///cli-unwritten-call";
    let _server = serve(bus, "thread-pool");
    for kind in [StorageFull, BrokenPipe] {
        let call = [
            "call",
            "--url",
            bus,
            "--topic",
            "svc",
            "echo",
            r#"{"value": 1}"#,
        ];
        let ran = messaging_failing_stdout(&call, kind);
        assert_eq!(ran.code, exit::FAILURE, "{kind:?}: {}", ran.err);
        assert_eq!(ran.err.lines().count(), 1, "{}", ran.err);
        assert!(
            ran.err.starts_with("error: cannot write to stdout: "),
            "{}",
            ran.err
        );
        let ran = messaging_failing_stdout(&["demo", "--duration", "0.3"], kind);
        assert_eq!(ran.code, exit::FAILURE, "{kind:?}: {}", ran.err);
        assert!(
            last_line(&ran.err).starts_with("error: cannot write to stdout: "),
            "{}",
            ran.err
        );
    }
}

/// Notifies `n` notifications with payloads `{"n": 0}`, `{"n": 1}`, ... on `bus`.
fn notify_numbered(bus: &str, topic: &str, n: usize) {
    for i in 0..n {
        let payload = format!("{{\"n\": {i}}}");
        let ran = messaging(&[
            "notify",
            "--url",
            bus,
            "--topic",
            topic,
            "--priority",
            "info",
            "--event-type",
            "e",
            &payload,
        ]);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
    }
}

/// The `n` payload numbers of `lines` (printed notifications), sorted.
fn numbers(lines: &[String]) -> Vec<u64> {
    let mut numbers: Vec<u64> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["payload"]["n"].as_u64().unwrap()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

#[test]
fn listen_requeues_what_it_cannot_print_and_fails() {
    let bus = "memory:///cli-unwritten-listen";
    // The bus (and the notifications stored on it) lives while a transport does.
    let _bus = messaging_transports::open(bus).unwrap();
    notify_numbered(bus, "events", 5);
    let ran = messaging_failing_stdout(
        &["listen", "--url", bus, "--topic", "events"],
        std::io::ErrorKind::StorageFull,
    );
    assert_eq!(ran.code, exit::FAILURE, "{}", ran.err);
    assert!(
        last_line(&ran.err).starts_with("error: cannot write to stdout: ")
            && last_line(&ran.err).ends_with("the notification was requeued"),
        "{}",
        ran.err
    );
    // None was consumed unseen: the next listener prints all of them.
    let listener = Background::start(&["listen", "--url", bus, "--topic", "events"], "listening");
    let lines = listener.wait_lines(5);
    assert_eq!(numbers(&lines), [0, 1, 2, 3, 4]);
    assert_eq!(listener.stop(), exit::OK);
}

#[test]
fn serve_requeues_a_cast_it_cannot_print_and_fails() {
    let bus = "memory:///cli-unwritten-serve";
    let _bus = messaging_transports::open(bus).unwrap();
    let (err, shutdown) = (Buffer::default(), Shutdown::new());
    let (done, exited) = std::sync::mpsc::channel();
    {
        let cli = Cli::try_parse_from([
            "messaging",
            "serve",
            "--url",
            bus,
            "--topic",
            "svc",
            "--server",
            "s1",
        ])
        .unwrap();
        let (err, shutdown) = (Output::new(err.clone()), shutdown.clone());
        thread::spawn(move || {
            let failing = Output::new(Failing(std::io::ErrorKind::BrokenPipe));
            let _ = done.send(run(cli, &failing, &err, &shutdown));
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !err.text().contains("serving") {
        assert!(Instant::now() < deadline, "not ready: {}", err.text());
        thread::sleep(Duration::from_millis(5));
    }
    let cast = [
        "cast",
        "--url",
        bus,
        "--topic",
        "svc",
        "echo",
        r#"{"value": 42}"#,
    ];
    assert_eq!(messaging(&cast).code, exit::OK);
    let code = exited
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            shutdown.trigger();
            shutdown.trigger();
            panic!("serve still running: {}", err.text())
        });
    assert_eq!(code, exit::FAILURE, "{}", err.text());
    assert!(
        last_line(&err.text()).ends_with("the cast was requeued"),
        "{}",
        err.text()
    );
    // The next server takes it.
    let server = serve(bus, "thread-pool");
    let lines = server.wait_lines(1);
    assert!(lines[0].contains("\"value\":42"), "{}", lines[0]);
}

#[test]
fn simulate_fails_when_its_summary_cannot_be_printed_but_writes_its_json() {
    let json = std::env::temp_dir().join(format!(
        "messaging-cli-unwritten-{}.json",
        std::process::id()
    ));
    let json_arg = json.to_str().unwrap().to_owned();
    let ran = messaging_failing_stdout(
        &[
            "simulate",
            "rpc-client",
            "--url",
            "memory:///cli-unwritten-simulate",
            "--with-server",
            "-m",
            "5",
            "--json",
            &json_arg,
        ],
        std::io::ErrorKind::BrokenPipe,
    );
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    assert_eq!(ran.code, exit::FAILURE, "{}", ran.err);
    assert!(
        last_line(&ran.err).starts_with("error: cannot write to stdout: "),
        "{}",
        ran.err
    );
    assert!(text.contains("\"count\": 5"), "{text}");
}

/// Runs the binary with stdout on /dev/full, or on a pipe whose reading end is closed.
#[cfg(target_os = "linux")]
fn binary_unwritten_stdout(args: &[&str], closed_pipe: bool) -> (Option<i32>, String) {
    use std::process::Stdio;
    let mut command = Process::new(env!("CARGO_BIN_EXE_messaging"));
    command
        .args(args)
        .env_remove("MESSAGING_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    if closed_pipe {
        // Closed before the child starts: its first write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        command.stdout(writer);
    } else {
        command.stdout(std::fs::File::create("/dev/full").unwrap());
    }
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            let _ = Process::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("messaging {args:?} still running");
        })
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[cfg(target_os = "linux")]
#[test]
fn the_binary_fails_when_stdout_is_full_or_closed() {
    for closed_pipe in [false, true] {
        let (code, err) = binary_unwritten_stdout(&["demo", "--duration", "0.3"], closed_pipe);
        assert_eq!(code, Some(1), "demo, closed pipe {closed_pipe}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            last_line(&err).starts_with("error: cannot write to stdout: "),
            "{err}"
        );
        // --help and --version that nobody could read are not a success either.
        for args in [&["--help"][..], &["--version"], &["call", "--help"]] {
            let (code, err) = binary_unwritten_stdout(args, closed_pipe);
            assert_eq!(code, Some(1), "{args:?}, closed pipe {closed_pipe}: {err}");
            assert!(
                err.starts_with("error: cannot write to stdout: ") && err.lines().count() == 1,
                "{err}"
            );
        }
    }
}

// ---------------------------------------------------------------- usage errors

#[test]
fn usage_errors_are_one_line_and_help_is_whole() {
    let limit = Duration::from_secs(20);
    for (args, expected) in [
        (&[][..], "`messaging` needs a command: demo, call, cast"),
        (
            &["simulate"][..],
            "`messaging simulate` needs a command: rpc-server",
        ),
        (
            &["call", "--url", "memory://"][..],
            "the following required arguments were not provided: --topic <TOPIC>, <METHOD>",
        ),
        (
            &["call", "--bogus"][..],
            "unexpected argument '--bogus' found",
        ),
        (&["bogus"][..], "unrecognized subcommand 'bogus'"),
        (
            &["serve", "--executor", "nope"][..],
            "[possible values: blocking, thread-pool, event-loop]",
        ),
        (
            // -d is oslo's --debug (no value); the duration is -l.
            &["simulate", "rpc-client", "-m", "1", "-d", "2"][..],
            "unexpected argument '2' found",
        ),
    ] {
        let ran = binary(args, &[], b"", limit);
        assert_eq!(ran.code, USAGE, "{args:?}: {}", ran.err);
        assert_one_error_line(&ran, &format!("{args:?}"));
        assert!(ran.err.contains(expected), "{args:?}: {}", ran.err);
        assert!(
            ran.err
                .trim_end()
                .ends_with("for more information, try '--help'"),
            "{args:?}: {}",
            ran.err
        );
        assert!(ran.out.is_empty(), "{args:?}: {}", ran.out);
    }
    for args in [
        &["--help"][..],
        &["call", "--help"],
        &["simulate", "rpc-client", "--help"],
    ] {
        let ran = binary(args, &[], b"", limit);
        assert_eq!(ran.code, Some(0), "{args:?}");
        assert!(
            ran.out.contains("Usage:") && ran.out.lines().count() > 5,
            "{}",
            ran.out
        );
        assert!(ran.err.is_empty(), "{}", ran.err);
    }
    let ran = binary(&["--version"], &[], b"", limit);
    assert_eq!(ran.code, Some(0));
    assert!(ran.out.starts_with("messaging "), "{}", ran.out);
}

#[test]
fn context_and_kwargs_cannot_both_read_stdin() {
    for send in ["call", "cast"] {
        let ran = binary(
            &[
                send,
                "--url",
                "memory://",
                "--topic",
                "t",
                "--context",
                "-",
                "m",
                "-",
            ],
            &[],
            b"{}",
            Duration::from_secs(20),
        );
        assert_eq!(ran.code, USAGE, "{send}: {}", ran.err);
        assert_one_error_line(&ran, send);
        assert!(
            ran.err.contains("--context -") && ran.err.contains("JSON_KWARGS -"),
            "{send}: {}",
            ran.err
        );
    }
}

// ---------------------------------------------------------------- the transport's own error

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn cast_and_notify_to_a_closed_port_report_the_connection_error() {
    let port = closed_port();
    for url in [
        format!("rabbit://guest:guest@127.0.0.1:{port}/"),
        format!("nats://127.0.0.1:{port}"),
    ] {
        let sends: [&[&str]; 2] = [
            &["cast", "--topic", "t", "m"],
            &["notify", "--priority", "info", "--event-type", "e", "{}"],
        ];
        for send in sends {
            let mut args = send.to_vec();
            args.extend(["--url", &url, "--timeout", "2"]);
            let ran = binary(&args, &[], b"", Duration::from_secs(30));
            assert_eq!(
                ran.code,
                Some(i32::from(exit::FAILURE)),
                "{args:?}: {}",
                ran.err
            );
            // The error, after the transport's warning that it retries.
            let error = last_line(&ran.err);
            let errors = ran.err.lines().filter(|l| l.starts_with("error: ")).count();
            assert_eq!(errors, 1, "{}", ran.err);
            assert!(
                error.starts_with("error: connection failed"),
                "{args:?}: {}",
                ran.err
            );
            assert!(
                error.contains("Connection refused"),
                "{args:?}: {}",
                ran.err
            );
            assert!(
                ran.took < Duration::from_secs(3),
                "{args:?}: took {:?}",
                ran.took
            );
        }
    }
}
