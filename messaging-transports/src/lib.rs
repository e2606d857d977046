//! Transports for the messaging framework, and [`open`] to pick one by URL.
//!
//! | scheme | transport | cargo feature |
//! |---|---|---|
//! | `memory://`, `fake://` | [`memory::MemoryTransport`]: the embedded in-process bus | always |
//! | `rabbit://`, `kombu://`, `amqp://`, `amqps://` | `rabbit::RabbitTransport`: RabbitMQ, oslo.messaging's wire protocol | `rabbit` |
//! | `nats://`, `tls://` | `nats::NatsTransport`: NATS (core for RPC, JetStream for notifications) | `nats` |
//!
//! Each broker transport sits behind its own feature, so a user of the in-memory
//! transport compiles no broker client.
//!
//! # Delivery guarantees
//!
//! What each pattern promises on each broker (details in each transport's module docs,
//! and in `docs/DELIVERY.md`):
//!
//! | pattern | RabbitMQ (`rabbit`) | NATS (`nats`) |
//! |---|---|---|
//! | call | at-most-once handling: the send returns once the broker confirmed a queue took the request (retried until the call's timeout while no queue does); acknowledged when the dispatcher accepts it. The reply is at-most-once (retried while its queue is missing). | at-most-once: published on core NATS, nothing stored; a request nobody receives, or one a listener drops (its subscription holds `max_pending`), ends in the caller's timeout. The reply is at-most-once. |
//! | cast (topic, server) | at-most-once handling, but the broker stores it: the send returns once the broker confirmed the topic's (or server's) queue took it, retrying while none does and then failing with `Undeliverable` (at once with `at_least_once`); the queue keeps it while no server consumes (across broker restarts with `amqp_durable_queues`). | at-most-once: lost if no server is subscribed at that moment, or if the listener's subscription holds `max_pending` already; `at_least_once` has no effect. |
//! | fanout cast | at-most-once, to each server's fanout queue that exists when it is published (no error with no servers). | at-most-once, to each server subscribed at that moment. |
//! | notification | at-least-once: confirmed into the `<topic>.<priority>` (and pool) queues, acknowledged after dispatch, requeued on request or when a listener dies; duplicates possible. | at-least-once: stored by JetStream (the publish waits for the stream's acknowledgement) for each durable consumer, acknowledged after dispatch, `Nak`ed on requeue, redelivered after the acknowledgement wait if a listener dies; never dropped for a full queue. |
//!
//! Nothing is dropped silently: on NATS every request or reply dropped on this side is
//! counted (`nats::NatsTransport::stats`) and reported in a warning per burst; on
//! RabbitMQ the broker's prefetch bounds what a listener is sent, so nothing is dropped
//! for a full queue. On both, a request whose caller gave up, or a message over
//! `max_message_size`, is dropped with a log line.
//!
//! *Compiler support: requires rustc 1.89+.*

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

#[cfg(any(feature = "rabbit", feature = "nats"))]
mod buffer;
#[cfg(any(feature = "rabbit", feature = "nats"))]
mod consumer;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod memory;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
#[cfg(any(feature = "rabbit", feature = "nats"))]
mod pending;
#[cfg(feature = "rabbit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbit")))]
pub mod rabbit;

use std::sync::Arc;

use messaging_core::{Transport, TransportError, TransportUrl};

fn known_schemes() -> String {
    let mut schemes = vec!["memory://", "fake://"];
    if cfg!(feature = "rabbit") {
        schemes.extend(["rabbit://", "kombu://", "amqp://", "amqps://"]);
    }
    if cfg!(feature = "nats") {
        schemes.extend(["nats://", "tls://"]);
    }
    schemes.join(", ")
}

