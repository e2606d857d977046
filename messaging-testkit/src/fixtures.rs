//! Fixtures for tests of servers: the seed's non-blocking stop endpoint, gates that hold
//! handlers in flight, a recording dispatcher, and a server running on its own thread.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use messaging_core::{
    CallOptions, Dispatch, Dispatcher, Epoch, IncomingMessage, Server, ServerError,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ===== Latch =====

/// A one-way flag that threads can wait on with a timeout, and async code can await
/// ([`opened`](Latch::opened)) without blocking its thread.
#[derive(Clone, Debug, Default)]
pub struct Latch {
    inner: Arc<(Mutex<LatchState>, Condvar)>,
}

#[derive(Debug, Default)]
struct LatchState {
    open: bool,
    wakers: Vec<Waker>,
}

impl Latch {
    /// A closed latch.
    pub fn new() -> Self {
        Latch::default()
    }

    /// Opens the latch, releasing every waiter (now and later).
    pub fn open(&self) {
        let wakers = {
            let mut state = lock(&self.inner.0);
            state.open = true;
            std::mem::take(&mut state.wakers)
        };
        self.inner.1.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether it is open.
    pub fn is_open(&self) -> bool {
        lock(&self.inner.0).open
    }

    /// Waits until open; returns whether it opened within `timeout`.
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = lock(&self.inner.0);
        let (guard, _) = self
            .inner
            .1
            .wait_timeout_while(guard, timeout, |state| !state.open)
            .unwrap_or_else(|p| p.into_inner());
        guard.open
    }

    /// Completes once the latch is open, without blocking the thread that awaits it
    /// (on any executor: tokio, or `block_on`).
    ///
    /// ```
    /// use messaging_testkit::Latch;
    ///
    /// let latch = Latch::new();
    /// latch.open();
    /// messaging_core::dispatch::block_on(latch.opened());
    /// ```
    pub fn opened(&self) -> impl Future<Output = ()> + Send + 'static {
        let latch = self.clone();
        std::future::poll_fn(move |cx| {
            let mut state = lock(&latch.inner.0);
            if state.open {
                return Poll::Ready(());
            }
            if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                state.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

// ===== the non-blocking stop endpoint =====

/// The body that [`stop_endpoint`] treats as a stop request.
pub const STOP: &[u8] = b"stop";

/// The seed's non-blocking stop endpoint: a dispatcher that, on a message whose body is
/// [`STOP`], only opens the returned latch; every other message goes to `inner`.
///
/// The test thread waits for the latch and then calls `stop()` and `wait()` itself, so
/// no handler ever waits for its own server (the deadlock the seed commit fixed in
/// oslo's tests).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use messaging_core::{Dispatch, Dispatcher, IncomingMessage, Message};
/// use messaging_testkit::{stop_endpoint, STOP};
///
/// let (dispatcher, stopped) = stop_endpoint(|_: Vec<IncomingMessage>| Dispatch::nothing());
/// dispatcher.dispatch(vec![IncomingMessage::new(Message::new(STOP))]).run();
/// assert!(stopped.wait(Duration::from_secs(1)));
/// ```
pub fn stop_endpoint(inner: impl Dispatcher) -> (impl Dispatcher, Latch) {
    let latch = Latch::new();
    let signal = latch.clone();
    let dispatcher = move |batch: Vec<IncomingMessage>| {
        let (stops, rest): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|m| m.message().body.as_ref() == STOP);
        if stops.is_empty() {
            return inner.dispatch(rest);
        }
        let signal = signal.clone();
        let rest = (!rest.is_empty()).then(|| inner.dispatch(rest));
        Dispatch::blocking(move || {
            if let Some(rest) = rest {
                rest.run();
            }
            for mut stop in stops {
                let _ = stop.acknowledge();
                if stop.is_call() {
                    let _ = stop.reply(Ok(Bytes::new()));
                }
            }
            signal.open();
        })
    };
    (dispatcher, latch)
}

// ===== Recorder =====

/// What a [`Recorder`] handler does with a message, decided by its body:
/// `gate:*` waits for the recorder's gate, `panic:*` panics, anything else just records.
/// Calls are answered with their own body.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    inner: Arc<RecorderState>,
}

#[derive(Debug, Default)]
struct RecorderState {
    processed: Mutex<Vec<String>>,
    started: Mutex<Vec<String>>,
    changed: Condvar,
    gate: Latch,
}

impl Recorder {
    /// A recorder with a closed gate.
    pub fn new() -> Self {
        Recorder::default()
    }

    /// Bodies of the messages whose handler finished, in completion order.
    pub fn processed(&self) -> Vec<String> {
        lock(&self.inner.processed).clone()
    }

    /// Bodies of the messages whose handler started.
    pub fn started(&self) -> Vec<String> {
        lock(&self.inner.started).clone()
    }

    /// Opens the gate that `gate:*` messages wait on.
    pub fn open_gate(&self) {
        self.inner.gate.open();
    }

    /// Waits until at least `n` handlers have started; returns whether they did within
    /// `timeout`.
    pub fn wait_started(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(&self.inner.started, n, timeout)
    }

    /// Waits until at least `n` handlers have finished.
    pub fn wait_processed(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(&self.inner.processed, n, timeout)
    }

    fn wait_for(&self, list: &Mutex<Vec<String>>, n: usize, timeout: Duration) -> bool {
        let guard = lock(list);
        let (guard, _) = self
            .inner
            .changed
            .wait_timeout_while(guard, timeout, |l| l.len() < n)
            .unwrap_or_else(|p| p.into_inner());
        guard.len() >= n
    }

