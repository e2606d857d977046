//! The lifecycle state machine: four steps per epoch behind one lock.
//!
//! This is the pure core of [`Server`](super::Server): it decides who runs which step
//! and who waits, and never runs a step while holding its lock. The effects (creating the
//! listener, driving the executor) sit behind [`Steps`], so the loom models in
//! `loom_tests` can check every interleaving with a model of them.
//!
//! Per epoch each step (`start`, `execute`, `stop`, `wait`) is `Idle`, `Running` (one
//! thread is running its body) or `Done`. The rules:
//!
//! * a step's body runs at most once per epoch; callers that find it `Running` wait for
//!   it to end, callers that find it `Done` return at once (except `execute`, below);
//! * `execute` and `stop` wait for `start`; `wait` waits for `stop` and for `execute`'s
//!   body (the blocking executor's loop), not for threads parked in `execute()`;
//! * `execute`'s body serves until the listener is closed; it is `Done` once it
//!   returned (at once for executors without a loop), and every `execute()` call then
//!   waits for `stop` to be `Done`. Serving is not a hang: the "possible hang" clock of
//!   an `execute()` runs only while it waits for something else (`start`, a `stop` in
//!   progress), but its timeout bounds everything. A body that times out goes back to
//!   `Idle`, so a later `execute()` resumes serving;
//! * a failed `start` goes back to `Idle` (the server stays startable) and its error is
//!   handed to every caller that waited on that attempt;
//! * a `wait` body that times out goes back to `Idle`, so a later `wait` resumes the drain;
//!   the thread running it logs "possible hang" after `log_after` like any waiter;
//! * `start` after `stop` opens a new epoch, but only once the old epoch's `wait` is
//!   `Done` (running it if nobody has): an epoch is never abandoned half drained;
//! * every call acts on one epoch, pinned when it is made: when that epoch is over
//!   (a later one began) everything in it is complete and the call returns;
//! * a call from inside a handler of this server that would have to wait for that
//!   handler gets an error instead of blocking.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::{Call, Epoch, ServerState, StepState};
use crate::error::{ServerError, panic_message};
use crate::executor::WaitTimedOut;
use crate::sync::{Condvar, Mutex, MutexGuard};

/// The effects of the four steps, run without the lock held.
pub(crate) trait Steps {
    fn start(&self) -> Result<(), ServerError>;
    /// Serves until the listener is closed or `deadline` passes (the blocking
    /// executor's loop; a no-op for the others). After a timeout, a later call resumes.
    fn execute(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut>;
    fn stop(&self);
    /// Drains until done or `deadline`; after a timeout, a later call resumes.
    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut>;
}

/// What `execute()` waits for while the epoch runs: its serving, not a hang.
const SERVING: &str = "the server to be stopped";
/// What the thread running the drain waits for.
const DRAINING: &str = "in-flight messages to finish";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Running,
    Done,
}

impl From<Phase> for StepState {
    fn from(phase: Phase) -> StepState {
        match phase {
            Phase::Idle => StepState::NotRun,
            Phase::Running => StepState::Running,
            Phase::Done => StepState::Done,
        }
    }
}

#[derive(Debug)]
struct State {
    epoch: u64,
    start: Phase,
    execute: Phase,
    stop: Phase,
    wait: Phase,
    /// Failed start attempts in this epoch, so waiters know their attempt ended.
    start_failures: u64,
    last_start_error: Option<ServerError>,
}

impl State {
    fn new_epoch(&mut self) {
        self.epoch += 1;
        self.start = Phase::Idle;
        self.execute = Phase::Idle;
        self.stop = Phase::Idle;
        self.wait = Phase::Idle;
        self.start_failures = 0;
        self.last_start_error = None;
    }
}

/// One lifecycle call: what it is and how long it may wait.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) call: Call,
    pub(crate) pin: Option<Epoch>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) log_after: Option<Duration>,
    pub(crate) in_handler: bool,
    pub(crate) server: &'a str,
    deadline: Option<Instant>,
    log_at: Option<Instant>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(
        call: Call,
        pin: Option<Epoch>,
        timeout: Option<Duration>,
        log_after: Option<Duration>,
        in_handler: bool,
        server: &'a str,
    ) -> Self {
        // An unrepresentable instant (`Duration::MAX`) means "never", not a panic.
        let now = (timeout.is_some() || log_after.is_some()).then(Instant::now);
        let after = |d: Option<Duration>| now.zip(d).and_then(|(now, d)| now.checked_add(d));
        Request {
            call,
            pin,
            timeout,
            log_after,
            in_handler,
            server,
            deadline: after(timeout),
            log_at: after(log_after),
        }
    }
}

