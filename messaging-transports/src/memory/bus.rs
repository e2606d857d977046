//! The bus: exchanges, topics, queues and the listeners waiting on them, all behind one
//! lock. Every waiting listener has its own condition variable (paired with the bus
//! lock) and, when polled asynchronously, a waker; a push hands the message to the
//! longest-waiting listener of its queue, so competing servers share work fairly and
//! nothing ever sleeps to poll.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use messaging_core::reply::{Replier, ReplyEvent, ReplySender};
use messaging_core::{Acknowledger, IncomingMessage, ListenOptions, Message, TransportError};

pub(crate) type QueueId = usize;
pub(crate) type ListenerId = u64;

/// What a call adds to a message: where the reply goes and how long the caller waits.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) reply: ReplySender,
    /// The call-monitor timeout (heartbeats).
    pub(crate) client_timeout: Option<Duration>,
    /// When the caller stops waiting for the reply.
    pub(crate) deadline: Option<Instant>,
    /// The largest reply the caller's transport takes (its `max_message_size`).
    pub(crate) max_reply: usize,
}

/// Hands a reply to the caller, refusing one larger than the caller's transport takes,
/// as a broker would.
#[derive(Debug)]
struct SizedReplier {
    inner: ReplySender,
    limit: usize,
}

impl Replier for SizedReplier {
    fn send(&self, event: ReplyEvent) -> Result<(), TransportError> {
        if let ReplyEvent::Reply(Ok(result)) = &event
            && result.len() > self.limit
        {
            return Err(TransportError::MessageTooLarge {
                size: result.len(),
                limit: self.limit,
            });
        }
        self.inner.send(event)
    }
}

/// A message waiting in a queue.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) message: Message,
    pub(crate) caller: Option<Caller>,
    /// Handed to this waiting listener: nobody else may take it until it is released.
    reserved: Option<ListenerId>,
}

impl Envelope {
    pub(crate) fn cast(message: Message) -> Self {
        Envelope::new(message, None)
    }

    pub(crate) fn new(message: Message, caller: Option<Caller>) -> Self {
        Envelope {
            message,
            caller,
            reserved: None,
        }
    }

    fn duplicate(&self) -> Self {
        Envelope::new(self.message.clone(), self.caller.clone())
    }

    fn free_for(&self, id: ListenerId) -> bool {
        self.reserved.is_none_or(|r| r == id)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub(crate) items: VecDeque<Envelope>,
    /// Listeners blocked on this queue, longest-waiting first.
    waiting: VecDeque<ListenerId>,
}

#[derive(Debug, Default)]
struct Topic {
    /// `(pool, queue)`: the pool-less queue (`None`) and one queue per pool.
    shared: Vec<(Option<String>, QueueId)>,
    /// `(server, queue)`.
    servers: Vec<(String, QueueId)>,
}

#[derive(Debug, Default)]
struct Exchange {
    topics: HashMap<String, Topic>,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) queues: Vec<QueueId>,
    pub(crate) options: ListenOptions,
    pub(crate) stopped: bool,
    /// Registered in its queues' waiting lists.
    waiting: bool,
    /// A push picked this listener; it has not looked yet.
    notified: bool,
    waker: Option<Waker>,
    pub(crate) cond: Arc<Condvar>,
    /// Bumped whenever the listener is woken: a blocked poll spins on it first.
    pub(crate) seq: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
pub(crate) struct BusState {
    exchanges: HashMap<String, Exchange>,
    pub(crate) queues: Vec<Queue>,
    pub(crate) listeners: HashMap<ListenerId, Slot>,
    next_listener: ListenerId,
}

/// One in-memory message bus, shared by every transport opened on it.
#[derive(Debug, Default)]
pub(crate) struct Bus {
    state: Mutex<BusState>,
}

impl Bus {
    pub(crate) fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wakers are woken after the bus lock is released.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Wakeups(Vec<Waker>);

impl Wakeups {
    pub(crate) fn wake(self) {
        for waker in self.0 {
            waker.wake();
        }
    }
}

impl BusState {
    fn exchange(&mut self, exchange: &str) -> &mut Exchange {
        if !self.exchanges.contains_key(exchange) {
            self.exchanges
                .insert(exchange.to_owned(), Exchange::default());
        }
        self.exchanges.get_mut(exchange).expect("inserted above")
    }

    fn new_queue(&mut self) -> QueueId {
        self.queues.push(Queue::default());
        self.queues.len() - 1
    }

    fn topic(&mut self, exchange: &str, topic: &str) -> &mut Topic {
        let exchange = self.exchange(exchange);
        if !exchange.topics.contains_key(topic) {
            exchange.topics.insert(topic.to_owned(), Topic::default());
        }
        exchange.topics.get_mut(topic).expect("inserted above")
    }

    /// The queue of one server of a topic, created if missing (store-and-forward).
    pub(crate) fn server_queue(&mut self, exchange: &str, topic: &str, server: &str) -> QueueId {
        if let Some(&(_, id)) = self
            .topic(exchange, topic)
            .servers
            .iter()
            .find(|(s, _)| s == server)
        {
            return id;
        }
        let id = self.new_queue();
        self.topic(exchange, topic)
            .servers
            .push((server.to_owned(), id));
        id
    }

