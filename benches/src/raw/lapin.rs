//! Raw lapin on RabbitMQ: publish → consume with publisher confirms pipelined and a
//! per-message ack (what our transport does), and a sequential request → reply through
//! a named, exclusive reply queue (oslo's protocol).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use messaging_core::TransportUrl;

use crate::stats::{Latency, Rate};

/// A raw lapin probe failed.
#[derive(Debug, thiserror::Error)]
#[error("raw lapin: {what}: {message}")]
pub struct LapinError {
    what: &'static str,
    message: String,
}

fn fail(what: &'static str) -> impl FnOnce(lapin::Error) -> LapinError {
    move |e| LapinError {
        what,
        message: e.to_string(),
    }
}

type Result<T> = std::result::Result<T, LapinError>;

/// The AMQP URI (`amqp://user:pass@host:port/vhost`) of a `rabbit://` URL's first host.
///
/// # Errors
///
/// The URL does not parse or names no host.
pub fn amqp_uri(url: &str) -> Result<String> {
    let invalid = |message: String| LapinError {
        what: "the URL",
        message,
    };
    let parsed = TransportUrl::parse(url).map_err(|e| invalid(e.to_string()))?;
    let host = parsed
        .hosts()
        .first()
        .ok_or_else(|| invalid("no host".to_owned()))?;
    let user = host.username.as_deref().unwrap_or("guest");
    let password = host.password.as_ref().map_or("guest", |p| p.expose());
    let vhost = match parsed.virtual_host() {
        None | Some("") | Some("/") => "%2f".to_owned(),
        Some(v) => v.replace('/', "%2f"),
    };
    Ok(format!(
        "amqp://{user}:{password}@{}:{}/{vhost}",
        host.hostname.as_deref().unwrap_or("127.0.0.1"),
        host.port.unwrap_or(5672)
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn channel(uri: &str) -> Result<(Connection, Channel)> {
    let connection = Connection::connect(uri, ConnectionProperties::default())
        .await
        .map_err(fail("connecting"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(fail("opening a channel"))?;
    Ok((connection, channel))
}

async fn declare(channel: &Channel, name: &str, exclusive: bool) -> Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                auto_delete: true,
                exclusive,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(fail("declaring a queue"))?;
    Ok(())
}

fn properties() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}_{}", &messaging_core::ids::hex_id()[..12])
}

/// Publishes `count` messages of `size` bytes on one connection, keeping at most
/// `window` publisher confirms outstanding, while a consumer on a second connection
/// (prefetch `prefetch`) acknowledges each message. The rate runs from the first
/// publish to the last delivery.
///
/// # Errors
///
/// Connecting, declaring, publishing, or messages missing after 60 s.
pub fn publish_consume(
    uri: &str,
    count: u64,
    size: usize,
    prefetch: u16,
    window: usize,
) -> Result<Rate> {
    runtime().block_on(async move {
        let queue = fresh("bench_raw");
        let (_consumer_connection, consumer_channel) = channel(uri).await?;
        declare(&consumer_channel, &queue, false).await?;
        consumer_channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(fail("setting the prefetch"))?;
        let mut consumer = consumer_channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(fail("consuming"))?;
        let consuming = tokio::spawn(async move {
            let mut received = 0;
            while received < count {
                match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
                    Ok(Some(Ok(delivery))) => {
                        received += 1;
                        let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                    }
                    _ => break,
                }
            }
            (received, Instant::now())
        });
        let (_publisher_connection, publisher) = channel(uri).await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(fail("enabling confirms"))?;
        let body = vec![b'x'; size];
        let start = Instant::now();
        let mut in_flight = VecDeque::with_capacity(window + 1);
        for _ in 0..count {
            let confirm = publisher
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties(),
                )
                .await
                .map_err(fail("publishing"))?;
            in_flight.push_back(confirm);
            if in_flight.len() > window
                && let Some(oldest) = in_flight.pop_front()
            {
                oldest.await.map_err(fail("awaiting a confirm"))?;
            }
        }
        for confirm in in_flight {
            confirm.await.map_err(fail("awaiting a confirm"))?;
        }
        let (received, end) = consuming.await.map_err(|e| LapinError {
            what: "the consumer task",
            message: e.to_string(),
        })?;
        let _ = publisher
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        if received < count {
            return Err(LapinError {
                what: "consuming",
                message: format!("{received} of {count} messages arrived"),
            });
        }
        Ok(Rate::new(count, end - start))
    })
}

