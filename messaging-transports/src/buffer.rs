//! The buffer between a broker transport's consumer task and the executor's polls:
//! blocking and async polls, batches filled up to a size or a timeout, and stop
//! semantics. Shared by the broker listeners. A buffer may have a capacity of its own
//! ([`Buffer::with_capacity`]), for a broker that does not bound what it hands out:
//! the consumer task then adds to it when there is room ([`Buffer::try_push`],
//! [`Buffer::room`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use messaging_core::timer::{self, Sleep};
use messaging_core::{IncomingMessage, ListenOptions, Polled};

/// What happens to buffered messages when the listener stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnStop {
    /// Polls return `Closed` at once; the transport gives the buffered messages back to
    /// the broker ([`Buffer::take_all`]).
    GiveBack,
    /// Polls hand out what is buffered, then return `Closed` (a broker that cannot take
    /// messages back, like core NATS).
    Drain,
}

struct State<T> {
    items: VecDeque<T>,
    stopped: bool,
    closed: bool,
    waker: Option<Waker>,
    /// Blocking polls asleep on `ready`: a push signals the condition variable (a
    /// system call) only when there is one.
    sleepers: usize,
}

pub(crate) struct Buffer<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Bumped by every change a poll may wait for, so a poll can spin on it briefly
    /// before sleeping.
    seq: AtomicU64,
    batch_size: usize,
    batch_timeout: Option<Duration>,
    on_stop: OnStop,
    /// The most messages held (`None`: the broker bounds them).
    capacity: Option<usize>,
    /// Woken when messages leave or the buffer stops: a push waiting for room.
    room: tokio::sync::Notify,
}

enum Step {
    Ready(Polled),
    Wait(Option<Instant>),
}

impl<T> Buffer<T> {
    pub(crate) fn new(options: &ListenOptions, on_stop: OnStop) -> Self {
        Buffer {
            state: Mutex::new(State {
                items: VecDeque::new(),
                stopped: false,
                closed: false,
                waker: None,
                sleepers: 0,
            }),
            ready: Condvar::new(),
            seq: AtomicU64::new(0),
            batch_size: options.batch_size.max(1),
            batch_timeout: options.batch_timeout,
            on_stop,
            capacity: None,
            room: tokio::sync::Notify::new(),
        }
    }

