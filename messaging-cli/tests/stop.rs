//! Stopping a busy `serve`, `listen` or `simulate` server, in-process over `memory://`:
//! the first stop request drains within `--grace` (with the lifecycle's "possible hang"
//! warning while it is stuck), a further request or the end of the grace period exits
//! 1 at once, naming the messages left unfinished. (The binary's signals are tested
//! against the brokers in `cli_brokers.rs`.)

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
