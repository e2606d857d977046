//! Starts a server on each executor over the in-memory transport, sends it casts and
//! calls, stops it from inside a handler (the seed's scenario) and waits for it from the
//! main thread, printing what happened.
//!
//! Run: `cargo run -p messaging-executors --example lifecycle [-- MESSAGES]`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use messaging_core::dispatch::block_on;
use messaging_core::reply::ReplyEvent;
use messaging_core::{
    Dispatch, Executor, IncomingMessage, Message, SendOptions, Server, Subscription, Target,
    WeakServer,
};
use messaging_executors::{BlockingExecutor, EventLoopExecutor, ThreadPoolExecutor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let messages: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("MESSAGES must be a number, got `{n}`"))?,
        None => 2_000,
    };
    println!("{messages} casts and {messages} calls per executor, over memory://\n");
    run("blocking", BlockingExecutor::new(), messages)?;
    run("thread-pool", ThreadPoolExecutor::new(), messages)?;
    run("event-loop", EventLoopExecutor::new(), messages)?;
    Ok(())
}

fn run(
    name: &str,
    executor: impl Executor,
    messages: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let transport = messaging_transports::open(&format!("memory:///{name}"))?;
    let casts = Arc::new(AtomicUsize::new(0));
    let me: Arc<OnceLock<WeakServer>> = Arc::default();
    let dispatcher = {
        let (casts, me) = (casts.clone(), me.clone());
        move |batch: Vec<IncomingMessage>| {
            let (casts, me) = (casts.clone(), me.clone());
            Dispatch::blocking(move || {
                for mut incoming in batch {
                    let _ = incoming.acknowledge();
                    if incoming.message().body == "stop" {
                        // stop() is safe from inside a handler: it does not wait for it.
                        if let Some(server) = me.get().and_then(WeakServer::upgrade) {
                            let _ = server.stop();
                        }
                    } else if incoming.is_call() {
                        let upper = incoming.message().body.to_ascii_uppercase();
                        let _ = incoming.reply(Ok(Bytes::from(upper)));
                    } else {
                        casts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        }
    };
    let server = Server::builder(
        transport.clone(),
        Subscription::Rpc(Target::new("demo").with_server("server-1")),
        dispatcher,
        executor,
    )
    .build()?;
    let _ = me.set(server.downgrade());

    let epoch = server.start()?;
    // execute() serves until stop(): the blocking executor's loop runs in that thread.
    let serving = {
        let server = server.clone();
        thread::spawn(move || server.execute())
    };
    println!(
        "{name:<12} {epoch}: started ({} executor)",
        server.executor_name()
    );

    let topic = Target::new("demo");
    let started = Instant::now();
    for i in 0..messages {
        block_on(transport.cast(
            &topic,
            Message::new(format!("cast {i}")),
            &SendOptions::default(),
        ))?;
    }
    let mut latencies = Vec::with_capacity(messages);
    for i in 0..messages {
        let sent = Instant::now();
        let mut reply = block_on(transport.call(
            &topic,
            Message::new(format!("call {i}")),
            &SendOptions::default(),
        ))?;
        match reply.recv_timeout(Some(Duration::from_secs(5))) {
            Ok(ReplyEvent::Reply(Ok(body))) if body == format!("CALL {i}").as_bytes() => {}
            other => return Err(format!("unexpected reply to call {i}: {other:?}").into()),
        }
        latencies.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "{name:<12} {epoch}: {} casts and {messages} calls answered in {:.1} ms; call latency p50 {:.1} µs, p99 {:.1} µs",
        casts.load(Ordering::Relaxed),
        elapsed.as_secs_f64() * 1e3,
        latencies[latencies.len() / 2].as_secs_f64() * 1e6,
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e6,
    );

    block_on(transport.cast(&topic, Message::new("stop"), &SendOptions::default()))?;
    let waited = server.wait()?;
    serving
        .join()
        .map_err(|_| "the serving thread panicked")??;
    println!(
        "{name:<12} {waited}: stopped from inside a handler; wait() returned after the drain (casts processed: {})\n",
        casts.load(Ordering::Relaxed)
    );
    Ok(())
}
