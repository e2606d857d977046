//! [`Server`]: a transport listener, a dispatcher and an executor under one race-free
//! lifecycle.
//!
//! # The lifecycle contract
//!
//! | call | returns when | before `start()` | repeated / concurrent | from inside a handler |
//! |---|---|---|---|---|
//! | [`start`](Server::start) | the listener is attached and the executor is ready; never waits for a message | — | no-op once started; concurrent callers wait for the one running it and share its result | no-op if started; a restart is refused ([`WouldDeadlock`](crate::ServerError::WouldDeadlock)) |
//! | [`execute`](Server::execute) | the server was stopped and (blocking executor) its loop drained; it serves in the calling thread meanwhile | waits for `start()` | the loop runs once per epoch (resumed if a call timed out); every call returns when the epoch is stopped | refused |
//! | [`stop`](Server::stop) | no new message will be taken; does not wait for handlers | waits for `start()` | runs once per epoch; others wait for it | allowed (the non-blocking stop) |
//! | [`wait`](Server::wait) | stopped, every message taken has been processed, the listener is cleaned up | waits for `start()` and `stop()` | runs once per epoch; any number of threads wait together | refused at once, never a deadlock |
//!
//! Every call takes an optional timeout ([`CallOptions::timeout`]; a
//! [`Timeout`](crate::ServerError::Timeout) error, never a hang) and logs one
//! "possible hang" warning through `tracing` when it has waited longer than
//! [`CallOptions::log_after`] (30 s by default, like oslo's `log_after`). Both hold
//! wherever a call blocks: waiting for another thread, and running the drain itself
//! (`wait()`, or a restarting `start()`). `execute()` is the one call whose blocking
//! is its job: the timeout ends its serving (a `Timeout` error; the epoch goes on and
//! a later `execute()` serves again), but serving is never a "possible hang", only its
//! waits for `start()` or for a stop in progress are.
//!
//! Dropping the last [`Server`] handle stops a running server without waiting, and
//! keeps `stop()`'s promise: a background thread drains the epoch — every message
//! already taken is processed to completion and answered, whatever the executor —
//! and then cleans up the listener and drops the executor. Call `wait()` first if you
//! must know when that is done (before the process exits, say).
//!
//! A listener that panics wedges nothing. A poll that panics is handled like a poll
//! that fails: the executor logs it and polls again after a backoff (10 ms doubling
//! to 1 s), and [`ServerState::failed_polls`] counts the failures in a row, so a
//! server that takes nothing — a deaf server — shows in [`Server::state`] (see
//! [`ServerState::is_healthy`]) while the epoch keeps running and recovers by itself
//! if the listener does. Re-polling, rather than ending the epoch, is what executors
//! already did for a poll that returns an error, and transports reconnect on their
//! own; a transient fault should not need a restart. After `stop()`, a failing poll
//! ends the drain instead (the listener cannot hand out more; `cleanup()` gives back
//! what it held), so `wait()` returns. A `stop()` or `cleanup()` that panics is logged
//! and counts as done.
//!
//! Each call acts on one [`Epoch`]: the one current when it was made, or the one it was
//! pinned to with [`CallOptions::epoch`]. `start()` after `stop()` begins a new epoch,
//! after first draining and cleaning up the stopped one if nobody has waited for it, so
//! a restart never leaks the old epoch's workers or listener. A call whose epoch is
//! over returns at once: it can never act on a later epoch by accident. To wait for
//! exactly the epoch you stopped, pin the wait: `server.wait_with(&CallOptions::new().epoch(epoch))`
//! with the epoch `stop()` returned.
//!
//! Where oslo.messaging is still wrong, this server is right:
//!
//! * a failed `start()` returns its error and leaves the server startable;
//! * a restart after `stop()` without `wait()` drains the old epoch first (no leak);
//! * `wait()` from inside a handler returns an error at once instead of deadlocking;
//! * a caller's pinned `wait()` cannot attach to a later epoch.

