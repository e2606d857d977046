//! `nats://`: NATS, the second broker, enabled by the `nats` cargo feature. Core NATS
//! carries RPC; JetStream stores notifications.
//!
//! # URL
//!
//! `nats://user:pass@host1:4222,host2:4222?options` (`tls://` or `ssl=true` for TLS,
//! see *Authentication and TLS*). The client connects to one of the servers and fails
//! over to the others, reconnecting on its own. Options: `codec` (`bincode`, the default, or `json`), `subject_prefix`
//! (default `msg`; dot-separated tokens without wildcards, whitespace or control
//! characters), `control_exchange` (default `openstack`; the rules of an exchange
//! name), `prefetch` (1 to 100000, default 1000: the most unacknowledged
//! notifications a durable consumer hands out, JetStream's `max_ack_pending`, and the
//! most requests an RPC listener buffers; it bounds what a listener holds, see
//! *Memory*, and the largest batch), `connect_timeout` (seconds, 1 to 3600, default
//! 10), `consumer_ttl` (seconds a durable notification consumer survives without a
//! listener, 1 to 315360000 (ten years), default 7 days), `notification_max_age`
//! (seconds, 1 to 315360000, default 1 day), `max_message_size` (bytes, 1 to 64 MiB;
//! default and upper bound: the server's advertised `max_payload`, 1 MiB unless the
//! server is configured otherwise), `max_pending` (1 to 1000000, default `prefetch +
//! 64`: the most requests one RPC subscription holds waiting for room in its listener's
//! buffer, see *Memory*), `stream_replicas` (1 to 5, default 1: how many servers of a
//! JetStream cluster keep the notification stream and its consumers, see *Clusters*),
//! `notification_ack_wait` (seconds, 1 to 315360000, default 30: JetStream's
//! `ack_wait`, after which a notification delivered to a listener that neither settled
//! it nor still holds it is redelivered, see *Delivery and faults*), and the
//! authentication and TLS options below
//! (`nkey_seed_file`, `creds_file`, `ssl`, `ssl_ca_file`, `ssl_cert_file`,
//! `ssl_key_file`, `ssl_enforce_hostname_verification`). An unknown option, or a number
//! outside its range, is an error naming the option (and the range): nothing is
//! silently moved into range.
//!
//! # Authentication and TLS
//!
//! One way to authenticate at most (several are a URL error naming them, never their
//! secrets):
//!
//! | URL | the client sends |
//! |---|---|
//! | `nats://user:password@host` | a user and password (nats-server `authorization { users = [...] }`, `--user`/`--pass`) |
//! | `nats://:token@host` | a token (`authorization { token: ... }`, `--auth`): an **empty user name** and the token as the password, so that it is hidden wherever the URL is shown, as a password is |
//! | `nats://host?nkey_seed_file=/path/user.nk` | the public key of the user NKey seed in the file (its first line that is not blank or a `#`/`//` comment, `SU…`), signing the server's nonce (`users = [{nkey: U…}]`) |
//! | `nats://host?creds_file=/path/user.creds` | the user JWT of a `.creds` file (as `nsc` writes them), signing the nonce with its seed (operator mode: `operator`, `resolver`) |
//!
//! `nats://name@host` (a user name without a password, which NATS's own clients take
//! for a token) is a URL error that shows neither the name nor the URL's credentials:
//! before, it connected without credentials. Write `nats://:token@host` for a token.
//! With several hosts, the credentials are written once (on the first host, or the same
//! on every host that has any): NATS sends one set to whichever server it reaches. The
//! files are read, and checked, when the transport opens (a bad file is a URL error
//! naming the option and the file, never its contents) and kept for reconnections.
//!
//! TLS uses the RabbitMQ transport's option names, so one vocabulary serves both
//! brokers: `tls://` or `ssl=true` (`tls=true`, the earlier name, still works) turns it
//! on; the server's certificate must chain to the system's roots or to `ssl_ca_file`
//! (PEM) and name the host connected to (`ssl_enforce_hostname_verification`, default
//! true; `false` still checks the chain and validity, not the name); `ssl_cert_file` +
//! `ssl_key_file` (PEM; PKCS#8, PKCS#1 or SEC1 keys) present a client certificate, for
//! a server with `verify: true`. The files are read and parsed when the transport
//! opens; `ssl=false` wins over `tls://`. A TLS option without TLS, a certificate without
//! its key are URL errors. A server that requires TLS is spoken TLS to even on
//! `nats://` (with the system's roots only).
//!
//! Wrong credentials, and a handshake that fails over a certificate (an unknown CA, a
//! name the certificate does not hold, a client certificate refused or missing), fail
//! the operation at once with [`TransportError::Refused`], a permanent error, after one
//! connection attempt per address the host resolves to (measured against
//! nats-server 2.9.10: one attempt, 5–200 ms, one log line from the client for an
//! authorization violation, none for TLS): nothing retries them. No password, token,
//! seed, `.creds` contents or key appears in an error, a `Debug` output or a log line
//! (async-nats prints its CONNECT, credentials included, at TRACE level only, for
//! whoever enables that).
//!
//! # Mapping
//!
//! Names become single subject tokens (percent-encoded: `compute.host1` →
//! `compute%2Ehost1`); `<p>` is the subject prefix and `<x>` the exchange.
//!
//! | oslo concept | NATS |
//! |---|---|
//! | call / cast to a topic | subject `<p>.<x>.rpc.<topic>`, consumed in queue group `<p>.<x>.rpc.<topic>`: the servers of a topic compete |
//! | call / cast to a server | subject `<p>.<x>.server.<topic>.<server>`, no group |
//! | fanout cast | subject `<p>.<x>.fanout.<topic>`, every server subscribes, no group |
//! | reply queue | one wildcard subscription `<inbox>.*` per transport; a call's reply subject is `<inbox>.<msg id>`; heartbeats and the reply are messages on it |
//! | notification | JetStream: published to `<p>.notify.<x>.<topic>.<priority>` (and the publish acknowledged by the server) in stream `<P>_NOTIFICATIONS` (file storage, interest retention; limits retention on nats-server 2.9.7 to 2.9.15, see below) |
//! | notification queue, pool | a durable pull consumer per `(topic, priority, pool)`, filtered on that subject, starting with the notifications published after it was created; listeners of one pool (or the pool-less listeners) share it and compete; each consumer gets its own copy |
//!
//! The notifier creates the pool-less consumer before its first publish, so
//! notifications are stored before any listener exists (as oslo's notifier declares
//! the `<topic>.<priority>` queue on RabbitMQ). Interest retention removes a
//! notification once every consumer acknowledged it; `notification_max_age` removes
//! it in any case.
//!
//! ## Names
//!
//! A consumer's name is `n-<exchange>-<topic>-<priority>-<pool>` (`-` for no pool),
//! each part with the bytes outside `[A-Za-z0-9_:]` written `~` and two hex digits
//! (`a-b` → `a~2Db`, `a.b` → `a~2Eb`), so distinct triples never share a consumer.
//! Names of `[A-Za-z0-9_:]` only map to the same consumer as in earlier versions.
//! Others changed: names with `-` could share a consumer (`(topic a-b, priority
//! info)` and `(exchange …-a, topic b)` did), and other characters were
//! percent-encoded, which nats-server 2.9 garbles in every delivery's acknowledgement
//! subject (it formats it with the name as a format string), so the client dropped
//! the connection and the notification never arrived. **Upgrading:** a name with `-`
//! (which worked when it collided with no other) now uses a consumer of the new name,
//! created empty: notifications its old consumer stored are not delivered to it. Let
//! the previous version's listeners drain them first; the old consumer is removed
//! after `consumer_ttl`.
//!
//! The stream's name is the prefix's subject token with `_` for `%`, so two prefixes
//! can map to one stream (`a.b` and `a_2Eb`); renaming streams would orphan what they
//! store, so instead a transport whose stream exists for another prefix's subjects
//! fails with [`TransportError::Refused`] rather than mixing their notifications.
//!
//! NATS limits what names compose to: a stream or consumer name is at most 255
//! bytes, and a subject (or queue group) here at most 2000, so that a subscription
//! with its queue group, or a JetStream request naming stream, consumer and filter,
//! fits the server's 4096-byte protocol line (a longer line makes the server drop the
//! connection). A longer composed name is refused before anything is sent, with
//! [`TransportError::InvalidTarget`] from `cast`, `call`, `notify` and `listen`; a
//! `subject_prefix` whose stream name would be too long is a URL error.
//!
//! ## Consumer settings
//!
//! A listener applies its `prefetch` (`max_ack_pending`), `consumer_ttl`
//! (`inactive_threshold`) and `notification_ack_wait` (`ack_wait`) to the durable
//! consumers it uses: one that exists with other values (created under another URL,
//! or by an earlier version) is updated, with a warning naming the consumer and both
//! values. Listeners of one pool started with different values update it in
//! turn: the last one started wins. A notifier creates a missing consumer with its
//! own values and never changes an existing one. Should the server refuse the update,
//! the listener warns, naming both values, and uses the consumer as it is.
//!
//! ## Durable consumers stay, until `consumer_ttl`
//!
//! A listener leaves its consumers on the server when it stops: one per topic and
//! priority it listened to (seven for a listener of every priority, as the
//! `messaging listen` command is) and pool. They are what stores notifications while
//! no listener runs: the pool-less one holds what was published before any listener
//! existed (the notifier creates it), a pool's holds what arrives while its listeners
//! restart, exactly as oslo's `<topic>.<priority>` and pool queues do on RabbitMQ
//! (where they stay until deleted by hand). No listener can tell whether it is the
//! last of its pool, or whether a notifier relies on the pool-less consumer, so none
//! deletes them: the server does, after `consumer_ttl` (7 days by default) without a
//! listener pulling from them, and with them what they stored. Shorten `consumer_ttl`
//! where listeners come and go, lengthen it where notifications must wait longer
//! for theirs. A notifier that outlives its pool-less consumer creates it again: it
//! makes sure the consumer exists at most every minute (or half `consumer_ttl`).
//!
//! ## nats-server 2.9.7 to 2.9.15
//!
//! These versions, when they start, purge from an interest-retention stream
//! everything below the acknowledgement floor of one of its consumers, picked by map
//! order, whenever another consumer has never acknowledged anything: stored
//! notifications of a topic nobody listened to yet are lost on a restart whenever a
//! listener of another topic has acknowledged newer ones (fixed in 2.9.16). On those
//! servers the transport creates the stream with limits retention instead, which the
//! check skips: notifications are kept for `notification_max_age` whether
//! acknowledged or not. A stream that already exists keeps its retention; on an
//! affected server an interest-retention stream gets one warning per transport
//! (upgrade the server, or delete the stream so that it is recreated).
//!
//! ## Clusters
//!
//! Name every server of a cluster in the URL (`nats://h1:4222,h2:4222,h3:4222`): the
//! client connects to one of them at random, learns the others from the server, and
//! moves to another when its server goes away. With `stream_replicas=3` the
//! notification stream and its durable consumers (which take the stream's count) keep
//! a copy on three servers: a notification `notify` returned `Ok` for is stored on two
//! of them at least, and survives the loss of one. The option applies when the
//! transport creates the stream. A stream that exists keeps its replica count whatever
//! the URL says (changing it copies or drops every stored notification, and
//! transports with different URLs would change it back and forth): a transport asking
//! for another count warns once, naming both; change it on the server (`nats stream
//! edit <stream> --replicas N`). A lone server refuses `stream_replicas` above 1 for
//! good ([`TransportError::Refused`], naming the option); a cluster with fewer
//! JetStream servers up than asked fails the first `notify` or `listen` with a
//! connection error naming the option (tried again on the next).
//!
//! What a failover costs, measured by `tests/nats_cluster.rs` in messaging-testkit
//! (three nats-server 2.9.10 nodes on one host, `stream_replicas=3`; calls, casts and
//! notifications from three processes to an RPC server and a notification listener in
//! a fourth; the node each client is connected to stopped with `SIGTERM`, then killed,
//! one node at a time, each back before the next fault; 7 runs, 42 faults): every
//! connection on the node is back on another within 0.01–0.24 s. Casts are
//! at-most-once: those being written when the connection went are lost (0–4 per
//! fault, all sent within 0.16 s after it), none elsewhere. A call whose request or
//! reply went with the node fails with its timeout (0 or 1 per fault); none hangs. No
//! notification JetStream acknowledged is lost, and none fails to be stored: while the
//! stream has no leader, `notify` keeps trying. Notifications flow again within
//! 0.04 s unless the node led the stream or the consumer: then within 0.12 s with
//! `SIGTERM` (the leader hands over), after 4.6–11.4 s (median 6.4 s) with `kill -9`
//! (nats-server 2.9 elects a new leader after 4 to 9 s without the old one). A
//! notification whose acknowledgement went with its node is delivered twice (0 or 1
//! per fault).
//!
//! ## Frames
//!
//! Every message body is a small JSON header (kind, context, codec, method, namespace,
//! version, call-monitor timeout, the caller's remaining wait, notification fields,
//! reply outcome) followed by the payload exactly as the codec encoded it. Frames
//! without the remaining wait (from the previous version) are read as before; the
//! previous version ignores it.
//!
//! # Delivery and faults
//!
//! Calls and casts are at-most-once (core NATS); a call gets its reply or fails with a
//! timeout, heartbeats keeping a monitored call alive exactly as on RabbitMQ. A cast
//! to a topic nobody serves at that moment is lost (RabbitMQ keeps it in the topic's
//! queue); [`SendOptions::at_least_once`] has no effect here. Every message core NATS
//! drops on this side is counted ([`NatsTransport::stats`]) and reported (see *Slow
//! consumers*); the crate docs compare each pattern's guarantee with RabbitMQ's. A request
//! to a topic nobody serves is not an error on the wire: the caller times out, as with
//! oslo. A call carries the time its caller still waits (never a clock reading, so
//! hosts need not agree on the time); the server takes that, less a transit allowance
//! of 25 ms (at most half of it), as the request's deadline from its arrival, and drops
//! a request still waiting in line when it passes: nobody would read the reply.
//! Notifications are at-least-once: acknowledged after dispatch, `Nak`ed on
//! requeue (redelivered at once). While a listener holds one (pulled and buffered, or
//! in its handler) it tells JetStream every third of `notification_ack_wait` that the
//! notification is in progress (`+WPI`), so none is redelivered while a listener has
//! it, however long that is; one a listener never settles (its connection dropped
//! with the notification on the way, its process died) is redelivered after
//! `notification_ack_wait`. When the connection drops, the client reconnects and
//! restores its subscriptions; JetStream pulls restart; stored notifications stay
//! stored.
//!
//! **Upgrading:** the previous version created consumers with an acknowledgement wait
//! of 300 s and never said a notification was in progress. A listener of this version
//! updates the consumers it uses to `notification_ack_wait` (one warning each, see
//! *Consumer settings*); a listener of the previous version still consuming from such
//! a consumer has a notification it holds for longer than that redelivered, a
//! duplicate. Upgrade a pool's listeners together, or set `notification_ack_wait=300`
//! until all are.
//!
//! Sending a notification returns once the server acknowledged storing it. An
//! attempt that fails in a way a reconnect may fix (no server reachable, no
//! acknowledgement within the client's request timeout, the connection dropped before
//! the acknowledgement came: that attempt ends when the client reconnects) is tried
//! again after 100 ms, doubling to 5 s, within the send's budget:
//! [`SendOptions::retry`] retries
//! (`None`: no limit) and its deadline ([`SendOptions::timeout`], 60 s when unset);
//! then it fails with the last error, or [`TransportError::TimedOut`]. Until a first
//! connection succeeds, each attempt is one connection attempt to each server of the
//! URL; after it, the client reconnects on its own and an attempt waits for the
//! acknowledgement. Every attempt of one notification carries the same
//! `Nats-Msg-Id`, so the server stores it once even if an attempt whose
//! acknowledgement was lost stored it (within the stream's two-minute duplicate
//! window). The frame is the same for oslo's `messaging` and `messagingv2` drivers
//! ([`SendOptions::notification_format`] is not written: there is no oslo envelope
//! on NATS), so a notifier with both sends two identical copies, each read alike.
//!
//! A message larger than `max_message_size` fails to send with
//! [`TransportError::MessageTooLarge`] before anything is published. One that arrives
//! larger (from a peer with a larger limit) is refused before it is decoded, with one
//! warning naming its size, the limit and its subject (never its payload): a request
//! or a reply is dropped (the call times out), a notification terminated (never
//! redelivered). A reply over the replying side's limit is not sent; its caller gets a
//! `MessageTooLarge` remote error at once instead.
//!
//! Wrong credentials (an authorization violation) fail the operation at once with
//! [`TransportError::Refused`], a permanent error; nothing retries them.
//!
//! ## Memory
//!
//! What a listener holds is bounded whatever its peers send. An RPC listener has
//! three subscriptions (topic, server, fanout); its task reads them all the time, on a
//! thread of its own, and moves what they receive into a buffer of at most `prefetch`
//! requests. While the buffer is full, each subscription keeps at most `max_pending`
//! requests (default `prefetch + 64`) waiting for room, oldest first; what arrives
//! beyond that is dropped on arrival, before it is decoded, and counted. So a server
//! slower than its callers holds at most `prefetch + 3 × max_pending` requests (4,192
//! with the defaults, 256 with `prefetch=16`), each at most the server's `max_payload`
//! (1 MiB by default). The client's own queue per subscription (async-nats's
//! `subscription_capacity`) is `max_pending + 2048`: room for what the connection
//! reads in one go while the listener's task catches up, empty unless that task is
//! starved of CPU; what overflows it is dropped by the client (and counted from its
//! slow-consumer events).
//!
//! A notification listener holds at most `prefetch` unacknowledged notifications per
//! consumer (one per target and priority; JetStream's `max_ack_pending`), queued or
//! buffered: a pull asks for no more than that, so none is ever dropped for a full
//! queue, whatever `max_pending`. The transport's reply subscription hands what it
//! receives to the waiting calls at once; it shares the client's queue size, so only
//! a burst of more than `max_pending + 2048` replies and heartbeats arriving while its
//! task is starved can overflow it (the calls whose replies were dropped time out).
//!
//! ## Slow consumers
//!
//! When an RPC subscription holds `max_pending` requests (its handlers are slower than
//! its callers), or the client's queue for a subscription is full, what arrives for it
//! is dropped. Each drop is counted in [`NatsTransport::stats`] (the hook for metrics:
//! `dropped_pending`, exact, per listener; `dropped_by_client`, from the client's
//! slow-consumer events, a lower bound as the client reports through a queue of 128
//! events) and reported: one warning at once, then at most one every 10 s with the
//! number dropped since the previous one, how many by each listener (named by its
//! subscription), `max_pending` and the total so far (and one for the rest when the
//! transport is dropped). Measured: 5,000 casts flooding a listener that takes one
//! every 2 ms (`prefetch=4`, `max_pending=17`): 29–58 handled, every other one counted
//! as dropped (sent − handled = `dropped()`), two warnings adding up to the same.
//! Calls and casts are at-most-once on core NATS by design: a dropped request is lost
//! (its call times out), a dropped reply makes its call time out.
//!
//! ## Stopping while the server is unreachable
//!
//! Stopping a listener and dropping the transport's last handle wait for the server at
//! most [`STOP_WAIT`] (2 s): for the unsubscriptions, the pulls' drains and the `Nak`s
//! to reach it, and for buffered publishes to be flushed on drop. They do not wait at
//! all for what needs a connection while the client is disconnected: its queued
//! commands are sent when it reconnects, if the transport is still there;
//! notifications not `Nak`ed are redelivered after the acknowledgement wait. An
//! acknowledgement never blocks the handler's thread. A send waits at most its timeout
//! (60 s without one) for room in the client's outgoing queue (2048 commands, full
//! once the server has been unreachable for a while) and then fails with a connection
//! error; `listen` waits at most `connect_timeout` for the server to confirm its
//! subscriptions.

