//! A plain lapin connection of the test's own, to see the bytes a notifier put on
//! the wire: a queue bound where the notifications go, read without acknowledgement.

#![allow(dead_code)] // each test binary uses part of it

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

/// The AMQP URI of a `rabbit://` URL (the default virtual host written `%2F`).
pub(crate) fn amqp_uri(rabbit_url: &str) -> String {
    let uri = rabbit_url.replacen("rabbit://", "amqp://", 1);
    let uri = uri.split('?').next().unwrap_or_default().to_owned();
    if uri.ends_with('/') {
        format!("{uri}%2F")
    } else {
        uri
    }
}

/// A queue of the test's own bound to an exchange, deleted when dropped.
pub(crate) struct Tap {
    runtime: tokio::runtime::Runtime,
    _connection: Connection,
    channel: lapin::Channel,
    queue: String,
}

impl Tap {
    /// Declares `queue` (expiring after ten minutes unused, in case the test dies),
    /// bound to the topic exchange `exchange` with each of `keys`.
    pub(crate) fn bind(rabbit_url: &str, queue: &str, exchange: &str, keys: &[String]) -> Tap {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (connection, channel) = runtime.block_on(async {
            let connection =
                Connection::connect(&amqp_uri(rabbit_url), ConnectionProperties::default())
                    .await
                    .expect("the test connects to RabbitMQ");
            let channel = connection.create_channel().await.unwrap();
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let mut arguments = FieldTable::default();
            arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
            channel
                .queue_declare(queue.into(), QueueDeclareOptions::default(), arguments)
                .await
                .unwrap();
            for key in keys {
                channel
                    .queue_bind(
                        queue.into(),
                        exchange.into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
            }
            (connection, channel)
        });
        Tap {
            runtime,
            _connection: connection,
            channel,
            queue: queue.to_owned(),
        }
    }

    /// The raw bodies of the next `count` messages, waiting up to `limit` in all;
    /// fewer if they do not come.
    pub(crate) fn take(&self, count: usize, limit: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut bodies = Vec::new();
        while bodies.len() < count && Instant::now() < deadline {
            let got = self.runtime.block_on(async {
                self.channel
                    .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
            });
            match got {
                Some(message) => bodies.push(message.delivery.data.clone()),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        bodies
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(async {
            self.channel
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await
        });
    }
}
