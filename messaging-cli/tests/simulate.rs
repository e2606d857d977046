//! `messaging simulate`, in-process over `memory://` (servers and clients of one bus
//! must share the process): counts match between the two sides, the `--json` keys,
//! timeouts, usage errors; plus the binary. Every run has a watchdog.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command as Process;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use messaging_cli::{Cli, Output, Shutdown, exit, run};
use serde_json::Value;

/// How long any one run may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

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
}

#[derive(Debug)]
struct Ran {
    code: u8,
    out: String,
    err: String,
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(
        ["messaging", "simulate"]
            .into_iter()
            .chain(args.iter().copied()),
    )
}

/// A `messaging simulate ARGS` run on its own thread, under a watchdog.
struct Running {
    shutdown: Shutdown,
    out: Buffer,
    err: Buffer,
    done: mpsc::Receiver<u8>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let cli = parse(args).expect("valid arguments");
        let (out, err, shutdown) = (Buffer::default(), Buffer::default(), Shutdown::new());
        let (tx, done) = mpsc::channel();
        {
            let (out, err, shutdown) = (
                Output::new(out.clone()),
                Output::new(err.clone()),
                shutdown.clone(),
            );
            thread::spawn(move || {
                let _ = tx.send(run(cli, &out, &err, &shutdown));
            });
        }
        Running {
            shutdown,
            out,
            err,
            done,
        }
    }

    /// Starts a server and waits until it says it is serving or listening.
    fn server(args: &[&str]) -> Running {
        let running = Running::start(args);
        let deadline = Instant::now() + LIMIT;
        let err = running.err.clone();
        while !(err.text().contains("serving") || err.text().contains("listening")) {
            assert!(Instant::now() < deadline, "not ready: {}", err.text());
            thread::sleep(Duration::from_millis(5));
        }
        running
    }

    fn join(self) -> Ran {
        let code = self.done.recv_timeout(LIMIT).unwrap_or_else(|e| {
            panic!(
                "simulate did not finish ({e}); stderr so far:\n{}",
                self.err.text()
            )
        });
        Ran {
            code,
            out: self.out.text(),
            err: self.err.text(),
        }
    }

    fn stop(self) -> Ran {
        self.shutdown.trigger();
        self.join()
    }
}

fn simulate(args: &[&str]) -> Ran {
    Running::start(args).join()
}

fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "messaging-cli-simulate-{}-{name}.json",
        std::process::id()
    ))
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}: {text}"))
}

fn count(json: &Value) -> u64 {
    json["summary"]["count"].as_u64().expect("a count")
}

#[test]
fn the_arguments_are_consistent() {
    Cli::command().debug_assert();
}

