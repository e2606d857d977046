//! Executors for messaging servers: where and how dispatched work runs.
//!
//! | executor | handlers run | concurrency | `execute()` | choose it for |
//! |---|---|---|---|---|
//! | [`BlockingExecutor`] | in the thread that calls `execute()` | one at a time, in order | runs the loop until stopped | strict ordering, no threads of its own, tests |
//! | [`ThreadPoolExecutor`] | on up to 64 threads (configurable), fed by a bounded queue | concurrent | parks until stopped | blocking handlers (database calls, ...), oslo's threading executor |
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
//!   a timeout.
//!
//! Each executor passes the conformance suite in `messaging-testkit`
//! (`executor_conformance!`), which ports oslo.messaging's `TestServerLocking`, the seed
//! commit's scenarios and the oslo defects this project fixes.
//!
//! # Examples
//!
//! A server on the thread pool, over the in-memory transport, stopped from inside a
//! handler while the main thread waits:
//!
//! ```
//! use std::sync::{Arc, OnceLock};
//! use messaging_core::dispatch::block_on;
//! use messaging_core::{
//!     Dispatch, IncomingMessage, Message, SendOptions, Server, Subscription, Target,
//!     Transport, WeakServer,
//! };
//! use messaging_executors::ThreadPoolExecutor;
//! use messaging_transports::memory::MemoryTransport;
//!
//! let transport = Arc::new(MemoryTransport::new());
//! let me: Arc<OnceLock<WeakServer>> = Arc::default();
//! let handler_me = me.clone();
//! let server = Server::builder(
//!     transport.clone(),
//!     Subscription::Rpc(Target::new("demo").with_server("s1")),
//!     move |batch: Vec<IncomingMessage>| {
//!         let me = handler_me.clone();
//!         Dispatch::blocking(move || {
//!             for incoming in batch {
//!                 if incoming.message().body == "stop" {
//!                     // stop() is safe from inside a handler: it does not wait for it.
//!                     me.get().and_then(WeakServer::upgrade).unwrap().stop().unwrap();
//!                 }
//!             }
//!         })
//!     },
//!     ThreadPoolExecutor::new(),
//! )
//! .build()?;
//! me.set(server.downgrade()).unwrap();
//!
//! server.start()?;
//! block_on(transport.cast(&Target::new("demo"), Message::new("stop"), &SendOptions::default()))
//!     .unwrap();
//! server.wait()?; // returns once the handler has stopped the server and finished
//! # Ok::<(), messaging_core::ServerError>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

mod blocking;
mod common;
mod event_loop;
mod thread_pool;

pub use blocking::BlockingExecutor;
pub use event_loop::{DEFAULT_MAX_CONCURRENCY, EventLoopExecutor};
pub use thread_pool::{DEFAULT_MAX_WORKERS, DEFAULT_QUEUE_CAPACITY, ThreadPoolExecutor};
