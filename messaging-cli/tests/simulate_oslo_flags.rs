//! `messaging simulate` takes oslo's `tools/simulator.py` command lines: its global
//! flags before or after the mode, `-tg` / `-tp`, `--is-cast`, `--is-fanout`, `-e
//! eventlet|threading`, `--sync`, `--exit-wait`, `batch-notify-server`, `--requeue`;
//! and it behaves as oslo's does with them (targets spread over the clients, the sync
//! protocol ending the server). In-process over `memory://` (servers and clients of one
//! bus share the process), plus the binary for the argv rewriting. The runs against
//! oslo's own script are in `oslo_simulator.rs`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use messaging_cli::{
    Cli, Command as Sub, ExecutorChoice, Output, Shutdown, SimulateMode, SyncMode, exit,
    oslo_short_flags, run,
};
use serde_json::Value;

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
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// `messaging simulate ARGS` as the binary parses it (`-tg` / `-tp` rewritten).
fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let argv = ["messaging", "simulate"].iter().chain(args).copied();
    Cli::try_parse_from(oslo_short_flags(argv))
}

/// A `messaging simulate ARGS` run on its own thread.
struct Running {
    shutdown: Shutdown,
    out: Buffer,
    err: Buffer,
    done: mpsc::Receiver<u8>,
}

#[derive(Debug)]
struct Ran {
    code: u8,
    out: String,
    err: String,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let (out, err, shutdown) = (Buffer::default(), Buffer::default(), Shutdown::new());
        let (tx, done) = mpsc::channel();
        let (o, e, s) = (
            Output::new(out.clone()),
            Output::new(err.clone()),
            shutdown.clone(),
        );
        thread::spawn(move || {
            let _ = tx.send(run(cli, &o, &e, &s));
        });
        Running {
            shutdown,
            out,
            err,
            done,
        }
    }

    /// Starts a server and waits until it serves or listens.
    fn server(args: &[&str]) -> Running {
        let running = Running::start(args);
        let deadline = Instant::now() + LIMIT;
        while !["serving", "listening"]
            .iter()
            .any(|w| running.err.text().contains(w))
        {
            assert!(
                Instant::now() < deadline,
                "not ready: {}",
                running.err.text()
            );
            thread::sleep(Duration::from_millis(5));
        }
        running
    }

    fn join(self) -> Ran {
        let code = self.done.recv_timeout(LIMIT).unwrap_or_else(|e| {
            self.shutdown.trigger();
            panic!("did not finish ({e}); stderr:\n{}", self.err.text())
        });
        Ran {
            code,
            out: self.out.text(),
            err: self.err.text(),
        }
    }
}

fn simulate(args: &[&str]) -> Ran {
    Running::start(args).join()
}

fn json_path(name: &str) -> String {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "messaging-cli-oslo-flags-{}-{name}.json",
        std::process::id()
    ));
    path.to_str().unwrap().to_owned()
}

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).unwrap()
}

fn count(json: &Value) -> u64 {
    json["summary"]["count"].as_u64().expect("a count")
}

#[test]
fn oslos_global_flags_go_before_or_after_the_mode() {
    let before = [
        "--url",
        "memory:///x",
        "-d",
        "-tp",
        "t",
        "-s",
        "s",
        "-tg",
        "t.a",
        "t.b",
        "-l",
        "2",
        "-j",
        "f.json",
        "rpc-client",
    ];
    let after = [
        "rpc-client",
        "--url",
        "memory:///x",
        "-d",
        "-tp",
        "t",
        "-s",
        "s",
        "-l",
        "2",
        "-j",
        "f.json",
        "-tg",
        "t.a",
        "t.b",
    ];
    for args in [&before[..], &after[..]] {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(cli.verbosity(), 1, "-d is debug logging");
        let Sub::Simulate(sim) = cli.command else {
            panic!("not simulate")
        };
        let c = &sim.common;
        assert_eq!(
            (c.url.as_deref().unwrap(), c.topic.as_str()),
            ("memory:///x", "t")
        );
        assert_eq!(c.server, "s");
        assert_eq!(c.targets, ["t.a", "t.b"]);
        assert_eq!(c.duration, Some(2.0));
        assert_eq!(c.json.as_deref(), Some("f.json".as_ref()));
        assert!(c.debug);
        assert!(matches!(sim.mode, SimulateMode::RpcClient(_)));
    }
    // Without them: oslo's defaults.
    let Sub::Simulate(sim) = parse(&["rpc-server"]).unwrap().command else {
        panic!("not simulate")
    };
    assert_eq!(
        (sim.common.topic.as_str(), sim.common.server.as_str()),
        ("profiler_topic", "profiler_server")
    );
    assert!(sim.common.targets.is_empty() && !sim.common.debug);
}

