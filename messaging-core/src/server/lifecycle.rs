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
//!   it to end, callers that find it `Done` return at once;
//! * `execute` and `stop` wait for `start`; `wait` waits for `stop` and for `execute`;
//! * a failed `start` goes back to `Idle` (the server stays startable) and its error is
//!   handed to every caller that waited on that attempt;
//! * a `wait` body that times out goes back to `Idle`, so a later `wait` resumes the drain;
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
    fn execute(&self);
    fn stop(&self);
    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut>;
}

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
                            st = self.finish(st, steps, req, e)?;
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
            if st.epoch != e || st.execute == Phase::Done {
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
            match st.execute {
                Phase::Idle => {
                    st.execute = Phase::Running;
                    drop(st);
                    let outcome = guarded(req.call, || {
                        steps.execute();
                        Ok(())
                    });
                    st = self.state.lock();
                    if let Err(err) = outcome {
                        st.execute = Phase::Idle;
                        self.changed.notify_all();
                        return Err(err);
                    }
                    // Serving lasts until the epoch is stopped. The epoch cannot end
                    // meanwhile: a restart first waits for this step to be done.
                    while st.stop != Phase::Done {
                        st = self.changed.wait(st);
                    }
                    st.execute = Phase::Done;
                    self.changed.notify_all();
                    return Ok(Epoch(e));
                }
                Phase::Running => {
                    st = self.block(st, req, "another thread's execute() to return", |s| {
                        s.epoch != e || s.execute != Phase::Running
                    })?;
                }
                Phase::Done => return Ok(Epoch(e)),
            }
        }
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
                // Nobody served this epoch in their own thread: there is no loop to
                // drain, and nothing polled is left behind.
                Phase::Idle => st.execute = Phase::Done,
                Phase::Running => {
                    st = self.block(st, req, "execute() to return", |s| {
                        s.epoch != e || s.execute != Phase::Running
                    })?;
                    continue;
                }
                Phase::Done => {}
            }
            match st.wait {
                Phase::Idle => {
                    st.wait = Phase::Running;
                    drop(st);
                    let deadline = req.deadline;
                    let outcome = guarded(req.call, || {
                        steps
                            .wait(deadline)
                            .map_err(|WaitTimedOut| ServerError::Timeout {
                                call: req.call,
                                waiting_for: "in-flight messages to finish",
                                timeout: req.timeout.unwrap_or_default(),
                            })
                    });
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
            // The warning comes first: a call that times out after waiting longer than
            // `log_after` has logged it, however late this thread woke up.
            if let (Some(log_at), Some(now)) = (req.log_at, now)
                && now >= log_at
            {
                tracing::warn!(
                    server = req.server,
                    epoch = st.epoch,
                    waited = ?req.log_after.unwrap_or_default(),
                    "possible hang: {} is waiting for {}",
                    req.call,
                    waiting_for,
                );
                req.log_at = None;
            }
            if let (Some(deadline), Some(now)) = (req.deadline, now)
                && now >= deadline
            {
                return Err(ServerError::Timeout {
                    call: req.call,
                    waiting_for,
                    timeout: req.timeout.unwrap_or_default(),
                });
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

#[cfg(all(test, loom))]
#[path = "loom_tests.rs"]
mod loom_tests;
