//! In-process channels: ping-pong (a round trip between two threads or tasks) and
//! one-way throughput of `Vec<u8>` payloads.

use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use crate::stats::{Latency, Rate};

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Round trips of a `u64` through two `crossbeam` `bounded(1)` channels between two
/// threads (crossbeam spins briefly, then parks).
pub fn crossbeam_ping_pong(warmup: usize, count: usize) -> Latency {
    let (to_server, requests) = crossbeam_channel::bounded::<u64>(1);
    let (to_client, replies) = crossbeam_channel::bounded::<u64>(1);
    let server = thread::spawn(move || {
        while let Ok(n) = requests.recv() {
            if to_client.send(n).is_err() {
                break;
            }
        }
    });
    let mut n = 0;
    let latency = Latency::measure(warmup, count, || {
        n += 1;
        to_server.send(n).expect("the server is alive");
        let back = replies.recv().expect("a reply");
        debug_assert_eq!(back, n);
    });
    drop(to_server);
    let _ = server.join();
    latency
}

/// Round trips through two `std::sync::mpsc` channels between two threads (a parked
/// thread is woken every hop).
pub fn std_ping_pong(warmup: usize, count: usize) -> Latency {
    let (to_server, requests) = mpsc::channel::<u64>();
    let (to_client, replies) = mpsc::channel::<u64>();
    let server = thread::spawn(move || {
        while let Ok(n) = requests.recv() {
            if to_client.send(n).is_err() {
                break;
            }
        }
    });
    let latency = Latency::measure(warmup, count, || {
        to_server.send(1).expect("the server is alive");
        replies.recv().expect("a reply");
    });
    drop(to_server);
    let _ = server.join();
    latency
}

/// Round trips between two tokio tasks through two `mpsc(1)` channels on a
/// two-thread runtime, timed inside the client task.
pub fn tokio_ping_pong(warmup: usize, count: usize) -> Latency {
    let runtime = runtime(2);
    runtime.block_on(async move {
        let (to_server, mut requests) = tokio::sync::mpsc::channel::<u64>(1);
        let (to_client, mut replies) = tokio::sync::mpsc::channel::<u64>(1);
        tokio::spawn(async move {
            while let Some(n) = requests.recv().await {
                if to_client.send(n).await.is_err() {
                    break;
                }
            }
        });
        let client = tokio::spawn(async move {
            let mut samples = Vec::with_capacity(count);
            for i in 0..warmup + count {
                let start = Instant::now();
                to_server.send(1).await.expect("the server is alive");
                replies.recv().await.expect("a reply");
                if i >= warmup {
                    samples.push(start.elapsed().as_nanos() as u64);
                }
            }
            Latency::from_nanos(samples)
        });
        client.await.expect("the client task")
    })
}

/// `count` payloads of `size` bytes through a `crossbeam` `bounded(1024)` channel
/// from one thread to another (each message a fresh `Vec<u8>`).
pub fn crossbeam_throughput(count: u64, size: usize) -> Rate {
    let (sender, receiver) = crossbeam_channel::bounded::<Vec<u8>>(1024);
    let payload = vec![b'x'; size];
    let consumer = thread::spawn(move || {
        let mut bytes = 0usize;
        for _ in 0..count {
            bytes += receiver.recv().expect("a message").len();
        }
        (Instant::now(), bytes)
    });
    let start = Instant::now();
    for _ in 0..count {
        sender.send(payload.clone()).expect("the consumer is alive");
    }
    let (end, _bytes) = consumer.join().expect("the consumer thread");
    Rate::new(count, end - start)
}

/// `count` payloads of `size` bytes through a tokio `mpsc(1024)` channel between two
/// tasks on a two-thread runtime.
pub fn tokio_throughput(count: u64, size: usize) -> Rate {
    let runtime = runtime(2);
    runtime.block_on(async move {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
        let consumer = tokio::spawn(async move {
            for _ in 0..count {
                receiver.recv().await.expect("a message");
            }
            Instant::now()
        });
        let payload = vec![b'x'; size];
        let producer = tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..count {
                sender
                    .send(payload.clone())
                    .await
                    .expect("the consumer is alive");
            }
            start
        });
        let start = producer.await.expect("the producer task");
        let end = consumer.await.expect("the consumer task");
        Rate::new(count, end - start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_moves_every_message() {
        for latency in [
            crossbeam_ping_pong(10, 100),
            std_ping_pong(10, 100),
            tokio_ping_pong(10, 100),
        ] {
            assert_eq!(latency.count, 100);
            assert!(latency.p50_us > 0.0 && latency.p50_us <= latency.max_us);
        }
        assert_eq!(crossbeam_throughput(5_000, 32).count, 5_000);
        assert_eq!(tokio_throughput(5_000, 32).count, 5_000);
    }
}
