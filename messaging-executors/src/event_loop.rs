//! [`EventLoopExecutor`]: handlers as tokio tasks, blocking work on tokio's blocking pool.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use messaging_core::{Dispatcher, Executor, ExecutorError, Listener, Polled, WaitTimedOut};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::common::{Backoff, dispatch};

/// Default limit of handlers running at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 256;

/// Runs handlers as tasks on a tokio runtime: async handlers are awaited without a
/// thread each, and blocking handlers ([`Dispatch::blocking`]) go to tokio's blocking
/// pool, so blocking work never stalls the runtime's worker threads.
///
/// * The listener is polled asynchronously by one task; it takes a message only when
///   fewer than `max_concurrency` handlers are running (backpressure).
/// * The runtime is the executor's own (built at the first `start()`, with
///   `worker_threads` threads, shut down when the executor is dropped) or one you
///   provide with [`with_handle`](EventLoopExecutor::with_handle).
/// * `wait()` returns when the listener has been drained and every handler task
///   has finished.
/// * Dropping the last handle of a server on this executor stops it and still runs
///   every handler already taken to completion, async ones included: the server
///   drains the epoch in the background before it drops the executor, and only then
///   is the executor's own runtime shut down. With a runtime you provide the handlers
///   are tasks on your runtime: they finish as long as it runs (shutting it down
///   first cancels them, and their callers see the reply channel close).
/// * A poll that fails (or panics) is logged and retried after a backoff, 10 ms
///   doubling to 1 s.
///
/// The server's lifecycle calls block the calling thread; from async code, call them
/// through `tokio::task::spawn_blocking`. Never make a handler of a server await that
/// server's `wait()` (through `spawn_blocking` or any other thread): the drain waits for
/// the handler, and the server can only detect the call when it is made on the
/// handler's own thread. With a runtime you provide, never block one of its threads on
/// `wait()` if it is a current-thread runtime: its tasks could not run.
///
/// [`Dispatch::blocking`]: messaging_core::Dispatch::blocking
///
/// # Examples
///
/// ```
/// use messaging_executors::EventLoopExecutor;
///
/// let executor = EventLoopExecutor::new().with_worker_threads(2).with_max_concurrency(100);
/// # let _ = executor;
/// ```
pub struct EventLoopExecutor {
    max_concurrency: usize,
    worker_threads: Option<usize>,
    handle: Option<Handle>,
    runtime: Mutex<Option<Runtime>>,
    run: Mutex<Option<Arc<Progress>>>,
}

#[derive(Debug, Default)]
struct Counts {
    poller_running: bool,
    in_flight: usize,
}

#[derive(Debug, Default)]
struct Progress {
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Progress {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts a handler as in flight until dropped (also when its task is cancelled).
struct InFlight {
    progress: Arc<Progress>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut c = self.progress.counts();
        c.in_flight -= 1;
        if c.in_flight == 0 {
            self.progress.changed.notify_all();
        }
    }
}

/// Marks the poller as finished, even if its task is cancelled.
struct PollerDone(Arc<Progress>);

impl Drop for PollerDone {
    fn drop(&mut self) {
        self.0.counts().poller_running = false;
        self.0.changed.notify_all();
    }
}

impl Default for EventLoopExecutor {
    fn default() -> Self {
        EventLoopExecutor::new()
    }
}

impl EventLoopExecutor {
    /// An executor with its own multi-threaded runtime (one worker per core).
    pub fn new() -> Self {
        EventLoopExecutor {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            worker_threads: None,
            handle: None,
            runtime: Mutex::new(None),
            run: Mutex::new(None),
        }
    }

    /// An executor that spawns onto an existing runtime. The runtime must outlive the
    /// server's epochs; if it shuts down first, the handlers still queued are dropped.
    pub fn with_handle(handle: Handle) -> Self {
        let mut executor = EventLoopExecutor::new();
        executor.handle = Some(handle);
        executor
    }

