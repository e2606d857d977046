//! [`FakeTransport`]: an in-memory transport that records what passes through it and
//! injects faults, driven from a [`FakeHandle`] (the shape of `tower-test`'s mock pair).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use messaging_core::codec::CodecKind;
use messaging_core::reply::{Replier, ReplyEvent, ReplyReceiver};
use messaging_core::{
    Acknowledger, IncomingMessage, IncomingParts, ListenOptions, Listener, Message, Polled,
    Priority, SendOptions, Subscription, Target, Transport, TransportError, TransportUrl,
};
use messaging_transports::memory::MemoryTransport;

/// What kind of send was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentKind {
    /// A cast (fanout or not: see the target).
    Cast,
    /// A call.
    Call,
    /// A notification at this priority.
    Notify(Priority),
}

/// One recorded send.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Sent {
    /// What it was.
    pub kind: SentKind,
    /// Where it went.
    pub target: Target,
    /// The message.
    pub message: Message,
}

/// Counters of what the transport's listeners did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerCounts {
    /// Listeners created.
    pub created: usize,
    /// `stop()` calls.
    pub stopped: usize,
    /// `cleanup()` calls.
    pub cleaned_up: usize,
    /// Messages handed out by polls.
    pub delivered: usize,
    /// Replies sent by servers (including dropped ones).
    pub replies: usize,
}

impl ListenerCounts {
    /// Listeners created and not yet cleaned up.
    pub fn live(&self) -> usize {
        self.created - self.cleaned_up
    }
}

#[derive(Debug, Default)]
struct Faults {
    fail_listens: usize,
    fail_all_listens: bool,
    fail_acks: bool,
    delivery_delay: Option<Duration>,
    drop_replies: bool,
    panic_polls: usize,
    panic_stops: usize,
    panic_cleanups: usize,
}

#[derive(Debug, Default)]
struct State {
    sent: Vec<Sent>,
    counts: ListenerCounts,
    faults: Faults,
    /// Reply channels whose replies were dropped, kept open so that callers time out
    /// (as with a lost broker message) instead of seeing the channel close.
    lost: Vec<Arc<dyn Replier>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates a fake transport on a private in-memory bus, and the handle that inspects it
/// and injects faults.
///
/// # Examples
///
/// ```
/// use messaging_core::{Subscription, Target, Transport};
/// use messaging_testkit::fake_transport;
///
/// let (transport, handle) = fake_transport();
/// handle.fail_next_listens(1);
/// let sub = Subscription::Rpc(Target::new("t").with_server("s"));
/// assert!(transport.listen(&sub, &Default::default()).is_err());
/// assert!(transport.listen(&sub, &Default::default()).is_ok());
/// assert_eq!(handle.listener_counts().created, 1);
/// ```
pub fn fake_transport() -> (Arc<FakeTransport>, FakeHandle) {
    let shared = Arc::new(Shared::default());
    (
        Arc::new(FakeTransport {
            inner: MemoryTransport::new(),
            shared: shared.clone(),
        }),
        FakeHandle { shared },
    )
}

/// The transport half of [`fake_transport`]: behaves like `memory://`, plus faults.
#[derive(Debug)]
pub struct FakeTransport {
    inner: MemoryTransport,
    shared: Arc<Shared>,
}

/// The control half of [`fake_transport`]. Cloneable.
#[derive(Clone, Debug)]
pub struct FakeHandle {
    shared: Arc<Shared>,
}

impl FakeHandle {
    /// Every send so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.lock().sent.clone()
    }

    /// What the listeners did so far.
    pub fn listener_counts(&self) -> ListenerCounts {
        self.shared.lock().counts
    }

    /// The next `n` calls to `listen` fail.
    pub fn fail_next_listens(&self, n: usize) {
        self.shared.lock().faults.fail_listens = n;
    }

    /// Every call to `listen` fails while `on`.
    pub fn fail_listens(&self, on: bool) {
        self.shared.lock().faults.fail_all_listens = on;
    }

    /// Acknowledge and requeue fail while `on`.
    pub fn fail_acks(&self, on: bool) {
        self.shared.lock().faults.fail_acks = on;
    }

    /// Each poll that has messages waits this long before handing them out.
    pub fn delay_delivery(&self, delay: Option<Duration>) {
        self.shared.lock().faults.delivery_delay = delay;
    }

    /// The next `n` polls panic, as a buggy transport might.
    pub fn panic_next_polls(&self, n: usize) {
        self.shared.lock().faults.panic_polls = n;
    }

    /// The next `n` calls to a listener's `stop()` panic after stopping it, as a buggy
    /// transport might.
    pub fn panic_next_stops(&self, n: usize) {
        self.shared.lock().faults.panic_stops = n;
    }

    /// The next `n` calls to a listener's `cleanup()` panic after cleaning up.
    pub fn panic_next_cleanups(&self, n: usize) {
        self.shared.lock().faults.panic_cleanups = n;
    }

    /// Replies (and heartbeats) are silently lost while `on`: callers time out.
    pub fn drop_replies(&self, on: bool) {
        self.shared.lock().faults.drop_replies = on;
    }
}

impl FakeTransport {
    fn record(&self, kind: SentKind, target: &Target, message: &Message) {
        self.shared.lock().sent.push(Sent {
            kind,
            target: target.clone(),
            message: message.clone(),
        });
    }
}

