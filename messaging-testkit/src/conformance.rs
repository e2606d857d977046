//! The executor conformance suite: every scenario of oslo.messaging's
//! `TestServerLocking`, the seed commit's scenarios, the oslo defects this project
//! fixes, and the promises kept under stress (timeouts on every call, `execute()`'s
//! included; possible-hang warnings from the thread that drains; a dropped server that
//! still finishes what it took; listeners that panic; random calls from many threads),
//! run against any [`Executor`].
//!
//! Run it from a crate's tests with one macro call (one `#[test]` per scenario):
//!
//! ```ignore
//! mod thread_pool {
//!     messaging_testkit::executor_conformance!(messaging_executors::ThreadPoolExecutor::new());
//! }
//! ```
//!
//! or with one function call ([`run_all`]). Each scenario builds a server over a
//! [`fake_transport`] with the executor wrapped in a [`RecordingExecutor`], and runs
//! under a watchdog: a deadlock fails the scenario instead of hanging.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use messaging_core::dispatch::block_on;
use messaging_core::reply::ReplyEvent;
use messaging_core::server::Call;
use messaging_core::{
    CallOptions, Dispatch, Dispatcher, Epoch, Executor, IncomingMessage, ListenOptions, Message,
    Polled, SendOptions, Server, ServerBuilder, ServerError, StepState, Subscription, Target,
    Transport, WeakServer,
};
use tracing::Level;

use crate::fake::{FakeHandle, FakeTransport, fake_transport};
use crate::fixtures::{Latch, Recorder, STOP, ServerThread, stop_endpoint};
use crate::logs::LogCapture;
use crate::recording::{ExecutorLog, RecordingExecutor};
use crate::watchdog::{SCENARIO_LIMIT, Watched, within};

/// Builds a fresh executor for each scenario.
pub type ExecutorFactory = Arc<dyn Fn() -> Box<dyn Executor> + Send + Sync>;

/// Builds a scenario's dispatcher around its recorder.
type MakeDispatcher = Box<dyn FnOnce(&Recorder) -> Box<dyn Dispatcher>>;

const TOPIC: &str = "conformance";
const SERVER: &str = "s1";
/// Long enough for a thread to reach the point where it blocks.
const SETTLE: Duration = Duration::from_millis(50);
/// Limit for one step inside a scenario.
const STEP: Duration = Duration::from_secs(20);

// ===== the rig =====

struct Rig {
    transport: Arc<FakeTransport>,
    fake: FakeHandle,
    recorder: Recorder,
    log: ExecutorLog,
    server: Server,
}

fn subscription() -> Subscription {
    Subscription::Rpc(Target::new(TOPIC).with_server(SERVER))
}

fn rig(factory: &ExecutorFactory) -> Rig {
    rig_with(factory, |b| b, None)
}

/// A rig whose server dispatches with `dispatcher` (the recorder's by default).
fn rig_with(
    factory: &ExecutorFactory,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    dispatcher: Option<MakeDispatcher>,
) -> Rig {
    let (transport, fake) = fake_transport();
    let recorder = Recorder::new();
    let (executor, log) = RecordingExecutor::wrap(factory());
    let dispatcher: Box<dyn Dispatcher> = match dispatcher {
        Some(make) => make(&recorder),
        None => Box::new(recorder.dispatcher()),
    };
    let server = configure(Server::builder(
        transport.clone(),
        subscription(),
        BoxedDispatcher(dispatcher),
        executor,
    ))
    .build()
    .expect("a valid server");
    Rig {
        transport,
        fake,
        recorder,
        log,
        server,
    }
}

struct BoxedDispatcher(Box<dyn Dispatcher>);

impl Dispatcher for BoxedDispatcher {
    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch {
        self.0.dispatch(batch)
    }
}

impl Rig {
    fn cast(&self, body: &str) {
        self.cast_bytes(body.as_bytes());
    }

    fn cast_bytes(&self, body: &[u8]) {
        block_on(self.transport.cast(
            &Target::new(TOPIC),
            Message::new(Bytes::copy_from_slice(body)),
            &SendOptions::default(),
        ))
        .expect("cast");
    }

    /// Messages still queued for the server, taken by a fresh listener.
    fn remaining(&self) -> Vec<String> {
        Rig::remaining_on(&self.transport)
    }

    fn remaining_on(transport: &FakeTransport) -> Vec<String> {
        let listener = transport
            .listen(
                &Subscription::Rpc(Target::new(TOPIC).with_server("drain")),
                &ListenOptions::default(),
            )
            .expect("listen");
        let mut out = Vec::new();
        while let Ok(Polled::Messages(batch)) = listener.poll(Some(Duration::from_millis(50))) {
            out.extend(
                batch
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.message().body).into_owned()),
            );
        }
        listener.cleanup();
        out
    }
}

fn timeout(d: Duration) -> CallOptions {
    CallOptions::new().timeout(d)
}

