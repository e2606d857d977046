//! Ours: an RPC server (or a notification listener) on one executor over any transport
//! URL, and a client on a second transport opened on the same URL — a separate
//! connection on a broker, the same bus on `memory://`.
//!
//! Every bench uses a fresh topic (`bench_<hex>`), so runs never see each other's
//! messages; [`RpcBench::queues`] names what it created on RabbitMQ so the caller can
//! delete it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use messaging_core::notify::{self, ListenerOptions, NotificationEndpoint, NotificationResult};
use messaging_core::rpc::{Endpoint, HandlerError, RpcClient, RpcDispatcher, RpcError};
use messaging_core::{Context, Epoch, Priority, Server, ServerError, Subscription, Target, ids};
use messaging_core::{Transport, dispatch::block_on, notify::Notifier};
use serde::{Deserialize, Serialize};

use crate::ExecutorKind;

/// The arguments every bench method takes: a string of the payload size (oslo's
/// messages are JSON text, so a string is fair to both codecs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Payload {
    /// The payload.
    pub value: String,
}

impl Payload {
    /// `size` bytes of lowercase text.
    pub fn of_size(size: usize) -> Payload {
        let value = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        Payload { value }
    }
}

/// How long a throughput bench waits without a message arriving before it reports
/// the missing ones as lost.
pub const STALL: Duration = Duration::from_secs(10);

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The transport could not be opened.
    #[error("opening {url}: {source}")]
    Open {
        /// The URL (password hidden).
        url: String,
        /// Why.
        source: messaging_core::TransportError,
    },
    /// The server would not start.
    #[error("starting the server: {0}")]
    Server(#[from] ServerError),
    /// A call or cast failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A notification could not be sent.
    #[error(transparent)]
    Notify(#[from] messaging_core::notify::NotifyError),
    /// Messages went missing.
    #[error("only {received} of {expected} messages arrived within {seconds} s")]
    Lost {
        /// Expected.
        expected: u64,
        /// Received.
        received: u64,
        /// How long it waited.
        seconds: u64,
    },
}

/// Opens `url`. On RabbitMQ the queues a bench declares expire five minutes after
/// their last use (`queue_ttl`, unless the URL sets it), so an interrupted bench
/// leaves nothing behind.
pub fn open(url: &str) -> Result<Arc<dyn Transport>, BenchError> {
    let rabbit = ["rabbit:", "amqp:", "amqps:", "kombu:"]
        .iter()
        .any(|scheme| url.starts_with(scheme));
    let url = if rabbit && !url.contains("queue_ttl=") {
        with_option(url, "queue_ttl", "300")
    } else {
        url.to_owned()
    };
    messaging_transports::open(&url).map_err(|source| BenchError::Open {
        url: redact(&url),
        source,
    })
}

/// `url` with its password hidden.
pub fn redact(url: &str) -> String {
    messaging_core::TransportUrl::parse(url)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| "<invalid URL>".to_owned())
}

pub use messaging_testkit::with_option;

/// A count of processed messages that a thread can wait on without a lock per message.
#[derive(Debug, Default)]
pub struct Counter {
    count: AtomicU64,
    want: AtomicU64,
    lock: Mutex<()>,
    reached: Condvar,
}

