//! The [`Executor`] trait: how a server's messages get processed.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::dispatch::Dispatcher;
use crate::error::ExecutorError;
use crate::transport::Listener;

/// The deadline given to [`Executor::execute`] or [`Executor::wait`] passed first: the
/// loop is still serving, or the drain still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the deadline passed first")]
pub struct WaitTimedOut;

/// Takes messages from a listener and runs the dispatched work: in the calling thread
/// ([`BlockingExecutor`]), on a pool of threads, or as async tasks.
///
/// A [`Server`](crate::Server) drives its executor through one epoch at a time, calling
/// each method from whatever thread made the corresponding server call:
///
/// 1. [`start`](Executor::start) exactly once per epoch, first;
/// 2. [`execute`](Executor::execute) after `start`, by one thread at a time,
///    repeatedly if it times out, until it returns `Ok` (or never);
/// 3. [`stop`](Executor::stop) exactly once, after `start` (possibly while `execute`
///    runs in another thread, possibly from inside a handler), right after the
///    listener was stopped;
/// 4. [`wait`](Executor::wait) after `stop` and after `execute` returned (or was skipped),
///    repeatedly if it times out, until it returns `Ok`;
/// 5. then `start` again for the next epoch.
///
/// The server owns the listener's lifecycle (stop, cleanup); the executor only polls it.
/// The listener it gets is the server's guard around the transport's: a poll that
/// panics comes back as an error, and after `stop` a failing poll reports
/// [`Polled::Closed`](crate::Polled::Closed). An executor must handle a poll error by
/// logging it and polling again after a backoff, never by ending its loop: the server
/// counts the failures (`ServerState::failed_polls`) and stays up.
///
/// Executors never hold the server's lock, so their methods may block as documented.
/// A server drops its executor only after its last epoch was drained (a server
/// dropped while running drains it in the background first), so an executor may
/// release its threads or runtime on drop.
///
/// [`BlockingExecutor`]: https://docs.rs/messaging-executors
pub trait Executor: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and errors, e.g. `thread-pool`.
    fn name(&self) -> &'static str;

    /// Sets up for one epoch: from now on, messages polled from `listener` are given to
    /// `dispatcher` and their work is run. Must return as soon as set-up is complete and
    /// never block on message processing. On error nothing may be left running.
    fn start(
        &self,
        listener: Arc<dyn Listener>,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Result<(), ExecutorError>;

    /// Runs the dispatch loop in the calling thread until the listener is closed
    /// (`Ok`) or `deadline` passes ([`WaitTimedOut`], checked between batches: a
    /// handler is never interrupted), for executors that have one (the blocking
    /// executor). After a timeout the epoch goes on, nothing is taken meanwhile, and a
    /// later call resumes the loop. Executors without a loop return `Ok` at once (the
    /// default).
    fn execute(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        let _ = deadline;
        Ok(())
    }

    /// Called right after the listener was stopped; must not wait for handlers. The
    /// default does nothing: executors finish when their listener reports closed.
    fn stop(&self) {}

    /// Waits until everything polled in this epoch has been processed and every thread
    /// or task the executor started for it has finished, or until `deadline`. Returning
    /// [`WaitTimedOut`] must leave the drain going, so that a later call can wait for
    /// the rest.
    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut>;
}

impl<E: Executor + ?Sized> Executor for Box<E> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn start(
        &self,
        listener: Arc<dyn Listener>,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Result<(), ExecutorError> {
        (**self).start(listener, dispatcher)
    }

    fn execute(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        (**self).execute(deadline)
    }

    fn stop(&self) {
        (**self).stop();
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        (**self).wait(deadline)
    }
}
