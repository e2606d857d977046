//! RPC and notifications per transport × executor: the sequential call round trip
//! (on the event loop, from a task on its runtime),
//! cast and notification throughput at 32 / 1024 / 8192-byte payloads, and the call
//! round trip with the bincode and JSON codecs.
//!
//! `memory://` always; RabbitMQ and NATS when `MESSAGING_TEST_RABBIT_URL` /
//! `MESSAGING_TEST_NATS_URL` are set. Run: `cargo bench -p benches --bench rpc`
//! (`-- call_rtt/memory` to pick groups, `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use benches::ours::{NotifyBench, Payload, RpcBench, throughput, with_option};
use benches::{ExecutorKind, bench_transports};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};

const SIZES: [usize; 3] = [32, 1024, 8192];
const BATCH: u64 = 1_000;
const LIMIT: Duration = Duration::from_secs(60);

fn group<'a>(c: &'a mut Criterion, name: &str, transport: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(format!("{name}/{transport}"));
    if transport != "memory" {
        // A broker round trip is ~0.1–1 ms and a batch of casts tens of ms.
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(4));
    }
    group
}

/// `iters` calls, timed the way [`RpcBench::timed_calls`] does (from a task on the
/// event loop's runtime; from this thread otherwise).
fn timed(bench: &Arc<RpcBench>, iters: u64, payload: &Payload) -> Duration {
    let samples = bench
        .timed_calls(iters as usize, payload)
        .expect("every call answered");
    Duration::from_nanos(black_box(samples).iter().sum())
}

fn call_rtt(c: &mut Criterion) {
    for (transport, url) in bench_transports() {
        let mut group = group(c, "call_rtt", transport);
        for kind in ExecutorKind::ALL {
            let bench = Arc::new(RpcBench::start(&url, kind).expect("a bench server"));
            for size in SIZES {
                let payload = Payload::of_size(size);
                group.bench_with_input(BenchmarkId::new(kind.name(), size), &size, |b, _| {
                    b.iter_custom(|iters| timed(&bench, iters, &payload));
                });
            }
        }
        group.finish();
    }
}

fn call_codec(c: &mut Criterion) {
    for (transport, url) in bench_transports() {
        let mut group = group(c, "call_codec_1024", transport);
        let payload = Payload::of_size(1024);
        // oslo's wire on RabbitMQ is JSON only: there is nothing to compare.
        let codecs: &[&str] = match transport {
            "rabbit" => &["json"],
            _ => &["bincode", "json"],
        };
        for kind in ExecutorKind::ALL {
            for &codec in codecs {
                let bench = Arc::new(
                    RpcBench::start(&with_option(&url, "codec", codec), kind)
                        .expect("a bench server"),
                );
                group.bench_function(BenchmarkId::new(kind.name(), codec), |b| {
                    b.iter_custom(|iters| timed(&bench, iters, &payload));
                });
            }
        }
        group.finish();
    }
}

fn cast_throughput(c: &mut Criterion) {
    for (transport, url) in bench_transports() {
        let mut group = group(c, "cast_throughput", transport);
        group.throughput(Throughput::Elements(BATCH));
        for kind in ExecutorKind::ALL {
            let bench = RpcBench::start(&url, kind).expect("a bench server");
            for size in SIZES {
                let payload = Payload::of_size(size);
                group.bench_with_input(BenchmarkId::new(kind.name(), size), &size, |b, _| {
                    b.iter(|| {
                        throughput(BATCH, bench.casts(), LIMIT, || Ok(bench.cast(&payload)?))
                            .expect("every cast processed")
                    });
                });
            }
        }
        group.finish();
    }
}

fn notify_throughput(c: &mut Criterion) {
    for (transport, url) in bench_transports() {
        let mut group = group(c, "notify_throughput", transport);
        group.throughput(Throughput::Elements(BATCH));
        for kind in ExecutorKind::ALL {
            let bench = NotifyBench::start(&url, kind).expect("a bench listener");
            for size in SIZES {
                let payload = Payload::of_size(size);
                group.bench_with_input(BenchmarkId::new(kind.name(), size), &size, |b, _| {
                    b.iter(|| {
                        throughput(BATCH, bench.received(), LIMIT, || bench.notify(&payload))
                            .expect("every notification processed")
                    });
                });
            }
        }
        group.finish();
    }
}

criterion_group!(
    benches,
    call_rtt,
    call_codec,
    cast_throughput,
    notify_throughput
);
criterion_main!(benches);