mod lifecycle;
mod listener;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::dispatch::{Dispatch, Dispatcher, in_scope};
use crate::error::ServerError;
use crate::executor::{Executor, WaitTimedOut};
use crate::transport::{IncomingMessage, ListenOptions, Listener, Subscription, Transport};

use lifecycle::{Lifecycle, Request, Steps};
use listener::GuardedListener;

/// The default delay before a lifecycle call that is still waiting logs a
/// "possible hang" warning (oslo's `DEFAULT_LOG_AFTER`).
pub const DEFAULT_LOG_AFTER: Duration = Duration::from_secs(30);

// ===== Epoch, Call, state =====

/// One run of a server, from `start()` to `wait()`. The first epoch is 1; each restart
/// adds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub(crate) u64);

impl Epoch {
    /// The first epoch of every server.
    pub const fn first() -> Epoch {
        Epoch(1)
    }

    /// The epoch's number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// A lifecycle call, as named in errors and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// `start()`
    Start,
    /// `execute()`
    Execute,
    /// `stop()`
    Stop,
    /// `wait()`
    Wait,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Start => "start()",
            Call::Execute => "execute()",
            Call::Stop => "stop()",
            Call::Wait => "wait()",
        })
    }
}

/// Where one lifecycle step of the current epoch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    /// Not run (or failed and reset) in this epoch.
    NotRun,
    /// A thread is running it.
    Running,
    /// Done in this epoch.
    Done,
}

/// A snapshot of a server's lifecycle and health, for logs, health checks and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerState {
    /// The current epoch.
    pub epoch: Epoch,
    /// Its `start` step.
    pub start: StepState,
    /// Its `execute` step: the blocking executor's loop, `Running` while it serves in
    /// a thread's `execute()`. Executors without a loop mark it `Done` as soon as
    /// `execute()` is called (the call then only waits for the stop).
    pub execute: StepState,
    /// Its `stop` step.
    pub stop: StepState,
    /// Its `wait` step.
    pub wait: StepState,
    /// Polls of the epoch's listener that failed in a row — returned an error or
    /// panicked — since the last one that succeeded; 0 when none did. Executors poll
    /// again after a backoff, so a count that keeps growing is a server that takes
    /// nothing (a broker down, a broken listener); it falls back to 0 at the next
    /// poll that works.
    pub failed_polls: u64,
}

impl ServerState {
    /// Started and not yet stopping: messages are being taken.
    pub fn is_running(&self) -> bool {
        self.start == StepState::Done && self.stop == StepState::NotRun
    }

    /// Running, and its listener's last poll did not fail: what a health check asks.
    pub fn is_healthy(&self) -> bool {
        self.is_running() && self.failed_polls == 0
    }
}

// ===== CallOptions =====

/// Options for one lifecycle call; unset fields take the server's defaults
/// (see [`ServerBuilder`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use messaging_core::CallOptions;
///
/// let opts = CallOptions::new().timeout(Duration::from_secs(5)).never_log();
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    timeout: Option<Option<Duration>>,
    log_after: Option<Option<Duration>>,
    epoch: Option<Epoch>,
}

impl CallOptions {
    /// Options that take every default.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Fail with [`ServerError::Timeout`] instead of waiting longer than `timeout`.
    /// The timeout bounds waiting for other steps and other threads, the drain in
    /// `wait()` and `execute()`'s serving (the blocking executor's loop stops taking
    /// messages); it cannot interrupt work running in the calling thread (a handler,
    /// or the transport's `listen` in `start()`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(Some(timeout));
        self
    }

    /// Wait as long as it takes.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// Log a "possible hang" warning once the call has waited this long (time
    /// `execute()` spends serving does not count).
    pub fn log_after(mut self, delay: Duration) -> Self {
        self.log_after = Some(Some(delay));
        self
    }

    /// Never log a "possible hang" warning (oslo's `log_after=0`).
    pub fn never_log(mut self) -> Self {
        self.log_after = Some(None);
        self
    }

    /// Act on `epoch` only: if it is over, return at once; never move on to a later
    /// epoch (a pinned `start()` never restarts).
    pub fn epoch(mut self, epoch: Epoch) -> Self {
        self.epoch = Some(epoch);
        self
    }
}

