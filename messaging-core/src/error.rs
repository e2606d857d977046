//! Error types of the core contracts.
//!
//! Every error is `Clone` (causes are shared through `Arc`) so that one failure can be
//! delivered to every caller waiting on it: when two threads call `start()` at once and
//! the attempt fails, both get the same error.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::server::{Call, Epoch};
use crate::target::Target;

type Source = Arc<dyn StdError + Send + Sync + 'static>;

// ===== InvalidTarget =====

/// A [`Target`] that does not satisfy the rule of the role it is used in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {target}")]
pub struct InvalidTarget {
    reason: std::borrow::Cow<'static, str>,
    target: Box<Target>,
}

impl InvalidTarget {
    /// A target that breaks `reason`: for transports with rules of their own (a
    /// composed queue name that is too long, ...).
    pub fn new(reason: impl Into<std::borrow::Cow<'static, str>>, target: &Target) -> Self {
        InvalidTarget {
            reason: reason.into(),
            target: Box::new(target.clone()),
        }
    }

    /// The rule that was broken, e.g. "a topic is required to send".
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The offending target.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

// ===== InvalidTransportUrl =====

/// A transport URL that cannot be parsed, or that a transport rejects. It never shows a
/// password: for a URL that could not be parsed it quotes the scheme only (`rabbit://…`),
/// for a parsed URL its redacted form (`rabbit://user:***@host/`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport URL `{url}`: {reason}")]
pub struct InvalidTransportUrl {
    pub(crate) url: String,
    pub(crate) reason: String,
}

impl InvalidTransportUrl {
    /// A parsed URL that a transport rejects (an unknown option value, ...).
    pub fn new(url: &crate::TransportUrl, reason: impl Into<String>) -> Self {
        InvalidTransportUrl {
            url: url.to_string(),
            reason: reason.into(),
        }
    }

