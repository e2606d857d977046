//! NATS in a three-node cluster with replicated JetStream (issue 12, items 1, 2, 5).
//!
//! Each test starts a cluster of its own ([`nats_cluster_node`]: three nats-server
//! nodes on loopback, routed to each other, JetStream on each; the server on 4222 is
//! left alone) and tears it down whether it passes or not. URLs name all three nodes
//! and set `stream_replicas=3`: the notification stream and its consumers keep a copy
//! on every node.
//!
//! `calls_casts_and_notifications_fail_over_when_each_clients_node_is_stopped_or_killed`:
//! three client processes (copies of this test binary, see
//! [`nats_cluster_client_process`], each with its own transport and connection, named
//! `messaging-rs:<its pid>`) send steady calls, casts and notifications to an RPC
//! server and a notification listener in the test process. The node each client is
//! connected to (found in the nodes' `/connz`) is stopped with `SIGTERM`, client after
//! client, then killed (`kill -9`) the same way; each is brought back before the next
//! fault, once every stream and consumer copy on it is current again (`/healthz`). For
//! each fault it measures how long every connection on the node took to be back on
//! another node (`/connz`), how long until each client's messages were handled again,
//! and counts, per window (from one fault to the next): calls completed / timed out /
//! hung, notifications JetStream acknowledged / handled / duplicated / never handled,
//! casts sent / received / lost, with when the lost ones were sent. It asserts that no
//! call hangs or fails other than by its timeout; that every notification is stored
//! within its timeout (20 s, more than a stream leader's election takes) and every one
//! JetStream acknowledged is handled (the consumers' acknowledgement wait is 5 s, so a
//! notification lost on its way to the listener comes back within the test); and that
//! casts (core NATS: at-most-once) are lost only within their fault's window: from a
//! second before the fault until the connections on the node are back, plus two
//! seconds. It prints the per-fault table.
//!
//! `the_functional_suite_passes_against_a_three_node_cluster`: every scenario of the
//! functional suite against the cluster's URL (two at a time, as `cargo test` runs the
//! suite against the single server).
//!
//! `stream_replicas_an_existing_stream_keeps_its_count_and_too_many_is_a_clear_error`
//! and `stream_replicas_beyond_one_is_refused_by_a_lone_server`: what
//! `stream_replicas` does when the stream exists with another count, or the servers
//! cannot keep that many copies (the latter against the server on 4222).
//!
//! They run when `MESSAGING_TEST_NATS_URL` is set (the broker tests are enabled) and
//! `/usr/sbin/nats-server` exists, one cluster at a time; otherwise they say why they
//! were skipped.

mod nats_cluster_node;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::panic::AssertUnwindSafe;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier, NotifyError,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient, RpcError};
use messaging_core::{Context, Priority, Target, TransportError, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{LogCapture, ServerThread, within};
use nats_cluster_node::NatsCluster;
use serde::{Deserialize, Serialize};
use tracing::Level;

/// Set for the client processes: which load they send.
const ROLE_VAR: &str = "MSGTEST_NATS_CLUSTER_ROLE";
/// Set for the client processes: the transport URL.
const URL_VAR: &str = "MSGTEST_NATS_CLUSTER_URL";
/// Set for the client processes: the topic.
const TOPIC_VAR: &str = "MSGTEST_NATS_CLUSTER_TOPIC";
/// What starts each line a client process reports a send with.
const LINE: &str = "nats-cluster-client:";
/// A call's timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The budget of a cast.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The budget of a notification: more than JetStream takes to elect a stream leader
/// after the leader's node is killed (4.5 to 7.6 s measured here).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);
/// What a send may take beyond its timeout before it counts as hung.
const SLACK: Duration = Duration::from_secs(2);
/// The pause between two sends of a client: a steady load, not a flood (2 cores).
const PACE: Duration = Duration::from_millis(20);
/// How long connections may take to be back, and clients to be served again, after a
/// fault or a node's return.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// How long before a fault a lost cast may have been sent (it was on its way).
const LOSS_BEFORE: Duration = Duration::from_secs(1);
/// How long after the connections on a faulted node are back a cast may still be lost
/// (subscriptions restored and their interest routed to the other nodes).
const LOSS_AFTER: Duration = Duration::from_secs(2);
/// The notification consumers' acknowledgement wait (`notification_ack_wait`): a
/// notification lost on its way to the listener is redelivered after it.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The steady load with a node back before the next fault.
const BETWEEN_FAULTS: Duration = Duration::from_secs(1);
/// The steady load before the first fault.
const STEADY: Duration = Duration::from_secs(3);

#[derive(Serialize, Deserialize)]
struct Value {
    n: u64,
}

/// What a client process sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    Calls,
    Casts,
    Notifications,
}

impl Role {
    const ALL: [Role; 3] = [Role::Calls, Role::Casts, Role::Notifications];