    /// The buffer holding at most `capacity` messages (at least 1), for
    /// [`try_push`](Buffer::try_push). (RabbitMQ's listeners need none:
    /// the broker's prefetch bounds what they hold.)
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity.max(1));
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self, state: &mut State<T>) {
        self.seq.fetch_add(1, Ordering::Release);
        if state.sleepers > 0 {
            self.ready.notify_all();
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Adds a message for the next poll. Ignored (dropped) once stopped: nothing new
    /// is taken after `stop()`; a broker that delivered it gets it back unacknowledged.
    pub(crate) fn push(&self, item: T) {
        let mut state = self.lock();
        if state.closed || state.stopped {
            return;
        }
        state.items.push_back(item);
        self.wake(&mut state);
    }

    /// Adds a message if the buffer holds fewer than its capacity (always, without a
    /// capacity); gives it back if the buffer is full. Once stopped or closed the
    /// message is dropped, as by [`push`](Buffer::push).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn try_push(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed || state.stopped {
            return Ok(());
        }
        if self.capacity.is_some_and(|c| state.items.len() >= c) {
            return Err(item);
        }
        state.items.push_back(item);
        self.wake(&mut state);
        Ok(())
    }

    /// Returns once the buffer has room for a message (at once if it has), or is
    /// stopped or closed: a producer holding messages waits for this, and can take new
    /// ones meanwhile.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so that no wake-up in between is missed.
            notified.as_mut().enable();
            {
                let state = self.lock();
                if state.closed
                    || state.stopped
                    || self.capacity.is_none_or(|c| state.items.len() < c)
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Adds a message once the buffer holds fewer than its capacity, waiting for a poll
    /// to take some; like [`push`](Buffer::push) without a capacity. Returns at once,
    /// dropping the message, once stopped or closed (a pending wait included).
    #[cfg(test)]
    pub(crate) async fn push_when_room(&self, mut item: T) {
        loop {
            match self.try_push(item) {
                Ok(()) => return,
                Err(back) => item = back,
            }
            self.room().await;
        }
    }

    /// How many messages are buffered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// No message will be added any more; polls follow [`OnStop`].
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        self.wake(&mut state);
        self.room.notify_waiters();
    }

    /// Polls return `Closed` from now on; returns what was still buffered.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut state = self.lock();
        state.closed = true;
        self.wake(&mut state);
        self.room.notify_waiters();
        state.items.drain(..).collect()
    }

    /// Takes every buffered message (to give back to the broker, or because the
    /// connection that delivered them is gone).
    pub(crate) fn take_all(&self) -> Vec<T> {
        let taken = self.lock().items.drain(..).collect();
        self.room.notify_waiters();
        taken
    }

    fn step(
        &self,
        state: &mut State<T>,
        fill_since: &mut Option<Instant>,
        out_of_time: bool,
        convert: &(dyn Fn(T) -> IncomingMessage + Sync),
    ) -> Step {
        let draining = state.stopped && self.on_stop == OnStop::Drain;
        if state.closed || (state.stopped && !draining) {
            return Step::Ready(Polled::Closed);
        }
        let available = state.items.len();
        if available == 0 {
            *fill_since = None;
            return if draining {
                Step::Ready(Polled::Closed)
            } else {
                Step::Wait(None)
            };
        }
        let filling = available < self.batch_size && !out_of_time && !draining;
        if let Some(batch_timeout) = self.batch_timeout.filter(|_| filling) {
            let since = *fill_since.get_or_insert_with(Instant::now);
            match since.checked_add(batch_timeout) {
                Some(at) if Instant::now() < at => return Step::Wait(Some(at)),
                Some(_) => {}
                // A batch timeout too long to represent: wait for a full batch.
                None => return Step::Wait(None),
            }
        }
        *fill_since = None;
        let n = available.min(self.batch_size);
        let batch = state.items.drain(..n).map(convert).collect();
        if self.capacity.is_some() {
            self.room.notify_waiters();
        }
        Step::Ready(Polled::Messages(batch))
    }

    /// Blocks until a batch, the timeout, or the end (see [`OnStop`]).
    pub(crate) fn poll(
        &self,
        timeout: Option<Duration>,
        convert: &(dyn Fn(T) -> IncomingMessage + Sync),
    ) -> Polled {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut fill_since = None;
        let mut state = self.lock();
        loop {
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            let wake_at = match self.step(&mut state, &mut fill_since, out_of_time, convert) {
                Step::Ready(polled) => return polled,
                Step::Wait(fill) => match (fill, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            };
            if out_of_time {
                return Polled::Idle;
            }
            // Spin briefly first: on a busy stream the next message is microseconds
            // away, and sleeping and being woken costs more than that.
            let seen = self.seq.load(Ordering::Acquire);
            drop(state);
            let changed = messaging_core::spin::spin_until_changed(&self.seq, seen);
            state = self.lock();
            if changed || self.seq.load(Ordering::Acquire) != seen {
                continue;
            }
            state.sleepers += 1;
            state = match wake_at {
                None => self.ready.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    self.ready
                        .wait_timeout(state, at.saturating_duration_since(Instant::now()))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            state.sleepers -= 1;
        }
    }

    /// The async poll: never `Idle`. Cancel safe (messages leave the buffer only in the
    /// poll that returns them).
    pub(crate) fn poll_async<'a>(
        &'a self,
        convert: &'a (dyn Fn(T) -> IncomingMessage + Sync),
    ) -> AsyncPoll<'a, T> {
        AsyncPoll {
            buffer: self,
            convert,
            fill_since: None,
            fill_timer: None,
        }
    }
}

pub(crate) struct AsyncPoll<'a, T> {
    buffer: &'a Buffer<T>,
    convert: &'a (dyn Fn(T) -> IncomingMessage + Sync),
    fill_since: Option<Instant>,
    fill_timer: Option<Sleep>,
}

