//! A notifier's `retry` (oslo's: 0 none, n at most n, -1 forever) on each transport,
//! with the broker gone:
//!
//! * against a loopback port that accepts every connection and closes it at once
//!   (counting them: one per attempt), `retry=0` fails after exactly one attempt,
//!   quickly, and `retry=n` after exactly `n + 1`, with the backoff between them;
//! * `retry=forever` keeps trying while the broker is down and delivers once it is
//!   back: a RabbitMQ node of the test's own (`stop_app`, then `start_app`) and a
//!   nats-server of its own started on the port the notifier was already trying;
//! * `retry=forever` with a timeout ends at the timeout with the failure it saw;
//! * `memory://` has nothing to retry: the notification is stored at once, whatever
//!   the retry.
//!
//! The pre-started brokers are never stopped. RabbitMQ tests run with
//! `MESSAGING_TEST_RABBIT_URL` (the node test also needs root, as every extra node
//! does), NATS tests with `MESSAGING_TEST_NATS_URL`.

mod rabbit_node;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier, NotifyError,
    Retry,
};
use messaging_core::{Context, Priority, Target, TransportError, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{ServerThread, within};
use rabbit_node::RabbitNode;
use serde::{Deserialize, Serialize};

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &ids::hex_id()[..10])
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Event {
    n: u64,
}

/// A loopback port that accepts every connection and closes it at once, counting
/// them: a broker that is "there" but never lets a client in, one connection per
/// attempt.
struct Slammer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Slammer {
    fn start() -> Slammer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    count.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
            }
        });
        Slammer {
            port,
            accepted,
            stop,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Slammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn notify(notifier: &Notifier, n: u64) -> Result<(), NotifyError> {
    block_on(notifier.info(&Context::new(), "retry.test", &Event { n }))
}

/// What one run against a slamming port gave: the result, how long it took, how many
/// connections the port saw.
fn against_slammer(
    url_of: impl Fn(u16) -> String,
    retry: Retry,
) -> (Result<(), NotifyError>, Duration, usize) {
    let slammer = Slammer::start();
    let transport = messaging_transports::open(&url_of(slammer.port)).unwrap();
    let notifier = Notifier::new(transport, "retry.host")
        .with_topics(["retried"])
        .with_retry(retry);
    let started = Instant::now();
    let result = notify(&notifier, 1);
    let took = started.elapsed();
    // A connection the client opened just before giving up is counted by now.
    std::thread::sleep(Duration::from_millis(200));
    (result, took, slammer.accepted())
}

/// `retry=0`: one attempt, failing at once; `retry=n`: `n + 1` attempts, with the
/// backoff (100 ms doubling) between them. The attempts are counted by the port.
fn retries_are_counted(transport: &str, url_of: impl Fn(u16) -> String + Copy) {
    let (result, took, attempts) = against_slammer(url_of, Retry::Limit(0));
    eprintln!("measured: {transport} retry=0: {attempts} attempt(s), failed in {took:?}");
    assert!(
        matches!(&result, Err(NotifyError::Transport(e)) if !e.is_permanent()),
        "{result:?}"
    );
    assert_eq!(attempts, 1, "retry=0 makes one attempt");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    for n in [1u32, 3] {
        let (result, took, attempts) = against_slammer(url_of, Retry::Limit(n));
        eprintln!("measured: {transport} retry={n}: {attempts} attempts, failed in {took:?}");
        assert!(result.is_err(), "{result:?}");
        assert_eq!(
            attempts,
            n as usize + 1,
            "retry={n} makes {} attempts",
            n + 1
        );
        // The waits between attempts: 100, 200, 400 ms ...
        let waits: u64 = (0..n).map(|i| 100 << i).sum();
        assert!(
            took >= Duration::from_millis(waits) && took < Duration::from_secs(10),
            "retry={n} took {took:?}"
        );
    }
}

/// `retry=forever` with a timeout: tries until the timeout, then fails with the last
/// failure it saw (a refused connection), not a made-up one.
fn forever_ends_at_the_timeout(url: &str) {
    let notifier = Notifier::new(messaging_transports::open(url).unwrap(), "retry.host")
        .with_retry(Retry::Forever)
        .with_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let result = notify(&notifier, 1);
    let took = started.elapsed();
    eprintln!("measured: {url} retry=forever, timeout 1.5 s: failed in {took:?}");
    assert!(
        matches!(&result, Err(NotifyError::Transport(TransportError::Connection { message, .. }))
            if message.contains("refused")),
        "{result:?}"
    );
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "took {took:?}"
    );
}

/// A notification listener on `url`'s `topic` that passes what it gets on.
fn listener(url: &str, topic: &str) -> (ServerThread, mpsc::Receiver<u64>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let endpoint = NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Event>| {
        let _ = tx.lock().unwrap().send(n.payload.n);
        NotificationResult::Handled
    });
    let server = messaging_core::notify::listener(
        messaging_transports::open(url).unwrap(),
        vec![Target::new(topic)],
        vec![endpoint],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    (ServerThread::spawn(server).unwrap(), rx)
}

