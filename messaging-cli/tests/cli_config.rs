//! `--config-file` and `--config-dir`: the commands read oslo.config files (in the
//! order given), `call`/`cast`/`serve` open the RPC transport and `notify`/`listen` the
//! notification one, and explicit flags (`--url`, `MESSAGING_URL`, `--timeout`,
//! `--topic`) win over the files. In-process over `memory://`, plus the binary for the
//! environment variable.

use std::io::Write;
use std::path::PathBuf;
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
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A directory of config files, removed when dropped.
struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!(
            "messaging-cli-config-{name}-{}-{}",
            std::process::id(),
            messaging_core::ids::hex_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn call_and_serve_take_the_url_and_control_exchange_from_the_file() {
    let files = Files::new("call");
    let conf = files.write(
        "svc.conf",
        "[DEFAULT]\ntransport_url = memory:///cli-config-call\ncontrol_exchange = nova\n",
    );
    let _server = Background::start(
        &[
            "serve",
            "--config-file",
            &conf,
            "--topic",
            "svc",
            "--server",
            "s1",
        ],
        "serving",
    );
    let ran = messaging(&[
        "call",
        "--config-file",
        &conf,
        "--topic",
        "svc",
        "echo",
        r#"{"value": [1, 2]}"#,
    ]);
    assert_eq!(
        (ran.code, ran.out.as_str()),
        (exit::OK, "[1,2]\n"),
        "{}",
        ran.err
    );
    // The server listens on the file's control exchange: a call naming another one
    // reaches nobody.
    let ran = messaging(&[
        "call",
        "--config-file",
        &conf,
        "--topic",
        "svc",
        "--exchange",
        "openstack",
        "--timeout",
        "0.2",
        "echo",
        r#"{"value": 1}"#,
    ]);
    assert_eq!(ran.code, exit::TIMEOUT, "{}", ran.err);
    // --url wins over transport_url; the file's control_exchange still applies.
    let ran = messaging(&[
        "call",
        "--config-file",
        &conf,
        "--url",
        "memory:///cli-config-call",
        "--topic",
        "svc",
        "echo",
        r#"{"value": "flag"}"#,
    ]);
    assert_eq!(
        (ran.code, ran.out.as_str()),
        (exit::OK, "\"flag\"\n"),
        "{}",
        ran.err
    );
}

#[test]
fn the_timeout_comes_from_the_flag_then_rpc_response_timeout_then_30_seconds() {
    let files = Files::new("timeout");
    let conf = files.write(
        "svc.conf",
        "[DEFAULT]\ntransport_url = memory:///cli-config-timeout\nrpc_response_timeout = 1\n",
    );
    let started = Instant::now();
    let ran = messaging(&["call", "--config-file", &conf, "--topic", "nobody", "m"]);
    assert_eq!(ran.code, exit::TIMEOUT, "{}", ran.err);
    assert!(
        ran.err.starts_with("error: timed out after 1s"),
        "{}",
        ran.err
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    let ran = messaging(&[
        "call",
        "--config-file",
        &conf,
        "--timeout",
        "0.2",
        "--topic",
        "nobody",
        "m",
    ]);
    assert_eq!(ran.code, exit::TIMEOUT, "{}", ran.err);
    assert!(
        ran.err.starts_with("error: timed out after 200ms"),
        "{}",
        ran.err
    );
}

#[test]
fn notify_and_listen_use_the_notification_bus_and_its_topics() {
    let files = Files::new("notify");
    let conf = files.write(
        "svc.conf",
        "[DEFAULT]\ntransport_url = memory:///cli-config-rpc\n\
         [oslo_messaging_notifications]\ntransport_url = memory:///cli-config-notify\n\
         topics = audit,\n    versioned\n",
    );
    // No --topic: the file's topics, on the file's notification bus.
    let listener = Background::start(
        &["listen", "--config-file", &conf],
        "listening on audit, versioned",
    );
    // The same topic on the RPC bus hears nothing.
    let rpc_bus = Background::start(
        &[
            "listen",
            "--url",
            "memory:///cli-config-rpc",
            "--topic",
            "audit",
        ],
        "listening on audit",
    );
    let notify = |extra: &[&str], event: &str| {
        let mut args = vec![
            "notify",
            "--config-file",
            &conf,
            "--priority",
            "info",
            "--event-type",
            event,
        ];
        args.extend(extra);
        args.push(r#"{"n": 1}"#);
        let ran = messaging(&args);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
    };
    notify(&[], "both.topics");
    let lines = listener.wait_lines(2);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("\"event_type\":\"both.topics\"")),
        "{lines:?}"
    );
    // --topic wins over topics.
    notify(&["--topic", "versioned"], "one.topic");
    let lines = listener.wait_lines(3);
    assert!(
        lines[2].contains("\"event_type\":\"one.topic\""),
        "{lines:?}"
    );
    // --url wins over the notification bus of the file.
    notify(
        &["--url", "memory:///cli-config-rpc", "--topic", "audit"],
        "over.rpc",
    );
    let heard = rpc_bus.wait_lines(1);
    assert!(
        heard[0].contains("\"event_type\":\"over.rpc\""),
        "{heard:?}"
    );
    thread::sleep(Duration::from_millis(100));
    assert_eq!(listener.out.lines().len(), 3, "{:?}", listener.out.lines());
    assert_eq!(rpc_bus.out.lines().len(), 1);
}

#[test]
fn files_and_dirs_are_read_in_command_line_order() {
    let files = Files::new("order");
    let dir_conf = files.write(
        "conf.d/10-topics.conf",
        "[oslo_messaging_notifications]\ntopics = from_dir\n",
    );
    let dir = PathBuf::from(&dir_conf)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let conf = files.write(
        "svc.conf",
        "[DEFAULT]\ntransport_url = memory:///cli-config-order\n\
         [oslo_messaging_notifications]\ntopics = from_file\n",
    );
    let from_file = Background::start(
        &[
            "listen",
            "--url",
            "memory:///cli-config-order",
            "--topic",
            "from_file",
        ],
        "listening",
    );
    let from_dir = Background::start(
        &[
            "listen",
            "--url",
            "memory:///cli-config-order",
            "--topic",
            "from_dir",
        ],
        "listening",
    );
    for (order, event) in [
        (["--config-dir", &dir, "--config-file", &conf], "file.last"),
        (["--config-file", &conf, "--config-dir", &dir], "dir.last"),
    ] {
        let mut args = vec!["notify"];
        args.extend(order);
        args.extend(["--priority", "info", "--event-type", event, "{}"]);
        let ran = messaging(&args);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
    }
    assert!(from_file.wait_lines(1)[0].contains("file.last"));
    assert!(from_dir.wait_lines(1)[0].contains("dir.last"));
}

#[test]
fn bad_files_are_usage_errors_naming_the_line_never_the_password() {
    let files = Files::new("bad");
    let conf = files.write(
        "svc.conf",
        "[DEFAULT]\ntransport_url = rabbit://u:s3cret@127.0.0.1:1/\n\
         [oslo_messaging_rabbit]\nheartbeat_rate = often\n",
    );
    for command in [
        vec!["cast", "--config-file", &conf, "--topic", "t", "m"],
        vec![
            "serve",
            "--config-file",
            &conf,
            "--topic",
            "t",
            "--server",
            "s",
        ],
    ] {
        let ran = messaging(&command);
        assert_eq!(ran.code, exit::USAGE, "{command:?}: {}", ran.err);
        assert_eq!(
            ran.err,
            format!(
                "error: {conf}:4: [oslo_messaging_rabbit] heartbeat_rate: `heartbeat_rate` must \
                 be a whole number up to 1000, got `often`\n"
            )
        );
    }
    let missing = files.path("missing.conf");
    let ran = messaging(&["call", "--config-file", &missing, "--topic", "t", "m"]);
    assert_eq!(
        (ran.code, ran.err.as_str()),
        (
            exit::USAGE,
            format!("error: config file not found: {missing}\n").as_str()
        )
    );
    let syntax = files.write("syntax.conf", "[DEFAULT]\npassword s3cret\n");
    let ran = messaging(&["listen", "--config-file", &syntax]);
    assert_eq!(ran.code, exit::USAGE);
    assert_eq!(
        ran.err,
        format!("error: {syntax}:2: no `=` or `:` in an assignment\n")
    );
}

/// The binary, for `MESSAGING_URL`: `--url` wins over it, and it over the files.
fn binary(args: &[&str], env: Option<&str>) -> (i32, String) {
    let mut command = Process::new(env!("CARGO_BIN_EXE_messaging"));
    command
        .args(args)
        .env_remove("MESSAGING_URL")
        .env_remove("RUST_LOG");
    if let Some(url) = env {
        command.env("MESSAGING_URL", url);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn messaging_url_wins_over_the_files_and_the_flag_over_it() {
    let files = Files::new("env");
    let conf = files.write("svc.conf", "[DEFAULT]\ntransport_url = kafka://h/\n");
    let call = [
        "call",
        "--config-file",
        &conf,
        "--topic",
        "t",
        "--timeout",
        "0.1",
        "m",
    ];
    // The file alone: its URL.
    let (code, err) = binary(&call, None);
    assert_eq!(code, i32::from(exit::USAGE), "{err}");
    assert!(
        err.contains("[DEFAULT] transport_url") && err.contains("kafka"),
        "{err}"
    );
    // MESSAGING_URL wins over it (memory:// in a process of its own: nobody answers).
    let (code, err) = binary(&call, Some("memory://"));
    assert_eq!(code, i32::from(exit::TIMEOUT), "{err}");
    // --url wins over MESSAGING_URL.
    let mut with_flag = call.to_vec();
    with_flag.extend(["--url", "nats://me:s3cret@h:4222/?prefetch=x"]);
    let (code, err) = binary(&with_flag, Some("memory://"));
    assert_eq!(code, i32::from(exit::USAGE), "{err}");
    assert_eq!(
        err,
        "error: invalid transport URL `nats://me:***@h:4222/?prefetch=x`: `prefetch` must be a \
         whole number from 1 to 100000, got `x`\n"
    );
    // Nothing at all.
    let (code, err) = binary(&["call", "--topic", "t", "m"], None);
    assert_eq!(code, i32::from(exit::USAGE), "{err}");
    assert_eq!(
        err,
        "error: no transport URL: give --url, set MESSAGING_URL, or give a --config-file that \
         sets transport_url\n"
    );
}

#[test]
fn every_bus_command_takes_config_files_and_dirs() {
    for command in ["call", "cast", "notify", "serve", "listen"] {
        let out = Process::new(env!("CARGO_BIN_EXE_messaging"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--config-file <FILE>") && help.contains("--config-dir <DIR>"),
            "{command}: {help}"
        );
    }
}

/// `notify` sends with the files' drivers (oslo's `driver`, repeated) and the routing
/// driver's table (`routing_config`); `--driver` wins over them; with no driver at all
/// the command sends messagingv2 rather than nothing.
#[test]
fn notify_takes_the_drivers_and_routing_table_of_the_files() {
    let files = Files::new("drivers");
    let routing = files.write(
        "routing.yaml",
        "group_1:\n  messagingv2:\n    accepted_events:\n      - compute.instance.*\n",
    );
    let bus = "memory:///cli-config-drivers";
    let conf = |name: &str, drivers: &str| {
        files.write(
            name,
            &format!(
                "[oslo_messaging_notifications]\ntransport_url = {bus}\ntopics = drv\n\
                 {drivers}routing_config = {routing}\n"
            ),
        )
    };
    let noop = conf("noop.conf", "driver = noop\n");
    let routed = conf("routed.conf", "driver = routing\n");
    let none = conf("none.conf", "");
    let listener = Background::start(
        &["listen", "--url", bus, "--topic", "drv"],
        "listening on drv",
    );
    let notify = |conf: &str, extra: &[&str], event: &str| {
        let mut args = vec![
            "notify",
            "--config-file",
            conf,
            "--priority",
            "info",
            "--event-type",
            event,
        ];
        args.extend(extra);
        args.push("{}");
        let ran = messaging(&args);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
    };
    notify(&noop, &[], "dropped.by.noop");
    notify(&routed, &[], "network.not.routed");
    notify(&routed, &[], "compute.instance.create.end");
    notify(&noop, &["--driver", "messagingv2"], "flag.wins");
    notify(&none, &[], "default.v2");
    let lines = listener.wait_lines(3);
    thread::sleep(Duration::from_millis(100));
    let events: Vec<&str> = ["compute.instance.create.end", "flag.wins", "default.v2"].to_vec();
    assert_eq!(listener.out.lines().len(), 3, "{lines:?}");
    for (line, event) in lines.iter().zip(events) {
        assert!(
            line.contains(&format!("\"event_type\":\"{event}\"")),
            "{lines:?}"
        );
    }
    // The routing driver without its table is a usage error naming the option.
    let no_table = files.write(
        "no-table.conf",
        &format!("[oslo_messaging_notifications]\ntransport_url = {bus}\ndriver = routing\n"),
    );
    let ran = messaging(&[
        "notify",
        "--config-file",
        &no_table,
        "--priority",
        "info",
        "--event-type",
        "e",
        "{}",
    ]);
    assert_eq!(ran.code, exit::USAGE, "{}", ran.err);
    assert!(ran.err.contains("routing_config"), "{}", ran.err);
}

/// `simulate` takes `--config-file` before or after its mode (oslo's simulator.py
/// takes it before), and runs on the files' transport URL.
#[test]
fn simulate_runs_on_the_transport_url_of_the_files() {
    let files = Files::new("simulate");
    let conf = files.write(
        "sim.conf",
        "[DEFAULT]\ntransport_url = memory:///cli-config-sim\n",
    );
    for before in [true, false] {
        let json = files.path(&format!("sim-{before}.json"));
        let mut args = vec!["simulate"];
        if before {
            args.extend(["--config-file", conf.as_str()]);
        }
        args.extend([
            "rpc-client",
            "--with-server",
            "-m",
            "5",
            "--json",
            json.as_str(),
        ]);
        if !before {
            args.extend(["--config-file", conf.as_str()]);
        }
        let ran = messaging(&args);
        assert_eq!(ran.code, exit::OK, "{}", ran.err);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(summary["url"], "memory:///cli-config-sim", "{summary}");
        assert_eq!(summary["summary"]["count"], 5, "{summary}");
    }
    // A file without transport_url is an error, not a silent memory:// run.
    let empty = files.write("empty.conf", "[DEFAULT]\n");
    let ran = messaging(&["simulate", "--config-file", &empty, "rpc-client", "-m", "1"]);
    assert_eq!(ran.code, exit::USAGE, "{}", ran.err);
    assert!(ran.err.contains("transport URL"), "{}", ran.err);
}

/// `serve` adds oslo's `oslo_rpc_server_ping` method when the files set
/// `rpc_ping_enabled` (and only then), as an oslo server does.
#[test]
fn serve_answers_oslo_pings_when_rpc_ping_enabled() {
    let files = Files::new("ping");
    for (enabled, name) in [(true, "on"), (false, "off")] {
        let bus = format!("memory:///cli-config-ping-{name}");
        let conf = files.write(
            &format!("{name}.conf"),
            &format!("[DEFAULT]\ntransport_url = {bus}\nrpc_ping_enabled = {enabled}\n"),
        );
        let _server = Background::start(
            &[
                "serve",
                "--config-file",
                &conf,
                "--topic",
                "pinged",
                "--server",
                "s1",
            ],
            "serving",
        );
        let ran = messaging(&[
            "call",
            "--config-file",
            &conf,
            "--topic",
            "pinged",
            "oslo_rpc_server_ping",
            "{}",
        ]);
        if enabled {
            assert_eq!(
                (ran.code, ran.out.as_str()),
                (exit::OK, "\"pong\"\n"),
                "{}",
                ran.err
            );
        } else {
            assert_eq!(ran.code, exit::REMOTE, "{}", ran.err);
            assert!(ran.err.contains("NoSuchMethod"), "{}", ran.err);
        }
    }
}
