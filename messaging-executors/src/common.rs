//! Pieces every executor shares: calling the dispatcher safely, and backing off when a
//! listener reports an error.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use messaging_core::{Dispatch, Dispatcher, IncomingMessage, TransportError};

/// Calls the dispatcher; a panic inside it (a bug in the dispatcher, not a handler) is
/// logged and the batch is dropped, so the polling loop keeps going.
pub(crate) fn dispatch(
    dispatcher: &dyn Dispatcher,
    batch: Vec<IncomingMessage>,
) -> Option<Dispatch> {
    match catch_unwind(AssertUnwindSafe(|| dispatcher.dispatch(batch))) {
        Ok(dispatch) => Some(dispatch),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "dispatcher panicked; the batch was dropped");
            None
        }
    }
}

/// Exponential backoff between polls that fail (10 ms doubling to 1 s), whether the
/// listener returned an error or panicked (the server's listener turns a panic into an
/// error). Transports reconnect on their own; this only keeps a persistently failing
/// listener from spinning. A stopped listener reports `Closed` on the next poll (the
/// server's listener does so even if that poll fails), so a stop is noticed within one
/// backoff interval.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Logs the error and returns how long to wait before polling again.
    pub(crate) fn after(&mut self, executor: &str, error: &TransportError) -> Duration {
        let delay = self.next;
        tracing::error!(executor, %error, retry_in = ?delay, "polling the listener failed");
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}