    fn name(self) -> &'static str {
        match self {
            Role::Calls => "calls",
            Role::Casts => "casts",
            Role::Notifications => "notifications",
        }
    }

    fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The longest one send may take.
    fn timeout(self) -> Duration {
        match self {
            Role::Calls => CALL_TIMEOUT,
            Role::Casts => SEND_TIMEOUT,
            Role::Notifications => NOTIFY_TIMEOUT,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

// ===== the client processes =====

/// Not a test: the body of the client processes the failover test starts (this binary
/// run with `--ignored --exact nats_cluster_client_process` and the
/// `MSGTEST_NATS_CLUSTER_*` variables). It sends one message every [`PACE`] until its
/// stdin closes, and reports each on stdout: `nats-cluster-client: <n> ok|timeout|failed
/// <µs taken> [error]`. `ok` is an answered call, a cast the client took, a
/// notification JetStream acknowledged.
#[test]
#[ignore = "a client process of the NATS cluster failover test, started by it"]
fn nats_cluster_client_process() {
    let (Ok(role), Ok(url), Ok(topic)) = (
        std::env::var(ROLE_VAR),
        std::env::var(URL_VAR),
        std::env::var(TOPIC_VAR),
    ) else {
        eprintln!("not a test on its own: the failover test starts it with {ROLE_VAR} set");
        return;
    };
    let role = Role::parse(&role).expect("a known role");
    // The transport's warnings go to stderr (the test's), as they happen.
    let logs = LogCapture::global();
    std::thread::spawn(move || {
        let mut shown = 0;
        loop {
            let events = logs.events();
            for event in &events[shown..] {
                if event.level <= Level::WARN && event.target.starts_with("messaging") {
                    eprintln!(
                        "{} client: {} {:?}",
                        role.name(),
                        event.message,
                        event.fields
                    );
                }
            }
            shown = events.len();
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    {
        // The test closes our stdin to stop us (and so does its death).
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let transport = messaging_transports::open(&url).expect("the cluster URL opens");
    let rpc_outcome = |result: Result<(), RpcError>| match result {
        Ok(()) => Outcome::Ok,
        Err(RpcError::Timeout { .. }) => Outcome::TimedOut,
        Err(error) => Outcome::Failed(error.to_string()),
    };
    let send: Box<dyn Fn(u64) -> Outcome> = match role {
        Role::Calls => {
            let client = RpcClient::new(transport, Target::new(topic)).with_timeout(CALL_TIMEOUT);
            Box::new(move |n| {
                rpc_outcome(
                    client
                        .call_blocking::<_, u64>(&Context::new(), "echo", &Value { n })
                        .map(|echoed| {
                            assert_eq!(echoed, n, "a call answered with another call's result");
                        }),
                )
            })
        }
        Role::Casts => {
            let client = RpcClient::new(transport, Target::new(topic)).with_timeout(SEND_TIMEOUT);
            Box::new(move |n| {
                rpc_outcome(client.cast_blocking(&Context::new(), "record", &Value { n }))
            })
        }
        Role::Notifications => {
            let notifier = Notifier::new(transport, "cluster-test")
                .with_topics([topic.as_str()])
                .with_timeout(NOTIFY_TIMEOUT);
            Box::new(move |n| {
                match block_on(notifier.info(&Context::new(), "cluster.test", &Value { n })) {
                    Ok(()) => Outcome::Ok,
                    Err(error) => Outcome::Failed(error.to_string()),
                }
            })
        }
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = send(n);
        let took = started.elapsed().as_micros();
        let line = match outcome {
            Outcome::Ok => format!("{LINE} {n} ok {took}"),
            Outcome::TimedOut => format!("{LINE} {n} timeout {took}"),
            Outcome::Failed(error) => {
                format!("{LINE} {n} failed {took} {}", error.replace('\n', " "))
            }
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return;
        }
        drop(out);
        n += 1;
        std::thread::sleep(PACE);
    }
}

/// How one send ended, as its client process reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered (a call), taken by the client (a cast), acknowledged by JetStream (a
    /// notification).
    Ok,
    /// A call's timeout.
    TimedOut,
    /// Any other error, with its text.
    Failed(String),
}

/// One send, as reported.
#[derive(Clone, Debug)]
struct Sent {
    n: u64,
    outcome: Outcome,
    took: Duration,
    /// When it began (the report's arrival less what it took).
    started: Instant,
    /// When its report arrived.
    ended: Instant,
}

/// What the test knows of one client process.
#[derive(Debug)]
struct ClientLog {
    sent: Vec<Sent>,
    /// When the last report (or the start) arrived.
    last: Instant,
    /// Its stdout ended (it exited).
    ended: bool,
}

/// A client process and the thread reading its reports.
struct ClientProcess {
    role: Role,
    pid: u32,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<ClientLog>>,
    reader: Option<JoinHandle<()>>,
}

/// The client processes, killed (if still running) when dropped: the test holds this
/// on its own thread, so they end even if the test fails or its worker hangs.
#[derive(Clone, Default)]
struct Children(Arc<Mutex<Vec<Child>>>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in lock(&self.0).iter_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl ClientProcess {
    fn spawn(role: Role, url: &str, topic: &str, children: &Children) -> ClientProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "nats_cluster_client_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, role.name())
            .env(URL_VAR, url)
            .env(TOPIC_VAR, topic)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test binary starts again as a client");
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        lock(&children.0).push(child);
        let log = Arc::new(Mutex::new(ClientLog {
            sent: Vec::new(),
            last: Instant::now(),
            ended: false,
        }));
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Some(report) = line.strip_prefix(LINE) else {
                        continue;
                    };
                    let ended = Instant::now();
                    let mut fields = report.trim().splitn(4, ' ');
                    let (Some(n), Some(kind), Some(micros)) =
                        (fields.next(), fields.next(), fields.next())
                    else {
                        panic!("an unreadable report: {line}");
                    };
                    let took = Duration::from_micros(micros.parse().unwrap());
                    let outcome = match kind {
                        "ok" => Outcome::Ok,
                        "timeout" => Outcome::TimedOut,
                        _ => Outcome::Failed(fields.next().unwrap_or_default().to_owned()),
                    };
                    let mut log = lock(&log);
                    log.sent.push(Sent {
                        n: n.parse().unwrap(),
                        outcome,
                        took,
                        started: ended - took,
                        ended,
                    });
                    log.last = ended;
                }
                lock(&log).ended = true;
            })
        };
        ClientProcess {
            role,
            pid,
            stdin,
            log,
            reader: Some(reader),
        }
    }

    /// The name of its connection, as the transport names it.
    fn connection(&self) -> String {
        format!("messaging-rs:{}", self.pid)
    }

    /// Panics if the process died, or has been in one send for longer than that send's
    /// timeout allows (a hang).
    fn check_progress(&self) {
        let log = lock(&self.log);
        assert!(
            !log.ended || self.stdin.is_none(),
            "the {} client process ended on its own (see its stderr)",
            self.role.name()
        );
        let quiet = log.last.elapsed();
        assert!(
            self.stdin.is_none() || quiet <= self.role.timeout() + PACE + SLACK,
            "hung: the {} client has been in one send for {quiet:?} (timeout {:?})",
            self.role.name(),
            self.role.timeout()
        );
    }

    /// Closes its stdin and waits until it has ended (at most its send's timeout and
    /// the slack): the send under way finishes, none starts.
    fn stop(&mut self) {
        self.stdin = None;
        let limit = self.role.timeout() + SLACK + Duration::from_secs(3);
        let started = Instant::now();
        while !lock(&self.log).ended {
            assert!(
                started.elapsed() < limit,
                "hung: the {} client did not end within {limit:?} of being told to",
                self.role.name()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
    }

    fn sent(&self) -> Vec<Sent> {
        lock(&self.log).sent.clone()
    }
}

// ===== the consumers =====

/// What the server and the listener handled, and when.
#[derive(Clone, Default)]
struct Handled {
    /// Calls the server answered: when.
    calls: Arc<Mutex<Vec<Instant>>>,
    /// Casts: value and when.
    casts: Arc<Mutex<Vec<(u64, Instant)>>>,
    /// Notifications: value and when.
    notifications: Arc<Mutex<Vec<(u64, Instant)>>>,
}

fn rpc_server(url: &str, topic: &str, handled: &Handled) -> ServerThread {
    let (calls, casts) = (handled.calls.clone(), handled.casts.clone());
    let endpoint = Endpoint::new()
        .method("echo", move |_ctx, v: Value| {
            lock(&calls).push(Instant::now());
            Ok::<_, HandlerError>(v.n)
        })
        .method("record", move |_ctx, v: Value| {
            lock(&casts).push((v.n, Instant::now()));
            Ok::<_, HandlerError>(v.n)
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

fn notification_listener(url: &str, topic: &str, handled: &Handled) -> ServerThread {
    let notifications = handled.notifications.clone();
    let endpoint = NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Value>| {
        lock(&notifications).push((n.payload.n, Instant::now()));
        NotificationResult::Handled
    });
    let listener = messaging_core::notify::listener(
        messaging_transports::open(url).unwrap(),
        vec![Target::new(topic)],
        vec![endpoint],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    ServerThread::spawn(listener).unwrap()
}

// ===== faults and what they did =====

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    /// `SIGTERM`: the server closes its connections and leaves cleanly.
    Term,
    /// `kill -9`.
    Kill,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Term => "SIGTERM",
            FaultKind::Kill => "kill -9",
        }
    }
}

/// A connection that was on the faulted node, and when it was back on another.
struct Moved {
    /// A client's role, or "test" for the server's and listener's.
    who: String,
    back_after: Option<Duration>,
}

/// One fault.
struct Fault {
    kind: FaultKind,
    /// The client whose node it was.
    of: Role,
    node: String,
    /// What else the node held: `stream leader`, `consumer leader`.
    leading: Vec<&'static str>,
    began: Instant,
    /// The connections on the node.
    moved: Vec<Moved>,
    /// How long after the fault each client's messages were handled again.
    served: Vec<(Role, Duration)>,
    /// When the node was back (and its copies current).
    back: Instant,
}

impl Fault {
    /// When the last connection on the node was back elsewhere.
    fn reconnected(&self) -> Instant {
        self.began
            + self
                .moved
                .iter()
                .filter_map(|m| m.back_after)
                .max()
                .unwrap_or_default()
    }
}

/// Counts for the notifications of one window.
#[derive(Debug, Default)]
struct NotificationCounts {
    acked: usize,
    handled: usize,
    duplicated: usize,
    lost: Vec<u64>,
    unacked: usize,
    first_error: Option<String>,
}

fn notification_counts(sent: &[&Sent], handled: &HashMap<u64, usize>) -> NotificationCounts {
    let mut counts = NotificationCounts::default();
    for sent in sent {
        match &sent.outcome {
            Outcome::Ok => {
                counts.acked += 1;
                match handled.get(&sent.n).copied().unwrap_or(0) {
                    0 => counts.lost.push(sent.n),
                    1 => counts.handled += 1,
                    _ => {
                        counts.handled += 1;
                        counts.duplicated += 1;
                    }
                }
            }
            Outcome::TimedOut | Outcome::Failed(_) => {
                counts.unacked += 1;
                if let Outcome::Failed(error) = &sent.outcome {
                    counts.first_error.get_or_insert_with(|| error.clone());
                }
            }
        }
    }
    counts
}

/// Counts for the casts of one window; `lost` are the casts the client took but the
/// server never handled.
#[derive(Debug, Default)]
struct CastCounts {
    sent: usize,
    received: usize,
    duplicated: usize,
    lost: Vec<Sent>,
    failed: usize,
}

fn cast_counts(sent: &[&Sent], handled: &HashMap<u64, usize>) -> CastCounts {
    let mut counts = CastCounts::default();
    for sent in sent {
        if sent.outcome != Outcome::Ok {
            counts.failed += 1;
            continue;
        }
        counts.sent += 1;
        match handled.get(&sent.n).copied().unwrap_or(0) {
            0 => counts.lost.push((*sent).clone()),
            1 => counts.received += 1,
            _ => {
                counts.received += 1;
                counts.duplicated += 1;
            }
        }
    }
    counts
}

/// Calls in one window: `(completed, timed out, failed otherwise, hung)`; a call that
/// ended later than its timeout allows counts as hung.
fn call_counts(sent: &[&Sent]) -> (usize, usize, Vec<String>, usize) {
    let (mut completed, mut timed_out, mut failed, mut hung) = (0, 0, Vec::new(), 0);
    for sent in sent {
        if sent.took > CALL_TIMEOUT + SLACK {
            hung += 1;
        }
        match &sent.outcome {
            Outcome::Ok => completed += 1,
            Outcome::TimedOut => timed_out += 1,
            Outcome::Failed(error) => failed.push(error.clone()),
        }
    }
    (completed, timed_out, failed, hung)
}

/// When each client's messages sent after `after` were first handled (a call
/// answered), for the clients served since.
fn served_since(
    clients: &[ClientProcess],
    handled: &Handled,
    after: Instant,
) -> HashMap<Role, Instant> {
    let mut served = HashMap::new();
    for client in clients {
        let log = lock(&client.log);
        let since = log.sent.iter().filter(|s| s.started > after);
        let first = match client.role {
            Role::Calls => since
                .filter(|s| s.outcome == Outcome::Ok)
                .map(|s| s.ended)
                .min(),
            Role::Casts | Role::Notifications => {
                let seen = if client.role == Role::Casts {
                    lock(&handled.casts)
                } else {
                    lock(&handled.notifications)
                };
                let numbers: Vec<u64> = since.map(|s| s.n).collect();
                seen.iter()
                    .filter(|(n, at)| *at > after && numbers.contains(n))
                    .map(|(_, at)| *at)
                    .min()
            }
        };
        if let Some(first) = first {
            served.insert(client.role, first);
        }
    }
    served
}

/// Polls `done` every 10 ms until it holds, checking that no client hung or died;
/// panics after `limit` naming `what` (and printing `diagnose()`).
fn wait_until(
    clients: &[ClientProcess],
    limit: Duration,
    what: &str,
    diagnose: &dyn Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !done() {
        for client in clients {
            client.check_progress();
        }
        if started.elapsed() > limit {
            dump_logs();
            panic!("{what}: not within {limit:?}\n{}", diagnose());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Prints the last 200 events the transport logged in this process (the server and
/// the listener) at debug level and above: for a failure's diagnosis.
fn dump_logs() {
    let events: Vec<_> = LogCapture::global()
        .events()
        .into_iter()
        .filter(|e| e.level <= Level::DEBUG && e.target.starts_with("messaging_transports"))
        .collect();
    for event in &events[events.len().saturating_sub(200)..] {
        eprintln!(
            "log: {} {} {} {:?}",
            event.level, event.target, event.message, event.fields
        );
    }
}

/// Prints the transport's warnings in this process (the server, the listener) from the
/// `from`th event captured on, alike ones counted.
fn print_warnings(from: usize) {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for event in LogCapture::global().events().into_iter().skip(from) {
        if event.level > Level::WARN || !event.target.starts_with("messaging_transports") {
            continue;
        }
        let error = event
            .fields
            .iter()
            .find(|(name, _)| name == "error")
            .map(|(_, value)| value.chars().take(120).collect::<String>())
            .unwrap_or_default();
        let line = format!("{} {error}", event.message);
        match seen.iter_mut().find(|(l, _)| *l == line) {
            Some((_, count)) => *count += 1,
            None => seen.push((line, 1)),
        }
    }
    for (line, count) in seen {
        eprintln!("measured: warned {count}x in the test process: {line}");
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// Seconds from `from` to `to`, signed.
fn offset(from: Instant, to: Instant) -> String {
    if to >= from {
        format!("+{:.2}s", (to - from).as_secs_f64())
    } else {
        format!("-{:.2}s", (from - to).as_secs_f64())
    }
}

// ===== the tests =====

/// One cluster at a time: each test runs its own, and the machine has 2 cores.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Whether the cluster tests can run here; if not, says why they were skipped.
fn can_run() -> bool {
    if std::env::var("MESSAGING_TEST_NATS_URL").is_err() {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return false;
    }
    if let Err(why) = nats_cluster_node::available() {
        eprintln!("skipped: {why}");
        return false;
    }
    true
}

/// The stream the transport keeps notifications in (default subject prefix).
const STREAM: &str = "msg_NOTIFICATIONS";

#[test]
fn calls_casts_and_notifications_fail_over_when_each_clients_node_is_stopped_or_killed() {
    if !can_run() {
        return;
    }
    let _turn = turn();
    LogCapture::global();
    let started = Instant::now();
    let cluster = NatsCluster::start("failover");
    // Tear the nodes and the clients down from this thread should the watchdog give up
    // on the worker.
    let _guard = cluster.guard();
    let children = Children::default();
    let worker_children = children.clone();
    within(
        Duration::from_secs(240),
        "NATS cluster failover",
        move || {
            failover(cluster, &worker_children, started);
        },
    );
}

/// The failover test's body; see the module docs.
fn failover(mut cluster: NatsCluster, children: &Children, started: Instant) {
    // What the other tests of this process logged is theirs.
    let logged_before = LogCapture::global().events().len();
    eprintln!(
        "measured: 3-node cluster formed in {:.1?}",
        started.elapsed()
    );
    let url = cluster.url(
        &[0, 1, 2],
        &format!(
            "stream_replicas=3&notification_ack_wait={}",
            ACK_WAIT.as_secs()
        ),
    );
    let topic = format!("cluster_{}", &ids::hex_id()[..10]);
    let consumer = format!("n-openstack-{topic}-info--");
    let handled = Handled::default();
    let server = rpc_server(&url, &topic, &handled);
    let listener = notification_listener(&url, &topic, &handled);
    let mut clients: Vec<ClientProcess> = Role::ALL
        .into_iter()
        .map(|role| ClientProcess::spawn(role, &url, &topic, children))
        .collect();
    let load_started = Instant::now();
    wait_until(
        &clients,
        RECOVERY_LIMIT,
        "first messages handled",
        &String::new,
        || served_since(&clients, &handled, load_started).len() == Role::ALL.len(),
    );
    // A steady load first, to compare with.
    std::thread::sleep(STEADY);
    // The stream (and so its consumers) keeps three copies.
    let stream = cluster
        .stream_report(STREAM)
        .expect("the stream has a leader");
    assert_eq!(stream["config"]["num_replicas"], 3, "{stream:#}");
    assert_eq!(
        stream["cluster"]["replicas"].as_array().map(Vec::len),
        Some(2),
        "{stream:#}"
    );
    let report = cluster
        .consumer_report(STREAM, &consumer)
        .expect("the consumer has a leader");
    assert_eq!(
        report["cluster"]["replicas"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );

    let load = Load {
        clients: &clients,
        handled: &handled,
        consumer: &consumer,
        started,
    };
    let mut faults: Vec<Fault> = Vec::new();
    for kind in [FaultKind::Term, FaultKind::Kill] {
        for of in Role::ALL {
            let fault = inject(&mut cluster, &load, kind, of, faults.len() + 1);
            faults.push(fault);
        }
    }

    // Stop the load; wait until every notification JetStream acknowledged has been
    // handled (one lost on its way to the listener comes back after the
    // acknowledgement wait).
    for client in &mut clients {
        client.stop();
    }
    let load_ended = Instant::now();
    let sent: HashMap<Role, Vec<Sent>> = clients.iter().map(|c| (c.role, c.sent())).collect();
    let settle = Instant::now();
    let all_notifications = || {
        let seen = times(&handled.notifications);
        sent[&Role::Notifications]
            .iter()
            .filter(|s| s.outcome == Outcome::Ok)
            .all(|s| seen.contains_key(&s.n))
    };
    while !all_notifications() && settle.elapsed() < ACK_WAIT + Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Casts still on their way arrive within this.
    std::thread::sleep(Duration::from_millis(500));
    let consumer_at_end = cluster.consumer_report(STREAM, &consumer);
    server.stop_and_wait().unwrap();
    listener.stop_and_wait().unwrap();

    let findings = tabulate(&faults, &sent, &handled, load_started, load_ended);
    eprintln!("measured: per fault (times from the fault):");
    for line in &findings.table {
        eprintln!("  {line}");
    }
    eprintln!("measured: the whole test took {:.1?}", started.elapsed());
    print_warnings(logged_before);
    if !findings.lost_notifications.is_empty() {
        dump_logs();
        eprintln!("the consumer at the end: {consumer_at_end:#?}");
    }
    if !findings.stray_casts.is_empty() {
        // What the routes did, with the servers' timestamps.
        for node in &cluster.nodes {
            for line in node.log_lines("oute") {
                eprintln!("{}: {line}", node.name);
            }
        }
    }
    assert_eq!(findings.hung, 0, "calls that ended past their timeout");
    assert!(
        findings.failed_calls.is_empty(),
        "calls that neither completed nor timed out: {:?}",
        findings.failed_calls
    );
    assert!(
        findings.unacked.is_empty(),
        "notifications not stored within {NOTIFY_TIMEOUT:?}: {:?}",
        findings.unacked
    );
    assert!(
        findings.lost_notifications.is_empty(),
        "notifications JetStream acknowledged but never handled: {}",
        findings.lost_notifications.join(", ")
    );
    assert!(
        findings.stray_casts.is_empty(),
        "casts lost outside their fault's window: {}",
        findings.stray_casts.join(", ")
    );
    drop(cluster);
}

/// What the faults are injected under.
struct Load<'a> {
    clients: &'a [ClientProcess],
    handled: &'a Handled,
    /// The listener's durable consumer.
    consumer: &'a str,
    /// When the test began.
    started: Instant,
}

/// Stops (`kind`) the node the `of` client is connected to, waits until every
/// connection it held is back on another node and every client is served again,
/// brings the node back (its copies current) and waits until every client is served
/// with it back. Returns what it measured.
fn inject(
    cluster: &mut NatsCluster,
    load: &Load<'_>,
    kind: FaultKind,
    of: Role,
    number: usize,
) -> Fault {
    let clients = load.clients;
    let client = clients.iter().find(|c| c.role == of).unwrap();
    let mut target = None;
    wait_until(
        clients,
        RECOVERY_LIMIT,
        "the client's node found in /connz",
        &String::new,
        || {
            target = cluster.node_of(&client.connection());
            target.is_some()
        },
    );
    let target = target.unwrap();
    let node = cluster.nodes[target].name.clone();
    // Who is on the node: `(who, connection name, how many of that name in all)`: the
    // clients, and the test's two connections (the server's and the listener's).
    let mut moving: Vec<(String, String, usize)> = clients
        .iter()
        .filter(|c| cluster.node_of(&c.connection()) == Some(target))
        .map(|c| (c.role.name().to_owned(), c.connection(), 1))
        .collect();
    let ours = format!("messaging-rs:{}", std::process::id());
    let ours_before = cluster.connections_named(&ours);
    if ours_before[target] > 0 {
        moving.push((
            format!("server/listener x{}", ours_before[target]),
            ours.clone(),
            ours_before.iter().sum(),
        ));
    }
    let (stream_leader, consumer_leader) = cluster.leaders(STREAM, load.consumer);
    let mut leading = Vec::new();
    if stream_leader.as_deref() == Some(node.as_str()) {
        leading.push("stream leader");
    }
    if consumer_leader.as_deref() == Some(node.as_str()) {
        leading.push("consumer leader");
    }
    eprintln!(
        "fault {number}: {} of {node} (the {} client's node; on it: {}{}) at {:.1?}",
        kind.name(),
        of.name(),
        moving
            .iter()
            .map(|(who, _, _)| who.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if leading.is_empty() {
            String::new()
        } else {
            format!("; {}", leading.join(", "))
        },
        load.started.elapsed()
    );
    let began = Instant::now();
    match kind {
        FaultKind::Term => cluster.terminate(target),
        FaultKind::Kill => cluster.kill9(target),
    }
    let mut moved: Vec<Moved> = moving
        .iter()
        .map(|(who, _, _)| Moved {
            who: who.clone(),
            back_after: None,
        })
        .collect();
    let mut served = HashMap::new();
    let diagnose = || {
        format!(
            "connections on the node: {moving:?}; clients served since: {:?}",
            served_since(clients, load.handled, began).keys()
        )
    };
    wait_until(
        clients,
        RECOVERY_LIMIT,
        "connections back and clients served after the fault",
        &diagnose,
        || {
            for ((_, name, expected), moved) in moving.iter().zip(&mut moved) {
                if moved.back_after.is_none()
                    && cluster.connections_named(name).iter().sum::<usize>() >= *expected
                {
                    moved.back_after = Some(began.elapsed());
                }
            }
            served = served_since(clients, load.handled, began);
            moved.iter().all(|m| m.back_after.is_some()) && served.len() == Role::ALL.len()
        },
    );
    cluster.restart(target);
    let back = Instant::now();
    wait_until(
        clients,
        RECOVERY_LIMIT,
        "clients served with the node back",
        &String::new,
        || served_since(clients, load.handled, back).len() == Role::ALL.len(),
    );
    // Steady load with the node back before the next fault: what the node's return
    // costs shows in this fault's window, apart from the next fault.
    std::thread::sleep(BETWEEN_FAULTS);
    let mut served: Vec<(Role, Duration)> =
        served.into_iter().map(|(r, at)| (r, at - began)).collect();
    served.sort_by_key(|(r, _)| Role::ALL.iter().position(|x| x == r));
    Fault {
        kind,
        of,
        node,
        leading,
        began,
        moved,
        served,
        back,
    }
}

/// How many times each value was handled.
fn times(seen: &Mutex<Vec<(u64, Instant)>>) -> HashMap<u64, usize> {
    let mut times: HashMap<u64, usize> = HashMap::new();
    for (n, _) in lock(seen).iter() {
        *times.entry(*n).or_default() += 1;
    }
    times
}

/// The per-fault table, and what the test asserts on.
struct Findings {
    table: Vec<String>,
    hung: usize,
    failed_calls: Vec<String>,
    /// Notifications the notifier failed to store, with the first error.
    unacked: Vec<String>,
    lost_notifications: Vec<String>,
    stray_casts: Vec<String>,
}

/// Counts what was sent and handled per window (the steady load before the first
/// fault, then each fault until the next), by when each send began: a fault's window
/// begins [`LOSS_BEFORE`] before it (or halfway from the fault before, if nearer), so
/// that what it lost on the way counts as its.
fn tabulate(
    faults: &[Fault],
    sent: &HashMap<Role, Vec<Sent>>,
    handled: &Handled,
    load_started: Instant,
    load_ended: Instant,
) -> Findings {
    let casts_handled = times(&handled.casts);
    let notifications_handled = times(&handled.notifications);
    let mut bounds: Vec<Instant> = vec![load_started];
    // A fault's window begins LOSS_BEFORE before it, or halfway from the previous
    // fault if that is nearer.
    let mut previous = load_started;
    for fault in faults {
        bounds.push(fault.began - LOSS_BEFORE.min((fault.began - previous) / 2));
        previous = fault.began;
    }
    bounds.push(load_ended + Duration::from_secs(3600));
    let mut findings = Findings {
        table: vec![
            "# | fault | on the node | back on another node after | served again after \
             (calls/casts/notifications) | node back after | calls ok/timed out/hung | \
             notifications acked/handled/duplicated/lost | casts sent/received/lost \
             (lost ones sent, from the fault)"
                .to_owned(),
        ],
        hung: 0,
        failed_calls: Vec::new(),
        unacked: Vec::new(),
        lost_notifications: Vec::new(),
        stray_casts: Vec::new(),
    };
    for (window, range) in bounds.windows(2).enumerate() {
        let of = |role: Role| -> Vec<&Sent> {
            sent[&role]
                .iter()
                .filter(|s| s.started >= range[0] && s.started < range[1])
                .collect()
        };
        let (completed, timed_out, failed, hung) = call_counts(&of(Role::Calls));
        let casts = cast_counts(&of(Role::Casts), &casts_handled);
        let notifications = notification_counts(&of(Role::Notifications), &notifications_handled);
        let fault = window.checked_sub(1).map(|i| &faults[i]);
        let head = match fault {
            None => format!(
                "- | none: steady load for {} | - | - | - | -",
                seconds(range[1] - range[0])
            ),
            Some(fault) => {
                let on_it: Vec<&str> = fault
                    .moved
                    .iter()
                    .map(|m| m.who.as_str())
                    .chain(fault.leading.iter().copied())
                    .collect();
                let moved: Vec<String> = fault
                    .moved
                    .iter()
                    .map(|m| {
                        let after = m.back_after.map_or("never".to_owned(), seconds);
                        format!("{} {after}", m.who)
                    })
                    .collect();
                let served: Vec<String> = fault.served.iter().map(|(_, d)| seconds(*d)).collect();
                format!(
                    "{window} | {} of {} (the {} client's) | {} | {} | {} | {}",
                    fault.kind.name(),
                    fault.node.rsplit('-').next().unwrap_or_default(),
                    fault.of.name(),
                    on_it.join(", "),
                    moved.join(", "),
                    served.join(" / "),
                    seconds(fault.back - fault.began)
                )
            }
        };
        let calls = format!(
            "{completed}/{timed_out}/{hung}{}",
            if failed.is_empty() {
                String::new()
            } else {
                format!(" (+{} failed otherwise)", failed.len())
            }
        );
        let mut notified = format!(
            "{}/{}/{}/{}",
            notifications.acked,
            notifications.handled,
            notifications.duplicated,
            notifications.lost.len()
        );
        if notifications.unacked > 0 {
            let error = notifications.first_error.as_deref().unwrap_or("timed out");
            notified += &format!(
                " (+{} not acked, first: {})",
                notifications.unacked,
                error.chars().take(100).collect::<String>()
            );
        }
        let mut cast = format!("{}/{}/{}", casts.sent, casts.received, casts.lost.len());
        if let (Some(fault), Some(first), Some(last)) =
            (fault, casts.lost.first(), casts.lost.last())
        {
            cast += &format!(
                " ({} .. {})",
                offset(fault.began, first.started),
                offset(fault.began, last.started)
            );
        }
        if casts.duplicated > 0 || casts.failed > 0 {
            cast += &format!(
                " (duplicated {}, failed to send {})",
                casts.duplicated, casts.failed
            );
        }
        findings
            .table
            .push(format!("{head} | {calls} | {notified} | {cast}"));
        findings.hung += hung;
        findings.failed_calls.extend(failed);
        if notifications.unacked > 0 {
            findings.unacked.push(format!(
                "{} in window {window} (first: {:?})",
                notifications.unacked, notifications.first_error
            ));
        }
        findings.lost_notifications.extend(
            notifications
                .lost
                .iter()
                .map(|n| format!("#{n} (window {window})")),
        );
        // A cast may be lost only around its fault: sent from a second before it (where
        // its window begins) until the connections on the node were back, plus the
        // slack.
        for cast in &casts.lost {
            let within_fault = fault.is_some_and(|f| cast.started <= f.reconnected() + LOSS_AFTER);
            if !within_fault {
                findings
                    .stray_casts
                    .push(format!("#{} (window {window})", cast.n));
            }
        }
    }
    findings
}

/// One functional scenario's run: its name, how long it took, how it failed.
type ScenarioRun = (&'static str, Duration, Result<(), String>);

#[test]
fn the_functional_suite_passes_against_a_three_node_cluster() {
    if !can_run() {
        return;
    }
    let _turn = turn();
    let started = Instant::now();
    let cluster = NatsCluster::start("suite");
    let _guard = cluster.guard();
    eprintln!(
        "measured: 3-node cluster formed in {:.1?}",
        started.elapsed()
    );
    let url = cluster.url(&[0, 1, 2], "stream_replicas=3");
    // Two at a time, as `cargo test` runs the suite against one server here.
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<ScenarioRun>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, _)) = messaging_testkit::functional::SCENARIOS.get(i) else {
                        return;
                    };
                    let began = Instant::now();
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        messaging_testkit::functional::run_one(name, &url)
                    }))
                    .map_err(|panic| {
                        panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_else(|| "a panic".to_owned())
                    });
                    lock(&results).push((name, began.elapsed(), outcome));
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(name, _, outcome)| {
            outcome
                .as_ref()
                .err()
                .map(|error| format!("{name}: {error}"))
        })
        .collect();
    for (name, took, outcome) in &results {
        eprintln!(
            "scenario {name}: {} in {took:.1?}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
    }
    eprintln!(
        "measured: {} scenarios against the cluster, {} failed, in {:.1?}",
        results.len(),
        failed.len(),
        started.elapsed()
    );
    assert_eq!(
        results.len(),
        messaging_testkit::functional::SCENARIOS.len()
    );
    assert!(failed.is_empty(), "failed: {failed:#?}");
    drop(cluster);
}

/// How long a notification of the replica tests may take to be stored: a failure a
/// retry could fix is retried until then.
const REPLICAS_NOTIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// Notifies once through a transport for `url`: what the notifier returned.
fn notify_once(url: &str, topic: &str) -> Result<(), NotifyError> {
    let notifier = Notifier::new(messaging_transports::open(url).unwrap(), "replicas")
        .with_topics([topic])
        .with_timeout(REPLICAS_NOTIFY_TIMEOUT);
    block_on(notifier.info(&Context::new(), "replicas.test", &Value { n: 1 }))
}

#[test]
fn stream_replicas_an_existing_stream_keeps_its_count_and_too_many_is_a_clear_error() {
    if !can_run() {
        return;
    }
    let _turn = turn();
    let logs = LogCapture::global();
    let cluster = NatsCluster::start("replicas");
    let _guard = cluster.guard();
    within(Duration::from_secs(60), "stream_replicas", move || {
        let topic = format!("replicas_{}", &ids::hex_id()[..10]);
        // Five copies from three servers: the server's "no suitable peers" in terms of
        // the option (retried, since a server may come back, until the timeout), and
        // nothing created.
        let five = cluster.url(&[0, 1, 2], "stream_replicas=5&subject_prefix=five");
        match notify_once(&five, &topic) {
            Err(NotifyError::Transport(error @ TransportError::Connection { .. })) => {
                let text = error.to_string();
                assert!(
                    text.contains("stream_replicas=5 needs 5 JetStream servers"),
                    "{text}"
                );
                eprintln!("measured: stream_replicas=5 on 3 servers: {text}");
            }
            other => panic!("stream_replicas=5 on 3 servers: {other:?}"),
        }
        assert!(cluster.stream_report("five_NOTIFICATIONS").is_none());

        // A stream created with one copy keeps it when a transport asks for three,
        // with one warning naming both counts; notifications still flow.
        let one = cluster.url(&[0, 1, 2], "subject_prefix=kept");
        notify_once(&one, &topic).expect("a notification into a one-copy stream");
        let report = cluster.stream_report("kept_NOTIFICATIONS").unwrap();
        assert_eq!(report["config"]["num_replicas"], 1, "{report:#}");
        let before = logs.count(Level::WARN, "another replica count");
        let three = cluster.url(&[2, 1, 0], "subject_prefix=kept&stream_replicas=3");
        notify_once(&three, &topic).expect("a notification through a transport asking for 3");
        let report = cluster.stream_report("kept_NOTIFICATIONS").unwrap();
        assert_eq!(report["config"]["num_replicas"], 1, "{report:#}");
        assert_eq!(report["state"]["messages"], 2, "{report:#}");
        let warnings: Vec<_> = logs
            .events()
            .into_iter()
            .filter(|e| e.level == Level::WARN && e.message.contains("another replica count"))
            .collect();
        assert_eq!(warnings.len(), before + 1, "{warnings:?}");
        let warning = warnings.last().unwrap();
        let field = |name: &str| {
            warning
                .fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            (field("replicas"), field("stream_replicas")),
            (Some("1"), Some("3")),
            "{warning:?}"
        );
        // A stream that does not exist is created with the URL's count.
        let created = cluster.url(&[1, 2, 0], "subject_prefix=made&stream_replicas=3");
        notify_once(&created, &topic).expect("a notification into a new three-copy stream");
        let report = cluster.stream_report("made_NOTIFICATIONS").unwrap();
        assert_eq!(report["config"]["num_replicas"], 3, "{report:#}");
        drop(cluster);
    });
}

#[test]
fn stream_replicas_beyond_one_is_refused_by_a_lone_server() {
    let Ok(url) = std::env::var("MESSAGING_TEST_NATS_URL") else {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return;
    };
    // A prefix of its own: the stream must not exist, so that the transport creates it.
    let prefix = format!("lone{}", &ids::hex_id()[..8]);
    let url = messaging_testkit::with_options(
        &url,
        &[("stream_replicas", "3"), ("subject_prefix", &prefix)],
    );
    let outcome = within(Duration::from_secs(30), "lone server", move || {
        notify_once(&url, "replicas")
    });
    match outcome {
        Err(NotifyError::Transport(error @ TransportError::Refused { .. })) => {
            assert!(error.is_permanent());
            let text = error.to_string();
            assert!(
                text.contains("stream_replicas=3 needs a JetStream cluster")
                    && text.contains("use stream_replicas=1"),
                "{text}"
            );
            eprintln!("measured: stream_replicas=3 on one server: {text}");
        }
        other => panic!("stream_replicas=3 on one server: {other:?}"),
    }
}
