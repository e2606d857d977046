//! [`RpcError`] and [`HandlerError`].

use std::fmt;
use std::time::Duration;

use crate::codec::CodecError;
use crate::error::{InvalidTarget, TransportError};
use crate::message::RemoteError;

/// The module oslo.messaging reports its dispatcher errors from.
pub const DISPATCHER_MODULE: &str = "oslo_messaging.rpc.dispatcher";
/// Class of the remote error for a method no compatible endpoint has.
pub const NO_SUCH_METHOD: &str = "NoSuchMethod";
/// Class of the remote error for a version or namespace no endpoint serves.
pub const UNSUPPORTED_VERSION: &str = "UnsupportedVersion";
/// Class of the remote error for a handler that panicked.
pub const HANDLER_PANIC: &str = "HandlerPanic";
/// Class of the remote error for a result larger than the transport takes.
pub const MESSAGE_TOO_LARGE: &str = "MessageTooLarge";

/// Why an RPC call or cast failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The target breaks oslo's rules (no topic; a fanout call).
    #[error(transparent)]
    InvalidTarget(#[from] InvalidTarget),
    /// A version is not `major.minor[.revision]`.
    #[error("version must contain a major and minor integer, got `{0}`")]
    InvalidVersion(String),
    /// The requested version is above the client's version cap.
    #[error("requested version {version} is incompatible with the version cap {cap}")]
    VersionCap {
        /// The version asked for.
        version: String,
        /// The cap.
        cap: String,
    },
    /// The arguments or the result could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The transport failed to send.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// No reply within the call's timeout (oslo's `MessagingTimeout`).
    #[error("timed out after {after:?} waiting for a reply to {method} on {target}")]
    Timeout {
        /// The method called.
        method: String,
        /// Where it was sent.
        target: String,
        /// The timeout.
        after: Duration,
    },
    /// The server stopped heartbeating within the call-monitor timeout.
    #[error("no reply or heartbeat for {after:?} from the server handling {method} on {target}")]
    MonitorTimeout {
        /// The method called.
        method: String,
        /// Where it was sent.
        target: String,
        /// The call-monitor timeout.
        after: Duration,
    },
    /// The remote handler failed; match on [`RemoteError::class`]. Boxed: a remote
    /// error is large, and calls return this enum on every path.
    #[error(transparent)]
    Remote(Box<RemoteError>),
    /// The server dropped the call without replying (the transport closed the reply
    /// channel).
    #[error("the reply to {method} on {target} was lost: the server never answered")]
    ReplyLost {
        /// The method called.
        method: String,
        /// Where it was sent.
        target: String,
    },
}

impl RpcError {
    /// Whether the call timed out (no reply, or no heartbeat).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            RpcError::Timeout { .. } | RpcError::MonitorTimeout { .. }
        )
    }

    /// The remote error, if the handler failed.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            RpcError::Remote(remote) => Some(remote.as_ref()),
            _ => None,
        }
    }
}

impl From<RemoteError> for RpcError {
    fn from(remote: RemoteError) -> Self {
        RpcError::Remote(Box::new(remote))
    }
}

/// An error returned by an RPC handler; it reaches the caller as a [`RemoteError`].
///
/// Any `std::error::Error` converts into it with `?` (its class is the error type's
/// name). Mark errors the caller is expected to handle with
/// [`expected`](HandlerError::expected): they are logged at debug level instead of as
/// server errors (oslo's `@expected_exceptions`).
///
/// # Examples
///
/// ```
/// use messaging_core::rpc::HandlerError;
///
/// let err = HandlerError::new("ValueError", "ival can't go negative!")
///     .with_module("builtins")
///     .expected();
/// let remote = err.into_remote();
/// assert_eq!((remote.class.as_str(), remote.module.as_str()), ("ValueError", "builtins"));
///
/// fn parse(s: &str) -> Result<i64, HandlerError> {
///     Ok(s.parse::<i64>()?) // ParseIntError converts
/// }
/// assert_eq!(parse("x").unwrap_err().into_remote().class, "ParseIntError");
/// ```
///
/// An error a Python caller rebuilds as its own exception class, keyword arguments
/// included, when it lists the module in `allowed_remote_exmods`:
///
/// ```
/// use messaging_core::rpc::HandlerError;
/// use serde_json::json;
///
/// let err = HandlerError::new("QuotaExceeded", "Quota exceeded for cores")
///     .with_module("nova.exception")
///     .with_kwargs([("overs", json!(["cores"])), ("allowed", json!(4))]);
/// // Python: nova.exception.QuotaExceeded("Quota exceeded for cores", overs=["cores"], allowed=4)
/// let remote = err.into_remote();
/// assert_eq!(remote.args, [json!("Quota exceeded for cores")]);
/// assert_eq!(remote.kwargs["allowed"], 4);
/// ```
pub struct HandlerError {
    // Boxed: handlers return `Result<_, HandlerError>` on every path.
    remote: Box<RemoteError>,
    expected: bool,
}

impl HandlerError {
    /// An error of class `class` (module `messaging`).
    pub fn new(class: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            remote: Box::new(RemoteError::new(class, "messaging", message)),
            expected: false,
        }
    }

    /// Passes on a remote error from a nested call unchanged.
    pub fn from_remote(remote: impl Into<Box<RemoteError>>) -> Self {
        HandlerError {
            remote: remote.into(),
            expected: false,
        }
    }

    /// Sets the module the class belongs to.
    pub fn with_module(mut self, module: impl Into<String>) -> Self {
        self.remote.module = module.into();
        self
    }

    /// Sets traceback lines.
    pub fn with_traceback(mut self, traceback: Vec<String>) -> Self {
        self.remote.traceback = traceback;
        self
    }

    /// Sets the positional arguments a Python caller rebuilds the error with (by
    /// default the message alone, as Python's `Exception(message)`); see
    /// [`RemoteError::with_args`].
    pub fn with_args<I, V>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<serde_json::Value>,
    {
        self.remote.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one keyword argument a Python caller rebuilds the error with; see
    /// [`RemoteError::with_kwarg`].
    pub fn with_kwarg(
        mut self,
        name: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.remote.kwargs.insert(name.into(), value.into());
        self
    }

    /// Adds keyword arguments a Python caller rebuilds the error with; see
    /// [`RemoteError::with_kwargs`].
    pub fn with_kwargs<I, K, V>(mut self, kwargs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<serde_json::Value>,
    {
        self.remote
            .kwargs
            .extend(kwargs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The error as the caller will see it, without consuming it.
    pub fn remote(&self) -> &RemoteError {
        &self.remote
    }

    /// Marks the error as expected: the caller gets it, the server does not log it as
    /// an error.
    pub fn expected(mut self) -> Self {
        self.expected = true;
        self
    }

    /// Whether it is marked expected.
    pub fn is_expected(&self) -> bool {
        self.expected
    }

    /// The error as the caller will see it.
    pub fn into_remote(self) -> RemoteError {
        *self.remote
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let full = std::any::type_name::<E>();
        let path = full.split('<').next().unwrap_or(full);
        let (module, class) = path.rsplit_once("::").unwrap_or(("", path));
        HandlerError {
            remote: Box::new(RemoteError::new(class, module, error.to_string())),
            expected: false,
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("remote", &self.remote)
            .field("expected", &self.expected)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.remote.class, self.remote.message)
    }
}
