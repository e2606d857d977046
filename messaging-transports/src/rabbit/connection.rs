//! Connecting to the brokers in turn, retrying with backoff, and the AMQP plumbing
//! every part shares (declarations, properties).

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use messaging_core::TransportError;

use super::options::Options;

/// Backoff between connection attempts: 100 ms doubling to 5 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: Duration::from_millis(100),
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        delay
    }
}

/// A failure a reconnect may fix (the connection or channel went away).
pub(crate) fn connection_error(what: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Connection {
        message: format!("{what}: {error}"),
        source: None,
    }
}

/// Sorts a lapin error: what the broker refuses for good (access refused 403, resource
/// locked 405, precondition failed 406, e.g. an exchange another service declared
/// durable) becomes [`TransportError::Other`], which no retry repeats; anything else
/// is a [`connection_error`].
pub(crate) fn classify(what: &str, error: lapin::Error) -> TransportError {
    if let lapin::ErrorKind::ProtocolError(amqp) = error.kind()
        && matches!(amqp.kind().get_id(), 403 | 405 | 406)
    {
        return TransportError::other(format!("{what}: {error}"));
    }
    connection_error(what, error)
}

/// Whether retrying cannot help (see [`classify`]).
pub(crate) fn is_permanent(error: &TransportError) -> bool {
    matches!(error, TransportError::Other { .. })
}

/// One pass over the brokers; the first that accepts wins.
pub(crate) async fn connect(
    options: &Options,
    purpose: &str,
) -> Result<Connection, TransportError> {
    let mut failures = Vec::new();
    for broker in options.brokers_in_order() {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("messaging-rs:{}:{purpose}", std::process::id()).into());
        // lapin enforces `connection_timeout` itself (it is in the URI); our timeout is
        // a backstop a little later. A connect we stop waiting for is not dropped
        // half-way (that would strand lapin's I/O thread): it finishes on its own and
        // its connection, if any, is closed.
        let uri = broker.uri.clone();
        let mut connecting =
            tokio::spawn(async move { Connection::connect(&uri, properties).await });
        let attempt = match tokio::time::timeout(
            options.connect_timeout + Duration::from_secs(2),
            &mut connecting,
        )
        .await
        {
            Ok(joined) => {
                Ok(joined.unwrap_or_else(|e| Err(lapin::Error::from(std::io::Error::other(e)))))
            }
            Err(elapsed) => {
                tokio::spawn(async move {
                    if let Ok(Ok(connection)) = connecting.await {
                        let _ = connection.close(200, "OK".into()).await;
                    }
                });
                Err(elapsed)
            }
        };
        match attempt {
            Ok(Ok(connection)) => {
                tracing::debug!(broker = %broker.display, purpose, "connected");
                return Ok(connection);
            }
            Ok(Err(error)) => failures.push(format!("{}: {error}", broker.display)),
            Err(_) => failures.push(format!(
                "{}: no answer within {:?}",
                broker.display, options.connect_timeout
            )),
        }
    }
    Err(TransportError::Connection {
        message: format!("cannot connect to RabbitMQ ({})", failures.join("; ")),
        source: None,
    })
}

/// The exchange kinds oslo declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// The control exchange: topic, not durable, not auto-deleted.
    Topic,
    /// `<topic>_fanout`: fanout, auto-deleted.
    Fanout,
}

pub(crate) async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: Kind,
) -> Result<(), TransportError> {
    let (kind, auto_delete) = match kind {
        Kind::Topic => (ExchangeKind::Topic, false),
        Kind::Fanout => (ExchangeKind::Fanout, true),
    };
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: false,
                auto_delete,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify(&format!("declaring exchange {name}"), e))
}

/// Declares a queue (not durable, not auto-deleted, as oslo does), with `x-expires` if
/// given, and binds it.
pub(crate) async fn declare_queue(
    channel: &Channel,
    queue: &str,
    expires_ms: Option<u32>,
    binding: Option<(&str, &str)>,
) -> Result<(), TransportError> {
    let mut args = FieldTable::default();
    // oslo: a TTL of 0 means no expiry.
    if let Some(ms) = expires_ms.filter(|ms| *ms > 0) {
        args.insert("x-expires".into(), AMQPValue::LongInt(ms as i32));
    }
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: false,
                auto_delete: false,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map_err(|e| classify(&format!("declaring queue {queue}"), e))?;
    if let Some((exchange, key)) = binding {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify(&format!("binding queue {queue}"), e))?;
    }
    Ok(())
}

/// kombu's defaults: JSON, UTF-8, persistent, no headers; `expiration` for calls.
pub(crate) fn properties(expiration: Option<Duration>) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_priority(0)
        .with_headers(FieldTable::default());
    match expiration {
        Some(ttl) => properties.with_expiration(ttl.as_millis().max(1).to_string().into()),
        None => properties,
    }
}