/// Waits until `done` holds, looking every few milliseconds (for conditions no event
/// signals, such as a background drain's cleanup); fails the scenario after `limit`.
fn eventually(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn run(name: &str, factory: ExecutorFactory, scenario: fn(&ExecutorFactory)) {
    within(SCENARIO_LIMIT, name, move || scenario(&factory));
}

// ===== oslo TestServerLocking =====

/// `test_start_stop_wait`: start in another thread; stop and wait in this one.
pub fn start_stop_wait(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let server = rig.server.clone();
    Watched::spawn("start", move || server.start())
        .join(STEP)
        .expect("start");
    rig.server.stop().expect("stop");
    rig.server.wait().expect("wait");
    assert_eq!(rig.log.calls(), ["start", "stop", "wait"]);
    let counts = rig.fake.listener_counts();
    assert_eq!((counts.created, counts.cleaned_up), (1, 1), "{counts:?}");
}

/// `test_reversed_order`: wait, stop and start called in that order from three
/// threads still run start → stop → wait.
pub fn reversed_order(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let s = rig.server.clone();
    let waiter = Watched::spawn("wait", move || s.wait());
    std::thread::sleep(SETTLE);
    let s = rig.server.clone();
    let stopper = Watched::spawn("stop", move || s.stop());
    std::thread::sleep(SETTLE);
    let s = rig.server.clone();
    let starter = Watched::spawn("start", move || s.start());
    rig.server.wait().expect("wait");
    for result in [starter.join(STEP), stopper.join(STEP), waiter.join(STEP)] {
        assert_eq!(result.expect("lifecycle call"), Epoch::first());
    }
    assert_eq!(rig.log.calls(), ["start", "stop", "wait"]);
    assert_eq!(rig.fake.listener_counts().cleaned_up, 1);
}

/// `test_wait_for_running_task`: a second `start()` waits for the one running and
/// does not start a second executor.
pub fn wait_for_running_task(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let (entered, release) = rig.log.hold_next_start();
    let s = rig.server.clone();
    let runner = Watched::spawn("start (runner)", move || s.start());
    assert!(
        entered.wait(STEP),
        "the runner reached the executor's start"
    );
    let s = rig.server.clone();
    let mut waiter = Watched::spawn("start (waiter)", move || s.start());
    assert!(
        waiter.still_running_after(SETTLE),
        "the waiter must wait for the runner"
    );
    assert_eq!(rig.server.state().start, StepState::Running);
    assert_eq!(rig.log.count("start"), 1);
    release.open();
    assert_eq!(runner.join(STEP).expect("runner"), Epoch::first());
    assert_eq!(waiter.join(STEP).expect("waiter"), Epoch::first());
    assert_eq!(rig.log.count("start"), 1, "exactly one executor start");
    rig.server.stop().expect("stop");
    rig.server.wait().expect("wait");
}

/// `test_start_stop_wait_stop_wait`: repeated stop and wait are no-ops.
pub fn start_stop_wait_stop_wait(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let e = rig.server.start().expect("start");
    assert_eq!(rig.server.stop().expect("stop"), e);
    assert_eq!(rig.server.wait().expect("wait"), e);
    assert_eq!(rig.server.stop().expect("stop again"), e);
    assert_eq!(rig.server.wait().expect("wait again"), e);
    assert_eq!(rig.log.calls(), ["start", "stop", "wait"]);
    assert_eq!(rig.fake.listener_counts().cleaned_up, 1);
}

/// `test_state_wrapping`: a call made in one epoch never acts on the next. A `stop()`
/// issued before the first start completes in epoch 1; after a restart, calls pinned to
/// epoch 1 return at once and leave epoch 2 running.
pub fn state_wrapping(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let s = rig.server.clone();
    let early_stop = Watched::spawn("early stop", move || s.stop());
    std::thread::sleep(SETTLE);
    let first = rig.server.start().expect("start");
    rig.server.stop().expect("stop");
    rig.server.wait().expect("wait");
    assert_eq!(early_stop.join(STEP).expect("early stop"), first);
    let second = rig.server.start().expect("restart");
    assert!(second > first);
    let pinned = CallOptions::new().epoch(first);
    assert_eq!(rig.server.stop_with(&pinned).expect("pinned stop"), first);
    assert_eq!(rig.server.wait_with(&pinned).expect("pinned wait"), first);
    assert!(rig.server.state().is_running(), "epoch 2 must still run");
    assert_eq!(rig.log.calls(), ["start", "stop", "wait", "start"]);
    rig.server.stop().expect("stop 2");
    rig.server.wait().expect("wait 2");
    assert_eq!(rig.fake.listener_counts().cleaned_up, 2);
}

fn expect_hang_warning(logs: &LogCapture, what: &str) {
    let warnings: Vec<_> = logs
        .events()
        .into_iter()
        .filter(|e| e.level == Level::WARN && e.message.contains("possible hang"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "exactly one warning expected: {warnings:?}"
    );
    assert!(warnings[0].message.contains(what), "{warnings:?}");
}

/// `test_logging`: `stop()` before `start()` logs one "possible hang" warning after the
/// server's `log_after`, then completes once another thread starts the server.
pub fn logging(factory: &ExecutorFactory) {
    let rig = rig_with(factory, |b| b.log_after(Some(SETTLE)), None);
    let (logs, _guard) = LogCapture::start();
    let s = rig.server.clone();
    let starter = Watched::spawn("late start", move || {
        std::thread::sleep(SETTLE * 10);
        s.start()
    });
    rig.server.stop().expect("stop");
    starter.join(STEP).expect("start");
    expect_hang_warning(&logs, "stop() is waiting for start to complete");
    rig.server.wait().expect("wait");
}

/// `test_logging_explicit_wait`: a per-call `log_after` overrides the server's.
pub fn logging_explicit(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let (logs, _guard) = LogCapture::start();
    let s = rig.server.clone();
    let starter = Watched::spawn("late start", move || {
        std::thread::sleep(SETTLE * 10);
        s.start()
    });
    rig.server
        .stop_with(&CallOptions::new().log_after(SETTLE))
        .expect("stop");
    starter.join(STEP).expect("start");
    expect_hang_warning(&logs, "stop() is waiting for start to complete");
    rig.server.wait().expect("wait");
}

/// `test_logging_with_timeout`: the warning comes before the timeout error.
pub fn logging_with_timeout(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let (logs, _guard) = LogCapture::start();
    let err = rig
        .server
        .stop_with(&timeout(SETTLE * 4).log_after(SETTLE))
        .expect_err("stop must time out");
    assert!(err.is_timeout(), "{err}");
    expect_hang_warning(&logs, "stop() is waiting for start to complete");
}

/// `test_timeout_wait`: `stop()` before `start()` with a timeout fails with a typed
/// timeout naming what it waited for, and the server is left as it was.
pub fn timeout_wait(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let err = rig
        .server
        .stop_with(&timeout(SETTLE))
        .expect_err("stop must time out");
    match &err {
        ServerError::Timeout {
            waiting_for,
            timeout,
            ..
        } => {
            assert_eq!(*waiting_for, "start to complete");
            assert_eq!(*timeout, SETTLE);
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert_eq!(
        err.to_string(),
        format!("stop() timed out after {SETTLE:?} waiting for start to complete")
    );
    assert_eq!(rig.server.state().stop, StepState::NotRun);
    rig.server.start().expect("start");
    rig.server.stop().expect("stop");
    rig.server.wait().expect("wait");
}

/// `test_timeout_running`: while another thread's `wait()` drains a long handler, a
/// `wait()` with a timeout fails instead of hanging; the drain goes on and both
/// complete once the handler finishes.
pub fn timeout_running(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("gate:long");
    assert!(rig.recorder.wait_started(1, STEP), "the handler started");
    rig.server.stop().expect("stop");
    let s = rig.server.clone();
    let mut first = Watched::spawn("wait (draining)", move || s.wait());
    assert!(first.still_running_after(SETTLE));
    let err = rig
        .server
        .wait_with(&timeout(SETTLE))
        .expect_err("the second wait must time out");
    assert!(err.is_timeout(), "{err}");
    rig.recorder.open_gate();
    first.join(STEP).expect("the draining wait");
    rig.server.wait().expect("wait after the drain");
    assert_eq!(rig.recorder.processed(), ["gate:long"]);
    running.stop_and_wait().expect("fixture");
}

/// `test_log_after_zero`: with logging off, a timeout logs nothing.
pub fn log_after_zero(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let (logs, _guard) = LogCapture::start();
    let err = rig
        .server
        .stop_with(&timeout(SETTLE * 3).never_log())
        .expect_err("stop must time out");
    assert!(err.is_timeout());
    assert_eq!(logs.count(Level::WARN, "possible hang"), 0);
}

// ===== the seed =====

/// The seed's non-blocking stop endpoint: the handler only signals; the test thread
/// checks that `start()` is a no-op on the running server, then stops and waits. No
/// deadlock.
pub fn stop_endpoint_then_stop_and_wait_from_test_thread(factory: &ExecutorFactory) {
    let stopped: Arc<OnceLock<Latch>> = Arc::default();
    let slot = stopped.clone();
    let rig = rig_with(
        factory,
        |b| b,
        Some(Box::new(move |recorder: &Recorder| {
            let (dispatcher, latch) = stop_endpoint(recorder.dispatcher());
            let _ = slot.set(latch);
            Box::new(dispatcher) as Box<dyn Dispatcher>
        })),
    );
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("before");
    rig.cast_bytes(STOP);
    assert!(
        stopped.get().expect("latch").wait(STEP),
        "the stop endpoint was called"
    );
    assert_eq!(
        rig.server.start().expect("start again"),
        running.epoch(),
        "start() is a no-op while running"
    );
    rig.server.stop().expect("stop");
    rig.server.wait().expect("wait");
    assert_eq!(rig.recorder.processed(), ["before"]);
    assert_eq!(rig.log.count("start"), 1);
    running.stop_and_wait().expect("fixture");
}

/// A dispatcher for handlers that act on their own server.
fn self_aware(
    me: Arc<OnceLock<WeakServer>>,
    act: fn(&Server) -> Result<Epoch, ServerError>,
    results: Arc<std::sync::Mutex<Vec<Result<Epoch, ServerError>>>>,
) -> MakeDispatcher {
    Box::new(move |recorder: &Recorder| {
        let inner = recorder.dispatcher();
        Box::new(move |batch: Vec<IncomingMessage>| {
            let me = me.clone();
            let results = results.clone();
            let act_now = batch.iter().any(|m| m.message().body.as_ref() == b"act");
            let rest = Dispatcher::dispatch(&inner, batch);
            Dispatch::blocking(move || {
                if act_now {
                    let server = me.get().and_then(WeakServer::upgrade).expect("server");
                    let result = act(&server);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(result);
                }
                rest.run();
            })
        }) as Box<dyn Dispatcher>
    })
}

/// `stop()` called from inside a handler returns (it does not wait for handlers) and
/// the test thread's `wait()` completes: no deadlock.
pub fn stop_from_inside_a_handler(factory: &ExecutorFactory) {
    let me: Arc<OnceLock<WeakServer>> = Arc::default();
    let results = Arc::default();
    let rig = rig_with(
        factory,
        |b| b,
        Some(self_aware(me.clone(), Server::stop, Arc::clone(&results))),
    );
    let _ = me.set(rig.server.downgrade());
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("act");
    let epoch = rig.server.wait().expect("wait");
    let results = results.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().expect("stop from the handler"), &epoch);
    assert_eq!(rig.recorder.processed(), ["act"]);
    running.stop_and_wait().expect("fixture");
}

/// oslo defect (behaviour table row 14): `wait()` from inside a handler deadlocks in
/// oslo even with a timeout. Here it returns `WouldDeadlock` at once.
pub fn wait_from_handler_returns_error_instead_of_deadlocking(factory: &ExecutorFactory) {
    let me: Arc<OnceLock<WeakServer>> = Arc::default();
    let results = Arc::default();
    let rig = rig_with(
        factory,
        |b| b,
        Some(self_aware(me.clone(), Server::wait, Arc::clone(&results))),
    );
    let _ = me.set(rig.server.downgrade());
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("act");
    assert!(rig.recorder.wait_processed(1, STEP), "the handler returned");
    let results = results.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let err = results[0]
        .as_ref()
        .expect_err("wait() from a handler must fail");
    assert!(err.is_would_deadlock(), "{err}");
    assert!(
        rig.server.state().is_running(),
        "the refused wait changed nothing"
    );
    running
        .stop_and_wait()
        .expect("stop and wait from the test thread");
}

/// `stop()` and `wait()` from 8 threads at once: all return the same epoch, each step
/// runs once.
pub fn stop_and_wait_from_eight_threads(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("one");
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let (s, barrier) = (rig.server.clone(), barrier.clone());
            Watched::spawn(&format!("stop+wait {i}"), move || {
                barrier.wait();
                let stopped = s.stop()?;
                let waited = s.wait()?;
                Ok::<_, ServerError>((stopped, waited))
            })
        })
        .collect();
    for caller in callers {
        let (stopped, waited) = caller.join(STEP).expect("stop+wait");
        assert_eq!((stopped, waited), (running.epoch(), running.epoch()));
    }
    assert_eq!(rig.log.count("stop"), 1);
    assert_eq!(rig.log.count("wait"), 1);
    assert_eq!(rig.fake.listener_counts().cleaned_up, 1);
    running.stop_and_wait().expect("fixture");
}

/// `wait()` returns only after the handlers in flight have finished.
pub fn wait_returns_only_after_in_flight_handlers_finish(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("gate:in-flight");
    assert!(rig.recorder.wait_started(1, STEP));
    rig.server.stop().expect("stop");
    let (s, recorder) = (rig.server.clone(), rig.recorder.clone());
    let mut waiter = Watched::spawn("wait", move || {
        let waited = s.wait();
        (waited, recorder.processed())
    });
    assert!(
        waiter.still_running_after(SETTLE * 2),
        "wait() returned with a handler in flight"
    );
    rig.recorder.open_gate();
    let (waited, processed_at_return) = waiter.join(STEP);
    waited.expect("wait");
    assert_eq!(processed_at_return, ["gate:in-flight"]);
    running.stop_and_wait().expect("fixture");
}

/// After `stop()` returns, no new message is taken: later messages stay queued on the
/// transport for the next server.
pub fn nothing_is_dispatched_after_stop_returns(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("before-1");
    rig.cast("before-2");
    assert!(rig.recorder.wait_processed(2, STEP));
    rig.server.stop().expect("stop");
    for i in 0..5 {
        rig.cast(&format!("after-{i}"));
    }
    rig.server.wait().expect("wait");
    std::thread::sleep(SETTLE);
    let mut processed = rig.recorder.processed();
    processed.sort();
    assert_eq!(processed, ["before-1", "before-2"]);
    let remaining = rig.remaining();
    assert_eq!(
        remaining.len(),
        5,
        "the messages sent after stop stay queued: {remaining:?}"
    );
    running.stop_and_wait().expect("fixture");
}

/// Messages the executor took before `stop()` are processed (drained, not dropped), and
/// none is lost: whatever was not taken is still on the transport.
pub fn messages_taken_before_stop_are_processed(factory: &ExecutorFactory) {
    const N: usize = 12;
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    for i in 0..N {
        rig.cast(&format!("gate:{i}"));
    }
    assert!(rig.recorder.wait_started(1, STEP));
    std::thread::sleep(SETTLE);
    rig.server.stop().expect("stop");
    rig.recorder.open_gate();
    rig.server.wait().expect("wait");
    let delivered = rig.fake.listener_counts().delivered;
    let processed = rig.recorder.processed();
    assert_eq!(
        processed.len(),
        delivered,
        "every message taken was processed"
    );
    assert_eq!(
        processed.len() + rig.remaining().len(),
        N,
        "no message lost"
    );
    running.stop_and_wait().expect("fixture");
}

// ===== oslo defects, pinned =====

/// oslo defect (row 2): a failed `start()` still counts as started there, and the next
/// `start()` silently does nothing. Here the error is returned, nothing is left behind,
/// and the server starts on the next try.
pub fn failed_start_leaves_the_server_startable(factory: &ExecutorFactory) {
    let rig = rig(factory);
    rig.fake.fail_next_listens(1);
    let err = rig.server.start().expect_err("listen fails");
    assert!(matches!(err, ServerError::Listen { .. }), "{err}");
    assert_eq!(rig.server.state().start, StepState::NotRun);
    rig.log.fail_next_start();
    let err = rig.server.start().expect_err("the executor fails");
    assert!(matches!(err, ServerError::Executor { .. }), "{err}");
    let counts = rig.fake.listener_counts();
    assert_eq!(
        counts.live(),
        0,
        "the failed start's listener was cleaned up: {counts:?}"
    );
    rig.log.panic_next_start();
    let err = rig.server.start().expect_err("the executor panics");
    assert!(matches!(err, ServerError::Panicked { .. }), "{err}");
    let counts = rig.fake.listener_counts();
    assert_eq!(
        (counts.live(), counts.stopped),
        (0, 2),
        "the panicked start's listener was stopped and cleaned up: {counts:?}"
    );
    let running = ServerThread::spawn(rig.server.clone()).expect("the fourth start works");
    rig.cast("served");
    assert!(rig.recorder.wait_processed(1, STEP));
    assert_eq!(running.epoch(), Epoch::first());
    running.stop_and_wait().expect("fixture");
    assert_eq!(rig.fake.listener_counts().live(), 0);
}

/// oslo defect (row 12): a restart after `stop()` without `wait()` leaks the old
/// executor and connection there. Here the restart drains and cleans up the old epoch
/// before the new one starts.
pub fn restart_without_wait_does_not_leak(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let first = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("gate:in-flight");
    assert!(rig.recorder.wait_started(1, STEP));
    rig.server.stop().expect("stop");
    let s = rig.server.clone();
    let mut restart = Watched::spawn("restart", move || s.start());
    assert!(
        restart.still_running_after(SETTLE),
        "the restart waits for the old drain"
    );
    rig.recorder.open_gate();
    let second = restart.join(STEP).expect("restart");
    assert!(second > first.epoch());
    assert_eq!(rig.recorder.processed(), ["gate:in-flight"]);
    let calls = rig.log.calls();
    let wait_at = calls
        .iter()
        .position(|c| *c == "wait")
        .expect("the old epoch was waited");
    let restart_at = calls.iter().rposition(|c| *c == "start").expect("restart");
    assert!(wait_at < restart_at, "wait before the new start: {calls:?}");
    let counts = rig.fake.listener_counts();
    assert_eq!((counts.created, counts.cleaned_up), (2, 1), "{counts:?}");
    drop(first); // its epoch is over: stop/wait pinned to it are no-ops
    let running = ServerThread::spawn(rig.server.clone());
    let running = running.expect("start is a no-op on the running epoch");
    assert_eq!(running.epoch(), second);
    rig.cast("served-by-epoch-2");
    assert!(rig.recorder.wait_processed(2, STEP));
    running.stop_and_wait().expect("fixture");
    assert_eq!(rig.fake.listener_counts().live(), 0);
}

/// oslo defect (§1.2 note): a reset between one thread's `stop()` and `wait()` makes
/// that `wait()` attach to the new epoch there. Here a wait pinned to the stopped
/// epoch returns at once, and the new epoch keeps running.
pub fn wait_cannot_attach_to_a_later_epoch(factory: &ExecutorFactory) {
    let rig = rig(factory);
    rig.server.start().expect("start");
    let stopped = rig.server.stop().expect("stop");
    let s = rig.server.clone();
    let restarted = Watched::spawn("restart", move || s.start())
        .join(STEP)
        .expect("restart");
    assert!(restarted > stopped);
    let waited = rig
        .server
        .wait_with(&CallOptions::new().epoch(stopped).timeout(STEP))
        .expect("pinned wait");
    assert_eq!(waited, stopped);
    assert!(rig.server.state().is_running());
    let err = rig
        .server
        .wait_with(&timeout(SETTLE))
        .expect_err("an unpinned wait is for the running epoch");
    assert!(err.is_timeout());
    rig.server.stop().expect("stop");
    rig.server.wait().expect("wait");
}

/// A dispatcher's own inline work (not only the `Dispatch` it returns) is inside the
/// handler scope: a `wait()` from there is refused instead of waiting for the poller
/// that runs it.
pub fn wait_from_a_dispatcher_is_refused(factory: &ExecutorFactory) {
    let me: Arc<OnceLock<WeakServer>> = Arc::default();
    let results: Arc<std::sync::Mutex<Vec<Result<Epoch, ServerError>>>> = Arc::default();
    let (slot, sink) = (me.clone(), results.clone());
    let rig = rig_with(
        factory,
        |b| b,
        Some(Box::new(move |recorder: &Recorder| {
            let inner = recorder.dispatcher();
            Box::new(move |batch: Vec<IncomingMessage>| {
                if let Some(server) = slot.get().and_then(WeakServer::upgrade) {
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(server.wait());
                }
                inner.dispatch(batch)
            }) as Box<dyn Dispatcher>
        })),
    );
    let _ = me.set(rig.server.downgrade());
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("inline");
    assert!(rig.recorder.wait_processed(1, STEP));
    let results = results.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        results[0]
            .as_ref()
            .is_err_and(ServerError::is_would_deadlock),
        "{results:?}"
    );
    running.stop_and_wait().expect("fixture");
}

