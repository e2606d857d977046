//! One hot path in a loop, for a profiler: `cargo build --release -p benches --example
//! hot`, then for example
//! `perf record -g ./target/release/examples/hot cast memory:///hot blocking 1000000`.
//!
//! Arguments: `call|cast|notify URL EXECUTOR COUNT [PAYLOAD_BYTES]`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use benches::ExecutorKind;
use benches::ours::{self, NotifyBench, Payload, RpcBench};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [what, url, executor, count, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: hot call|cast|notify URL blocking|thread-pool|event-loop COUNT [PAYLOAD]"
        );
        return ExitCode::from(2);
    };
    let Some(kind) = ExecutorKind::ALL.into_iter().find(|k| k.name() == executor) else {
        eprintln!("unknown executor {executor:?}");
        return ExitCode::from(2);
    };
    let (Ok(count), Ok(size)) = (
        count.parse::<u64>(),
        rest.first().map_or(Ok(100), |s| s.parse::<usize>()),
    ) else {
        eprintln!("COUNT and PAYLOAD are whole numbers");
        return ExitCode::from(2);
    };
    let payload = Payload::of_size(size);
    let limit = Duration::from_secs(300);
    let start = Instant::now();
    let outcome = match what.as_str() {
        // On the event loop, from a task on its runtime (as `compare` measures it).
        "call" => RpcBench::start(url, kind)
            .and_then(|bench| std::sync::Arc::new(bench).timed_calls(count as usize, &payload))
            .map(drop),
        "cast" => RpcBench::start(url, kind).and_then(|bench| {
            ours::throughput(count, bench.casts(), limit, || Ok(bench.cast(&payload)?)).map(drop)
        }),
        "notify" => NotifyBench::start(url, kind).and_then(|bench| {
            ours::throughput(count, bench.received(), limit, || bench.notify(&payload)).map(drop)
        }),
        other => {
            eprintln!("unknown path {other:?}: call, cast or notify");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => {
            let seconds = start.elapsed().as_secs_f64();
            println!(
                "{what} × {count} on {executor}: {seconds:.3} s, {:.0} /s, {:.2} µs each",
                count as f64 / seconds,
                seconds * 1e6 / count as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
