//! Watchdogs: a deadlock fails the test instead of hanging CI.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long a conformance scenario may take before it is declared hung.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and returns its result; panics with a clear message if it
/// has not finished within `limit` (the hung thread is abandoned), and re-raises its
/// panic if it panicked.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let four = messaging_testkit::within(Duration::from_secs(5), "adding", || 2 + 2);
/// assert_eq!(four, 4);
/// ```
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(format!("watchdog: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a watched thread");
    match rx.recv_timeout(limit) {
        Ok(value) => {
            let _ = handle.join();
            value
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("deadlock: {what} did not finish within {limit:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the watched thread sends before it ends"),
        },
    }
}

/// A thread whose result is collected with a deadline.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use messaging_testkit::Watched;
///
/// let mut t = Watched::spawn("answer", || 42);
/// assert!(t.is_running() || t.is_finished());
/// assert_eq!(t.join(Duration::from_secs(5)), 42);
/// ```
#[derive(Debug)]
pub struct Watched<T> {
    what: String,
    rx: mpsc::Receiver<thread::Result<T>>,
    done: Option<thread::Result<T>>,
}

impl<T: Send + 'static> Watched<T> {
    /// Spawns `f` on a new thread.
    pub fn spawn(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name(what.to_owned())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                let _ = tx.send(result);
            })
            .expect("spawn a watched thread");
        Watched {
            what: what.to_owned(),
            rx,
            done: None,
        }
    }

    fn check(&mut self, wait: Duration) -> bool {
        if self.done.is_none()
            && let Ok(result) = self.rx.recv_timeout(wait)
        {
            self.done = Some(result);
        }
        self.done.is_some()
    }

    /// Whether the thread has finished (without waiting).
    pub fn is_finished(&mut self) -> bool {
        self.check(Duration::ZERO)
    }

    /// Whether the thread is still running after `grace` (so it is most likely blocked).
    pub fn still_running_after(&mut self, grace: Duration) -> bool {
        !self.check(grace)
    }

    /// Whether the thread is still running (without waiting).
    pub fn is_running(&mut self) -> bool {
        !self.is_finished()
    }

    /// The thread's result; panics if it takes longer than `limit` (a deadlock) and
    /// re-raises the thread's panic.
    pub fn join(mut self, limit: Duration) -> T {
        if !self.check(limit) {
            panic!("deadlock: {} did not finish within {limit:?}", self.what);
        }
        match self.done.take().expect("checked above") {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