mod frame;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod listener;
mod notify;
mod options;
mod security;
mod subjects;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use futures_lite::StreamExt;
use messaging_core::codec::CodecKind;
use messaging_core::dispatch::block_on;
use messaging_core::reply::{ReplyReceiver, reply_channel};
use messaging_core::{
    ListenOptions, Listener, Message, Priority, RemoteError, SendOptions, Subscription, Target,
    Transport, TransportError, TransportUrl, ids,
};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::OnceCell;

pub use listener::NatsListener;
use listener::Source;
pub(crate) use options::KNOWN as KNOWN_OPTIONS;
use options::Options;

/// Checks a URL's options as opening a transport does, without opening one.
pub(crate) fn check(url: &TransportUrl) -> Result<(), TransportError> {
    Options::from_url(url).map(drop)
}
use subjects::{MAX_NAME_LEN, MAX_SUBJECT_LEN, Subjects, fits};

use crate::pending::PendingCalls;

/// The NATS transport. Cloning shares its connection.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), messaging_core::TransportError> {
/// let transport = messaging_transports::open("nats://127.0.0.1:4222")?;
/// assert_eq!(transport.name(), "nats");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NatsTransport {
    inner: Arc<Inner>,
}

/// How often a notifier makes sure at most that the consumer storing its
/// notifications still exists (less if half of `consumer_ttl` is shorter).
const CONSUMER_RECHECK: Duration = Duration::from_secs(60);