// ===== Server =====

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// A message-handling server: takes messages for its [`Subscription`] from a
/// [`Transport`], hands them to a [`Dispatcher`] and runs the work on an [`Executor`],
/// under the lifecycle contract described in the [module docs](self).
///
/// `Server` is a cheap handle (clone it to call `stop()` from another thread). A handler
/// that needs its own server should hold a [`WeakServer`], so the server is not kept
/// alive by its own handlers.
///
/// Dropping the last handle of a started server that nobody waited for stops it
/// without waiting, as `stop()` does, and keeps `stop()`'s promise: a background
/// thread (`messaging-drain`) drains the epoch, so every message already taken is
/// processed to completion and answered, whatever the executor (the event-loop
/// executor's own runtime lives until then); it then cleans up the listener and drops
/// the executor, logging "possible hang" after the server's `log_after` if a handler
/// holds it up. The process does not wait for that thread: call
/// [`wait`](Server::wait) to be sure every handler finished.
///
/// # Examples
///
/// See `messaging-executors` for complete examples with real executors and the
/// in-memory transport; the lifecycle calls look like this:
///
/// ```no_run
/// # fn demo(server: messaging_core::Server) -> Result<(), messaging_core::ServerError> {
/// server.start()?;          // listener attached, executor ready
/// // ... messages are processed ...
/// let epoch = server.stop()?; // no new message is taken from here on
/// server.wait()?;           // every taken message processed, listener cleaned up
/// # let _ = epoch; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

/// A weak handle to a [`Server`], for handlers that stop their own server.
#[derive(Clone, Debug)]
pub struct WeakServer {
    inner: Weak<Inner>,
}

impl WeakServer {
    /// The server, if it still exists.
    pub fn upgrade(&self) -> Option<Server> {
        self.inner.upgrade().map(|inner| Server { inner })
    }
}

struct Inner {
    id: u64,
    name: String,
    core: Arc<Core>,
    timeout: Option<Duration>,
    log_after: Option<Duration>,
}

/// The state machine and its effects: shared with the thread that drains a server
/// dropped while it ran.
struct Core {
    lifecycle: Lifecycle,
    effects: Effects,
}

impl Server {
    /// Starts building a server for `subscription` on `transport`, dispatching with
    /// `dispatcher` and running the work on `executor`.
    pub fn builder(
        transport: Arc<dyn Transport>,
        subscription: Subscription,
        dispatcher: impl Dispatcher,
        executor: impl Executor,
    ) -> ServerBuilder {
        ServerBuilder {
            transport,
            subscription,
            dispatcher: Arc::new(dispatcher),
            executor: Box::new(executor),
            listen_options: ListenOptions::default(),
            name: None,
            timeout: None,
            log_after: Some(DEFAULT_LOG_AFTER),
        }
    }

    /// Starts the server with the default options; see [`start_with`](Server::start_with).
    pub fn start(&self) -> Result<Epoch, ServerError> {
        self.start_with(&CallOptions::new())
    }

    /// Attaches the listener and starts the executor, returning the epoch now running.
    ///
    /// * Returns as soon as set-up is complete; never waits for message processing
    ///   (the blocking executor's loop runs only in [`execute`](Server::execute)).
    ///   From then on `stop()` is safe.
    /// * Already started: returns at once. Another thread starting: waits for it and
    ///   returns its result.
    /// * On failure (listen or executor error) returns the error; nothing is left
    ///   running and the server can be started again.
    /// * After `stop()`: begins a new epoch, first finishing the stopped one
    ///   (waiting for its drain and cleaning up its listener) if nobody has waited.
    ///   From inside a handler such a restart is refused with `WouldDeadlock`.
    pub fn start_with(&self, options: &CallOptions) -> Result<Epoch, ServerError> {
        let mut req = self.request(Call::Start, options);
        let result = self
            .inner
            .core
            .lifecycle
            .start(&self.inner.core.effects, &mut req);
        self.trace(Call::Start, &result);
        result
    }

