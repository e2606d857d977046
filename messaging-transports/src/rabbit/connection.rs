//! Connecting to the brokers in turn, retrying with backoff, and the AMQP plumbing
//! every part shares (declarations, properties).

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connect, Connection, ConnectionProperties, ExchangeKind};
use messaging_core::TransportError;

use super::declare::{Exchange, ExchangeType, Queue};
use super::options::Options;

/// Backoff between attempts to publish a message no queue took, or that was not
/// confirmed: 100 ms doubling to 5 s, within the send's deadline.
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

/// oslo's connection retry schedule (kombu's `ensure_connection`): wait
/// `rabbit_retry_interval`, then `rabbit_retry_backoff` more after each failed
/// attempt, at most `rabbit_interval_max` (1 s, 3 s, 5 s, … 30 s by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetrySchedule {
    pub(crate) interval: Duration,
    pub(crate) step: Duration,
    pub(crate) max: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            interval: Duration::from_secs(1),
            step: Duration::from_secs(2),
            max: Duration::from_secs(30),
        }
    }
}

impl RetrySchedule {
    /// The delays before the second, third, … attempt (the first is immediate).
    pub(crate) fn delays(self) -> impl Iterator<Item = Duration> {
        std::iter::successors(Some(self.interval.min(self.max)), move |delay| {
            Some((*delay + self.step).min(self.max))
        })
    }
}

/// A name longer than an AMQP short string allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} bytes long (AMQP names are at most 255)")]
pub(crate) struct TooLong(pub(crate) usize);

/// An AMQP short string. Every string this transport hands to lapin as a name, key or
/// property goes through here: lapin panics on one longer than 255 bytes, this returns
/// [`TooLong`] instead.
pub(crate) fn short(value: &str) -> Result<ShortString, TooLong> {
    ShortString::try_new(value).map_err(|_| TooLong(value.len()))
}

/// [`short`] for this transport's own fixed strings (`"OK"`, content types): empty
/// rather than a panic should one ever be too long.
pub(crate) fn fixed(value: &str) -> ShortString {
    short(value).unwrap_or_default()
}

/// A failure a reconnect may fix (the connection or channel went away).
pub(crate) fn connection_error(what: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Connection {
        message: format!("{what}: {error}"),
        source: None,
    }
}

/// Whether the broker refused for good: ACCESS_REFUSED (wrong user or password, also
/// during the handshake, or no permission on a resource), RESOURCE_LOCKED (an exclusive
/// queue of another connection), PRECONDITION_FAILED (e.g. an exchange another service
/// declared durable) or NOT_ALLOWED (an unknown virtual host).
fn is_refusal(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp) if matches!(amqp.kind().get_id(), 403 | 405 | 406 | 530)
    )
}

/// Whether TLS failed on a certificate (an unknown issuer, an expired certificate, a
/// name that does not match, or the broker refusing ours): retrying cannot help.
fn is_certificate_error(error: &lapin::Error) -> bool {
    error
        .to_string()
        .to_ascii_lowercase()
        .contains("certificate")
}

/// Sorts a lapin error: what the broker refuses for good (see [`is_refusal`]) becomes
/// [`TransportError::Refused`], which nothing retries; anything else is a
/// [`connection_error`].
pub(crate) fn classify(what: &str, error: lapin::Error) -> TransportError {
    if is_refusal(&error) {
        return TransportError::Refused {
            message: format!("{what}: {error}"),
            source: None,
        };
    }
    connection_error(what, error)
}

/// One pass over the brokers; the first that accepts wins. When none does and one of
/// them refused (credentials, virtual host), the error is [`TransportError::Refused`]:
/// retrying cannot help.
pub(crate) async fn connect(
    options: &Options,
    purpose: &str,
) -> Result<Connection, TransportError> {
    let mut failures = Vec::new();
    let mut refused = false;
    for broker in options.brokers_in_order() {
        // A long string: no length limit to check.
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("messaging-rs:{}:{purpose}", std::process::id()).into());
        // lapin enforces `connection_timeout` itself (it is in the URI); our timeout is
        // a backstop a little later. A connect we stop waiting for is not dropped
        // half-way (that would strand lapin's I/O thread): it finishes on its own and
        // its connection, if any, is closed.
        let uri = broker.uri.clone();
        let tls = options.tls.lapin_config();
        let mut connecting = tokio::spawn(async move {
            let runtime = lapin::runtime::default_runtime()?;
            uri.as_str()
                .connect_with_config(properties, tls, runtime)
                .await
        });
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
                        let _ = connection.close(200, fixed("OK")).await;
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
            Ok(Err(error)) => {
                refused |= is_refusal(&error) || is_certificate_error(&error);
                failures.push(format!("{}: {error}", broker.display));
            }
            Err(_) => failures.push(format!(
                "{}: no answer within {:?}",
                broker.display, options.connect_timeout
            )),
        }
    }
    let message = format!("cannot connect to RabbitMQ ({})", failures.join("; "));
    Err(if refused {
        TransportError::Refused {
            message,
            source: None,
        }
    } else {
        TransportError::Connection {
            message,
            source: None,
        }
    })
}

