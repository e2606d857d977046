//! [`GuardedListener`]: the server's wrapper around a transport's listener, so that a
//! transport that panics can wedge no lifecycle step and a deaf server shows.
//!
//! * A poll that panics is turned into the error a failing poll returns, so every
//!   executor handles both alike: it logs the error and polls again after a backoff.
//! * Consecutive failed polls (errors or panics) are counted, for
//!   [`ServerState::failed_polls`](super::ServerState::failed_polls).
//! * Once the server stopped the listener, a poll that fails ends the drain
//!   ([`Polled::Closed`]) instead of being retried forever: a failing listener cannot
//!   hand out anything more, and `cleanup()` gives back what it held.
//! * A `stop()` or `cleanup()` that panics is logged and counts as done; after a
//!   panicking `stop()` the listener hands out nothing more (what a poll blocked at
//!   the time takes is requeued). Such a poll cannot be woken from here: it returns
//!   when a message arrives, so `wait()` may end only at its timeout.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{TransportError, panic_message};
use crate::transport::{Listener, Polled};

#[derive(Debug)]
pub(crate) struct GuardedListener {
    inner: Box<dyn Listener>,
    server: String,
    failed_polls: AtomicU64,
    /// The server called `stop()`.
    stopped: AtomicBool,
    /// Nothing more is handed out: the drain ended on a failure, or `stop()` panicked.
    closed: AtomicBool,
}

impl GuardedListener {
    pub(crate) fn new(inner: Box<dyn Listener>, server: &str) -> Self {
        GuardedListener {
            inner,
            server: server.to_owned(),
            failed_polls: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Consecutive polls that failed since the last one that succeeded.
    pub(crate) fn failed_polls(&self) -> u64 {
        self.failed_polls.load(Ordering::Relaxed)
    }

    fn outcome(
        &self,
        outcome: std::thread::Result<Result<Polled, TransportError>>,
    ) -> Result<Polled, TransportError> {
        let error = match outcome {
            Ok(Ok(Polled::Messages(batch))) if self.closed.load(Ordering::SeqCst) => {
                // Taken by a poll that was blocked when `stop()` panicked: not handed
                // out after the stop, but given back.
                for message in batch {
                    let _ = message.requeue();
                }
                return Ok(Polled::Closed);
            }
            Ok(Ok(polled)) => {
                self.failed_polls.store(0, Ordering::Relaxed);
                return Ok(polled);
            }
            Ok(Err(error)) => error,
            Err(payload) => TransportError::other(format!(
                "the listener panicked while polling: {}",
                panic_message(&*payload)
            )),
        };
        self.failed_polls.fetch_add(1, Ordering::Relaxed);
        if !self.stopped.load(Ordering::SeqCst) {
            // The executor logs it and polls again after a backoff.
            return Err(error);
        }
        tracing::error!(
            server = %self.server,
            %error,
            "polling the stopped listener failed: the drain ends here; what the listener \
             still holds goes back to the transport at cleanup"
        );
        self.closed.store(true, Ordering::SeqCst);
        Ok(Polled::Closed)
    }
}

#[async_trait]
impl Listener for GuardedListener {
    fn poll(&self, timeout: Option<Duration>) -> Result<Polled, TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(Polled::Closed);
        }
        self.outcome(catch_unwind(AssertUnwindSafe(|| self.inner.poll(timeout))))
    }

    async fn poll_async(&self) -> Result<Polled, TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(Polled::Closed);
        }
        let polled = match catch_unwind(AssertUnwindSafe(|| self.inner.poll_async())) {
            Ok(future) => CatchUnwind(future).await,
            Err(payload) => Err(payload),
        };
        self.outcome(polled)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.inner.stop())) {
            tracing::error!(
                server = %self.server,
                panic = %panic_message(&*payload),
                "the listener panicked while stopping: it hands out nothing more (a poll \
                 blocked inside it returns when a message arrives, which goes back)"
            );
            self.closed.store(true, Ordering::SeqCst);
        }
    }

    fn cleanup(&self) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.inner.cleanup())) {
            tracing::error!(
                server = %self.server,
                panic = %panic_message(&*payload),
                "the listener panicked while cleaning up"
            );
        }
    }
}

/// A future whose panics, when polled, become its output.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}