    /// The shared queue of a topic for a pool (`None`: the pool-less queue), created
    /// if missing. A new pool's queue starts with a copy of what waits in the pool-less
    /// queue, as oslo's fake driver does, so a pool sees notifications sent before it
    /// existed.
    pub(crate) fn shared_queue(
        &mut self,
        exchange: &str,
        topic: &str,
        pool: Option<&str>,
    ) -> QueueId {
        if let Some(&(_, id)) = self
            .topic(exchange, topic)
            .shared
            .iter()
            .find(|(p, _)| p.as_deref() == pool)
        {
            return id;
        }
        let seed: VecDeque<Envelope> = match pool {
            Some(_) => {
                let default = self.shared_queue(exchange, topic, None);
                self.queues[default]
                    .items
                    .iter()
                    .map(Envelope::duplicate)
                    .collect()
            }
            None => VecDeque::new(),
        };
        let id = self.new_queue();
        self.queues[id].items = seed;
        self.topic(exchange, topic)
            .shared
            .push((pool.map(str::to_owned), id));
        id
    }

    /// Appends to one queue and hands it to a waiting listener.
    pub(crate) fn push(&mut self, queue: QueueId, envelope: Envelope, wakeups: &mut Wakeups) {
        self.queues[queue].items.push_back(envelope);
        self.wake_one(queue, wakeups);
    }

    /// Delivers a non-fanout message to a topic: one copy to every shared queue
    /// (one per pool, plus the pool-less one, which always exists).
    pub(crate) fn deliver_to_topic(
        &mut self,
        exchange: &str,
        topic: &str,
        envelope: Envelope,
    ) -> Wakeups {
        let mut wakeups = Wakeups::default();
        self.shared_queue(exchange, topic, None);
        let queues: Vec<QueueId> = self
            .topic(exchange, topic)
            .shared
            .iter()
            .map(|&(_, q)| q)
            .collect();
        let (last, rest) = queues.split_last().expect("the pool-less queue exists");
        for &q in rest {
            self.push(q, envelope.duplicate(), &mut wakeups);
        }
        self.push(*last, envelope, &mut wakeups);
        wakeups
    }

    /// Delivers a fanout cast: one copy to every server queue of the topic. Returns how
    /// many servers it reached (none: the message is dropped, as oslo's fake driver does).
    pub(crate) fn deliver_fanout(
        &mut self,
        exchange: &str,
        topic: &str,
        envelope: &Envelope,
    ) -> (usize, Wakeups) {
        let mut wakeups = Wakeups::default();
        let queues: Vec<QueueId> = self
            .topic(exchange, topic)
            .servers
            .iter()
            .map(|&(_, q)| q)
            .collect();
        for &q in &queues {
            self.push(q, envelope.duplicate(), &mut wakeups);
        }
        (queues.len(), wakeups)
    }

    pub(crate) fn add_listener(
        &mut self,
        queues: Vec<QueueId>,
        options: ListenOptions,
    ) -> (ListenerId, Arc<Condvar>, Arc<AtomicU64>) {
        self.next_listener += 1;
        let id = self.next_listener;
        let cond = Arc::new(Condvar::new());
        let seq = Arc::new(AtomicU64::new(0));
        self.listeners.insert(
            id,
            Slot {
                queues,
                options,
                stopped: false,
                waiting: false,
                notified: false,
                waker: None,
                cond: cond.clone(),
                seq: seq.clone(),
            },
        );
        (id, cond, seq)
    }

    /// Removes a listener; a poll still blocked on it returns `Closed`.
    pub(crate) fn remove_listener(&mut self, id: ListenerId) -> Wakeups {
        let waker = self
            .listeners
            .get_mut(&id)
            .and_then(|slot| slot.waker.take());
        let mut wakeups = self.end_wait(id);
        if let Some(slot) = self.listeners.remove(&id) {
            slot.seq.fetch_add(1, Ordering::Release);
            slot.cond.notify_all();
        }
        wakeups.0.extend(waker);
        wakeups
    }

    pub(crate) fn stop_listener(&mut self, id: ListenerId) -> Wakeups {
        let mut wakeups = Wakeups::default();
        if let Some(slot) = self.listeners.get_mut(&id) {
            slot.stopped = true;
            slot.seq.fetch_add(1, Ordering::Release);
            slot.cond.notify_all();
            wakeups.0.extend(slot.waker.take());
        }
        self.release(id, &mut wakeups);
        wakeups
    }

    /// Messages a listener may take, across its queues, counted up to `limit`.
    pub(crate) fn available(&self, id: ListenerId, limit: usize) -> usize {
        // Counting stops at `limit`: a backlog of a million messages must not make
        // every poll walk it (only a few, reserved for other waiting listeners, are
        // ever skipped).
        self.listeners.get(&id).map_or(0, |slot| {
            slot.queues
                .iter()
                .flat_map(|&q| self.queues[q].items.iter())
                .filter(|e| e.free_for(id))
                .take(limit)
                .count()
        })
    }