    /// Serves in the calling thread with the default options; see
    /// [`execute_with`](Server::execute_with).
    pub fn execute(&self) -> Result<Epoch, ServerError> {
        self.execute_with(&CallOptions::new())
    }

    /// Serves the epoch in the calling thread until it is stopped: the blocking
    /// executor runs its dispatch loop here (the seed's `execute()`); other executors,
    /// whose workers do the dispatching, just park the thread. `start(); execute();
    /// wait()` is therefore "serve until stopped" for every executor.
    ///
    /// * Before `start()`: waits for it (bounded by the timeout).
    /// * With a timeout: returns [`Timeout`](ServerError::Timeout) once it has served
    ///   that long, for every executor. The epoch keeps running (the blocking
    ///   executor's loop stops taking messages after the batch in hand; the others'
    ///   workers go on); a later `execute()` serves again, `stop()` and `wait()` work
    ///   as usual. Serving never logs "possible hang"; waiting for `start()` or for a
    ///   stop in progress does, after `log_after`.
    /// * The blocking executor's loop runs in one thread at a time and completes once
    ///   per epoch; concurrent or repeated calls wait with it and all return once the
    ///   epoch is stopped (at once if it already is).
    /// * Returns at once if `wait()` already finished the epoch without a loop.
    /// * From inside a handler of this server: refused with `WouldDeadlock`.
    pub fn execute_with(&self, options: &CallOptions) -> Result<Epoch, ServerError> {
        let mut req = self.request(Call::Execute, options);
        let result = self
            .inner
            .core
            .lifecycle
            .execute(&self.inner.core.effects, &mut req);
        self.trace(Call::Execute, &result);
        result
    }

    /// Stops the server with the default options; see [`stop_with`](Server::stop_with).
    pub fn stop(&self) -> Result<Epoch, ServerError> {
        self.stop_with(&CallOptions::new())
    }

    /// Stops taking messages, returning the epoch it stopped. When it returns, no new
    /// message will be taken from the transport; messages already taken are still
    /// processed (see [`wait`](Server::wait)). It does not wait for handlers, so it is
    /// safe from any thread, including from inside a handler.
    ///
    /// * Before `start()`: waits for `start()` to complete (oslo's ordering), bounded
    ///   by the timeout.
    /// * Runs once per epoch; a concurrent call waits for it; a repeated call returns.
    pub fn stop_with(&self, options: &CallOptions) -> Result<Epoch, ServerError> {
        let mut req = self.request(Call::Stop, options);
        let result = self
            .inner
            .core
            .lifecycle
            .stop(&self.inner.core.effects, &mut req);
        self.trace(Call::Stop, &result);
        result
    }

    /// Waits for the server with the default options; see [`wait_with`](Server::wait_with).
    pub fn wait(&self) -> Result<Epoch, ServerError> {
        self.wait_with(&CallOptions::new())
    }

    /// Waits until the epoch is stopped, every message taken in it has been processed
    /// (drained, not dropped) and its listener is cleaned up; returns that epoch.
    ///
    /// * Before `stop()`: waits for it.
    /// * Any number of threads may wait at once; they all return when the drain is done.
    ///   A repeated call returns at once.
    /// * On timeout the drain goes on; a later `wait()` waits for the rest. The thread
    ///   that runs the drain logs "possible hang" after `log_after`, as waiters do.
    /// * From inside a handler of this server: returns `WouldDeadlock` at once, since the
    ///   drain would wait for that handler. The check sees the handler's own thread (and
    ///   a dispatcher's inline work); a handler that hands `wait()` to another thread and
    ///   waits for it deadlocks and cannot be detected — don't.
    pub fn wait_with(&self, options: &CallOptions) -> Result<Epoch, ServerError> {
        let mut req = self.request(Call::Wait, options);
        let result = self
            .inner
            .core
            .lifecycle
            .wait(&self.inner.core.effects, &mut req);
        self.trace(Call::Wait, &result);
        result
    }