/// A listener that panics does not leave `wait()` (or a restart) waiting forever.
pub fn a_panicking_listener_does_not_hang_wait(factory: &ExecutorFactory) {
    let rig = rig(factory);
    rig.fake.panic_next_polls(1);
    let s = rig.server.clone();
    let serving = Watched::spawn("execute", move || {
        s.start()?;
        // The panic reaches neither execute() nor the executor's loop: the poll is
        // retried (see `a_panicking_poll_is_retried_and_shown_in_the_state`).
        s.execute()
    });
    std::thread::sleep(SETTLE);
    rig.server.stop().expect("stop");
    rig.server.wait_with(&timeout(STEP)).expect("wait returns");
    serving.join(STEP).expect("execute serves until stop");
    let running = ServerThread::spawn(rig.server.clone()).expect("restart");
    rig.cast("after");
    assert!(rig.recorder.wait_processed(1, STEP));
    running.stop_and_wait().expect("fixture");
}

/// Timeouts too long to represent (`Duration::MAX`) mean "no deadline", not a panic.
pub fn huge_timeouts_mean_no_deadline(factory: &ExecutorFactory) {
    let rig = rig_with(factory, |b| b.default_timeout(Some(Duration::MAX)), None);
    let huge = CallOptions::new()
        .timeout(Duration::MAX)
        .log_after(Duration::MAX);
    rig.server.start_with(&huge).expect("start");
    rig.server.stop_with(&huge).expect("stop");
    rig.server.wait_with(&huge).expect("wait");
}

