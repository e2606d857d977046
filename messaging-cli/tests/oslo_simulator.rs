//! `messaging simulate` against oslo.messaging's own load generator,
//! `tools/simulator.py` (18.3.1, from the sdist: `interop/setup-venv.sh` puts it in
//! `<venv>/tools/`), over RabbitMQ, in both directions: its rpc-server answers our
//! calls, casts and fanout casts; our rpc-server answers its; its notify-client feeds
//! our notify-server and batch-notify-server; our notify-client feeds its notify-server
//! and batch-notify-server. Both sides count: nothing sent is lost, and each side
//! parsed the other's messages (the seq numbers seen, the payload bytes, latencies
//! computed from the other side's timestamps). The `--sync` protocol ends the RPC
//! servers of either side. Every process is killed at the end, failed or not, and the
//! queues of the run are deleted.
//!
//! oslo's flags are given to our binary the way oslo spells them (`-tp`, `-tg`, `-s`,
//! `-l`, `-j`, `-d` before the mode, `--is-cast`, `--is-fanout`, `--sync`).
//!
//! Runs when `MESSAGING_TEST_RABBIT_URL` and `MESSAGING_TEST_OSLO_PYTHON` (the venv's
//! python, `interop/setup-venv.sh | tail -1`) are both set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_messaging");
const SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/setup-venv.sh");
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/oslo_peer.py");
/// How long any one process may run before the test kills it and fails.
const LIMIT: Duration = Duration::from_secs(90);
/// Clients and messages per client of every run.
const CLIENTS: u64 = 2;
const PER_CLIENT: u64 = 15;
const TOTAL: u64 = CLIENTS * PER_CLIENT;

struct Oslo {
    url: String,
    python: PathBuf,
    simulator: PathBuf,
}

/// The environment, or `None` (skipped) without a broker or a venv. A venv without
/// the tools (set up before they were added) gets them from `setup-venv.sh`.
fn oslo() -> Option<Oslo> {
    let (Ok(url), Ok(python)) = (
        std::env::var("MESSAGING_TEST_RABBIT_URL"),
        std::env::var("MESSAGING_TEST_OSLO_PYTHON"),
    ) else {
        eprintln!(
            "skipped: MESSAGING_TEST_RABBIT_URL and MESSAGING_TEST_OSLO_PYTHON are not both set"
        );
        return None;
    };
    let python = PathBuf::from(python);
    let venv = python
        .parent()
        .and_then(Path::parent)
        .expect("MESSAGING_TEST_OSLO_PYTHON is <venv>/bin/python");
    let simulator = venv.join("tools").join("simulator.py");
    if !simulator.exists() {
        let status = Command::new(SETUP)
            .env("OSLO_VENV", venv)
            .stdout(Stdio::null())
            .status()
            .expect("setup-venv.sh runs");
        assert!(status.success(), "setup-venv.sh could not fetch the tools");
    }
    assert!(simulator.exists(), "no {}", simulator.display());
    Some(Oslo {
        url,
        python,
        simulator,
    })
}

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("osim_{name}_{}_{nanos:x}", std::process::id())
}

fn temp_json(topic: &str, side: &str) -> String {
    std::env::temp_dir()
        .join(format!("{topic}-{side}.json"))
        .to_str()
        .unwrap()
        .to_owned()
}

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

// ===== processes =====

