//! A real 3-node RabbitMQ cluster and oslo's failover test (issue 10, item 5).
//!
//! Each test starts three extra nodes on loopback (own names, AMQP and distribution
//! ports, data directories; the Erlang cookie of `/var/lib/rabbitmq`) and clusters them
//! with `join_cluster`; the node on 5672 is left alone. URLs name all three nodes, with
//! `rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true` and otherwise oslo's
//! defaults (reconnect delays included).
//!
//! `a_three_node_cluster_with_quorum_queues_survives_stopped_and_killed_nodes`: three
//! client processes (copies of this test binary, see [`cluster_client_process`]: each
//! its own process with its own transport, as oslo's services are, and their
//! connections told from the test's by the pid in their names) send steady calls,
//! casts and notifications to an RPC server and a notification listener in the test
//! process. Hosts are tried in order: the clients list the nodes 1, 2, 3, the server
//! and listener 3, 2, 1, so messages cross nodes. Each node in turn is stopped
//! (`stop_app`) — the clients' node, the one they failed over to, then the consumers'
//! — and brought back (`start_app`) once every client's messages sent after the fault
//! are handled again; then each in turn is killed (`kill -9` of its Erlang VM) and
//! restarted. Across each fault a call is held in its handler, released once the node
//! is down (oslo's `kill_and_process`): it must be answered. Only one node is ever
//! down, and only once the others are in step (`check_if_node_is_quorum_critical`).
//! It asserts that every call completes or fails with its timeout (none hangs or ends
//! late) and that every cast and notification the library reported as sent (broker
//! confirmed) is handled at least once; it prints, per fault, calls completed / timed
//! out / hung, casts and notifications confirmed / handled / duplicated, and how long
//! after the fault the server, the listener and the callers were served again.
//!
//! `a_cast_nacked_because_its_quorum_leader_was_killed_is_retried_on_a_new_channel`
//! pins what the first found: RabbitMQ nacking every publish on a channel whose first
//! publish to a quorum queue came right after its leader's node was killed.
//!
//! Both run when `MESSAGING_TEST_RABBIT_URL` is set (the machine has RabbitMQ) and as
//! root, one at a time; otherwise they say why they were skipped. The nodes are torn
//! down whether a test passes or not (guards on the test's own thread), and so are the
//! client processes.

mod rabbit_node;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient, RpcError};
use messaging_core::{Context, Priority, Target, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{LogCapture, ServerThread, within};
use rabbit_node::RabbitNode;
use serde::{Deserialize, Serialize};
use tracing::Level;

/// Set for the client processes: which load they send.
const ROLE_VAR: &str = "MSGTEST_CLUSTER_ROLE";
/// Set for the client processes: the transport URL.
const URL_VAR: &str = "MSGTEST_CLUSTER_URL";
/// Set for the client processes: the topic.
const TOPIC_VAR: &str = "MSGTEST_CLUSTER_TOPIC";
/// What starts each line a client process reports a send with.
const LINE: &str = "cluster-client:";
/// A call's timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The budget of a cast or a notification (its send's deadline).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// What a send may take beyond its timeout before it counts as hung.
const SLACK: Duration = Duration::from_secs(2);
/// The pause between two sends of a client: a steady load, not a flood (2 cores).
const PACE: Duration = Duration::from_millis(20);
/// The timeout of the call held in its handler across a fault.
const HELD_CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server and listener may take to handle again after a fault.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// A plain listener on loopback only.
const CLUSTER_CONFIG: &str = "listeners.tcp.1 = 127.0.0.1:{amqp_port}\n";

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
            Role::Casts | Role::Notifications => SEND_TIMEOUT,
        }
    }
}

// ===== the client processes =====

