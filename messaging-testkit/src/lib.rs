//! Test doubles and fixtures for services built on the messaging framework — a product
//! for downstream tests, the way `tower-test` and `tracing-mock` are.
//!
//! * [`fake_transport`]: an in-memory [`FakeTransport`] and its [`FakeHandle`], which
//!   records every send and listener event and injects faults (listen fails, ack fails,
//!   slow delivery, lost replies).
//! * [`stop_endpoint`]: the seed's **non-blocking stop endpoint** — a handler that only
//!   signals, so the test thread does `stop()` and `wait()` and no handler waits for its
//!   own server.
//! * [`ServerThread`]: runs a server's `start()` + `execute()` on its own thread and
//!   guarantees `stop()` + `wait()` when dropped.
//! * [`Recorder`], [`Latch`]: a dispatcher that records what it handled and can hold
//!   handlers in flight; a one-shot signal.
//! * [`RecordingExecutor`]: wraps any executor and records the lifecycle calls it gets.
//! * [`LogCapture`]: asserts on `tracing` output (e.g. the "possible hang" warning).
//! * [`within`], [`Watched`]: watchdogs, so that a deadlock fails a test instead of
//!   hanging CI.
//! * [`functional`]: the **transport-generic functional suite** ported from
//!   oslo.messaging's functional tests — RPC calls, casts, fanout, timeouts, typed
//!   remote errors, versions and namespaces, call-monitor heartbeats, notifications
//!   with pools, batches, requeue and filters — run against any transport URL with
//!   [`functional_suite!`] or [`functional::run_all`].
//! * [`fuzz`]: a small mutation fuzzer for decoders, on stable Rust inside `cargo
//!   test` (what `tests/fuzz.rs` runs over every decoder a peer can reach).
//! * [`conformance`]: the **executor conformance suite** — oslo.messaging's
//!   `TestServerLocking`, the seed's scenarios and the oslo defects this project fixes —
//!   runnable against any [`Executor`](messaging_core::Executor) with
//!   [`executor_conformance!`] or [`conformance::run_all`].
//!
//! *Compiler support: requires rustc 1.89+.*

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

pub mod conformance;
mod fake;
mod fixtures;
pub mod functional;
pub mod fuzz;
mod logs;
mod recording;
mod watchdog;

pub use fake::{FakeHandle, FakeTransport, ListenerCounts, Sent, SentKind, fake_transport};
pub use fixtures::{Latch, Recorder, SERVER_THREAD_LIMIT, STOP, ServerThread, stop_endpoint};
pub use logs::{CapturedEvent, CapturedSpan, LogCapture};
pub use recording::{ExecutorLog, RecordingExecutor};
pub use watchdog::{SCENARIO_LIMIT, Watched, within};

/// `url` with the query option `key` set to `value` (added, or replacing the value
/// the URL gave it), e.g. a broker URL from the environment plus a `queue_ttl` so a
/// test leaves nothing behind.
///
/// ```
/// use messaging_testkit::with_option;
///
/// assert_eq!(with_option("nats://h:4222", "consumer_ttl", "60"), "nats://h:4222?consumer_ttl=60");
/// assert_eq!(with_option("memory://?codec=json", "a", "b"), "memory://?codec=json&a=b");
/// assert_eq!(with_option("memory://?a=1&b=2", "a", "3"), "memory://?b=2&a=3");
/// ```
pub fn with_option(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(key))
        .collect();
    let new = format!("{key}={value}");
    pairs.push(&new);
    format!("{base}?{}", pairs.join("&"))
}

/// `url` with several query options set in turn, as [`with_option`] sets one.
///
/// ```
/// use messaging_testkit::with_options;
///
/// assert_eq!(
///     with_options("rabbit://h/?a=1", &[("b", "2"), ("a", "3")]),
///     "rabbit://h/?b=2&a=3"
/// );
/// ```
pub fn with_options(url: &str, options: &[(&str, &str)]) -> String {
    options.iter().fold(url.to_owned(), |url, (key, value)| {
        with_option(&url, key, value)
    })
}

#[doc(hidden)]
pub mod __private {
    pub use messaging_core::Executor;
}
