//! Spin-then-park: a waiting thread first spins (then yields) for a bounded time, so a
//! reply that arrives within microseconds is seen without the cost of parking and
//! waking a thread (several microseconds each way); only then does it park, so an idle
//! thread sleeps instead of burning a core.
//!
//! Spinning is adaptive, per thread: a thread whose recent spins all ended without the
//! change it waited for (its waits are long: a broker round trip, an idle queue) stops
//! spinning and parks at once, trying a spin again only on every
//! [`RETRY_EVERY`]-th wait, so it notices when its waits become short again. On two
//! cores shared with a broker, spinning that never pays off only steals the broker's
//! CPU.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many times a waiter checks before parking: 64 spins, then yields.
const ROUNDS: u32 = 200;

/// Spins in a row that may miss before a thread stops spinning.
const MISSES_ALLOWED: u32 = 4;

/// Once it stopped, a thread spins again on every this many waits.
pub const RETRY_EVERY: u32 = 16;

thread_local! {
    static MISSES: Cell<u32> = const { Cell::new(0) };
}

/// Waits until `seq` differs from `seen`, for a bounded time. Returns whether it did
/// (the caller parks otherwise, re-checking under its lock).
pub fn spin_until_changed(seq: &AtomicU64, seen: u64) -> bool {
    let misses = MISSES.get();
    if misses >= MISSES_ALLOWED && !(misses - MISSES_ALLOWED).is_multiple_of(RETRY_EVERY) {
        MISSES.set(misses.saturating_add(1));
        return seq.load(Ordering::Acquire) != seen;
    }
    for round in 0..ROUNDS {
        if seq.load(Ordering::Acquire) != seen {
            MISSES.set(0);
            return true;
        }
        if round < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    let changed = seq.load(Ordering::Acquire) != seen;
    MISSES.set(if changed { 0 } else { misses.saturating_add(1) });
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_whose_spins_miss_stops_spinning_and_retries_now_and_then() {
        let seq = AtomicU64::new(0);
        std::thread::spawn(move || {
            let mut spun = 0;
            for _ in 0..(MISSES_ALLOWED + 2 * RETRY_EVERY) {
                let before = MISSES.get();
                assert!(!spin_until_changed(&seq, 0));
                // A wait that spun counts one miss more than a skipped one would, so
                // tell them apart by whether the thread was allowed to spin.
                if before < MISSES_ALLOWED || (before - MISSES_ALLOWED).is_multiple_of(RETRY_EVERY)
                {
                    spun += 1;
                }
            }
            assert_eq!(
                spun,
                MISSES_ALLOWED + 2,
                "spins only on every {RETRY_EVERY}th wait"
            );
            seq.store(1, Ordering::Release);
            assert!(spin_until_changed(&seq, 0));
            assert_eq!(
                MISSES.get(),
                0,
                "a wait that saw its change resets the count"
            );
        })
        .join()
        .unwrap();
    }
}
