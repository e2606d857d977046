//! [`Dispatcher`]: turns delivered messages into work; [`Dispatch`]: that work, blocking
//! or async, as an executor runs it.
//!
//! A dispatcher is called on the executor's polling thread or task and must return
//! quickly: decoding and routing happen there, the handler itself goes into the returned
//! [`Dispatch`]. The executor then runs blocking work on a thread that may block
//! ([`Dispatch::run`]) and async work as a task ([`Dispatch::into_future`]).
//!
//! Running a `Dispatch` also marks the thread as "inside a handler of server N" for as
//! long as the handler runs, which is how a server refuses a `wait()` that would wait
//! for the very handler calling it; and it catches a handler's panic, so one bad message
//! never takes down a worker.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use crate::codec::{CodecKind, UnsupportedCodec};
use crate::error::panic_message;
use crate::transport::IncomingMessage;

/// A boxed, sendable future, as async handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

// ===== Dispatcher =====

/// Turns a batch of delivered messages into a [`Dispatch`].
///
/// The dispatcher owns the messages it is given: it acknowledges, requeues and replies
/// to them (usually inside the returned work). It must not block; put blocking work in
/// [`Dispatch::blocking`]. Any `Fn(Vec<IncomingMessage>) -> Dispatch` is a dispatcher.
///
/// # Examples
///
/// ```
/// use messaging_core::{Dispatch, Dispatcher, IncomingMessage};
///
/// fn dispatcher() -> impl Dispatcher {
///     |batch: Vec<IncomingMessage>| {
///         Dispatch::blocking(move || {
///             for mut incoming in batch {
///                 let _ = incoming.acknowledge();
///                 println!("got {} bytes", incoming.message().body.len());
///             }
///         })
///     }
/// }
/// # let _ = dispatcher();
/// ```
pub trait Dispatcher: Send + Sync + 'static {
    /// Prepares the work for one batch (of `batch_size` messages at most).
    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch;

    /// Checks, when a server is built, that the dispatcher's handlers can decode what
    /// arrives with `codec` (the transport's). The default accepts every codec.
    fn check_codec(&self, codec: CodecKind) -> Result<(), UnsupportedCodec> {
        let _ = codec;
        Ok(())
    }
}

impl<F> Dispatcher for F
where
    F: Fn(Vec<IncomingMessage>) -> Dispatch + Send + Sync + 'static,
{
    fn dispatch(&self, batch: Vec<IncomingMessage>) -> Dispatch {
        self(batch)
    }
}

// ===== Dispatch =====

enum Work {
    Blocking(Box<dyn FnOnce() + Send + 'static>),
    Async(BoxFuture<()>),
    Nothing,
}

/// The work for one dispatched batch.
///
/// Executors run blocking work with [`run`](Dispatch::run) on a thread that may block,
/// and async work as a task via [`into_future`](Dispatch::into_future); both catch a
/// handler's panic (logging it at error level) and mark the handler scope.
#[must_use = "a Dispatch does nothing until an executor runs it"]
pub struct Dispatch {
    work: Work,
    scope: Option<u64>,
}

impl Dispatch {
    /// Work that may block the thread running it.
    pub fn blocking(f: impl FnOnce() + Send + 'static) -> Self {
        Dispatch {
            work: Work::Blocking(Box::new(f)),
            scope: None,
        }
    }

    /// Async work. On the blocking and thread-pool executors it is driven by
    /// [`block_on`], so it must not need a particular runtime to be current there.
    pub fn future(f: impl Future<Output = ()> + Send + 'static) -> Self {
        Dispatch {
            work: Work::Async(Box::pin(f)),
            scope: None,
        }
    }

    /// Nothing to do (everything was settled inside [`Dispatcher::dispatch`]).
    pub fn nothing() -> Self {
        Dispatch {
            work: Work::Nothing,
            scope: None,
        }
    }

    /// Whether the work may block, so that an async executor must move it to a
    /// thread where blocking is allowed.
    pub fn is_blocking(&self) -> bool {
        matches!(self.work, Work::Blocking(_))
    }

    /// Marks the work as running inside a handler of server `scope`.
    pub(crate) fn scoped(mut self, scope: u64) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Runs the work to completion in the calling thread (async work via [`block_on`]).
    /// A panic in the handler is caught and logged.
    pub fn run(self) {
        let scope = self.scope;
        let _guard = scope.map(ScopeGuard::enter);
        let outcome = catch_unwind(AssertUnwindSafe(move || match self.work {
            Work::Blocking(f) => f(),
            Work::Async(fut) => block_on(fut),
            Work::Nothing => {}
        }));
        if let Err(payload) = outcome {
            report_panic(scope, &*payload);
        }
    }

