//! [`MemoryListener`]: blocking and async polls over the bus.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use messaging_core::timer::{self, Sleep};
use messaging_core::{Listener, Polled, TransportError};

use super::bus::{Bus, BusState, ListenerId, incoming};

/// A listener on the in-memory bus. Taking a message is atomic with handing it out, so
/// nothing is ever buffered inside the listener: after `stop()` a poll returns
/// [`Polled::Closed`] at once and the messages it did not take stay queued for the
/// next listener.
#[derive(Debug)]
pub struct MemoryListener {
    bus: Arc<Bus>,
    id: ListenerId,
    cond: Arc<Condvar>,
    seq: Arc<AtomicU64>,
}

enum Step {
    Ready(Polled),
    /// Wait until woken, or until the instant if given (filling a batch).
    Wait(Option<Instant>),
}

impl MemoryListener {
    pub(crate) fn new(
        bus: Arc<Bus>,
        id: ListenerId,
        cond: Arc<Condvar>,
        seq: Arc<AtomicU64>,
    ) -> Self {
        MemoryListener { bus, id, cond, seq }
    }

    fn take_now(&self, state: &mut BusState) -> Option<Polled> {
        let batch_size = state.listeners.get(&self.id)?.options.batch_size.max(1);
        let taken = state.take(self.id, batch_size);
        (!taken.is_empty()).then(|| {
            Polled::Messages(
                taken
                    .into_iter()
                    .map(|(queue, envelope)| incoming(&self.bus, queue, envelope))
                    .collect(),
            )
        })
    }

    /// One non-blocking look at the queues. `fill_since` is when this poll first saw a
    /// message it might batch with more.
    fn step(&self, state: &mut BusState, fill_since: &mut Option<Instant>) -> Step {
        let Some(slot) = state.listeners.get(&self.id) else {
            return Step::Ready(Polled::Closed);
        };
        if slot.stopped {
            return Step::Ready(Polled::Closed);
        }
        let batch_size = slot.options.batch_size.max(1);
        let batch_timeout = slot.options.batch_timeout;
        let available = state.available(self.id, batch_size);
        if available == 0 {
            *fill_since = None;
            return Step::Wait(None);
        }
        if let Some(batch_timeout) = batch_timeout.filter(|_| available < batch_size) {
            let since = *fill_since.get_or_insert_with(Instant::now);
            match since.checked_add(batch_timeout) {
                Some(fill_deadline) if Instant::now() < fill_deadline => {
                    return Step::Wait(Some(fill_deadline));
                }
                Some(_) => {}
                // A batch timeout too long to represent: wait for a full batch.
                None => return Step::Wait(None),
            }
        }
        *fill_since = None;
        match self.take_now(state) {
            Some(polled) => Step::Ready(polled),
            None => Step::Wait(None),
        }
    }
}

#[async_trait]
impl Listener for MemoryListener {
    fn poll(&self, timeout: Option<Duration>) -> Result<Polled, TransportError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut fill_since = None;
        let mut state = self.bus.lock();
        let outcome = loop {
            let wake_at = match self.step(&mut state, &mut fill_since) {
                Step::Ready(polled) => break polled,
                Step::Wait(fill) => match (fill, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            };
            state.begin_wait(self.id, None);
            // Spin briefly before parking: a message due within microseconds is taken
            // without the cost of sleeping and waking this thread.
            let seen = self.seq.load(Ordering::Acquire);
            drop(state);
            let woken = messaging_core::spin::spin_until_changed(&self.seq, seen);
            state = self.bus.lock();
            if woken || self.seq.load(Ordering::Acquire) != seen {
                continue;
            }
            state = match wake_at {
                None => self.cond.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        // Out of time: hand out a partial batch rather than nothing.
                        break self.take_now(&mut state).unwrap_or(Polled::Idle);
                    }
                    let (guard, _) = self
                        .cond
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner());
                    guard
                }
            };
        };
        let wakeups = state.end_wait(self.id);
        drop(state);
        wakeups.wake();
        Ok(outcome)
    }

    async fn poll_async(&self) -> Result<Polled, TransportError> {
        Ok(AsyncPoll {
            listener: self,
            fill_since: None,
            fill_timer: None,
        }
        .await)
    }

    fn stop(&self) {
        let wakeups = self.bus.lock().stop_listener(self.id);
        wakeups.wake();
    }

    fn cleanup(&self) {
        let wakeups = self.bus.lock().remove_listener(self.id);
        wakeups.wake();
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The future behind [`MemoryListener::poll_async`]. Cancel safe: messages are taken
/// only in the poll that returns them, and dropping a pending poll deregisters it and
/// hands any message it was picked for to the next waiting listener.
struct AsyncPoll<'a> {
    listener: &'a MemoryListener,
    fill_since: Option<Instant>,
    /// Wakes the task when a partial batch must be handed out.
    fill_timer: Option<Sleep>,
}

impl Future for AsyncPoll<'_> {
    type Output = Polled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Polled> {
        let this = &mut *self;
        let mut state = this.listener.bus.lock();
        match this.listener.step(&mut state, &mut this.fill_since) {
            Step::Ready(polled) => {
                let wakeups = state.end_wait(this.listener.id);
                drop(state);
                wakeups.wake();
                this.fill_timer = None;
                Poll::Ready(polled)
            }
            Step::Wait(fill_deadline) => {
                state.begin_wait(this.listener.id, Some(cx.waker()));
                drop(state);
                match fill_deadline {
                    Some(at) => {
                        let timer = this
                            .fill_timer
                            .get_or_insert_with(|| timer::sleep_until(at));
                        if timer.deadline() != Some(at) {
                            timer.reset(at);
                        }
                        if Pin::new(timer).poll(cx).is_ready() {
                            cx.waker().wake_by_ref(); // the batch is due: look again
                        }
                    }
                    None => this.fill_timer = None,
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for AsyncPoll<'_> {
    fn drop(&mut self) {
        let wakeups = self.listener.bus.lock().end_wait(self.listener.id);
        wakeups.wake();
    }
}
