//! Shared set-up for the criterion benchmarks: an echo server on each executor over
//! the in-memory transport.
//!
//! Run: `cargo bench -p benches` (add `-- --quick` for a short run).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use messaging_core::dispatch::block_on;
use messaging_core::reply::ReplyEvent;
use messaging_core::{
    Dispatch, Epoch, Executor, IncomingMessage, Message, SendOptions, Server, ServerError,
    Subscription, Target, Transport,
};
use messaging_executors::{BlockingExecutor, EventLoopExecutor, ThreadPoolExecutor};
use messaging_transports::memory::MemoryTransport;

/// The executors under benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// [`BlockingExecutor`]
    Blocking,
    /// [`ThreadPoolExecutor`]
    ThreadPool,
    /// [`EventLoopExecutor`]
    EventLoop,
}

impl ExecutorKind {
    /// Every kind.
    pub const ALL: [ExecutorKind; 3] = [
        ExecutorKind::Blocking,
        ExecutorKind::ThreadPool,
        ExecutorKind::EventLoop,
    ];

    /// The executor's name.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Blocking => "blocking",
            ExecutorKind::ThreadPool => "thread-pool",
            ExecutorKind::EventLoop => "event-loop",
        }
    }

    /// A new executor of this kind.
    pub fn build(self) -> Box<dyn Executor> {
        match self {
            ExecutorKind::Blocking => Box::new(BlockingExecutor::new()),
            ExecutorKind::ThreadPool => Box::new(ThreadPoolExecutor::new()),
            ExecutorKind::EventLoop => Box::new(EventLoopExecutor::new()),
        }
    }
}

#[derive(Debug, Default)]
struct Processed {
    count: Mutex<usize>,
    changed: Condvar,
}

/// A running server that echoes calls and counts casts.
#[derive(Debug)]
pub struct EchoServer {
    transport: Arc<MemoryTransport>,
    server: Server,
    serving: Option<JoinHandle<Result<Epoch, ServerError>>>,
    processed: Arc<Processed>,
    target: Target,
}

impl EchoServer {
    /// Starts a server of `kind` on a private bus and serves it on its own thread.
    pub fn start(kind: ExecutorKind) -> EchoServer {
        let transport = Arc::new(MemoryTransport::new());
        let processed = Arc::new(Processed::default());
        let counter = processed.clone();
        // Handlers are cheap: the event loop runs them as tasks, the others inline.
        let asynchronous = kind == ExecutorKind::EventLoop;
        let dispatcher = move |batch: Vec<IncomingMessage>| {
            let counter = counter.clone();
            let work = move || {
                for mut incoming in batch {
                    if incoming.is_call() {
                        let body = incoming.message().body.clone();
                        let _ = incoming.reply(Ok(body));
                    } else {
                        *counter.count.lock().unwrap() += 1;
                        counter.changed.notify_all();
                    }
                }
            };
            if asynchronous {
                Dispatch::future(async move { work() })
            } else {
                Dispatch::blocking(work)
            }
        };
        let server = Server::builder(
            transport.clone(),
            Subscription::Rpc(Target::new("bench").with_server("s")),
            dispatcher,
            kind.build(),
        )
        .build()
        .expect("a valid server");
        server.start().expect("start");
        let runner = server.clone();
        let serving = thread::spawn(move || runner.execute());
        EchoServer {
            transport,
            server,
            serving: Some(serving),
            processed,
            target: Target::new("bench").with_server("s"),
        }
    }

    /// One call, returning the echoed body.
    pub fn call(&self, body: Bytes) -> Bytes {
        let mut reply = block_on(self.transport.call(
            &self.target,
            Message::new(body),
            &SendOptions::default(),
        ))
        .expect("call");
        match reply.recv_timeout(Some(Duration::from_secs(10))) {
            Ok(ReplyEvent::Reply(Ok(body))) => body,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// One cast.
    pub fn cast(&self, body: Bytes) {
        block_on(
            self.transport
                .cast(&self.target, Message::new(body), &SendOptions::default()),
        )
        .expect("cast");
    }

    /// Casts processed so far.
    pub fn processed(&self) -> usize {
        *self.processed.count.lock().unwrap()
    }

    /// Blocks until at least `n` casts have been processed.
    pub fn wait_processed(&self, n: usize) {
        let guard = self.processed.count.lock().unwrap();
        let (guard, timeout) = self
            .processed
            .changed
            .wait_timeout_while(guard, Duration::from_secs(60), |c| *c < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "only {} of {n} casts processed",
            *guard
        );
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.server.stop();
        let _ = self.server.wait();
        if let Some(serving) = self.serving.take() {
            let _ = serving.join();
        }
    }
}

/// A server that is never fed, for timing start → stop → wait cycles.
pub fn idle_server(kind: ExecutorKind) -> Server {
    Server::builder(
        Arc::new(MemoryTransport::new()),
        Subscription::Rpc(Target::new("bench").with_server("s")),
        |batch: Vec<IncomingMessage>| Dispatch::blocking(move || drop(batch)),
        kind.build(),
    )
    .build()
    .expect("a valid server")
}

/// A counter a benchmark can use to spread payloads.
pub fn payload(size: usize) -> Bytes {
    static SEED: AtomicUsize = AtomicUsize::new(0);
    let seed = SEED.fetch_add(1, Ordering::Relaxed) as u8;
    Bytes::from(
        (0..size)
            .map(|i| seed.wrapping_add(i as u8))
            .collect::<Vec<u8>>(),
    )
}