    /// A snapshot of the lifecycle and of the listener's health.
    pub fn state(&self) -> ServerState {
        let mut state = self.inner.core.lifecycle.snapshot();
        state.failed_polls = self
            .inner
            .core
            .effects
            .listener()
            .map_or(0, |listener| listener.failed_polls());
        state
    }

    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.state().epoch
    }

    /// The server's name, for logs (its subscription unless set).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The executor's name.
    pub fn executor_name(&self) -> &'static str {
        self.inner.core.effects.executor.name()
    }

    /// A weak handle, for handlers that stop their own server.
    pub fn downgrade(&self) -> WeakServer {
        WeakServer {
            inner: Arc::downgrade(&self.inner),
        }
    }

    fn request(&self, call: Call, options: &CallOptions) -> Request<'_> {
        Request::new(
            call,
            options.epoch,
            options.timeout.unwrap_or(self.inner.timeout),
            options.log_after.unwrap_or(self.inner.log_after),
            in_scope(self.inner.id),
            &self.inner.name,
        )
    }

    fn trace(&self, call: Call, result: &Result<Epoch, ServerError>) {
        match result {
            Ok(epoch) => tracing::debug!(server = %self.inner.name, %epoch, "{call} done"),
            Err(err) => tracing::debug!(server = %self.inner.name, error = %err, "{call} failed"),
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.inner.name)
            .field("executor", &self.inner.core.effects.executor.name())
            .field("state", &self.state())
            .finish()
    }
}

impl Drop for Inner {
    /// Stops a started epoch that nobody waited for and drains it in the background
    /// (see [`Server`]). No lifecycle call is in progress: each holds a handle.
    fn drop(&mut self) {
        let state = self.core.lifecycle.snapshot();
        if state.start != StepState::Done || state.wait == StepState::Done {
            return;
        }
        if state.stop == StepState::NotRun {
            tracing::debug!(server = %self.name, "server dropped while running: stopping it");
            let mut req = Request::new(Call::Stop, None, None, None, false, &self.name);
            if let Err(error) = self.core.lifecycle.stop(&self.core.effects, &mut req) {
                // A drain would wait for a stop that never comes.
                tracing::error!(server = %self.name, %error, "stopping a dropped server failed");
                return;
            }
        }
        let (core, name, log_after) = (self.core.clone(), self.name.clone(), self.log_after);
        let drain = std::thread::Builder::new()
            .name("messaging-drain".to_owned())
            .spawn(move || {
                let mut req = Request::new(Call::Wait, None, None, log_after, false, &name);
                match core.lifecycle.wait(&core.effects, &mut req) {
                    Ok(epoch) => tracing::debug!(server = %name, %epoch, "dropped server drained"),
                    Err(error) => {
                        tracing::error!(server = %name, %error, "draining a dropped server failed");
                    }
                }
            });
        if let Err(error) = drain {
            tracing::error!(
                server = %self.name,
                %error,
                "could not start the thread that drains a dropped server: its handlers in \
                 flight may be cut short"
            );
        }
    }
}

// ===== ServerBuilder =====

/// Builds a [`Server`]; made by [`Server::builder`].
pub struct ServerBuilder {
    transport: Arc<dyn Transport>,
    subscription: Subscription,
    dispatcher: Arc<dyn Dispatcher>,
    executor: Box<dyn Executor>,
    listen_options: ListenOptions,
    name: Option<String>,
    timeout: Option<Duration>,
    log_after: Option<Duration>,
}