impl<T> Future for AsyncPoll<'_, T> {
    type Output = Polled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Polled> {
        let this = &mut *self;
        let mut state = this.buffer.lock();
        match this
            .buffer
            .step(&mut state, &mut this.fill_since, false, this.convert)
        {
            Step::Ready(polled) => Poll::Ready(polled),
            Step::Wait(fill) => {
                if !state
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.waker = Some(cx.waker().clone());
                }
                drop(state);
                if let Some(at) = fill {
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
                Poll::Pending
            }
        }
    }
}

impl<T> Unpin for AsyncPoll<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use messaging_core::Message;
    use messaging_core::dispatch::block_on;

    fn convert(n: u32) -> IncomingMessage {
        IncomingMessage::new(Message::new(n.to_string()))
    }

    fn count(polled: Polled) -> Option<usize> {
        match polled {
            Polled::Messages(batch) => Some(batch.len()),
            _ => None,
        }
    }

    #[test]
    fn batches_fill_to_the_size_or_the_timeout() {
        let buffer = Buffer::new(
            &ListenOptions::batch(3, Some(Duration::from_millis(30))),
            OnStop::GiveBack,
        );
        for n in 0..4 {
            buffer.push(n);
        }
        assert_eq!(count(buffer.poll(None, &convert)), Some(3));
        assert_eq!(
            count(buffer.poll(None, &convert)),
            Some(1),
            "the rest after the batch timeout"
        );
        assert!(matches!(
            buffer.poll(Some(Duration::from_millis(10)), &convert),
            Polled::Idle
        ));
    }

    #[test]
    fn give_back_closes_at_once_and_drain_empties_first() {
        let back = Buffer::new(&ListenOptions::default(), OnStop::GiveBack);
        back.push(1);
        back.stop();
        assert!(matches!(back.poll(None, &convert), Polled::Closed));
        assert_eq!(back.take_all(), [1]);
        let drain = Buffer::new(&ListenOptions::default(), OnStop::Drain);
        drain.push(1);
        drain.push(2);
        drain.stop();
        assert_eq!(count(drain.poll(None, &convert)), Some(1));
        assert_eq!(count(block_on(drain.poll_async(&convert))), Some(1));
        assert!(matches!(drain.poll(None, &convert), Polled::Closed));
    }

    /// A full buffer makes its producer wait until a poll takes something, and lets
    /// it go (dropping its message) when the listener stops.
    #[test]
    fn a_full_buffer_holds_its_capacity_and_a_push_waits_for_room() {
        let buffer = std::sync::Arc::new(
            Buffer::new(&ListenOptions::default(), OnStop::Drain).with_capacity(2),
        );
        block_on(buffer.push_when_room(1));
        block_on(buffer.push_when_room(2));
        let (b, (done, pushed)) = (buffer.clone(), std::sync::mpsc::channel());
        let producer = std::thread::spawn(move || {
            for n in 3..6 {
                block_on(b.push_when_room(n));
                done.send(n).unwrap();
            }
        });
        assert!(
            pushed.recv_timeout(Duration::from_millis(100)).is_err(),
            "a third message was pushed into a full buffer"
        );
        assert_eq!(buffer.len(), 2);
        assert_eq!(count(buffer.poll(None, &convert)), Some(1));
        assert_eq!(pushed.recv_timeout(Duration::from_secs(10)), Ok(3));
        assert_eq!(buffer.len(), 2);
        buffer.stop();
        assert_eq!(pushed.recv_timeout(Duration::from_secs(10)), Ok(4));
        assert_eq!(pushed.recv_timeout(Duration::from_secs(10)), Ok(5));
        producer.join().unwrap();
        assert_eq!(buffer.len(), 2, "nothing taken after stop()");
    }

    #[test]
    fn a_push_wakes_a_blocked_poll_and_close_ends_it() {
        let buffer = std::sync::Arc::new(Buffer::new(&ListenOptions::default(), OnStop::GiveBack));
        let b = buffer.clone();
        let poller = std::thread::spawn(move || count(b.poll(None, &convert)));
        std::thread::sleep(Duration::from_millis(20));
        buffer.push(7);
        assert_eq!(poller.join().unwrap(), Some(1));
        let b = buffer.clone();
        let poller = std::thread::spawn(move || b.poll(None, &convert));
        std::thread::sleep(Duration::from_millis(20));
        assert!(buffer.close().is_empty());
        assert!(matches!(poller.join().unwrap(), Polled::Closed));
    }
}
