//! Where commands write, and how they are told to stop.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A shared, line-oriented writer (stdout, stderr, or a buffer in tests). Lines are
/// written whole and flushed, so lines from several threads never interleave.
///
/// Results (stdout) go through [`line`](Output::line), whose error the command must
/// act on: output that was not written is a failure, never a success. Diagnostics
/// (stderr) go through [`note`](Output::note), which has nowhere left to report a
/// failure.
#[derive(Clone)]
pub struct Output {
    inner: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Output {
    /// Wraps a writer.
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Output {
            inner: Arc::new(Mutex::new(Box::new(writer))),
        }
    }

    /// Writes one line and flushes it. `Ok` means the whole line reached the writer's
    /// destination (the pipe, file or terminal); an error (a closed pipe, a full disk)
    /// means it may not have, wholly or at all.
    pub fn line(&self, line: &str) -> std::io::Result<()> {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(w, "{line}")?;
        w.flush()
    }

    /// [`line`](Output::line) for diagnostics (progress, errors on stderr): a failure
    /// to write is ignored, as there is nowhere left to report it.
    pub fn note(&self, line: &str) {
        let _ = self.line(line);
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

/// Tells commands to stop: the binary calls [`trigger`](Shutdown::trigger) once per
/// SIGINT/SIGTERM.
///
/// The first request asks `serve`, `listen` and the `simulate` servers to stop taking
/// messages and drain; a further request while they drain means "exit at once". `call`,
/// `cast` and `notify` abandon their send on the first request; the `simulate` clients
/// abandon theirs. A command reading a JSON argument or starting a server (connecting)
/// fails at once with "interrupted". (The binary also exits by itself shortly after a
/// second request that the command did not answer.)
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    /// `state.requests`, readable without the lock (hot loops poll it).
    requests: AtomicU32,
}

#[derive(Debug, Default)]
struct State {
    requests: u32,
    /// Futures waiting for the first request ([`Shutdown::requested`]).
    wakers: Vec<Waker>,
}

impl Shutdown {
    /// A shutdown not yet triggered.
    pub fn new() -> Self {
        Shutdown::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one stop request and wakes everything waiting for one. Safe from any
    /// thread, any number of times.
    pub fn trigger(&self) {
        let wakers = {
            let mut state = self.state();
            state.requests = state.requests.saturating_add(1);
            self.inner.requests.store(state.requests, Ordering::SeqCst);
            std::mem::take(&mut state.wakers)
        };
        self.inner.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// How many stop requests were made so far (lock-free).
    pub fn requests(&self) -> u32 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Whether a stop was requested.
    pub fn is_triggered(&self) -> bool {
        self.requests() > 0
    }

    /// Blocks until a stop is requested or `timeout` passed; returns whether one was
    /// requested.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        self.wait_until(deadline, |requests| requests > 0) > 0
    }

    /// Blocks until a stop is requested.
    pub fn wait(&self) {
        self.wait_until(None, |requests| requests > 0);
    }

    /// Blocks until `done(requests)` holds or `deadline` passed; `done` is evaluated
    /// again at each request and each [`wake`](Shutdown::wake). Returns the number of
    /// requests.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>, done: impl Fn(u32) -> bool) -> u32 {
        let mut state = self.state();
        loop {
            if done(state.requests) {
                return state.requests;
            }
            state = match deadline {
                None => self
                    .inner
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return state.requests;
                    }
                    self.inner
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Wakes the threads in [`wait_until`](Shutdown::wait_until) to evaluate their
    /// condition again, without requesting anything. Whatever the condition reads must
    /// be set before this is called.
    pub(crate) fn wake(&self) {
        drop(self.state());
        self.inner.changed.notify_all();
    }

    /// A future that completes at the first stop request (at once if there was one).
    pub(crate) fn requested(&self) -> Requested {
        Requested {
            shutdown: self.clone(),
        }
    }
}

/// The future of [`Shutdown::requested`].
#[derive(Debug)]
pub(crate) struct Requested {
    shutdown: Shutdown,
}

impl Future for Requested {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.shutdown.state();
        if state.requests > 0 {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