/// The most that stopping a listener, or dropping the transport's last handle, waits
/// for the NATS server (to unsubscribe, drain pulls, give notifications back, flush);
/// nothing waits while the client is disconnected. See the module docs.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// How many messages the client queues per subscription beyond `max_pending`: room
/// for what its connection reads in one go (a 64 KiB read holds about 1,500 small
/// messages) while the consumer task, which drops and counts what exceeds
/// `max_pending` itself, catches up. Only a starved consumer task lets it fill.
const CLIENT_SLACK: usize = 2048;

/// How long a send waits for room in the client's outgoing queue when it has no
/// timeout of its own.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// At most one slow-consumer warning this often.
const SLOW_CONSUMER_REPORT: Duration = Duration::from_secs(10);

/// What a NATS transport has lost so far, counted since it opened: a snapshot from
/// [`NatsTransport::stats`], the hook for metrics. Each count only grows; subtract two
/// snapshots for a rate.
///
/// Core NATS (calls, casts, replies) is at-most-once: what is dropped here is lost
/// (a request's call times out, a reply's call times out). Notifications are never
/// dropped for a full queue (a pull asks for what fits) and are only counted in
/// [`rejected`](NatsStats::rejected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsStats {
    /// Requests RPC listeners dropped on arrival because their subscription already
    /// held `max_pending` requests waiting for room in the listener's buffer (its
    /// handlers are slower than its callers). Exact.
    pub dropped_pending: u64,
    /// Messages the NATS client dropped because a subscription's queue (`max_pending`)
    /// was full: its slow-consumer events, for any subscription of the transport
    /// (replies included). A lower bound: the client reports through a queue of 128
    /// events and drops events beyond it.
    pub dropped_by_client: u64,
    /// Requests received but never handed out because their RPC listener stopped
    /// (core NATS cannot give them back).
    pub dropped_on_stop: u64,
    /// Messages refused on arrival: larger than `max_message_size`, or unreadable
    /// (requests and oversized replies dropped, an unreadable reply failing its call,
    /// notifications terminated).
    pub rejected: u64,
    /// Slow-consumer warnings logged (each covers one burst of drops, see the module
    /// docs).
    pub warnings: u64,
}