#[test]
fn oslos_mode_flags_parse_with_their_meanings() {
    let Sub::Simulate(sim) = parse(&[
        "rpc-client",
        "-p",
        "4",
        "-m",
        "7",
        "-w",
        "0.5",
        "--timeout",
        "9",
        "--exit-wait",
        "2",
        "--is-cast",
        "--is-fanout",
        "--sync",
        "fanout",
    ])
    .unwrap()
    .command
    else {
        panic!("not simulate")
    };
    let SimulateMode::RpcClient(a) = sim.mode else {
        panic!("not rpc-client")
    };
    assert_eq!((a.client.clients, a.client.messages), (4, Some(7)));
    assert_eq!((a.client.wait_after, a.client.timeout), (0.5, 9.0));
    assert_eq!(a.client.exit_wait, 2.0);
    assert!(a.cast && a.fanout);
    assert_eq!(a.sync, Some(SyncMode::Fanout));

    for (name, choice) in [
        ("eventlet", ExecutorChoice::EventLoop),
        ("threading", ExecutorChoice::ThreadPool),
        ("blocking", ExecutorChoice::Blocking),
    ] {
        let Sub::Simulate(sim) = parse(&["rpc-server", "-e", name, "-w", "1"])
            .unwrap()
            .command
        else {
            panic!("not simulate")
        };
        let SimulateMode::RpcServer(a) = sim.mode else {
            panic!("not rpc-server")
        };
        assert_eq!((a.executor, a.wait_before_answer), (choice, 1.0), "{name}");
    }
    let Sub::Simulate(sim) = parse(&["batch-notify-server", "--requeue", "-w", "1"])
        .unwrap()
        .command
    else {
        panic!("not simulate")
    };
    let SimulateMode::BatchNotifyServer(a) = sim.mode else {
        panic!("not batch-notify-server")
    };
    assert!(a.notify.requeue);
    assert_eq!((a.batch_size, a.batch_timeout), (1000, 5.0), "oslo's batch");

    // -d is oslo's --debug now: no value.
    assert!(parse(&["rpc-client", "-d", "1"]).is_err());
    assert!(parse(&["rpc-client", "--sync", "cast"]).is_err());
    assert!(parse(&["rpc-server", "--requeue"]).is_err());
}

#[test]
fn targets_spread_the_clients_over_servers() {
    let bus = "memory:///oslo-flags-targets";
    let servers: Vec<(Running, String)> = ["s1", "s2"]
        .iter()
        .map(|s| {
            let json = json_path(&format!("targets-{s}"));
            let args = [
                "--url",
                bus,
                "-tp",
                "t",
                "-s",
                s,
                "-j",
                &json,
                "rpc-server",
                "--expect",
                "20",
            ];
            (Running::server(&args), json)
        })
        .collect();
    let client_json = json_path("targets-client");
    let ran = simulate(&[
        "--url",
        bus,
        "-tg",
        "t.s1",
        "t.s2",
        "-j",
        &client_json,
        "rpc-client",
        "-p",
        "4",
        "-m",
        "10",
        "--payload-size",
        "10",
    ]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    assert!(
        ran.err.contains("sending call to t.s1, t.s2"),
        "{}",
        ran.err
    );
    let client = read_json(&client_json);
    assert_eq!(count(&client), 40);
    assert_eq!(client["targets"], serde_json::json!(["t.s1", "t.s2"]));
    // Clients 0 and 2 call s1, 1 and 3 call s2: each server stops at its --expect 20.
    for (server, json) in servers {
        let served = server.join();
        assert_eq!(served.code, exit::OK, "{}", served.err);
        assert_eq!(count(&read_json(&json)), 20);
    }
}

#[test]
fn the_sync_protocol_ends_the_server() {
    for (mode, extra) in [("call", &[][..]), ("fanout", &["--is-cast"][..])] {
        let bus = format!("memory:///oslo-flags-sync-{mode}");
        let server_json = json_path(&format!("sync-{mode}"));
        // No --expect, no -l: only the clients' sync_done stops it.
        let server = Running::server(&["--url", &bus, "-j", &server_json, "rpc-server"]);
        let mut args = vec!["--url", &bus, "rpc-client", "-p", "3", "-m", "5"];
        args.extend(["--sync", mode]);
        args.extend(extra);
        let started = Instant::now();
        let client = simulate(&args);
        assert_eq!(client.code, exit::OK, "{}", client.err);
        let served = server.join();
        assert_eq!(served.code, exit::OK, "{mode}: {}", served.err);
        // A second after the last sync_done (the clients wait a second before it).
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(2), "{mode}: {took:?}");
        let clients = |end: &str| {
            served
                .err
                .lines()
                .filter(|l| l.starts_with("rpc-server: client ") && l.ends_with(end))
                .count()
        };
        assert_eq!(
            (clients(" started"), clients(" is done")),
            (3, 3),
            "{}",
            served.err
        );
        assert!(
            served
                .err
                .contains("every --sync client is done: stopping in 1 s")
        );
        // The sync messages are not counted.
        assert_eq!(count(&read_json(&server_json)), 15, "{mode}");
    }
}

