//! The contracts of a transport-agnostic messaging framework, and the race-free server
//! lifecycle at its heart.
//!
//! This crate is the stable core of the workspace (as `tower-service` or `tracing-core`
//! are of theirs): it defines what the other crates plug into and pulls in no async
//! runtime and no broker client.
//!
//! * [`Target`]: where messages go and what servers consume (oslo.messaging's rules).
//! * [`TransportUrl`]: oslo's `driver://user:pass@host:port,host2/vhost?k=v` grammar;
//!   passwords never appear in `Debug`, `Display` or errors.
//! * [`Message`], [`Context`], [`Priority`], [`RemoteError`]: what travels.
//! * [`Transport`] sends and creates [`Listener`]s; a listener hands out
//!   [`IncomingMessage`]s, which are acknowledged, requeued and replied to
//!   ([`reply`] holds the caller's side of a reply).
//! * [`Dispatcher`] turns delivered messages into a [`Dispatch`] (blocking or async work).
//! * [`Executor`] polls a listener and runs the dispatched work; the implementations
//!   (blocking, thread pool, tokio event loop) live in `messaging-executors`.
//! * [`Server`] ties a transport, a dispatcher and an executor together under one
//!   lifecycle: `start` / `execute` / `stop` / `wait`, each once per [`Epoch`], safe
//!   from any thread in any order, with timeouts and "possible hang" warnings. The
//!   contract is tabled in the [`server`] module docs. It is the fix of the
//!   oslo.messaging start/stop race this project grew from, plus the defects oslo
//!   still has.
//!
//! The lifecycle's state machine is checked with [loom](https://docs.rs/loom):
//! `RUSTFLAGS="--cfg loom" cargo test -p messaging-core --release --lib loom_`.
//!
//! ## Crate feature flags
//!
//! * `yaml` (off by default): read oslo's notification `routing_config` file into a
//!   [`notify::RoutingTable`] (`RoutingTable::from_yaml_file`).
//!
//! *Compiler support: requires rustc 1.89+.*

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

pub mod codec;
pub mod dispatch;
mod error;
mod executor;
pub mod ids;
mod message;
pub mod notify;
pub mod reply;
pub mod rpc;
pub mod server;
#[doc(hidden)]
pub mod spin;
mod sync;
mod target;
pub mod timer;
mod transport;
mod untrusted;
mod url;

pub use dispatch::{BoxFuture, Dispatch, Dispatcher};
pub use error::{ExecutorError, InvalidTarget, InvalidTransportUrl, ServerError, TransportError};
pub use executor::{Executor, WaitTimedOut};
pub use message::{
    Context, Message, Meta, NotificationFormat, NotificationMeta, Priority, RemoteError,
    RequestMeta, UnknownPriority,
};
pub use server::{CallOptions, Epoch, Server, ServerBuilder, ServerState, StepState, WeakServer};
pub use target::Target;
pub use transport::{
    Acknowledger, IncomingMessage, IncomingParts, ListenOptions, Listener, Polled, SendOptions,
    Subscription, TRANSIT_ALLOWANCE, Transport, caller_deadline,
};
pub use untrusted::Untrusted;
pub use url::{Secret, TransportHost, TransportUrl};