impl NatsStats {
    /// Everything dropped for a full queue or a stop: `dropped_pending +
    /// dropped_by_client + dropped_on_stop` (not [`rejected`](NatsStats::rejected)).
    pub fn dropped(&self) -> u64 {
        self.dropped_pending + self.dropped_by_client + self.dropped_on_stop
    }
}

/// What the transport and its listeners dropped: counted, and reported in warnings,
/// one per burst.
pub(crate) struct Losses {
    /// The client's servers, to say which connection dropped them.
    servers: String,
    /// `max_pending`, for the warnings.
    max_pending: usize,
    dropped_pending: AtomicU64,
    dropped_by_client: AtomicU64,
    dropped_on_stop: AtomicU64,
    rejected: AtomicU64,
    warnings: AtomicU64,
    /// Drops not reported yet: by the client, and by listener (its subscription, and
    /// the count it bumps; kept until reported after the listener went).
    unreported_client: AtomicU64,
    unreported_pending: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    arrived: tokio::sync::Notify,
}

impl std::fmt::Debug for Losses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Losses")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Losses {
    fn new(servers: String, max_pending: usize) -> Losses {
        Losses {
            servers,
            max_pending,
            dropped_pending: AtomicU64::new(0),
            dropped_by_client: AtomicU64::new(0),
            dropped_on_stop: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            warnings: AtomicU64::new(0),
            unreported_client: AtomicU64::new(0),
            unreported_pending: Mutex::new(Vec::new()),
            arrived: tokio::sync::Notify::new(),
        }
    }

    fn stats(&self) -> NatsStats {
        NatsStats {
            dropped_pending: self.dropped_pending.load(Ordering::Relaxed),
            dropped_by_client: self.dropped_by_client.load(Ordering::Relaxed),
            dropped_on_stop: self.dropped_on_stop.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            warnings: self.warnings.load(Ordering::Relaxed),
        }
    }

    /// Counts one message the client dropped (its `SlowConsumer` event).
    fn client_dropped_one(&self) {
        self.dropped_by_client.fetch_add(1, Ordering::Relaxed);
        self.unreported_client.fetch_add(1, Ordering::Relaxed);
        self.arrived.notify_one();
    }

    /// A counter for the requests `listener` drops, to bump with
    /// [`pending_dropped_one`](Losses::pending_dropped_one).
    pub(crate) fn listener(&self, listener: &str) -> Arc<AtomicU64> {
        let counter = Arc::new(AtomicU64::new(0));
        self.unreported_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((listener.to_owned(), counter.clone()));
        counter
    }

    /// Counts one request a listener dropped on arrival: its subscription's pending
    /// queue was full. A few atomic operations: it runs once per message of a flood.
    pub(crate) fn pending_dropped_one(&self, unreported: &AtomicU64) {
        unreported.fetch_add(1, Ordering::Relaxed);
        self.dropped_pending.fetch_add(1, Ordering::Relaxed);
        self.arrived.notify_one();
    }

    /// Counts requests a stopping listener received but never handed out (it warns
    /// about them itself).
    pub(crate) fn dropped_on_stop(&self, count: u64) {
        self.dropped_on_stop.fetch_add(count, Ordering::Relaxed);
    }

    /// Counts one message refused on arrival (it was warned about).
    pub(crate) fn rejected_one(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Warns about the drops counted since the last warning, if any: how many, where,
    /// and how many in all so far.
    fn report(&self) {
        let mut by_listener = Vec::new();
        self.unreported_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(listener, counter)| {
                let dropped = counter.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    by_listener.push((listener.clone(), dropped));
                }
                // The listener still counts into it.
                Arc::strong_count(counter) > 1
            });
        let client = self.unreported_client.swap(0, Ordering::Relaxed);
        let pending: u64 = by_listener.iter().map(|(_, n)| n).sum();
        if pending + client == 0 {
            return;
        }
        self.warnings.fetch_add(1, Ordering::Relaxed);
        let listeners = by_listener
            .iter()
            .map(|(listener, n)| format!("{listener}: {n}"))
            .collect::<Vec<_>>()
            .join("; ");
        let stats = self.stats();
        tracing::warn!(
            dropped = pending + client,
            dropped_pending = pending,
            dropped_by_client = client,
            listeners = %listeners,
            max_pending = self.max_pending,
            total_dropped = stats.dropped_pending + stats.dropped_by_client,
            servers = %self.servers,
            "NATS dropped messages: a subscription's queue was full (its handlers are \
             slower than its publishers; see max_pending). Calls and casts are \
             at-most-once on core NATS: a dropped request is lost, a dropped reply's \
             call times out"
        );
    }

    /// Reports drops as they come: at once, then at most every
    /// [`SLOW_CONSUMER_REPORT`] with the count since the previous report.
    async fn reporter(self: Arc<Self>) {
        loop {
            self.arrived.notified().await;
            self.report();
            tokio::time::sleep(SLOW_CONSUMER_REPORT).await;
        }
    }
}

/// The send's budget for room in the client's outgoing queue.
fn send_timeout(options: &SendOptions) -> Duration {
    options.timeout.unwrap_or(SEND_TIMEOUT)
}

/// Publishes, waiting at most `limit` for room in the client's outgoing queue (full
/// while the client reconnects, once enough was sent meanwhile).
async fn publish(
    client: &async_nats::Client,
    subject: String,
    reply: Option<String>,
    body: bytes::Bytes,
    limit: Duration,
) -> Result<(), TransportError> {
    let publish = async {
        match reply {
            Some(reply) => client.publish_with_reply(subject, reply, body).await,
            None => client.publish(subject, body).await,
        }
    };
    match messaging_core::timer::timeout(limit, publish).await {
        Ok(published) => published.map_err(|e| connection_error("publishing", e)),
        Err(_) => Err(connection_error(
            "publishing",
            format!(
                "the NATS client's outgoing queue stayed full for {limit:?} (is the server \
                 unreachable?)"
            ),
        )),
    }
}

