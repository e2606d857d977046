//! The server's side of calls: replies (and call-monitor heartbeats) published to the
//! default exchange, routed by the caller's `_reply_q`, mandatory.
//!
//! A reply whose queue is missing comes back and is retried with backoff (100 ms
//! doubling to 5 s; at most [`REPLY_RETRIES`] times) while its caller still waits: until
//! the caller's deadline (its request's AMQP `expiration`), and never longer than
//! oslo's `kombu_missing_consumer_retry_timeout` (60 s by default). A queue that stays missing is
//! remembered for 60 s ([`ObsoleteReplyQueues`], oslo's `ObsoleteReplyQueuesCache`), so
//! later replies to it are dropped at once. Each dropped reply is logged once, without
//! its contents; heartbeats are never retried nor logged.
//!
//! Replies being published (awaiting their confirm, or retried) hold at most
//! [`PENDING_REPLY_BYTES`] per transport (one larger reply, up to `max_message_size`,
//! only when nothing else is pending): beyond that a new reply is dropped at once, and the drops are counted
//! in one warning per 10 s. Calls whose reply queues do not exist can thus not make a
//! server hold their replies without bound.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::types::ShortString;
use messaging_core::reply::{Replier, ReplyEvent};
use messaging_core::{TransportError, Untrusted};

use super::connection::fixed;
use super::publisher::{Budget, Publish, Publisher};
use super::wire;

/// Retries of one reply at most.
pub(crate) const REPLY_RETRIES: u32 = 15;

/// Reply queues that did not exist when a reply was last given up on: oslo's
/// `ObsoleteReplyQueuesCache`, the last 200 for 60 s each.
#[derive(Debug, Default)]
pub(crate) struct ObsoleteReplyQueues {
    queues: Mutex<VecDeque<(ShortString, Instant)>>,
}

impl ObsoleteReplyQueues {
    const SIZE: usize = 200;
    const TTL: Duration = Duration::from_secs(60);

    /// Whether `queue` was found gone less than a minute ago.
    pub(crate) fn contains(&self, queue: &ShortString) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        queues.retain(|(_, expires)| *expires > now);
        queues.iter().any(|(q, _)| q == queue)
    }

    /// Remembers `queue` as gone for a minute.
    pub(crate) fn add(&self, queue: ShortString) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.retain(|(q, _)| *q != queue);
        if queues.len() == Self::SIZE {
            queues.pop_front();
        }
        queues.push_back((queue, Instant::now() + Self::TTL));
    }
}

/// The most bytes of replies a transport holds while they are published.
pub(crate) const PENDING_REPLY_BYTES: usize = 64 << 20;

/// How often dropped replies are reported at most.
const DROP_REPORT: Duration = Duration::from_secs(10);

/// What a transport's repliers share: the queues found gone, and the bytes of replies
/// being published.
#[derive(Debug)]
pub(crate) struct ReplyLedger {
    obsolete: ObsoleteReplyQueues,
    pending: AtomicUsize,
    limit: usize,
    dropped: AtomicU64,
    reported: Mutex<Option<Instant>>,
}

impl ReplyLedger {
    /// A ledger holding at most [`PENDING_REPLY_BYTES`] (one larger reply alone).
    pub(crate) fn new() -> Self {
        ReplyLedger {
            obsolete: ObsoleteReplyQueues::default(),
            pending: AtomicUsize::new(0),
            limit: PENDING_REPLY_BYTES,
            dropped: AtomicU64::new(0),
            reported: Mutex::new(None),
        }
    }

    /// Reserves `len` bytes for a reply being published, or `None` (the reply is to be
    /// dropped, and the drop is counted) if the ledger is full. A reply that fits the
    /// limit alone always gets through when nothing else is pending.
    fn reserve(self: &Arc<Self>, len: usize) -> Option<Reserved> {
        let mut pending = self.pending.load(Ordering::Relaxed);
        loop {
            if pending > 0 && pending.saturating_add(len) > self.limit {
                self.count_drop();
                return None;
            }
            match self.pending.compare_exchange_weak(
                pending,
                pending + len,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Reserved {
                        ledger: self.clone(),
                        len,
                    });
                }
                Err(now) => pending = now,
            }
        }
    }

    fn count_drop(&self) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if reported.is_some_and(|at| at.elapsed() < DROP_REPORT) {
            return;
        }
        *reported = Some(Instant::now());
        self.dropped.fetch_sub(dropped, Ordering::Relaxed);
        tracing::warn!(
            dropped,
            held_bytes = self.pending.load(Ordering::Relaxed),
            "dropping replies: replies still being published (to queues that may not exist) hold the most this transport keeps"
        );
    }
}

/// Bytes of one reply being published, given back when dropped.
struct Reserved {
    ledger: Arc<ReplyLedger>,
    len: usize,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.ledger.pending.fetch_sub(self.len, Ordering::AcqRel);
    }
}

/// Replies to one call; see the module docs.
#[derive(Debug)]
pub(crate) struct RabbitReplier {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) ledger: Arc<ReplyLedger>,
    pub(crate) reply_q: ShortString,
    pub(crate) msg_id: String,
    /// Whether replies are published mandatory (`direct_mandatory_flag`).
    pub(crate) mandatory: bool,
    /// How long a reply is retried at most when its caller's deadline is unknown or
    /// later (`kombu_missing_consumer_retry_timeout`, 60 s by default).
    pub(crate) retry_for: Duration,
    /// When the caller stops waiting, if its request said.
    pub(crate) deadline: Option<Instant>,
    pub(crate) max_message_size: usize,
}

