//! Loom models of the lifecycle state machine: every interleaving of start / execute /
//! stop / wait from several threads (within a preemption bound), checking that nothing
//! deadlocks (loom fails a model in which every thread is blocked), no step runs twice
//! in an epoch, `wait` never returns before `stop` and the drain, and a restart never
//! abandons an epoch.
//!
//! The `loom_mutant_*` tests switch on one deliberate bug each ([`Mutant`]) and expect
//! the model to catch it: a model that cannot fail proves nothing.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p messaging-core --release --lib loom_`

use super::{Lifecycle, MUTANT, Mutant, Request, Steps};
use crate::error::ServerError;
use crate::executor::WaitTimedOut;
use crate::server::{Call, Epoch};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Condvar, Mutex, Ordering::SeqCst, thread};

std::thread_local! {
    /// Properties found broken while a mutant is in force.
    static VIOLATIONS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Asserts a property of the lifecycle. While a mutant is in force the violation is
/// recorded instead (a panic inside a loom model whose threads are still queued
/// aborts the process), and [`mutant`] checks that it was seen.
fn check(holds: bool, property: &str) {
    if holds {
        return;
    }
    if MUTANT.with(|m| m.get()).is_some() {
        VIOLATIONS.with(|v| v.borrow_mut().push(property.to_owned()));
    } else {
        panic!("{property}");
    }
}

/// [`check`] of an equality, reporting both sides.
fn check_eq<T: PartialEq + std::fmt::Debug>(left: T, right: T, property: &str) {
    if left != right && MUTANT.with(|m| m.get()).is_none() {
        panic!("{property}: {left:?} != {right:?}");
    }
    check(left == right, property);
}

/// A model executor + listener. Its bodies check the ordering the lifecycle promises.
#[derive(Debug)]
struct Model {
    starts: AtomicUsize,
    executes: AtomicUsize,
    stops: AtomicUsize,
    waits: AtomicUsize,
    fail_next_start: AtomicBool,
    failed_starts: AtomicUsize,
    /// The "listener": the blocking loop in `execute` runs until `stop` closes it.
    closed: Mutex<bool>,
    closed_cv: Condvar,
    /// One in-flight message, processed by a worker spawned at start.
    worker: Mutex<Option<thread::JoinHandle<()>>>,
    processed: Arc<AtomicBool>,
    spawn_worker: bool,
    /// Whether `execute` is a loop that runs until `stop` (the blocking executor) or
    /// returns at once (executors with workers).
    has_loop: bool,
    /// `execute` bodies that returned.
    executed: AtomicUsize,
}

impl Model {
    fn new() -> Arc<Model> {
        Arc::new(Model::with(false, false))
    }

    fn with(spawn_worker: bool, fail_first_start: bool) -> Model {
        Model {
            starts: AtomicUsize::new(0),
            executes: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
            waits: AtomicUsize::new(0),
            fail_next_start: AtomicBool::new(fail_first_start),
            failed_starts: AtomicUsize::new(0),
            closed: Mutex::new(false),
            closed_cv: Condvar::new(),
            worker: Mutex::new(None),
            processed: Arc::new(AtomicBool::new(false)),
            spawn_worker,
            has_loop: true,
            executed: AtomicUsize::new(0),
        }
    }

    /// A model of an executor whose workers serve: `execute` has no loop.
    fn without_loop() -> Arc<Model> {
        let mut model = Model::with(false, false);
        model.has_loop = false;
        Arc::new(model)
    }
}

impl Steps for Model {
    fn start(&self) -> Result<(), ServerError> {
        if self.fail_next_start.swap(false, SeqCst) {
            self.failed_starts.fetch_add(1, SeqCst);
            return Err(ServerError::Panicked {
                call: Call::Start,
                message: "injected start failure".to_owned(),
            });
        }
        // No leak: every earlier epoch was drained before a new one starts.
        check_eq(
            self.waits.load(SeqCst),
            self.starts.load(SeqCst),
            "an epoch started before the previous one was drained",
        );
        *self.closed.lock() = false;
        if self.spawn_worker {
            let processed = self.processed.clone();
            *self.worker.lock() = Some(thread::spawn(move || processed.store(true, SeqCst)));
        }
        self.starts.fetch_add(1, SeqCst);
        Ok(())
    }

    fn execute(&self, _deadline: Option<std::time::Instant>) -> Result<(), WaitTimedOut> {
        check_eq(
            self.executes.load(SeqCst) + 1,
            self.starts.load(SeqCst),
            "the loop ran twice in an epoch, or before start",
        );
        self.executes.fetch_add(1, SeqCst);
        if self.has_loop {
            let mut closed = self.closed.lock();
            while !*closed {
                closed = self.closed_cv.wait(closed);
            }
        }
        self.executed.fetch_add(1, SeqCst);
        Ok(())
    }

    fn stop(&self) {
        check_eq(
            self.stops.load(SeqCst) + 1,
            self.starts.load(SeqCst),
            "stop ran twice in an epoch, or before start",
        );
        self.stops.fetch_add(1, SeqCst);
        *self.closed.lock() = true;
        self.closed_cv.notify_all();
    }

    fn wait(&self, _deadline: Option<std::time::Instant>) -> Result<(), WaitTimedOut> {
        check_eq(
            self.stops.load(SeqCst),
            self.starts.load(SeqCst),
            "wait ran before stop",
        );
        check_eq(
            self.executes.load(SeqCst),
            self.executed.load(SeqCst),
            "the drain began while the loop still ran",
        );
        check_eq(
            self.waits.load(SeqCst) + 1,
            self.starts.load(SeqCst),
            "wait ran twice",
        );
        let worker = self.worker.lock().take();
        if let Some(worker) = worker {
            worker.join().unwrap();
        }
        self.waits.fetch_add(1, SeqCst);
        Ok(())
    }
}

fn req(call: Call) -> Request<'static> {
    Request::new(call, None, None, None, false, "loom")
}