// ===== promises kept under stress =====

/// `execute()` with a timeout on a running server returns `Timeout` once it has served
/// that long, whatever the executor (the blocking executor's loop stops taking
/// messages, the others' workers go on serving), and leaves the epoch running: a later
/// `execute()` serves again, and `stop()` and `wait()` complete.
pub fn execute_with_a_timeout_returns_while_the_server_runs(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let epoch = rig.server.start().expect("start");
    let s = rig.server.clone();
    let err = Watched::spawn("execute with a timeout", move || {
        s.execute_with(&timeout(SETTLE))
    })
    .join(STEP)
    .expect_err("execute() must time out");
    assert!(
        matches!(
            err,
            ServerError::Timeout {
                call: Call::Execute,
                ..
            }
        ),
        "{err}"
    );
    assert!(rig.server.state().is_running(), "the epoch still runs");
    let s = rig.server.clone();
    let serving = Watched::spawn("execute", move || s.execute());
    rig.cast("served");
    assert!(
        rig.recorder.wait_processed(1, STEP),
        "a later execute() serves"
    );
    assert_eq!(rig.server.stop().expect("stop"), epoch);
    assert_eq!(serving.join(STEP).expect("execute"), epoch);
    assert_eq!(rig.server.wait().expect("wait"), epoch);
    assert_eq!(
        rig.server
            .execute_with(&timeout(SETTLE))
            .expect("execute after wait"),
        epoch
    );
    assert_eq!(rig.fake.listener_counts().cleaned_up, 1);
}

