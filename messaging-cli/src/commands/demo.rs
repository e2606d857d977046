//! `demo`: servers on each executor over memory://, loaded with calls, casts and
//! notifications; a summary table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{Endpoint, HandlerError, RpcClient};
use messaging_core::{Context, Priority, Target, Transport, ids};
use serde::{Deserialize, Serialize};

use super::serve::executor;
use super::{transport_error, unwritten};
use crate::{CliError, DemoArgs, ExecutorChoice, Output, Shutdown, positive_seconds};

/// The most `--clients` (each one is a thread).
const MAX_CLIENTS: usize = 1024;
/// The longest `--duration`, in seconds (every call latency is kept in memory).
const MAX_DURATION: f64 = 60.0;

#[derive(Serialize, Deserialize)]
struct Payload {
    seq: u64,
    text: String,
}

#[derive(Debug)]
struct Row {
    executor: &'static str,
    calls: u64,
    call_rate: f64,
    p50: Duration,
    p99: Duration,
    cast_rate: f64,
    notify_rate: f64,
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn wait_for(counter: &AtomicU64, target: u64, limit: Duration, shutdown: &Shutdown) -> Instant {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::Relaxed) < target
        && Instant::now() < deadline
        && !shutdown.is_triggered()
    {
        thread::sleep(Duration::from_micros(200));
    }
    Instant::now()
}

fn one(
    choice: ExecutorChoice,
    phase: Duration,
    clients: usize,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<Row, CliError> {
    let name = match choice {
        ExecutorChoice::Blocking => "blocking",
        ExecutorChoice::ThreadPool => "thread-pool",
        ExecutorChoice::EventLoop => "event-loop",
    };
    let url = format!("memory:///demo-{name}-{}", &ids::hex_id()[..8]);
    let transport: Arc<dyn Transport> =
        messaging_transports::open(&url).map_err(transport_error)?;
    let fail = |e: &dyn std::fmt::Display| CliError::failure(format!("{name}: {e}"));

    // An RPC server and a notification listener on this executor.
    let casts = Arc::new(AtomicU64::new(0));
    let counted = casts.clone();
    // The event loop runs async handlers as tasks (a blocking handler would take a
    // trip through tokio's blocking pool); the others run plain functions.
    let endpoint = if matches!(choice, ExecutorChoice::EventLoop) {
        Endpoint::new()
            .async_method("echo", |_ctx, p: Payload| async move {
                Ok::<_, HandlerError>(p)
            })
            .async_method("count", move |_ctx, _p: Payload| {
                counted.fetch_add(1, Ordering::Relaxed);
                async { Ok::<_, HandlerError>(()) }
            })
    } else {
        Endpoint::new()
            .method("echo", |_ctx, p: Payload| Ok::<_, HandlerError>(p))
            .method("count", move |_ctx, _p: Payload| {
                counted.fetch_add(1, Ordering::Relaxed);
                Ok::<_, HandlerError>(())
            })
    };
    let target = Target::new("demo").with_server("server-1");
    let server =
        messaging_core::rpc::server(transport.clone(), target, vec![endpoint], executor(choice))
            .map_err(|e| fail(&e))?
            .build()
            .map_err(|e| fail(&e))?;
    server.start().map_err(|e| fail(&e))?;
    let serving = {
        let server = server.clone();
        thread::spawn(move || server.execute())
    };
    let notified = Arc::new(AtomicU64::new(0));
    let n = notified.clone();
    let listener_endpoint =
        NotificationEndpoint::new().on(Priority::Info, move |_: Notification<Payload>| {
            n.fetch_add(1, Ordering::Relaxed);
            NotificationResult::Handled
        });
    let listener = messaging_core::notify::listener(
        transport.clone(),
        vec![Target::new("demo-notifications")],
        vec![listener_endpoint],
        ListenerOptions::new(),
        executor(choice),
    )
    .build()
    .map_err(|e| fail(&e))?;
    listener.start().map_err(|e| fail(&e))?;
    let listening = {
        let listener = listener.clone();
        thread::spawn(move || listener.execute())
    };

    // Calls: `clients` threads, each calling in sequence.
    err.note(&format!(
        "{name}: {clients} clients calling for {phase:.1?}"
    ));
    let client = RpcClient::new(transport.clone(), Target::new("demo"))
        .with_timeout(Duration::from_secs(10));
    let started = Instant::now();
    let mut callers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        let spawned = thread::Builder::new()
            .name("demo-client".to_owned())
            .spawn(move || {
                let mut latencies = Vec::new();
                let end = Instant::now() + phase;
                let mut seq = 0;
                while Instant::now() < end && !shutdown.is_triggered() {
                    let sent = Instant::now();
                    let payload = Payload {
                        seq,
                        text: "hello".into(),
                    };
                    let back: Payload = client.call_blocking(&Context::new(), "echo", &payload)?;
                    if back.seq != seq {
                        return Err(messaging_core::rpc::RpcError::ReplyLost {
                            method: "echo".into(),
                            target: "demo".into(),
                        });
                    }
                    latencies.push(sent.elapsed());
                    seq += 1;
                }
                Ok(latencies)
            });
        match spawned {
            Ok(caller) => callers.push(caller),
            Err(e) => {
                // The callers started so far end with their phase.
                for caller in callers {
                    let _ = caller.join();
                }
                return Err(fail(&format!("cannot start a client thread: {e}")));
            }
        }
    }
    let mut latencies = Vec::new();
    for caller in callers {
        let got = caller
            .join()
            .map_err(|_| fail(&"a calling thread panicked"))?
            .map_err(|e| fail(&e))?;
        latencies.extend(got);
    }
    let call_elapsed = started.elapsed();
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };

    // Casts: one sender; the rate is what the server processed.
    err.note(&format!("{name}: casting for {phase:.1?}"));
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < phase && !shutdown.is_triggered() {
        client
            .cast_blocking(
                &Context::new(),
                "count",
                &Payload {
                    seq: sent,
                    text: String::new(),
                },
            )
            .map_err(|e| fail(&e))?;
        sent += 1;
    }
    let cast_done = wait_for(&casts, sent, Duration::from_secs(30), shutdown);
    let cast_rate = rate(casts.load(Ordering::Relaxed), cast_done - started);

    // Notifications: one notifier; the rate is what the listener handled.
    err.note(&format!("{name}: notifying for {phase:.1?}"));
    let notifier = Notifier::new(transport.clone(), "demo").with_topics(["demo-notifications"]);
    let started = Instant::now();
    let mut notes = 0;
    while started.elapsed() < phase && !shutdown.is_triggered() {
        block_on(notifier.info(
            &Context::new(),
            "demo.event",
            &Payload {
                seq: notes,
                text: String::new(),
            },
        ))
        .map_err(|e| fail(&e))?;
        notes += 1;
    }
    let notify_done = wait_for(&notified, notes, Duration::from_secs(30), shutdown);
    let notify_rate = rate(notified.load(Ordering::Relaxed), notify_done - started);

    for (server, running) in [(server, serving), (listener, listening)] {
        server.stop().map_err(|e| fail(&e))?;
        server.wait().map_err(|e| fail(&e))?;
        running
            .join()
            .map_err(|_| fail(&"a serving thread panicked"))?
            .map_err(|e| fail(&e))?;
    }
    if shutdown.is_triggered() {
        return Err(CliError::failure(format!(
            "interrupted: the demo stopped during {name}"
        )));
    }
    err.note(&format!("{name}: stopped cleanly"));
    Ok(Row {
        executor: name,
        calls: latencies.len() as u64,
        call_rate: rate(latencies.len() as u64, call_elapsed),
        p50: pick(0.50),
        p99: pick(0.99),
        cast_rate,
        notify_rate,
    })
}