impl Replier for RabbitReplier {
    fn send(&self, event: ReplyEvent) -> Result<(), TransportError> {
        let heartbeat = matches!(event, ReplyEvent::Heartbeat);
        let (reply_q, msg_id) = (&self.reply_q, &self.msg_id);
        if self.ledger.obsolete.contains(reply_q) {
            if !heartbeat {
                tracing::warn!(
                    reply_q = %Untrusted::new(reply_q.as_str()),
                    msg_id = %Untrusted::new(msg_id),
                    "the reply queue does not exist; dropping the reply"
                );
            }
            return Ok(());
        }
        let now = Instant::now();
        let deadline = match self.deadline {
            Some(deadline) => deadline.min(now + self.retry_for),
            None => now + self.retry_for,
        };
        if deadline <= now {
            if !heartbeat {
                tracing::debug!(
                    reply_q = %Untrusted::new(reply_q.as_str()),
                    msg_id = %Untrusted::new(msg_id),
                    "the caller stopped waiting; dropping the reply"
                );
            }
            return Ok(());
        }
        let unique_id = messaging_core::ids::hex_id();
        let body = match &event {
            ReplyEvent::Heartbeat => {
                wire::encode_reply(&wire::ReplyBody::Heartbeat, msg_id, &unique_id)
            }
            ReplyEvent::Reply(Ok(result)) => {
                wire::encode_reply(&wire::ReplyBody::Result(result), msg_id, &unique_id)
            }
            ReplyEvent::Reply(Err(remote)) => {
                wire::encode_reply(&wire::ReplyBody::Failure(remote), msg_id, &unique_id)
            }
        }
        .map_err(|e| TransportError::Reply(e.to_string()))?;
        if body.len() > self.max_message_size {
            return Err(TransportError::MessageTooLarge {
                size: body.len(),
                limit: self.max_message_size,
            });
        }
        let Some(reserved) = self.ledger.reserve(body.len()) else {
            return Ok(());
        };
        let message = Publish {
            exchange: fixed(""),
            routing_key: reply_q.clone(),
            body,
            expires: None,
            // oslo's `direct_mandatory_flag` (default true): a reply no queue takes is
            // returned, and retried; without it the broker drops it silently.
            mandatory: self.mandatory,
            returned_is_final: false,
            declare: Vec::new(),
        };
        // A heartbeat is worth one attempt: the next one follows soon.
        let retries = if heartbeat { 0 } else { REPLY_RETRIES };
        let budget = Budget {
            retries: Some(retries),
            deadline,
        };
        let (ledger, reply_q, msg_id) = (self.ledger.clone(), reply_q.clone(), msg_id.clone());
        self.publisher
            .publish_detached(message, budget, move |outcome| match (outcome, reserved) {
                (Ok(()), _) => {}
                (Err(_), _) if heartbeat => {}
                (Err(TransportError::Undeliverable(_)), _) => {
                    tracing::warn!(
                        reply_q = %Untrusted::new(reply_q.as_str()),
                        msg_id = %Untrusted::new(&msg_id),
                        after = ?now.elapsed(),
                        "the reply queue does not exist; dropping the reply"
                    );
                    ledger.obsolete.add(reply_q);
                }
                (Err(error), _) => {
                    tracing::warn!(
                        %error,
                        reply_q = %Untrusted::new(reply_q.as_str()),
                        msg_id = %Untrusted::new(&msg_id),
                        "the reply could not be sent; dropping it"
                    );
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_being_published_hold_a_bounded_number_of_bytes() {
        let ledger = Arc::new(ReplyLedger::new());
        assert_eq!(ledger.limit, PENDING_REPLY_BYTES);
        let mut held = Vec::new();
        for _ in 0..64 {
            held.push(ledger.reserve(1 << 20).expect("within the limit"));
        }
        assert!(ledger.reserve(1).is_none(), "the 64 MiB are held");
        assert_eq!(
            ledger.dropped.load(Ordering::Relaxed),
            0,
            "reported at once"
        );
        assert!(ledger.reserve(1).is_none());
        assert_eq!(
            ledger.dropped.load(Ordering::Relaxed),
            1,
            "counted until the next report"
        );
        held.pop();
        assert!(
            ledger.reserve(1 << 20).is_some(),
            "a finished reply gives its bytes back"
        );
        drop(held);
        assert_eq!(ledger.pending.load(Ordering::Relaxed), 0);
        let big = Arc::new(ReplyLedger::new());
        let alone = big.reserve(PENDING_REPLY_BYTES * 2);
        assert!(alone.is_some(), "one larger reply fits alone");
        assert!(big.reserve(1).is_none(), "but nothing beside it");
    }

    #[test]
    fn obsolete_reply_queues_are_remembered_200_at_most() {
        let cache = ObsoleteReplyQueues::default();
        let name = |i: usize| fixed(&format!("reply_{i}"));
        assert!(!cache.contains(&name(0)));
        for i in 0..=ObsoleteReplyQueues::SIZE {
            cache.add(name(i));
        }
        assert!(!cache.contains(&name(0)), "the oldest was forgotten");
        assert!(cache.contains(&name(1)));
        assert!(cache.contains(&name(ObsoleteReplyQueues::SIZE)));
        cache.add(name(1));
        assert_eq!(
            cache.queues.lock().unwrap().len(),
            ObsoleteReplyQueues::SIZE,
            "a queue added again is not counted twice"
        );
    }
}
