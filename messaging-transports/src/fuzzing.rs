//! Entry points for fuzzing the decoders an outsider can reach (feature `fuzzing`;
//! not part of the API). Each takes raw bytes as a peer could send them and returns
//! a summary of what was decoded or the error's text, so a harness can check
//! properties (no panic, bounded allocation, no secret in an error) without seeing the
//! transports' private types. `messaging-testkit`'s `tests/fuzz.rs` drives them.
//!
//! The first byte of an input picks a shape, so that mutations reach past the outer
//! layer: on RabbitMQ, whether the rest is wrapped in oslo's 2.0 envelope (the inner
//! message double-encoded, as oslo does) or taken as the raw body; on NATS, whether
//! the frame's length prefix is computed (header and payload split at the second
//! byte) or taken from the input.

use messaging_core::{TransportError, TransportUrl};

/// The memory transport's URL options, as [`open`](crate::open) reads them.
pub fn memory_options(url: &TransportUrl) -> Result<(), TransportError> {
    crate::memory::MemoryTransport::open(url).map(drop)
}

/// The RabbitMQ transport's URL options.
#[cfg(feature = "rabbit")]
pub fn rabbit_options(url: &TransportUrl) -> Result<(), TransportError> {
    crate::rabbit::fuzzing::options(url)
}

/// A body as a RabbitMQ consumer receives it, decoded as a request, a reply and a
/// notification in turn.
#[cfg(feature = "rabbit")]
pub fn rabbit_body(input: &[u8]) -> Vec<Result<String, String>> {
    crate::rabbit::fuzzing::bodies(input)
}

/// The NATS transport's URL options.
#[cfg(feature = "nats")]
pub fn nats_options(url: &TransportUrl) -> Result<(), TransportError> {
    crate::nats::fuzzing::options(url)
}

/// A NATS message body, decoded as a request or notification and as a reply.
#[cfg(feature = "nats")]
pub fn nats_body(input: &[u8]) -> Vec<Result<String, String>> {
    crate::nats::fuzzing::bodies(input)
}