    /// Takes up to `max` envelopes from the listener's queues, in queue order, skipping
    /// messages handed to other waiting listeners.
    pub(crate) fn take(&mut self, id: ListenerId, max: usize) -> Vec<(QueueId, Envelope)> {
        let mut out = Vec::new();
        let Some(slot) = self.listeners.get(&id) else {
            return out;
        };
        for &q in &slot.queues {
            let items = &mut self.queues[q].items;
            let mut i = 0;
            while out.len() < max && i < items.len() {
                if items[i].free_for(id) {
                    let mut envelope = items.remove(i).expect("index checked");
                    envelope.reserved = None;
                    out.push((q, envelope));
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    /// Registers the listener as waiting on all its queues (again, if it was picked
    /// but found nothing), with an optional waker for async polls.
    pub(crate) fn begin_wait(&mut self, id: ListenerId, waker: Option<&Waker>) {
        let Some(slot) = self.listeners.get_mut(&id) else {
            return;
        };
        if let Some(waker) = waker
            && !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker))
        {
            slot.waker = Some(waker.clone());
        }
        if slot.waiting && !slot.notified {
            return;
        }
        let queues = slot.queues.clone();
        slot.waiting = true;
        slot.notified = false;
        for q in queues {
            let waiting = &mut self.queues[q].waiting;
            if !waiting.contains(&id) {
                waiting.push_back(id);
            }
        }
    }

    /// Deregisters a waiting listener, releases the messages handed to it that it did
    /// not take, and hands any message left in its queues to the next waiter.
    pub(crate) fn end_wait(&mut self, id: ListenerId) -> Wakeups {
        let mut wakeups = Wakeups::default();
        let Some(slot) = self.listeners.get_mut(&id) else {
            return wakeups;
        };
        if !slot.waiting {
            return wakeups;
        }
        slot.waiting = false;
        slot.notified = false;
        slot.waker = None;
        let queues = slot.queues.clone();
        for &q in &queues {
            self.queues[q].waiting.retain(|&l| l != id);
        }
        self.release(id, &mut wakeups);
        for &q in &queues {
            let free = self.queues[q].items.iter().any(|e| e.reserved.is_none());
            if free {
                self.wake_one(q, &mut wakeups);
            }
        }
        wakeups
    }

    /// Frees the messages reserved for `id` and hands each to another waiter.
    fn release(&mut self, id: ListenerId, wakeups: &mut Wakeups) {
        let Some(slot) = self.listeners.get(&id) else {
            return;
        };
        for q in slot.queues.clone() {
            let mut released = 0;
            for envelope in self.queues[q].items.iter_mut() {
                if envelope.reserved == Some(id) {
                    envelope.reserved = None;
                    released += 1;
                }
            }
            for _ in 0..released {
                self.wake_one(q, wakeups);
            }
        }
    }

    /// Hands the first free message of `queue` to its longest-waiting listener.
    fn wake_one(&mut self, queue: QueueId, wakeups: &mut Wakeups) {
        while let Some(id) = self.queues[queue].waiting.pop_front() {
            if let Some(slot) = self.listeners.get_mut(&id)
                && slot.waiting
                && !slot.notified
                && !slot.stopped
            {
                slot.notified = true;
                slot.seq.fetch_add(1, Ordering::Release);
                slot.cond.notify_one();
                wakeups.0.extend(slot.waker.take());
                if let Some(envelope) = self.queues[queue]
                    .items
                    .iter_mut()
                    .find(|e| e.reserved.is_none())
                {
                    envelope.reserved = Some(id);
                }
                return;
            }
        }
    }
}

/// Settles a message taken from a queue: acknowledging does nothing (it is already off
/// the queue); requeueing puts it back at the end of the same queue.
#[derive(Debug)]
pub(crate) struct MemoryAck {
    pub(crate) bus: Weak<Bus>,
    pub(crate) queue: QueueId,
    pub(crate) caller: Option<Caller>,
}

impl Acknowledger for MemoryAck {
    fn acknowledge(self: Box<Self>) -> Result<(), TransportError> {
        Ok(())
    }

    fn requeue(self: Box<Self>, message: Message) -> Result<(), TransportError> {
        let bus = self
            .bus
            .upgrade()
            .ok_or(TransportError::Closed("the in-memory bus"))?;
        let mut wakeups = Wakeups::default();
        bus.lock().push(
            self.queue,
            Envelope::new(message, self.caller),
            &mut wakeups,
        );
        wakeups.wake();
        Ok(())
    }
}

pub(crate) fn incoming(bus: &Arc<Bus>, queue: QueueId, envelope: Envelope) -> IncomingMessage {
    let Envelope {
        message, caller, ..
    } = envelope;
    let ack = MemoryAck {
        bus: Arc::downgrade(bus),
        queue,
        caller: caller.clone(),
    };
    let incoming = IncomingMessage::new(message).with_acknowledger(ack);
    match caller {
        Some(caller) => incoming
            .with_client_timeout(caller.client_timeout)
            .with_deadline(caller.deadline)
            .with_replier(SizedReplier {
                inner: caller.reply,
                limit: caller.max_reply,
            }),
        None => incoming,
    }
}