    /// The work as a future. Blocking work runs inline when the future is polled, so an
    /// async executor should run [`is_blocking`](Dispatch::is_blocking) work with
    /// [`run`](Dispatch::run) on a blocking-capable thread instead. A panic in the
    /// handler is caught and logged; the future then completes normally.
    pub fn into_future(self) -> DispatchFuture {
        DispatchFuture {
            scope: self.scope,
            work: Some(self.work),
        }
    }
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.work {
            Work::Blocking(_) => "blocking",
            Work::Async(_) => "async",
            Work::Nothing => "nothing",
        };
        f.debug_struct("Dispatch").field("work", &kind).finish()
    }
}

/// The future returned by [`Dispatch::into_future`].
#[must_use = "futures do nothing unless polled"]
pub struct DispatchFuture {
    scope: Option<u64>,
    work: Option<Work>,
}

impl Future for DispatchFuture {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let scope = self.scope;
        let _guard = scope.map(ScopeGuard::enter);
        let work = &mut self.work;
        let outcome = catch_unwind(AssertUnwindSafe(|| match work {
            Some(Work::Async(fut)) => fut.as_mut().poll(cx),
            Some(Work::Blocking(_)) => {
                if let Some(Work::Blocking(f)) = work.take() {
                    f();
                }
                Poll::Ready(())
            }
            Some(Work::Nothing) | None => Poll::Ready(()),
        }));
        match outcome {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                self.work = None;
                Poll::Ready(())
            }
            Err(payload) => {
                self.work = None;
                report_panic(scope, &*payload);
                Poll::Ready(())
            }
        }
    }
}

impl fmt::Debug for DispatchFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchFuture").finish_non_exhaustive()
    }
}

fn report_panic(scope: Option<u64>, payload: &(dyn std::any::Any + Send)) {
    tracing::error!(
        server = scope,
        panic = %panic_message(payload),
        "handler panicked; the server keeps serving"
    );
}

// ===== handler scope =====

thread_local! {
    static SCOPES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

pub(crate) struct ScopeGuard;

impl ScopeGuard {
    pub(crate) fn enter(scope: u64) -> ScopeGuard {
        SCOPES.with(|s| s.borrow_mut().push(scope));
        ScopeGuard
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPES.with(|s| {
            s.borrow_mut().pop();
        });
    }
}

/// Whether the current thread is running a handler of server `scope`.
pub(crate) fn in_scope(scope: u64) -> bool {
    SCOPES.with(|s| s.borrow().contains(&scope))
}

// ===== block_on =====

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future to completion on the current thread, parking it while the future is
/// pending. Runtime-agnostic: the future must not need a runtime (tokio, ...) to be
/// current. Transports' send futures satisfy this.
///
/// # Examples
///
/// ```
/// assert_eq!(messaging_core::dispatch::block_on(async { 1 + 1 }), 2);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    }
    let mut future = std::pin::pin!(future);
    let waker = WAKER.with(Waker::clone);
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}

/// Polls `future` once, without a waker that does anything: its output if it is
/// ready, or the future back if it is not.
///
/// For operations whose effect happens on the first poll (a command handed to a
/// client's I/O task) and whose completion the caller need not wait for: a transport
/// settles a delivery this way instead of parking its thread until the frame is
/// written. Whoever gets the future back decides: drop it (the effect already
/// happened) or hand it to a runtime to finish.
///
/// # Examples
///
/// ```
/// use messaging_core::dispatch::poll_once;
///
/// assert!(matches!(poll_once(async { 7 }), Ok(7)));
/// assert!(poll_once(std::future::pending::<()>()).is_err());
/// ```
pub fn poll_once<F: Future>(future: F) -> Result<F::Output, Pin<Box<F>>> {
    let mut future = Box::pin(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Err(future),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn run_marks_the_scope_and_catches_panics() {
        let seen = Arc::new(AtomicBool::new(false));
        let s = seen.clone();
        Dispatch::blocking(move || s.store(in_scope(7), Ordering::SeqCst))
            .scoped(7)
            .run();
        assert!(seen.load(Ordering::SeqCst));
        assert!(!in_scope(7));
        Dispatch::blocking(|| panic!("boom")).scoped(7).run();
        assert!(!in_scope(7), "scope is left even when the handler panics");
    }

    #[test]
    fn async_work_sees_its_scope_on_every_poll_and_panics_are_caught() {
        let seen = Arc::new(AtomicBool::new(false));
        let s = seen.clone();
        let fut = Dispatch::future(async move {
            std::future::ready(()).await;
            s.store(in_scope(9), Ordering::SeqCst);
        })
        .scoped(9)
        .into_future();
        block_on(fut);
        assert!(seen.load(Ordering::SeqCst));
        block_on(Dispatch::future(async { panic!("boom") }).into_future());
        Dispatch::future(async { panic!("boom") }).run();
    }

    #[test]
    fn closures_are_dispatchers() {
        let d = |batch: Vec<IncomingMessage>| {
            assert_eq!(batch.len(), 0);
            Dispatch::nothing()
        };
        assert!(!d.dispatch(Vec::new()).is_blocking());
    }
}
