//! Stopping a busy `serve`, `listen` or `simulate` server, in-process over `memory://`:
//! the first stop request drains within `--grace` (with the lifecycle's "possible hang"
//! warning while it is stuck), a further request or the end of the grace period exits
//! 1 at once, naming the messages left unfinished. The binary's signals while it
//! reads its input or connects end it at once (below, against a broker that never
//! answers); busy servers stopped by signals are tested against the brokers in
//! `cli_brokers.rs`.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
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
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every log line of this test process (warnings and above), as the binary would
/// print them on stderr.
fn logs() -> &'static Buffer {
    static LOGS: OnceLock<Buffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter("warn")
            .init();
        buffer
    })
}

/// Waits (at most 20 s) until `buffer` contains `text`.
fn wait_for(buffer: &Buffer, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !buffer.text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no `{text}` in: {}",
            buffer.text()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("messaging").chain(args.iter().copied()))
        .expect("valid arguments")
}

/// A command run on its own thread.
struct Running {
    shutdown: Shutdown,
    out: Buffer,
    err: Buffer,
    done: std::sync::mpsc::Receiver<u8>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let (out, err, shutdown) = (Buffer::default(), Buffer::default(), Shutdown::new());
        let (tx, done) = std::sync::mpsc::channel();
        let cli = cli(args);
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

    /// The exit code, failing the test if there is none within `limit` (a watchdog).
    fn code_within(&self, limit: Duration) -> u8 {
        self.done
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("still running after {limit:?}: {}", self.err.text()))
    }
}

/// Ends a command that a failed assertion left running.
impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.shutdown.trigger();
    }
}

fn messaging(args: &[&str]) -> u8 {
    run(
        cli(args),
        &Output::new(Buffer::default()),
        &Output::new(Buffer::default()),
        &Shutdown::new(),
    )
}

/// `serve` on `bus` with `--grace`, and a cast of `sleep(seconds)` it has started
/// handling (the cast's line is printed when it is taken).
fn serve_busy(bus: &str, topic: &str, executor: &str, grace: &str, seconds: f64) -> Running {
    let server = Running::start(&[
        "serve",
        "--url",
        bus,
        "--topic",
        topic,
        "--server",
        "s1",
        "--executor",
        executor,
        "--grace",
        grace,
    ]);
    wait_for(&server.err, "serving");
    let kwargs = format!("{{\"seconds\": {seconds}}}");
    let code = messaging(&[
        "cast", "--url", bus, "--topic", topic, "--server", "s1", "sleep", &kwargs,
    ]);
    assert_eq!(code, exit::OK);
    wait_for(&server.out, "\"sleep\"");
    server
}

#[test]
fn serve_lets_the_handlers_in_progress_finish() {
    for executor in ["blocking", "thread-pool", "event-loop"] {
        let (bus, topic) = (format!("memory:///stop-finish-{executor}"), "finish");
        let server = serve_busy(&bus, topic, executor, "20", 0.5);
        let stopped = Instant::now();
        server.shutdown.trigger();
        assert_eq!(
            server.code_within(Duration::from_secs(15)),
            exit::OK,
            "{executor}: {}",
            server.err.text()
        );
        assert!(
            stopped.elapsed() >= Duration::from_millis(300),
            "{executor}: the handler was waited for"
        );
        let err = server.err.text();
        assert!(
            err.contains("waiting up to 20 s for 1 message in progress (Ctrl-C again"),
            "{executor}: {err}"
        );
        assert!(
            err.contains("stopped: every message taken was handled"),
            "{executor}: {err}"
        );
    }
}

#[test]
fn serve_exits_1_when_the_grace_period_ends() {
    for executor in ["blocking", "thread-pool", "event-loop"] {
        let bus = format!("memory:///stop-grace-{executor}");
        let server = serve_busy(&bus, "grace", executor, "1", 30.0);
        let stopped = Instant::now();
        server.shutdown.trigger();
        assert_eq!(
            server.code_within(Duration::from_secs(10)),
            exit::FAILURE,
            "{executor}: {}",
            server.err.text()
        );
        let took = stopped.elapsed();
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(5),
            "{executor}: {took:?}"
        );
        let err = server.err.text();
        assert!(
            err.ends_with(
                "error: the grace period of 1 s is over: exiting with 1 message unfinished\n"
            ),
            "{executor}: {err}"
        );
    }
}

