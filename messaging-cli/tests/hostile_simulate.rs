//! `messaging simulate` servers fed by a hostile peer: oslo-shaped messages of the
//! wrong length or types, huge or negative `seq`, negative, zero, tiny and huge
//! timestamps, `sync_start` / `sync_done` with odd ids, and notifications with payloads
//! that are no simulator message. Each is counted as an `invalid` error or refused to
//! its caller; nothing panics; the server serves on and ends with a summary. The
//! argv rewriter with `-tg` / `-tp` in odd places, and `--config-file` naming a
//! directory. In-process over `memory://`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use messaging_cli::{Cli, Output, Shutdown, exit, oslo_short_flags, run};
use messaging_core::dispatch::block_on;
use messaging_core::notify::Notifier;
use messaging_core::rpc::RpcClient;
use messaging_core::{Context, Target};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);
const BIN: &str = env!("CARGO_BIN_EXE_messaging");

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
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
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A `messaging simulate ARGS` server on its own thread, ready.
struct Running {
    shutdown: Shutdown,
    err: Buffer,
    done: mpsc::Receiver<u8>,
}

impl Running {
    fn server(args: &[&str]) -> Running {
        let argv = ["messaging", "simulate"].iter().chain(args).copied();
        let cli = Cli::try_parse_from(oslo_short_flags(argv)).unwrap();
        let (err, shutdown) = (Buffer::default(), Shutdown::new());
        let (tx, done) = mpsc::channel();
        let (o, e, s) = (
            Output::new(Buffer::default()),
            Output::new(err.clone()),
            shutdown.clone(),
        );
        thread::spawn(move || {
            let _ = tx.send(run(cli, &o, &e, &s));
        });
        let deadline = Instant::now() + LIMIT;
        while !["serving", "listening"]
            .iter()
            .any(|w| err.text().contains(w))
        {
            assert!(Instant::now() < deadline, "not ready: {}", err.text());
            thread::sleep(Duration::from_millis(5));
        }
        Running {
            shutdown,
            err,
            done,
        }
    }

    /// Stops the server (as Ctrl-C does) and returns its exit code and stderr.
    fn stop(self) -> (u8, String) {
        self.shutdown.trigger();
        self.join()
    }

    /// Waits for the server to end by itself; its exit code and stderr.
    fn join(self) -> (u8, String) {
        let code = self
            .done
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("did not stop ({e}): {}", self.err.text()));
        (code, self.err.text())
    }
}

fn json_path(name: &str) -> String {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "messaging-cli-hostile-{}-{name}.json",
        std::process::id()
    ));
    path.to_str().unwrap().to_owned()
}

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).unwrap()
}

/// Messages of the simulator's shapes that are malformed: not counted as messages.
fn malformed() -> Vec<Value> {
    vec![
        json!([]),
        json!([1]),
        json!([1, "x", 1.0]),
        json!([1, 2, 3, 4, 5]),
        json!([1, null, 1.0, 0, 0]),
        json!({"seq": 1}),
        json!({"cargo": 5, "client_ts": 1.0}),
        json!("a string"),
        json!(null),
        json!(7),
    ]
}

/// Messages of the right shape with odd numbers: counted, none panics.
fn odd_but_whole() -> Vec<Value> {
    vec![
        json!([u64::MAX, "x", 1.0, 0, 0]),
        json!([-5, "x", -1.0, 0, 0]),
        json!([1e30, "x", 1e308, -1e308, 0]),
        json!(["seq", "x", "ts", "x", "y"]),
        json!([1, "x", 1e-300, 0, 0]),
        json!([1, "x", 0, 0, 0]),
        json!({"seq": -1, "cargo": "", "client_ts": -0.0, "server_ts": "x"}),
        json!({"seq": 2, "cargo": "y".repeat(1 << 20), "client_ts": 1e20}),
    ]
}