/// While a `stop()` is in progress, `execute()` waits for it like any other call: it
/// logs one "possible hang" warning after `log_after` and fails at its timeout; the
/// time it spent serving before the stop began does not count as a hang.
pub fn execute_waiting_for_a_stop_in_progress_logs_and_times_out(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let epoch = rig.server.start().expect("start");
    let (s, serving_logs) = (rig.server.clone(), LogCapture::default());
    let logs = serving_logs.clone();
    let serving = Watched::spawn("execute", move || {
        let _guard = logs.attach();
        s.execute_with(&CallOptions::new().log_after(SETTLE * 2))
    });
    // Serving for twice its log_after is not a hang: no warning.
    std::thread::sleep(SETTLE * 4);
    let (entered, release) = rig.log.hold_next_stop();
    let s = rig.server.clone();
    let stopper = Watched::spawn("stop", move || s.stop());
    assert!(entered.wait(STEP), "the stop is in progress");
    let (logs, guard) = LogCapture::start();
    let err = rig
        .server
        .execute_with(&timeout(SETTLE * 4).log_after(SETTLE))
        .expect_err("execute() must time out while the stop hangs");
    assert!(
        matches!(
            err,
            ServerError::Timeout {
                call: Call::Execute,
                ..
            }
        ),
        "{err}"
    );
    // For the stop, or for the blocking executor's loop, which sees the listener
    // closed a moment after the stop began.
    expect_hang_warning(&logs, "execute() is waiting for");
    drop(guard);
    eventually(STEP, "the serving execute() warns about the stop", || {
        serving_logs.count(Level::WARN, "possible hang") > 0
    });
    release.open();
    assert_eq!(stopper.join(STEP).expect("stop"), epoch);
    assert_eq!(serving.join(STEP).expect("execute"), epoch);
    expect_hang_warning(&serving_logs, "execute() is waiting for stop to complete");
    assert_eq!(rig.server.execute().expect("execute after stop"), epoch);
    rig.server.wait().expect("wait");
}

