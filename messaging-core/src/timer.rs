//! A runtime-agnostic timer: one background thread serves every deadline in the
//! process, so that core code (async call timeouts, call-monitor heartbeats, batch
//! timeouts) needs no async runtime.
//!
//! * [`sleep`] / [`sleep_until`]: futures that complete at a deadline;
//! * [`timeout`]: bounds any future;
//! * [`repeat`]: runs a callback every interval until its [`Repeating`] guard is dropped
//!   (how the server heartbeats a caller while a handler runs; dropping the guard is
//!   the only way to stop it, so it cannot outlive its call).
//!
//! Callbacks run on the timer thread and must be quick and non-blocking.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

type Callback = Arc<dyn Fn() + Send + Sync + 'static>;

/// `now + duration`, or `None` when that is beyond what an `Instant` can hold (a
/// timeout of `Duration::MAX` means "no deadline", not a panic).
pub fn deadline_after(duration: Duration) -> Option<Instant> {
    Instant::now().checked_add(duration)
}

enum Entry {
    Wake(Waker),
    Repeat {
        interval: Duration,
        callback: Callback,
    },
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, Entry>,
    next_id: u64,
}

struct Timer {
    state: Mutex<State>,
    changed: Condvar,
}

impl Timer {
    fn get() -> &'static Timer {
        static TIMER: OnceLock<&'static Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let timer: &'static Timer = Box::leak(Box::new(Timer {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("messaging-timer".to_owned())
                .spawn(move || timer.run())
                .expect("spawn the timer thread");
            timer
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, at: Instant, entry: Entry) -> u64 {
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.entries.insert(id, entry);
        let earliest = state
            .heap
            .peek()
            .is_none_or(|Reverse((first, _))| at < *first);
        state.heap.push(Reverse((at, id)));
        drop(state);
        if earliest {
            self.changed.notify_one();
        }
        id
    }

    fn remove(&self, id: u64) {
        self.lock().entries.remove(&id);
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let mut due: Vec<Entry> = Vec::new();
            while let Some(&Reverse((at, id))) = state.heap.peek() {
                if at > now {
                    break;
                }
                state.heap.pop();
                match state.entries.remove(&id) {
                    Some(Entry::Wake(waker)) => due.push(Entry::Wake(waker)),
                    Some(Entry::Repeat { interval, callback }) => {
                        due.push(Entry::Repeat {
                            interval,
                            callback: callback.clone(),
                        });
                        // An interval beyond what an `Instant` can reach never
                        // comes round again (instead of firing in a tight loop).
                        if let Some(next) = now.checked_add(interval) {
                            state
                                .entries
                                .insert(id, Entry::Repeat { interval, callback });
                            state.heap.push(Reverse((next, id)));
                        }
                    }
                    None => {} // cancelled
                }
            }
            if !due.is_empty() {
                drop(state);
                for entry in due {
                    match entry {
                        Entry::Wake(waker) => waker.wake(),
                        Entry::Repeat { callback, .. } => callback(),
                    }
                }
                state = self.lock();
                continue;
            }
            state = match state.heap.peek() {
                Some(&Reverse((at, _))) => {
                    self.changed
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

// ===== Sleep =====

/// A future that completes at a deadline. Made by [`sleep`] and [`sleep_until`].
///
/// # Cancel safety
///
/// Cancel safe; dropping it unregisters it.
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    /// `None`: never completes.
    deadline: Option<Instant>,
    registered: Option<(u64, Waker)>,
}

/// Completes after `duration`.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use messaging_core::{dispatch::block_on, timer};
///
/// let start = Instant::now();
/// block_on(timer::sleep(Duration::from_millis(20)));
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: deadline_after(duration),
        registered: None,
    }
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline: Some(deadline),
        registered: None,
    }
}

impl Sleep {
    /// When it completes (`None`: never, the duration was too long to represent).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Moves the deadline (re-arming a completed sleep).
    pub fn reset(&mut self, deadline: Instant) {
        if let Some((id, _)) = self.registered.take() {
            Timer::get().remove(id);
        }
        self.deadline = Some(deadline);
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending; // never: nothing to register
        };
        if Instant::now() >= deadline {
            if let Some((id, _)) = self.registered.take() {
                Timer::get().remove(id);
            }
            return Poll::Ready(());
        }
        let stale = match &self.registered {
            Some((_, waker)) => !waker.will_wake(cx.waker()),
            None => true,
        };
        if stale {
            let timer = Timer::get();
            if let Some((id, _)) = self.registered.take() {
                timer.remove(id);
            }
            let id = timer.insert(deadline, Entry::Wake(cx.waker().clone()));
            self.registered = Some((id, cx.waker().clone()));
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((id, _)) = self.registered.take() {
            Timer::get().remove(id);
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

// ===== timeout =====

/// The future given to [`timeout`] did not complete in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// Completes with the future's output, or with [`Elapsed`] once `duration` has passed.
///
/// # Cancel safety
///
/// As cancel safe as the future it wraps.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let mut sleep = std::pin::pin!(sleep(duration));
    race(future.as_mut(), sleep.as_mut()).await
}

/// Like [`timeout`], with an absolute deadline.
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let mut sleep = std::pin::pin!(sleep_until(deadline));
    race(future.as_mut(), sleep.as_mut()).await
}

async fn race<F: Future>(
    mut future: Pin<&mut F>,
    mut sleep: Pin<&mut Sleep>,
) -> Result<F::Output, Elapsed> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

// ===== repeat =====

/// Runs `callback` every `interval` (first after one interval) until the returned
/// guard is dropped.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use messaging_core::timer;
///
/// let ticks = Arc::new(AtomicUsize::new(0));
/// let t = ticks.clone();
/// let guard = timer::repeat(Duration::from_millis(5), move || { t.fetch_add(1, Ordering::SeqCst); });
/// std::thread::sleep(Duration::from_millis(50));
/// drop(guard);
/// let seen = ticks.load(Ordering::SeqCst);
/// assert!(seen >= 1);
/// std::thread::sleep(Duration::from_millis(30));
/// assert!(ticks.load(Ordering::SeqCst) <= seen + 1); // stopped (at most one in flight)
/// ```
pub fn repeat(interval: Duration, callback: impl Fn() + Send + Sync + 'static) -> Repeating {
    let interval = interval.max(Duration::from_millis(1));
    // An interval too long to represent never fires.
    let Some(first) = deadline_after(interval) else {
        return Repeating { id: None };
    };
    let id = Timer::get().insert(
        first,
        Entry::Repeat {
            interval,
            callback: Arc::new(callback),
        },
    );
    Repeating { id: Some(id) }
}

/// Stops a [`repeat`] when dropped.
#[derive(Debug)]
#[must_use = "the callback stops repeating when this guard is dropped"]
pub struct Repeating {
    /// `None`: an interval that never comes.
    id: Option<u64>,
}

impl Drop for Repeating {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            Timer::get().remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::block_on;

    #[test]
    fn an_interval_too_long_to_represent_never_fires() {
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = ticks.clone();
        let repeating = repeat(Duration::MAX, move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ticks.load(std::sync::atomic::Ordering::SeqCst), 0);
        drop(repeating);
    }

    #[test]
    fn timeout_passes_through_a_ready_future_and_fails_a_pending_one() {
        assert_eq!(
            block_on(timeout(Duration::from_secs(5), async { 7 })),
            Ok(7)
        );
        assert_eq!(
            block_on(timeout(
                Duration::from_millis(10),
                std::future::pending::<()>()
            )),
            Err(Elapsed)
        );
    }

    #[test]
    fn many_sleeps_complete_in_deadline_order() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                let order = order.clone();
                std::thread::spawn(move || {
                    block_on(sleep(Duration::from_millis(ms)));
                    order.lock().unwrap().push(ms);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [10, 20, 30]);
    }

    #[test]
    fn an_unrepresentable_timeout_means_no_deadline_not_a_panic() {
        assert!(deadline_after(Duration::MAX).is_none());
        assert_eq!(block_on(timeout(Duration::MAX, async { 1 })), Ok(1));
        let mut s = std::pin::pin!(sleep(Duration::MAX));
        let waker = std::task::Waker::noop();
        assert!(
            s.as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        );
    }

    #[test]
    fn a_reset_sleep_waits_for_the_new_deadline() {
        let mut s = sleep(Duration::from_millis(1));
        let start = Instant::now();
        s.reset(start + Duration::from_millis(30));
        block_on(s);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
