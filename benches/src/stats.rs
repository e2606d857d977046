//! Latency samples and rates, and the repeat-and-take-the-median rule every figure of
//! the comparison follows.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Percentiles of a set of round trips, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Round trips measured.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest.
    pub max_us: f64,
}

impl Latency {
    /// Summarises samples in nanoseconds (the order does not matter).
    pub fn from_nanos(mut samples: Vec<u64>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let index = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[index] as f64 / 1_000.0
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Latency {
            count: samples.len() as u64,
            mean_us: sum as f64 / samples.len() as f64 / 1_000.0,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }

    /// Runs `round_trip` `warmup` times untimed, then `count` times timed one by one.
    pub fn measure(warmup: usize, count: usize, mut round_trip: impl FnMut()) -> Latency {
        for _ in 0..warmup {
            round_trip();
        }
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let start = Instant::now();
            round_trip();
            samples.push(start.elapsed().as_nanos() as u64);
        }
        Latency::from_nanos(samples)
    }
}

/// Messages moved in a time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// Messages.
    pub count: u64,
    /// Seconds, from the first send to the last receipt.
    pub seconds: f64,
    /// `count / seconds`.
    pub per_s: f64,
}

impl Rate {
    /// `count` messages in `elapsed`.
    pub fn new(count: u64, elapsed: Duration) -> Rate {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Rate {
            count,
            seconds,
            per_s: count as f64 / seconds,
        }
    }
}

/// The result with the median `key` (the upper one of an even count); `None` for none.
pub fn median<T>(mut results: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    results.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = results.len() / 2;
    (!results.is_empty()).then(|| results.swap_remove(middle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let latency = Latency::from_nanos((1..=100).rev().map(|i| i * 1_000).collect());
        assert_eq!(latency.count, 100);
        assert_eq!(latency.p50_us, 51.0);
        assert_eq!(latency.p99_us, 99.0);
        assert_eq!(latency.max_us, 100.0);
        assert!((latency.mean_us - 50.5).abs() < 1e-9);
        assert_eq!(Latency::from_nanos(Vec::new()), Latency::default());
    }

    #[test]
    fn median_keeps_the_middle_run() {
        assert_eq!(median(vec![5.0, 1.0, 3.0], |v| *v), Some(3.0));
        assert_eq!(median(Vec::<f64>::new(), |v| *v), None);
        assert_eq!(Rate::new(10, Duration::from_secs(2)).per_s, 5.0);
    }
}
