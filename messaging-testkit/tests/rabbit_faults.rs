//! RabbitMQ faults: connections closed by the broker (`rabbitmqctl
//! close_all_connections`) and the broker application restarting (`stop_app` /
//! `start_app`). Runs when `MESSAGING_TEST_RABBIT_URL` is set and `rabbitmqctl` works;
//! the tests take turns, since each disturbs the whole broker. Each prints what it
//! measured (reconnect times) to stderr.

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
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
    let Ok(url) = std::env::var("MESSAGING_TEST_RABBIT_URL") else {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return None;
    };
    Some(messaging_testkit::with_option(&url, "queue_ttl", "600"))
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn close_all_connections() {
    rabbitmqctl(&["close_all_connections", "fault test"]);
}

#[derive(Serialize, Deserialize)]
struct Sleep {
    ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Value {
    n: u64,
}

fn server(url: &str, topic: &str) -> ServerThread {
    let transport = messaging_transports::open(url).unwrap();
    let endpoint = Endpoint::new()
        .method("echo", |_ctx, v: Value| Ok::<_, HandlerError>(v.n))
        .method("sleep", |_ctx, s: Sleep| {
            std::thread::sleep(Duration::from_millis(s.ms));
            Ok::<_, HandlerError>(s.ms)
        });
    let server = rpc::server(
        transport,
        Target::new(topic).with_server("s1"),
        vec![endpoint],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

/// Calls until one succeeds; returns how long that took.
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
            Err(error) => {
                assert!(
                    started.elapsed() < limit,
                    "not served again within {limit:?}: {error}"
                );
            }
        }
    }
}

#[test]
fn servers_and_clients_resume_after_the_broker_closes_every_connection() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(
        Duration::from_secs(120),
        "resume after close_all_connections",
        move || {
            let topic = format!("faults_{}", &ids::hex_id()[..10]);
            let running = server(&url, &topic);
            let client = RpcClient::new(
                messaging_transports::open(&url).unwrap(),
                Target::new(topic),
            )
            .with_timeout(Duration::from_secs(2));
            call_until_served(&client, Duration::from_secs(10));
            close_all_connections();
            let resumed = call_until_served(&client, Duration::from_secs(60));
            eprintln!("measured: first successful call {resumed:?} after close_all_connections");
            for n in 0..20 {
                assert_eq!(
                    client
                        .call_blocking::<_, u64>(&Context::new(), "echo", &Value { n })
                        .unwrap(),
                    n
                );
            }
            running.stop_and_wait().unwrap();
        },
    );
}

