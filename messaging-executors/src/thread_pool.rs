//! [`ThreadPoolExecutor`]: a poller thread feeding a bounded queue drained by up to
//! `max_workers` threads.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use messaging_core::{
    Dispatch, Dispatcher, Executor, ExecutorError, Listener, Polled, WaitTimedOut, timer,
};

use crate::common::{Backoff, dispatch};

/// oslo.messaging's `executor_thread_pool_size` default.
pub const DEFAULT_MAX_WORKERS: usize = 64;
/// Default capacity of the queue between the poller and the workers.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;

/// How long queued work may sit with no worker taking anything before the pool adds a
/// worker beyond one per core (also how often the pool looks).
pub const STALL: Duration = Duration::from_millis(10);

/// Runs handlers concurrently on a pool of threads, like oslo.messaging's threading
/// executor, but with a bounded queue: when every worker is busy and the queue is full,
/// the poller stops taking messages from the transport (backpressure) instead of piling
/// them up in memory.
///
/// * `start()` spawns the poller thread and returns; workers are spawned on demand, up
///   to `max_workers`, so an idle server holds two threads at most.
/// * Growth: while work is queued and no worker is idle, a worker is added at once up to
///   one per CPU core; beyond that, only once the queue has not moved for [`STALL`]
///   (every worker is blocked in a handler). Quick handlers are thus run by a few busy
///   threads instead of 64 contending ones, and slow, blocking handlers still get up
///   to `max_workers` threads, one more per [`STALL`] while the queue is stuck.
/// * No ordering guarantee between messages (they run concurrently).
/// * `wait()` returns when the poller has drained the stopped listener, the queue is
///   empty and every worker has finished its handler and exited; it joins every thread
///   it started, so a restart never leaks them. A server dropped while running does
///   this in the background: every message taken is still processed.
/// * A poll that fails (or panics) is logged and retried after a backoff, 10 ms
///   doubling to 1 s.
///
/// # Examples
///
/// ```
/// use messaging_executors::ThreadPoolExecutor;
///
/// let executor = ThreadPoolExecutor::new().with_max_workers(8).with_queue_capacity(16);
/// assert_eq!(executor.max_workers(), 8);
/// ```
pub struct ThreadPoolExecutor {
    max_workers: usize,
    queue_capacity: usize,
    run: Mutex<Option<Run>>,
}

struct Run {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Counts {
    poller_running: bool,
    /// Threads started in this epoch and not yet exited (poller included).
    alive: usize,
    workers: usize,
    idle: usize,
    queued: usize,
    /// Work items workers have taken from the queue, ever: progress.
    taken: u64,
}

struct Shared {
    counts: Mutex<Counts>,
    changed: Condvar,
    handles: Mutex<Vec<JoinHandle<()>>>,
    max_workers: usize,
    /// Workers added without waiting for a stall: one per core.
    eager_workers: usize,
}

/// What the poller saw the last time work was queued with no idle worker.
#[derive(Debug, Default)]
struct Stall {
    since: Option<(Instant, u64)>,
}

impl Shared {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(
        self: &Arc<Self>,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        self.counts().alive += 1;
        let shared = self.clone();
        let spawned = thread::Builder::new().name(name.to_owned()).spawn(move || {
            let _exit = ExitGuard(shared);
            body();
        });
        match spawned {
            Ok(handle) => {
                self.handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(handle);
                Ok(())
            }
            Err(error) => {
                self.counts().alive -= 1;
                self.changed.notify_all();
                Err(error)
            }
        }
    }

    /// Decides whether to add a worker: at once while there are fewer than one per
    /// core, otherwise when the queue has not moved for [`STALL`].
    fn should_grow(&self, stall: &mut Stall) -> bool {
        let mut c = self.counts();
        // The stall timer may fire once more after the poller is gone: grow no more.
        if !c.poller_running || c.queued <= c.idle || c.workers >= self.max_workers {
            stall.since = None;
            return false;
        }
        let grow = c.workers < self.eager_workers
            || match stall.since {
                Some((since, taken)) if taken == c.taken => since.elapsed() >= STALL,
                _ => {
                    stall.since = Some((Instant::now(), c.taken));
                    false
                }
            };
        if grow {
            c.workers += 1;
            stall.since = None;
        }
        grow
    }

    /// Adds a worker (counted by [`should_grow`](Shared::should_grow)). Returns false
    /// if none could be spawned and none exists, so that queued work must run here.
    fn grow(self: &Arc<Self>, rx: &Receiver<Dispatch>) -> bool {
        let (rx, shared) = (rx.clone(), self.clone());
        match self.spawn("messaging-worker", move || worker(&shared, &rx)) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "could not spawn a worker thread");
                let mut c = self.counts();
                c.workers -= 1;
                c.workers > 0
            }
        }
    }

    /// Queues one piece of work, adding a worker if [`should_grow`] says so. Blocks
    /// while the queue is full (the stall timer adds workers meanwhile).
    ///
    /// [`should_grow`]: Shared::should_grow
    fn submit(
        self: &Arc<Self>,
        tx: &Sender<Dispatch>,
        rx: &Receiver<Dispatch>,
        stall: &Mutex<Stall>,
        work: Dispatch,
    ) {
        self.counts().queued += 1;
        let grow = self.should_grow(&mut stall.lock().unwrap_or_else(|p| p.into_inner()));
        if grow && !self.grow(rx) {
            // Nobody would ever take it from the queue: run it here.
            self.counts().queued -= 1;
            work.run();
            return;
        }
        // Cannot fail: `rx` is held by the poller until it exits.
        let _ = tx.send(work);
    }
}