    /// Why the URL was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

// ===== TransportError =====

/// An error reported by a transport, a listener or an incoming message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The target is not valid for the operation.
    #[error(transparent)]
    InvalidTarget(#[from] InvalidTarget),
    /// The transport URL is malformed.
    #[error(transparent)]
    InvalidUrl(#[from] InvalidTransportUrl),
    /// No transport is registered for the URL's scheme (or its cargo feature is off).
    #[error("no transport for scheme `{scheme}`{hint}")]
    UnknownScheme {
        /// The scheme that was asked for.
        scheme: String,
        /// Extra advice, e.g. which cargo feature to enable; may be empty.
        hint: String,
    },
    /// The transport does not implement this operation.
    #[error("{operation} is not supported by the {transport} transport")]
    NotSupported {
        /// The transport's name.
        transport: &'static str,
        /// What was asked for.
        operation: &'static str,
    },
    /// The transport, listener or reply channel has been closed.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// The broker connection failed.
    #[error("connection failed: {message}")]
    Connection {
        /// What happened.
        message: String,
        /// The underlying cause, if any.
        #[source]
        source: Option<Source>,
    },
    /// The broker refused the operation for good (wrong credentials, access refused,
    /// a queue or exchange declared with other arguments, ...): retrying cannot help,
    /// so nothing retries it.
    #[error("refused by the broker: {message}")]
    Refused {
        /// What was refused and why (never a password).
        message: String,
        /// The underlying cause, if any.
        #[source]
        source: Option<Source>,
    },
    /// The message is larger than the transport accepts (its `max_message_size`
    /// option, or the broker's own limit).
    #[error("the message is {size} bytes, more than the transport's limit of {limit} bytes")]
    MessageTooLarge {
        /// The encoded message's size in bytes.
        size: usize,
        /// The largest size accepted.
        limit: usize,
    },
    /// No queue took the message within its retry budget (for example, a cast to a
    /// topic whose servers are not there, or are re-declaring their queues after a
    /// broker restart). The message was not delivered.
    #[error("not delivered: {0}")]
    Undeliverable(String),
    /// The sender's deadline (its [`SendOptions::timeout`](crate::SendOptions)) passed
    /// before the broker took the message, with no failure seen on the way (a broker
    /// that does not answer): the message may or may not have been taken. A failure
    /// seen before the deadline (a refused connection, a message no queue took) is
    /// reported as itself instead.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// Acknowledging or requeueing a message failed; the message's fate is up to the broker.
    #[error("acknowledge failed: {0}")]
    Acknowledge(String),
    /// Sending a reply failed.
    #[error("reply failed: {0}")]
    Reply(String),
    /// Any other failure.
    #[error("{message}")]
    Other {
        /// What happened.
        message: String,
        /// The underlying cause, if any.
        #[source]
        source: Option<Source>,
    },
}

impl TransportError {
    /// An [`Other`](TransportError::Other) error with a message and no cause.
    pub fn other(message: impl Into<String>) -> Self {
        TransportError::Other {
            message: message.into(),
            source: None,
        }
    }

    /// A [`Connection`](TransportError::Connection) error wrapping its cause.
    pub fn connection(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        TransportError::Connection {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A [`Refused`](TransportError::Refused) error wrapping its cause.
    pub fn refused(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        TransportError::Refused {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// Whether the sender's deadline passed with nothing else to report
    /// ([`TimedOut`](TransportError::TimedOut)).
    pub fn is_timeout(&self) -> bool {
        matches!(self, TransportError::TimedOut(_))
    }

    /// Whether the error says something is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TransportError::Closed(_))
    }

    /// Whether retrying the same operation cannot succeed: the input is invalid
    /// (target, URL, size) or the broker refused it for good.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TransportError::InvalidTarget(_)
                | TransportError::InvalidUrl(_)
                | TransportError::UnknownScheme { .. }
                | TransportError::NotSupported { .. }
                | TransportError::Refused { .. }
                | TransportError::MessageTooLarge { .. }
        )
    }
}

// ===== ExecutorError =====

/// An executor could not start (for example, a thread or runtime could not be created).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ExecutorError {
    message: String,
    #[source]
    source: Option<Source>,
}

impl ExecutorError {
    /// An error with a message and no cause.
    pub fn new(message: impl Into<String>) -> Self {
        ExecutorError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and its cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        ExecutorError {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

// ===== ServerError =====

/// An error from a server lifecycle call (`start`, `execute`, `stop`, `wait`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The call's timeout passed while it waited. Nothing was left half done: the
    /// server is in the state it would have been in had the call not been made, except
    /// that work another thread is running goes on.
    #[error("{call} timed out after {timeout:?} waiting for {waiting_for}")]
    Timeout {
        /// The call that timed out.
        call: Call,
        /// What it was waiting for, e.g. "start to complete".
        waiting_for: &'static str,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The call was made from inside a handler of this same server and would have to
    /// wait for that handler to finish: it would never return.
    #[error(
        "{call} called from inside a handler of this server would deadlock; \
         call stop() from the handler and wait() from another thread"
    )]
    WouldDeadlock {
        /// The refused call.
        call: Call,
    },
    /// The transport could not create the listener.
    #[error("failed to listen on {subscription}: {source}")]
    Listen {
        /// What the server subscribes to.
        subscription: String,
        /// The transport's error.
        #[source]
        source: TransportError,
    },
    /// The executor could not start.
    #[error("executor `{executor}` failed to start: {source}")]
    Executor {
        /// The executor's name.
        executor: &'static str,
        /// Its error.
        #[source]
        source: ExecutorError,
    },
    /// A lifecycle step panicked (a bug in an executor or transport); the step was
    /// reset so that it can be tried again.
    #[error("{call} panicked: {message}")]
    Panicked {
        /// The call whose step panicked.
        call: Call,
        /// The panic message.
        message: String,
    },
    /// The call was pinned to an epoch the server has not reached.
    #[error("{call} was pinned to {requested}, but the server is only at {current}")]
    UnknownEpoch {
        /// The call.
        call: Call,
        /// The epoch asked for.
        requested: Epoch,
        /// The server's current epoch.
        current: Epoch,
    },
    /// The server's configuration is invalid.
    #[error(transparent)]
    InvalidTarget(#[from] InvalidTarget),
    /// A handler cannot decode what the transport's codec delivers.
    #[error(transparent)]
    UnsupportedCodec(#[from] crate::codec::UnsupportedCodec),
}

impl ServerError {
    /// Whether the error is a [`Timeout`](ServerError::Timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ServerError::Timeout { .. })
    }

    /// Whether the error is a [`WouldDeadlock`](ServerError::WouldDeadlock).
    pub fn is_would_deadlock(&self) -> bool {
        matches!(self, ServerError::WouldDeadlock { .. })
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Displays a list of items separated by commas.
pub(crate) struct Joined<'a, T>(pub(crate) &'a [T]);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}