#[async_trait]
impl Transport for FakeTransport {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn url(&self) -> &TransportUrl {
        self.inner.url()
    }

    fn codec(&self) -> CodecKind {
        self.inner.codec()
    }

    async fn cast(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        self.record(SentKind::Cast, target, &message);
        self.inner.cast(target, message, options).await
    }

    async fn call(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<ReplyReceiver, TransportError> {
        self.record(SentKind::Call, target, &message);
        self.inner.call(target, message, options).await
    }

    async fn notify(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
    ) -> Result<(), TransportError> {
        self.record(SentKind::Notify(priority), target, &message);
        self.inner.notify(target, priority, message).await
    }

    async fn notify_with(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        self.record(SentKind::Notify(priority), target, &message);
        self.inner
            .notify_with(target, priority, message, options)
            .await
    }

    fn listen(
        &self,
        subscription: &Subscription,
        options: &ListenOptions,
    ) -> Result<Box<dyn Listener>, TransportError> {
        {
            let mut state = self.shared.lock();
            if state.faults.fail_all_listens || state.faults.fail_listens > 0 {
                state.faults.fail_listens = state.faults.fail_listens.saturating_sub(1);
                return Err(TransportError::connection(
                    "injected fault",
                    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "listen failed"),
                ));
            }
        }
        let inner = self.inner.listen(subscription, options)?;
        self.shared.lock().counts.created += 1;
        Ok(Box::new(FakeListener {
            inner,
            shared: self.shared.clone(),
        }))
    }
}

struct FakeListener {
    inner: Box<dyn Listener>,
    shared: Arc<Shared>,
}

impl FakeListener {
    fn maybe_panic(&self) {
        if take_one(&mut self.shared.lock().faults.panic_polls) {
            panic!("injected fault: the listener panicked");
        }
    }

    fn deliver(&self, polled: Polled) -> Polled {
        let Polled::Messages(batch) = polled else {
            return polled;
        };
        let delay = {
            let mut state = self.shared.lock();
            state.counts.delivered += batch.len();
            state.faults.delivery_delay
        };
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        Polled::Messages(batch.into_iter().map(|m| self.wrap(m)).collect())
    }

    fn wrap(&self, incoming: IncomingMessage) -> IncomingMessage {
        let mut parts: IncomingParts = incoming.into_parts();
        parts.acknowledger = Some(Box::new(FaultyAck {
            inner: parts.acknowledger.take(),
            shared: self.shared.clone(),
        }));
        parts.replier = parts.replier.take().map(|inner| {
            Arc::new(FaultyReplier {
                inner,
                shared: self.shared.clone(),
            }) as Arc<dyn Replier>
        });
        IncomingMessage::from_parts(parts)
    }
}

#[async_trait]
impl Listener for FakeListener {
    fn poll(&self, timeout: Option<Duration>) -> Result<Polled, TransportError> {
        self.maybe_panic();
        Ok(self.deliver(self.inner.poll(timeout)?))
    }

    async fn poll_async(&self) -> Result<Polled, TransportError> {
        self.maybe_panic();
        let polled = self.inner.poll_async().await?;
        Ok(self.deliver(polled))
    }

    fn stop(&self) {
        self.shared.lock().counts.stopped += 1;
        self.inner.stop();
        if take_one(&mut self.shared.lock().faults.panic_stops) {
            panic!("injected fault: the listener's stop panicked");
        }
    }

    fn cleanup(&self) {
        self.shared.lock().counts.cleaned_up += 1;
        self.inner.cleanup();
        if take_one(&mut self.shared.lock().faults.panic_cleanups) {
            panic!("injected fault: the listener's cleanup panicked");
        }
    }
}

/// Counts one injected fault down; whether it fires.
fn take_one(count: &mut usize) -> bool {
    let fire = *count > 0;
    *count = count.saturating_sub(1);
    fire
}

impl fmt::Debug for FakeListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeListener").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct FaultyAck {
    inner: Option<Box<dyn Acknowledger>>,
    shared: Arc<Shared>,
}

impl FaultyAck {
    fn check(&self) -> Result<(), TransportError> {
        if self.shared.lock().faults.fail_acks {
            return Err(TransportError::Acknowledge("injected fault".to_owned()));
        }
        Ok(())
    }
}

impl Acknowledger for FaultyAck {
    fn acknowledge(self: Box<Self>) -> Result<(), TransportError> {
        self.check()?;
        self.inner.map_or(Ok(()), |inner| inner.acknowledge())
    }

    fn requeue(self: Box<Self>, message: Message) -> Result<(), TransportError> {
        self.check()?;
        self.inner.map_or(Ok(()), |inner| inner.requeue(message))
    }
}

#[derive(Debug)]
struct FaultyReplier {
    inner: Arc<dyn Replier>,
    shared: Arc<Shared>,
}

impl Replier for FaultyReplier {
    fn send(&self, event: ReplyEvent) -> Result<(), TransportError> {
        {
            let mut state = self.shared.lock();
            if matches!(event, ReplyEvent::Reply(_)) {
                state.counts.replies += 1;
            }
            if state.faults.drop_replies {
                // Lost on the way, as a broker might lose it.
                state.lost.push(self.inner.clone());
                return Ok(());
            }
        }
        self.inner.send(event)
    }
}