/// Marks a thread as exited, even if it unwinds.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.counts().alive -= 1;
        self.0.changed.notify_all();
    }
}

fn worker(shared: &Shared, rx: &Receiver<Dispatch>) {
    loop {
        shared.counts().idle += 1;
        let next = rx.recv();
        {
            let mut c = shared.counts();
            c.idle -= 1;
            if next.is_ok() {
                c.queued -= 1;
                c.taken += 1;
            }
        }
        match next {
            Ok(work) => work.run(),
            Err(_) => return, // the poller is gone and the queue is empty
        }
    }
}

/// Marks the poller as finished even if it unwinds (a listener that panics), so that
/// `wait()` never waits for a poller that is gone.
struct PollerDone<'a>(&'a Shared);

impl Drop for PollerDone<'_> {
    fn drop(&mut self) {
        self.0.counts().poller_running = false;
        self.0.changed.notify_all();
    }
}

fn poller(
    shared: &Arc<Shared>,
    listener: &dyn Listener,
    dispatcher: &dyn Dispatcher,
    queue_capacity: usize,
) {
    let _done = PollerDone(shared);
    let (tx, rx) = bounded::<Dispatch>(queue_capacity);
    let mut backoff = Backoff::new();
    let stall = Arc::new(Mutex::new(Stall::default()));
    // Looks for a stall every STALL, whatever the poller is doing (waiting for a
    // message, or for room in a full queue); ends with the poller.
    let _stall_timer = {
        let (shared, rx, stall) = (shared.clone(), rx.clone(), stall.clone());
        timer::repeat(STALL, move || {
            let grow = shared.should_grow(&mut stall.lock().unwrap_or_else(|p| p.into_inner()));
            if grow && !shared.grow(&rx) {
                tracing::error!("queued work is stranded: no worker thread could be spawned");
            }
        })
    };
    loop {
        match listener.poll(None) {
            Ok(Polled::Messages(batch)) => {
                backoff.reset();
                if let Some(work) = dispatch(dispatcher, batch) {
                    shared.submit(&tx, &rx, &stall, work);
                }
            }
            Ok(Polled::Idle) => {}
            Ok(Polled::Closed) => break,
            Err(error) => thread::sleep(backoff.after("thread-pool", &error)),
        }
    }
    // Dropping both ends lets the workers finish the queue and exit.
    drop((tx, rx));
}

impl Default for ThreadPoolExecutor {
    fn default() -> Self {
        ThreadPoolExecutor::new()
    }
}

impl ThreadPoolExecutor {
    /// A pool of up to [`DEFAULT_MAX_WORKERS`] threads behind a queue of
    /// [`DEFAULT_QUEUE_CAPACITY`].
    pub fn new() -> Self {
        ThreadPoolExecutor {
            max_workers: DEFAULT_MAX_WORKERS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            run: Mutex::new(None),
        }
    }

    /// At most `max_workers` handlers run at once (at least 1).
    pub fn with_max_workers(mut self, max_workers: usize) -> Self {
        self.max_workers = max_workers.max(1);
        self
    }

    /// At most `capacity` dispatched batches wait for a worker (at least 1); beyond
    /// that the poller stops taking messages.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// The worker limit.
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// The queue capacity.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    fn run(&self) -> MutexGuard<'_, Option<Run>> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Executor for ThreadPoolExecutor {
    fn name(&self) -> &'static str {
        "thread-pool"
    }

    fn start(
        &self,
        listener: Arc<dyn Listener>,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Result<(), ExecutorError> {
        let shared = Arc::new(Shared {
            counts: Mutex::new(Counts {
                poller_running: true,
                ..Counts::default()
            }),
            changed: Condvar::new(),
            handles: Mutex::new(Vec::new()),
            max_workers: self.max_workers,
            eager_workers: thread::available_parallelism()
                .map_or(1, usize::from)
                .min(self.max_workers),
        });
        let capacity = self.queue_capacity;
        let poller_shared = shared.clone();
        shared
            .spawn("messaging-poller", move || {
                poller(&poller_shared, &*listener, &*dispatcher, capacity);
            })
            .map_err(|e| ExecutorError::with_source("could not spawn the poller thread", e))?;
        *self.run() = Some(Run { shared });
        Ok(())
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        let Some(shared) = self.run().as_ref().map(|run| run.shared.clone()) else {
            return Ok(());
        };
        {
            let mut c = shared.counts();
            while c.poller_running || c.alive > 0 {
                c = match deadline {
                    None => shared.changed.wait(c).unwrap_or_else(|p| p.into_inner()),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Err(WaitTimedOut);
                        }
                        shared
                            .changed
                            .wait_timeout(c, deadline - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
            }
        }
        let handles =
            std::mem::take(&mut *shared.handles.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in handles {
            let _ = handle.join();
        }
        self.run().take();
        Ok(())
    }
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolExecutor")
            .field("max_workers", &self.max_workers)
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}
