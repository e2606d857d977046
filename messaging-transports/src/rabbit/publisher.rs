//! Publishing: one connection and channel per transport, reconnected on failure, with
//! the exchanges (and notification queues) declared once per channel.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::{Channel, Connection};
use messaging_core::TransportError;
use tokio::sync::Mutex;

use super::connection::{self, Backoff, Kind, connection_error};
use super::options::Options;

/// Something to declare before publishing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Declare {
    Exchange(String, Kind),
    /// A queue (with `x-expires` if given) bound to an exchange with a key: the
    /// notification publisher's default queue, so messages persist before a consumer.
    Queue {
        queue: String,
        expires_ms: Option<u32>,
        exchange: String,
        key: String,
    },
}

/// One message to publish.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) body: Vec<u8>,
    pub(crate) expiration: Option<Duration>,
    pub(crate) mandatory: bool,
    pub(crate) declare: Vec<Declare>,
}

struct Session {
    _connection: Connection,
    channel: Channel,
    declared: HashSet<Declare>,
}

pub(crate) struct Publisher {
    options: Options,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(options: Options) -> Self {
        Publisher {
            options,
            session: Mutex::new(None),
        }
    }

    /// Publishes, reconnecting as needed: at most `retry` more attempts (`None`: until
    /// `deadline`, or forever without one).
    pub(crate) async fn publish(
        &self,
        message: &Publish,
        retry: Option<u32>,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            match self.try_publish(message).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    *self.session.lock().await = None;
                    attempts += 1;
                    let delay = backoff.next_delay();
                    let out_of_retries = retry.is_some_and(|r| attempts > r);
                    let out_of_time = deadline.is_some_and(|d| Instant::now() + delay >= d);
                    if out_of_retries || out_of_time {
                        return Err(error);
                    }
                    tracing::warn!(%error, retry_in = ?delay, "publish failed; reconnecting");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn try_publish(&self, message: &Publish) -> Result<(), TransportError> {
        let channel = {
            let mut guard = self.session.lock().await;
            let stale = guard
                .as_ref()
                .is_none_or(|s| !s.channel.status().connected());
            if stale {
                let connection = connection::connect(&self.options, "publish").await?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| connection_error("opening a channel", e))?;
                *guard = Some(Session {
                    _connection: connection,
                    channel,
                    declared: HashSet::new(),
                });
            }
            let session = guard.as_mut().expect("set above");
            for declare in &message.declare {
                if session.declared.contains(declare) {
                    continue;
                }
                match declare {
                    Declare::Exchange(name, kind) => {
                        connection::declare_exchange(&session.channel, name, *kind).await?;
                    }
                    Declare::Queue {
                        queue,
                        expires_ms,
                        exchange,
                        key,
                    } => {
                        connection::declare_exchange(&session.channel, exchange, Kind::Topic)
                            .await?;
                        connection::declare_queue(
                            &session.channel,
                            queue,
                            *expires_ms,
                            Some((exchange, key)),
                        )
                        .await?;
                    }
                }
                session.declared.insert(declare.clone());
            }
            session.channel.clone()
        };
        channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                connection::properties(message.expiration),
            )
            .await
            .map_err(|e| connection_error("publishing", e))?;
        Ok(())
    }
}
