//! Where commands write, and how they are told to stop.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A shared, line-oriented writer (stdout, stderr, or a buffer in tests). Lines are
/// written whole and flushed, so lines from several threads never interleave.
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

    /// Writes one line and flushes.
    pub fn line(&self, line: &str) {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(w, "{line}");
        let _ = w.flush();
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

/// Tells `serve`, `listen` and `simulate` to stop (the binary triggers it on
/// SIGINT/SIGTERM).
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Shutdown {
    /// A shutdown not yet triggered.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Triggers it.
    pub fn trigger(&self) {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.inner.1.notify_all();
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until triggered or `timeout` passed; returns whether it was triggered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let triggered = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
        let (triggered, _) = self
            .inner
            .1
            .wait_timeout_while(triggered, timeout, |triggered| !*triggered)
            .unwrap_or_else(|p| p.into_inner());
        *triggered
    }

    /// Blocks until triggered.
    pub fn wait(&self) {
        let mut triggered = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*triggered {
            triggered = self
                .inner
                .1
                .wait_timeout(triggered, Duration::from_secs(3600))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
