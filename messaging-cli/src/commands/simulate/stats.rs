//! Measurements. Threads record into per-thread stripes (an uncontended lock each);
//! once a second the control loop swaps the stripes out, computes that second's exact
//! percentiles, prints a progress line and folds the second into the run's totals (a
//! log-linear histogram, so a long run needs constant memory).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use messaging_core::notify::NotifyError;
use messaging_core::rpc::RpcError;
use serde_json::{Value, json};

use crate::Output;

/// Why a message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// No reply in time.
    Timeout,
    /// The handler failed.
    Remote,
    /// The transport failed to send.
    Transport,
    /// The reply channel closed without a reply.
    ReplyLost,
    /// Encoding or decoding failed.
    Codec,
    /// The reply was not the message sent.
    Mismatch,
    /// The server got something that is not a simulator message.
    Invalid,
    /// Anything else.
    Other,
}

const KINDS: usize = 8;

impl ErrorKind {
    const ALL: [ErrorKind; KINDS] = [
        ErrorKind::Timeout,
        ErrorKind::Remote,
        ErrorKind::Transport,
        ErrorKind::ReplyLost,
        ErrorKind::Codec,
        ErrorKind::Mismatch,
        ErrorKind::Invalid,
        ErrorKind::Other,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Remote => "remote",
            ErrorKind::Transport => "transport",
            ErrorKind::ReplyLost => "reply-lost",
            ErrorKind::Codec => "codec",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Other => "other",
        }
    }

    pub(crate) fn of_rpc(error: &RpcError) -> Self {
        match error {
            e if e.is_timeout() => ErrorKind::Timeout,
            RpcError::Remote(_) => ErrorKind::Remote,
            RpcError::Transport(_) => ErrorKind::Transport,
            RpcError::ReplyLost { .. } => ErrorKind::ReplyLost,
            RpcError::Codec(_) => ErrorKind::Codec,
            _ => ErrorKind::Other,
        }
    }

    pub(crate) fn of_notify(error: &NotifyError) -> Self {
        match error {
            NotifyError::Transport(_) => ErrorKind::Transport,
            NotifyError::Codec(_) => ErrorKind::Codec,
            _ => ErrorKind::Other,
        }
    }
}

/// What a latency measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LatencyKind {
    /// Call to reply, on the client's monotonic clock.
    RoundTrip,
    /// How long the send took (casts, notifications).
    Send,
    /// Client wall-clock stamp to the server's handler.
    OneWay,
}

impl LatencyKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LatencyKind::RoundTrip => "round-trip",
            LatencyKind::Send => "send",
            LatencyKind::OneWay => "one-way",
        }
    }
}

/// Microseconds, saturating.
pub(crate) fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

/// What one stripe gathered since the last swap.
#[derive(Debug, Default)]
struct Bucket {
    count: u64,
    bytes: u64,
    errors: [u64; KINDS],
    latencies: Vec<u32>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Bucket {
    fn merge(&mut self, other: Bucket) {
        self.count += other.count;
        self.bytes += other.bytes;
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        if self.latencies.is_empty() {
            self.latencies = other.latencies;
        } else {
            self.latencies.extend_from_slice(&other.latencies);
        }
        self.first = earliest(self.first, other.first);
        self.last = self.last.max(other.last);
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A stripe on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(Mutex<Bucket>);

/// Stripes per recorder: threads beyond this share (still correct, a little slower).
const STRIPES: usize = 64;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// Where message outcomes are recorded, from any thread.
#[derive(Debug)]
pub(crate) struct Recorder {
    stripes: Box<[Stripe]>,
}

impl Recorder {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Recorder {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        })
    }

    fn stripe(&self) -> MutexGuard<'_, Bucket> {
        let index = THREAD_INDEX.with(|i| *i) % self.stripes.len();
        self.stripes[index]
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A message done at `at`, with `bytes` of payload and maybe a latency (µs).
    pub(crate) fn ok(&self, bytes: usize, latency_us: Option<u32>, at: Instant) {
        let mut bucket = self.stripe();
        bucket.count += 1;
        bucket.bytes += bytes as u64;
        if let Some(latency) = latency_us {
            bucket.latencies.push(latency);
        }
        bucket.first.get_or_insert(at);
        bucket.last = Some(at);
    }

    /// A failed message.
    pub(crate) fn error(&self, kind: ErrorKind) {
        let index = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.stripe().errors[index] += 1;
    }

    fn drain(&self) -> Bucket {
        let mut all = Bucket::default();
        for stripe in self.stripes.iter() {
            let taken = std::mem::take(&mut *stripe.0.lock().unwrap_or_else(|p| p.into_inner()));
            all.merge(taken);
        }
        all
    }

    fn pending(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|p| p.into_inner()).count)
            .sum()
    }

    /// Whether nothing was recorded since the last swap.
    fn is_empty(&self) -> bool {
        self.stripes.iter().all(|s| {
            let bucket = s.0.lock().unwrap_or_else(|p| p.into_inner());
            bucket.count == 0 && bucket.errors.iter().all(|&n| n == 0)
        })
    }
}

