//! One lifecycle cycle (start → stop → wait) of an idle server, per executor.
//!
//! Run: `cargo bench -p benches --bench lifecycle`

use std::hint::black_box;

use benches::{ExecutorKind, idle_server};
use criterion::{Criterion, criterion_group, criterion_main};

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

criterion_group!(benches, lifecycle);
criterion_main!(benches);