fn pinned(call: Call, epoch: u64) -> Request<'static> {
    Request::new(call, Some(Epoch(epoch)), None, None, false, "loom")
}

/// Checks `f` with `mutant` in force: the models must find `property` broken in some
/// interleaving, which proves they can fail.
fn mutant(mutant: Mutant, f: fn(), property: &str) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            MUTANT.with(|m| m.set(None));
        }
    }
    VIOLATIONS.with(|v| v.borrow_mut().clear());
    MUTANT.with(|m| m.set(Some(mutant)));
    let _reset = Reset;
    model(f);
    let seen = VIOLATIONS.with(|v| std::mem::take(&mut *v.borrow_mut()));
    assert!(
        seen.iter().any(|v| v == property),
        "the models missed {mutant:?} (`{property}` never broke); they saw {seen:?}"
    );
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}

#[test]
fn loom_start_stop_wait_from_three_threads() {
    model(|| {
        let lc = Arc::new(Lifecycle::new());
        let m = Model::new();
        let waiter = {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || {
                lc.wait(&*m, &mut req(Call::Wait)).unwrap();
                assert_eq!(m.stops.load(SeqCst), 1, "wait returned before stop");
                assert_eq!(m.waits.load(SeqCst), 1, "wait returned before the drain");
            })
        };
        let stopper = {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || {
                lc.stop(&*m, &mut req(Call::Stop)).unwrap();
                assert_eq!(m.stops.load(SeqCst), 1);
            })
        };
        let starter = {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || {
                lc.start(&*m, &mut req(Call::Start)).unwrap();
            })
        };
        waiter.join().unwrap();
        stopper.join().unwrap();
        starter.join().unwrap();
        assert_eq!(m.starts.load(SeqCst), 1);
        assert_eq!(m.waits.load(SeqCst), 1);
    });
}

#[test]
fn loom_concurrent_waits_all_return_after_the_drain() {
    model(|| {
        let lc = Arc::new(Lifecycle::new());
        let m = Model::new();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (lc, m) = (lc.clone(), m.clone());
                thread::spawn(move || {
                    lc.wait(&*m, &mut req(Call::Wait)).unwrap();
                    assert_eq!(m.waits.load(SeqCst), 1);
                })
            })
            .collect();
        lc.start(&*m, &mut req(Call::Start)).unwrap();
        lc.stop(&*m, &mut req(Call::Stop)).unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(m.waits.load(SeqCst), 1);
    });
}

#[test]
fn loom_blocking_execute_runs_until_stop_and_wait_follows_it() {
    model(blocking_execute_then_stop_and_wait);
}

