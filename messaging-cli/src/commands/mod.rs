//! The subcommands, and what they share: opening transports with the JSON codec
//! (dynamic arguments need a self-describing codec), reading JSON arguments verbatim,
//! bounding sends, and mapping errors to exit codes.

pub(crate) mod demo;
pub(crate) mod listen;
pub(crate) mod running;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod simulate;

use std::future::Future;
use std::io::Read;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::task::Poll;
use std::time::Duration;

use messaging_core::codec::CodecKind;
use messaging_core::dispatch::block_on;
use messaging_core::rpc::RpcError;
use messaging_core::{
    Context, InvalidTarget, InvalidTransportUrl, Transport, TransportError, TransportUrl,
};
use serde_json::value::RawValue;

use crate::{CliError, MAX_JSON_INPUT, Shutdown, exit};

/// Opens `url`, with the JSON codec (the only one the command speaks: its arguments
/// and results are dynamic JSON, sent verbatim). Errors quote the URL as given, its
/// passwords hidden.
pub(crate) fn open_json(url: &str) -> Result<Arc<dyn Transport>, CliError> {
    let given = TransportUrl::parse(url).map_err(|e| CliError::usage(e.to_string()))?;
    let with_json = match given.option("codec") {
        None => {
            let separator = if given.options().is_empty() { '?' } else { '&' };
            format!("{}{separator}codec=json", given.to_string_with_secrets())
        }
        Some(codec) if matches!(codec.parse(), Ok(CodecKind::Json)) => {
            given.to_string_with_secrets()
        }
        Some(_) => {
            return Err(CliError::usage(
                InvalidTransportUrl::new(
                    &given,
                    "the messaging command sends JSON only: leave out `codec` or use codec=json",
                )
                .to_string(),
            ));
        }
    };
    messaging_transports::open(&with_json).map_err(|error| match error {
        // The transport saw the URL with `codec=json` added: quote the user's.
        TransportError::InvalidUrl(bad) => {
            CliError::usage(InvalidTransportUrl::new(&given, bad.reason()).to_string())
        }
        other => transport_error(other),
    })
}

pub(crate) fn transport_error(error: TransportError) -> CliError {
    match error {
        TransportError::InvalidUrl(_)
        | TransportError::UnknownScheme { .. }
        | TransportError::InvalidTarget(_)
        | TransportError::MessageTooLarge { .. } => CliError::usage(error.to_string()),
        other => CliError::failure(other.to_string()),
    }
}

/// A result that could not be written to stdout (a closed pipe, a full disk): the
/// command fails rather than report a success nobody saw.
pub(crate) fn unwritten(error: impl std::fmt::Display) -> CliError {
    CliError::failure(format!("cannot write to stdout: {error}"))
}

pub(crate) fn invalid_target(error: InvalidTarget) -> CliError {
    CliError::usage(error.to_string())
}

pub(crate) fn rpc_error(error: RpcError) -> CliError {
    let message = match &error {
        RpcError::Remote(remote) => format!(
            "remote error: {}.{}: {}",
            remote.module, remote.class, remote.message
        ),
        other => other.to_string(),
    };
    let code = match error {
        RpcError::Remote(_) => exit::REMOTE,
        e if e.is_timeout() => exit::TIMEOUT,
        RpcError::InvalidTarget(_) | RpcError::InvalidVersion(_) | RpcError::VersionCap { .. } => {
            exit::USAGE
        }
        RpcError::Transport(e) => return transport_error(e),
        _ => exit::FAILURE,
    };
    CliError { code, message }
}

/// Runs `work`, which blocks (reading input, connecting), on a thread of its own and
/// returns its result; or, at once, an "interrupted while {doing}" failure if a stop
/// is requested first (or was already). The abandoned thread is left to finish its
/// work, or to end with the process.
pub(crate) fn interruptible<T: Send + 'static>(
    shutdown: &Shutdown,
    doing: &str,
    work: impl FnOnce() -> Result<T, CliError> + Send + 'static,
) -> Result<T, CliError> {
    let interrupted = || CliError::failure(format!("interrupted while {doing}"));
    if shutdown.is_triggered() {
        return Err(interrupted());
    }
    /// Marks the work done when dropped: after sending its result, or in a panic.
    struct Done(Arc<AtomicBool>, Shutdown);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            self.1.wake();
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let (sender, result) = mpsc::channel();
    let marker = Done(done.clone(), shutdown.clone());
    std::thread::Builder::new()
        .name("blocking".to_owned())
        .spawn(move || {
            let _marker = marker;
            let _ = sender.send(work());
        })
        .map_err(|e| CliError::failure(format!("cannot start a thread: {e}")))?;
    shutdown.wait_until(None, |requests| requests > 0 || done.load(Ordering::SeqCst));
    if !done.load(Ordering::SeqCst) {
        return Err(interrupted());
    }
    result.try_recv().unwrap_or_else(|_| {
        Err(CliError::failure(format!(
            "a thread panicked while {doing}"
        )))
    })
}

