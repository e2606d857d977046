//! [`BlockingExecutor`]: the dispatch loop runs in the thread that calls `execute()`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use messaging_core::{Dispatcher, Executor, ExecutorError, Listener, Polled, WaitTimedOut};

use crate::common::{Backoff, dispatch};

/// Processes messages one batch at a time in the thread that calls
/// [`Server::execute`](messaging_core::Server::execute), in the order received: the
/// seed's design, where `start()` is set-up only and `execute()` is the loop.
///
/// * `start()` attaches the listener and returns; nothing is processed yet.
/// * `execute()` polls and dispatches in the calling thread until `stop()`; then it
///   drains what the listener had taken and returns. With a timeout it returns
///   `Timeout` at the deadline, after the batch in hand (a handler is never
///   interrupted); until the next `execute()` nothing is taken.
/// * A poll that fails (or panics) is logged and retried after a backoff, 10 ms
///   doubling to 1 s.
/// * `stop()` may come from any thread, including from inside a handler (the loop sees
///   the listener closed after the handler returns).
/// * `wait()` from another thread returns once the loop has returned.
///
/// If `execute()` is never called, no message is taken: they stay queued on the
/// transport.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use messaging_core::{Dispatch, IncomingMessage, Server, Subscription, Target};
/// use messaging_executors::BlockingExecutor;
/// use messaging_transports::memory::MemoryTransport;
///
/// let transport = Arc::new(MemoryTransport::new());
/// let server = Server::builder(
///     transport,
///     Subscription::Rpc(Target::new("demo").with_server("s1")),
///     |batch: Vec<IncomingMessage>| Dispatch::blocking(move || drop(batch)),
///     BlockingExecutor::new(),
/// )
/// .build()?;
/// server.start()?;
/// let handle = server.clone();
/// let serving = std::thread::spawn(move || handle.execute());
/// server.stop()?;
/// server.wait()?;
/// serving.join().unwrap()?;
/// # Ok::<(), messaging_core::ServerError>(())
/// ```
#[derive(Default)]
pub struct BlockingExecutor {
    run: Mutex<Option<Run>>,
}

struct Run {
    listener: Arc<dyn Listener>,
    dispatcher: Arc<dyn Dispatcher>,
}

impl BlockingExecutor {
    /// A blocking executor.
    pub fn new() -> Self {
        BlockingExecutor::default()
    }

    fn current(&self) -> Option<(Arc<dyn Listener>, Arc<dyn Dispatcher>)> {
        self.run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|run| (run.listener.clone(), run.dispatcher.clone()))
    }
}

impl Executor for BlockingExecutor {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn start(
        &self,
        listener: Arc<dyn Listener>,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Result<(), ExecutorError> {
        *self.run.lock().unwrap_or_else(|p| p.into_inner()) = Some(Run {
            listener,
            dispatcher,
        });
        Ok(())
    }

    fn execute(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        let Some((listener, dispatcher)) = self.current() else {
            return Ok(());
        };
        let mut backoff = Backoff::new();
        loop {
            // Checked between batches: a handler running here is never interrupted.
            let left = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(WaitTimedOut),
                },
            };
            match listener.poll(left) {
                Ok(Polled::Messages(batch)) => {
                    backoff.reset();
                    if let Some(work) = dispatch(&*dispatcher, batch) {
                        work.run();
                    }
                }
                Ok(Polled::Idle) => {}
                Ok(Polled::Closed) => return Ok(()),
                Err(error) => {
                    let delay = backoff.after(self.name(), &error);
                    thread::sleep(left.map_or(delay, |left| delay.min(left)));
                }
            }
        }
    }

    fn wait(&self, _deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        // The server calls this only after execute() returned (or was skipped): the loop
        // has drained, and there is nothing else to join.
        self.run.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }
}

impl fmt::Debug for BlockingExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingExecutor").finish_non_exhaustive()
    }
}
