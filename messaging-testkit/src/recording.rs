//! [`RecordingExecutor`]: wraps any executor, records the lifecycle calls it receives,
//! and can hold or fail `start` on request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use messaging_core::{Dispatcher, Executor, ExecutorError, Listener, WaitTimedOut};

use crate::fixtures::Latch;

/// The shared record of a [`RecordingExecutor`]. Cloneable; keep one to inspect the
/// executor after handing it to a server.
#[derive(Clone, Debug, Default)]
pub struct ExecutorLog {
    calls: Arc<Mutex<Vec<&'static str>>>,
    hold: Arc<Mutex<Option<(Latch, Latch)>>>,
    hold_stop: Arc<Mutex<Option<(Latch, Latch)>>>,
    fail_next_start: Arc<AtomicBool>,
    panic_next_start: Arc<AtomicBool>,
}

impl ExecutorLog {
    /// The calls received, in order: `start`, `execute`, `stop`, `wait`, and
    /// `start-failed` or `start-panicked` for an injected failure.
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many times `name` was called.
    pub fn count(&self, name: &str) -> usize {
        self.calls().iter().filter(|c| **c == name).count()
    }

    /// The next `start` blocks inside the executor until `release` is opened;
    /// `entered` opens when it gets there.
    pub fn hold_next_start(&self) -> (Latch, Latch) {
        let latches = (Latch::new(), Latch::new());
        *self.hold.lock().unwrap_or_else(|p| p.into_inner()) = Some(latches.clone());
        latches
    }

    /// The next `stop` blocks inside the executor (after the server stopped the
    /// listener) until `release` is opened; `entered` opens when it gets there. The
    /// server's `stop()` is then in progress.
    pub fn hold_next_stop(&self) -> (Latch, Latch) {
        let latches = (Latch::new(), Latch::new());
        *self.hold_stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(latches.clone());
        latches
    }

    /// The next `start` fails with an [`ExecutorError`] before starting anything.
    pub fn fail_next_start(&self) {
        self.fail_next_start.store(true, Ordering::SeqCst);
    }

    /// The next `start` panics before starting anything, as a buggy executor might.
    pub fn panic_next_start(&self) {
        self.panic_next_start.store(true, Ordering::SeqCst);
    }

    fn push(&self, call: &'static str) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }
}

/// An executor that records the lifecycle calls it receives and passes them on.
///
/// # Examples
///
/// ```
/// use messaging_executors::BlockingExecutor;
/// use messaging_testkit::RecordingExecutor;
///
/// let (executor, log) = RecordingExecutor::wrap(Box::new(BlockingExecutor::new()));
/// assert!(log.calls().is_empty());
/// # let _ = executor;
/// ```
#[derive(Debug)]
pub struct RecordingExecutor {
    inner: Box<dyn Executor>,
    log: ExecutorLog,
}

impl RecordingExecutor {
    /// Wraps `inner`, returning the wrapper and its log.
    pub fn wrap(inner: Box<dyn Executor>) -> (RecordingExecutor, ExecutorLog) {
        let log = ExecutorLog::default();
        (
            RecordingExecutor {
                inner,
                log: log.clone(),
            },
            log,
        )
    }
}

impl Executor for RecordingExecutor {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn start(
        &self,
        listener: Arc<dyn Listener>,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Result<(), ExecutorError> {
        if self.log.fail_next_start.swap(false, Ordering::SeqCst) {
            self.log.push("start-failed");
            return Err(ExecutorError::new("injected start failure"));
        }
        if self.log.panic_next_start.swap(false, Ordering::SeqCst) {
            self.log.push("start-panicked");
            panic!("injected fault: the executor's start panicked");
        }
        self.log.push("start");
        hold(&self.log.hold);
        self.inner.start(listener, dispatcher)
    }

    fn execute(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        self.log.push("execute");
        self.inner.execute(deadline)
    }

    fn stop(&self) {
        self.log.push("stop");
        hold(&self.log.hold_stop);
        self.inner.stop();
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        self.log.push("wait");
        self.inner.wait(deadline)
    }
}

/// Blocks in a held call if one was asked for (see [`ExecutorLog::hold_next_start`]).
fn hold(slot: &Mutex<Option<(Latch, Latch)>>) {
    let held = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((entered, release)) = held {
        entered.open();
        release.wait(std::time::Duration::from_secs(120));
    }
}