/// Whether a durable consumer is only created if missing (a notifier) or also given
/// this transport's settings if it exists with others (a listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ensure {
    Create,
    Apply,
}

struct Inner {
    url: TransportUrl,
    options: Options,
    subjects: Subjects,
    runtime: Option<Runtime>,
    handle: Handle,
    /// Where RPC listeners read their subscriptions (see [`Inner::pumps`]).
    pumps: std::sync::OnceLock<Runtime>,
    client: OnceCell<async_nats::Client>,
    replies: OnceCell<String>,
    pending: Arc<PendingCalls>,
    stream: OnceCell<stream::Stream>,
    /// The consumers this transport's notifier ensured exist, and when: it ensures
    /// them again after [`CONSUMER_RECHECK`] (the server may have removed one after
    /// `consumer_ttl` without a listener).
    consumers: Mutex<HashMap<String, Instant>>,
    /// Bumped each time the client (re)connects; notification pulls watch it.
    connected: tokio::sync::watch::Sender<u64>,
    /// What the transport and its listeners dropped, counted and reported.
    losses: Arc<Losses>,
    /// Whether storing notifications is failing (and that was logged once).
    notify_failing: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Publishes are buffered by the client: send them before going away (a
        // short-lived process would otherwise exit with its last casts unsent).
        // At most STOP_WAIT: a client that is reconnecting sends them once it is back,
        // which the server may never be.
        if let Some(client) = self.client.get().cloned() {
            let flushed = self.handle.spawn(async move { client.flush().await });
            let _ = block_on(messaging_core::timer::timeout(STOP_WAIT, flushed));
        }
        self.losses.report();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        if let Some(pumps) = self.pumps.take() {
            pumps.shutdown_background();
        }
    }
}

fn connection_error(what: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Connection {
        message: format!("{what}: {error}"),
        source: None,
    }
}

/// A failed connection: wrong credentials, and a TLS handshake that failed over a
/// certificate, are a permanent [`TransportError::Refused`] (retrying cannot help),
/// anything else a connection error. None names a secret: the client's errors say what
/// the server answered, never what was sent, and the credentials are described by kind
/// (and user name or file).
fn connect_error(error: async_nats::ConnectError, auth: &security::Auth) -> TransportError {
    match error.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation
        | async_nats::ConnectErrorKind::Authentication => TransportError::Refused {
            message: format!(
                "NATS refused the connection: {error} (authenticating with {})",
                auth.describe()
            ),
            source: None,
        },
        _ => match security::tls_refusal(&error) {
            Some(why) => TransportError::Refused {
                message: format!("cannot connect to NATS over TLS: {why}"),
                source: None,
            },
            None => connection_error("cannot connect to NATS", error),
        },
    }
}

/// Why the notification stream could not be created. A server that cannot keep
/// `stream_replicas` copies says so in terms of the option: a server outside a
/// cluster never can ([`TransportError::Refused`]); a cluster with fewer JetStream
/// servers up than that may once more are up (a connection error, which is retried).
fn stream_error(error: jetstream::context::CreateStreamError, replicas: usize) -> TransportError {
    use jetstream::ErrorCode;
    use jetstream::context::CreateStreamErrorKind;
    if let CreateStreamErrorKind::JetStream(answer) = error.kind() {
        let code = answer.error_code();
        if code == ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED {
            return TransportError::Refused {
                message: format!(
                    "stream_replicas={replicas} needs a JetStream cluster, and this NATS \
                     server is not clustered ({answer}): use stream_replicas=1"
                ),
                source: None,
            };
        }
        if code == ErrorCode::CLUSTER_NO_PEERS || code == ErrorCode::INSUFFICIENT_RESOURCES {
            return connection_error(
                "cannot create the notification stream",
                format!(
                    "stream_replicas={replicas} needs {replicas} JetStream servers of the \
                     cluster up, with room ({answer})"
                ),
            );
        }
    }
    connection_error("cannot create the notification stream", error)
}

/// The largest message body this transport sends or accepts: the URL's
/// `max_message_size`, and never more than the server's advertised `max_payload`.
pub(crate) fn message_limit(option: Option<usize>, client: &async_nats::Client) -> usize {
    let server = client.max_payload();
    option.map_or(server, |limit| limit.min(server))
}

/// Refuses a frame larger than `limit` before it is published.
fn check_size(body: &[u8], limit: usize) -> Result<(), TransportError> {
    if body.len() > limit {
        return Err(TransportError::MessageTooLarge {
            size: body.len(),
            limit,
        });
    }
    Ok(())
}

/// Whether a nats-server of this version, when it starts, purges from an
/// interest-retention stream the messages stored for a consumer that has not
/// acknowledged anything yet. 2.9.7 to 2.9.15 check such streams for "orphaned"
/// messages on startup and take the lowest acknowledgement floor of the stream's
/// consumers, but a consumer with no acknowledgement (floor 0) resets that minimum
/// instead of lowering it: depending on the order in which the server iterates its
/// consumers, everything below another consumer's floor is purged, including
/// notifications stored for a listener that does not exist yet. 2.9.16 replaced the
/// check with a per-consumer one.
pub(crate) fn purges_unacknowledged_on_restart(version: &str) -> bool {
    let mut numbers = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    matches!(
        (numbers.next(), numbers.next(), numbers.next()),
        (Some(Ok(2)), Some(Ok(9)), Some(Ok(7..=15)))
    )
}