impl Request<'_> {
    /// The error for this call when its deadline passed while waiting for `waiting_for`.
    fn timed_out(&self, waiting_for: &'static str) -> ServerError {
        ServerError::Timeout {
            call: self.call,
            waiting_for,
            timeout: self.timeout.unwrap_or_default(),
        }
    }

    /// Restarts the "possible hang" clock after serving (`serving` is the clock that
    /// was set aside when serving began; `None` if the warning was already logged).
    fn resume_log_clock(&mut self, serving: Option<Instant>) {
        self.log_at = serving.and_then(|_| {
            self.log_after
                .and_then(|after| Instant::now().checked_add(after))
        });
    }

    /// Logs the call's one "possible hang" warning if its `log_after` has passed.
    fn warn_if_late(&mut self, now: Instant, epoch: u64, waiting_for: &str) {
        if self.log_at.is_some_and(|at| now >= at) {
            tracing::warn!(
                server = self.server,
                epoch,
                waited = ?self.log_after.unwrap_or_default(),
                "possible hang: {} is waiting for {}",
                self.call,
                waiting_for,
            );
            self.log_at = None;
        }
    }
}

type Guard<'a> = MutexGuard<'a, State>;

#[derive(Debug)]
pub(crate) struct Lifecycle {
    state: Mutex<State>,
    changed: Condvar,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            state: Mutex::new(State {
                epoch: 1,
                start: Phase::Idle,
                execute: Phase::Idle,
                stop: Phase::Idle,
                wait: Phase::Idle,
                start_failures: 0,
                last_start_error: None,
            }),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn snapshot(&self) -> ServerState {
        let st = self.state.lock();
        ServerState {
            epoch: Epoch(st.epoch),
            start: st.start.into(),
            execute: st.execute.into(),
            stop: st.stop.into(),
            wait: st.wait.into(),
            failed_polls: 0,
        }
    }