fn blocking_execute_then_stop_and_wait() {
    let lc = Arc::new(Lifecycle::new());
    let m = Model::new();
    let server = {
        let (lc, m) = (lc.clone(), m.clone());
        thread::spawn(move || {
            lc.start(&*m, &mut req(Call::Start)).unwrap();
            lc.execute(&*m, &mut req(Call::Execute)).unwrap();
            check_eq(m.stops.load(SeqCst), 1, "execute returned before stop");
        })
    };
    let controller = {
        let (lc, m) = (lc.clone(), m.clone());
        thread::spawn(move || {
            lc.stop(&*m, &mut req(Call::Stop)).unwrap();
            lc.wait(&*m, &mut req(Call::Wait)).unwrap();
            check_eq(m.waits.load(SeqCst), 1, "one drain");
        })
    };
    server.join().unwrap();
    controller.join().unwrap();
    // execute either served (1) or was skipped because wait finished first (0).
    check(m.executes.load(SeqCst) <= 1, "at most one loop");
}

#[test]
fn loom_wait_returns_only_after_in_flight_work() {
    model(|| {
        let lc = Arc::new(Lifecycle::new());
        let m = Arc::new(Model::with(true, false));
        let starter = {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || {
                lc.start(&*m, &mut req(Call::Start)).unwrap();
            })
        };
        lc.stop(&*m, &mut req(Call::Stop)).unwrap();
        lc.wait(&*m, &mut req(Call::Wait)).unwrap();
        assert!(
            m.processed.load(SeqCst),
            "wait returned before the in-flight message finished"
        );
        starter.join().unwrap();
    });
}

#[test]
fn loom_pinned_call_never_acts_on_a_later_epoch() {
    // oslo's test_state_wrapping: a stop() made during epoch 1 must not stop epoch 2,
    // however late its thread runs.
    model(|| {
        let lc = Arc::new(Lifecycle::new());
        let m = Model::new();
        let early = {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || lc.stop(&*m, &mut pinned(Call::Stop, 1)).unwrap())
        };
        lc.start(&*m, &mut req(Call::Start)).unwrap();
        lc.stop(&*m, &mut req(Call::Stop)).unwrap();
        lc.wait(&*m, &mut req(Call::Wait)).unwrap();
        let second = lc.start(&*m, &mut req(Call::Start)).unwrap();
        assert_eq!(second, Epoch(2));
        assert_eq!(
            early.join().unwrap(),
            Epoch(1),
            "the early stop acted on epoch 1"
        );
        assert_eq!(m.stops.load(SeqCst), 1, "epoch 2 was never stopped");
        assert_eq!(m.starts.load(SeqCst), 2);
        assert!(lc.snapshot().is_running(), "epoch 2 still runs");
    });
}

#[test]
fn loom_unpinned_calls_pin_the_epoch_current_when_made() {
    // The same race without an explicit pin: the early stop acts on whichever epoch was
    // current when it was made, and never on one that began while it was blocked.
    model(|| {
        let lc = Arc::new(Lifecycle::new());
        let m = Model::new();
        let early = {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || {
                let at_entry = lc.snapshot().epoch;
                let stopped = lc.stop(&*m, &mut req(Call::Stop)).unwrap();
                assert!(stopped >= at_entry);
                stopped
            })
        };
        lc.start(&*m, &mut req(Call::Start)).unwrap();
        lc.stop(&*m, &mut req(Call::Stop)).unwrap();
        lc.wait(&*m, &mut req(Call::Wait)).unwrap();
        lc.start(&*m, &mut req(Call::Start)).unwrap();
        let stopped = early.join().unwrap();
        let expected_stops = if stopped == Epoch(2) { 2 } else { 1 };
        assert_eq!(m.stops.load(SeqCst), expected_stops);
    });
}

#[test]
fn loom_restart_without_wait_drains_the_old_epoch_first() {
    model(restart_without_wait);
}

fn restart_without_wait() {
    let lc = Arc::new(Lifecycle::new());
    let m = Model::new();
    let old_waiter = {
        let (lc, m) = (lc.clone(), m.clone());
        thread::spawn(move || {
            lc.wait(&*m, &mut pinned(Call::Wait, 1)).unwrap();
            check(
                m.waits.load(SeqCst) >= 1,
                "a pinned wait returned before its drain",
            );
        })
    };
    lc.start(&*m, &mut req(Call::Start)).unwrap();
    lc.stop(&*m, &mut req(Call::Stop)).unwrap();
    // The Model's start body asserts that epoch 1 was drained first.
    check_eq(
        lc.start(&*m, &mut req(Call::Start)).unwrap(),
        Epoch(2),
        "the restart began epoch 2",
    );
    check_eq(m.waits.load(SeqCst), 1, "one drain");
    old_waiter.join().unwrap();
}