    /// Records the start of a handler; returns the message's body.
    fn begin(&self, incoming: &mut IncomingMessage) -> String {
        let body = String::from_utf8_lossy(&incoming.message().body).into_owned();
        let _ = incoming.acknowledge();
        lock(&self.inner.started).push(body.clone());
        self.inner.changed.notify_all();
        body
    }

    /// Replies to a call with its body and records the end of its handler.
    fn end(&self, mut incoming: IncomingMessage, body: String) {
        if body.starts_with("panic:") {
            panic!("handler asked to panic by {body}");
        }
        if incoming.is_call() {
            let _ = incoming.reply(Ok(Bytes::from(body.clone().into_bytes())));
        }
        lock(&self.inner.processed).push(body);
        self.inner.changed.notify_all();
    }

    fn handle(&self, mut incoming: IncomingMessage) {
        let body = self.begin(&mut incoming);
        if body.starts_with("gate:") {
            self.inner.gate.wait(Duration::from_secs(120));
        }
        self.end(incoming, body);
    }

    async fn handle_async(&self, mut incoming: IncomingMessage) {
        let body = self.begin(&mut incoming);
        if body.starts_with("gate:") {
            self.inner.gate.opened().await;
        }
        self.end(incoming, body);
    }

    /// The recorder as a dispatcher of blocking work.
    pub fn dispatcher(&self) -> impl Dispatcher {
        let recorder = self.clone();
        move |batch: Vec<IncomingMessage>| {
            let recorder = recorder.clone();
            Dispatch::blocking(move || {
                for incoming in batch {
                    recorder.handle(incoming);
                }
            })
        }
    }

    /// The recorder as a dispatcher of async work: `gate:*` handlers await the gate
    /// without blocking their thread, so a runtime can cancel them (or not) as it
    /// would any async handler.
    pub fn async_dispatcher(&self) -> impl Dispatcher {
        let recorder = self.clone();
        move |batch: Vec<IncomingMessage>| {
            let recorder = recorder.clone();
            Dispatch::future(async move {
                for incoming in batch {
                    recorder.handle_async(incoming).await;
                }
            })
        }
    }
}

// ===== ServerThread =====

/// How long [`ServerThread`] waits for `start`, `stop` and `wait` before declaring a
/// deadlock.
pub const SERVER_THREAD_LIMIT: Duration = Duration::from_secs(30);

/// A server running `start()` + `execute()` on its own thread; stopped and waited for
/// when dropped, so a test cannot leave it running. Works the same for every executor
/// (the blocking executor's loop runs on the fixture's thread).
///
/// # Examples
///
/// ```
/// use messaging_core::{Server, Subscription, Target};
/// use messaging_executors::BlockingExecutor;
/// use messaging_testkit::{fake_transport, Recorder, ServerThread};
///
/// let (transport, _handle) = fake_transport();
/// let recorder = Recorder::new();
/// let server = Server::builder(
///     transport,
///     Subscription::Rpc(Target::new("t").with_server("s")),
///     recorder.dispatcher(),
///     BlockingExecutor::new(),
/// )
/// .build()?;
/// let running = ServerThread::spawn(server)?; // start() + execute() on its own thread
/// assert!(running.server().state().is_running());
/// running.stop_and_wait()?;                  // or just drop it
/// # Ok::<(), messaging_core::ServerError>(())
/// ```
#[derive(Debug)]
pub struct ServerThread {
    server: Server,
    epoch: Epoch,
    thread: Option<JoinHandle<Result<Epoch, ServerError>>>,
}

impl ServerThread {
    /// Starts `server` on a new thread and returns once `start()` has returned there.
    ///
    /// # Errors
    ///
    /// The error `start()` returned; the thread has then ended.
    ///
    /// # Panics
    ///
    /// If `start()` does not return within [`SERVER_THREAD_LIMIT`].
    pub fn spawn(server: Server) -> Result<ServerThread, ServerError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let runner = server.clone();
        let thread = thread::Builder::new()
            .name(format!("server {}", server.name()))
            .spawn(move || {
                let started = runner.start();
                let _ = tx.send(started.clone());
                // Serve exactly the epoch started here, never a later one.
                runner.execute_with(&CallOptions::new().epoch(started?))
            })
            .expect("spawn the server thread");
        match rx.recv_timeout(SERVER_THREAD_LIMIT) {
            Ok(Ok(epoch)) => Ok(ServerThread {
                server,
                epoch,
                thread: Some(thread),
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            Err(_) => panic!("deadlock: start() did not return within {SERVER_THREAD_LIMIT:?}"),
        }
    }

    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The epoch `start()` returned.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Stops the server, waits for it, and joins the thread.
    ///
    /// # Panics
    ///
    /// If any of it takes longer than [`SERVER_THREAD_LIMIT`] (a deadlock).
    pub fn stop_and_wait(mut self) -> Result<Epoch, ServerError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<Epoch, ServerError> {
        let limit = CallOptions::new().timeout(SERVER_THREAD_LIMIT);
        let pinned = limit.clone().epoch(self.epoch);
        self.server.stop_with(&pinned)?;
        self.server.wait_with(&pinned)?;
        if let Some(thread) = self.thread.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            thread::spawn(move || {
                let _ = tx.send(thread.join());
            });
            match rx.recv_timeout(SERVER_THREAD_LIMIT) {
                Ok(Ok(result)) => {
                    result?;
                }
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(_) => panic!("deadlock: execute() did not return after stop() and wait()"),
            }
        }
        Ok(self.epoch)
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        if thread::panicking() {
            let quick = CallOptions::new()
                .timeout(Duration::from_secs(5))
                .epoch(self.epoch);
            let _ = self.server.stop_with(&quick);
            let _ = self.server.wait_with(&quick);
        } else {
            self.finish().expect("stopping the server thread");
        }
    }
}