    /// Starts the current epoch, or a new one if the current epoch was stopped.
    pub(crate) fn start(
        &self,
        steps: &impl Steps,
        req: &mut Request<'_>,
    ) -> Result<Epoch, ServerError> {
        let mut st = self.state.lock();
        loop {
            let e = st.epoch;
            if let Some(pin) = req.pin {
                if pin.0 < e {
                    return Ok(pin);
                }
                check_pin(req, &st)?;
            }
            match st.start {
                Phase::Idle => {
                    st.start = Phase::Running;
                    drop(st);
                    let outcome = guarded(req.call, || steps.start());
                    st = self.state.lock();
                    self.changed.notify_all();
                    return match outcome {
                        Ok(()) => {
                            st.start = Phase::Done;
                            Ok(Epoch(e))
                        }
                        Err(err) => {
                            st.start = Phase::Idle;
                            st.start_failures += 1;
                            st.last_start_error = Some(err.clone());
                            Err(err)
                        }
                    };
                }
                Phase::Running => {
                    let attempt = st.start_failures;
                    st = self.block(st, req, "another thread's start to complete", |s| {
                        s.epoch != e || s.start != Phase::Running
                    })?;
                    if st.epoch == e
                        && st.start_failures != attempt
                        && let Some(err) = &st.last_start_error
                    {
                        return Err(err.clone());
                    }
                }
                Phase::Done => {
                    if req.pin.is_some() {
                        return Ok(Epoch(e));
                    }
                    match st.stop {
                        Phase::Idle => return Ok(Epoch(e)),
                        Phase::Running => {
                            st = self.block(st, req, "stop to complete", |s| {
                                s.epoch != e || s.stop != Phase::Running
                            })?;
                        }
                        Phase::Done => {
                            // A restart: the stopped epoch is drained and cleaned up first.
                            if !mutated(Mutant::RestartSkipsDrain) {
                                st = self.finish(st, steps, req, e)?;
                            }
                            if st.epoch == e {
                                st.new_epoch();
                                self.changed.notify_all();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Serves the pinned epoch in the calling thread until it is stopped.
    pub(crate) fn execute(
        &self,
        steps: &impl Steps,
        req: &mut Request<'_>,
    ) -> Result<Epoch, ServerError> {
        let mut st = self.state.lock();
        let e = pin(req, &st)?;
        loop {
            if st.epoch != e || (st.execute == Phase::Done && st.stop == Phase::Done) {
                return Ok(Epoch(e));
            }
            if req.in_handler {
                return Err(ServerError::WouldDeadlock { call: req.call });
            }
            if st.start != Phase::Done {
                st = self.block(st, req, "start to complete", |s| {
                    s.epoch != e || s.start == Phase::Done
                })?;
                continue;
            }
            let phase = match st.execute {
                Phase::Running if mutated(Mutant::LoopRunsTwice) => Phase::Idle,
                Phase::Done if mutated(Mutant::ExecuteIgnoresStop) => return Ok(Epoch(e)),
                phase => phase,
            };
            match phase {
                Phase::Idle => {
                    st.execute = Phase::Running;
                    drop(st);
                    let deadline = req.deadline;
                    let serving = req.log_at.take();
                    let outcome = guarded(req.call, || {
                        steps
                            .execute(deadline)
                            .map_err(|WaitTimedOut| req.timed_out(SERVING))
                    });
                    st = self.state.lock();
                    // The epoch cannot end meanwhile: a restart waits for this body.
                    st.execute = if outcome.is_ok() {
                        Phase::Done
                    } else {
                        Phase::Idle
                    };
                    self.changed.notify_all();
                    outcome?;
                    req.resume_log_clock(serving);
                }
                Phase::Running => {
                    st = self.park(st, req, "another thread's execute() to return", |s| {
                        s.epoch != e || s.execute != Phase::Running
                    })?;
                }
                Phase::Done => {
                    st = self.park(st, req, "stop to complete", |s| {
                        s.epoch != e || s.stop == Phase::Done
                    })?;
                }
            }
        }
    }

    /// Blocks an `execute()` until `done`. While the epoch is served (started, its stop
    /// not begun) that is `execute()`'s job, not a hang: no warning, though the timeout
    /// still applies; once the stop began, it waits like any call.
    fn park<'g>(
        &'g self,
        st: Guard<'g>,
        req: &mut Request<'_>,
        waiting_for: &'static str,
        done: impl Fn(&State) -> bool,
    ) -> Result<Guard<'g>, ServerError> {
        if st.stop != Phase::Idle {
            return self.block(st, req, waiting_for, done);
        }
        let e = st.epoch;
        let serving = req.log_at.take();
        let st = self.block(st, req, SERVING, |s| {
            done(s) || s.epoch != e || s.stop != Phase::Idle
        })?;
        req.resume_log_clock(serving);
        Ok(st)
    }

    /// Stops the pinned epoch (waiting for it to be started first).
    pub(crate) fn stop(
        &self,
        steps: &impl Steps,
        req: &mut Request<'_>,
    ) -> Result<Epoch, ServerError> {
        let mut st = self.state.lock();
        let e = pin(req, &st)?;
        loop {
            if st.epoch != e {
                return Ok(Epoch(e));
            }
            if st.start != Phase::Done {
                st = self.block(st, req, "start to complete", |s| {
                    s.epoch != e || s.start == Phase::Done
                })?;
                continue;
            }
            match st.stop {
                Phase::Idle => {
                    st.stop = Phase::Running;
                    // Parked execute() calls stop serving and start waiting for it.
                    self.changed.notify_all();
                    drop(st);
                    let outcome = guarded(req.call, || {
                        steps.stop();
                        Ok(())
                    });
                    st = self.state.lock();
                    st.stop = if outcome.is_ok() {
                        Phase::Done
                    } else {
                        Phase::Idle
                    };
                    self.changed.notify_all();
                    return outcome.map(|()| Epoch(e));
                }
                Phase::Running => {
                    st = self.block(st, req, "another thread's stop to complete", |s| {
                        s.epoch != e || s.stop != Phase::Running
                    })?;
                }
                Phase::Done => return Ok(Epoch(e)),
            }
        }
    }

    /// Waits for the pinned epoch to be stopped and drained.
    pub(crate) fn wait(
        &self,
        steps: &impl Steps,
        req: &mut Request<'_>,
    ) -> Result<Epoch, ServerError> {
        let st = self.state.lock();
        let e = pin(req, &st)?;
        self.finish(st, steps, req, e).map(|_| Epoch(e))
    }

    /// Brings epoch `e` to `wait: Done` (or returns once a later epoch began).
    fn finish<'g>(
        &'g self,
        mut st: Guard<'g>,
        steps: &impl Steps,
        req: &mut Request<'_>,
        e: u64,
    ) -> Result<Guard<'g>, ServerError> {
        loop {
            if st.epoch != e || st.wait == Phase::Done {
                return Ok(st);
            }
            if req.in_handler {
                return Err(ServerError::WouldDeadlock { call: req.call });
            }
            if st.stop != Phase::Done {
                st = self.block(st, req, "stop to complete", |s| {
                    s.epoch != e || s.stop == Phase::Done
                })?;
                continue;
            }
            match st.execute {
                // Nobody is serving this epoch in their own thread (nobody did, or a
                // loop timed out, having finished every batch it took): there is no
                // loop to drain, and nothing polled is left behind.
                Phase::Idle => st.execute = Phase::Done,
                Phase::Running if !mutated(Mutant::WaitIgnoresExecute) => {
                    st = self.block(st, req, "execute() to return", |s| {
                        s.epoch != e || s.execute != Phase::Running
                    })?;
                    continue;
                }
                Phase::Running | Phase::Done => {}
            }
            match st.wait {
                Phase::Idle => {
                    st.wait = Phase::Running;
                    drop(st);
                    let outcome = guarded(req.call, || drain(steps, req, e));
                    st = self.state.lock();
                    st.wait = if outcome.is_ok() {
                        Phase::Done
                    } else {
                        Phase::Idle
                    };
                    self.changed.notify_all();
                    outcome?;
                    return Ok(st);
                }
                Phase::Running => {
                    st = self.block(st, req, "another thread's wait to complete", |s| {
                        s.epoch != e || s.wait != Phase::Running
                    })?;
                }
                Phase::Done => return Ok(st),
            }
        }
    }

    /// Waits on the condition variable until `done`, the call's deadline (an error) or
    /// its `log_after` (one "possible hang" warning per call).
    fn block<'g>(
        &'g self,
        mut st: Guard<'g>,
        req: &mut Request<'_>,
        waiting_for: &'static str,
        done: impl Fn(&State) -> bool,
    ) -> Result<Guard<'g>, ServerError> {
        loop {
            if done(&st) {
                return Ok(st);
            }
            let now = (req.deadline.is_some() || req.log_at.is_some()).then(Instant::now);
            if let Some(now) = now {
                // The warning comes first: a call that times out after waiting longer
                // than `log_after` has logged it, however late this thread woke up.
                req.warn_if_late(now, st.epoch, waiting_for);
                if req.deadline.is_some_and(|deadline| now >= deadline) {
                    return Err(req.timed_out(waiting_for));
                }
            }
            let wake_at = match (req.deadline, req.log_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            st = match (wake_at, now) {
                (Some(at), Some(now)) => self.changed.wait_timeout(st, at - now),
                _ => self.changed.wait(st),
            };
        }
    }
}

/// Runs the drain of epoch `e` in the calling thread, until done or the call's deadline,
/// logging the call's "possible hang" warning on the way if `log_after` passes first.
fn drain(steps: &impl Steps, req: &mut Request<'_>, e: u64) -> Result<(), ServerError> {
    loop {
        let until = match (req.deadline, req.log_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if steps.wait(until).is_ok() {
            return Ok(());
        }
        let now = Instant::now();
        req.warn_if_late(now, e, DRAINING);
        if req.deadline.is_some_and(|deadline| now >= deadline) {
            return Err(req.timed_out(DRAINING));
        }
    }
}

fn pin(req: &Request<'_>, st: &State) -> Result<u64, ServerError> {
    match req.pin {
        Some(pin) => {
            check_pin(req, st)?;
            Ok(pin.0)
        }
        None => Ok(st.epoch),
    }
}

fn check_pin(req: &Request<'_>, st: &State) -> Result<(), ServerError> {
    match req.pin {
        Some(pin) if pin.0 > st.epoch => Err(ServerError::UnknownEpoch {
            call: req.call,
            requested: pin,
            current: Epoch(st.epoch),
        }),
        _ => Ok(()),
    }
}

/// Runs a step body; a panic becomes [`ServerError::Panicked`] so the step can be reset.
fn guarded(call: Call, body: impl FnOnce() -> Result<(), ServerError>) -> Result<(), ServerError> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => Err(ServerError::Panicked {
            call,
            message: panic_message(&*payload),
        }),
    }
}

/// Deliberate bugs, switched on one at a time by the loom mutation checks
/// (`loom_tests`) to prove that the models catch them. Outside loom builds
/// [`mutated`] is always false and compiles away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mutant {
    /// A restart opens the new epoch without draining the stopped one.
    RestartSkipsDrain,
    /// A second `execute()` runs the loop while another thread's still runs.
    LoopRunsTwice,
    /// `execute()` returns once its body did, without waiting for the stop.
    ExecuteIgnoresStop,
    /// The drain begins while the blocking executor's loop still runs.
    WaitIgnoresExecute,
}

#[cfg(loom)]
std::thread_local! {
    /// The mutant in force on this thread (loom runs a model's threads on the thread
    /// that checks it).
    pub(crate) static MUTANT: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

#[cfg(loom)]
fn mutated(mutant: Mutant) -> bool {
    MUTANT.with(|m| m.get() == Some(mutant))
}

#[cfg(not(loom))]
#[inline(always)]
fn mutated(_: Mutant) -> bool {
    false
}

#[cfg(all(test, loom))]
#[path = "loom_tests.rs"]
mod loom_tests;
