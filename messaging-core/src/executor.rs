//! The [`Executor`] trait: how a server's messages get processed.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::dispatch::Dispatcher;
use crate::error::ExecutorError;
use crate::transport::Listener;

/// The executor is still draining when a [`Executor::wait`] deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("in-flight messages still running")]
pub struct WaitTimedOut;

/// Takes messages from a listener and runs the dispatched work: in the calling thread
/// ([`BlockingExecutor`]), on a pool of threads, or as async tasks.
///
/// A [`Server`](crate::Server) drives its executor through one epoch at a time, calling
/// each method from whatever thread made the corresponding server call:
///
/// 1. [`start`](Executor::start) exactly once per epoch, first;
/// 2. [`execute`](Executor::execute) at most once, after `start`;
/// 3. [`stop`](Executor::stop) exactly once, after `start` (possibly while `execute`
///    runs in another thread, possibly from inside a handler), right after the
///    listener was stopped;
/// 4. [`wait`](Executor::wait) after `stop` and after `execute` returned (or was skipped),
///    repeatedly if it times out, until it returns `Ok`;
/// 5. then `start` again for the next epoch.
///
/// The server owns the listener's lifecycle (stop, cleanup); the executor only polls it.
/// Executors never hold the server's lock, so their methods may block as documented.
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

    /// Runs the dispatch loop in the calling thread until the listener is closed, for
    /// executors that have one (the blocking executor); others return at once (the
    /// default).
    fn execute(&self) {}

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

    fn execute(&self) {
        (**self).execute();
    }

    fn stop(&self) {
        (**self).stop();
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        (**self).wait(deadline)
    }
}