/// Sends with `retry=forever` from a thread of its own while the broker is down:
/// still trying after `down_for`; `bring_back` starts the broker; the send then
/// succeeds.
fn forever_waits_for_the_broker(
    url: &str,
    topic: &str,
    down_for: Duration,
    bring_back: impl FnOnce(),
) {
    let notifier = Notifier::new(messaging_transports::open(url).unwrap(), "retry.host")
        .with_topics([topic])
        .with_retry(Retry::Forever);
    let (done, result) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = done.send((notify(&notifier, 42), started.elapsed()));
    });
    assert!(
        result.recv_timeout(down_for).is_err(),
        "retry=forever gave up while the broker was down"
    );
    let back = Instant::now();
    bring_back();
    let broker_back = back.elapsed();
    let (sent, took) = result
        .recv_timeout(Duration::from_secs(60))
        .expect("the notification was sent once the broker was back");
    sent.unwrap();
    eprintln!(
        "measured: {url} retry=forever: sent {took:?} after the first attempt, the broker was \
         back after {:?} (starting it took {broker_back:?})",
        down_for + broker_back
    );
}

// ===== RabbitMQ =====

fn rabbit() -> Option<String> {
    match std::env::var("MESSAGING_TEST_RABBIT_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
            None
        }
    }
}

#[test]
fn rabbit_retry_0_makes_one_attempt_and_retry_n_makes_n_plus_1() {
    if rabbit().is_none() {
        return;
    }
    within(Duration::from_secs(120), "rabbit retries", || {
        retries_are_counted("rabbit", |port| {
            format!("rabbit://guest:guest@127.0.0.1:{port}/?connect_timeout=5")
        });
        forever_ends_at_the_timeout(&format!(
            "rabbit://guest:guest@127.0.0.1:{}/",
            closed_port()
        ));
    });
}

#[test]
fn rabbit_retry_forever_delivers_once_the_broker_is_back() {
    if rabbit().is_none() {
        return;
    }
    if let Err(why) = rabbit_node::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let node = RabbitNode::start(
        "notifyretry",
        "listeners.tcp.1 = 127.0.0.1:{amqp_port}\n",
        &[],
        |_| {},
    );
    let _guard = node.guard();
    within(Duration::from_secs(300), "rabbit forever", move || {
        let url = format!("rabbit://guest:guest@127.0.0.1:{}/", node.amqp_port);
        let topic = unique("forever");
        node.stop_app();
        forever_waits_for_the_broker(&url, &topic, Duration::from_secs(4), || node.start_app());
        // The notifier declared `<topic>.info`, so the notification waits there.
        let (running, got) = listener(&url, &topic);
        assert_eq!(got.recv_timeout(Duration::from_secs(30)), Ok(42));
        running.stop_and_wait().unwrap();
    });
}

// ===== NATS =====

fn nats() -> Option<String> {
    match std::env::var("MESSAGING_TEST_NATS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
            None
        }
    }
}

/// A nats-server of the test's own with JetStream, on a port chosen beforehand and
/// a directory of its own; killed (by its own pid) and removed when dropped.
struct OwnNats {
    child: Child,
    dir: std::path::PathBuf,
}

impl OwnNats {
    fn start_on(port: u16) -> OwnNats {
        let dir = std::env::temp_dir().join(format!("notify-retry-nats-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        let child = Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let server = OwnNats { child, dir };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the own nats-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn nats_retry_0_makes_one_attempt_and_retry_n_makes_n_plus_1() {
    if nats().is_none() {
        return;
    }
    within(Duration::from_secs(120), "nats retries", || {
        retries_are_counted("nats", |port| {
            format!("nats://127.0.0.1:{port}?connect_timeout=5")
        });
        forever_ends_at_the_timeout(&format!("nats://127.0.0.1:{}", closed_port()));
    });
}

#[test]
fn nats_retry_forever_delivers_once_the_server_is_there() {
    if nats().is_none() {
        return;
    }
    within(Duration::from_secs(180), "nats forever", || {
        let port = closed_port();
        let url = format!("nats://127.0.0.1:{port}");
        let topic = unique("forever");
        let server: Arc<Mutex<Option<OwnNats>>> = Arc::default();
        let starting = server.clone();
        forever_waits_for_the_broker(&url, &topic, Duration::from_secs(4), move || {
            *starting.lock().unwrap() = Some(OwnNats::start_on(port));
        });
        // The notifier created the pool-less consumer, so the notification waits.
        let (running, got) = listener(&url, &topic);
        assert_eq!(got.recv_timeout(Duration::from_secs(30)), Ok(42));
        running.stop_and_wait().unwrap();
        drop(server);
    });
}

// ===== memory =====

#[test]
fn memory_has_nothing_to_retry() {
    within(Duration::from_secs(30), "memory", || {
        let url = format!("memory:///{}", unique("retry"));
        let (running, got) = listener(&url, "retried");
        for (n, retry) in [
            (1, Retry::Limit(0)),
            (2, Retry::Limit(5)),
            (3, Retry::Forever),
        ] {
            let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "retry.host")
                .with_topics(["retried"])
                .with_retry(retry);
            let started = Instant::now();
            notify(&notifier, n).unwrap();
            assert!(started.elapsed() < Duration::from_secs(1));
            assert_eq!(got.recv_timeout(Duration::from_secs(10)), Ok(n));
        }
        running.stop_and_wait().unwrap();
    });
}
