//! NATS faults: the server restarted under a running service. Runs when
//! `MESSAGING_TEST_NATS_URL` is set and points at the local server this test may
//! restart (`start-stop-daemon`, as `.ci/run` starts it); the tests take turns. Each
//! prints what it measured.
//!
//! The notification tests store their notifications in streams of their own (a
//! `subject_prefix` per test run, removed at the end): what other tests do in the
//! shared stream at the same time cannot change what a restart does to theirs.

mod nats_admin;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient, RpcError};
use messaging_core::{CallOptions, Context, Priority, Target, ids};
use messaging_executors::{BlockingExecutor, ThreadPoolExecutor};
use messaging_testkit::{ServerThread, with_option, within};
use nats_admin::{OwnServer, Streams, poolless_consumer, stream_name};
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

/// A notification listener on `topic` that records the `n` of what it gets.
fn notification_listener(
    url: &str,
    topic: &str,
    seen: Arc<Mutex<HashSet<u64>>>,
) -> messaging_core::Server {
    let endpoint = NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Value>| {
        seen.lock().unwrap().insert(n.payload.n);
        NotificationResult::Handled
    });
    messaging_core::notify::listener(
        messaging_transports::open(url).unwrap(),
        vec![Target::new(topic)],
        vec![endpoint],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap()
}

fn stop_and_wait(server: &messaging_core::Server) {
    let limit = CallOptions::new().timeout(Duration::from_secs(30));
    server.stop_with(&limit).unwrap();
    server.wait_with(&limit).unwrap();
}