/// Opens the transport a URL names.
///
/// # Errors
///
/// [`TransportError::InvalidUrl`] for a malformed URL, [`TransportError::UnknownScheme`]
/// for a scheme no compiled-in transport handles.
///
/// # Examples
///
/// ```
/// let transport = messaging_transports::open("memory:///tests")?;
/// assert_eq!(transport.name(), "memory");
/// assert!(messaging_transports::open("carrier-pigeon://coop").is_err());
/// # Ok::<(), messaging_core::TransportError>(())
/// ```
pub fn open(url: &str) -> Result<Arc<dyn Transport>, TransportError> {
    let url = TransportUrl::parse(url)?;
    match url.driver() {
        "memory" | "fake" => Ok(Arc::new(memory::MemoryTransport::open(&url)?)),
        #[cfg(feature = "rabbit")]
        "rabbit" | "kombu" | "amqp" | "amqps" => Ok(Arc::new(rabbit::RabbitTransport::open(&url)?)),
        #[cfg(not(feature = "rabbit"))]
        "rabbit" | "kombu" | "amqp" | "amqps" => Err(TransportError::UnknownScheme {
            scheme: url.scheme().to_owned(),
            hint: " (enable the `rabbit` feature of messaging-transports)".to_owned(),
        }),
        #[cfg(feature = "nats")]
        "nats" | "tls" => Ok(Arc::new(nats::NatsTransport::open(&url)?)),
        #[cfg(not(feature = "nats"))]
        "nats" | "tls" => Err(TransportError::UnknownScheme {
            scheme: url.scheme().to_owned(),
            hint: " (enable the `nats` feature of messaging-transports)".to_owned(),
        }),
        other => Err(TransportError::UnknownScheme {
            scheme: other.to_owned(),
            hint: format!(" (this build knows {})", known_schemes()),
        }),
    }
}

/// Checks a URL the way [`open`] does (scheme, hosts, every option and its bounds, the
/// TLS files it names) without opening anything: no connection, no thread, no bus.
/// `Ok` means [`open`] takes the URL (unless a file it names changes in between).
///
/// # Errors
///
/// What [`open`] returns for the same URL: [`TransportError::InvalidUrl`] naming the
/// option at fault (never a password), [`TransportError::UnknownScheme`].
///
/// # Examples
///
/// ```
/// use messaging_core::TransportUrl;
///
/// let url: TransportUrl = "memory://?codec=json".parse()?;
/// messaging_transports::check(&url)?;
/// let bad: TransportUrl = "memory://?prefetch=1".parse()?;
/// let error = messaging_transports::check(&bad).unwrap_err();
/// assert!(error.to_string().contains("unknown option `prefetch`"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check(url: &TransportUrl) -> Result<(), TransportError> {
    match url.driver() {
        "memory" | "fake" => memory::MemoryTransport::check(url),
        #[cfg(feature = "rabbit")]
        "rabbit" | "kombu" | "amqp" | "amqps" => rabbit::check(url),
        #[cfg(feature = "nats")]
        "nats" | "tls" => nats::check(url),
        // The error `open` gives for a scheme this build has no transport for.
        _ => open(&url.to_string_with_secrets()).map(drop),
    }
}

/// The URL options the transport of `driver` (a URL's [`TransportUrl::driver`])
/// understands, or `None` when this build has no transport for it (its feature is
/// off, or there is no such transport). Any other option in a URL is an error.
///
/// # Examples
///
/// ```
/// let memory = messaging_transports::known_options("memory").unwrap();
/// assert!(memory.contains(&"control_exchange"));
/// assert!(messaging_transports::known_options("carrier-pigeon").is_none());
/// ```
pub fn known_options(driver: &str) -> Option<&'static [&'static str]> {
    match driver {
        "memory" | "fake" => Some(memory::KNOWN_OPTIONS),
        #[cfg(feature = "rabbit")]
        "rabbit" | "kombu" | "amqp" | "amqps" => Some(rabbit::KNOWN_OPTIONS),
        #[cfg(feature = "nats")]
        "nats" | "tls" => Some(nats::KNOWN_OPTIONS),
        _ => None,
    }
}