/// The drain logs the lifecycle's warning after half the grace period. (Needs the
/// lifecycle to honour `log_after` while `wait()` drains a thread pool or an event
/// loop, issue 9 item 11; the blocking executor's wait already does.)
#[test]
fn a_stuck_drain_warns_of_a_possible_hang() {
    let logs = logs();
    for executor in ["blocking", "thread-pool", "event-loop"] {
        let (bus, topic) = (
            format!("memory:///stop-hang-{executor}"),
            format!("hang_{}", executor.replace('-', "_")),
        );
        let server = serve_busy(&bus, &topic, executor, "1", 30.0);
        server.shutdown.trigger();
        assert_eq!(server.code_within(Duration::from_secs(10)), exit::FAILURE);
        let warned = logs
            .text()
            .lines()
            .any(|l| l.contains("possible hang") && l.contains(&topic));
        assert!(
            warned,
            "{executor}: no possible-hang warning: {}",
            logs.text()
        );
    }
}

#[test]
fn a_second_stop_request_ends_the_drain_at_once() {
    for executor in ["blocking", "thread-pool", "event-loop"] {
        let bus = format!("memory:///stop-again-{executor}");
        let server = serve_busy(&bus, "again", executor, "60", 30.0);
        server.shutdown.trigger();
        wait_for(&server.err, "stopping");
        let again = Instant::now();
        server.shutdown.trigger();
        assert_eq!(server.code_within(Duration::from_secs(10)), exit::FAILURE);
        assert!(again.elapsed() < Duration::from_secs(2), "{executor}");
        assert!(
            server
                .err
                .text()
                .ends_with("error: stopped again: exiting with 1 message unfinished\n"),
            "{executor}: {}",
            server.err.text()
        );
    }
}

#[test]
fn listen_drains_like_serve() {
    // --handler-delay sleeps after printing: a printed line is a handler running.
    for (grace, delay, stops, expected, last) in [
        (
            "20",
            "0.3",
            1,
            exit::OK,
            "stopped: every message taken was handled\n",
        ),
        (
            "1",
            "30",
            1,
            exit::FAILURE,
            "error: the grace period of 1 s is over: exiting with 1 message unfinished\n",
        ),
        (
            "60",
            "30",
            2,
            exit::FAILURE,
            "error: stopped again: exiting with 1 message unfinished\n",
        ),
    ] {
        let bus = format!("memory:///stop-listen-{grace}");
        let listener = Running::start(&[
            "listen",
            "--url",
            &bus,
            "--topic",
            "events",
            "--grace",
            grace,
            "--handler-delay",
            delay,
        ]);
        wait_for(&listener.err, "listening");
        let code = messaging(&[
            "notify",
            "--url",
            &bus,
            "--topic",
            "events",
            "--priority",
            "info",
            "--event-type",
            "e",
            "{}",
        ]);
        assert_eq!(code, exit::OK);
        wait_for(&listener.out, "\"event_type\":\"e\"");
        for _ in 0..stops {
            listener.shutdown.trigger();
            wait_for(&listener.err, "stopping");
        }
        assert_eq!(
            listener.code_within(Duration::from_secs(10)),
            expected,
            "{}",
            listener.err.text()
        );
        assert!(
            listener.err.text().ends_with(last),
            "{}",
            listener.err.text()
        );
    }
}