/// The thread that runs the drain itself — `wait()`, or a `start()` that restarts a
/// stopped epoch nobody waited for — logs one "possible hang" warning after
/// `log_after` while a handler holds it up, and fails at its timeout; the drain goes
/// on and a later call completes it.
pub fn draining_calls_log_a_possible_hang(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("gate:long");
    assert!(rig.recorder.wait_started(1, STEP), "the handler started");
    rig.server.stop().expect("stop");
    for (call, options) in [
        (Call::Wait, timeout(SETTLE * 4).log_after(SETTLE)),
        (Call::Start, timeout(SETTLE * 4).log_after(SETTLE)),
    ] {
        let (logs, _guard) = LogCapture::start();
        let err = match call {
            Call::Wait => rig.server.wait_with(&options),
            _ => rig.server.start_with(&options),
        }
        .expect_err("the drain is held up by the handler");
        assert!(err.is_timeout(), "{call}: {err}");
        expect_hang_warning(&logs, &format!("{call} is waiting for"));
    }
    assert_eq!(rig.server.epoch(), running.epoch(), "no restart yet");
    rig.recorder.open_gate();
    rig.server.wait().expect("wait");
    assert_eq!(rig.recorder.processed(), ["gate:long"]);
    running.stop_and_wait().expect("fixture");
}

/// Dropping the last handle of a running server stops it without waiting, and keeps
/// `stop()`'s promise: every message already taken is still processed to completion —
/// async handlers included — and answered; whatever was not taken stays on the
/// transport; the listener is cleaned up once the drain is done.
pub fn dropping_the_last_handle_finishes_what_was_taken(factory: &ExecutorFactory) {
    let rig = rig_with(
        factory,
        |b| b,
        Some(Box::new(|recorder: &Recorder| {
            Box::new(recorder.async_dispatcher()) as Box<dyn Dispatcher>
        })),
    );
    let Rig {
        transport,
        fake,
        recorder,
        server,
        ..
    } = rig;
    server.start().expect("start");
    let mut reply = block_on(transport.call(
        &Target::new(TOPIC),
        Message::new("gate:call"),
        &SendOptions::default(),
    ))
    .expect("call");
    block_on(transport.cast(
        &Target::new(TOPIC),
        Message::new("gate:cast"),
        &SendOptions::default(),
    ))
    .expect("cast");
    // Executors with workers take both at once; one that takes messages only in
    // execute() (the blocking executor) takes none.
    recorder.wait_started(2, SETTLE * 4);
    let dropped = Watched::spawn("drop", move || drop(server));
    dropped.join(STEP);
    assert_eq!(
        fake.listener_counts().stopped,
        1,
        "dropping the server stopped it"
    );
    recorder.open_gate();
    let taken = recorder.started();
    if taken.iter().any(|m| m == "gate:call") {
        assert_eq!(
            reply.recv_timeout(Some(STEP)),
            Ok(ReplyEvent::Reply(Ok(Bytes::from_static(b"gate:call")))),
            "the call taken before the drop was answered"
        );
    }
    eventually(
        STEP,
        "the dropped server's drain cleans up its listener",
        || fake.listener_counts().cleaned_up == 1,
    );
    let mut processed = recorder.processed();
    processed.sort();
    let mut started = taken;
    started.sort();
    assert_eq!(processed, started, "every message taken was processed");
    assert_eq!(fake.listener_counts().delivered, processed.len());
    let rest = Rig::remaining_on(&transport);
    assert_eq!(
        processed.len() + rest.len(),
        2,
        "nothing lost: {processed:?} + {rest:?}"
    );
}