/// Latency statistics in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Latency {
    pub(crate) min: u32,
    pub(crate) p50: u32,
    pub(crate) p90: u32,
    pub(crate) p99: u32,
    pub(crate) max: u32,
    pub(crate) mean: f64,
}

impl Latency {
    /// Exact, nearest-rank, from sorted samples.
    fn of_sorted(sorted: &[u32]) -> Option<Latency> {
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let pick = |q: f64| sorted[rank(q, sorted.len() as u64) as usize - 1];
        let sum: u64 = sorted.iter().map(|&v| u64::from(v)).sum();
        Some(Latency {
            min,
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
            max,
            mean: sum as f64 / sorted.len() as f64,
        })
    }

    fn json(this: Option<Latency>) -> Value {
        match this {
            None => Value::Null,
            Some(l) => json!({
                "min": l.min,
                "p50": l.p50,
                "p90": l.p90,
                "p99": l.p99,
                "max": l.max,
                "mean": (l.mean * 10.0).round() / 10.0,
            }),
        }
    }
}

/// The nearest rank (1-based) of quantile `q` among `n > 0` samples.
fn rank(q: f64, n: u64) -> u64 {
    ((q * n as f64).ceil() as u64).clamp(1, n)
}

/// Values below this are counted exactly; above, 128 sub-buckets per power of two
/// (each within 1/256 of its midpoint).
const LINEAR: u64 = 256;
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for every `u32`.
const HISTOGRAM_LEN: usize = (LINEAR + (32 - 8) * SUB) as usize;

/// A log-linear (HDR-like) histogram of microseconds.
#[derive(Debug)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u32,
    max: u32,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; HISTOGRAM_LEN],
            total: 0,
            sum: 0,
            min: u32::MAX,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(value: u32) -> usize {
        let v = u64::from(value);
        if v < LINEAR {
            return v as usize;
        }
        let exponent = 63 - v.leading_zeros(); // >= 8
        let mantissa = v >> (exponent - SUB_BITS); // SUB..2 * SUB
        (LINEAR + u64::from(exponent - SUB_BITS - 1) * SUB + (mantissa - SUB)) as usize
    }

    /// The midpoint of bucket `index`.
    fn value(index: usize) -> u64 {
        let index = index as u64;
        if index < LINEAR {
            return index;
        }
        let k = index - LINEAR;
        let shift = k / SUB + 1; // exponent - SUB_BITS
        let lower = (k % SUB + SUB) << shift;
        lower + (1 << shift) / 2
    }

    fn record(&mut self, value: u32) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    fn quantile(&self, q: f64) -> u32 {
        let wanted = rank(q, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                let v = Self::value(index).clamp(u64::from(self.min), u64::from(self.max));
                return u32::try_from(v).unwrap_or(u32::MAX);
            }
        }
        self.max
    }

    fn latency(&self) -> Option<Latency> {
        (self.total > 0).then(|| Latency {
            min: self.min,
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            max: self.max,
            mean: self.sum as f64 / self.total as f64,
        })
    }
}

