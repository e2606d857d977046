//! The reply channel between a caller and the server that handles its call.
//!
//! A transport creates one per call with [`reply_channel`]: the [`ReplySender`] travels
//! with the [`IncomingMessage`](crate::IncomingMessage) to the server, the
//! [`ReplyReceiver`] goes back to the caller, who can wait for it from a thread
//! ([`recv_timeout`](ReplyReceiver::recv_timeout)) or from async code
//! ([`recv`](ReplyReceiver::recv)). Broker transports route the replies they receive
//! into the sender.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::TransportError;
use crate::message::RemoteError;

/// One event on a call's reply channel.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyEvent {
    /// The server is still working on the call (oslo's call-monitor heartbeat).
    Heartbeat,
    /// The final reply: the encoded result, or the remote error.
    Reply(Result<Bytes, RemoteError>),
}

/// Anything that can deliver reply events to a caller: the in-memory
/// [`ReplySender`], or a broker transport's reply publisher.
pub trait Replier: Send + Sync + fmt::Debug + 'static {
    /// Delivers one event. Must not block for long; never panics. Returns
    /// [`TransportError::MessageTooLarge`] only when nothing was sent (the caller may
    /// then be sent a smaller reply saying so).
    fn send(&self, event: ReplyEvent) -> Result<(), TransportError>;
}

/// Why [`ReplyReceiver::recv_timeout`] returned without an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The timeout passed.
    #[error("timed out waiting for a reply")]
    Timeout,
    /// Every sender is gone and nothing is left: the reply is lost.
    #[error("the reply channel was closed without a reply")]
    Disconnected,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<ReplyEvent>,
    receiver_alive: bool,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    senders: AtomicUsize,
    /// Bumped on every event and on the last sender's drop: a waiting receiver spins
    /// on it before parking.
    seq: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates a reply channel.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use messaging_core::reply::{reply_channel, Replier, ReplyEvent};
///
/// let (tx, mut rx) = reply_channel();
/// tx.send(ReplyEvent::Heartbeat).unwrap();
/// assert_eq!(rx.recv_timeout(Some(Duration::from_secs(1))), Ok(ReplyEvent::Heartbeat));
/// drop(tx);
/// assert!(rx.recv_timeout(None).is_err()); // every sender gone: the reply is lost
/// ```
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver_alive: true,
            waker: None,
        }),
        ready: Condvar::new(),
        senders: AtomicUsize::new(1),
        seq: AtomicU64::new(0),
    });
    (
        ReplySender {
            shared: shared.clone(),
        },
        ReplyReceiver { shared },
    )
}

/// The sending half of a reply channel. Cloneable (a heartbeat thread may hold a
/// clone); the receiver sees [`RecvError::Disconnected`] once every clone is dropped.
pub struct ReplySender {
    shared: Arc<Shared>,
}

impl ReplySender {
    /// Whether the caller has gone away (its receiver was dropped).
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_alive
    }
}

impl Replier for ReplySender {
    fn send(&self, event: ReplyEvent) -> Result<(), TransportError> {
        let waker = {
            let mut state = self.shared.lock();
            if !state.receiver_alive {
                return Err(TransportError::Closed("the caller's reply channel"));
            }
            state.queue.push_back(event);
            self.shared.seq.fetch_add(1, Ordering::Release);
            state.waker.take()
        };
        self.shared.ready.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Clone for ReplySender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        ReplySender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let waker = {
            let mut state = self.shared.lock();
            self.shared.seq.fetch_add(1, Ordering::Release);
            state.waker.take()
        };
        self.shared.ready.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySender").finish_non_exhaustive()
    }
}

/// The receiving half of a reply channel, held by the caller.
pub struct ReplyReceiver {
    shared: Arc<Shared>,
}

impl ReplyReceiver {
    /// Takes the next event without waiting.
    pub fn try_recv(&mut self) -> Option<Result<ReplyEvent, RecvError>> {
        let mut state = self.shared.lock();
        match state.queue.pop_front() {
            Some(event) => Some(Ok(event)),
            None if self.shared.senders.load(Ordering::Acquire) == 0 => {
                Some(Err(RecvError::Disconnected))
            }
            None => None,
        }
    }

    /// Blocks the calling thread until the next event, for at most `timeout`
    /// (`None`: no limit).
    pub fn recv_timeout(&mut self, timeout: Option<Duration>) -> Result<ReplyEvent, RecvError> {
        self.recv_deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Blocks the calling thread until the next event, or until `deadline` (`None`:
    /// no limit). A reply that arrives within microseconds is picked up without
    /// parking the thread.
    pub fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<ReplyEvent, RecvError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(event) = state.queue.pop_front() {
                return Ok(event);
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return Err(RecvError::Disconnected);
            }
            let seen = self.shared.seq.load(Ordering::Acquire);
            drop(state);
            if crate::spin::spin_until_changed(&self.shared.seq, seen) {
                state = self.shared.lock();
                continue;
            }
            state = self.shared.lock();
            if self.shared.seq.load(Ordering::Acquire) != seen {
                continue;
            }
            state = match deadline {
                None => self
                    .shared
                    .ready
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(RecvError::Timeout);
                    }
                    self.shared
                        .ready
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Waits asynchronously for the next event; returns `None` once every sender is
    /// gone and nothing is left.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is taken only when this future completes, so dropping it
    /// (for example when another `select!` branch wins, or a timeout fires) loses nothing.
    pub async fn recv(&mut self) -> Option<ReplyEvent> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(event) = state.queue.pop_front() {
                return Poll::Ready(Some(event));
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return Poll::Ready(None);
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        state.queue.clear();
    }
}

impl fmt::Debug for ReplyReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyReceiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::block_on;

    #[test]
    fn events_arrive_in_order_then_disconnect() {
        let (tx, mut rx) = reply_channel();
        tx.send(ReplyEvent::Heartbeat).unwrap();
        tx.send(ReplyEvent::Reply(Ok(Bytes::from_static(b"3"))))
            .unwrap();
        drop(tx);
        assert_eq!(rx.recv_timeout(None), Ok(ReplyEvent::Heartbeat));
        assert_eq!(
            rx.recv_timeout(None),
            Ok(ReplyEvent::Reply(Ok(Bytes::from_static(b"3"))))
        );
        assert_eq!(rx.recv_timeout(None), Err(RecvError::Disconnected));
    }

    #[test]
    fn recv_timeout_times_out() {
        let (_tx, mut rx) = reply_channel();
        let started = Instant::now();
        assert_eq!(
            rx.recv_timeout(Some(Duration::from_millis(20))),
            Err(RecvError::Timeout)
        );
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn send_after_receiver_dropped_is_closed() {
        let (tx, rx) = reply_channel();
        drop(rx);
        assert!(tx.is_closed());
        assert!(tx.send(ReplyEvent::Heartbeat).unwrap_err().is_closed());
    }

    #[test]
    fn async_recv_wakes_from_another_thread() {
        let (tx, mut rx) = reply_channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            tx.send(ReplyEvent::Heartbeat).unwrap();
        });
        assert_eq!(block_on(rx.recv()), Some(ReplyEvent::Heartbeat));
        sender.join().unwrap();
        assert_eq!(block_on(rx.recv()), None);
    }
}
