//! Criterion benchmarks over `memory://`, per executor: one lifecycle cycle
//! (start → stop → wait), the sequential call round trip, and cast throughput at
//! 32 / 1024 / 8192-byte payloads.
//!
//! Run: `cargo bench -p benches --bench lifecycle`

use std::hint::black_box;

use benches::{EchoServer, ExecutorKind, idle_server, payload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("lifecycle_cycle");
    for kind in ExecutorKind::ALL {
        let server = idle_server(kind);
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                server.start().unwrap();
                server.stop().unwrap();
                black_box(server.wait().unwrap());
            });
        });
    }
    group.finish();
}

fn call_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory_call_round_trip");
    for kind in ExecutorKind::ALL {
        let server = EchoServer::start(kind);
        let body = payload(32);
        group.bench_function(kind.name(), |b| {
            b.iter(|| black_box(server.call(body.clone())));
        });
    }
    group.finish();
}

fn cast_throughput(c: &mut Criterion) {
    const BATCH: usize = 1_000;
    let mut group = c.benchmark_group("memory_cast_throughput");
    group.throughput(Throughput::Elements(BATCH as u64));
    for kind in ExecutorKind::ALL {
        let server = EchoServer::start(kind);
        for size in [32, 1024, 8192] {
            let body = payload(size);
            group.bench_with_input(BenchmarkId::new(kind.name(), size), &size, |b, _| {
                b.iter(|| {
                    let target = server.processed() + BATCH;
                    for _ in 0..BATCH {
                        server.cast(body.clone());
                    }
                    server.wait_processed(target);
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, lifecycle, call_round_trip, cast_throughput);
criterion_main!(benches);