#[test]
fn notify_servers_requeue_each_message_once() {
    for mode in ["notify-server", "batch-notify-server"] {
        let bus = format!("memory:///oslo-flags-requeue-{mode}");
        let json = json_path(&format!("requeue-{mode}"));
        let mut args = vec![
            "--url",
            &bus,
            "-j",
            &json,
            mode,
            "--requeue",
            "--expect",
            "12",
        ];
        if mode == "batch-notify-server" {
            args.extend(["--batch-size", "4", "--batch-timeout", "0.2"]);
        }
        let server = Running::server(&args);
        let client = simulate(&["--url", &bus, "notify-client", "-p", "3", "-m", "4"]);
        assert_eq!(client.code, exit::OK, "{}", client.err);
        let served = server.join();
        assert_eq!(served.code, exit::OK, "{mode}: {}", served.err);
        let json = read_json(&json);
        assert_eq!(count(&json), 12, "{mode}: {json}");
        assert_eq!(json["mode"], mode);
        // Every message went back once (in whole batches for the batch server).
        let requeued = json["requeued"].as_u64().unwrap();
        if mode == "notify-server" {
            assert_eq!(requeued, 12);
        } else {
            assert!(requeued >= 12, "{requeued}");
        }
        assert!(
            served.out.contains(&format!("requeued {requeued}")),
            "{}",
            served.out
        );
    }
}

#[test]
fn batch_notify_server_counts_what_it_takes_in_batches() {
    let bus = "memory:///oslo-flags-batch";
    let json = json_path("batch");
    let server = Running::server(&[
        "--url",
        bus,
        "-j",
        &json,
        "batch-notify-server",
        "--batch-size",
        "5",
        "--batch-timeout",
        "0.2",
        "--expect",
        "23",
    ]);
    let client = simulate(&[
        "--url",
        bus,
        "notify-client",
        "-m",
        "23",
        "--payload-size",
        "3",
    ]);
    assert_eq!(client.code, exit::OK, "{}", client.err);
    let served = server.join();
    assert_eq!(served.code, exit::OK, "{}", served.err);
    let json = read_json(&json);
    assert_eq!(
        (count(&json), json["summary"]["bytes"].as_u64()),
        (23, Some(69))
    );
    assert_eq!(json["requeued"], 0);
}

#[test]
fn duration_wins_over_a_count_and_exit_wait_holds_the_connection() {
    let started = Instant::now();
    let json = json_path("duration");
    let ran = simulate(&[
        "-l",
        "0.5",
        "-j",
        &json,
        "rpc-client",
        "--with-server",
        "-m",
        "3",
        "--exit-wait",
        "0.7",
        "--payload-size",
        "1",
    ]);
    assert_eq!(ran.code, exit::OK, "{}", ran.err);
    assert!(ran.err.contains("-m 3 ignored"), "{}", ran.err);
    assert!(ran.err.contains("--exit-wait"), "{}", ran.err);
    assert!(started.elapsed() >= Duration::from_millis(1200));
    let json = read_json(&json);
    assert!(count(&json) > 3, "{json}");
    assert_eq!(json["messages_per_client"], Value::Null);
    assert_eq!(json["duration_limit_s"], 0.5);
    assert!(
        ran.out.starts_with("rpc-client (call): count"),
        "{}",
        ran.out
    );
}

#[test]
fn bad_oslo_style_arguments_exit_2() {
    for (args, expected) in [
        (vec!["rpc-client", "-tg", ".x"], "--targets \".x\""),
        (
            vec!["rpc-client", "-tg", "t.s", "--with-server"],
            "do not go together",
        ),
        (vec!["rpc-client", "--exit-wait=-1"], "--exit-wait"),
        (
            vec!["batch-notify-server", "--batch-size", "0"],
            "--batch-size",
        ),
        (
            vec!["batch-notify-server", "--batch-timeout", "0"],
            "--batch-timeout",
        ),
        (vec!["notify-client", "--timeout", "0"], "--timeout"),
    ] {
        let ran = simulate(&args);
        assert_eq!(ran.code, exit::USAGE, "{args:?}: {ran:?}");
        assert!(ran.err.contains(expected), "{args:?}: {}", ran.err);
    }
}

#[test]
fn the_binary_takes_oslos_two_letter_flags_and_debug() {
    let json = json_path("binary");
    let out = Command::new(BIN)
        .args(["simulate", "-tp", "bin_topic", "-d", "-j", &json])
        .args(["rpc-client", "--with-server", "-m", "3", "-e", "eventlet"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json = read_json(&json);
    assert_eq!(json["topic"], "bin_topic");
    assert_eq!(json["executor"], "event-loop");
    assert_eq!(
        json["targets"],
        serde_json::json!(["bin_topic.profiler_server"])
    );
    // -d: each message sent and received, in the debug logs.
    for seq in 0..3 {
        assert!(
            stderr.contains(&format!("simulate: sent seq={seq}")),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("simulate: received seq={seq}")));
    }
    // `-tg=V`, and the two-letter flags after the mode.
    let out = Command::new(BIN)
        .args(["simulate", "rpc-client", "-tp=bin2", "-tg=bin2.", "-m", "1"])
        .args(["--timeout", "0.2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sending call to bin2."), "{stderr}");
    // Nobody serves memory:///: every call timed out.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}