/// A child process whose stdout and stderr are collected on threads; killed when
/// dropped (a failing test leaves nothing running).
struct Proc {
    name: String,
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect(from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

impl Proc {
    fn spawn(name: &str, mut command: Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (out, err) = (Arc::default(), Arc::default());
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&out)),
            collect(child.stderr.take().unwrap(), Arc::clone(&err)),
        ];
        Proc {
            name: name.to_owned(),
            child,
            out,
            err,
            readers,
        }
    }

    fn out(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn err(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn dump(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- stderr:\n{}",
            self.name,
            tail(&self.out()),
            tail(&self.err())
        )
    }

    /// Waits until `ready` holds for (stdout, stderr); fails if the process ends first.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !ready(&self.out(), &self.err()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} ended ({status}) before {what}\n{}",
                    self.name,
                    self.dump()
                );
            }
            assert!(Instant::now() < deadline, "no {what}\n{}", self.dump());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to end by itself; its exit code, with all of its output
    /// collected.
    fn finish(&mut self) -> i32 {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not end within {LIMIT:?}\n{}",
                    self.name,
                    self.dump()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status.code().unwrap_or(-1)
    }

    /// [`finish`](Proc::finish), which must exit 0.
    fn succeed(&mut self) {
        let code = self.finish();
        assert_eq!(code, 0, "{} exited {code}\n{}", self.name, self.dump());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last 60 lines of `text` (oslo's debug logs are long).
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

impl Oslo {
    /// oslo's simulator: `simulator.py -d --url URL ARGS` (logs on stdout).
    fn simulator(&self, name: &str, args: &[&str]) -> Proc {
        let mut command = Command::new(&self.python);
        command
            .arg(&self.simulator)
            .args(["-d", "--url", &self.url])
            .args(args)
            .env("PYTHONWARNINGS", "ignore")
            .env("PYTHONUNBUFFERED", "1");
        Proc::spawn(&format!("oslo {name}"), command)
    }

    /// Ours: `messaging simulate --url URL ARGS`, with `-tg` / `-tp` as oslo spells
    /// them (the binary rewrites them).
    fn ours(&self, name: &str, args: &[&str]) -> Proc {
        let mut command = Command::new(BIN);
        command
            .args(["simulate", "--url", &self.url])
            .args(args)
            .env("RUST_LOG", "warn,messaging_cli=debug");
        Proc::spawn(&format!("ours {name}"), command)
    }

    /// Waits until an RPC server (oslo's) consumes `topic.server`: a call of a method
    /// it does not have comes back as a remote error (exit 3).
    fn wait_until_serving(&self, server: &mut Proc, topic: &str, name: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let probe = Command::new(BIN)
                .args([
                    "call", "--url", &self.url, "--topic", topic, "--server", name,
                ])
                .args(["--timeout", "1", "simulator_probe"])
                .output()
                .unwrap();
            if probe.status.code() == Some(3) {
                return;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("{} ended ({status})\n{}", server.name, server.dump());
            }
            assert!(Instant::now() < deadline, "not serving\n{}", server.dump());
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Deletes the queues of a run when dropped.
struct Queues<'a> {
    oslo: &'a Oslo,
    names: Vec<String>,
}

impl Drop for Queues<'_> {
    fn drop(&mut self) {
        let _ = Command::new(&self.oslo.python)
            .args([PEER, "delete-queues", "--url", &self.oslo.url])
            .args(&self.names)
            .env("PYTHONWARNINGS", "ignore")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ===== what the logs say =====

/// One of oslo's summary lines (`calc_stats`):
/// `<label>: duration: D count: N (R msg/sec) bytes: B (R bps)[ latency: L min: A max: Z]`.
#[derive(Debug, PartialEq)]
struct OsloSummary {
    count: u64,
    bytes: u64,
    /// Mean, min, max, in seconds.
    latency: Option<(f64, f64, f64)>,
}

fn number_after<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The summary line of `label` (`server`, `client`, `error`, `round-trip`) in `out`
/// (oslo's stdout).
fn parse_oslo_summary(out: &str, label: &str) -> Option<OsloSummary> {
    let marker = format!(" root {label}: duration: ");
    let line = out.lines().find(|l| l.contains(&marker))?;
    Some(OsloSummary {
        count: number_after(line, " count: ")?,
        bytes: number_after(line, " bytes: ")?,
        latency: match number_after(line, " latency: ") {
            None => None,
            Some(mean) => Some((
                mean,
                number_after(line, " min: ")?,
                number_after(line, " max: ")?,
            )),
        },
    })
}

/// [`parse_oslo_summary`] of a process's stdout, which must have it.
fn oslo_summary(proc: &Proc, label: &str) -> OsloSummary {
    parse_oslo_summary(&proc.out(), label)
        .unwrap_or_else(|| panic!("no `{label}` summary\n{}", proc.dump()))
}

/// How many times each seq was seen: lines holding `marker` followed by
/// `[SEQ, ...` (oslo's `######## RCV: [3, 'abc', ...]`), or ours
/// `simulate: received seq=3`.
fn seqs_after(text: &str, marker: &str) -> BTreeMap<u64, u64> {
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(seq) = digits.parse() {
                *seen.entry(seq).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// Each seq of `0..PER_CLIENT` seen once per client.
fn every_seq_once_per_client() -> BTreeMap<u64, u64> {
    (0..PER_CLIENT).map(|seq| (seq, CLIENTS)).collect()
}

/// What our `--json` says: count, errors, bytes, latency (mean µs), requeued.
fn our_summary(json: &Value) -> (u64, u64, u64, Option<f64>) {
    let summary = &json["summary"];
    (
        summary["count"].as_u64().unwrap(),
        summary["errors"].as_u64().unwrap(),
        summary["bytes"].as_u64().unwrap(),
        summary["latency_us"]["mean"].as_f64(),
    )
}

/// A latency measured between the two processes on one machine: positive and below
/// the time the test allows.
fn assert_sane_seconds(latency: f64, what: &str) {
    assert!(
        latency > 0.0 && latency < LIMIT.as_secs_f64(),
        "{what}: {latency} s"
    );
}

// ===== oslo's rpc-server, our rpc-client =====

/// oslo's rpc-server (`-tp T -s S`), our rpc-client (`-tg T.S`, `--sync`): oslo's
/// server stops by itself a second after our clients' `sync_done`.
fn oslo_server_our_client(name: &str, ours_extra: &[&str], sync: &str) {
    let Some(oslo) = oslo() else { return };
    let topic = unique(name);
    let _queues = Queues {
        oslo: &oslo,
        names: vec![topic.clone(), format!("{topic}.s1")],
    };
    let oslo_json = temp_json(&topic, "oslo");
    let mut server = oslo.simulator(
        "rpc-server",
        &["-tp", &topic, "-s", "s1", "-j", &oslo_json, "rpc-server"],
    );
    oslo.wait_until_serving(&mut server, &topic, "s1");

    let our_json = temp_json(&topic, "ours");
    let target = format!("{topic}.s1");
    let (clients, messages) = (CLIENTS.to_string(), PER_CLIENT.to_string());
    let mut args = vec!["-tg", &target, "-j", &our_json, "rpc-client"];
    args.extend(["-p", &clients, "-m", &messages, "--payload-size", "24"]);
    args.extend(["--timeout", "10", "--sync", sync]);
    args.extend(ours_extra);
    let mut client = oslo.ours("rpc-client", &args);
    client.succeed();
    server.succeed(); // --sync: it stops by itself

    // Ours: every message sent (a call: answered with the message, checked).
    let ours = read_json(&our_json);
    let (count, errors, bytes, _) = our_summary(&ours);
    assert_eq!((count, errors, bytes), (TOTAL, 0, TOTAL * 24), "{ours}");
    // oslo's: every message received and parsed (one-way latency from our client_ts).
    let theirs = oslo_summary(&server, "server");
    assert_eq!(
        (theirs.count, theirs.bytes),
        (TOTAL, TOTAL * 24),
        "{}",
        server.dump()
    );
    let (mean, min, max) = theirs.latency.expect("a latency");
    for latency in [mean, min, max] {
        assert_sane_seconds(latency, "oslo's server latency");
    }
    assert_eq!(
        seqs_after(&server.out(), "######## RCV: ["),
        every_seq_once_per_client(),
        "{}",
        server.dump()
    );
    // Its JSON agrees with its summary line.
    assert_eq!(read_json(&oslo_json)["summary"]["count"], TOTAL);
    eprintln!(
        "{name}: ours sent {count}, oslo's server received {} ({:.1} ms mean one-way)",
        theirs.count,
        mean * 1e3
    );
}

#[test]
fn oslos_rpc_server_answers_our_calls() {
    oslo_server_our_client("call", &[], "call");
    // The replies were oslo's Message lists with server_ts stamped: checked by the
    // client (a mismatch would be an error, and the run has none).
}

#[test]
fn oslos_rpc_server_takes_our_casts() {
    oslo_server_our_client("cast", &["--is-cast"], "call");
}

#[test]
fn oslos_rpc_server_takes_our_fanout_casts() {
    oslo_server_our_client("fanout", &["--is-fanout"], "fanout");
}

// ===== our rpc-server, oslo's rpc-client =====

/// Our rpc-server (`-tp T -s S`), oslo's rpc-client (`-tg T.S --sync ...`): ours
/// stops by itself a second after oslo's clients' `sync_done`.
fn our_server_oslo_client(name: &str, oslo_extra: &[&str]) {
    let Some(oslo) = oslo() else { return };
    let topic = unique(name);
    let _queues = Queues {
        oslo: &oslo,
        names: vec![topic.clone(), format!("{topic}.s1")],
    };
    let our_json = temp_json(&topic, "ours");
    let mut server = oslo.ours(
        "rpc-server",
        &[
            "-tp",
            &topic,
            "-s",
            "s1",
            "-d",
            "-j",
            &our_json,
            "rpc-server",
        ],
    );
    server.wait_for("serving", |_, err| err.contains("serving"));

    let target = format!("{topic}.s1");
    let oslo_json = temp_json(&topic, "oslo");
    let (clients, messages) = (CLIENTS.to_string(), PER_CLIENT.to_string());
    // oslo's -tg takes every word up to the next flag: the mode too, without -j.
    let mut args = vec!["-tg", &target, "-j", &oslo_json, "rpc-client"];
    args.extend(["-p", &clients, "-m", &messages]);
    args.extend(oslo_extra);
    let mut client = oslo.simulator("rpc-client", &args);
    client.succeed();
    // Its JSON agrees with its summary lines.
    let oslo_summaries = read_json(&oslo_json)["summary"].clone();
    assert_eq!(oslo_summaries["client"]["count"], TOTAL, "{oslo_summaries}");
    server.succeed(); // --sync: it stops by itself
    assert!(
        server.err().contains("every --sync client is done"),
        "{}",
        server.dump()
    );

    let sent = oslo_summary(&client, "client");
    let failed = oslo_summary(&client, "error");
    assert_eq!((sent.count, failed.count), (TOTAL, 0), "{}", client.dump());
    // Ours received every message and parsed it: its bytes, its seq, a one-way
    // latency from oslo's client_ts.
    let ours = read_json(&our_json);
    let (count, errors, bytes, latency) = our_summary(&ours);
    assert_eq!((count, errors, bytes), (TOTAL, 0, sent.bytes), "{ours}");
    assert_sane_seconds(latency.expect("a latency") / 1e6, "our server's latency");
    assert_eq!(
        seqs_after(&server.err(), "simulate: received seq="),
        every_seq_once_per_client(),
        "{}",
        server.dump()
    );
    let call = !oslo_extra.contains(&"--is-cast");
    if call {
        // oslo's client took our replies as its Message: return_ts - client_ts.
        let round_trip = oslo_summary(&client, "round-trip");
        assert_eq!(round_trip.count, TOTAL, "{}", client.dump());
        let (mean, min, max) = round_trip.latency.expect("a round trip");
        for latency in [mean, min, max] {
            assert_sane_seconds(latency, "oslo's round trip");
        }
        eprintln!(
            "{name}: oslo sent {}, ours received {count}, oslo's round trip {:.1} ms mean",
            sent.count,
            mean * 1e3
        );
    } else {
        eprintln!("{name}: oslo sent {}, ours received {count}", sent.count);
    }
}

#[test]
fn our_rpc_server_answers_oslos_calls() {
    our_server_oslo_client("ocall", &["--sync", "call"]);
}

#[test]
fn our_rpc_server_takes_oslos_casts() {
    our_server_oslo_client("ocast", &["--is-cast", "--sync", "fanout"]);
}

#[test]
fn our_rpc_server_takes_oslos_fanout_casts() {
    our_server_oslo_client("ofanout", &["--is-cast", "--is-fanout", "--sync", "fanout"]);
}

// ===== oslo's notify-client, our notify servers =====

/// oslo's notify-client (`-tp T`) into our notify server `mode` (which stops at
/// `--expect`).
fn oslo_notifier_our_server(name: &str, mode: &str, ours_extra: &[&str]) -> Value {
    let Some(oslo) = oslo() else {
        return Value::Null;
    };
    let topic = unique(name);
    let _queues = Queues {
        oslo: &oslo,
        names: vec![format!("{topic}.info")],
    };
    let our_json = temp_json(&topic, "ours");
    let total = TOTAL.to_string();
    let mut args = vec![
        "-tp", &topic, "-d", "-j", &our_json, mode, "--expect", &total,
    ];
    args.extend(ours_extra);
    let mut server = oslo.ours(mode, &args);
    server.wait_for("listening", |_, err| err.contains("listening"));

    let (clients, messages) = (CLIENTS.to_string(), PER_CLIENT.to_string());
    let mut client = oslo.simulator(
        "notify-client",
        &[
            "-tp",
            &topic,
            "notify-client",
            "-p",
            &clients,
            "-m",
            &messages,
        ],
    );
    client.succeed();
    server.succeed(); // --expect

    let sent = oslo_summary(&client, "client");
    assert_eq!(sent.count, TOTAL, "{}", client.dump());
    assert_eq!(oslo_summary(&client, "error").count, 0);
    let ours = read_json(&our_json);
    let (count, errors, bytes, latency) = our_summary(&ours);
    assert_eq!((count, errors, bytes), (TOTAL, 0, sent.bytes), "{ours}");
    assert_sane_seconds(latency.expect("a latency") / 1e6, "our listener's latency");
    assert_eq!(
        seqs_after(&server.err(), "simulate: received seq="),
        every_seq_once_per_client(),
        "{}",
        server.dump()
    );
    eprintln!(
        "{name}: oslo sent {}, our {mode} received {count}",
        sent.count
    );
    ours
}

#[test]
fn oslos_notify_client_feeds_our_notify_server() {
    oslo_notifier_our_server("onotify", "notify-server", &[]);
}

#[test]
fn oslos_notify_client_feeds_our_batch_notify_server() {
    oslo_notifier_our_server(
        "obatch",
        "batch-notify-server",
        &["--batch-size", "7", "--batch-timeout", "0.5"],
    );
}

#[test]
fn our_notify_server_requeues_oslos_notifications_once() {
    let ours = oslo_notifier_our_server("orequeue", "notify-server", &["--requeue"]);
    if !ours.is_null() {
        assert_eq!(ours["requeued"], TOTAL, "{ours}");
    }
}

// ===== our notify-client, oslo's notify servers =====

/// Our notify-client (`-tp T`) into oslo's notify server `mode`, which runs for
/// `seconds` (`-l`: it has no other way to stop by itself).
fn our_notifier_oslo_server(name: &str, mode: &str, seconds: &str) {
    let Some(oslo) = oslo() else { return };
    let topic = unique(name);
    let _queues = Queues {
        oslo: &oslo,
        names: vec![format!("{topic}.info")],
    };
    let oslo_json = temp_json(&topic, "oslo");
    // Our notifier declares the queue: nothing is lost if oslo's listener is late.
    let mut server = oslo.simulator(
        mode,
        &["-tp", &topic, "-l", seconds, "-j", &oslo_json, mode],
    );
    let our_json = temp_json(&topic, "ours");
    let (clients, messages) = (CLIENTS.to_string(), PER_CLIENT.to_string());
    let mut args = vec!["-tp", &topic, "-j", &our_json, "notify-client"];
    args.extend(["-p", &clients, "-m", &messages, "--payload-size", "24"]);
    let mut client = oslo.ours("notify-client", &args);
    client.succeed();
    server.succeed(); // -l

    let ours = read_json(&our_json);
    let (count, errors, bytes, _) = our_summary(&ours);
    assert_eq!((count, errors, bytes), (TOTAL, 0, TOTAL * 24), "{ours}");
    let theirs = oslo_summary(&server, "server");
    assert_eq!(
        (theirs.count, theirs.bytes),
        (TOTAL, TOTAL * 24),
        "{}",
        server.dump()
    );
    let (mean, _, max) = theirs.latency.expect("a latency");
    assert_sane_seconds(mean, "oslo's listener latency");
    assert_sane_seconds(max, "oslo's listener latency");
    // Its debug lines show what it parsed: the publisher, the event type, the seq.
    let out = server.out();
    let seqs = if mode == "notify-server" {
        for publisher in ["publisher-0", "publisher-1"] {
            assert!(
                out.contains(&format!(" {publisher} compute.start [")),
                "{}",
                server.dump()
            );
        }
        seqs_after(&out, " compute.start [")
    } else {
        assert!(
            out.contains("'event_type': 'compute.start'"),
            "{}",
            server.dump()
        );
        seqs_after(&out, "'payload': [")
    };
    assert_eq!(seqs, every_seq_once_per_client(), "{}", server.dump());
    assert_eq!(read_json(&oslo_json)["summary"]["count"], TOTAL);
    eprintln!(
        "{name}: ours sent {count}, oslo's {mode} received {} ({:.1} ms mean one-way)",
        theirs.count,
        mean * 1e3
    );
}

#[test]
fn our_notify_client_feeds_oslos_notify_server() {
    our_notifier_oslo_server("notify", "notify-server", "5");
}

#[test]
fn our_notify_client_feeds_oslos_batch_notify_server() {
    // oslo's batch listener waits up to 5 s to fill a batch of 1000.
    our_notifier_oslo_server("batch", "batch-notify-server", "9");
}

// ===== parsing, without a broker =====

#[test]
fn oslo_summary_lines_parse() {
    let out = "2026-12-02 01:31:58,135 INFO root client: duration: 2.00 count: 10 (5.0 msg/sec) \
               bytes: 33664 (16807 bps)\n\
               2026-12-02 01:31:58,135 INFO root round-trip: duration: 1.00 count: 10 (10.0 \
               msg/sec) bytes: 33664 (33638 bps) latency: 0.018 min: 0.005 max: 0.064\n\
               x ######## RCV: [3, 'ab', 1.5, 0, 0]\nx ######## RCV: [12, 'cd', 1.5, 0, 0]\n";
    assert_eq!(
        parse_oslo_summary(out, "client"),
        Some(OsloSummary {
            count: 10,
            bytes: 33664,
            latency: None
        })
    );
    assert_eq!(
        parse_oslo_summary(out, "round-trip").and_then(|s| s.latency),
        Some((0.018, 0.005, 0.064))
    );
    assert_eq!(parse_oslo_summary(out, "server"), None);
    assert_eq!(
        seqs_after(out, "######## RCV: ["),
        BTreeMap::from([(3, 1), (12, 1)])
    );
    assert_eq!(
        seqs_after(
            "[{'payload': [0, 'a'], 'x': 1}, {'payload': [1, 'b']}]",
            "'payload': ["
        ),
        BTreeMap::from([(0, 1), (1, 1)])
    );
}
