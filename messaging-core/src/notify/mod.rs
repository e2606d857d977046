//! Notifications: a [`Notifier`] sends them with oslo's seven priorities; a listener
//! (a [`Server`] with a [`NotificationDispatcher`]) hands them to
//! [`NotificationEndpoint`] handlers, filtered, with requeue on request, in pools
//! (competing consumers inside a pool, one copy per pool) and in batches.
//!
//! Sending follows oslo's notifier: the context is redacted
//! ([`Context::redacted`](crate::Context::redacted)) so no token leaves in a
//! notification; a notifier has one or more [`NotifyDriver`]s (`messaging` for oslo's
//! message format 1.0, `messagingv2` for 2.0, `log`, `noop`, and `routing` with a
//! [`RoutingTable`] of [`Pattern`]s, read from oslo's YAML `routing_config` with the
//! `yaml` feature); a failing driver does not stop the others, and the caller gets
//! the failures ([`NotifyError`]) where oslo only logs them; sends are retried as
//! [`Retry`] says (oslo's `retry`).
//!
//! Delivery is acknowledged after dispatch: a notification whose handler asks for
//! requeue (or panics) is delivered again when the listener allows requeue. Listeners
//! read both of oslo's message formats.

mod driver;
mod error;
mod filter;
mod fnmatch;
mod listener;
mod mask;
mod notifier;
mod routing;

use std::sync::Arc;
use std::time::Duration;

pub use driver::{NotifyDriver, Retry, UnknownDriver};
pub use error::{NotifyError, SendFailure};
pub use filter::NotificationFilter;
pub use fnmatch::Pattern;
pub use listener::{
    Notification, NotificationDispatcher, NotificationEndpoint, NotificationResult,
};
pub use notifier::{DEFAULT_TOPIC, Notifier};
#[cfg(feature = "yaml")]
#[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
pub use routing::RoutingError;
pub use routing::{Route, RoutingTable};

use crate::executor::Executor;
use crate::server::{Server, ServerBuilder};
use crate::target::Target;
use crate::transport::{ListenOptions, Subscription, Transport};

/// How a notification listener consumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerOptions {
    /// Listeners of the same pool share one copy of each notification.
    pub pool: Option<String>,
    /// Let handlers requeue (oslo's listeners default to false).
    pub allow_requeue: bool,
    /// Deliver batches of up to this many (`None`: one at a time).
    pub batch_size: Option<usize>,
    /// Wait at most this long to fill a batch.
    pub batch_timeout: Option<Duration>,
}

impl ListenerOptions {
    /// One at a time, no pool, no requeue.
    pub fn new() -> Self {
        ListenerOptions::default()
    }

    /// Joins a pool.
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = Some(pool.into());
        self
    }

    /// Allows requeue.
    pub fn allow_requeue(mut self, allow: bool) -> Self {
        self.allow_requeue = allow;
        self
    }

    /// Batches of up to `size`, waiting at most `timeout` to fill one.
    pub fn batch(mut self, size: usize, timeout: Option<Duration>) -> Self {
        self.batch_size = Some(size.max(1));
        self.batch_timeout = timeout;
        self
    }
}

/// A [`ServerBuilder`] for a notification listener on `targets` (topics), subscribed
/// to every priority the endpoints handle.
pub fn listener(
    transport: Arc<dyn Transport>,
    targets: Vec<Target>,
    endpoints: Vec<NotificationEndpoint>,
    options: ListenerOptions,
    executor: impl Executor,
) -> ServerBuilder {
    let dispatcher = NotificationDispatcher::new(endpoints, options.allow_requeue);
    let subscription = Subscription::Notifications {
        targets,
        priorities: dispatcher.priorities(),
        pool: options.pool,
    };
    let listen = match options.batch_size {
        Some(size) => ListenOptions::batch(size, options.batch_timeout),
        None => ListenOptions::default(),
    };
    Server::builder(transport, subscription, dispatcher, executor).listen_options(listen)
}