impl Inner {
    /// The runtime RPC listeners read their subscriptions on: a thread of its own,
    /// started with the first RPC listener. On the client's runtime a listener's task,
    /// woken by the connection's task each time a message arrives, waits in that
    /// worker's next-task slot, which no other worker takes, for as long as the
    /// connection's task keeps reading: a flood then overflowed the client's queue
    /// (which counts its drops only as lossy events) before the listener could drop
    /// and count them itself.
    fn pumps(&self) -> Result<Handle, TransportError> {
        if let Some(pumps) = self.pumps.get() {
            return Ok(pumps.handle().clone());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("messaging-nats-listen")
            .enable_all()
            .build()
            .map_err(|e| TransportError::other(format!("cannot start a NATS runtime: {e}")))?;
        // Another listener may have started one meanwhile: the first one set is used.
        if let Err(unused) = self.pumps.set(runtime) {
            unused.shutdown_background();
        }
        Ok(self
            .pumps
            .get()
            .map(|r| r.handle().clone())
            .unwrap_or_else(|| self.handle.clone()))
    }

    async fn client(&self) -> Result<async_nats::Client, TransportError> {
        self.client
            .get_or_try_init(|| async {
                let connected = self.connected.clone();
                let losses = self.losses.clone();
                let reporter = losses.clone();
                let mut options = async_nats::ConnectOptions::new()
                    .event_callback(move |event| {
                        match event {
                            async_nats::Event::Connected => connected.send_modify(|n| *n += 1),
                            async_nats::Event::SlowConsumer(_) => losses.client_dropped_one(),
                            _ => {}
                        }
                        std::future::ready(())
                    })
                    // Bounds what a subscription holds (see the module docs); a pull
                    // never asks for more than fits.
                    .subscription_capacity(self.options.max_pending + CLIENT_SLACK)
                    .name(format!("messaging-rs:{}", std::process::id()))
                    .connection_timeout(self.options.connect_timeout);
                if let Some(tls) = &self.options.tls {
                    options = options
                        .require_tls(true)
                        .tls_client_config(tls.config.clone());
                }
                options = self.options.auth.apply(options)?;
                let servers: Vec<async_nats::ServerAddr> = self
                    .options
                    .servers
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        TransportError::other(format!("invalid NATS server address: {e}"))
                    })?;
                let client = options
                    .connect(servers)
                    .await
                    .map_err(|e| connect_error(e, &self.options.auth))?;
                // Once per transport: a failed attempt leaves no task behind.
                tokio::spawn(reporter.reporter());
                Ok(client)
            })
            .await
            .cloned()
    }

    async fn jetstream(&self) -> Result<(jetstream::Context, stream::Stream), TransportError> {
        let client = self.client().await?;
        let context = jetstream::new(client.clone());
        let stream = self
            .stream
            .get_or_try_init(|| async {
                let version = client.server_info().version;
                let purges = purges_unacknowledged_on_restart(&version);
                let stream = context
                    .get_or_create_stream(stream::Config {
                        name: self.subjects.stream(),
                        subjects: vec![self.subjects.stream_subjects()],
                        retention: if purges {
                            stream::RetentionPolicy::Limits
                        } else {
                            stream::RetentionPolicy::Interest
                        },
                        storage: stream::StorageType::File,
                        max_age: self.options.max_age,
                        num_replicas: self.options.stream_replicas,
                        ..stream::Config::default()
                    })
                    .await
                    .map_err(|e| stream_error(e, self.options.stream_replicas))?;
                // Two prefixes can share a stream name (`a.b` and `a_2Eb`): never
                // store, or consume, one's notifications in the other's stream.
                let stored = &stream.cached_info().config.subjects;
                if !stored.contains(&self.subjects.stream_subjects()) {
                    return Err(TransportError::Refused {
                        message: format!(
                            "the stream {} stores {stored:?}, not {}: another subject_prefix \
                             maps to the same stream name; choose a prefix that does not",
                            self.subjects.stream(),
                            self.subjects.stream_subjects()
                        ),
                        source: None,
                    });
                }
                // An existing stream keeps its replica count: see "Clusters".
                let replicas = stream.cached_info().config.num_replicas.max(1);
                if replicas != self.options.stream_replicas {
                    tracing::warn!(
                        stream = %self.subjects.stream(),
                        replicas,
                        stream_replicas = self.options.stream_replicas,
                        "the notification stream exists with another replica count than \
                         this transport's stream_replicas and keeps its own; change it on \
                         the server (`nats stream edit <stream> --replicas N`)"
                    );
                }
                let retention = stream.cached_info().config.retention;
                if purges && retention == stream::RetentionPolicy::Interest {
                    tracing::warn!(
                        stream = %self.subjects.stream(),
                        server_version = %version,
                        "this nats-server loses stored notifications on restart \
                         (fixed in 2.9.16) and the stream has interest retention: \
                         upgrade the server, or delete the stream so that it is \
                         recreated with limits retention"
                    );
                }
                Ok::<_, TransportError>(stream)
            })
            .await?
            .clone();
        Ok((context, stream))
    }

    /// The durable consumer `name`, created if missing; with [`Ensure::Apply`], one
    /// that exists with another `max_ack_pending` or `inactive_threshold` is updated to
    /// this transport's `prefetch` and `consumer_ttl`, with a warning naming both.
    async fn consumer(
        &self,
        stream: &stream::Stream,
        name: String,
        subject: String,
        ensure: Ensure,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, TransportError> {
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject,
            ack_policy: consumer::AckPolicy::Explicit,
            // A new consumer starts with what is published from now on, as a
            // queue declared now does: on a limits-retention stream it must not
            // replay the stream's history.
            deliver_policy: consumer::DeliverPolicy::New,
            ack_wait: self.options.ack_wait,
            max_ack_pending: self.options.prefetch as i64,
            inactive_threshold: self.options.consumer_ttl,
            ..consumer::pull::Config::default()
        };
        let existing = stream
            .get_or_create_consumer(&name, config.clone())
            .await
            .map_err(|e| connection_error(&format!("cannot create consumer {name}"), e))?;
        let had = &existing.cached_info().config;
        let (max_ack_pending, inactive_threshold, ack_wait) =
            (had.max_ack_pending, had.inactive_threshold, had.ack_wait);
        if ensure == Ensure::Create
            || (max_ack_pending, inactive_threshold, ack_wait)
                == (
                    config.max_ack_pending,
                    config.inactive_threshold,
                    config.ack_wait,
                )
        {
            return Ok(existing);
        }
        let (prefetch, consumer_ttl, notification_ack_wait) = (
            config.max_ack_pending,
            config.inactive_threshold,
            config.ack_wait,
        );
        // JetStream updates these on a create with the same name and settings otherwise.
        match stream.create_consumer(config).await {
            Ok(updated) => {
                tracing::warn!(
                    consumer = %name,
                    max_ack_pending,
                    prefetch,
                    ?inactive_threshold,
                    ?consumer_ttl,
                    ?ack_wait,
                    ?notification_ack_wait,
                    "the durable consumer had another max_ack_pending, inactive_threshold or \
                     ack_wait; updated to this listener's prefetch, consumer_ttl and \
                     notification_ack_wait"
                );
                Ok(updated)
            }
            Err(error) => {
                tracing::warn!(
                    consumer = %name,
                    max_ack_pending,
                    prefetch,
                    ?inactive_threshold,
                    ?consumer_ttl,
                    ?ack_wait,
                    ?notification_ack_wait,
                    %error,
                    "the durable consumer has another max_ack_pending, inactive_threshold or \
                     ack_wait than this listener's prefetch, consumer_ttl and \
                     notification_ack_wait, and the server did not update it; using it as it is"
                );
                Ok(existing)
            }
        }
    }

    /// The transport's reply subscription, started on first use: routes each reply to
    /// its call by the last token of its subject.
    async fn inbox(&self) -> Result<String, TransportError> {
        self.replies
            .get_or_try_init(|| async {
                let client = self.client().await?;
                let prefix = client.new_inbox();
                let mut subscriber = client
                    .subscribe(format!("{prefix}.*"))
                    .await
                    .map_err(|e| connection_error("cannot subscribe to replies", e))?;
                let pending = self.pending.clone();
                let losses = self.losses.clone();
                let option = self.options.max_message_size;
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        if message.status.is_some() {
                            continue; // e.g. "no responders": the caller times out, as with oslo
                        }
                        let limit = message_limit(option, &client);
                        if message.payload.len() > limit {
                            tracing::warn!(
                                size = message.payload.len(),
                                limit,
                                subject = %message.subject,
                                "dropping a reply larger than max_message_size; its call will time out"
                            );
                            losses.rejected_one();
                            continue;
                        }
                        let Some(id) = message.subject.rsplit('.').next() else {
                            continue;
                        };
                        match frame::decode_reply(&message.payload) {
                            Ok(Some(outcome)) => pending.deliver(id, Some(outcome), true),
                            Ok(None) => pending.deliver(id, None, false),
                            // The subject says whose reply it is: the call ends with an
                            // error now rather than waiting out its timeout.
                            Err(error) => {
                                tracing::warn!(%error, "an unreadable reply: failing its call");
                                losses.rejected_one();
                                let unreadable = RemoteError::new(
                                    "RemoteError",
                                    "",
                                    format!("the reply could not be read: {error}"),
                                );
                                pending.deliver(id, Some(Err(unreadable)), true);
                            }
                        }
                    }
                });
                Ok(prefix)
            })
            .await
            .cloned()
    }
}