/// Whether a JSON argument is read from stdin.
pub(crate) fn reads_stdin(arg: &str) -> bool {
    arg == "-"
}

/// The text of a JSON argument: inline, `@FILE`, or `-` for stdin; at most
/// [`MAX_JSON_INPUT`] bytes from a file or stdin. Reading (and opening: a FIFO waits
/// for its writer) is abandoned at a stop request.
fn argument_text(arg: &str, what: &str, shutdown: &Shutdown) -> Result<String, CliError> {
    let source = if reads_stdin(arg) {
        "stdin"
    } else if let Some(path) = arg.strip_prefix('@') {
        path
    } else {
        return Ok(arg.to_owned());
    };
    let (arg, what_owned) = (arg.to_owned(), what.to_owned());
    interruptible(
        shutdown,
        &format!("reading {what} from {source}"),
        move || read_argument(&arg, &what_owned),
    )
}

/// [`argument_text`] from a file or stdin, blocking.
fn read_argument(arg: &str, what: &str) -> Result<String, CliError> {
    let (source, reader): (String, Box<dyn Read>) = if reads_stdin(arg) {
        ("stdin".to_owned(), Box::new(std::io::stdin().lock()))
    } else if let Some(path) = arg.strip_prefix('@') {
        let file = std::fs::File::open(path)
            .map_err(|e| CliError::usage(format!("{what}: cannot read {path}: {e}")))?;
        (path.to_owned(), Box::new(file))
    } else {
        return Ok(arg.to_owned());
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_JSON_INPUT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::usage(format!("{what}: cannot read {source}: {e}")))?;
    if bytes.len() > MAX_JSON_INPUT {
        return Err(CliError::usage(format!(
            "{what}: {source} holds more than {} MiB",
            MAX_JSON_INPUT >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|_| CliError::usage(format!("{what}: {source} is not UTF-8")))
}

/// A JSON argument (see [`argument_text`]), checked and kept verbatim: numbers stay
/// exactly as written, whatever their size. Errors never quote the JSON.
pub(crate) fn json_argument(
    arg: &str,
    what: &str,
    shutdown: &Shutdown,
) -> Result<Box<RawValue>, CliError> {
    let text = argument_text(arg, what, shutdown)?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{what} is not valid JSON: {e}")))
}

/// [`json_argument`], which must be an object.
pub(crate) fn json_object(
    arg: &str,
    what: &str,
    shutdown: &Shutdown,
) -> Result<Box<RawValue>, CliError> {
    let json = json_argument(arg, what, shutdown)?;
    if !json.get().starts_with('{') {
        return Err(CliError::usage(format!("{what} must be a JSON object")));
    }
    Ok(json)
}

pub(crate) fn parse_context(arg: Option<&str>, shutdown: &Shutdown) -> Result<Context, CliError> {
    let Some(arg) = arg else {
        return Ok(Context::new());
    };
    let json = json_object(arg, "the context", shutdown)?;
    serde_json::from_str(json.get())
        .map_err(|e| CliError::usage(format!("the context is not valid JSON: {e}")))
}

/// JSON text without insignificant whitespace, everything else (numbers above all) as
/// written: one line for any valid JSON.
pub(crate) fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// How a [`bounded`] send ended.
pub(crate) enum Bounded<T> {
    /// It completed.
    Done(T),
    /// A stop was requested first; the send was abandoned.
    Interrupted,
    /// The timeout passed first; the send was abandoned.
    TimedOut,
}

/// Drives `send` on the calling thread until it completes, `timeout` passes or a stop
/// is requested, whichever comes first; the send is dropped (abandoned) in the last two
/// cases, before this returns.
pub(crate) fn bounded<T>(
    send: impl Future<Output = T>,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Bounded<T> {
    drive(send, Some(timeout), shutdown)
}

/// Drives `send` on the calling thread until it completes (`Some`) or a stop is
/// requested (`None`: the send was dropped, abandoned, before this returns).
pub(crate) fn unless_stopped<T>(send: impl Future<Output = T>, shutdown: &Shutdown) -> Option<T> {
    match drive(send, None, shutdown) {
        Bounded::Done(output) => Some(output),
        Bounded::Interrupted | Bounded::TimedOut => None,
    }
}

/// [`bounded`], or without a timeout when `timeout` is `None`.
fn drive<T>(
    send: impl Future<Output = T>,
    timeout: Option<Duration>,
    shutdown: &Shutdown,
) -> Bounded<T> {
    let mut send = pin!(send);
    let mut requested = pin!(shutdown.requested());
    let mut sleep = pin!(async {
        match timeout {
            Some(timeout) => messaging_core::timer::sleep(timeout).await,
            None => std::future::pending().await,
        }
    });
    block_on(std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = send.as_mut().poll(cx) {
            Poll::Ready(Bounded::Done(output))
        } else if requested.as_mut().poll(cx).is_ready() {
            Poll::Ready(Bounded::Interrupted)
        } else if sleep.as_mut().poll(cx).is_ready() {
            Poll::Ready(Bounded::TimedOut)
        } else {
            Poll::Pending
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_numbers_and_strings_as_written() {
        assert_eq!(
            compact(
                "{ \"a b\" : [1 , 4.0,\n 123456789012345678901234567890e-3 ] ,\"c\\\" d\": \" \\\\\" }"
            ),
            "{\"a b\":[1,4.0,123456789012345678901234567890e-3],\"c\\\" d\":\" \\\\\"}"
        );
    }

    #[test]
    fn json_arguments_are_verbatim_and_errors_do_not_quote_them() {
        let shutdown = Shutdown::new();
        let raw = json_object("{\"n\": 123456789012345678901234567890}", "X", &shutdown).unwrap();
        assert_eq!(raw.get(), "{\"n\": 123456789012345678901234567890}");
        for (bad, expected) in [
            ("\"s3cret\"", "X must be a JSON object"),
            ("[\"s3cret\"]", "X must be a JSON object"),
            ("{\"s3cret\"", "X is not valid JSON"),
            ("@/nonexistent/s", "cannot read /nonexistent/s"),
        ] {
            let error = json_object(bad, "X", &shutdown).unwrap_err();
            assert_eq!(error.code, exit::USAGE);
            assert!(error.message.contains(expected), "{}", error.message);
            assert!(!error.message.contains("s3cret"), "{}", error.message);
        }
        let error = parse_context(Some("\"s3cret\""), &shutdown).unwrap_err();
        assert!(!error.message.contains("s3cret"), "{}", error.message);
    }

    #[test]
    fn blocking_work_is_abandoned_at_a_stop_request() {
        let shutdown = Shutdown::new();
        assert_eq!(interruptible(&shutdown, "x", || Ok(7)).unwrap(), 7);
        let error = interruptible(&shutdown, "x", || -> Result<(), _> {
            Err(CliError::usage("bad"))
        })
        .unwrap_err();
        assert_eq!((error.code, error.message.as_str()), (exit::USAGE, "bad"));
        let error = interruptible(&shutdown, "reading", || -> Result<(), _> { panic!("boom") })
            .unwrap_err();
        assert_eq!(error.message, "a thread panicked while reading");
        // Work that never ends: the request ends the wait.
        let (_keep, never) = mpsc::channel::<()>();
        let trigger = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                shutdown.trigger();
            })
        };
        let error = interruptible(&shutdown, "reading stdin", move || {
            let _ = never.recv();
            Ok(())
        })
        .unwrap_err();
        trigger.join().unwrap();
        assert_eq!(
            (error.code, error.message.as_str()),
            (exit::FAILURE, "interrupted while reading stdin")
        );
        // Already requested: not even started.
        let error = interruptible(&shutdown, "connecting", || Ok(())).unwrap_err();
        assert_eq!(error.message, "interrupted while connecting");
    }

    #[test]
    fn a_bounded_send_ends_at_the_timeout_or_the_first_request() {
        let shutdown = Shutdown::new();
        let pending = std::future::pending::<()>;
        let started = std::time::Instant::now();
        assert!(matches!(
            bounded(pending(), Duration::from_millis(50), &shutdown),
            Bounded::TimedOut
        ));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let trigger = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.trigger())
        };
        assert!(matches!(
            bounded(pending(), Duration::from_secs(60), &shutdown),
            Bounded::Interrupted
        ));
        trigger.join().unwrap();
        assert!(matches!(
            bounded(async { 7 }, Duration::ZERO, &Shutdown::new()),
            Bounded::Done(7)
        ));
    }
}