/// Declares an exchange as [`declare`](super::declare) computed it.
pub(crate) async fn declare_exchange(
    channel: &Channel,
    exchange: &Exchange,
) -> Result<(), TransportError> {
    let kind = match exchange.kind {
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Fanout => ExchangeKind::Fanout,
    };
    channel
        .exchange_declare(
            exchange.name.clone(),
            kind,
            ExchangeDeclareOptions {
                durable: exchange.durable,
                auto_delete: exchange.auto_delete,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| declare_error(&format!("exchange `{}`", exchange.name), e))
}

/// Declares a queue as [`declare`](super::declare) computed it, and binds it.
pub(crate) async fn declare_queue(
    channel: &Channel,
    queue: &Queue,
    binding: Option<(&ShortString, &ShortString)>,
) -> Result<(), TransportError> {
    let name = &queue.name;
    channel
        .queue_declare(
            name.clone(),
            QueueDeclareOptions {
                durable: queue.durable,
                auto_delete: queue.auto_delete,
                ..QueueDeclareOptions::default()
            },
            queue.arguments.table(),
        )
        .await
        .map_err(|e| declare_error(&format!("queue `{name}`"), e))?;
    if let Some((exchange, key)) = binding {
        channel
            .queue_bind(
                name.clone(),
                exchange.clone(),
                key.clone(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify(&format!("binding queue {name}"), e))?;
    }
    Ok(())
}

/// A failed declare; one that conflicts with what exists (406 PRECONDITION_FAILED,
/// "inequivalent arg") says which options decide that property, since the fix is to
/// configure every service on the bus alike (or to delete the object and migrate).
fn declare_error(what: &str, error: lapin::Error) -> TransportError {
    let text = error.to_string();
    let conflict = text
        .split("inequivalent arg '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .map(str::to_owned);
    let error = classify(&format!("declaring {what}"), error);
    match (error, conflict) {
        (TransportError::Refused { message, source }, Some(arg)) => TransportError::Refused {
            message: format!(
                "{message} — {what} exists with another `{arg}`; {}, or delete it to \
                 migrate (see \"Migrating\" in the rabbit transport's docs)",
                options_deciding(&arg)
            ),
            source,
        },
        (other, _) => other,
    }
}

/// Which options decide a declared property, for [`declare_error`].
fn options_deciding(arg: &str) -> &'static str {
    match arg {
        "durable" => {
            "set `amqp_durable_queues` and `rabbit_quorum_queue` (quorum queues and their \
             exchanges are durable), or for fanout and reply queues \
             `rabbit_transient_quorum_queue`, as the services that declared it do"
        }
        "x-queue-type" => {
            "set `rabbit_quorum_queue` (topic, server and notification queues), \
             `rabbit_transient_quorum_queue` (reply and fanout queues) or \
             `rabbit_stream_fanout` as the services that declared it do"
        }
        "auto_delete" => "set `amqp_auto_delete` as the services that declared it do",
        "x-expires" | "x-max-age" => {
            "set `rabbit_transient_queues_ttl` as the services that declared it do"
        }
        "x-ha-policy" => "set `rabbit_ha_queues` as the services that declared it do",
        "x-delivery-limit" | "x-max-in-memory-length" | "x-max-in-memory-bytes" => {
            "set `rabbit_quorum_delivery_limit`, `rabbit_quorum_max_memory_length` and \
             `rabbit_quorum_max_memory_bytes` as the services that declared it do"
        }
        _ => "declare it with the queue options of the services that declared it",
    }
}

/// kombu's defaults: JSON, UTF-8, persistent, no headers; `expiration` for calls.
pub(crate) fn properties(expiration: Option<Duration>) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type(fixed("application/json"))
        .with_content_encoding(fixed("utf-8"))
        .with_delivery_mode(2)
        .with_priority(0)
        .with_headers(FieldTable::default());
    match expiration {
        Some(ttl) => properties.with_expiration(fixed(&ttl.as_millis().max(1).to_string())),
        None => properties,
    }
}

/// Deletes a queue (whatever it holds, consumed or not), waiting at most `limit`.
pub(crate) async fn delete_queue(
    channel: &Channel,
    queue: &ShortString,
    limit: Duration,
) -> Result<(), TransportError> {
    match tokio::time::timeout(
        limit,
        channel.queue_delete(queue.clone(), QueueDeleteOptions::default()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify(&format!("deleting queue {queue}"), e)),
        Err(_) => Err(connection_error(
            &format!("deleting queue {queue}"),
            format!("no answer within {limit:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_follow_oslos_linear_schedule() {
        let secs = |s: &[u64]| {
            s.iter()
                .map(|s| Duration::from_secs(*s))
                .collect::<Vec<_>>()
        };
        let delays: Vec<_> = RetrySchedule::default().delays().take(17).collect();
        assert_eq!(
            delays,
            secs(&[
                1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 30, 30
            ])
        );
        let flat = RetrySchedule {
            interval: Duration::from_secs(2),
            step: Duration::ZERO,
            max: Duration::from_secs(1),
        };
        assert_eq!(flat.delays().take(2).collect::<Vec<_>>(), secs(&[1, 1]));
    }
}