/// Waits until `seen` holds `n` values; false if that takes longer than `limit`.
fn until_seen(seen: &Mutex<HashSet<u64>>, n: usize, limit: Duration) -> bool {
    let started = Instant::now();
    while seen.lock().unwrap().len() < n {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn stored_notifications_survive_a_restart_and_stop_wait_complete_while_it_is_down() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(Duration::from_secs(120), "nats notifications", move || {
        const N: u64 = 100;
        let prefix = format!("faults{}", &ids::hex_id()[..10]);
        let _streams = Streams::of(&url, std::slice::from_ref(&prefix));
        let url = with_option(&url, "subject_prefix", &prefix);
        let topic = "stored";
        let notifier =
            Notifier::new(messaging_transports::open(&url).unwrap(), "faults").with_topics([topic]);
        for n in 0..N {
            block_on(notifier.info(&Context::new(), "fault.test", &Value { n })).unwrap();
        }
        let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
        // Stored while no listener exists, kept across the restart.
        restart_server(Duration::from_millis(300));
        let first = notification_listener(&url, topic, seen.clone());
        first.start().unwrap();
        let started = Instant::now();
        assert!(
            until_seen(&seen, N as usize, Duration::from_secs(60)),
            "only {} of {N}",
            seen.lock().unwrap().len()
        );
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

/// nats-server 2.9.7 to 2.9.15, when they start, purge from an interest-retention
/// stream everything below the acknowledgement floor of one of its consumers, chosen
/// by map order, whenever another consumer has never acknowledged anything: the
/// notifications stored for a listener that does not exist yet go whenever some other
/// topic's listener has acknowledged newer ones. (This is how the test above, sharing
/// the stream of every other test, once lost all 100 of its notifications.) Here each
/// of several streams holds exactly that: notifications waiting for a listener, and a
/// listener of another topic that acknowledged a newer one. None may be lost across
/// two restarts.
#[test]
fn stored_notifications_survive_restarts_while_other_topics_are_acknowledged() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(Duration::from_secs(240), "nats restart purge", move || {
        const STREAMS: usize = 12;
        const N: u64 = 20;
        let run = &ids::hex_id()[..8];
        let prefixes: Vec<String> = (0..STREAMS).map(|i| format!("purge{run}s{i}")).collect();
        let streams = Streams::of(&url, &prefixes);
        let urls: Vec<String> = prefixes
            .iter()
            .map(|p| with_option(&url, "subject_prefix", p))
            .collect();
        for url in &urls {
            // Stored for `waiting`, whose listener does not exist yet ...
            let notifier = Notifier::new(messaging_transports::open(url).unwrap(), "faults")
                .with_topics(["waiting"]);
            for n in 0..N {
                block_on(notifier.info(&Context::new(), "fault.test", &Value { n })).unwrap();
            }
            // ... and a newer one, acknowledged by the listener of `busy`.
            let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
            let busy = notification_listener(url, "busy", seen.clone());
            busy.start().unwrap();
            let notifier = Notifier::new(messaging_transports::open(url).unwrap(), "faults")
                .with_topics(["busy"]);
            block_on(notifier.info(&Context::new(), "fault.test", &Value { n: N })).unwrap();
            assert!(
                until_seen(&seen, 1, Duration::from_secs(30)),
                "busy got nothing"
            );
            stop_and_wait(&busy);
        }
        let admin = streams.admin();
        for prefix in &prefixes {
            let stream = stream_name(prefix);
            // The server has the acknowledgement (it is past all of `waiting`'s).
            let started = Instant::now();
            while admin
                .consumer(&stream, &poolless_consumer("busy", "info"))
                .is_none_or(|c| c.ack_floor.stream_sequence <= N)
            {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{stream}: no ack"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let retention = admin
            .stream(&stream_name(&prefixes[0]))
            .map(|s| s.config.retention);
        restart_server(Duration::from_millis(100));
        restart_server(Duration::from_millis(100));
        let stored: u64 = prefixes
            .iter()
            .map(|p| {
                let consumer =
                    admin.consumer(&stream_name(p), &poolless_consumer("waiting", "info"));
                consumer.map_or(0, |c| c.num_pending)
            })
            .sum();
        let mut delivered = 0;
        for url in &urls {
            let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
            let waiting = notification_listener(url, "waiting", seen.clone());
            waiting.start().unwrap();
            until_seen(&seen, N as usize, Duration::from_secs(10));
            delivered += seen.lock().unwrap().len();
            stop_and_wait(&waiting);
        }
        let total = STREAMS as u64 * N;
        eprintln!(
            "measured: nats-server {}, retention {retention:?}: {stored} of {total} still \
             stored after two restarts, {delivered} delivered",
            admin.server_version()
        );
        assert_eq!((stored, delivered as u64), (total, total));
    });
}

/// A notification listener running across a restart pulls again once its client has
/// reconnected: what is sent after the restart arrives.
#[test]
fn a_running_notification_listener_resumes_after_a_restart() {
    let Some(url) = url() else { return };
    let _turn = turn();
    within(
        Duration::from_secs(120),
        "nats listener resumes",
        move || {
            const N: u64 = 20;
            let prefix = format!("faults{}", &ids::hex_id()[..10]);
            let _streams = Streams::of(&url, std::slice::from_ref(&prefix));
            let url = with_option(&url, "subject_prefix", &prefix);
            let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "faults")
                .with_topics(["running"]);
            let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
            let listener = notification_listener(&url, "running", seen.clone());
            listener.start().unwrap();
            block_on(notifier.info(&Context::new(), "fault.test", &Value { n: 0 })).unwrap();
            assert!(
                until_seen(&seen, 1, Duration::from_secs(30)),
                "before the restart"
            );
            restart_server(Duration::from_millis(300));
            let restarted = Instant::now();
            for n in 1..=N {
                // The notifier's own client may still be reconnecting.
                while let Err(error) =
                    block_on(notifier.info(&Context::new(), "fault.test", &Value { n }))
                {
                    assert!(
                        restarted.elapsed() < Duration::from_secs(30),
                        "cannot notify: {error}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let sent = restarted.elapsed();
            assert!(
                until_seen(&seen, N as usize + 1, Duration::from_secs(60)),
                "only {} of {} after the restart",
                seen.lock().unwrap().len() - 1,
                N
            );
            eprintln!(
                "measured: {N} notifications sent after the restart (the last {sent:?} after it) \
             all handled {:?} after it",
                restarted.elapsed()
            );
            stop_and_wait(&listener);
        },
    );
}

/// Runs `f` on a thread of its own and returns how long it took; fails if that is more
/// than `limit` (the thread is then abandoned).
fn timed(what: &str, limit: Duration, f: impl FnOnce() + Send + 'static) -> Duration {
    let (done, finished) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        f();
        let _ = done.send(started.elapsed());
    });
    match finished.recv_timeout(limit) {
        Ok(took) => {
            eprintln!("measured: {what} took {took:?}");
            took
        }
        Err(_) => panic!("{what} did not return within {limit:?}"),
    }
}

/// Stopping a server and a listener, and dropping their transport, while the NATS
/// server is unreachable and the client reconnects, each return within a few seconds:
/// nothing waits for the server beyond the transport's stop budget (2 s). The
/// transport has been publishing meanwhile, as a busy service does during an outage,
/// until the client's outgoing queue was full; a cast that cannot even be queued fails
/// after its timeout instead of blocking. Before, `stop()` + `wait()` of the RPC server
/// waited for an unsubscription behind the full queue until the consumer task was
/// aborted (10 s), the cast blocked until the server came back, and the drop waited 5 s
/// for a flush.
#[test]
fn stop_wait_and_drop_are_bounded_while_the_server_is_unreachable() {
    if url().is_none() {
        return;
    }
    // The restarts of the others stop every nats-server, this test's own included.
    let _turn = turn();
    within(
        Duration::from_secs(180),
        "stop while unreachable",
        move || {
            const BOUND: Duration = Duration::from_secs(4);
            let mut own = OwnServer::start();
            let url = with_option(&own.url(), "consumer_ttl", "600");
            let transport = messaging_transports::open(&url).unwrap();
            let topic = format!("down_{}", &ids::hex_id()[..10]);
            let endpoint =
                Endpoint::new().method("echo", |_ctx, v: Value| Ok::<_, HandlerError>(v.n));
            let server = rpc::server(
                transport.clone(),
                Target::new(topic.clone()).with_server("s1"),
                vec![endpoint],
                ThreadPoolExecutor::new(),
            )
            .unwrap()
            .build()
            .unwrap();
            server.start().unwrap();
            let client = RpcClient::new(
                messaging_transports::open(&url).unwrap(),
                Target::new(topic.clone()),
            )
            .with_timeout(Duration::from_secs(5));
            call_until_served(&client, Duration::from_secs(10));
            let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
            let seen_by = seen.clone();
            let listener = messaging_core::notify::listener(
                transport.clone(),
                vec![Target::new(topic.clone())],
                vec![NotificationEndpoint::new().on(
                    Priority::Info,
                    move |n: Notification<Value>| {
                        seen_by.lock().unwrap().insert(n.payload.n);
                        NotificationResult::Handled
                    },
                )],
                ListenerOptions::new(),
                ThreadPoolExecutor::new(),
            )
            .build()
            .unwrap();
            listener.start().unwrap();
            let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "faults")
                .with_topics([topic.as_str()]);
            block_on(notifier.info(&Context::new(), "fault.test", &Value { n: 1 })).unwrap();
            assert!(
                until_seen(&seen, 1, Duration::from_secs(30)),
                "not listening"
            );

            own.kill();
            // Cast through the listeners' own transport until the client's outgoing queue
            // is full (or a cast fails).
            let sent = Arc::new(AtomicUsize::new(0));
            let caster = {
                let (sent, client) = (
                    sent.clone(),
                    RpcClient::new(transport.clone(), Target::new("nobody"))
                        .with_timeout(Duration::from_secs(1)),
                );
                std::thread::spawn(move || {
                    for n in 0..20_000u64 {
                        if client
                            .cast_blocking(&Context::new(), "echo", &Value { n })
                            .is_err()
                        {
                            break;
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                })
            };
            let mut last = (0, Instant::now());
            while !caster.is_finished() {
                let now = sent.load(Ordering::SeqCst);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > Duration::from_millis(500) {
                    break; // blocked on the full queue
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "measured: {} casts queued while the server was down",
                sent.load(Ordering::SeqCst)
            );
            let limit = CallOptions::new().timeout(Duration::from_secs(60));
            let rpc_stop = timed(
                "stop()+wait() of the RPC server, server down",
                Duration::from_secs(60),
                {
                    let (server, limit) = (server.clone(), limit.clone());
                    move || {
                        server.stop_with(&limit).unwrap();
                        server.wait_with(&limit).unwrap();
                    }
                },
            );
            let listener_stop = timed(
                "stop()+wait() of the notification listener, server down",
                Duration::from_secs(60),
                {
                    let listener = listener.clone();
                    move || {
                        listener.stop_with(&limit).unwrap();
                        listener.wait_with(&limit).unwrap();
                    }
                },
            );
            let cast = timed(
                "the blocked cast, server down",
                Duration::from_secs(60),
                move || caster.join().unwrap(),
            );
            let dropped = timed(
                "dropping the last handles of the transport, server down",
                Duration::from_secs(60),
                move || drop((server, listener, transport)),
            );
            for (what, took) in [
                ("stop+wait of the RPC server", rpc_stop),
                ("stop+wait of the listener", listener_stop),
                ("the blocked cast", cast),
                ("the drop", dropped),
            ] {
                assert!(took < BOUND, "{what} took {took:?} with the server down");
            }
        },
    );
}

#[derive(Serialize, Deserialize)]
struct Blob {
    text: String,
}

/// A gate handlers wait at until it is opened.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn pass(&self) {
        let (open, opened) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        let (open, opened) = &*self.0;
        *open.lock().unwrap() = true;
        opened.notify_all();
    }
}

/// This process's resident set size, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// An RPC server whose handler is slower than its publishers holds a bounded number of
/// requests: at most what the module docs promise (`prefetch + 1 + 3 × (prefetch + 64)`,
/// plus the one its handler has), and the client drops the rest. Here 50,000 casts of
/// 4 KiB reach a server whose only handler is stuck. Before, the listener's buffer took
/// everything the client received (whose queue held up to 65,536 per subscription):
/// all 50,000 were held (RSS grew by hundreds of MB) and then handled.
#[test]
fn a_flooded_slow_server_holds_a_bounded_number_of_requests() {
    if url().is_none() {
        return;
    }
    // The restarts of the others stop every nats-server, this test's own included.
    let _turn = turn();
    within(Duration::from_secs(300), "flooded server", move || {
        const N: u64 = 50_000;
        const SIZE: usize = 4096;
        const PREFETCH: usize = 16;
        const BOUND: usize = PREFETCH + 1 + 3 * (PREFETCH + 64) + 1;
        let own = OwnServer::start();
        let url = with_option(&own.url(), "prefetch", &PREFETCH.to_string());
        let topic = format!("flood_{}", &ids::hex_id()[..10]);
        let (gate, handled) = (Gate::default(), Arc::new(AtomicUsize::new(0)));
        let endpoint = Endpoint::new().method("work", {
            let (gate, handled) = (gate.clone(), handled.clone());
            move |_ctx, _: Blob| {
                gate.pass();
                handled.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        });
        let listening = messaging_transports::open(&url).unwrap();
        let flooded = rpc::server(
            listening.clone(),
            Target::new(topic.clone()).with_server("s1"),
            vec![endpoint],
            BlockingExecutor::new(),
        )
        .unwrap()
        .build()
        .unwrap();
        let flooded = ServerThread::spawn(flooded).unwrap();
        // An echo server elsewhere: a round trip through it orders what is on the wire.
        let echo_topic = format!("{topic}_echo");
        let echo = server(&url, &echo_topic);
        let echo_from = |transport: Arc<dyn messaging_core::Transport>| {
            RpcClient::new(transport, Target::new(echo_topic.clone()))
                .with_timeout(Duration::from_secs(30))
        };
        let publishing = messaging_transports::open(&url).unwrap();
        call_until_served(&echo_from(publishing.clone()), Duration::from_secs(10));
        call_until_served(&echo_from(listening.clone()), Duration::from_secs(10));

        let before = rss();
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while sampling.load(Ordering::SeqCst) {
                    peak = peak.max(rss());
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            })
        };
        let caster = RpcClient::new(publishing.clone(), Target::new(topic.clone()));
        let blob = Blob {
            text: "x".repeat(SIZE),
        };
        let started = Instant::now();
        for _ in 0..N {
            caster
                .cast_blocking(&Context::new(), "work", &blob)
                .unwrap();
        }
        // The server has every cast once a call sent after them is answered, and the
        // listening transport has read them all once a reply sent after that reaches it.
        call_until_served(&echo_from(publishing.clone()), Duration::from_secs(30));
        call_until_served(&echo_from(listening.clone()), Duration::from_secs(30));
        let flooded_in = started.elapsed();
        sampling.store(false, Ordering::SeqCst);
        let peak = sampler.join().unwrap();

        gate.open();
        // Everything held is handled soon; wait until nothing more comes, for the count.
        let mut last = (usize::MAX, Instant::now());
        while last.1.elapsed() < Duration::from_secs(1) {
            let now = handled.load(Ordering::SeqCst);
            if now != last.0 {
                last = (now, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        flooded.stop_and_wait().unwrap();
        echo.stop_and_wait().unwrap();
        let handled = handled.load(Ordering::SeqCst);
        let grown = peak.saturating_sub(before);
        eprintln!(
            "measured: {N} casts of {SIZE} bytes in {flooded_in:?} to a stuck server with \
             prefetch={PREFETCH}: {handled} held and handled (bound {BOUND}), RSS {} MB \
             before, peak {} MB (+{} MB)",
            before >> 20,
            peak >> 20,
            grown >> 20
        );
        assert!(
            (PREFETCH..=BOUND).contains(&handled),
            "{handled} requests held, bound {BOUND}"
        );
        assert!(grown < 100 << 20, "RSS grew by {} MB", grown >> 20);
    });
}
