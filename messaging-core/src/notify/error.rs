//! [`NotifyError`]: why a notification was not (fully) sent.

use std::fmt;

use super::driver::NotifyDriver;
use crate::error::{InvalidTarget, TransportError};

/// A notification could not be sent, or not everywhere.
///
/// [`InvalidTarget`](NotifyError::InvalidTarget) and [`Codec`](NotifyError::Codec)
/// are found before anything is sent: nothing was. A transport failure is one send
/// (one driver to one topic) that failed; every other driver and topic was still
/// tried, and the sends not reported went out.
///
/// oslo's notifier logs driver failures and raises nothing, so its callers cannot
/// know; here the caller gets them, and may drop them on purpose (`let _ =`) or log
/// them where oslo would.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// A topic is missing or invalid (nothing was sent).
    #[error(transparent)]
    InvalidTarget(#[from] InvalidTarget),
    /// The payload could not be encoded (nothing was sent).
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// The one send that failed; the others went out.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Several sends failed, each listed once (in the order they were tried); the
    /// others went out.
    #[error("{} notification sends failed: {}", .0.len(), Failures(.0))]
    Several(Vec<SendFailure>),
}

impl NotifyError {
    /// The transport errors, with the driver and topic of each when known (several
    /// failures), or the one transport error: to test for a timeout or a refusal
    /// whatever the number of drivers.
    pub fn transport_errors(&self) -> Vec<&TransportError> {
        match self {
            NotifyError::Transport(error) => vec![error],
            NotifyError::Several(failures) => failures.iter().map(|f| &f.error).collect(),
            NotifyError::InvalidTarget(_) | NotifyError::Codec(_) => Vec::new(),
        }
    }
}

/// One send that failed: which driver, to which topic, and why.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SendFailure {
    /// The driver (`messaging` or `messagingv2`).
    pub driver: NotifyDriver,
    /// The topic (the notification went to `<topic>.<priority>`).
    pub topic: String,
    /// What the transport said.
    pub error: TransportError,
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to `{}`: {}", self.driver, self.topic, self.error)
    }
}

struct Failures<'a>(&'a [SendFailure]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, failure) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}