impl ServerBuilder {
    /// Batch size and timeout for the listener (RPC servers use the default: 1).
    pub fn listen_options(mut self, options: ListenOptions) -> Self {
        self.listen_options = options;
        self
    }

    /// The name used in logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The default timeout of every lifecycle call (none by default).
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The default delay before a waiting call logs "possible hang" (30 s by default;
    /// `None`: never).
    pub fn log_after(mut self, delay: Option<Duration>) -> Self {
        self.log_after = delay;
        self
    }

    /// Checks the subscription (oslo's target rules) and that the dispatcher's handlers
    /// can decode the transport's codec ([`Dispatcher::check_codec`]), and builds the
    /// server. Nothing is created on the transport until `start()`.
    pub fn build(self) -> Result<Server, ServerError> {
        self.subscription.validate()?;
        self.dispatcher.check_codec(self.transport.codec())?;
        let id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
        let name = self.name.unwrap_or_else(|| self.subscription.to_string());
        Ok(Server {
            inner: Arc::new(Inner {
                id,
                core: Arc::new(Core {
                    lifecycle: Lifecycle::new(),
                    effects: Effects {
                        name: name.clone(),
                        transport: self.transport,
                        subscription: self.subscription,
                        listen_options: self.listen_options,
                        executor: self.executor,
                        dispatcher: Arc::new(Scoped {
                            id,
                            inner: self.dispatcher,
                        }),
                        listener: Mutex::new(None),
                    },
                }),
                name,
                timeout: self.timeout,
                log_after: self.log_after,
            }),
        })
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("transport", &self.transport)
            .field("subscription", &self.subscription)
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

// ===== effects =====

/// Marks every dispatched piece of work with the server it belongs to.
struct Scoped {
    id: u64,
    inner: Arc<dyn Dispatcher>,
}

impl Dispatcher for Scoped {
    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch {
        // Work a dispatcher does inline runs on the executor's poller: a wait() from
        // there would wait for the poller itself, so it is inside the handler scope too.
        let _scope = crate::dispatch::ScopeGuard::enter(self.id);
        self.inner.dispatch(batch).scoped(self.id)
    }
}

struct Effects {
    /// The server's name, for the listener's logs.
    name: String,
    transport: Arc<dyn Transport>,
    subscription: Subscription,
    listen_options: ListenOptions,
    executor: Box<dyn Executor>,
    dispatcher: Arc<dyn Dispatcher>,
    listener: Mutex<Option<Arc<GuardedListener>>>,
}

impl Effects {
    fn listener(&self) -> Option<Arc<GuardedListener>> {
        self.listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Steps for Effects {
    fn start(&self) -> Result<(), ServerError> {
        let listener = self
            .transport
            .listen(&self.subscription, &self.listen_options)
            .map_err(|source| ServerError::Listen {
                subscription: self.subscription.to_string(),
                source,
            })?;
        let listener = Arc::new(GuardedListener::new(listener, &self.name));
        let started = catch_unwind(AssertUnwindSafe(|| {
            self.executor
                .start(listener.clone(), self.dispatcher.clone())
        }));
        let failure = match started {
            Ok(Ok(())) => None,
            Ok(Err(source)) => Some(ServerError::Executor {
                executor: self.executor.name(),
                source,
            }),
            Err(payload) => Some(ServerError::Panicked {
                call: Call::Start,
                message: crate::error::panic_message(&*payload),
            }),
        };
        if let Some(error) = failure {
            // Nothing may be left behind by a failed start.
            listener.stop();
            listener.cleanup();
            return Err(error);
        }
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
        Ok(())
    }

    fn execute(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        self.executor.execute(deadline)
    }

    fn stop(&self) {
        if let Some(listener) = self.listener() {
            listener.stop();
        }
        self.executor.stop();
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<(), WaitTimedOut> {
        self.executor.wait(deadline)?;
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(listener) = listener {
            listener.cleanup();
        }
        Ok(())
    }
}
