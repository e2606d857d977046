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