/// A listener whose poll panics is treated like one whose poll fails: the executor
/// polls again after a backoff, the server's state counts the failed polls (a deaf
/// server shows), the same epoch serves again once polls succeed, and a drain whose
/// polls keep panicking after `stop()` ends instead of hanging `wait()`.
pub fn a_panicking_poll_is_retried_and_shown_in_the_state(factory: &ExecutorFactory) {
    let rig = rig(factory);
    rig.fake.panic_next_polls(usize::MAX);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    eventually(STEP, "the state shows the failing polls", || {
        rig.server.state().failed_polls >= 2
    });
    let state = rig.server.state();
    assert!(state.is_running() && !state.is_healthy(), "{state:?}");
    rig.fake.panic_next_polls(0);
    rig.cast("after");
    assert!(
        rig.recorder.wait_processed(1, STEP),
        "the same epoch polls again and serves"
    );
    assert_eq!(running.epoch(), rig.server.epoch());
    let state = rig.server.state();
    assert!(state.is_healthy(), "{state:?}");
    // The poll in progress ends with the next message; the ones after it panic.
    rig.fake.panic_next_polls(usize::MAX);
    rig.cast("wake");
    eventually(STEP, "polls fail again", || {
        rig.server.state().failed_polls >= 1
    });
    rig.server.stop().expect("stop");
    rig.server
        .wait_with(&timeout(STEP))
        .expect("the drain ends although polls keep panicking");
    assert_eq!(rig.fake.listener_counts().cleaned_up, 1);
    running.stop_and_wait().expect("fixture");
}

/// A listener whose `stop()` or `cleanup()` panics wedges no step: `stop()` completes
/// (no new message is taken), `wait()` completes, and the server restarts.
pub fn a_panicking_listener_stop_or_cleanup_wedges_nothing(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("before");
    assert!(rig.recorder.wait_processed(1, STEP));
    rig.fake.panic_next_stops(usize::MAX);
    rig.fake.panic_next_cleanups(usize::MAX);
    assert_eq!(
        rig.server.stop_with(&timeout(STEP)).expect("stop"),
        running.epoch()
    );
    assert_eq!(rig.server.state().stop, StepState::Done);
    assert_eq!(
        rig.server.wait_with(&timeout(STEP)).expect("wait"),
        running.epoch()
    );
    let counts = rig.fake.listener_counts();
    assert_eq!((counts.stopped, counts.cleaned_up), (1, 1), "{counts:?}");
    running.stop_and_wait().expect("fixture");
    rig.fake.panic_next_stops(0);
    rig.fake.panic_next_cleanups(0);
    let again = ServerThread::spawn(rig.server.clone()).expect("restart");
    rig.cast("after");
    assert!(rig.recorder.wait_processed(2, STEP));
    again.stop_and_wait().expect("fixture");
}