/// Not a test: the body of the client processes the failover test starts (this binary
/// run with `--ignored --exact cluster_client_process` and the `MSGTEST_CLUSTER_*`
/// variables). It sends one message every [`PACE`] until its stdin closes, and reports
/// each on stdout: `cluster-client: <n> ok|timeout|failed <µs taken> [error]`.
#[test]
#[ignore = "a client process of the cluster failover test, started by it"]
fn cluster_client_process() {
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
                .with_timeout(SEND_TIMEOUT);
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
    /// Confirmed by the broker (a cast or notification) or answered (a call).
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
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<ClientLog>>,
    reader: Option<JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
                "cluster_client_process",
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
            stdin,
            log,
            reader: Some(reader),
        }
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

/// When the server handled what, and what the listener handled.
#[derive(Clone, Default)]
struct Handled {
    /// oslo's `kill_and_process`: a `hold` call in the handler (true) until the test
    /// releases it (false) after the fault.
    holding: Arc<Mutex<bool>>,
    /// Calls the server answered: when.
    calls: Arc<Mutex<Vec<Instant>>>,
    /// Casts: value and when.
    casts: Arc<Mutex<Vec<(u64, Instant)>>>,
    /// Notifications: value and when.
    notifications: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl Handled {
    /// When the RPC server handled anything (calls and casts), sorted.
    fn server_times(&self) -> Vec<Instant> {
        let mut times = lock(&self.calls).clone();
        times.extend(lock(&self.casts).iter().map(|(_, at)| *at));
        times.sort();
        times
    }

    fn listener_times(&self) -> Vec<Instant> {
        let mut times: Vec<_> = lock(&self.notifications)
            .iter()
            .map(|(_, at)| *at)
            .collect();
        times.sort();
        times
    }
}

fn rpc_server(url: &str, topic: &str, handled: &Handled) -> ServerThread {
    let (calls, casts) = (handled.calls.clone(), handled.casts.clone());
    let holding = handled.holding.clone();
    let endpoint = Endpoint::new()
        .method("hold", move |_ctx, v: Value| {
            *lock(&holding) = true;
            while *lock(&holding) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok::<_, HandlerError>(v.n)
        })
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
    StopApp,
    Kill,
}

/// One fault: which node, how many connections were on it and in all (each `(of the
/// client processes, of the test process)`), when it began and when the node was down
/// (`stop_app` returned, the VM was killed).
struct Fault {
    kind: FaultKind,
    node: String,
    connections: ((usize, usize), (usize, usize)),
    began: Instant,
    down: Instant,
    /// When every client's messages were handled again.
    recovered: Instant,
    /// When the node ran again.
    back: Instant,
    /// The call in the server's handler across the fault: how long it took, and its
    /// result.
    held: (Duration, Result<u64, String>),
}

/// How many connections each node has: `(of the client processes, of this process)`
/// (the server, the listener, the held call's caller), from `rabbitmqctl
/// list_connections` on the running node `nodes[running]` (the transport names its
/// connections `messaging-rs:<pid>:<purpose>` in their client properties).
fn connections(nodes: &[RabbitNode], running: usize) -> Vec<(usize, usize)> {
    let listing = nodes[running].must(&["list_connections", "port", "client_properties", "-s"]);
    let ours = format!("messaging-rs:{}:", std::process::id());
    let mut counts = vec![(0, 0); nodes.len()];
    for line in listing.lines() {
        let Some(port) = line.split_whitespace().next() else {
            continue;
        };
        let Some(node) = nodes.iter().position(|n| port.parse() == Ok(n.amqp_port)) else {
            continue;
        };
        if line.contains(&ours) {
            counts[node].1 += 1;
        } else {
            counts[node].0 += 1;
        }
    }
    counts
}

/// The longest pause in `times` (sorted) that ends after `from` and before `until`:
/// `(when it ended, how long it was)`. The pause may begin before `from` (the last
/// handle before the fault).
fn longest_pause(times: &[Instant], from: Instant, until: Instant) -> Option<(Instant, Duration)> {
    let start = times.partition_point(|t| *t < from).saturating_sub(1);
    times[start..]
        .windows(2)
        .filter(|w| w[1] > from && w[1] < until)
        .map(|w| (w[1], w[1] - w[0]))
        .max_by_key(|(_, pause)| *pause)
}

fn describe_pause(times: &[Instant], fault: &Fault) -> String {
    match longest_pause(
        times,
        fault.began,
        fault.recovered + Duration::from_millis(1),
    ) {
        Some((resumed, pause)) => format!(
            "paused {pause:.2?} (until {:.2?} after the fault began)",
            resumed - fault.began
        ),
        None => "never".to_owned(),
    }
}

/// Counts for one kind of one-way message in one window.
#[derive(Debug, Default)]
struct OneWay {
    confirmed: usize,
    handled: usize,
    duplicated: usize,
    lost: Vec<u64>,
    unconfirmed: usize,
    first_error: Option<String>,
}

fn one_way(sent: &[&Sent], handled: &[(u64, Instant)]) -> OneWay {
    let mut times: HashMap<u64, usize> = HashMap::new();
    for (n, _) in handled {
        *times.entry(*n).or_default() += 1;
    }
    let mut counts = OneWay::default();
    for sent in sent {
        match &sent.outcome {
            Outcome::Ok => {
                counts.confirmed += 1;
                match times.get(&sent.n).copied().unwrap_or(0) {
                    0 => counts.lost.push(sent.n),
                    1 => counts.handled += 1,
                    _ => {
                        counts.handled += 1;
                        counts.duplicated += 1;
                    }
                }
            }
            Outcome::TimedOut | Outcome::Failed(_) => {
                counts.unconfirmed += 1;
                if let Outcome::Failed(error) = &sent.outcome {
                    counts.first_error.get_or_insert_with(|| error.clone());
                }
            }
        }
    }
    counts
}

impl std::fmt::Display for OneWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "confirmed {} / handled {} / duplicated {} / lost {}",
            self.confirmed,
            self.handled,
            self.duplicated,
            self.lost.len()
        )?;
        if self.unconfirmed > 0 {
            write!(f, " (+{} reported unsent", self.unconfirmed)?;
            if let Some(error) = &self.first_error {
                write!(f, ", first: {error}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Calls in one window: `(completed, timed out, failed otherwise, hung)`; a call that
/// ended later than its timeout allows counts as hung.
fn calls(sent: &[&Sent]) -> (usize, usize, Vec<String>, usize) {
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

/// Polls `waiting` every 20 ms until it names nothing, checking that no client hung or
/// died; panics after `limit`, naming what was still awaited (after
/// [`dump_logs`]).
fn wait_until(
    clients: &[ClientProcess],
    limit: Duration,
    what: &str,
    diagnose: &dyn Fn(),
    waiting: impl Fn() -> Vec<&'static str>,
) {
    let started = Instant::now();
    loop {
        let missing = waiting();
        if missing.is_empty() {
            return;
        }
        for client in clients {
            client.check_progress();
        }
        if started.elapsed() > limit {
            dump_logs();
            diagnose();
            panic!("{what}: still waiting for {missing:?} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Prints the queues as `nodes[running]` sees them (leader, members, members online,
/// messages, consumers): for a failure's diagnosis.
fn describe_queues(nodes: &[RabbitNode], running: usize) {
    let queues = nodes[running].ctl(&[
        "list_queues",
        "name",
        "type",
        "leader",
        "members",
        "online",
        "messages",
        "consumers",
    ]);
    eprintln!("queues: {}", String::from_utf8_lossy(&queues.stdout));
}

/// Prints the last 200 events the transport logged in this process (the server, the
/// listener, the held call's caller) at debug level and above: for a failure's
/// diagnosis.
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

/// Prints the transport's warnings in this process (the server, the listener, the held
/// call's caller), alike ones counted: what the reconnects ran into.
fn print_warnings() {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for event in LogCapture::global().events() {
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
        eprintln!("measured: warned {count}x here: {line}");
    }
}

/// The clients none of whose messages sent after `after` was handled yet (a call
/// answered).
fn not_served_since(
    clients: &[ClientProcess],
    handled: &Handled,
    after: Instant,
) -> Vec<&'static str> {
    clients
        .iter()
        .filter(|client| {
            let log = lock(&client.log);
            let since: Vec<&Sent> = log.sent.iter().filter(|s| s.started > after).collect();
            !match client.role {
                Role::Calls => since.iter().any(|s| s.outcome == Outcome::Ok),
                Role::Casts | Role::Notifications => {
                    let seen = if client.role == Role::Casts {
                        lock(&handled.casts)
                    } else {
                        lock(&handled.notifications)
                    };
                    since
                        .iter()
                        .any(|s| seen.iter().any(|(n, at)| *n == s.n && *at > after))
                }
            }
        })
        .map(|client| client.role.name())
        .collect()
}

// ===== the test =====

/// The two tests take turns: each runs its own cluster, and the machine has 2 cores.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether the cluster tests can run here; if not, says why they were skipped.
fn can_run() -> bool {
    if std::env::var("MESSAGING_TEST_RABBIT_URL").is_err() {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return false;
    }
    if let Err(why) = rabbit_node::available() {
        eprintln!("skipped: {why}");
        return false;
    }
    true
}

/// Three nodes `msgtest-<tag>1..3`, started side by side (a node that fails to start
/// stops the others), not yet clustered ([`cluster`]).
fn start_nodes(tag: &str) -> Vec<RabbitNode> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = (1..=3)
            .map(|i| {
                scope.spawn(move || {
                    RabbitNode::start(&format!("{tag}{i}"), CLUSTER_CONFIG, &[], |_| {})
                })
            })
            .collect();
        starting.into_iter().map(|s| s.join().unwrap()).collect()
    })
}

/// Joins the second and third node to the first's cluster.
fn cluster(nodes: &[RabbitNode]) {
    nodes[1].join_cluster(&nodes[0]);
    nodes[2].join_cluster(&nodes[0]);
    let status = nodes[0].must(&["cluster_status"]);
    for node in nodes {
        assert!(status.contains(&node.node), "{} not in {status}", node.node);
    }
}

/// Stops the nodes side by side.
fn stop_nodes(nodes: Vec<RabbitNode>) {
    std::thread::scope(|scope| {
        for node in nodes {
            scope.spawn(move || drop(node));
        }
    });
}

/// A URL naming `nodes` in this order, with quorum queues for everything.
fn quorum_url(nodes: &[&RabbitNode], exchange: &str) -> String {
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("guest:guest@127.0.0.1:{}", n.amqp_port))
        .collect();
    format!(
        "rabbit://{}/?rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true\
         &control_exchange={exchange}",
        hosts.join(",")
    )
}

/// RabbitMQ 3.10: a channel whose first publish to a quorum queue finds the node of
/// the queue's recorded leader down nacks that publish, and every later one to that
/// queue, for as long as the channel lives (its queue client keeps asking the dead
/// node). Here the queue's leader is killed and a publisher connected to another node
/// casts to it at once, on a channel that never published there: the cast must be
/// retried on a new channel and reach the server, not be nacked until its deadline.
#[test]
fn a_cast_nacked_because_its_quorum_leader_was_killed_is_retried_on_a_new_channel() {
    if !can_run() {
        return;
    }
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    LogCapture::global();
    let mut nodes = start_nodes("nack");
    let _guards: Vec<_> = nodes.iter().map(RabbitNode::guard).collect();
    within(Duration::from_secs(180), "nacked cast", move || {
        cluster(&nodes);
        let exchange = format!("nack_{}", &ids::hex_id()[..8]);
        let topic = format!("nack_{}", &ids::hex_id()[..10]);
        // The server connects to the first node: its queues' leaders are there
        // (RabbitMQ places a quorum queue's leader on the declaring client's node).
        let server_url = quorum_url(&[&nodes[0], &nodes[1], &nodes[2]], &exchange);
        let handled = Handled::default();
        let server = rpc_server(&server_url, &topic, &handled);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let queues = nodes[0].must(&["list_queues", "name", "leader", "consumers", "-s"]);
            let consumed = queues.lines().any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields == [topic.as_str(), nodes[0].node.as_str(), "1"]
            });
            if consumed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server does not consume: {queues}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The publisher's channel is on the second node, and live (a notification to
        // another topic went through it), but has never published to the topic.
        let publisher =
            messaging_transports::open(&quorum_url(&[&nodes[1], &nodes[2]], &exchange)).unwrap();
        block_on(
            Notifier::new(publisher.clone(), "nack-test")
                .with_topics([format!("{topic}_warm").as_str()])
                .notify(&Context::new(), Priority::Info, "warm.up", &Value { n: 0 }),
        )
        .unwrap();
        let client = RpcClient::new(publisher, Target::new(topic.clone()))
            .with_timeout(Duration::from_secs(20));
        nodes[0].kill9();
        let killed = Instant::now();
        let sent = client.cast_blocking(&Context::new(), "record", &Value { n: 1 });
        let confirmed = killed.elapsed();
        eprintln!(
            "measured: the cast right after the leader's node was killed: {sent:?} after {confirmed:?}"
        );
        sent.expect("a cast nacked on a stale channel is retried on a new one");
        while !lock(&handled.casts).iter().any(|(n, _)| *n == 1) {
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "the cast was never handled"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("measured: handled {:?} after the kill", killed.elapsed());
        server.stop_and_wait().unwrap();
        stop_nodes(nodes);
    });
}

#[test]
fn a_three_node_cluster_with_quorum_queues_survives_stopped_and_killed_nodes() {
    if !can_run() {
        return;
    }
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    LogCapture::global();
    let started = Instant::now();
    let mut nodes = start_nodes("cluster");
    // Stop the nodes from this thread should the watchdog give up on the worker.
    let _guards: Vec<_> = nodes.iter().map(RabbitNode::guard).collect();
    let children = Children::default();
    let worker_children = children.clone();
    within(Duration::from_secs(300), "cluster failover", move || {
        let children = worker_children;
        cluster(&nodes);
        eprintln!("measured: 3-node cluster up in {:.1?}", started.elapsed());

        // The client processes try the nodes in order 1, 2, 3; the server and the
        // listener in order 3, 2, 1: messages cross nodes, and a fault hits senders,
        // consumers or both.
        let exchange = format!("cluster_{}", &ids::hex_id()[..8]);
        let url = quorum_url(&[&nodes[0], &nodes[1], &nodes[2]], &exchange);
        let consumers_url = quorum_url(&[&nodes[2], &nodes[1], &nodes[0]], &exchange);
        let topic = format!("cluster_{}", &ids::hex_id()[..10]);
        let handled = Handled::default();
        let server = rpc_server(&consumers_url, &topic, &handled);
        let listener = notification_listener(&consumers_url, &topic, &handled);
        let mut clients: Vec<ClientProcess> = Role::ALL
            .into_iter()
            .map(|role| ClientProcess::spawn(role, &url, &topic, &children))
            .collect();
        let load_started = Instant::now();
        wait_until(
            &clients,
            Duration::from_secs(30),
            "first messages",
            &|| {},
            || not_served_since(&clients, &handled, load_started),
        );

        // Quorum queues everywhere: topic, server, fanout, notification and reply queues.
        let caller = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(topic.clone()),
        )
        .with_timeout(HELD_CALL_TIMEOUT);
        assert_eq!(
            caller
                .call_blocking::<_, u64>(&Context::new(), "echo", &Value { n: 1 })
                .unwrap(),
            1
        );
        let queues = nodes[0].must(&["list_queues", "name", "type", "-s"]);
        let ours: Vec<&str> = queues
            .lines()
            .filter(|l| l.starts_with(&topic) || l.starts_with("reply_"))
            .collect();
        assert_eq!(
            ours.len(),
            6,
            "topic, server, fanout, info, 2 reply queues: {queues}"
        );
        assert!(ours.iter().all(|l| l.ends_with("quorum")), "{queues}");

        let mut faults: Vec<Fault> = Vec::new();
        // Each node in turn is stopped and started again, then each is killed and
        // restarted; only ever one is down.
        for (kind, target) in [
            (FaultKind::StopApp, 0),
            (FaultKind::StopApp, 1),
            (FaultKind::StopApp, 2),
            (FaultKind::Kill, 0),
            (FaultKind::Kill, 1),
            (FaultKind::Kill, 2),
        ] {
            let running = (target + 1) % 3;
            nodes[target].await_not_quorum_critical(Duration::from_secs(60));
            // oslo's kill_and_process: a call whose handler runs across the fault
            // must be answered (the reply goes out and comes back over new
            // connections), not time out.
            let held = {
                let caller = caller.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let result = caller
                        .call_blocking::<_, u64>(&Context::new(), "hold", &Value { n: 7 })
                        .map_err(|e| e.to_string());
                    (started.elapsed(), result)
                })
            };
            wait_until(
                &clients,
                Duration::from_secs(10),
                "the held call handled",
                &|| {},
                || {
                    if *lock(&handled.holding) {
                        vec![]
                    } else {
                        vec!["the held call"]
                    }
                },
            );
            // Every connection is counted once the held call's are up again.
            let counts = connections(&nodes, running);
            let total = counts.iter().fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
            eprintln!(
                "fault {}: {kind:?} of {} at {:.1?}",
                faults.len() + 1,
                nodes[target].node,
                started.elapsed()
            );
            let began = Instant::now();
            match kind {
                FaultKind::StopApp => nodes[target].stop_app(),
                FaultKind::Kill => {
                    nodes[target].kill9();
                }
            }
            let down = Instant::now();
            *lock(&handled.holding) = false;
            wait_until(
                &clients,
                RECOVERY_LIMIT,
                "served again after the fault",
                &|| describe_queues(&nodes, running),
                || not_served_since(&clients, &handled, down),
            );
            let recovered = Instant::now();
            let held = held.join().unwrap();
            match kind {
                FaultKind::StopApp => nodes[target].start_app(),
                FaultKind::Kill => nodes[target].restart(),
            }
            let back = Instant::now();
            faults.push(Fault {
                kind,
                node: nodes[target].node.clone(),
                connections: (counts[target], total),
                began,
                down,
                recovered,
                back,
                held,
            });
            wait_until(
                &clients,
                RECOVERY_LIMIT,
                "served with the node back",
                &|| describe_queues(&nodes, running),
                || not_served_since(&clients, &handled, back),
            );
        }

        // Stop the load; wait until whatever was confirmed has been handled.
        for client in &mut clients {
            client.stop();
        }
        let load_ended = Instant::now();
        let sent: HashMap<Role, Vec<Sent>> = clients.iter().map(|c| (c.role, c.sent())).collect();
        let all_handled = || {
            [
                (Role::Casts, &handled.casts),
                (Role::Notifications, &handled.notifications),
            ]
            .into_iter()
            .all(|(role, seen)| {
                let seen: HashSet<u64> = lock(seen).iter().map(|(n, _)| *n).collect();
                sent[&role]
                    .iter()
                    .filter(|s| s.outcome == Outcome::Ok)
                    .all(|s| seen.contains(&s.n))
            })
        };
        let settle = Instant::now();
        while !all_handled() && settle.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop_and_wait().unwrap();
        listener.stop_and_wait().unwrap();

        // Per window: before the first fault, then each fault until the next.
        let server_times = handled.server_times();
        let listener_times = handled.listener_times();
        let call_times: Vec<Instant> = sent[&Role::Calls]
            .iter()
            .filter(|s| s.outcome == Outcome::Ok)
            .map(|s| s.ended)
            .collect();
        let casts_handled = lock(&handled.casts).clone();
        let notifications_handled = lock(&handled.notifications).clone();
        let mut bounds: Vec<Instant> = vec![load_started];
        bounds.extend(faults.iter().map(|f| f.began));
        bounds.push(load_ended + Duration::from_secs(3600));
        let (mut hung, mut failed_calls, mut lost) = (0, Vec::new(), Vec::new());
        for (window, range) in bounds.windows(2).enumerate() {
            let of = |role: Role| -> Vec<&Sent> {
                sent[&role]
                    .iter()
                    .filter(|s| s.started >= range[0] && s.started < range[1])
                    .collect()
            };
            let (completed, timed_out, failed, late) = calls(&of(Role::Calls));
            let casts = one_way(&of(Role::Casts), &casts_handled);
            let notifications = one_way(&of(Role::Notifications), &notifications_handled);
            let head = match window.checked_sub(1).map(|i| &faults[i]) {
                None => format!(
                    "measured: steady load for {:.1?} before the first fault",
                    range[1] - range[0]
                ),
                Some(fault) => {
                    let ((clients_on, ours_on), (clients_all, ours_all)) = fault.connections;
                    format!(
                        "measured: fault {window}: {} of {} (on it: {clients_on} of the \
                         clients' {clients_all} connections, {ours_on} of the server's, \
                         listener's and caller's {ours_all}); down {:.2?} after the fault \
                         began, back after {:.1?}\n    longest pause in handling: server {}, \
                         listener {}, callers answered {}; the call held in its handler across the fault: {:?} \
                         after {:.2?}",
                        match fault.kind {
                            FaultKind::StopApp => "stop_app",
                            FaultKind::Kill => "kill -9",
                        },
                        fault.node,
                        fault.down - fault.began,
                        fault.back - fault.began,
                        describe_pause(&server_times, fault),
                        describe_pause(&listener_times, fault),
                        describe_pause(&call_times, fault),
                        fault.held.1,
                        fault.held.0,
                    )
                }
            };
            eprintln!(
                "{head}\n    calls completed {completed} / timed out {timed_out} / failed \
                 otherwise {} / hung {late}\n    casts: {casts}\n    notifications: \
                 {notifications}",
                failed.len()
            );
            hung += late;
            failed_calls.extend(failed);
            lost.extend(
                casts
                    .lost
                    .iter()
                    .map(|n| format!("cast #{n} (window {window})")),
            );
            lost.extend(
                notifications
                    .lost
                    .iter()
                    .map(|n| format!("notification #{n} (window {window})")),
            );
        }
        eprintln!("measured: the whole test took {:.1?}", started.elapsed());
        print_warnings();
        let failed = hung > 0
            || !failed_calls.is_empty()
            || !lost.is_empty()
            || faults.iter().any(|f| f.held.1 != Ok(7));
        if failed {
            dump_logs();
        }
        for (i, fault) in faults.iter().enumerate() {
            assert_eq!(
                fault.held.1,
                Ok(7),
                "fault {}: the call in the handler across the fault",
                i + 1
            );
        }
        assert_eq!(hung, 0, "calls that ended past their timeout");
        assert!(
            failed_calls.is_empty(),
            "calls that neither completed nor timed out: {failed_calls:?}"
        );
        assert!(
            lost.is_empty(),
            "confirmed but never handled: {}",
            lost.join(", ")
        );
        drop(children);
        // Stop the nodes side by side (the guards then find nothing left to do).
        stop_nodes(nodes);
    });
}
