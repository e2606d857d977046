//! Executors for messaging servers: where and how dispatched work runs.
//!
//! | executor | handlers run | concurrency | `execute()` | choose it for |
//! |---|---|---|---|---|
//! | [`BlockingExecutor`] | in the thread that calls `execute()` | one at a time, in order | runs the loop until stopped | strict ordering, no threads of its own, tests |
//! | [`ThreadPoolExecutor`] | on up to 64 threads (configurable): one per core at once, more when the queue stalls; fed by a bounded queue | concurrent | parks until stopped | blocking handlers (database calls, ...), oslo's threading executor |
//! | [`EventLoopExecutor`] | as tokio tasks; blocking work on tokio's blocking pool | concurrent, bounded | parks until stopped | async handlers, many slow calls in flight |
//!
//! All three implement [`messaging_core::Executor`] and share one lifecycle contract,
//! enforced by [`messaging_core::Server`]:
//!
//! * `start()` returns once set-up is done and never blocks on message processing;
//!   from then on `stop()` is safe;
//! * `stop()` does not wait for handlers and is safe from inside one; after it returns
//!   no new message is taken;
//! * `wait()` returns once every message taken has been processed and every thread or
//!   task of the epoch has finished; calling it from inside a handler is an error, not
//!   a deadlock;
//! * each step runs once per epoch, a restart begins a new epoch, and every call takes
//!   a timeout — `execute()`'s included: it then returns `Timeout` once it has served
//!   that long, and the epoch goes on;
//! * dropping the last handle of a running server stops it without waiting, and every
//!   message already taken is still processed to completion and answered (the server
//!   drains the epoch in the background before it drops the executor);
//! * a poll that fails or panics is logged and retried after a backoff (10 ms doubling
//!   to 1 s); `Server::state().failed_polls` shows a server that takes nothing.
//!
//! Each executor passes the conformance suite in `messaging-testkit`
//! (`executor_conformance!`), which ports oslo.messaging's `TestServerLocking`, the seed
//! commit's scenarios and the oslo defects this project fixes.
//!
//! # Examples
//!
//! A complete RPC service and its client over the in-memory transport: an endpoint
//! with a typed handler, a server on the thread pool, a call, a typed remote error, a
//! notification, and a clean stop.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use messaging_core::dispatch::block_on;
//! use messaging_core::notify::{ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier};
//! use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient};
//! use messaging_core::{Context, Priority, Target};
//! use messaging_executors::{BlockingExecutor, ThreadPoolExecutor};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add {
//!     a: i64,
//!     b: i64,
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = messaging_transports::open("memory:///quickstart")?;
//!
//! // The server: one endpoint, one method, on a thread pool.
//! let endpoint = Endpoint::new().method("add", |_ctx: Context, args: Add| {
//!     if args.a < 0 {
//!         return Err(HandlerError::new("ValueError", "a must not be negative").expected());
//!     }
//!     Ok(args.a + args.b)
//! });
//! let target = Target::new("calculator").with_server("calc-1");
//! let server = rpc::server(transport.clone(), target, vec![endpoint], ThreadPoolExecutor::new())?
//!     .build()?;
//! server.start()?;
//!
//! // The client: a call returns the result or a typed error.
//! let client = RpcClient::new(transport.clone(), Target::new("calculator"));
//! let sum: i64 = client.call_blocking(&Context::new(), "add", &Add { a: 2, b: 3 })?;
//! assert_eq!(sum, 5);
//! let err = client
//!     .call_blocking::<_, i64>(&Context::new(), "add", &Add { a: -1, b: 3 })
//!     .unwrap_err();
//! assert_eq!(err.remote().map(|r| r.class.as_str()), Some("ValueError"));
//!
//! // Notifications: a listener on the blocking executor, served by execute().
//! let (tx, rx) = std::sync::mpsc::channel();
//! let on_info = NotificationEndpoint::new().on(Priority::Info, move |n: Notification<String>| {
//!     tx.send(n.payload).unwrap();
//!     NotificationResult::Handled
//! });
//! let listener = messaging_core::notify::listener(
//!     transport.clone(),
//!     vec![Target::new("notifications")],
//!     vec![on_info],
//!     ListenerOptions::new(),
//!     BlockingExecutor::new(),
//! )
//! .build()?;
//! listener.start()?;
//! let serving = {
//!     let listener = listener.clone();
//!     std::thread::spawn(move || listener.execute())
//! };
//! let notifier = Notifier::new(transport, "calc-1");
//! block_on(notifier.info(&Context::new(), "calculator.added", &"2 + 3".to_owned()))?;
//! assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5))?, "2 + 3");
//!
//! // Stop: no new message is taken; wait: everything taken is done.
//! for s in [&server, &listener] {
//!     s.stop()?;
//!     s.wait()?;
//! }
//! serving.join().unwrap()?;
//! # Ok(())
//! # }
//! ```
//!
//! A handler that stops its own server holds a [`WeakServer`](messaging_core::WeakServer)
//! and calls `stop()`, which never waits for handlers; `wait()` belongs to another
//! thread (see the `lifecycle` example).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

mod blocking;
mod common;
mod event_loop;
mod thread_pool;

pub use blocking::BlockingExecutor;
pub use event_loop::{DEFAULT_MAX_CONCURRENCY, EventLoopExecutor};
pub use thread_pool::{DEFAULT_MAX_WORKERS, DEFAULT_QUEUE_CAPACITY, STALL, ThreadPoolExecutor};
