//! Benchmarks of the messaging workspace, and the pieces of the `compare` command.
//!
//! * [`ours`]: an RPC server (or notification listener) on one executor over any
//!   transport URL, with a client — what the criterion benches and `compare` time;
//! * [`raw`]: the limits — channels between threads and tasks, raw lapin, raw
//!   async-nats — with the same message patterns;
//! * [`oslo`]: runs the Python oslo.messaging peer benchmark (`interop/oslo_bench.py`);
//! * [`scale`]: memory per in-flight message and latency under concurrent clients;
//! * [`stats`]: percentiles, rates, medians of runs;
//! * [`report`]: the table, the JSON, `docs/PERFORMANCE.md` and its SVG chart.
//!
//! Criterion: `cargo bench -p benches` (memory:// always; RabbitMQ and NATS when
//! `MESSAGING_TEST_RABBIT_URL` / `MESSAGING_TEST_NATS_URL` are set).
//! Comparison: `cargo run --release -p benches --bin compare [-- --quick]`.

pub mod machine;
pub mod oslo;
pub mod ours;
pub mod raw;
pub mod report;
pub mod scale;
pub mod stats;

use std::sync::Arc;

use messaging_core::{Dispatch, Executor, IncomingMessage, Server, Subscription, Target};
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

/// The transports the criterion benches run on: `memory://` always, RabbitMQ and NATS
/// when `MESSAGING_TEST_RABBIT_URL` / `MESSAGING_TEST_NATS_URL` name them.
pub fn bench_transports() -> Vec<(&'static str, String)> {
    let mut transports = vec![("memory", "memory:///bench".to_owned())];
    for (name, variable) in [
        ("rabbit", "MESSAGING_TEST_RABBIT_URL"),
        ("nats", "MESSAGING_TEST_NATS_URL"),
    ] {
        match std::env::var(variable) {
            Ok(url) if !url.is_empty() => transports.push((name, url)),
            _ => eprintln!("{name}: skipped ({variable} is not set)"),
        }
    }
    transports
}