/// Runs the demo; a stop request ends it early (its servers stopped) with an error.
pub(crate) fn run(
    args: &DemoArgs,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    let phase = positive_seconds(args.duration, "--duration", MAX_DURATION)? / 3;
    if !(1..=MAX_CLIENTS).contains(&args.clients) {
        return Err(CliError::usage(format!(
            "--clients must be from 1 to {MAX_CLIENTS}, got {}",
            args.clients
        )));
    }
    let mut rows = Vec::new();
    for choice in [
        ExecutorChoice::Blocking,
        ExecutorChoice::ThreadPool,
        ExecutorChoice::EventLoop,
    ] {
        rows.push(one(choice, phase, args.clients, err, shutdown)?);
    }
    out.line(&format!(
        "{:<12} {:>10} {:>11} {:>12} {:>12} {:>10} {:>16}",
        "executor", "calls", "calls/s", "call p50 µs", "call p99 µs", "casts/s", "notifications/s"
    ))
    .map_err(unwritten)?;
    for row in rows {
        out.line(&format!(
            "{:<12} {:>10} {:>11.0} {:>12.1} {:>12.1} {:>10.0} {:>16.0}",
            row.executor,
            row.calls,
            row.call_rate,
            row.p50.as_secs_f64() * 1e6,
            row.p99.as_secs_f64() * 1e6,
            row.cast_rate,
            row.notify_rate,
        ))
        .map_err(unwritten)?;
    }
    Ok(())
}