impl NatsTransport {
    /// What this transport has dropped so far (see [`NatsStats`]): the counts behind
    /// the slow-consumer warnings, for metrics. Cheap: a few atomic loads.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use messaging_transports::nats::NatsTransport;
    /// # fn main() -> Result<(), messaging_core::TransportError> {
    /// let url = "nats://127.0.0.1:4222?max_pending=256".parse().unwrap();
    /// let transport = NatsTransport::open(&url)?;
    /// // ... listeners run ...
    /// let stats = transport.stats();
    /// if stats.dropped() > 0 {
    ///     eprintln!("{} requests lost to slow handlers", stats.dropped());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> NatsStats {
        self.inner.losses.stats()
    }

    /// A transport for the URL; see the module docs. The connection is opened on first
    /// use, so this fails only on a malformed URL.
    pub fn open(url: &TransportUrl) -> Result<Self, TransportError> {
        let options = Options::from_url(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("messaging-nats")
            .enable_all()
            .build()
            .map_err(|e| TransportError::other(format!("cannot start the NATS runtime: {e}")))?;
        Ok(NatsTransport {
            inner: Arc::new(Inner {
                url: url.clone(),
                subjects: Subjects::new(&options.prefix),
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
                pumps: std::sync::OnceLock::new(),
                client: OnceCell::new(),
                replies: OnceCell::new(),
                pending: Arc::default(),
                stream: OnceCell::new(),
                consumers: Mutex::new(HashMap::new()),
                connected: tokio::sync::watch::Sender::new(0),
                losses: Arc::new(Losses::new(options.servers.join(","), options.max_pending)),
                notify_failing: AtomicBool::new(false),
                options,
            }),
        })
    }

    fn exchange<'a>(&'a self, target: &'a Target) -> &'a str {
        target
            .exchange
            .as_deref()
            .unwrap_or(&self.inner.options.control_exchange)
    }

    /// Where a cast or call to `target` goes; [`TransportError::InvalidTarget`] if that
    /// subject would be longer than NATS takes.
    fn subject(&self, target: &Target) -> Result<String, TransportError> {
        let (exchange, topic) = (
            self.exchange(target),
            target.topic.as_deref().unwrap_or_default(),
        );
        let subject = if target.fanout {
            self.inner.subjects.fanout(exchange, topic)
        } else if let Some(server) = &target.server {
            self.inner.subjects.server(exchange, topic, server)
        } else {
            self.inner.subjects.topic(exchange, topic)
        };
        fits("subject", subject, MAX_SUBJECT_LEN, target)
    }

    /// The subject and durable consumer of `target`'s notifications of `priority` for
    /// `pool`, or [`TransportError::InvalidTarget`] if either is too long for NATS.
    fn notification_names(
        &self,
        target: &Target,
        priority: Priority,
        pool: Option<&str>,
    ) -> Result<(String, String), TransportError> {
        let (exchange, topic) = (
            self.exchange(target),
            target.topic.as_deref().unwrap_or_default(),
        );
        let subjects = &self.inner.subjects;
        Ok((
            fits(
                "notification subject",
                subjects.notification(exchange, topic, priority),
                MAX_SUBJECT_LEN,
                target,
            )?,
            fits(
                "consumer name",
                subjects.consumer(exchange, topic, priority, pool),
                MAX_NAME_LEN,
                target,
            )?,
        ))
    }

    async fn run<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T, TransportError>> + Send + 'static,
    ) -> Result<T, TransportError> {
        self.inner
            .handle
            .spawn(future)
            .await
            .map_err(|e| TransportError::other(format!("the NATS task failed: {e}")))?
    }
}

#[async_trait]
impl Transport for NatsTransport {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn url(&self) -> &TransportUrl {
        &self.inner.url
    }

    fn codec(&self) -> CodecKind {
        self.inner.options.codec
    }

    async fn cast(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        target.validate_for_send()?;
        let (inner, subject) = (self.inner.clone(), self.subject(target)?);
        let body = frame::encode_message(&message, None, None);
        let limit = send_timeout(options);
        // Once connected, a publish is a send on the client's command channel, which
        // works from any thread: no hand-off to the runtime.
        if let Some(client) = self.inner.client.get() {
            check_size(
                &body,
                message_limit(self.inner.options.max_message_size, client),
            )?;
            return publish(client, subject, None, body, limit).await;
        }
        self.run(async move {
            let client = inner.client().await?;
            check_size(
                &body,
                message_limit(inner.options.max_message_size, &client),
            )?;
            publish(&client, subject, None, body, limit).await
        })
        .await
    }