#[test]
fn a_simulate_server_that_ends_by_itself_drains_within_its_grace_period() {
    let bus = "memory:///stop-simulate";
    // The server counts a message when its handler starts, then waits 30 s in it.
    let server = Running::start(&[
        "simulate",
        "rpc-server",
        "--url",
        bus,
        "--expect",
        "1",
        "-w",
        "30",
        "--grace",
        "1",
    ]);
    wait_for(&server.err, "serving");
    let client = Running::start(&["simulate", "rpc-client", "--url", bus, "--cast", "-m", "1"]);
    assert_eq!(client.code_within(Duration::from_secs(20)), exit::OK);
    assert_eq!(
        server.code_within(Duration::from_secs(20)),
        exit::FAILURE,
        "{}",
        server.err.text()
    );
    assert!(
        server.err.text().contains("(Ctrl-C to exit at once)"),
        "{}",
        server.err.text()
    );
    assert!(
        server.err.text().ends_with(
            "error: the grace period of 1 s is over: exiting with 1 message unfinished\n"
        ),
        "{}",
        server.err.text()
    );
}

#[test]
fn a_stop_request_ends_the_demo_early() {
    let demo = Running::start(&["demo", "--duration", "60", "--clients", "2"]);
    wait_for(&demo.err, "blocking: 2 clients calling");
    let stopped = Instant::now();
    demo.shutdown.trigger();
    assert_eq!(demo.code_within(Duration::from_secs(20)), exit::FAILURE);
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert!(
        demo.err
            .text()
            .ends_with("error: interrupted: the demo stopped during blocking\n"),
        "{}",
        demo.err.text()
    );
}

// ---------------------------------------------------------------- signals while blocked

/// The binary, running.
#[cfg(target_os = "linux")]
struct Binary {
    child: std::process::Child,
}