#[test]
fn malformed_messages_to_the_rpc_server_are_refused_and_counted() {
    let bus = "memory:///hostile-simulate-rpc";
    let summary = json_path("rpc");
    let server = Running::server(&["--url", bus, "-j", &summary, "rpc-server"]);
    let client = RpcClient::new(
        messaging_transports::open(&format!("{bus}?codec=json")).unwrap(),
        Target::new("profiler_topic").with_server("profiler_server"),
    )
    .with_timeout(Duration::from_secs(10));
    let ctx = Context::new();
    for message in malformed() {
        let error = client
            .call_blocking::<_, Value>(&ctx, "info", &json!({"message": message}))
            .unwrap_err();
        let remote = error
            .remote()
            .unwrap_or_else(|| panic!("{message}: {error}"));
        assert_eq!(remote.class, "ValueError", "{message}: {error}");
    }
    for message in odd_but_whole() {
        let answer: Value = client
            .call_blocking(&ctx, "info", &json!({"message": message}))
            .unwrap_or_else(|e| panic!("{message}: {e}"));
        assert!(answer.is_array() || answer.is_object(), "{answer}");
    }
    // Not the keyword arguments `info` takes, and ids that are no strings.
    for kwargs in [
        json!({}),
        json!({"msg": [1, "x", 1.0, 0, 0]}),
        json!([1, 2]),
    ] {
        let error = client
            .call_blocking::<_, Value>(&ctx, "info", &kwargs)
            .unwrap_err();
        assert!(error.remote().is_some(), "{kwargs}: {error}");
    }
    for (method, kwargs) in [
        ("sync_start", json!({"message": {"id": 7}})),
        ("sync_start", json!({"message": "x"})),
        ("sync_done", json!({})),
    ] {
        let error = client
            .call_blocking::<_, Value>(&ctx, method, &kwargs)
            .unwrap_err();
        assert!(error.remote().is_some(), "{method} {kwargs}: {error}");
    }
    // A client id that would write to the terminal: shown escaped, and cut.
    let forged = format!("\x1b]0;owned\x07\x1b[2J\n{}", "i".repeat(200));
    client
        .call_blocking::<_, Value>(&ctx, "sync_start", &json!({"message": {"id": forged}}))
        .unwrap();
    // One too long to keep: refused.
    let long = "i".repeat(100_000);
    let error = client
        .call_blocking::<_, Value>(&ctx, "sync_start", &json!({"message": {"id": long}}))
        .unwrap_err();
    assert_eq!(error.remote().map(|r| r.class.as_str()), Some("ValueError"));
    let (code, err) = server.stop();
    assert_eq!(code, exit::OK, "{err}");
    assert!(!err.contains('\x1b'), "an escape sequence reached stderr");
    assert!(err.len() < 2_000, "{} bytes on stderr", err.len());
    let summary = read_json(&summary);
    assert_eq!(summary["summary"]["count"], odd_but_whole().len());
    assert_eq!(
        summary["summary"]["errors_by_kind"]["invalid"],
        malformed().len()
    );
}

#[test]
fn malformed_notifications_to_the_notify_servers_are_counted() {
    for mode in ["notify-server", "batch-notify-server"] {
        let bus = format!("memory:///hostile-simulate-{mode}");
        let summary = json_path(mode);
        let expect = odd_but_whole().len().to_string();
        let server = Running::server(&["--url", &bus, "-j", &summary, mode, "--expect", &expect]);
        let notifier = Notifier::new(
            messaging_transports::open(&format!("{bus}?codec=json")).unwrap(),
            "hostile",
        )
        .with_topics(["profiler_topic"]);
        let ctx = Context::new();
        let sent = malformed().len() + odd_but_whole().len();
        for payload in malformed().into_iter().chain(odd_but_whole()) {
            block_on(notifier.info(&ctx, "compute.start", &payload)).unwrap();
        }
        // Other priorities are not the servers' business.
        block_on(notifier.error(&ctx, "compute.start", &json!([1, "x", 1.0, 0, 0]))).unwrap();
        // The server stops by itself once it has counted the whole ones (`--expect`).
        let (code, err) = server.join();
        assert_eq!(code, exit::OK, "{mode}: {err}");
        let summary = read_json(&summary);
        let counted = summary["summary"]["count"].as_u64().unwrap();
        let invalid = summary["summary"]["errors_by_kind"]["invalid"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(counted, odd_but_whole().len() as u64, "{mode}: {summary}");
        assert_eq!(invalid, malformed().len() as u64, "{mode}: {summary}");
        assert_eq!(counted + invalid, sent as u64);
    }
}

// ===== the command line =====

fn messaging(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_letter_flags_in_odd_places_are_usage_errors_never_something_else() {
    for args in [
        // An empty value, after `--`, as the value of another flag, alone at the end.
        &[
            "simulate",
            "--url",
            "memory://",
            "-l",
            "0.2",
            "rpc-client",
            "-tg=",
        ][..],
        &[
            "simulate",
            "--url",
            "memory://",
            "-l",
            "0.2",
            "rpc-client",
            "--",
            "-tg",
            "x",
        ],
        &["simulate", "--url", "memory://", "-j", "-tg", "rpc-client"],
        &["simulate", "--url", "memory://", "rpc-client", "-tg"],
        &["simulate", "--url", "memory://", "-tp=", "rpc-server"],
        &["simulate", "--url", "memory://", "rpc-server", "-s", "-tp"],
        &["simulate", "--url", "memory://", "-tpx", "rpc-server"],
    ] {
        let (code, err) = messaging(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    // Before `simulate` (a value of another command), never rewritten.
    assert_eq!(
        oslo_short_flags(["m", "call", "--topic", "t", "-tp", "simulate"]),
        ["m", "call", "--topic", "t", "-tp", "simulate"]
    );
}

#[test]
fn a_config_file_that_is_a_directory_is_a_usage_error() {
    let dir = std::env::temp_dir().join(format!("hostile-{}.conf", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_text = dir.to_str().unwrap();
    for args in [
        vec![
            "simulate",
            "--config-file",
            dir_text,
            "-l",
            "0.2",
            "rpc-server",
        ],
        vec![
            "simulate",
            "rpc-server",
            "--config-file",
            dir_text,
            "-l",
            "0.2",
        ],
        vec!["call", "--config-file", dir_text, "--topic", "t", "m"],
        vec![
            "notify",
            "--config-file",
            dir_text,
            "--priority",
            "info",
            "--event-type",
            "e",
            "{}",
        ],
    ] {
        let (code, err) = messaging(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("cannot read") && err.contains(dir_text),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