/// One second of the series.
#[derive(Debug)]
struct Second {
    second: u64,
    count: u64,
    errors: u64,
    bytes: u64,
    latency: Option<Latency>,
}

/// The run's totals.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) errors: [u64; KINDS],
    pub(crate) bytes: u64,
    pub(crate) duration: Duration,
    pub(crate) latency: Option<Latency>,
}

impl Summary {
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }

    fn errors_by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ErrorKind::ALL
            .iter()
            .zip(self.errors)
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| (kind.name(), n))
    }

    fn per_second(&self, value: u64) -> f64 {
        let seconds = self.duration.as_secs_f64();
        if seconds > 0.0 {
            value as f64 / seconds
        } else {
            0.0
        }
    }

    pub(crate) fn json(&self) -> Value {
        let errors_by_kind: serde_json::Map<String, Value> = self
            .errors_by_kind()
            .map(|(k, n)| (k.to_owned(), n.into()))
            .collect();
        json!({
            "count": self.count,
            "errors": self.error_count(),
            "errors_by_kind": errors_by_kind,
            "duration_s": round3(self.duration.as_secs_f64()),
            "msgs_per_s": round3(self.per_second(self.count)),
            "bytes": self.bytes,
            "bytes_per_s": self.per_second(self.bytes).round(),
            "latency_us": Latency::json(self.latency),
        })
    }

    /// The summary line printed on stdout.
    pub(crate) fn line(&self, label: &str, latency_kind: LatencyKind) -> String {
        let mut errors = self.error_count().to_string();
        if self.error_count() > 0 {
            let kinds: Vec<String> = self
                .errors_by_kind()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            errors = format!("{errors} ({})", kinds.join(", "));
        }
        let mut line = format!(
            "{label}: count {}  errors {errors}  duration {:.3} s  {:.1} msg/s  bytes {} ({:.2} MB/s)",
            self.count,
            self.duration.as_secs_f64(),
            self.per_second(self.count),
            self.bytes,
            self.per_second(self.bytes) / 1e6,
        );
        if let Some(l) = self.latency {
            line.push_str(&format!(
                "  {} latency ms: min {} mean {} p50 {} p90 {} p99 {} max {}",
                latency_kind.name(),
                ms(f64::from(l.min)),
                ms(l.mean),
                ms(f64::from(l.p50)),
                ms(f64::from(l.p90)),
                ms(f64::from(l.p99)),
                ms(f64::from(l.max)),
            ));
        }
        line
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Microseconds as milliseconds, with about three significant digits.
fn ms(us: f64) -> String {
    let ms = us / 1000.0;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// Collects one side's recorder each second: progress lines, the series, the totals.
#[derive(Debug)]
pub(crate) struct Collector {
    label: &'static str,
    recorder: Arc<Recorder>,
    seconds: u64,
    count: u64,
    bytes: u64,
    errors: [u64; KINDS],
    histogram: Histogram,
    first: Option<Instant>,
    last: Option<Instant>,
    series: Vec<Second>,
}

impl Collector {
    pub(crate) fn new(label: &'static str, recorder: Arc<Recorder>) -> Self {
        Collector {
            label,
            recorder,
            seconds: 0,
            count: 0,
            bytes: 0,
            errors: [0; KINDS],
            histogram: Histogram::default(),
            first: None,
            last: None,
            series: Vec::new(),
        }
    }

    /// Messages counted so far, including the current second.
    pub(crate) fn count(&self) -> u64 {
        self.count + self.recorder.pending()
    }

    /// Closes a second: one series entry, and a progress line on `err` if `progress`.
    pub(crate) fn tick(&mut self, err: &Output, progress: bool) {
        let mut bucket = self.recorder.drain();
        self.seconds += 1;
        bucket.latencies.sort_unstable();
        let latency = Latency::of_sorted(&bucket.latencies);
        for &value in &bucket.latencies {
            self.histogram.record(value);
        }
        self.count += bucket.count;
        self.bytes += bucket.bytes;
        for (mine, theirs) in self.errors.iter_mut().zip(bucket.errors) {
            *mine += theirs;
        }
        self.first = earliest(self.first, bucket.first);
        self.last = self.last.max(bucket.last);
        let second = Second {
            second: self.seconds,
            count: bucket.count,
            errors: bucket.errors.iter().sum(),
            bytes: bucket.bytes,
            latency,
        };
        if progress {
            let mut line = format!(
                "{:<13}: sec {}  count {}  ({} msg/s)  bytes {:.1} MB/s",
                self.label,
                second.second,
                self.count,
                second.count,
                second.bytes as f64 / 1e6,
            );
            if let Some(l) = latency {
                line.push_str(&format!(
                    "  latency p50 {} ms p99 {} ms max {} ms",
                    ms(f64::from(l.p50)),
                    ms(f64::from(l.p99)),
                    ms(f64::from(l.max)),
                ));
            }
            line.push_str(&format!("  errors {}", self.errors.iter().sum::<u64>()));
            err.note(&line);
        }
        self.series.push(second);
    }

    /// Closes the last, partial second if anything happened in it (no progress line).
    pub(crate) fn finish(&mut self, err: &Output) {
        if !self.recorder.is_empty() {
            self.tick(err, false);
        }
    }

    /// The totals; `duration` if given, else from the first to the last message.
    pub(crate) fn summary(&self, duration: Option<Duration>) -> Summary {
        let duration = duration.unwrap_or_else(|| match (self.first, self.last) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        });
        Summary {
            count: self.count,
            errors: self.errors,
            bytes: self.bytes,
            duration,
            latency: self.histogram.latency(),
        }
    }

    pub(crate) fn series_json(&self) -> Value {
        self.series
            .iter()
            .map(|s| {
                json!({
                    "second": s.second,
                    "count": s.count,
                    "errors": s.errors,
                    "bytes": s.bytes,
                    "latency_us": Latency::json(s.latency),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..5_000u32).chain([65_535, 1 << 20, u32::MAX - 1, u32::MAX]) {
            let index = Histogram::index(v);
            assert!(index < HISTOGRAM_LEN, "{v}");
            assert!(index >= last, "{v}");
            last = index;
            let mid = Histogram::value(index);
            let error = (mid as f64 - f64::from(v)).abs() / f64::from(v.max(1));
            assert!(error <= 1.0 / 256.0 + 1e-9, "{v} -> {mid}");
        }
    }

    #[test]
    fn quantiles_match_exact_ones_closely() {
        let mut histogram = Histogram::default();
        let mut values: Vec<u32> = (1..=10_000).map(|i| i * 37 % 9_973 + 50).collect();
        for &v in &values {
            histogram.record(v);
        }
        values.sort_unstable();
        let exact = Latency::of_sorted(&values).unwrap();
        let approx = histogram.latency().unwrap();
        assert_eq!((approx.min, approx.max), (exact.min, exact.max));
        for (a, e) in [
            (approx.p50, exact.p50),
            (approx.p90, exact.p90),
            (approx.p99, exact.p99),
        ] {
            assert!((f64::from(a) - f64::from(e)).abs() <= f64::from(e) / 200.0 + 1.0);
        }
        assert!((approx.mean - exact.mean).abs() < 1e-6);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latency::of_sorted(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        assert_eq!((l.min, l.p50, l.p90, l.p99, l.max), (1, 5, 9, 10, 10));
        assert_eq!(Latency::of_sorted(&[]), None);
    }

    #[test]
    fn records_from_many_threads_add_up() {
        let recorder = Recorder::new();
        let mut collector = Collector::new("t", recorder.clone());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        recorder.ok(10, Some(i), Instant::now());
                    }
                    recorder.error(ErrorKind::Timeout);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(collector.count(), 8000);
        let err = Output::new(std::io::sink());
        collector.tick(&err, true);
        collector.finish(&err);
        let summary = collector.summary(Some(Duration::from_secs(2)));
        assert_eq!((summary.count, summary.bytes), (8000, 80_000));
        assert_eq!(summary.error_count(), 8);
        assert_eq!(summary.json()["errors_by_kind"]["timeout"], 8);
        assert_eq!(summary.json()["msgs_per_s"], 4000.0);
        assert_eq!(collector.series.len(), 1);
    }
}
