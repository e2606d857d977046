//! A server served by its own thread until told to stop, then drained within a grace
//! period: what `serve`, `listen` and the `simulate` servers share.
//!
//! Stopping follows one rule for all of them: the first request stops taking messages
//! (`Server::stop`) and waits for those taken (`Server::wait`, which logs the
//! lifecycle's "possible hang" warning if it is stuck); when the grace period ends, or
//! at a further stop request, the command gives up waiting and fails with the number
//! of messages still being handled.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use messaging_core::codec::{CodecKind, UnsupportedCodec};
use messaging_core::server::DEFAULT_LOG_AFTER;
use messaging_core::{
    Acknowledger, CallOptions, Dispatch, Dispatcher, Epoch, Executor, IncomingMessage,
    ListenOptions, Message, Server, ServerError, Subscription, Transport, TransportError,
};

use super::{interruptible, transport_error, unwritten};
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

/// Set by a server's handlers when a line could not be written to stdout (a closed
/// pipe, a full disk): from then on they requeue what they take instead of handling
/// it, and [`Serving::serve`] stops the server and fails.
///
/// Those requeues are held ([`hold`](Unprinted::hold), [`deferring`](Unprinted::deferring))
/// until the server is stopped and its listener cleaned up, then made: a message
/// requeued earlier would come straight back to the same server, again and again
/// until it stops, and on NATS a redelivery racing the end of the listener's pull is
/// held back by the server for the acknowledgement wait.
#[derive(Clone, Debug, Default)]
pub(crate) struct Unprinted(Arc<UnprintedState>);

#[derive(Debug, Default)]
struct UnprintedState {
    error: OnceLock<std::io::Error>,
    /// Messages to requeue once the server is stopped.
    held: Mutex<Vec<IncomingMessage>>,
}

impl Unprinted {
    /// Whether a line could not be written.
    pub(crate) fn is_set(&self) -> bool {
        self.0.error.get().is_some()
    }

    /// Records `error` (the first one counts) and wakes the command's thread, which
    /// stops the server ([`Serving::serve`]).
    pub(crate) fn set(&self, error: std::io::Error, shutdown: &Shutdown) {
        let _ = self.0.error.set(error);
        shutdown.wake();
    }

    /// Keeps `message`, unsettled, to requeue once the server is stopped.
    pub(crate) fn hold(&self, message: IncomingMessage) {
        self.held().push(message);
    }

    fn held(&self) -> MutexGuard<'_, Vec<IncomingMessage>> {
        self.0.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `inner`, whose requeues are held (see [`hold`](Unprinted::hold)) once a line
    /// could not be written; before that they are made at once.
    pub(crate) fn deferring(&self, inner: impl Dispatcher) -> impl Dispatcher {
        Deferring {
            inner,
            unprinted: self.clone(),
        }
    }
}

/// See [`Unprinted::deferring`].
struct Deferring<D> {
    inner: D,
    unprinted: Unprinted,
}

/// Settles a message as its transport's acknowledger does, except a requeue once a
/// line could not be written, which it hands to [`Unprinted::hold`].
#[derive(Debug)]
struct Deferred {
    inner: Option<Box<dyn Acknowledger>>,
    unprinted: Unprinted,
}

impl Acknowledger for Deferred {
    fn acknowledge(self: Box<Self>) -> Result<(), TransportError> {
        self.inner.map_or(Ok(()), |inner| inner.acknowledge())
    }

    fn requeue(self: Box<Self>, message: Message) -> Result<(), TransportError> {
        if self.unprinted.is_set() {
            let mut parts = IncomingMessage::new(message).into_parts();
            parts.acknowledger = self.inner;
            self.unprinted.hold(IncomingMessage::from_parts(parts));
            Ok(())
        } else {
            self.inner.map_or(Ok(()), |inner| inner.requeue(message))
        }
    }
}

