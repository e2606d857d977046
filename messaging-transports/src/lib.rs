//! Transports for the messaging framework, and [`open`] to pick one by URL.
//!
//! | scheme | transport | cargo feature |
//! |---|---|---|
//! | `memory://`, `fake://` | [`memory::MemoryTransport`]: the embedded in-process bus | always |
//!
//! RabbitMQ (`rabbit://`, oslo.messaging wire compatible) and NATS (`nats://`) will join
//! behind their own features, so that a user of the in-memory transport compiles no
//! broker client.
//!
//! *Compiler support: requires rustc 1.89+.*

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

pub mod memory;

use std::sync::Arc;

use messaging_core::{Transport, TransportError, TransportUrl};

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
        other => Err(TransportError::UnknownScheme {
            scheme: other.to_owned(),
            hint: " (this build knows memory:// and fake://)".to_owned(),
        }),
    }
}