    /// Worker threads of the executor's own runtime (ignored with
    /// [`with_handle`](EventLoopExecutor::with_handle)).
    pub fn with_worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = Some(threads.max(1));
        self
    }

    /// At most `limit` handlers run at once (at least 1).
    pub fn with_max_concurrency(mut self, limit: usize) -> Self {
        self.max_concurrency = limit.max(1);
        self
    }

    fn handle(&self) -> Result<Handle, ExecutorError> {
        if let Some(handle) = &self.handle {
            return Ok(handle.clone());
        }
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = runtime.as_ref() {
            return Ok(rt.handle().clone());
        }
        let mut builder = Builder::new_multi_thread();
        builder.thread_name("messaging-event-loop").enable_all();
        if let Some(threads) = self.worker_threads {
            builder.worker_threads(threads);
        }
        let rt = builder
            .build()
            .map_err(|e| ExecutorError::with_source("could not build the tokio runtime", e))?;
        let handle = rt.handle().clone();
        *runtime = Some(rt);
        Ok(handle)
    }

    fn run(&self) -> MutexGuard<'_, Option<Arc<Progress>>> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn poll_loop(
    handle: Handle,
    listener: Arc<dyn Listener>,
    dispatcher: Arc<dyn Dispatcher>,
    progress: Arc<Progress>,
    limit: Arc<Semaphore>,
) {
    let _done = PollerDone(progress.clone());
    let mut backoff = Backoff::new();
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return; // never closed
        };
        match listener.poll_async().await {
            Ok(Polled::Messages(batch)) => {
                backoff.reset();
                let Some(work) = dispatch(&*dispatcher, batch) else {
                    continue;
                };
                progress.counts().in_flight += 1;
                let in_flight = InFlight {
                    progress: progress.clone(),
                    _permit: permit,
                };
                if work.is_blocking() {
                    handle.spawn_blocking(move || {
                        work.run();
                        drop(in_flight);
                    });
                } else {
                    handle.spawn(async move {
                        work.into_future().await;
                        drop(in_flight);
                    });
                }
            }
            Ok(Polled::Idle) => {}
            Ok(Polled::Closed) => return,
            Err(error) => tokio::time::sleep(backoff.after("event-loop", &error)).await,
        }
    }
}

impl Executor for EventLoopExecutor {
    fn name(&self) -> &'static str {
        "event-loop"
    }

    fn start(
        &self,
        listener: Arc<dyn Listener>,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Result<(), ExecutorError> {
        let handle = self.handle()?;
        let progress = Arc::new(Progress::default());
        progress.counts().poller_running = true;
        let limit = Arc::new(Semaphore::new(self.max_concurrency));
        handle.spawn(poll_loop(
            handle.clone(),
            listener,
            dispatcher,
            progress.clone(),
            limit,
        ));
        *self.run() = Some(progress);
        Ok(())
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        let Some(progress) = self.run().clone() else {
            return Ok(());
        };
        let mut c = progress.counts();
        while c.poller_running || c.in_flight > 0 {
            c = match deadline {
                None => progress.changed.wait(c).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(WaitTimedOut);
                    }
                    progress
                        .changed
                        .wait_timeout(c, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        drop(c);
        self.run().take();
        Ok(())
    }
}

impl Drop for EventLoopExecutor {
    /// Shuts the executor's own runtime down without blocking. A server drops its
    /// executor only once its last epoch was drained, so no handler is cut short; an
    /// executor dropped with tasks still on its runtime would cancel them.
    fn drop(&mut self) {
        if let Some(rt) = self
            .runtime
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            // Never blocks, so dropping the executor is safe even inside async code.
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for EventLoopExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoopExecutor")
            .field("max_concurrency", &self.max_concurrency)
            .field("worker_threads", &self.worker_threads)
            .field("external_runtime", &self.handle.is_some())
            .finish_non_exhaustive()
    }
}
