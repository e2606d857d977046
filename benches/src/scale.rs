//! Memory and scale: what an idle server costs (memory, CPU), what each message held
//! in flight costs, and how call latency and throughput change with concurrent
//! clients.
//!
//! Memory is measured in a fresh process per executor (the `compare` binary re-runs
//! itself with `--probe-memory EXECUTOR`), because an allocator does not give memory
//! back: one measurement would otherwise inherit the last one's heap.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use messaging_core::rpc::{Endpoint, HandlerError, RpcClient, RpcDispatcher};
use messaging_core::{Context, Server, Subscription, Target, dispatch::block_on};
use serde::{Deserialize, Serialize};

use crate::ExecutorKind;
use crate::machine::{cpu_seconds, rss_kib};
use crate::ours::{BenchError, Counter, Payload, RpcBench, open};
use crate::stats::{Latency, Rate};

/// What one executor's server costs in memory and idle CPU.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// The executor.
    pub executor: String,
    /// RSS of the process before the server existed, KiB.
    pub process_kib: u64,
    /// RSS growth from starting an idle server (transport, executor, listener), KiB.
    pub idle_server_kib: u64,
    /// CPU used by the process while the server sat idle, percent of one core.
    pub idle_cpu_percent: f64,
    /// Messages held in flight (handlers blocked, the rest queued).
    pub in_flight: u64,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// RSS growth while `in_flight` messages were held, KiB.
    pub in_flight_kib: u64,
    /// `in_flight_kib` per message, bytes, payload included.
    pub bytes_per_message: f64,
    /// The process's peak RSS, KiB.
    pub peak_kib: u64,
}

/// A gate handlers wait at until it opens.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }
}

/// Starts a server on `kind` over `memory://`, measures it idle for `idle`, then casts
/// `in_flight` messages of `payload` bytes to a handler that holds them until all are
/// sent, and measures again. Run it in a fresh process.
///
/// # Errors
///
/// The server did not start, or the held messages were not all processed after the
/// gate opened.
pub fn memory_probe(
    kind: ExecutorKind,
    in_flight: u64,
    payload: usize,
    idle: Duration,
) -> Result<MemoryFigures, BenchError> {
    let url = "memory:///probe";
    let (process_kib, _) = rss_kib();
    let gate = Arc::new(Gate::default());
    let processed = Arc::new(Counter::default());
    let (opened, watch) = tokio::sync::watch::channel(false);
    let endpoint = if kind == ExecutorKind::EventLoop {
        let processed = processed.clone();
        Endpoint::new().async_method("hold", move |_ctx, _args: Payload| {
            let (mut watch, processed) = (watch.clone(), processed.clone());
            async move {
                let _ = watch.wait_for(|open| *open).await;
                processed.add();
                Ok::<_, HandlerError>(())
            }
        })
    } else {
        let (gate, processed) = (gate.clone(), processed.clone());
        Endpoint::new().method("hold", move |_ctx, _args: Payload| {
            gate.wait();
            processed.add();
            Ok::<_, HandlerError>(())
        })
    };
    let target = Target::new("probe").with_server("probe");
    let server = Server::builder(
        open(url)?,
        Subscription::Rpc(target.clone()),
        RpcDispatcher::new(vec![endpoint]).expect("one method"),
        kind.build(),
    )
    .build()?;
    server.start()?;
    let runner = server.clone();
    let serving = thread::spawn(move || runner.execute());
    let client = RpcClient::new(open(url)?, Target::new("probe"));

    let cpu_before = cpu_seconds();
    let idle_start = Instant::now();
    thread::sleep(idle);
    let idle_cpu_percent =
        (cpu_seconds() - cpu_before) / idle_start.elapsed().as_secs_f64() * 100.0;
    let (idle_kib, _) = rss_kib();

    let args = Payload::of_size(payload);
    let context = Context::new();
    for _ in 0..in_flight {
        block_on(client.cast(&context, "hold", &args))?;
    }
    // Let the executor take what it takes (workers, tasks, queue) before measuring.
    thread::sleep(Duration::from_millis(300));
    let (held_kib, _) = rss_kib();
    gate.open();
    let _ = opened.send(true);
    let drained = processed.wait_for(in_flight, Duration::from_secs(60));
    let _ = server.stop();
    let _ = server.wait();
    let _ = serving.join();
    drained?;
    let (_, peak_kib) = rss_kib();
    let in_flight_kib = held_kib.saturating_sub(idle_kib);
    Ok(MemoryFigures {
        executor: kind.name().to_owned(),
        process_kib,
        idle_server_kib: idle_kib.saturating_sub(process_kib),
        idle_cpu_percent,
        in_flight,
        payload_bytes: payload,
        in_flight_kib,
        bytes_per_message: in_flight_kib as f64 * 1024.0 / in_flight.max(1) as f64,
        peak_kib,
    })
}

/// `clients` threads each make sequential calls on one shared client for `duration`;
/// the total rate and every call's latency.
///
/// # Errors
///
/// A call failed.
pub fn concurrent_calls(
    bench: &RpcBench,
    clients: usize,
    duration: Duration,
    payload: &Payload,
) -> Result<(Rate, Latency), BenchError> {
    let start = Instant::now();
    let results: Vec<Result<Vec<u64>, BenchError>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut samples = Vec::new();
                    while start.elapsed() < duration {
                        let call = Instant::now();
                        bench.call(payload)?;
                        samples.push(call.elapsed().as_nanos() as u64);
                    }
                    Ok(samples)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Ok(Vec::new())))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut samples = Vec::new();
    for result in results {
        samples.extend(result?);
    }
    let count = samples.len() as u64;
    Ok((Rate::new(count, elapsed), Latency::from_nanos(samples)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_probe_holds_and_drains_every_message() {
        for kind in ExecutorKind::ALL {
            let figures = memory_probe(kind, 500, 64, Duration::from_millis(20)).unwrap();
            assert_eq!(figures.in_flight, 500);
            assert!(figures.peak_kib >= figures.process_kib);
        }
    }

    #[test]
    fn concurrent_clients_all_get_replies() {
        let bench = RpcBench::start("memory:///scale-test", ExecutorKind::ThreadPool).unwrap();
        let (rate, latency) =
            concurrent_calls(&bench, 4, Duration::from_millis(100), &Payload::of_size(8)).unwrap();
        assert!(rate.count > 0);
        assert_eq!(latency.count, rate.count);
    }
}
