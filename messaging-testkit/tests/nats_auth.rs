//! Wrong credentials on NATS fail at once with `TransportError::Refused`, from cast,
//! call, notify and listen, with at most one log line each and no secret anywhere.
//!
//! The test starts a nats-server of its own with a user and password, on a free
//! loopback port and a data directory of its own (the shared server is left alone),
//! and stops it when done, even if the test failed. It runs when
//! `MESSAGING_TEST_NATS_URL` is set (the broker tests are enabled) and
//! `/usr/sbin/nats-server` exists.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{Notifier, NotifyError};
use messaging_core::rpc::{RpcClient, RpcError};
use messaging_core::{Context, ListenOptions, Priority, Subscription, Target, TransportError, ids};
use messaging_testkit::{LogCapture, within};
use serde::{Deserialize, Serialize};
use tracing::Level;

const NATS: &str = "/usr/sbin/nats-server";
const USER: &str = "svc";
const PASSWORD: &str = "S3cr3t-pw";

/// A nats-server of the test's own, stopped and its directory removed when dropped.
struct OwnServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl OwnServer {
    fn start() -> OwnServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("nats-auth-{}", ids::hex_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(NATS)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .args(["--user", USER, "--pass", PASSWORD])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let server = OwnServer { child, dir, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u64,
}

/// Runs `operation`, checks it failed with `Refused` within a second and without the
/// password, and returns how many warning-or-worse lines it logged.
fn refused(
    logs: &LogCapture,
    what: &str,
    operation: impl FnOnce() -> Result<(), TransportError>,
) -> usize {
    let before = logs.events().len();
    let started = Instant::now();
    let error = operation().expect_err(what);
    let took = started.elapsed();
    assert!(
        matches!(error, TransportError::Refused { .. }) && error.is_permanent(),
        "{what}: {error:?}"
    );
    assert!(took < Duration::from_secs(1), "{what} took {took:?}");
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(PASSWORD), "{what}: {text}");
    }
    let lines: Vec<_> = logs.events()[before..]
        .iter()
        .filter(|e| e.level <= Level::WARN)
        .cloned()
        .collect();
    assert!(lines.len() <= 1, "{what}: {lines:?}");
    eprintln!(
        "measured: {what} refused in {took:?} with {} log line(s): {error}",
        lines.len()
    );
    lines.len()
}

#[test]
fn wrong_credentials_are_refused_at_once_without_retries_or_secrets() {
    if std::env::var("MESSAGING_TEST_NATS_URL").is_err() {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return;
    }
    if !std::path::Path::new(NATS).exists() {
        eprintln!("skipped: {NATS} is not installed");
        return;
    }
    let logs = LogCapture::global();
    within(Duration::from_secs(60), "wrong credentials", move || {
        let server = OwnServer::start();
        let topic = format!("auth_{}", &ids::hex_id()[..10]);
        let target = Target::new(topic.clone());

        // The right password works: the server and the test are set up right.
        let right = messaging_transports::open(&server.url(USER, PASSWORD)).unwrap();
        let notifier = Notifier::new(right, "auth").with_topics([topic.as_str()]);
        block_on(notifier.info(&Context::new(), "ok", &Ping { n: 1 })).expect("right password");

        let url = server.url(USER, "wrong-password");
        let open = || messaging_transports::open(&url).unwrap();
        let mut lines = 0;
        lines += refused(&logs, "cast", || {
            let client = RpcClient::new(open(), target.clone());
            match client.cast_blocking(&Context::new(), "ping", &Ping { n: 1 }) {
                Err(RpcError::Transport(e)) => Err(e),
                other => panic!("cast: {other:?}"),
            }
        });
        lines += refused(&logs, "call", || {
            let client =
                RpcClient::new(open(), target.clone()).with_timeout(Duration::from_secs(30));
            match client.call_blocking::<_, u64>(&Context::new(), "ping", &Ping { n: 1 }) {
                Err(RpcError::Transport(e)) => Err(e),
                other => panic!("call: {other:?}"),
            }
        });
        lines += refused(&logs, "notify", || {
            let notifier = Notifier::new(open(), "auth").with_topics([topic.as_str()]);
            match block_on(notifier.info(&Context::new(), "x", &Ping { n: 1 })) {
                Err(NotifyError::Transport(e)) => Err(e),
                other => panic!("notify: {other:?}"),
            }
        });
        lines += refused(&logs, "listen (rpc)", || {
            open()
                .listen(
                    &Subscription::Rpc(target.clone().with_server("s1")),
                    &ListenOptions::default(),
                )
                .map(drop)
        });
        lines += refused(&logs, "listen (notifications)", || {
            let subscription = Subscription::Notifications {
                targets: vec![target.clone()],
                priorities: vec![Priority::Info],
                pool: None,
            };
            open()
                .listen(&subscription, &ListenOptions::default())
                .map(drop)
        });
        assert!(
            logs.events().iter().all(|e| {
                !e.message.contains(PASSWORD) && e.fields.iter().all(|(_, v)| !v.contains(PASSWORD))
            }),
            "the password reached the log"
        );
        eprintln!("measured: 5 operations with a wrong password: {lines} log lines in all");
    });
}