#[test]
fn a_pending_call_completes_or_times_out_never_later() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(Duration::from_secs(120), "pending call", move || {
        let topic = format!("faults_{}", &ids::hex_id()[..10]);
        let running = server(&url, &topic);
        let timeout = Duration::from_secs(4);
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
                let result =
                    client.call_blocking::<_, u64>(&Context::new(), "sleep", &Sleep { ms: 1_000 });
                (result, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        close_all_connections();
        let (result, elapsed) = caller.join().unwrap();
        eprintln!("measured: the pending call ended after {elapsed:?} with {result:?}");
        match result {
            Ok(ms) => assert_eq!(ms, 1_000),
            Err(RpcError::Timeout { .. }) => {}
            Err(other) => panic!("expected the result or a timeout, got {other}"),
        }
        assert!(
            elapsed < timeout + Duration::from_secs(1),
            "{elapsed:?} is past the {timeout:?} timeout"
        );
        call_until_served(&client, Duration::from_secs(60));
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn notifications_are_not_lost_when_connections_drop() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(Duration::from_secs(120), "notifications", move || {
        const N: u64 = 200;
        let topic = format!("faults_n_{}", &ids::hex_id()[..10]);
        let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let handled = seen.clone();
        let endpoint =
            NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Value>| {
                std::thread::sleep(Duration::from_millis(2));
                handled.lock().unwrap().insert(n.payload.n);
                NotificationResult::Handled
            });
        let listener = messaging_core::notify::listener(
            messaging_transports::open(&url).unwrap(),
            vec![Target::new(topic.clone())],
            vec![endpoint],
            ListenerOptions::new(),
            ThreadPoolExecutor::new().with_max_workers(4),
        )
        .build()
        .unwrap();
        let running = ServerThread::spawn(listener).unwrap();
        let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "faults")
            .with_topics([topic.as_str()]);
        for n in 0..N {
            block_on(notifier.info(&Context::new(), "fault.test", &Value { n })).unwrap();
            if n == N / 2 {
                close_all_connections();
            }
        }
        let started = Instant::now();
        while seen.lock().unwrap().len() < N as usize {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {} of {N} handled",
                seen.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "measured: all {N} notifications handled {:?} after the last was sent",
            started.elapsed()
        );
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn stop_and_wait_complete_while_the_broker_is_down_and_servers_resume_after_a_restart() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(Duration::from_secs(180), "broker restart", move || {
        let topic = format!("faults_{}", &ids::hex_id()[..10]);
        let running = server(&url, &topic);
        let other = format!("faults_{}", &ids::hex_id()[..10]);
        let survivor = server(&url, &other);
        rabbitmqctl(&["stop_app"]);
        // The first server is stopped and waited for while its listener reconnects.
        let started = Instant::now();
        let limit = CallOptions::new().timeout(Duration::from_secs(30));
        running.server().stop_with(&limit).unwrap();
        running.server().wait_with(&limit).unwrap();
        eprintln!(
            "measured: stop()+wait() during the outage took {:?}",
            started.elapsed()
        );
        drop(running);
        std::thread::sleep(Duration::from_secs(2));
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
        let restarted = Instant::now();
        let client = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(other),
        )
        .with_timeout(Duration::from_secs(2));
        let resumed = call_until_served(&client, Duration::from_secs(90));
        eprintln!(
            "measured: the other server answered {resumed:?} after the broker was back ({:?} after start_app)",
            restarted.elapsed()
        );
        survivor.stop_and_wait().unwrap();
    });
}

#[test]
fn a_dead_host_in_the_url_fails_over_to_the_next() {
    let Some(url) = url() else { return };
    // Put a port nothing listens on in front of the real broker.
    let Some(rest) = url.strip_prefix("rabbit://guest:guest@") else {
        eprintln!("skipped: the failover test needs a rabbit://guest:guest@host URL");
        return;
    };
    let failover = format!("rabbit://guest:guest@127.0.0.1:1,guest:guest@{rest}");
    within(Duration::from_secs(60), "failover", move || {
        let topic = format!("faults_{}", &ids::hex_id()[..10]);
        let running = server(&failover, &topic);
        let client = RpcClient::new(
            messaging_transports::open(&failover).unwrap(),
            Target::new(topic),
        )
        .with_timeout(Duration::from_secs(10));
        let started = Instant::now();
        assert_eq!(
            client
                .call_blocking::<_, u64>(&Context::new(), "echo", &Value { n: 5 })
                .unwrap(),
            5
        );
        eprintln!(
            "measured: a call through the second host in {:?}",
            started.elapsed()
        );
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn a_queue_deleted_under_a_server_is_consumed_again_after_kombu_reconnect_delay() {
    let Some(url) = url() else { return };
    let _turn = turn();
    // oslo's kombu_reconnect_delay: the wait before consuming again after the broker
    // cancelled a consumer.
    let url = messaging_testkit::with_option(&url, "kombu_reconnect_delay", "3");
    within(Duration::from_secs(60), "deleted queue", move || {
        let topic = format!("faults_{}", &ids::hex_id()[..10]);
        let running = server(&url, &topic);
        let client = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(topic.clone()),
        )
        .with_timeout(Duration::from_secs(2));
        call_until_served(&client, Duration::from_secs(10));
        // The broker cancels the consumer of a deleted queue; the listener must notice.
        rabbitmqctl(&["delete_queue", &topic]);
        let resumed = call_until_served(&client, Duration::from_secs(30));
        eprintln!("measured: the topic queue served again {resumed:?} after it was deleted");
        assert!(
            resumed >= Duration::from_secs(3),
            "not before kombu_reconnect_delay: {resumed:?}"
        );
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn casts_racing_a_fanout_to_a_vanished_exchange_are_not_lost() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(
        Duration::from_secs(60),
        "vanished fanout exchange",
        move || {
            let gone = format!("faults_gone_{}", &ids::hex_id()[..10]);
            let live = format!("faults_live_{}", &ids::hex_id()[..10]);
            let transport = messaging_transports::open(&url).unwrap();
            // A server of `gone` binds its fanout queue; the publisher declares the fanout
            // exchange on the first fanout cast; then the queue (and so the auto-delete
            // exchange) disappears behind the publisher's back.
            let doomed = server(&url, &gone);
            let fanout = RpcClient::new(
                transport.clone(),
                Target::new(gone.clone()).with_fanout(true),
            );
            fanout
                .cast_blocking(&Context::new(), "echo", &Value { n: 0 })
                .unwrap();
            doomed.stop_and_wait().unwrap();
            let queues = Command::new("rabbitmqctl")
                .args(["list_queues", "name", "-q"])
                .output()
                .unwrap();
            for name in String::from_utf8_lossy(&queues.stdout)
                .lines()
                .filter(|q| q.starts_with(&format!("{gone}_fanout_")))
            {
                rabbitmqctl(&["delete_queue", name.trim()]);
            }
            let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
            let recorded = seen.clone();
            let endpoint = Endpoint::new().method("echo", move |_ctx, v: Value| {
                recorded.lock().unwrap().insert(v.n);
                Ok::<_, HandlerError>(v.n)
            });
            let live_server = rpc::server(
                transport.clone(),
                Target::new(live.clone()).with_server("s1"),
                vec![endpoint],
                ThreadPoolExecutor::new(),
            )
            .unwrap()
            .build()
            .unwrap();
            let running = ServerThread::spawn(live_server).unwrap();
            let casts = RpcClient::new(transport.clone(), Target::new(live));
            let fanout_thread = std::thread::spawn(move || {
                fanout.cast_blocking(&Context::new(), "echo", &Value { n: 999 })
            });
            for n in 0..10 {
                casts
                    .cast_blocking(&Context::new(), "echo", &Value { n })
                    .unwrap();
            }
            let _ = fanout_thread.join().unwrap();
            let started = Instant::now();
            while seen.lock().unwrap().len() < 10 {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "only {:?} of 10 casts arrived",
                    seen.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            running.stop_and_wait().unwrap();
        },
    );
}

/// What a load thread sent: the values the library said it sent (and when), and how
/// many sends failed.
#[derive(Default)]
struct Sent {
    ok: Vec<(u64, Instant)>,
    failed: usize,
    first_error: Option<String>,
}

/// Sends `send(n)` for n = 0, 1, ... until `stop` is set.
fn load(
    stop: Arc<AtomicBool>,
    send: impl Fn(u64) -> Result<(), String> + Send + 'static,
) -> std::thread::JoinHandle<Sent> {
    std::thread::spawn(move || {
        let mut sent = Sent::default();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            match send(n) {
                Ok(()) => sent.ok.push((n, Instant::now())),
                Err(error) => {
                    sent.failed += 1;
                    sent.first_error.get_or_insert(error);
                }
            }
            n += 1;
        }
        sent
    })
}

/// Waits (up to 30 s) until every value in `sent.ok` was handled; prints and returns
/// how many were lost. `stopped` is when the broker went down, to place what was lost.
fn tally(what: &str, sent: &Sent, handled: &Mutex<Vec<u64>>, stopped: Instant) -> usize {
    let started = Instant::now();
    loop {
        let handled = handled.lock().unwrap().clone();
        let unique: HashSet<u64> = handled.iter().copied().collect();
        let lost: Vec<_> = sent
            .ok
            .iter()
            .filter(|(n, _)| !unique.contains(n))
            .collect();
        if lost.is_empty() || started.elapsed() > Duration::from_secs(30) {
            let when = |at: Instant| match at.checked_duration_since(stopped) {
                Some(after) => format!("confirmed {after:?} after stop_app began"),
                None => format!("confirmed {:?} before stop_app", stopped - at),
            };
            eprintln!(
                "measured: {what}: sent ok {}, failed {}{}, handled {}, duplicates {}, lost {}{}",
                sent.ok.len(),
                sent.failed,
                sent.first_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                unique.len(),
                handled.len() - unique.len(),
                lost.len(),
                lost.iter()
                    .take(3)
                    .map(|(n, at)| format!("; #{n} {}", when(*at)))
                    .collect::<String>()
            );
            return lost.len();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cast load and a notification load from one transport to a server and a listener
/// on others, all on `url`.
struct Traffic {
    casts: std::thread::JoinHandle<Sent>,
    notifications: std::thread::JoinHandle<Sent>,
    cast_seen: Arc<Mutex<Vec<u64>>>,
    notified_seen: Arc<Mutex<Vec<u64>>>,
    server: ServerThread,
    listener: ServerThread,
}

impl Traffic {
    fn start(url: &str, stop: &Arc<AtomicBool>) -> Traffic {
        let topic = format!("faults_r_{}", &ids::hex_id()[..10]);
        let cast_seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let recorded = cast_seen.clone();
        let endpoint = Endpoint::new().method("record", move |_ctx, v: Value| {
            recorded.lock().unwrap().push(v.n);
            Ok::<_, HandlerError>(v.n)
        });
        let server = rpc::server(
            messaging_transports::open(url).unwrap(),
            Target::new(topic.clone()).with_server("s1"),
            vec![endpoint],
            ThreadPoolExecutor::new(),
        )
        .unwrap()
        .build()
        .unwrap();
        let server = ServerThread::spawn(server).unwrap();
        let notified_seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let recorded = notified_seen.clone();
        let endpoint =
            NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Value>| {
                recorded.lock().unwrap().push(n.payload.n);
                NotificationResult::Handled
            });
        let listener = messaging_core::notify::listener(
            messaging_transports::open(url).unwrap(),
            vec![Target::new(topic.clone())],
            vec![endpoint],
            ListenerOptions::new(),
            ThreadPoolExecutor::new(),
        )
        .build()
        .unwrap();
        let listener = ServerThread::spawn(listener).unwrap();
        let client = messaging_transports::open(url).unwrap();
        let caster = RpcClient::new(client.clone(), Target::new(topic.clone()).with_server("s1"));
        let notifier = Notifier::new(client, "faults").with_topics([topic.as_str()]);
        Traffic {
            casts: load(stop.clone(), move |n| {
                caster
                    .cast_blocking(&Context::new(), "record", &Value { n })
                    .map_err(|e| e.to_string())
            }),
            notifications: load(stop.clone(), move |n| {
                block_on(notifier.info(&Context::new(), "fault.test", &Value { n }))
                    .map_err(|e| e.to_string())
            }),
            cast_seen,
            notified_seen,
            server,
            listener,
        }
    }

    /// Joins the loads (after `stop`), counts, stops the servers; returns what was
    /// lost: `(casts, notifications)`.
    fn finish(self, what: &str, stopped: Instant) -> (usize, usize) {
        let casts = self.casts.join().unwrap();
        let notifications = self.notifications.join().unwrap();
        assert!(
            !casts.ok.is_empty() && !notifications.ok.is_empty(),
            "{what}: nothing was sent"
        );
        let lost = (
            tally(&format!("{what} casts"), &casts, &self.cast_seen, stopped),
            tally(
                &format!("{what} notifications"),
                &notifications,
                &self.notified_seen,
                stopped,
            ),
        );
        self.server.stop_and_wait().unwrap();
        self.listener.stop_and_wait().unwrap();
        lost
    }
}

/// Issue 9, item 2: under a steady load, `stop_app; sleep 5; start_app` deletes the
/// non-durable server and notification queues, and until their listeners declare them
/// again the broker has nowhere to route. Casts are published mandatory and confirmed:
/// what comes back is retried, so nothing is lost in that window (before: 12.5 %, one
/// contiguous range). What a transient queue held when the broker stopped is lost with
/// it: the broker closes its consumers' connections first and keeps confirming into
/// the queue until it deletes it (up to 16 messages seen, 1 run in 5; bounded here at 50,
/// where the bug it pins lost 978); with
/// `amqp_durable_queues=true` queues and their persistent messages survive, so every
/// cast and notification reported sent is handled.
#[test]
fn casts_and_notifications_reported_sent_across_a_broker_restart_are_handled() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(
        Duration::from_secs(300),
        "broker restart under load",
        move || {
            // A fixed exchange for the durable topology: a durable exchange never expires.
            let durable = messaging_testkit::with_options(
                &url,
                &[
                    ("amqp_durable_queues", "true"),
                    ("control_exchange", "messaging_tests_durable"),
                ],
            );
            let stop = Arc::new(AtomicBool::new(false));
            let transient = Traffic::start(&url, &stop);
            let kept = Traffic::start(&durable, &stop);
            std::thread::sleep(Duration::from_secs(2));
            let stopped = Instant::now();
            rabbitmqctl(&["stop_app"]);
            std::thread::sleep(Duration::from_secs(5));
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup"]);
            let restarted = Instant::now();
            std::thread::sleep(Duration::from_secs(10));
            stop.store(true, Ordering::Relaxed);
            eprintln!(
                "measured: the broker was down {:?}; load stopped {:?} after it was back",
                restarted - stopped,
                restarted.elapsed()
            );
            let (casts_lost, notifications_lost) = transient.finish("transient queues:", stopped);
            let (durable_casts_lost, durable_notifications_lost) =
                kept.finish("amqp_durable_queues:", stopped);
            assert_eq!(
                (durable_casts_lost, durable_notifications_lost),
                (0, 0),
                "durable queues: casts and notifications reported sent were lost"
            );
            assert!(
                casts_lost <= 50 && notifications_lost <= 50,
                "transient queues: more was lost than the broker held when it stopped"
            );
        },
    );
}

/// `rabbit_stream_fanout`: after its connection is closed, a server's stream consumer
/// consumes again (from one past the last fanout it handed out): the fanouts sent
/// meanwhile arrive, and each fanout is handled once (what a restart from the stream's
/// last chunk would deliver again is also dropped by `_unique_id`).
#[test]
fn a_stream_fanout_consumer_resumes_after_its_last_offset() {
    let Some(url) = url() else { return };
    let _turn = turn();
    let url = messaging_testkit::with_options(
        &url,
        &[
            ("rabbit_stream_fanout", "true"),
            ("rabbit_transient_quorum_queue", "true"),
        ],
    );
    within(
        Duration::from_secs(120),
        "stream fanout resume",
        move || {
            let topic = format!("faults_stream_{}", &ids::hex_id()[..10]);
            let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
            let recorded = seen.clone();
            let server = rpc::server(
                messaging_transports::open(&url).unwrap(),
                Target::new(topic.clone()).with_server("s1"),
                vec![Endpoint::new().method("echo", move |_ctx, v: Value| {
                    recorded.lock().unwrap().push(v.n);
                    Ok::<_, HandlerError>(v.n)
                })],
                ThreadPoolExecutor::new(),
            )
            .unwrap()
            .build()
            .unwrap();
            let running = ServerThread::spawn(server).unwrap();
            let fanout = RpcClient::new(
                messaging_transports::open(&url).unwrap(),
                Target::new(topic.clone()).with_fanout(true),
            )
            .with_timeout(Duration::from_secs(30));
            let count = |n: usize| {
                let deadline = Instant::now() + Duration::from_secs(30);
                while seen.lock().unwrap().len() < n {
                    assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap());
                    std::thread::sleep(Duration::from_millis(20));
                }
            };
            for n in 1..=5 {
                fanout
                    .cast_blocking(&Context::new(), "echo", &Value { n })
                    .unwrap();
            }
            count(5);
            close_all_connections();
            for n in 6..=10 {
                fanout
                    .cast_blocking(&Context::new(), "echo", &Value { n })
                    .unwrap();
            }
            count(10);
            std::thread::sleep(Duration::from_millis(500));
            let mut got = seen.lock().unwrap().clone();
            got.sort_unstable();
            assert_eq!(got, (1..=10).collect::<Vec<_>>(), "each once");
            running.stop_and_wait().unwrap();
            rabbitmqctl(&["delete_queue", &format!("{topic}_fanout")]);
        },
    );
}
