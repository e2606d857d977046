//! Spin-then-park: a waiting thread first spins (then yields) for a bounded time, so a
//! reply that arrives within microseconds is seen without the cost of parking and
//! waking a thread (several microseconds each way); only then does it park, so an idle
//! thread sleeps instead of burning a core.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many times a waiter checks before parking: 64 spins, then yields.
const ROUNDS: u32 = 200;

/// Waits until `seq` differs from `seen`, for a bounded time. Returns whether it did
/// (the caller parks otherwise, re-checking under its lock).
pub fn spin_until_changed(seq: &AtomicU64, seen: u64) -> bool {
    for round in 0..ROUNDS {
        if seq.load(Ordering::Acquire) != seen {
            return true;
        }
        if round < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    seq.load(Ordering::Acquire) != seen
}