/// Random lifecycle calls with short timeouts from four threads at once, while casts
/// arrive: every call returns (a result or a `Timeout`, nothing else), the executor
/// sees well-formed epochs (`start`, then at most one `stop`, drains only after it,
/// the next `start` only after a complete drain), every listener is cleaned up, and
/// every message is processed at most once and none is lost.
pub fn random_calls_with_timeouts_keep_the_contract(factory: &ExecutorFactory) {
    const THREADS: u64 = 4;
    const CALLS: usize = 40;
    const CASTS: usize = 40;
    let rig = rig(factory);
    let callers: Vec<_> = (0..THREADS)
        .map(|seed| {
            let s = rig.server.clone();
            Watched::spawn(&format!("caller {seed}"), move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (seed + 1);
                for _ in 0..CALLS {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let wait = Duration::from_millis([0, 1, 5, 20][(rng >> 8) as usize % 4]);
                    let options = timeout(wait).never_log();
                    let result = match rng % 4 {
                        0 => s.start_with(&options),
                        1 => s.execute_with(&options),
                        2 => s.stop_with(&options),
                        _ => s.wait_with(&options),
                    };
                    if let Err(err) = result
                        && !err.is_timeout()
                    {
                        return Err(err);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for i in 0..CASTS {
        rig.cast(&format!("m{i}"));
    }
    for caller in callers {
        caller.join(STEP).expect("only timeouts may fail");
    }
    // Finish whatever epoch the callers left, serving it if it never was.
    let limit = timeout(STEP);
    rig.server.start_with(&limit).expect("start");
    let s = rig.server.clone();
    let serving = Watched::spawn("execute", move || s.execute_with(&timeout(STEP)));
    rig.server.stop_with(&limit).expect("stop");
    serving.join(STEP).expect("execute");
    rig.server.wait_with(&limit).expect("wait");

    let calls = rig.log.calls();
    let epochs: Vec<&[&str]> = calls.split(|c| *c == "start").skip(1).collect();
    for (i, epoch) in epochs.iter().enumerate() {
        let stops = epoch.iter().filter(|c| **c == "stop").count();
        assert_eq!(stops, 1, "epoch {} stopped once: {calls:?}", i + 1);
        let stop_at = epoch.iter().position(|c| *c == "stop").unwrap_or(0);
        assert!(
            !epoch[..stop_at].contains(&"wait"),
            "epoch {}: a drain before the stop: {calls:?}",
            i + 1
        );
        assert_eq!(
            epoch.last(),
            Some(&"wait"),
            "epoch {} ends drained: {calls:?}",
            i + 1
        );
    }
    let counts = rig.fake.listener_counts();
    assert_eq!(counts.created, epochs.len(), "{counts:?}");
    assert_eq!(
        counts.live(),
        0,
        "every listener was cleaned up: {counts:?}"
    );
    let mut processed = rig.recorder.processed();
    let handled = processed.len();
    processed.sort();
    processed.dedup();
    assert_eq!(processed.len(), handled, "a message was processed twice");
    let remaining = rig.remaining();
    assert_eq!(
        handled + remaining.len(),
        CASTS,
        "nothing lost: {handled} processed, {} still queued",
        remaining.len()
    );
}

// ===== more of the contract =====

/// `stop()` before `start()` waits for `start()` (oslo's ordering) and then stops.
pub fn stop_before_start_waits_for_start(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let s = rig.server.clone();
    let mut stopper = Watched::spawn("stop", move || s.stop());
    assert!(stopper.still_running_after(SETTLE));
    let epoch = rig.server.start().expect("start");
    assert_eq!(stopper.join(STEP).expect("stop"), epoch);
    rig.server.wait().expect("wait");
    assert_eq!(rig.log.calls(), ["start", "stop", "wait"]);
}

/// `execute()` before `start()` waits for it, serves until `stop()`, then returns.
pub fn execute_serves_until_stop(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let s = rig.server.clone();
    let mut serving = Watched::spawn("execute", move || s.execute());
    assert!(serving.still_running_after(SETTLE));
    rig.server.start().expect("start");
    rig.cast("served");
    assert!(rig.recorder.wait_processed(1, STEP));
    assert!(
        serving.still_running_after(SETTLE),
        "execute() serves until stop()"
    );
    rig.server.stop().expect("stop");
    serving.join(STEP).expect("execute");
    rig.server.wait().expect("wait");
}

/// A handler that panics is contained: the server keeps serving.
pub fn handler_panic_keeps_the_server_serving(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    rig.cast("panic:boom");
    rig.cast("after");
    assert!(rig.recorder.wait_processed(1, STEP));
    assert_eq!(rig.recorder.processed(), ["after"]);
    running.stop_and_wait().expect("fixture");
}

/// A call's reply reaches the caller through the executor.
pub fn calls_are_answered(factory: &ExecutorFactory) {
    let rig = rig(factory);
    let running = ServerThread::spawn(rig.server.clone()).expect("start");
    let mut reply = block_on(rig.transport.call(
        &Target::new(TOPIC).with_server(SERVER),
        Message::new("ping"),
        &SendOptions::default(),
    ))
    .expect("call");
    assert_eq!(
        reply.recv_timeout(Some(STEP)),
        Ok(ReplyEvent::Reply(Ok(Bytes::from_static(b"ping"))))
    );
    running.stop_and_wait().expect("fixture");
}

// ===== running the suite =====

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every scenario, by name.
        pub const SCENARIOS: &[(&str, fn(&ExecutorFactory))] = &[$((stringify!($name), $name)),*];

        /// Generates one `#[test]` per conformance scenario for an executor expression,
        /// evaluated afresh for each scenario. Invoke it inside a module.
        ///
        /// ```ignore
        /// mod blocking {
        ///     messaging_testkit::executor_conformance!(messaging_executors::BlockingExecutor::new());
        /// }
        /// ```
        #[macro_export]
        macro_rules! executor_conformance {
            ($executor:expr) => {
                $(
                    #[test]
                    fn $name() {
                        $crate::conformance::run_one(stringify!($name), ::std::sync::Arc::new(|| {
                            ::std::boxed::Box::new($executor) as ::std::boxed::Box<dyn $crate::__private::Executor>
                        }));
                    }
                )*
            };
        }
    };
}

scenarios!(
    start_stop_wait,
    reversed_order,
    wait_for_running_task,
    start_stop_wait_stop_wait,
    state_wrapping,
    logging,
    logging_explicit,
    logging_with_timeout,
    timeout_wait,
    timeout_running,
    log_after_zero,
    stop_endpoint_then_stop_and_wait_from_test_thread,
    stop_from_inside_a_handler,
    wait_from_handler_returns_error_instead_of_deadlocking,
    stop_and_wait_from_eight_threads,
    wait_returns_only_after_in_flight_handlers_finish,
    nothing_is_dispatched_after_stop_returns,
    messages_taken_before_stop_are_processed,
    failed_start_leaves_the_server_startable,
    restart_without_wait_does_not_leak,
    wait_cannot_attach_to_a_later_epoch,
    wait_from_a_dispatcher_is_refused,
    a_panicking_listener_does_not_hang_wait,
    huge_timeouts_mean_no_deadline,
    execute_with_a_timeout_returns_while_the_server_runs,
    execute_waiting_for_a_stop_in_progress_logs_and_times_out,
    draining_calls_log_a_possible_hang,
    dropping_the_last_handle_finishes_what_was_taken,
    a_panicking_poll_is_retried_and_shown_in_the_state,
    a_panicking_listener_stop_or_cleanup_wedges_nothing,
    random_calls_with_timeouts_keep_the_contract,
    stop_before_start_waits_for_start,
    execute_serves_until_stop,
    handler_panic_keeps_the_server_serving,
    calls_are_answered,
);

/// Runs one scenario by name under the watchdog.
///
/// # Panics
///
/// If the scenario fails, hangs, or does not exist.
pub fn run_one(name: &str, factory: ExecutorFactory) {
    let (_, scenario) = SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no conformance scenario named {name}"));
    run(name, factory, *scenario);
}

/// Runs every scenario in turn.
///
/// # Panics
///
/// At the first scenario that fails or hangs, naming it.
pub fn run_all(factory: ExecutorFactory) {
    for (name, scenario) in SCENARIOS {
        run(name, factory.clone(), *scenario);
    }
}