#[cfg(target_os = "linux")]
impl Binary {
    /// Starts `messaging ARGS` with `stdin` (a pipe kept open, never written, if
    /// `None`), and waits until it handles SIGINT and SIGTERM.
    fn start(args: &[&str], stdin: Option<std::process::Stdio>) -> Binary {
        use std::process::{Command, Stdio};
        let child = Command::new(env!("CARGO_BIN_EXE_messaging"))
            .args(args)
            .env_remove("MESSAGING_URL")
            .env("RUST_LOG", "off")
            .stdin(stdin.unwrap_or_else(Stdio::piped))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !catches_sigint_and_sigterm(child.id()) {
            assert!(Instant::now() < deadline, "no signal handlers");
            thread::sleep(Duration::from_millis(5));
        }
        Binary { child }
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit code and stderr, failing the test (and killing the process) if it is
    /// still running after `limit` (a watchdog).
    fn exited_within(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err)
                    .unwrap();
                return (status.code(), err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running {limit:?} after the signal");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// How soon a signal must end a blocked command.
const AT_ONCE: Duration = Duration::from_secs(3);

/// A FIFO nobody opens for writing: opening it for reading blocks.
#[cfg(target_os = "linux")]
fn fifo(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("messaging-stop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    path
}

#[cfg(target_os = "linux")]
#[test]
fn a_signal_ends_the_reading_of_an_argument_at_once() {
    let fifo = fifo("args");
    let from_fifo = format!("@{}", fifo.display());
    let notify = [
        "notify",
        "--url",
        "memory://",
        "--priority",
        "info",
        "--event-type",
        "e",
    ];
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["call", "--url", "memory://", "--topic", "t", "m", "-"],
            "-INT",
            "error: interrupted while reading JSON_KWARGS from stdin\n",
        ),
        (
            vec![
                "cast",
                "--url",
                "memory://",
                "--topic",
                "t",
                "--context",
                "-",
                "m",
            ],
            "-TERM",
            "error: interrupted while reading the context from stdin\n",
        ),
        (
            [&notify[..], &["-"]].concat(),
            "-INT",
            "error: interrupted while reading JSON_PAYLOAD from stdin\n",
        ),
        (
            vec![
                "call",
                "--url",
                "memory://",
                "--topic",
                "t",
                "m",
                &from_fifo,
            ],
            "-TERM",
            "", // checked below: names the FIFO
        ),
    ];
    for (args, signal, expected) in cases {
        // stdin: a pipe the test keeps open and never writes to.
        let binary = Binary::start(&args, None);
        thread::sleep(Duration::from_millis(200)); // let it block in the read
        let sent = Instant::now();
        binary.signal(signal);
        let (code, err) = binary.exited_within(Duration::from_secs(20));
        assert!(sent.elapsed() < AT_ONCE, "{args:?}: {:?}", sent.elapsed());
        assert_eq!(code, Some(i32::from(exit::FAILURE)), "{args:?}: {err}");
        if expected.is_empty() {
            assert_eq!(
                err,
                format!(
                    "error: interrupted while reading JSON_KWARGS from {}\n",
                    fifo.display()
                )
            );
        } else {
            assert_eq!(err, expected, "{args:?}");
        }
    }
    let _ = std::fs::remove_file(&fifo);
}

/// A TCP port that accepts connections and never answers: a broker that hangs.
fn silent_broker() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn a_signal_ends_connecting_to_a_broker_that_does_not_answer_at_once() {
    let silent = silent_broker();
    let port = silent.local_addr().unwrap().port();
    let rabbit = format!("rabbit://guest:guest@127.0.0.1:{port}/");
    let nats = format!("nats://127.0.0.1:{port}");
    let cases: Vec<Vec<&str>> = vec![
        vec!["listen", "--url", &rabbit],
        vec!["serve", "--url", &rabbit, "--topic", "t", "--server", "s"],
        vec!["serve", "--url", &nats, "--topic", "t", "--server", "s"],
        vec!["simulate", "rpc-server", "--url", &rabbit],
        vec!["simulate", "notify-server", "--url", &nats],
        // The clients connect with their first sends.
        vec!["simulate", "notify-client", "--url", &rabbit, "-m", "1"],
        vec![
            "simulate",
            "rpc-client",
            "--url",
            &rabbit,
            "--cast",
            "-m",
            "1",
        ],
        vec![
            "simulate",
            "rpc-client",
            "--url",
            &nats,
            "--timeout",
            "120",
            "-m",
            "1",
        ],
    ];
    for args in cases {
        let binary = Binary::start(&args, Some(std::process::Stdio::null()));
        thread::sleep(Duration::from_millis(300)); // let it connect
        let sent = Instant::now();
        binary.signal("-INT");
        let (code, err) = binary.exited_within(Duration::from_secs(30));
        assert!(
            sent.elapsed() < AT_ONCE,
            "{args:?}: {:?}: {err}",
            sent.elapsed()
        );
        if args[0] == "simulate" && args[1].ends_with("client") {
            // A client stopped early reports what it did (nothing) and exits 0.
            assert_eq!(code, Some(i32::from(exit::OK)), "{args:?}: {err}");
        } else {
            assert_eq!(code, Some(i32::from(exit::FAILURE)), "{args:?}: {err}");
            assert!(
                err.ends_with("error: interrupted while connecting\n"),
                "{args:?}: {err}"
            );
        }
    }
}

/// The binary's signal handling: from the second signal on, a command that does not
/// return at once (stuck where nothing can abandon it) is left behind: the process
/// exits.
#[test]
fn a_second_signal_exits_even_when_the_command_does_not_return() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::mpsc;
    for returned in [false, true] {
        let (signals, signalled) = mpsc::channel::<()>();
        let (shutdown, returned_flag, exits) = (
            Shutdown::new(),
            Arc::new(AtomicBool::new(returned)),
            Arc::new(AtomicU32::new(0)),
        );
        let handler = {
            let (shutdown, returned_flag, exits) =
                (shutdown.clone(), returned_flag.clone(), exits.clone());
            thread::spawn(move || {
                messaging_cli::handle_signals(
                    signalled,
                    &shutdown,
                    &returned_flag,
                    Duration::from_millis(50),
                    || {
                        exits.fetch_add(1, Ordering::SeqCst);
                    },
                );
            })
        };
        signals.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while shutdown.requests() < 1 {
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            exits.load(Ordering::SeqCst),
            0,
            "the first signal is a request"
        );
        signals.send(()).unwrap();
        drop(signals);
        handler.join().unwrap();
        assert_eq!(shutdown.requests(), 2);
        assert_eq!(
            exits.load(Ordering::SeqCst),
            u32::from(!returned),
            "returned: {returned}"
        );
    }
}