/// Sequential request → reply: the client publishes to a request queue with
/// `reply_to` naming its exclusive `reply_<hex>` queue (consumed without acks); the
/// server, on a second connection, publishes the body back and acknowledges the
/// request. `warmup` round trips untimed, then `count` timed.
///
/// # Errors
///
/// Connecting, declaring, publishing, or a reply missing for 10 s.
pub fn request_reply(uri: &str, warmup: usize, count: usize, size: usize) -> Result<Latency> {
    runtime().block_on(async move {
        let requests = fresh("bench_raw_rpc");
        let (_server_connection, server) = channel(uri).await?;
        declare(&server, &requests, false).await?;
        server
            .basic_qos(64, BasicQosOptions::default())
            .await
            .map_err(fail("setting the prefetch"))?;
        let mut incoming = server
            .basic_consume(
                requests.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(fail("consuming requests"))?;
        let serving = tokio::spawn(async move {
            while let Some(Ok(delivery)) = incoming.next().await {
                let Some(reply_to) = delivery.properties.reply_to().clone() else {
                    continue;
                };
                let mut reply = properties();
                if let Some(id) = delivery.properties.correlation_id().clone() {
                    reply = reply.with_correlation_id(id);
                }
                let sent = server
                    .basic_publish(
                        "".into(),
                        reply_to.as_str().into(),
                        BasicPublishOptions::default(),
                        &delivery.data,
                        reply,
                    )
                    .await;
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                if sent.is_err() {
                    break;
                }
            }
        });
        let (_client_connection, client) = channel(uri).await?;
        let reply_queue = fresh("reply");
        declare(&client, &reply_queue, true).await?;
        let mut replies = client
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(fail("consuming replies"))?;
        let body = vec![b'x'; size];
        let mut samples = Vec::with_capacity(count);
        for i in 0..warmup + count {
            let start = Instant::now();
            client
                .basic_publish(
                    "".into(),
                    requests.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties()
                        .with_reply_to(reply_queue.as_str().into())
                        .with_correlation_id(i.to_string().into()),
                )
                .await
                .map_err(fail("publishing a request"))?;
            match tokio::time::timeout(Duration::from_secs(10), replies.next()).await {
                Ok(Some(Ok(_reply))) => {}
                _ => {
                    return Err(LapinError {
                        what: "waiting for a reply",
                        message: format!("no reply to request {i} within 10 s"),
                    });
                }
            }
            if i >= warmup {
                samples.push(start.elapsed().as_nanos() as u64);
            }
        }
        serving.abort();
        let _ = client
            .queue_delete(requests.as_str().into(), QueueDeleteOptions::default())
            .await;
        Ok(Latency::from_nanos(samples))
    })
}

/// Deletes queues (what benches of ours declared); missing ones are not an error.
///
/// # Errors
///
/// The broker cannot be reached.
pub fn delete_queues(uri: &str, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    runtime().block_on(async move {
        let (connection, mut channel) = channel(uri).await?;
        for name in names {
            if channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .is_err()
            {
                // A failed delete closes the channel: open another for the rest.
                channel = connection
                    .create_channel()
                    .await
                    .map_err(fail("opening a channel"))?;
            }
        }
        Ok(())
    })
}

/// Whether a RabbitMQ answers at `uri` within `limit`.
pub fn reachable(uri: &str, limit: Duration) -> bool {
    runtime().block_on(async move {
        matches!(
            tokio::time::timeout(
                limit,
                Connection::connect(uri, ConnectionProperties::default())
            )
            .await,
            Ok(Ok(_))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_uri_of_a_rabbit_url() {
        assert_eq!(
            amqp_uri("rabbit://guest:secret@127.0.0.1:5672/").unwrap(),
            "amqp://guest:secret@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            amqp_uri("rabbit://u:p@h:1/vh").unwrap(),
            "amqp://u:p@h:1/vh"
        );
        assert!(amqp_uri("rabbit://").is_err());
    }
}
