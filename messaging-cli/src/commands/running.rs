//! A server served by its own thread until told to stop, then drained within a grace
//! period: what `serve`, `listen` and the `simulate` servers share.
//!
//! Stopping follows one rule for all of them: the first request stops taking messages
//! (`Server::stop`) and waits for those taken (`Server::wait`, which logs the
//! lifecycle's "possible hang" warning if it is stuck); when the grace period ends, or
//! at a further stop request, the command gives up waiting and fails with the number
//! of messages still being handled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use messaging_core::codec::{CodecKind, UnsupportedCodec};
use messaging_core::server::DEFAULT_LOG_AFTER;
use messaging_core::{
    CallOptions, Dispatch, Dispatcher, Epoch, Executor, IncomingMessage, Server, ServerError,
    Subscription, Transport,
};

use super::transport_error;
use crate::{CliError, Output, Shutdown};

/// Counts the messages a server took and has not finished handling.
#[derive(Clone, Debug, Default)]
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A dispatcher whose work counts in an [`InFlight`] from the moment a batch is taken
/// until its work (blocking or async) is over, panics included.
struct Counted<D> {
    inner: D,
    in_flight: InFlight,
}

/// One dispatched batch, counted until dropped.
struct Taken {
    in_flight: InFlight,
    messages: usize,
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.in_flight.0.fetch_sub(self.messages, Ordering::SeqCst);
    }
}

impl<D: Dispatcher> Dispatcher for Counted<D> {
    fn check_codec(&self, codec: CodecKind) -> Result<(), UnsupportedCodec> {
        self.inner.check_codec(codec)
    }

    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch {
        let messages = batch.len();
        self.in_flight.0.fetch_add(messages, Ordering::SeqCst);
        let taken = Taken {
            in_flight: self.in_flight.clone(),
            messages,
        };
        let work = self.inner.dispatch(batch);
        if work.is_blocking() {
            Dispatch::blocking(move || {
                let _taken = taken;
                work.run();
            })
        } else {
            Dispatch::future(async move {
                let _taken = taken;
                work.into_future().await;
            })
        }
    }
}

/// A started server and the thread serving it.
pub(crate) struct Serving {
    server: Server,
    serving: thread::JoinHandle<Result<Epoch, ServerError>>,
    in_flight: InFlight,
}

impl Serving {
    /// Builds the server for `subscription` on `transport`, counting the messages
    /// `dispatcher` has in progress, starts it and serves it on a new thread. Returns
    /// with the server running, and the epoch it runs.
    pub(crate) fn start(
        transport: Arc<dyn Transport>,
        subscription: Subscription,
        dispatcher: impl Dispatcher,
        executor: impl Executor,
    ) -> Result<(Serving, Epoch), CliError> {
        let in_flight = InFlight::default();
        let counted = Counted {
            inner: dispatcher,
            in_flight: in_flight.clone(),
        };
        let server = Server::builder(transport, subscription, counted, executor)
            .build()
            .map_err(|e| CliError::usage(e.to_string()))?;
        let epoch = server.start().map_err(|e| match e {
            ServerError::Listen { source, .. } => transport_error(source),
            other => CliError::failure(other.to_string()),
        })?;
        let serving = {
            let server = server.clone();
            thread::Builder::new()
                .name("serving".to_owned())
                .spawn(move || server.execute())
        };
        let serving = match serving {
            Ok(serving) => serving,
            Err(e) => {
                // Stop taking messages; those already taken are left to the exit.
                let _ = server.stop();
                return Err(CliError::failure(format!("cannot start a thread: {e}")));
            }
        };
        Ok((
            Serving {
                server,
                serving,
                in_flight,
            },
            epoch,
        ))
    }

    /// The server.
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// Stops taking messages and waits for the ones taken to be handled, at most
    /// `grace`, and only until a stop request beyond those already made. Says on
    /// `err` what it does. On success the server is drained, its listener cleaned up
    /// and its serving thread joined; otherwise it fails with the number of messages
    /// still being handled, leaving them to the process's exit.
    pub(crate) fn stop(
        self,
        grace: Duration,
        err: &Output,
        shutdown: &Shutdown,
    ) -> Result<(), CliError> {
        let requests = shutdown.requests();
        let seconds = grace.as_secs_f64();
        let again = if requests > 0 { " again" } else { "" };
        err.line(&format!(
            "stopping: taking no new messages; waiting up to {seconds} s for {} in progress \
             (Ctrl-C{again} to exit at once)",
            messages(self.in_flight.get())
        ));
        let drained = Arc::new(AtomicBool::new(false));
        let draining = {
            let (server, drained, shutdown) =
                (self.server.clone(), drained.clone(), shutdown.clone());
            let options = CallOptions::new().log_after((grace / 2).min(DEFAULT_LOG_AFTER));
            thread::Builder::new()
                .name("draining".to_owned())
                .spawn(move || {
                    let result = server
                        .stop_with(&options)
                        .and_then(|_| server.wait_with(&options));
                    drained.store(true, Ordering::SeqCst);
                    shutdown.wake();
                    result
                })
                .map_err(|e| CliError::failure(format!("cannot start a thread: {e}")))?
        };
        let now = shutdown.wait_until(Instant::now().checked_add(grace), |now| {
            now > requests || drained.load(Ordering::SeqCst)
        });
        if !drained.load(Ordering::SeqCst) {
            let why = if now > requests {
                "stopped again".to_owned()
            } else {
                format!("the grace period of {seconds} s is over")
            };
            return Err(CliError::failure(format!(
                "{why}: exiting with {} unfinished",
                messages(self.in_flight.get())
            )));
        }
        let fail = |e: ServerError| CliError::failure(e.to_string());
        let joined = |handle: thread::JoinHandle<Result<Epoch, ServerError>>| match handle.join() {
            Ok(result) => result.map(drop).map_err(fail),
            Err(_) => Err(CliError::failure("a server thread panicked")),
        };
        joined(draining)?;
        joined(self.serving)?;
        err.line("stopped: every message taken was handled");
        Ok(())
    }
}

/// "1 message", "2 messages".
fn messages(n: usize) -> String {
    if n == 1 {
        "1 message".to_owned()
    } else {
        format!("{n} messages")
    }
}