impl Counter {
    /// Counts one message.
    pub fn add(&self) {
        let count = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if count == self.want.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.reached.notify_all();
        }
    }

    /// Messages counted so far.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until `target` messages were counted: at most `limit`, and at most
    /// [`STALL`] without a new one (a transport that dropped messages is reported at
    /// once instead of after the whole limit).
    ///
    /// # Errors
    ///
    /// [`BenchError::Lost`] when they do not arrive in time.
    pub fn wait_for(&self, target: u64, limit: Duration) -> Result<(), BenchError> {
        let started = Instant::now();
        let deadline = started + limit;
        let mut progress = (self.get(), Instant::now());
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.want.store(target, Ordering::SeqCst);
        while self.count.load(Ordering::SeqCst) < target {
            let now = Instant::now();
            let count = self.get();
            if count != progress.0 {
                progress = (count, now);
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() || now - progress.1 >= STALL {
                return Err(BenchError::Lost {
                    expected: target,
                    received: count,
                    seconds: started.elapsed().as_secs(),
                });
            }
            // The timeout only bounds a wait whose wake-up went missing: `add` checks
            // `want` after counting and notifies under the lock held here.
            guard = self
                .reached
                .wait_timeout(guard, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }
}

fn fresh_topic() -> String {
    format!("bench_{}", &ids::hex_id()[..12])
}

fn serve(server: &Server) -> Result<JoinHandle<Result<Epoch, ServerError>>, BenchError> {
    server.start()?;
    let runner = server.clone();
    Ok(thread::spawn(move || runner.execute()))
}

fn shut_down(server: &Server, serving: &mut Option<JoinHandle<Result<Epoch, ServerError>>>) {
    let _ = server.stop();
    let _ = server.wait();
    if let Some(serving) = serving.take() {
        let _ = serving.join();
    }
}

/// An RPC server with `echo(value) -> value` and `count(value)` (for casts) on one
/// executor, and a client calling it.
///
/// On the event loop, the server runs on a runtime of its own that
/// [`timed_calls`](RpcBench::timed_calls) also runs the client on, as a task: an async
/// service calls from a task, and the limit it is compared with is a ping-pong between
/// tokio tasks. The other executors are called from the calling thread.
#[derive(Debug)]
pub struct RpcBench {
    runtime: Option<tokio::runtime::Runtime>,
    server: Server,
    serving: Option<JoinHandle<Result<Epoch, ServerError>>>,
    client: RpcClient,
    casts: Arc<Counter>,
    context: Context,
    topic: String,
}

impl RpcBench {
    /// Starts the server on `kind` over `url` and connects a client.
    ///
    /// # Errors
    ///
    /// The transport cannot be opened or the server cannot start.
    pub fn start(url: &str, kind: ExecutorKind) -> Result<RpcBench, BenchError> {
        if kind != ExecutorKind::EventLoop {
            return RpcBench::start_on(url, kind, kind.build());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let executor =
            messaging_executors::EventLoopExecutor::with_handle(runtime.handle().clone());
        let mut bench = RpcBench::start_on(url, kind, Box::new(executor))?;
        bench.runtime = Some(runtime);
        Ok(bench)
    }

    /// [`start`](RpcBench::start) with a given executor of `kind` (say, an event loop
    /// on a runtime the caller also runs its client on).
    ///
    /// # Errors
    ///
    /// The transport cannot be opened or the server cannot start.
    pub fn start_on(
        url: &str,
        kind: ExecutorKind,
        executor: Box<dyn messaging_core::Executor>,
    ) -> Result<RpcBench, BenchError> {
        let topic = fresh_topic();
        let target = Target::new(topic.clone()).with_server("bench");
        let casts = Arc::new(Counter::default());
        let counter = casts.clone();
        let endpoint = if kind == ExecutorKind::EventLoop {
            // The event loop runs async handlers as tasks; blocking ones would take a
            // trip through its blocking pool.
            Endpoint::new()
                .async_method("echo", |_ctx, args: Payload| async move {
                    Ok::<_, HandlerError>(args.value)
                })
                .async_method("count", move |_ctx, _args: Payload| {
                    counter.add();
                    async { Ok::<_, HandlerError>(()) }
                })
        } else {
            Endpoint::new()
                .method("echo", |_ctx, args: Payload| {
                    Ok::<_, HandlerError>(args.value)
                })
                .method("count", move |_ctx, _args: Payload| {
                    counter.add();
                    Ok::<_, HandlerError>(())
                })
        };
        let dispatcher = RpcDispatcher::new(vec![endpoint]).expect("distinct method names");
        let server = Server::builder(
            open(url)?,
            Subscription::Rpc(target.clone()),
            dispatcher,
            executor,
        )
        .build()?;
        let serving = Some(serve(&server)?);
        let client = RpcClient::new(open(url)?, Target::new(topic.clone()))
            .with_timeout(Duration::from_secs(30));
        Ok(RpcBench {
            runtime: None,
            server,
            serving,
            client,
            casts,
            context: Context::new(),
            topic,
        })
    }

    /// `count` sequential `echo` calls, each timed (nanoseconds): on the server's
    /// runtime, as a task, for the event loop; on this thread otherwise.
    ///
    /// # Errors
    ///
    /// A call failed.
    pub fn timed_calls(
        self: &Arc<Self>,
        count: usize,
        payload: &Payload,
    ) -> Result<Vec<u64>, BenchError> {
        let Some(runtime) = &self.runtime else {
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let start = Instant::now();
                self.call(payload)?;
                samples.push(start.elapsed().as_nanos() as u64);
            }
            return Ok(samples);
        };
        let (bench, payload) = (self.clone(), payload.clone());
        let task = runtime.spawn(async move {
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let start = Instant::now();
                bench.call_async(&payload).await?;
                samples.push(start.elapsed().as_nanos() as u64);
            }
            Ok::<_, BenchError>(samples)
        });
        block_on(task).expect("the calling task does not panic")
    }

    /// One `echo` call (blocking).
    ///
    /// # Errors
    ///
    /// The call failed.
    pub fn call(&self, args: &Payload) -> Result<String, RpcError> {
        self.client.call_blocking(&self.context, "echo", args)
    }

    /// One `echo` call.
    ///
    /// # Errors
    ///
    /// The call failed.
    pub async fn call_async(&self, args: &Payload) -> Result<String, RpcError> {
        self.client.call(&self.context, "echo", args).await
    }

    /// One `count` cast (blocking).
    ///
    /// # Errors
    ///
    /// The cast failed.
    pub fn cast(&self, args: &Payload) -> Result<(), RpcError> {
        block_on(self.client.cast(&self.context, "count", args))
    }

    /// The casts the server processed.
    pub fn casts(&self) -> &Counter {
        &self.casts
    }

    /// The client.
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    /// The queues it declared on RabbitMQ (its topic queue and server queue).
    pub fn queues(&self) -> Vec<String> {
        vec![self.topic.clone(), format!("{}.bench", self.topic)]
    }
}

impl Drop for RpcBench {
    fn drop(&mut self) {
        shut_down(&self.server, &mut self.serving);
    }
}

/// A notification listener counting `info` notifications on one executor, and a
/// notifier sending them.
#[derive(Debug)]
pub struct NotifyBench {
    listener: Server,
    serving: Option<JoinHandle<Result<Epoch, ServerError>>>,
    notifier: Notifier,
    received: Arc<Counter>,
    context: Context,
    topic: String,
}

impl NotifyBench {
    /// Starts the listener on `kind` over `url` and a notifier.
    ///
    /// # Errors
    ///
    /// The transport cannot be opened or the listener cannot start.
    pub fn start(url: &str, kind: ExecutorKind) -> Result<NotifyBench, BenchError> {
        let topic = fresh_topic();
        let received = Arc::new(Counter::default());
        let counter = received.clone();
        let endpoint = NotificationEndpoint::new().on(
            Priority::Info,
            move |_n: notify::Notification<Payload>| {
                counter.add();
                NotificationResult::Handled
            },
        );
        let listener = notify::listener(
            open(url)?,
            vec![Target::new(topic.clone())],
            vec![endpoint],
            ListenerOptions::new(),
            kind.build(),
        )
        .build()?;
        let serving = Some(serve(&listener)?);
        let notifier = Notifier::new(open(url)?, "bench").with_topics([topic.clone()]);
        Ok(NotifyBench {
            listener,
            serving,
            notifier,
            received,
            context: Context::new(),
            topic,
        })
    }

    /// Sends one `info` notification (blocking until the transport took it).
    ///
    /// # Errors
    ///
    /// The transport refused it.
    pub fn notify(&self, payload: &Payload) -> Result<(), BenchError> {
        Ok(block_on(self.notifier.info(
            &self.context,
            "bench.event",
            payload,
        ))?)
    }

    /// The notifications the listener processed.
    pub fn received(&self) -> &Counter {
        &self.received
    }

    /// The queue it declared on RabbitMQ.
    pub fn queues(&self) -> Vec<String> {
        vec![format!("{}.info", self.topic)]
    }
}

impl Drop for NotifyBench {
    fn drop(&mut self) {
        shut_down(&self.listener, &mut self.serving);
    }
}

/// Sends `count` messages with `send` and waits until `counter` saw them all; the
/// rate runs from the first send to the last receipt.
///
/// # Errors
///
/// A send failed, or the messages did not all arrive within `limit`.
pub fn throughput(
    count: u64,
    counter: &Counter,
    limit: Duration,
    mut send: impl FnMut() -> Result<(), BenchError>,
) -> Result<crate::stats::Rate, BenchError> {
    let start = Instant::now();
    let target = counter.get() + count;
    for _ in 0..count {
        send()?;
    }
    counter.wait_for(target, limit)?;
    Ok(crate::stats::Rate::new(count, start.elapsed()))
}
