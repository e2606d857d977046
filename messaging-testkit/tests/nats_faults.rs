//! NATS faults: the server restarted under a running service. Runs when
//! `MESSAGING_TEST_NATS_URL` is set and points at the local server this test may
//! restart (`start-stop-daemon`, as `.ci/run` starts it); the tests take turns. Each
//! prints what it measured.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient, RpcError};
use messaging_core::{CallOptions, Context, Priority, Target, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{ServerThread, within};
use serde::{Deserialize, Serialize};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn url() -> Option<String> {
    let Ok(url) = std::env::var("MESSAGING_TEST_NATS_URL") else {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return None;
    };
    Some(messaging_testkit::with_option(&url, "consumer_ttl", "600"))
}

const NATS: &str = "/usr/sbin/nats-server";

fn reachable() -> bool {
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:4222".parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn stop_server() {
    let status = Command::new("start-stop-daemon")
        .args(["--stop", "--oknodo", "--retry", "10", "--exec", NATS])
        .status()
        .expect("start-stop-daemon runs");
    assert!(status.success());
    while reachable() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_server() {
    let status = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            NATS,
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ])
        .status()
        .expect("start-stop-daemon runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reachable() {
        assert!(Instant::now() < deadline, "nats-server did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Restarts the server; it is down for `down_for`.
fn restart_server(down_for: Duration) {
    stop_server();
    std::thread::sleep(down_for);
    start_server();
}

#[derive(Serialize, Deserialize)]
struct Value {
    n: u64,
}

#[derive(Serialize, Deserialize)]
struct Sleep {
    ms: u64,
}

fn server(url: &str, topic: &str) -> ServerThread {
    let endpoint = Endpoint::new()
        .method("echo", |_ctx, v: Value| Ok::<_, HandlerError>(v.n))
        .method("sleep", |_ctx, s: Sleep| {
            std::thread::sleep(Duration::from_millis(s.ms));
            Ok::<_, HandlerError>(s.ms)
        });
    let server = rpc::server(
        messaging_transports::open(url).unwrap(),
        Target::new(topic).with_server("s1"),
        vec![endpoint],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

fn call_until_served(client: &RpcClient, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        match client.call_blocking::<_, u64>(&Context::new(), "echo", &Value { n }) {
            Ok(echoed) => {
                assert_eq!(echoed, n);
                return started.elapsed();
            }
            Err(error) => assert!(
                started.elapsed() < limit,
                "not served again within {limit:?}: {error}"
            ),
        }
    }
}

#[test]
fn servers_resume_and_pending_calls_end_within_their_timeout_across_a_restart() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(Duration::from_secs(120), "nats restart", move || {
        let topic = format!("faults_{}", &ids::hex_id()[..10]);
        let running = server(&url, &topic);
        let timeout = Duration::from_secs(3);
        let client = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(topic),
        )
        .with_timeout(timeout);
        call_until_served(&client, Duration::from_secs(10));
        let caller = {
            let client = client.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                (
                    client.call_blocking::<_, u64>(&Context::new(), "sleep", &Sleep { ms: 500 }),
                    started.elapsed(),
                )
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        restart_server(Duration::from_millis(500));
        let restarted = Instant::now();
        let (result, elapsed) = caller.join().unwrap();
        eprintln!("measured: the pending call ended after {elapsed:?} with {result:?}");
        assert!(
            matches!(result, Ok(500) | Err(RpcError::Timeout { .. })),
            "{result:?}"
        );
        assert!(elapsed < timeout + Duration::from_secs(1));
        let resumed = call_until_served(&client, Duration::from_secs(60));
        eprintln!(
            "measured: served again {resumed:?} after the restart ({:?} after the server was back)",
            restarted.elapsed()
        );
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn stored_notifications_survive_a_restart_and_stop_wait_complete_while_it_is_down() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(Duration::from_secs(120), "nats notifications", move || {
        const N: u64 = 100;
        let topic = format!("faults_n_{}", &ids::hex_id()[..10]);
        let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "faults")
            .with_topics([topic.as_str()]);
        for n in 0..N {
            block_on(notifier.info(&Context::new(), "fault.test", &Value { n })).unwrap();
        }
        let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let listener = |seen: Arc<Mutex<HashSet<u64>>>| {
            let endpoint =
                NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Value>| {
                    seen.lock().unwrap().insert(n.payload.n);
                    NotificationResult::Handled
                });

            messaging_core::notify::listener(
                messaging_transports::open(&url).unwrap(),
                vec![Target::new(topic.clone())],
                vec![endpoint],
                ListenerOptions::new(),
                ThreadPoolExecutor::new(),
            )
            .build()
            .unwrap()
        };
        // Stored while no listener exists, kept across the restart.
        restart_server(Duration::from_millis(300));
        let first = listener(seen.clone());
        first.start().unwrap();
        let started = Instant::now();
        while seen.lock().unwrap().len() < N as usize {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {} of {N}",
                seen.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "measured: all {N} stored notifications delivered after the restart in {:?}",
            started.elapsed()
        );
        // Stop and wait while the server is down.
        stop_server();
        let stopping = Instant::now();
        let limit = CallOptions::new().timeout(Duration::from_secs(30));
        first.stop_with(&limit).unwrap();
        first.wait_with(&limit).unwrap();
        eprintln!(
            "measured: stop()+wait() with the server down took {:?}",
            stopping.elapsed()
        );
        start_server();
    });
}