impl<D: Dispatcher> Dispatcher for Deferring<D> {
    fn check_codec(&self, codec: CodecKind) -> Result<(), UnsupportedCodec> {
        self.inner.check_codec(codec)
    }

    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch {
        let batch = batch
            .into_iter()
            .map(|incoming| {
                let mut parts = incoming.into_parts();
                parts.acknowledger = Some(Box::new(Deferred {
                    inner: parts.acknowledger.take(),
                    unprinted: self.unprinted.clone(),
                }));
                IncomingMessage::from_parts(parts)
            })
            .collect();
        self.inner.dispatch(batch)
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
    /// `dispatcher` has in progress, starts it (which connects) and serves it on a new
    /// thread. Returns with the server running, and the epoch it runs; or, at once, an
    /// "interrupted while connecting" failure at a stop request before that.
    pub(crate) fn start(
        transport: Arc<dyn Transport>,
        subscription: Subscription,
        dispatcher: impl Dispatcher,
        executor: impl Executor,
        shutdown: &Shutdown,
    ) -> Result<(Serving, Epoch), CliError> {
        let listen = ListenOptions::default();
        Serving::start_with(
            transport,
            subscription,
            listen,
            dispatcher,
            executor,
            shutdown,
        )
    }

    /// [`start`](Serving::start), the listener taking messages as `listen` says
    /// (batches).
    pub(crate) fn start_with(
        transport: Arc<dyn Transport>,
        subscription: Subscription,
        listen: ListenOptions,
        dispatcher: impl Dispatcher,
        executor: impl Executor,
        shutdown: &Shutdown,
    ) -> Result<(Serving, Epoch), CliError> {
        interruptible(shutdown, "connecting", move || {
            Serving::start_blocking(transport, subscription, listen, dispatcher, executor)
        })
    }

    /// [`start_with`](Serving::start_with), uninterruptible.
    fn start_blocking(
        transport: Arc<dyn Transport>,
        subscription: Subscription,
        listen: ListenOptions,
        dispatcher: impl Dispatcher,
        executor: impl Executor,
    ) -> Result<(Serving, Epoch), CliError> {
        let in_flight = InFlight::default();
        let counted = Counted {
            inner: dispatcher,
            in_flight: in_flight.clone(),
        };
        let server = Server::builder(transport, subscription, counted, executor)
            .listen_options(listen)
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

    /// Serves until a stop is requested or `unprinted` is set, then [`stop`]s and
    /// requeues the messages `unprinted` holds (the transport must still be open:
    /// keep a reference to it). Fails as `stop` does, or, when a line could not be
    /// printed, with that error, saying whether the message (`what`) was requeued or,
    /// where the transport cannot take it back (core NATS), lost.
    ///
    /// [`stop`]: Serving::stop
    pub(crate) fn serve(
        self,
        grace: Duration,
        err: &Output,
        shutdown: &Shutdown,
        unprinted: &Unprinted,
        what: &str,
    ) -> Result<(), CliError> {
        shutdown.wait_until(None, |requests| requests > 0 || unprinted.is_set());
        let stopped = self.stop(grace, err, shutdown);
        // Stopped (or giving up on it): what could not be printed goes back, where the
        // transport can take it back.
        let (mut requeued, mut lost) = (0usize, 0usize);
        for message in std::mem::take(&mut *unprinted.held()) {
            if !message.can_requeue() {
                lost += 1;
            } else if let Err(error) = message.requeue() {
                tracing::warn!(%error, "cannot requeue a message that was not printed");
                lost += 1;
            } else {
                requeued += 1;
            }
        }
        let Some(error) = unprinted.0.error.get() else {
            return stopped;
        };
        let mut failure = unwritten(error);
        failure.message = match (requeued, lost) {
            (_, 0) => format!("{}: the {what} was requeued", failure.message),
            (0, _) => format!(
                "{}: the {what} was lost (this transport cannot take it back: calls and casts on NATS are at-most-once)",
                failure.message
            ),
            (requeued, lost) => format!(
                "{}: {requeued} requeued, {lost} lost (not taken back by the transport)",
                failure.message
            ),
        };
        if let Err(also) = stopped {
            failure.message = format!("{}; {}", failure.message, also.message);
        }
        Err(failure)
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
        err.note(&format!(
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
        err.note("stopped: every message taken was handled");
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