#[test]
fn loom_failed_start_leaves_the_server_startable() {
    model(|| {
        let lc = Arc::new(Lifecycle::new());
        let m = Arc::new(Model::with(false, true));
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let (lc, m) = (lc.clone(), m.clone());
                thread::spawn(move || lc.start(&*m, &mut req(Call::Start)).is_ok())
            })
            .collect();
        let stopper = {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || lc.stop(&*m, &mut req(Call::Stop)).unwrap())
        };
        let ok: Vec<bool> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        if !ok.contains(&true) {
            // Both callers shared the one failed attempt: the server is still startable.
            lc.start(&*m, &mut req(Call::Start)).unwrap();
        }
        stopper.join().unwrap();
        assert_eq!(m.failed_starts.load(SeqCst), 1);
        assert_eq!(m.starts.load(SeqCst), 1);
        assert_eq!(m.stops.load(SeqCst), 1);
    });
}

#[test]
fn loom_parked_executes_return_after_stop_and_never_rerun_the_body() {
    // Executors with workers: execute() has nothing to run and parks until the stop;
    // two of them at once, racing stop and wait, run the (empty) body once and both
    // return only once the epoch is stopped.
    model(parked_executes);
}

fn parked_executes() {
    let lc = Arc::new(Lifecycle::new());
    let m = Model::without_loop();
    lc.start(&*m, &mut req(Call::Start)).unwrap();
    check_eq(m.starts.load(SeqCst), 1, "one start");
    let executes: Vec<_> = (0..2)
        .map(|_| {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || {
                lc.execute(&*m, &mut req(Call::Execute)).unwrap();
                check_eq(m.stops.load(SeqCst), 1, "execute returned before stop");
            })
        })
        .collect();
    lc.stop(&*m, &mut req(Call::Stop)).unwrap();
    lc.wait(&*m, &mut req(Call::Wait)).unwrap();
    for e in executes {
        e.join().unwrap();
    }
    check(m.executes.load(SeqCst) <= 1, "at most one loop");
}

#[test]
fn loom_blocking_execute_from_two_threads_runs_one_loop() {
    model(blocking_execute_from_two_threads);
}

fn blocking_execute_from_two_threads() {
    let lc = Arc::new(Lifecycle::new());
    let m = Model::new();
    lc.start(&*m, &mut req(Call::Start)).unwrap();
    let executes: Vec<_> = (0..2)
        .map(|_| {
            let (lc, m) = (lc.clone(), m.clone());
            thread::spawn(move || {
                lc.execute(&*m, &mut req(Call::Execute)).unwrap();
                check_eq(m.stops.load(SeqCst), 1, "execute returned before stop");
            })
        })
        .collect();
    lc.stop(&*m, &mut req(Call::Stop)).unwrap();
    for e in executes {
        e.join().unwrap();
    }
    lc.wait(&*m, &mut req(Call::Wait)).unwrap();
    check_eq(m.executes.load(SeqCst), 1, "exactly one loop served");
}

// ===== mutation checks: each deliberate bug is caught =====

#[test]
fn loom_mutant_restart_skips_drain_is_caught() {
    mutant(
        Mutant::RestartSkipsDrain,
        restart_without_wait,
        "an epoch started before the previous one was drained",
    );
}

#[test]
fn loom_mutant_loop_runs_twice_is_caught() {
    mutant(
        Mutant::LoopRunsTwice,
        blocking_execute_from_two_threads,
        "the loop ran twice in an epoch, or before start",
    );
}

#[test]
fn loom_mutant_execute_ignores_stop_is_caught() {
    mutant(
        Mutant::ExecuteIgnoresStop,
        parked_executes,
        "execute returned before stop",
    );
}

#[test]
fn loom_mutant_wait_ignores_execute_is_caught() {
    mutant(
        Mutant::WaitIgnoresExecute,
        blocking_execute_then_stop_and_wait,
        "the drain began while the loop still ran",
    );
}