    async fn call(
        &self,
        target: &Target,
        message: Message,
        options: &SendOptions,
    ) -> Result<ReplyReceiver, TransportError> {
        target.validate_for_call()?;
        let started = Instant::now();
        let (inner, subject) = (self.inner.clone(), self.subject(target)?);
        let (client, inbox) = match (self.inner.client.get(), self.inner.replies.get()) {
            (Some(client), Some(inbox)) => (client.clone(), inbox.clone()),
            _ => {
                // First call: connect and subscribe to replies on the runtime.
                let inner = inner.clone();
                self.run(async move {
                    let inbox = inner.inbox().await?;
                    Ok((inner.client().await?, inbox))
                })
                .await?
            }
        };
        // The caller's timeout travels as the time it still waits, measured now: the
        // server turns it into a deadline when the request arrives and drops the
        // request if it is still waiting in line when that passes.
        let left = options.timeout.map(|t| t.saturating_sub(started.elapsed()));
        let body = frame::encode_message(&message, options.call_monitor_timeout, left);
        check_size(
            &body,
            message_limit(inner.options.max_message_size, &client),
        )?;
        let id = ids::hex_id();
        let (sender, receiver) = reply_channel();
        inner.pending.expect(id.clone(), sender);
        // Forgets the call unless it was published (also if this future is dropped).
        struct Unsent<'a>(&'a PendingCalls, Option<&'a str>);
        impl Drop for Unsent<'_> {
            fn drop(&mut self) {
                if let Some(id) = self.1 {
                    self.0.forget(id);
                }
            }
        }
        let mut unsent = Unsent(&inner.pending, Some(&id));
        let reply = format!("{inbox}.{id}");
        publish(&client, subject, Some(reply), body, send_timeout(options)).await?;
        unsent.1 = None;
        Ok(receiver)
    }

    /// Returns once the server stored the notification (in the stream, for the
    /// `<topic>.<priority>` consumer the notifier creates); retried for up to 60 s.
    async fn notify(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
    ) -> Result<(), TransportError> {
        self.notify_with(target, priority, message, &SendOptions::default())
            .await
    }

    /// [`notify`](Transport::notify), retried within the options' timeout (60 s when
    /// none) and retries (see Delivery and faults). NATS frames are this transport's
    /// own: the notification format is not written.
    async fn notify_with(
        &self,
        target: &Target,
        priority: Priority,
        message: Message,
        options: &SendOptions,
    ) -> Result<(), TransportError> {
        self.send_notification(target, priority, message, options)
            .await
    }

    fn listen(
        &self,
        subscription: &Subscription,
        options: &ListenOptions,
    ) -> Result<Box<dyn Listener>, TransportError> {
        subscription.validate()?;
        let inner = self.inner.clone();
        let prefetch = self.inner.options.prefetch;
        if options.batch_size > prefetch {
            tracing::warn!(
                batch_size = options.batch_size,
                prefetch,
                "batches are capped by the consumer's prefetch (max_ack_pending)"
            );
        }
        let connect_timeout = self.inner.options.connect_timeout;
        // Every name is composed and checked before anything is sent.
        let source = match subscription {
            Subscription::Rpc(target) => {
                let exchange = self.exchange(target);
                let topic = target.topic.as_deref().unwrap_or_default();
                let server = target.server.as_deref().unwrap_or_default();
                let subjects = &self.inner.subjects;
                let subject =
                    |what: &str, subject: String| fits(what, subject, MAX_SUBJECT_LEN, target);
                let topic_subject = subject("subject", subjects.topic(exchange, topic))?;
                let group = subject("queue group", subjects.group(exchange, topic))?;
                let server_subject = subject("subject", subjects.server(exchange, topic, server))?;
                let fanout_subject = subject("subject", subjects.fanout(exchange, topic))?;
                block_on(self.inner.handle.spawn(async move {
                    let client = inner.client().await?;
                    let subscribe_error =
                        |e: async_nats::SubscribeError| connection_error("subscribing", e);
                    let subscribers = vec![
                        client
                            .queue_subscribe(topic_subject, group)
                            .await
                            .map_err(subscribe_error)?,
                        client
                            .subscribe(server_subject)
                            .await
                            .map_err(subscribe_error)?,
                        client
                            .subscribe(fanout_subject)
                            .await
                            .map_err(subscribe_error)?,
                    ];
                    // The server confirms them, within connect_timeout: a reconnecting
                    // client would otherwise wait for as long as the server is away.
                    tokio::time::timeout(connect_timeout, client.flush())
                        .await
                        .map_err(|_| {
                            connection_error(
                                "subscribing",
                                format!(
                                    "the NATS server did not confirm within {connect_timeout:?}"
                                ),
                            )
                        })?
                        .map_err(|e| connection_error("subscribing", e))?;
                    Ok::<_, TransportError>(Source::Rpc(subscribers))
                }))
            }
            Subscription::Notifications {
                targets,
                priorities,
                pool,
            } => {
                let mut bindings = Vec::new();
                for target in targets {
                    for priority in priorities {
                        bindings.push(self.notification_names(
                            target,
                            *priority,
                            pool.as_deref(),
                        )?);
                    }
                }
                block_on(self.inner.handle.spawn(async move {
                    let (_, stream) = inner.jetstream().await?;
                    let mut consumers = Vec::new();
                    for (subject, name) in bindings {
                        consumers.push(
                            inner
                                .consumer(&stream, name, subject, Ensure::Apply)
                                .await?,
                        );
                    }
                    Ok::<_, TransportError>(Source::Notifications(consumers))
                }))
            }
            other => {
                return Err(TransportError::other(format!(
                    "unsupported subscription {other}"
                )));
            }
        }
        .map_err(|e| TransportError::other(format!("the NATS task failed: {e}")))??;
        let client = block_on(self.inner.handle.spawn({
            let inner = self.inner.clone();
            async move { inner.client().await }
        }))
        .map_err(|e| TransportError::other(format!("the NATS task failed: {e}")))??;
        let consumer = match &source {
            Source::Rpc(_) => self.inner.pumps()?,
            Source::Notifications(_) => self.inner.handle.clone(),
        };
        Ok(Box::new(NatsListener::start(
            source,
            client,
            listener::FromTransport {
                runtime: self.inner.handle.clone(),
                consumer_runtime: consumer,
                connected: self.inner.connected.subscribe(),
                losses: self.inner.losses.clone(),
            },
            options,
            listener::Limits {
                prefetch,
                max_message_size: self.inner.options.max_message_size,
                max_pending: self.inner.options.max_pending,
                ack_wait: self.inner.options.ack_wait,
            },
            subscription.to_string(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_that_purge_unacknowledged_notifications_on_restart() {
        for version in ["2.9.7", "2.9.10", "v2.9.15", "2.9.15-beta.1"] {
            assert!(purges_unacknowledged_on_restart(version), "{version}");
        }
        for version in [
            "2.9.6", "2.9.16", "2.10.0", "2.11.4", "3.9.10", "", "garbage",
        ] {
            assert!(!purges_unacknowledged_on_restart(version), "{version}");
        }
    }

    #[test]
    fn wrong_credentials_are_refused_and_other_failures_are_connection_errors() {
        let refused = connect_error(
            async_nats::ConnectError::new(async_nats::ConnectErrorKind::AuthorizationViolation),
            &security::Auth::Anonymous,
        );
        assert!(
            matches!(refused, TransportError::Refused { .. }) && refused.is_permanent(),
            "{refused:?}"
        );
        let down = connect_error(
            async_nats::ConnectError::new(async_nats::ConnectErrorKind::Io),
            &security::Auth::Anonymous,
        );
        assert!(
            matches!(down, TransportError::Connection { .. }),
            "{down:?}"
        );
    }

    /// Names that compose to more than NATS takes are refused before anything is
    /// sent: the URL points at a closed port, so reaching the network would be a
    /// connection error instead. Before, they went to the server, which refused a long
    /// consumer name after connecting and dropped the connection over a long subject.
    #[test]
    fn composed_names_too_long_for_nats_are_invalid_targets_before_connecting() {
        let url = TransportUrl::parse("nats://127.0.0.1:1?connect_timeout=1").unwrap();
        let transport = NatsTransport::open(&url).unwrap();
        let dots = ".".repeat(255); // each dot is three bytes in a subject token
        let long_subject = Target::new(dots.clone())
            .with_exchange(dots.clone())
            .with_server(dots.clone());
        let long_consumer = Target::new("t".repeat(240));
        let invalid = |what: &str, result: Result<(), TransportError>, part: &str| match result {
            Err(TransportError::InvalidTarget(e)) => {
                assert!(e.reason().contains(part), "{what}: {e}")
            }
            other => panic!("{what}: {other:?}"),
        };
        let message = || Message::new("m");
        let send = SendOptions::default();
        invalid(
            "cast",
            block_on(transport.cast(&long_subject, message(), &send)),
            "subject would be 2308 bytes long (at most 2000)",
        );
        invalid(
            "call",
            block_on(transport.call(&long_subject, message(), &send)).map(drop),
            "subject would be 2308 bytes long",
        );
        invalid(
            "notify",
            block_on(transport.notify(&long_consumer, Priority::Info, message())),
            "consumer name would be 259 bytes long (at most 255)",
        );
        let listen = |subscription: Subscription| {
            transport
                .listen(&subscription, &ListenOptions::default())
                .map(drop)
        };
        invalid(
            "listen rpc",
            listen(Subscription::Rpc(long_subject.clone())),
            "bytes long (at most 2000)",
        );
        invalid(
            "listen notifications",
            listen(Subscription::Notifications {
                targets: vec![Target::new("t"), Target::new("t".repeat(200))],
                priorities: vec![Priority::Info],
                pool: Some("p".repeat(60)),
            }),
            "consumer name would be 278 bytes long",
        );
        // Within the limits, the same calls do reach for the (closed) port.
        let reached = block_on(transport.cast(&Target::new("t"), message(), &send));
        assert!(
            matches!(reached, Err(TransportError::Connection { .. })),
            "{reached:?}"
        );
    }
}