/// An rpc-server and an rpc-client as two "processes" of one bus: every executor, call,
/// cast and fanout; both sides count exactly what was sent.
#[test]
fn rpc_server_and_client_count_the_same_messages() {
    for (name, executor, extra) in [
        ("call-blocking", "blocking", &[][..]),
        ("call-pool", "thread-pool", &[][..]),
        ("call-loop", "event-loop", &[][..]),
        ("cast", "thread-pool", &["--cast"][..]),
        ("fanout", "event-loop", &["--fanout"][..]),
    ] {
        let bus = format!("memory:///sim-rpc-{name}");
        let (server_json, client_json) = (
            json_path(&format!("{name}-server")),
            json_path(&format!("{name}-client")),
        );
        let server = Running::server(&[
            "rpc-server",
            "--url",
            &bus,
            "--executor",
            executor,
            "--expect",
            "120",
            "--json",
            server_json.to_str().unwrap(),
        ]);
        let mut args = vec![
            "rpc-client",
            "--url",
            &bus,
            "-p",
            "3",
            "-m",
            "40",
            "--payload-size",
            "64",
            "--json",
            client_json.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let client = simulate(&args);
        assert_eq!(client.code, exit::OK, "{name}: {}", client.err);
        // --expect 120: the server stops by itself once it has everything.
        let served = server.join();
        assert_eq!(served.code, exit::OK, "{name}: {}", served.err);

        let client = read_json(&client_json);
        let server = read_json(&server_json);
        assert_eq!(count(&client), 120, "{name}: {client}");
        assert_eq!(client["summary"]["errors"], 0, "{name}");
        assert_eq!(client["summary"]["bytes"], 120 * 64, "{name}");
        assert_eq!(count(&server), 120, "{name}: {server}");
        assert_eq!(server["summary"]["bytes"], 120 * 64, "{name}");
        assert_eq!(server["latency_kind"], "one-way");
        assert_eq!(server["executor"], executor);
        let send = match extra.first() {
            None => "call",
            Some(_) if name == "fanout" => "fanout",
            Some(_) => "cast",
        };
        assert_eq!(client["send"], send, "{name}");
        assert_eq!(
            client["latency_kind"],
            if send == "call" { "round-trip" } else { "send" }
        );
        assert!(client["summary"]["latency_us"]["p50"].is_u64(), "{client}");
        assert!(server["summary"]["latency_us"]["max"].is_u64(), "{server}");
        assert!(
            served
                .out
                .starts_with("rpc-server: count 120  errors 0  duration "),
            "{}",
            served.out
        );
    }
}

#[test]
fn notify_server_and_client_count_the_same_messages() {
    let bus = "memory:///sim-notify";
    let (server_json, client_json) = (json_path("notify-server"), json_path("notify-client"));
    let server = Running::server(&[
        "notify-server",
        "--url",
        bus,
        "--executor",
        "event-loop",
        "--json",
        server_json.to_str().unwrap(),
    ]);
    let client = simulate(&[
        "notify-client",
        "--url",
        bus,
        "-p",
        "2",
        "-m",
        "100",
        "--json",
        client_json.to_str().unwrap(),
    ]);
    assert_eq!(client.code, exit::OK, "{}", client.err);
    assert!(
        client
            .out
            .starts_with("notify-client (notify): count 200  errors 0"),
        "{}",
        client.out
    );
    // No --expect: wait for the count on the progress lines, then stop it (SIGINT).
    let deadline = Instant::now() + LIMIT;
    while !server.err.text().contains("count 200 ") {
        assert!(Instant::now() < deadline, "{}", server.err.text());
        thread::sleep(Duration::from_millis(20));
    }
    let served = server.stop();
    assert_eq!(served.code, exit::OK, "{}", served.err);
    let client = read_json(&client_json);
    let server = read_json(&server_json);
    assert_eq!((count(&client), count(&server)), (200, 200));
    assert_eq!(client["summary"]["bytes"], server["summary"]["bytes"]);
    assert_eq!(client["payload"]["kind"], "oslo-distribution");
    assert_eq!(server["mode"], "notify-server");
}

#[test]
fn with_server_reports_both_sides_of_one_command() {
    for (mode, extra) in [
        ("rpc-client", &[][..]),
        ("rpc-client", &["--cast"][..]),
        ("notify-client", &[][..]),
    ] {
        let path = json_path(&format!("with-server-{mode}-{}", extra.len()));
        let bus = format!("memory:///sim-with-{mode}-{}", extra.len());
        let mut args = vec![
            mode,
            "--url",
            &bus,
            "--with-server",
            "--executor",
            "blocking",
            "-p",
            "4",
            "-m",
            "50",
            "--json",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let ran = simulate(&args);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
        assert_eq!(ran.out.lines().count(), 2, "{}", ran.out);
        let json = read_json(&path);
        assert_eq!(count(&json), 200, "{json}");
        assert_eq!(json["server_side"]["summary"]["count"], 200, "{json}");
        assert_eq!(
            json["server_side"]["summary"]["bytes"],
            json["summary"]["bytes"]
        );
        assert_eq!(json["server_side"]["executor"], "blocking");
        assert_eq!(json["executor"], "blocking");
    }
}

#[test]
fn the_json_has_the_documented_keys() {
    let path = json_path("keys");
    let ran = simulate(&[
        "rpc-client",
        "--url",
        "memory://user:secret@localhost/sim-keys",
        "--with-server",
        "-p",
        "2",
        "-m",
        "30",
        "--payload-size",
        "100",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    let json = read_json(&path);
    let keys = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&json),
        [
            "clients",
            "duration_limit_s",
            "executor",
            "latency_kind",
            "messages_per_client",
            "mode",
            "payload",
            "requeued",
            "send",
            "series",
            "server",
            "server_side",
            "summary",
            "targets",
            "topic",
            "url"
        ]
    );
    assert_eq!(json["mode"], "rpc-client");
    assert_eq!(json["url"], "memory://user:***@localhost/sim-keys");
    assert!(!json.to_string().contains("secret"));
    assert_eq!(
        (json["topic"].as_str(), json["server"].as_str()),
        (Some("profiler_topic"), Some("profiler_server"))
    );
    assert_eq!(
        (
            json["clients"].as_u64(),
            json["messages_per_client"].as_u64()
        ),
        (Some(2), Some(30))
    );
    assert_eq!(json["duration_limit_s"], Value::Null);
    assert_eq!(
        json["payload"],
        serde_json::json!({"kind": "fixed", "size": 100})
    );
    let latency_keys = ["max", "mean", "min", "p50", "p90", "p99"];
    for summary in [&json["summary"], &json["server_side"]["summary"]] {
        assert_eq!(
            keys(summary),
            [
                "bytes",
                "bytes_per_s",
                "count",
                "duration_s",
                "errors",
                "errors_by_kind",
                "latency_us",
                "msgs_per_s"
            ]
        );
        assert_eq!(keys(&summary["latency_us"]), latency_keys);
        let l = &summary["latency_us"];
        let (min, p50, p99, max) = (
            l["min"].as_u64().unwrap(),
            l["p50"].as_u64().unwrap(),
            l["p99"].as_u64().unwrap(),
            l["max"].as_u64().unwrap(),
        );
        assert!(min <= p50 && p50 <= p99 && p99 <= max, "{l}");
        assert_eq!(summary["bytes"], 6000);
        assert!(summary["msgs_per_s"].as_f64().unwrap() > 0.0);
    }
    for series in [&json["series"], &json["server_side"]["series"]] {
        let seconds = series.as_array().expect("a series");
        assert!(!seconds.is_empty());
        let mut total = 0;
        for (i, second) in seconds.iter().enumerate() {
            assert_eq!(
                keys(second),
                ["bytes", "count", "errors", "latency_us", "second"]
            );
            assert_eq!(second["second"], i as u64 + 1);
            total += second["count"].as_u64().unwrap();
        }
        assert_eq!(total, 60);
    }
    assert_eq!(
        keys(&json["server_side"]),
        ["executor", "latency_kind", "series", "summary"]
    );
}

#[test]
fn calls_nobody_answers_are_timeout_errors_and_exit_1() {
    let path = json_path("nobody");
    let ran = simulate(&[
        "rpc-client",
        "--url",
        "memory:///sim-nobody",
        "--timeout",
        "0.2",
        "-m",
        "3",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(ran.code, exit::FAILURE, "{}", ran.err);
    assert!(ran.err.contains("every message failed"), "{}", ran.err);
    assert!(ran.err.contains("timed out"), "{}", ran.err);
    assert!(ran.out.contains("errors 3 (timeout 3)"), "{}", ran.out);
    let json = read_json(&path);
    assert_eq!(json["summary"]["count"], 0);
    assert_eq!(json["summary"]["errors"], 3);
    assert_eq!(json["summary"]["errors_by_kind"]["timeout"], 3);
    assert_eq!(json["summary"]["latency_us"], Value::Null);
}

#[test]
fn some_errors_are_reported_but_the_run_succeeds() {
    // The server answers only for the first part of the run: later calls time out.
    let bus = "memory:///sim-partial";
    let server = Running::server(&["rpc-server", "--url", bus, "--expect", "5"]);
    let path = json_path("partial");
    let ran = simulate(&[
        "rpc-client",
        "--url",
        bus,
        "-m",
        "7",
        "-w",
        "0.1",
        "--timeout",
        "0.3",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(server.join().code, exit::OK);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    let json = read_json(&path);
    let (ok, errors) = (count(&json), json["summary"]["errors"].as_u64().unwrap());
    assert_eq!(ok + errors, 7, "{json}");
    assert!(ok >= 5 && errors >= 1, "{json}");
    let by_kind: u64 = json["summary"]["errors_by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_kind, errors);
    assert!(
        ran.out.contains(&format!("errors {errors} (")),
        "{}",
        ran.out
    );
}

#[test]
fn bad_arguments_exit_2() {
    let missing_dir = std::env::temp_dir()
        .join("messaging-cli-no-such-dir")
        .join("x.json");
    let missing_dir = missing_dir.to_str().unwrap();
    for (args, expected) in [
        (vec!["rpc-client", "-p", "0"], "--clients"),
        (vec!["rpc-client", "-m", "0"], "--messages"),
        (vec!["rpc-client", "-l", "0"], "--duration"),
        (vec!["notify-client", "--duration=-1"], "--duration"),
        (vec!["rpc-client", "--timeout", "0"], "--timeout"),
        (vec!["rpc-client", "--timeout=-2"], "--timeout"),
        (vec!["rpc-client", "-w", "NaN"], "--wait-after"),
        (
            vec!["rpc-client", "--payload-size", "1000000000"],
            "--payload-size",
        ),
        (
            vec!["rpc-client", "--url", "kafka://h"],
            "no transport for scheme",
        ),
        (
            vec!["rpc-client", "--url", "rabbit://u:secret@h:x/"],
            "the port is not a number",
        ),
        (
            vec!["rpc-server", "--url", "rabbit://u:secret@h:x/"],
            "the port is not a number",
        ),
        (vec!["rpc-client", "--json", missing_dir], "cannot write"),
        (vec!["rpc-server", "--json", missing_dir], "cannot write"),
        (vec!["rpc-server", "--expect", "0"], "--expect"),
        (vec!["notify-server", "-l", "0"], "--duration"),
        (vec!["rpc-server", "--server", ""], "--server"),
        (vec!["rpc-server", "-w=-1"], "--wait-before-answer"),
    ] {
        let ran = simulate(&args);
        assert_eq!(ran.code, exit::USAGE, "{args:?}: {ran:?}");
        assert!(ran.err.contains(expected), "{args:?}: {}", ran.err);
        assert!(!ran.err.contains("secret"), "{}", ran.err);
    }
    for args in [
        &["rpc-clients"][..],
        &[][..],
        &["notify-client", "--cast"][..],
        &["rpc-server", "--cast"][..],
        &["rpc-client", "-d", "1", "-m", "5"][..],
        &["rpc-client", "--executor", "blocking"][..], // needs --with-server
        &["rpc-server", "--executor", "green"][..],
        &["rpc-client", "-p", "many"][..],
        &["rpc-client", "--payload-size=-1"][..],
    ] {
        let error = parse(args).expect_err(&format!("{args:?} parses"));
        assert!(error.use_stderr(), "{args:?}");
    }
    let bin = env!("CARGO_BIN_EXE_messaging");
    let out = Process::new(bin)
        .args(["simulate", "rpc-client", "-d", "1", "-m", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
    let out = Process::new(bin)
        .args(["simulate", "rpc-client", "-p", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
}

#[test]
fn clients_can_send_for_a_duration() {
    let path = json_path("duration");
    let started = Instant::now();
    let ran = simulate(&[
        "rpc-client",
        "--url",
        "memory:///sim-duration",
        "--with-server",
        "-l",
        "1.2",
        "-p",
        "2",
        "--payload-size",
        "10",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    assert!(started.elapsed() >= Duration::from_millis(1200));
    assert!(
        ran.err.contains("rpc-client   : sec 1  count "),
        "{}",
        ran.err
    );
    assert!(
        ran.err.contains("rpc-server   : sec 1  count "),
        "{}",
        ran.err
    );
    let json = read_json(&path);
    assert!(count(&json) > 0);
    assert_eq!(
        json["server_side"]["summary"]["count"],
        json["summary"]["count"]
    );
    assert_eq!(json["messages_per_client"], Value::Null);
    assert_eq!(json["duration_limit_s"], 1.2);
    let duration = json["summary"]["duration_s"].as_f64().unwrap();
    assert!((1.2..10.0).contains(&duration), "{duration}");
    assert!(json["series"].as_array().unwrap().len() >= 2);
}

#[test]
fn servers_stop_after_their_duration_or_when_told() {
    let path = json_path("server-duration");
    let started = Instant::now();
    let ran = simulate(&[
        "rpc-server",
        "--url",
        "memory:///sim-idle",
        "-l",
        "0.3",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        ran.out.starts_with("rpc-server: count 0  errors 0"),
        "{}",
        ran.out
    );
    let json = read_json(&path);
    assert_eq!(count(&json), 0);
    assert_eq!(json["summary"]["latency_us"], Value::Null);
    assert_eq!(json["clients"], Value::Null);
    assert_eq!(json["payload"], Value::Null);

    let listener = Running::server(&["notify-server", "--url", "memory:///sim-idle-n"]);
    let ran = listener.stop();
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    assert!(ran.out.starts_with("notify-server: count 0"), "{}", ran.out);
}

#[test]
fn the_oslo_distribution_is_seeded() {
    let run_once = |seed: &str, name: &str| {
        let path = json_path(name);
        let ran = simulate(&[
            "notify-client",
            "--url",
            "memory:///sim-seed",
            "--with-server",
            "-m",
            "300",
            "--seed",
            seed,
            "--json",
            path.to_str().unwrap(),
        ]);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
        read_json(&path)["summary"]["bytes"].as_u64().unwrap()
    };
    let a = run_once("7", "seed-a");
    assert!((300 * 501..=300 * 11_500).contains(&a), "{a}");
    assert_eq!(a, run_once("7", "seed-b"));
    assert_ne!(a, run_once("8", "seed-c"));
}

#[test]
fn the_binary_runs_a_simulation_and_stops_a_server_on_sigterm() {
    let bin = env!("CARGO_BIN_EXE_messaging");
    let out = Process::new(bin)
        .args([
            "simulate",
            "rpc-client",
            "--with-server",
            "-p",
            "2",
            "-m",
            "50",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("rpc-client (call): count 100  errors 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nrpc-server: count 100  errors 0"),
        "{stdout}"
    );

    let out = Process::new(bin)
        .args(["simulate", "rpc-client", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "latency_kind",
        "msgs_per_s",
        "server_side",
        "oslo-distribution",
    ] {
        assert!(help.contains(key), "{key} not in --help");
    }

    #[cfg(unix)]
    {
        let mut child = Process::new(bin)
            .args(["simulate", "rpc-server", "--url", "memory:///sim-term"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(300));
        let killed = Process::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + LIMIT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("simulate rpc-server did not stop on SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("rpc-server: count 0"));
    }
}
