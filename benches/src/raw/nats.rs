//! Raw async-nats on core NATS: publish → subscribe throughput between two
//! connections, and a sequential `request()` to a responder on a second connection.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::StreamExt;

use crate::stats::{Latency, Rate};

/// A raw async-nats probe failed.
#[derive(Debug, thiserror::Error)]
#[error("raw async-nats: {what}: {message}")]
pub struct NatsError {
    what: &'static str,
    message: String,
}

fn fail<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> NatsError {
    move |e| NatsError {
        what,
        message: e.to_string(),
    }
}

type Result<T> = std::result::Result<T, NatsError>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn connect(url: &str) -> Result<async_nats::Client> {
    let address = url.split('?').next().unwrap_or(url);
    tokio::time::timeout(Duration::from_secs(5), async_nats::connect(address))
        .await
        .map_err(fail("connecting"))?
        .map_err(fail("connecting"))
}

fn subject(prefix: &str) -> String {
    format!("{prefix}.{}", &messaging_core::ids::hex_id()[..12])
}

/// Publishes `count` messages of `size` bytes on one connection to a subscriber on a
/// second; the rate runs from the first publish to the last receipt. Core NATS is
/// at-most-once: messages it dropped are reported as an error.
///
/// # Errors
///
/// Connecting, publishing, or messages missing (2 s without progress).
pub fn publish_subscribe(url: &str, count: u64, size: usize) -> Result<Rate> {
    runtime().block_on(async move {
        let subject = subject("bench.raw");
        let receiver = connect(url).await?;
        let mut subscription = receiver
            .subscribe(subject.clone())
            .await
            .map_err(fail("subscribing"))?;
        receiver.flush().await.map_err(fail("flushing"))?;
        let consuming = tokio::spawn(async move {
            let mut received = 0;
            while received < count {
                match tokio::time::timeout(Duration::from_secs(2), subscription.next()).await {
                    Ok(Some(_)) => received += 1,
                    _ => break,
                }
            }
            (received, Instant::now())
        });
        let sender = connect(url).await?;
        let body = Bytes::from(vec![b'x'; size]);
        let start = Instant::now();
        for _ in 0..count {
            sender
                .publish(subject.clone(), body.clone())
                .await
                .map_err(fail("publishing"))?;
        }
        sender.flush().await.map_err(fail("flushing"))?;
        let (received, end) = consuming.await.map_err(fail("the consumer task"))?;
        if received < count {
            return Err(NatsError {
                what: "subscribing",
                message: format!(
                    "{received} of {count} messages arrived (core NATS dropped the rest)"
                ),
            });
        }
        Ok(Rate::new(count, end - start))
    })
}

/// Sequential `client.request()` round trips to a responder on a second connection
/// that echoes the body. `warmup` untimed, then `count` timed.
///
/// # Errors
///
/// Connecting, or a request failing.
pub fn request(url: &str, warmup: usize, count: usize, size: usize) -> Result<Latency> {
    runtime().block_on(async move {
        let subject = subject("bench.raw.rpc");
        let responder = connect(url).await?;
        let mut requests = responder
            .subscribe(subject.clone())
            .await
            .map_err(fail("subscribing"))?;
        responder.flush().await.map_err(fail("flushing"))?;
        let serving = tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                if let Some(reply) = message.reply {
                    let _ = responder.publish(reply, message.payload).await;
                }
            }
        });
        let client = connect(url).await?;
        let body = Bytes::from(vec![b'x'; size]);
        let mut samples = Vec::with_capacity(count);
        for i in 0..warmup + count {
            let start = Instant::now();
            client
                .request(subject.clone(), body.clone())
                .await
                .map_err(fail("requesting"))?;
            if i >= warmup {
                samples.push(start.elapsed().as_nanos() as u64);
            }
        }
        serving.abort();
        Ok(Latency::from_nanos(samples))
    })
}

/// Whether a NATS server answers at `url` within `limit`.
pub fn reachable(url: &str, limit: Duration) -> bool {
    runtime().block_on(async move {
        let address = url.split('?').next().unwrap_or(url).to_owned();
        matches!(
            tokio::time::timeout(limit, async_nats::connect(address)).await,
            Ok(Ok(_))
        )
    })
}
