//! Synchronisation primitives used by the lifecycle state machine, switched by `cfg(loom)`.
//!
//! Everything in this crate that loom must see (the lifecycle lock and condition
//! variable, and the bookkeeping of the loom models) imports from here, never from
//! `std::sync` directly. Under `RUSTFLAGS="--cfg loom"` these are loom's modelled types;
//! otherwise they are the std ones. The wrappers make `lock()` infallible: no code in
//! this crate runs user code while holding a lock, so a poisoned lock only means a
//! panic elsewhere, and the protected state is still consistent.

#[cfg(loom)]
pub(crate) use loom::sync::{Condvar as RawCondvar, Mutex as RawMutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar as RawCondvar, Mutex as RawMutex, MutexGuard};

#[cfg(all(loom, test))]
pub(crate) use loom::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
};

use std::time::Duration;

/// A mutex whose `lock` never fails (poisoning is ignored, see the module docs).
#[derive(Debug)]
pub(crate) struct Mutex<T>(RawMutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(RawMutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Debug)]
pub(crate) struct Condvar(RawCondvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(RawCondvar::new())
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits at most `timeout`. Under loom this never times out (loom has no notion of
    /// time), which is why the loom models only exercise the timeout-free paths.
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> MutexGuard<'a, T> {
        match self.0.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}
