//! RabbitMQ hardening (issue 9): confirmed casts, reply queues that are gone, names
//! too long for AMQP, wildcards, refused credentials, broker state left behind, the
//! message size limit and the callers' deadlines. Runs when `MESSAGING_TEST_RABBIT_URL`
//! is set; otherwise each test says it was skipped. The broker restart is in
//! `rabbit_faults.rs`. Tests that measure print what they measured to stderr.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient, RpcError};
use messaging_core::{
    Context, Priority, ServerError, Target, TransportError, ids, notify::NotifyError,
};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{LogCapture, ServerThread, within};
use serde::{Deserialize, Serialize};
use tracing::Level;

fn url() -> Option<String> {
    let Ok(url) = std::env::var("MESSAGING_TEST_RABBIT_URL") else {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return None;
    };
    Some(messaging_testkit::with_option(&url, "queue_ttl", "600"))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &ids::hex_id()[..10])
}

#[derive(Serialize, Deserialize)]
struct Value {
    n: u64,
}

/// A server on `topic` (server `s1`) whose `record` method remembers every `n`.
fn recording_server(url: &str, topic: &str) -> (ServerThread, Arc<Mutex<Vec<u64>>>) {
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let recorded = seen.clone();
    let endpoint = Endpoint::new().method("record", move |_ctx, v: Value| {
        recorded.lock().unwrap().push(v.n);
        Ok::<_, HandlerError>(v.n)
    });
    let server = rpc::server(
        messaging_transports::open(url).unwrap(),
        Target::new(topic).with_server("s1"),
        vec![endpoint],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    (ServerThread::spawn(server).unwrap(), seen)
}

fn wait_for(seen: &Mutex<Vec<u64>>, count: usize, limit: Duration) {
    let started = Instant::now();
    while seen.lock().unwrap().len() < count {
        assert!(
            started.elapsed() < limit,
            "only {} of {count} handled",
            seen.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls every future until all are done (a minimal `join_all`).
struct JoinAll<F: Future> {
    futures: Vec<Option<Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
}

impl<F: Future> JoinAll<F> {
    fn new(futures: impl IntoIterator<Item = F>) -> Self {
        let futures: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
        let outputs = futures.iter().map(|_| None).collect();
        JoinAll { futures, outputs }
    }
}

impl<F: Future> Future for JoinAll<F>
where
    F::Output: Unpin,
{
    type Output = Vec<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut pending = false;
        for (slot, output) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(this.outputs.iter_mut().map(|o| o.take().unwrap()).collect())
        }
    }
}

/// What a cast costs sequentially (a blocking caller), from several threads, and from
/// one async caller with many in flight: casts are confirmed by the broker before they
/// return, and confirms of concurrent casts are awaited together (pipelined), not one
/// after the other.
#[test]
fn concurrent_casts_are_pipelined() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(120), "cast cost", move || {
        const N: u64 = 400;
        let topic = unique("hard_cost");
        let (running, seen) = recording_server(&url, &topic);
        let client = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(topic.clone()),
        );
        // Warm up: connections and declarations.
        client
            .cast_blocking(&Context::new(), "record", &Value { n: 0 })
            .unwrap();
        wait_for(&seen, 1, Duration::from_secs(10));

        let started = Instant::now();
        for n in 0..N {
            client
                .cast_blocking(&Context::new(), "record", &Value { n })
                .unwrap();
        }
        let sequential = started.elapsed();
        wait_for(&seen, 1 + N as usize, Duration::from_secs(30));

        let started = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let client = client.clone();
                std::thread::spawn(move || {
                    for n in 0..N / 8 {
                        client
                            .cast_blocking(&Context::new(), "record", &Value { n: t * N + n })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let threaded = started.elapsed();
        wait_for(&seen, 1 + 2 * N as usize, Duration::from_secs(30));

        let started = Instant::now();
        let casts = (0..N).map(|n| {
            let client = client.clone();
            async move { client.cast(&Context::new(), "record", &Value { n }).await }
        });
        for result in block_on(JoinAll::new(casts)) {
            result.unwrap();
        }
        let joined = started.elapsed();
        wait_for(&seen, 1 + 3 * N as usize, Duration::from_secs(30));

        let per = |d: Duration| d / N as u32;
        eprintln!(
            "measured: {N} casts: sequential {sequential:?} ({:?} each), 8 threads {threaded:?} ({:?} each), \
             one async caller with {N} in flight {joined:?} ({:?} each)",
            per(sequential),
            per(threaded),
            per(joined)
        );
        assert_eq!(seen.lock().unwrap().len(), 1 + 3 * N as usize);
        assert!(
            joined < sequential,
            "casts in flight together are confirmed together, not one after the other"
        );
        running.stop_and_wait().unwrap();
    });
}

// ===== raw AMQP =====

/// The AMQP URI of the test broker (a `rabbit://user:pass@host:port/` URL).
fn amqp_uri() -> String {
    let url = std::env::var("MESSAGING_TEST_RABBIT_URL").expect("the broker URL");
    let uri = url.replacen("rabbit://", "amqp://", 1);
    if uri.ends_with('/') {
        format!("{uri}%2F")
    } else {
        uri
    }
}

/// Raw AMQP, for what the transport never sends itself (requests from other clients)
/// and for looking at the broker's state.
struct Raw {
    runtime: tokio::runtime::Runtime,
    connection: Connection,
    channel: lapin::Channel,
}

impl Raw {
    fn connect() -> Raw {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (connection, channel) = runtime.block_on(async {
            let connection = Connection::connect(&amqp_uri(), ConnectionProperties::default())
                .await
                .unwrap();
            let channel = connection.create_channel().await.unwrap();
            (connection, channel)
        });
        Raw {
            runtime,
            connection,
            channel,
        }
    }

    fn publish(&self, exchange: &str, routing_key: &str, body: &[u8], expiration_ms: Option<u64>) {
        self.runtime.block_on(async {
            let mut properties =
                BasicProperties::default().with_content_type("application/json".into());
            if let Some(ms) = expiration_ms {
                properties = properties.with_expiration(ms.to_string().into());
            }
            self.channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await
                .unwrap()
                .await
                .unwrap();
        })
    }

    /// How many messages a queue holds, or `None` if it does not exist (a passive
    /// declare, on a channel of its own: the broker closes it when the queue is
    /// missing).
    fn messages_in(&self, queue: &str) -> Option<u32> {
        self.runtime.block_on(async {
            let channel = self.connection.create_channel().await.unwrap();
            let found = channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            found.ok().map(|q| q.message_count())
        })
    }

    /// Declares a queue (as oslo does: not durable) bound to `exchange` with `key`.
    fn bind_queue(&self, queue: &str, exchange: &str, key: &str) {
        self.runtime.block_on(async {
            self.channel
                .exchange_declare(
                    exchange.into(),
                    lapin::ExchangeKind::Topic,
                    lapin::options::ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let mut args = FieldTable::default();
            args.insert(
                "x-expires".into(),
                lapin::types::AMQPValue::LongInt(600_000),
            );
            self.channel
                .queue_declare(queue.into(), QueueDeclareOptions::default(), args)
                .await
                .unwrap();
            self.channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    key.into(),
                    lapin::options::QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        })
    }

    /// Takes one message from a queue, waiting up to `limit` for one.
    fn get(&self, queue: &str, limit: Duration) -> Option<Vec<u8>> {
        let started = Instant::now();
        loop {
            let got = self.runtime.block_on(async {
                self.channel
                    .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
            });
            if let Some(message) = got {
                return Some(message.delivery.data.clone());
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An oslo request (a call when `reply` gives `_msg_id` and `_reply_q`) as another
/// client would send it.
fn oslo_request(method: &str, args: serde_json::Value, reply: Option<(&str, &str)>) -> Vec<u8> {
    let mut message = serde_json::json!({
        "method": method,
        "args": args,
        "version": "1.0",
        "_unique_id": ids::hex_id(),
    });
    if let Some((msg_id, reply_q)) = reply {
        message["_msg_id"] = msg_id.into();
        message["_reply_q"] = reply_q.into();
        message["_timeout"] = serde_json::Value::Null;
    }
    serde_json::json!({
        "oslo.version": "2.0",
        "oslo.message": message.to_string(),
    })
    .to_string()
    .into_bytes()
}

/// Every captured event that mentions `marker` in its message or a field, and how
/// many bytes they make.
fn events_about(logs: &LogCapture, marker: &str) -> Vec<messaging_testkit::CapturedEvent> {
    logs.events()
        .into_iter()
        .filter(|e| e.message.contains(marker) || e.fields.iter().any(|(_, v)| v.contains(marker)))
        .collect()
}

fn bytes_of(events: &[messaging_testkit::CapturedEvent]) -> usize {
    events
        .iter()
        .map(|e| {
            e.message.len()
                + e.fields
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
        })
        .sum()
}

/// Waits until `condition` holds, or panics after `limit`.
fn eventually(what: &str, limit: Duration, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server on `topic` (server `s1`) on `url`: `echo` returns its argument; `big`
/// returns a string of `n` bytes, each `x`.
fn echo_server(url: &str, topic: &str, calls: Arc<Mutex<Vec<String>>>) -> ServerThread {
    #[derive(Deserialize)]
    struct Size {
        n: usize,
    }
    #[derive(Deserialize)]
    struct Text {
        text: String,
    }
    let big_calls = calls.clone();
    let endpoint = Endpoint::new()
        .method("echo", move |_ctx, t: Text| {
            calls.lock().unwrap().push(t.text.clone());
            Ok::<_, HandlerError>(t.text)
        })
        .method("big", move |_ctx, s: Size| {
            big_calls.lock().unwrap().push(format!("big {}", s.n));
            Ok::<_, HandlerError>("x".repeat(s.n))
        });
    let server = rpc::server(
        messaging_transports::open(url).unwrap(),
        Target::new(topic).with_server("s1"),
        vec![endpoint],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

#[derive(Serialize)]
struct Text<'a> {
    text: &'a str,
}

// ===== replies to queues that are gone (item 4) =====

/// A reply whose `_reply_q` does not exist comes back from the broker: it is retried a
/// few times with backoff until its caller's deadline (the request's `expiration`),
/// then dropped with one log line that carries no payload; the queue is remembered, so
/// the next reply to it is dropped at once, without a publish. Before: republished every
/// 250 ms for 60 s, and lapin logged the whole message at WARN each time (100 KB reply
/// → 93 MB of stderr).
#[test]
fn a_reply_to_a_missing_queue_is_retried_briefly_and_logged_once_without_its_payload() {
    let Some(url) = url() else { return };
    let logs = LogCapture::global();
    within(
        Duration::from_secs(60),
        "reply to a missing queue",
        move || {
            const SIZE: usize = 100_000;
            let topic = unique("hard_gone");
            let calls: Arc<Mutex<Vec<String>>> = Arc::default();
            let running = echo_server(&url, &topic, calls.clone());
            let raw = Raw::connect();
            let reply_q = unique("reply_gone");
            let first = ids::hex_id();
            let started = Instant::now();
            raw.publish(
                "openstack",
                &topic,
                &oslo_request(
                    "big",
                    serde_json::json!({ "n": SIZE }),
                    Some((&first, &reply_q)),
                ),
                Some(3_000),
            );
            eventually("the reply is given up", Duration::from_secs(20), || {
                events_about(&logs, &first)
                    .iter()
                    .any(|e| e.level == Level::WARN)
            });
            let gave_up = started.elapsed();
            let about = events_about(&logs, &reply_q);
            let attempts = 1 + about
                .iter()
                .filter(|e| e.message.contains("publish not confirmed; retrying"))
                .count();
            let loud: Vec<_> = about.iter().filter(|e| e.level <= Level::INFO).collect();
            let payload = "x".repeat(64);
            eprintln!(
                "measured: a {SIZE}-byte reply to a missing queue: {attempts} publish attempts, given up after {gave_up:?}; \
             {} events at info or above, {} events in all ({} bytes)",
                loud.len(),
                about.len(),
                bytes_of(&about)
            );
            assert_eq!(loud.len(), 1, "one line per reply: {loud:?}");
            assert!(loud[0].message.contains("does not exist"), "{loud:?}");
            assert!(
                (2..=17).contains(&attempts),
                "retried with backoff, boundedly: {attempts}"
            );
            assert!(
                gave_up < Duration::from_secs(6),
                "given up once the caller's 3 s deadline passed: {gave_up:?}"
            );
            assert!(
                bytes_of(&about) < 20_000,
                "the log holds no payload: {} bytes",
                bytes_of(&about)
            );
            assert!(
                logs.events().iter().all(|e| !e.message.contains(&payload)
                    && e.fields.iter().all(|(_, v)| !v.contains(&payload))),
                "no event carries the reply"
            );

            // The queue is now known to be gone: the next reply is dropped at once.
            let second = ids::hex_id();
            let again = Instant::now();
            raw.publish(
                "openstack",
                &topic,
                &oslo_request(
                    "big",
                    serde_json::json!({ "n": SIZE }),
                    Some((&second, &reply_q)),
                ),
                Some(3_000),
            );
            eventually(
                "the second reply is dropped",
                Duration::from_secs(10),
                || {
                    events_about(&logs, &second)
                        .iter()
                        .any(|e| e.level == Level::WARN)
                },
            );
            let dropped = again.elapsed();
            let retries_before = attempts - 1;
            let retries_after = events_about(&logs, &reply_q)
                .iter()
                .filter(|e| e.message.contains("publish not confirmed; retrying"))
                .count();
            eprintln!(
                "measured: the next reply to that queue was dropped {dropped:?} after its request was sent"
            );
            assert_eq!(
                retries_after, retries_before,
                "the second reply was not retried"
            );
            assert_eq!(
                events_about(&logs, &second)
                    .iter()
                    .filter(|e| e.level <= Level::INFO)
                    .count(),
                1
            );
            assert_eq!(calls.lock().unwrap().len(), 2, "both requests were handled");
            running.stop_and_wait().unwrap();
        },
    );
}

// ===== names too long for AMQP (item 5) =====

/// A `_reply_q` longer than an AMQP short string, sent by a remote caller, panicked
/// inside lapin when the handler replied. Now the request is handled without a reply,
/// with one log line, and the server keeps serving.
#[test]
fn a_reply_queue_name_too_long_for_amqp_drops_the_reply_not_the_server() {
    let Some(url) = url() else { return };
    let logs = LogCapture::global();
    within(Duration::from_secs(60), "long _reply_q", move || {
        let topic = unique("hard_longq");
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let running = echo_server(&url, &topic, calls.clone());
        let raw = Raw::connect();
        let msg_id = ids::hex_id();
        let reply_q = "r".repeat(300);
        raw.publish(
            "openstack",
            &topic,
            &oslo_request(
                "echo",
                serde_json::json!({ "text": "long" }),
                Some((&msg_id, &reply_q)),
            ),
            Some(10_000),
        );
        eventually("the request is handled", Duration::from_secs(10), || {
            calls.lock().unwrap().contains(&"long".to_owned())
        });
        let client = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(topic.clone()),
        )
        .with_timeout(Duration::from_secs(10));
        let echoed: String = client
            .call_blocking(&Context::new(), "echo", &Text { text: "after" })
            .unwrap();
        assert_eq!(echoed, "after", "the server still serves");
        let about = events_about(&logs, &msg_id);
        assert_eq!(
            about.iter().filter(|e| e.level <= Level::INFO).count(),
            1,
            "{about:?}"
        );
        running.stop_and_wait().unwrap();
    });
}

/// Names each within the rules but composing into more than 255 bytes (`<topic>.<server>`,
/// the fanout exchange and queue) are refused with a typed error: casting, calling,
/// notifying and starting a server. Before: a panic inside lapin.
#[test]
fn composed_names_too_long_for_amqp_are_invalid_targets() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "long names", move || {
        let transport = messaging_transports::open(&url).unwrap();
        let topic = "t".repeat(250);
        let to_server = RpcClient::new(
            transport.clone(),
            Target::new(topic.clone()).with_server("server-1"),
        );
        let err = to_server
            .cast_blocking(&Context::new(), "echo", &Text { text: "x" })
            .unwrap_err();
        assert!(
            matches!(err, RpcError::Transport(TransportError::InvalidTarget(_))),
            "{err}"
        );
        let err = to_server
            .call_blocking::<_, String>(&Context::new(), "echo", &Text { text: "x" })
            .unwrap_err();
        assert!(
            matches!(err, RpcError::Transport(TransportError::InvalidTarget(_))),
            "{err}"
        );
        let fanout = RpcClient::new(
            transport.clone(),
            Target::new(topic.clone()).with_fanout(true),
        );
        let err = fanout
            .cast_blocking(&Context::new(), "echo", &Text { text: "x" })
            .unwrap_err();
        assert!(err.to_string().contains("<topic>_fanout"), "{err}");
        let notifier = Notifier::new(transport.clone(), "p").with_topics([topic.as_str()]);
        let err =
            block_on(notifier.critical(&Context::new(), "e", &Text { text: "x" })).unwrap_err();
        assert!(
            matches!(
                err,
                NotifyError::Transport(TransportError::InvalidTarget(_))
            ),
            "{err}"
        );
        let server = rpc::server(
            transport,
            Target::new("t".repeat(230)).with_server("s1"),
            vec![Endpoint::new()],
            ThreadPoolExecutor::new(),
        )
        .unwrap()
        .build()
        .unwrap();
        let err = ServerThread::spawn(server).map(drop).unwrap_err();
        assert!(
            matches!(
                &err,
                ServerError::Listen {
                    source: TransportError::InvalidTarget(_),
                    ..
                }
            ),
            "{err}"
        );
        eprintln!("measured: a server whose fanout queue name would be too long: {err}");
    });
}

// ===== wildcards (item 6) =====

/// `*` and `#` are the wildcards of AMQP binding keys: a server on topic `#` received
/// every other topic's messages. Such servers cannot start, and sends to such topics
/// are refused (the rules are core's, `Target::validate_names`; this pins them on the
/// broker).
#[test]
fn servers_on_wildcard_topics_cannot_start_and_casts_to_them_are_refused() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "wildcards", move || {
        let transport = messaging_transports::open(&url).unwrap();
        for topic in ["#", "a.*", "*"] {
            let started = rpc::server(
                transport.clone(),
                Target::new(topic).with_server("s1"),
                vec![Endpoint::new()],
                ThreadPoolExecutor::new(),
            )
            .map_err(|e| e.to_string())
            .and_then(|builder| builder.build().map_err(|e| e.to_string()))
            .and_then(|server| ServerThread::spawn(server).map_err(|e| e.to_string()));
            let err = started.map(drop).unwrap_err();
            assert!(err.contains("not allowed"), "{topic}: {err}");
            let err = RpcClient::new(transport.clone(), Target::new(topic))
                .cast_blocking(&Context::new(), "echo", &Text { text: "x" })
                .unwrap_err();
            assert!(matches!(err, RpcError::InvalidTarget(_)), "{topic}: {err}");
            let server = Target::new("ok").with_server(topic);
            let err = RpcClient::new(transport.clone(), server)
                .cast_blocking(&Context::new(), "echo", &Text { text: "x" })
                .unwrap_err();
            assert!(matches!(err, RpcError::InvalidTarget(_)), "{topic}: {err}");
        }
    });
}

// ===== broker state left behind (item 10) =====

/// Every CLI `call` left a consumer-less `reply_<hex>` queue behind for 30 minutes.
/// Dropping the transport now deletes it.
#[test]
fn a_dropped_client_transport_deletes_its_reply_queue() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "reply queue deleted", move || {
        let raw = Raw::connect();
        let topic = unique("hard_replyq");
        // A raw server: the test reads `_reply_q` from the request and answers.
        raw.bind_queue(&topic, "openstack", &topic);
        let transport = messaging_transports::open(&url).unwrap();
        let caller = std::thread::spawn({
            let client = RpcClient::new(transport.clone(), Target::new(topic.clone()))
                .with_timeout(Duration::from_secs(20));
            move || client.call_blocking::<_, String>(&Context::new(), "echo", &Text { text: "q" })
        });
        let request = raw
            .get(&topic, Duration::from_secs(10))
            .expect("the request");
        let outer: serde_json::Value = serde_json::from_slice(&request).unwrap();
        let inner: serde_json::Value =
            serde_json::from_str(outer["oslo.message"].as_str().unwrap()).unwrap();
        let reply_q = inner["_reply_q"].as_str().unwrap().to_owned();
        let reply = serde_json::json!({
            "oslo.version": "2.0",
            "oslo.message": serde_json::json!({
                "result": "q", "failure": null, "ending": true,
                "_msg_id": inner["_msg_id"], "_unique_id": ids::hex_id(),
            }).to_string(),
        });
        raw.publish("", &reply_q, reply.to_string().as_bytes(), None);
        assert_eq!(caller.join().unwrap().unwrap(), "q");
        assert!(
            raw.messages_in(&reply_q).is_some(),
            "the reply queue exists while the transport lives"
        );
        let dropped = Instant::now();
        drop(transport);
        let took = dropped.elapsed();
        let gone = raw.messages_in(&reply_q).is_none();
        eprintln!(
            "measured: dropping the client transport took {took:?}; its reply queue deleted: {gone}"
        );
        assert!(gone, "the reply queue {reply_q} was left behind");
        assert!(took < Duration::from_secs(3), "{took:?}");
    });
}

/// oslo deletes a server's fanout queue when its listener's connection closes; so does
/// cleaning up a listener here (`stop()` + `wait()`).
#[test]
fn a_stopped_server_deletes_its_fanout_queue() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "fanout queue deleted", move || {
        let topic = unique("hard_fanout");
        let running = echo_server(&url, &topic, Arc::default());
        let fanout_queues = || {
            let out = std::process::Command::new("rabbitmqctl")
                .args(["list_queues", "name", "-q"])
                .output()
                .expect("rabbitmqctl runs");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|q| q.starts_with(&format!("{topic}_fanout_")))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let queues = fanout_queues();
        assert_eq!(queues.len(), 1, "{queues:?}");
        running.stop_and_wait().unwrap();
        let raw = Raw::connect();
        assert_eq!(
            raw.messages_in(&queues[0]),
            None,
            "{} was left behind",
            queues[0]
        );
    });
}

// ===== the maximum message size (item 1) =====

#[derive(Serialize, Deserialize)]
struct Blob {
    text: String,
}

/// `max_message_size` (bytes): a larger encoded message fails at send, before anything
/// is published.
#[test]
fn messages_larger_than_max_message_size_are_refused_at_send() {
    let Some(url) = url() else { return };
    within(
        Duration::from_secs(60),
        "max_message_size at send",
        move || {
            let topic = unique("hard_size");
            let calls: Arc<Mutex<Vec<String>>> = Arc::default();
            let running = echo_server(&url, &topic, calls.clone());
            let small = messaging_testkit::with_option(&url, "max_message_size", "1000");
            let transport = messaging_transports::open(&small).unwrap();
            let client = RpcClient::new(transport.clone(), Target::new(topic.clone()))
                .with_timeout(Duration::from_secs(10));
            let big = "b".repeat(2_000);
            let too_large = |err: &TransportError| matches!(err, TransportError::MessageTooLarge { size, limit: 1000 } if *size > 2_000);
            let err = client
                .cast_blocking(&Context::new(), "echo", &Text { text: &big })
                .unwrap_err();
            assert!(
                matches!(&err, RpcError::Transport(e) if too_large(e)),
                "{err}"
            );
            let err = client
                .call_blocking::<_, String>(&Context::new(), "echo", &Text { text: &big })
                .unwrap_err();
            assert!(
                matches!(&err, RpcError::Transport(e) if too_large(e)),
                "{err}"
            );
            let notifier = Notifier::new(transport, "p").with_topics([topic.as_str()]);
            let err =
                block_on(notifier.info(&Context::new(), "e", &Text { text: &big })).unwrap_err();
            assert!(
                matches!(&err, NotifyError::Transport(e) if too_large(e)),
                "{err}"
            );
            eprintln!("measured: {err}");
            let echoed: String = client
                .call_blocking(&Context::new(), "echo", &Text { text: "small" })
                .unwrap();
            assert_eq!(echoed, "small");
            assert_eq!(
                *calls.lock().unwrap(),
                ["small"],
                "nothing large was published"
            );
            running.stop_and_wait().unwrap();
        },
    );
}

/// At receive, a message larger than `max_message_size` is never decoded: a request
/// is dropped, a reply dropped (the caller times out), a notification rejected without
/// requeue; each with one warning naming size, limit and queue, never the payload.
#[test]
fn messages_larger_than_max_message_size_are_discarded_at_receive() {
    let Some(url) = url() else { return };
    let logs = LogCapture::global();
    within(
        Duration::from_secs(90),
        "max_message_size at receive",
        move || {
            let small = messaging_testkit::with_option(&url, "max_message_size", "1000");
            let big = "b".repeat(2_000);
            let discarded = |queue: &str| {
                events_about(&logs, queue)
                    .into_iter()
                    .filter(|e| e.level == Level::WARN && e.message.contains("max_message_size"))
                    .collect::<Vec<_>>()
            };
            let no_payload = || {
                logs.events().iter().all(|e| {
                    !e.message.contains(&big[..100])
                        && e.fields.iter().all(|(_, v)| !v.contains(&big[..100]))
                })
            };

            // Requests: a server with the small limit.
            let topic = unique("hard_rsize");
            let calls: Arc<Mutex<Vec<String>>> = Arc::default();
            let running = echo_server(&small, &topic, calls.clone());
            let client = RpcClient::new(
                messaging_transports::open(&url).unwrap(),
                Target::new(topic.clone()),
            )
            .with_timeout(Duration::from_secs(2));
            client
                .cast_blocking(&Context::new(), "echo", &Text { text: &big })
                .unwrap();
            eventually(
                "the large request is discarded",
                Duration::from_secs(10),
                || !discarded(&topic).is_empty(),
            );
            let echoed: String = client
                .clone()
                .with_timeout(Duration::from_secs(10))
                .call_blocking(&Context::new(), "echo", &Text { text: "small" })
                .unwrap();
            assert_eq!(echoed, "small");
            assert_eq!(
                *calls.lock().unwrap(),
                ["small"],
                "the large request was not handled"
            );
            let warning = discarded(&topic);
            assert_eq!(warning.len(), 1, "{warning:?}");
            eprintln!("measured: {warning:?}");
            for field in ["size", "limit", "queue"] {
                assert!(
                    warning[0].fields.iter().any(|(k, _)| k == field),
                    "{warning:?}"
                );
            }
            running.stop_and_wait().unwrap();

            // Replies: a caller with the small limit, a server with the default one.
            let topic = unique("hard_rsize");
            let running = echo_server(&url, &topic, Arc::default());
            let caller = RpcClient::new(
                messaging_transports::open(&small).unwrap(),
                Target::new(topic.clone()),
            )
            .with_timeout(Duration::from_secs(2));
            let err = caller
                .call_blocking::<_, String>(
                    &Context::new(),
                    "big",
                    &serde_json::json!({ "n": 2_000 }),
                )
                .unwrap_err();
            assert!(err.is_timeout(), "{err}");
            let echoed: String = caller
                .call_blocking(&Context::new(), "echo", &Text { text: "small" })
                .unwrap();
            assert_eq!(echoed, "small");
            let warning = discarded("reply_");
            assert_eq!(warning.len(), 1, "{warning:?}");
            running.stop_and_wait().unwrap();

            // Notifications: a listener with the small limit.
            let topic = unique("hard_nsize");
            let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
            let recorded = seen.clone();
            let endpoint =
                NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Blob>| {
                    recorded.lock().unwrap().push(n.payload.text.len());
                    NotificationResult::Handled
                });
            let listener = messaging_core::notify::listener(
                messaging_transports::open(&small).unwrap(),
                vec![Target::new(topic.clone())],
                vec![endpoint],
                ListenerOptions::new(),
                ThreadPoolExecutor::new(),
            )
            .build()
            .unwrap();
            let listener = ServerThread::spawn(listener).unwrap();
            let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "p")
                .with_topics([topic.as_str()]);
            block_on(notifier.info(&Context::new(), "e", &Blob { text: big.clone() })).unwrap();
            block_on(notifier.info(&Context::new(), "e", &Blob { text: "s".into() })).unwrap();
            eventually(
                "the small notification is handled",
                Duration::from_secs(10),
                || !seen.lock().unwrap().is_empty(),
            );
            let queue = format!("{topic}.info");
            eventually(
                "the large notification is rejected",
                Duration::from_secs(10),
                || !discarded(&queue).is_empty(),
            );
            assert_eq!(
                *seen.lock().unwrap(),
                [1],
                "the large notification was not handled"
            );
            assert_eq!(
                Raw::connect().messages_in(&queue),
                Some(0),
                "the large notification was not requeued"
            );
            assert_eq!(discarded(&queue).len(), 1);
            listener.stop_and_wait().unwrap();
            assert!(no_payload(), "no event carries a payload");
        },
    );
}

/// The migration trap of issue 10: a bus whose exchange or queue exists with other
/// properties than the options declare (oslo 18.3.1 falls back to a non-durable
/// exchange and then fails on its quorum queue with an unhelpful 406). The error names
/// the object, the property and the options that decide it.
#[test]
fn a_declare_conflicting_with_the_bus_names_the_object_and_the_options() {
    use messaging_core::{ListenOptions, Subscription};
    let Some(url) = url() else { return };
    let (exchange, topic, topic2) = (unique("mig_x"), unique("mig_t"), unique("mig_t2"));
    let listen = |url: &str, target: Target| {
        let transport = messaging_transports::open(url).unwrap();
        transport
            .listen(&Subscription::Rpc(target), &ListenOptions::default())
            .map(drop)
    };
    // A service with oslo's defaults declared a non-durable exchange and queue.
    let target = Target::new(topic.clone())
        .with_exchange(exchange.clone())
        .with_server("s1");
    listen(&url, target).expect("the first service declares");

    let quorum = messaging_testkit::with_option(&url, "rabbit_quorum_queue", "true");
    let conflict = |target: Target| match listen(&quorum, target) {
        Err(TransportError::Refused { message, .. }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let message = conflict(
        Target::new(topic2.clone())
            .with_exchange(exchange.clone())
            .with_server("s1"),
    );
    for says in [
        format!("exchange `{exchange}` exists with another `durable`"),
        "`rabbit_quorum_queue`".to_owned(),
        "`amqp_durable_queues`".to_owned(),
        "Migrating".to_owned(),
    ] {
        assert!(message.contains(&says), "{says:?} not in: {message}");
    }
    // The same for the queue, through a new (durable) exchange.
    let exchange2 = unique("mig_x2");
    let message = conflict(
        Target::new(topic.clone())
            .with_exchange(exchange2.clone())
            .with_server("s1"),
    );
    let raw = Raw::connect();
    raw.runtime.block_on(async {
        for name in [&exchange, &exchange2] {
            let _ = raw
                .channel
                .exchange_delete(name.as_str().into(), Default::default())
                .await;
        }
    });
    assert!(
        message.contains(&format!("queue `{topic}` exists with another `durable`"))
            && message.contains("`rabbit_quorum_queue`"),
        "{message}"
    );
    assert!(!message.contains("guest:guest"), "{message}");
}

// ===== at-least-once calls (issue 10, item 4) =====

/// oslo's `TransportOptions(at_least_once=True)`: a call or cast that no queue takes
/// fails at once with `Undeliverable` instead of waiting out its timeout. Before, the
/// request was republished with backoff until the call's timeout (here 20 s).
#[test]
fn at_least_once_calls_and_casts_to_nobody_fail_at_once() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "at-least-once sends", move || {
        let topic = unique("alo_nobody");
        let client = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(topic.clone()),
        )
        .with_timeout(Duration::from_secs(20))
        .with_at_least_once(true);
        let ctx = Context::new();
        // A topic nobody serves, then a server of a served topic that is not there.
        let (running, _) = recording_server(&url, &topic);
        let others = [
            client.clone().with_topic(unique("alo_none")),
            client.clone().with_server("no_such_server"),
        ];
        for client in others {
            let started = Instant::now();
            let error = client
                .call_blocking::<_, u64>(&ctx, "record", &Value { n: 1 })
                .unwrap_err();
            let took = started.elapsed();
            eprintln!(
                "measured: an at-least-once call to {} failed after {took:?}",
                client.target()
            );
            assert!(
                matches!(error, RpcError::Transport(TransportError::Undeliverable(_))),
                "{error:?}"
            );
            assert!(
                took < Duration::from_secs(5),
                "at once, not at the timeout: {took:?}"
            );
            let started = Instant::now();
            let error = client
                .cast_blocking(&ctx, "record", &Value { n: 2 })
                .unwrap_err();
            assert!(
                matches!(error, RpcError::Transport(TransportError::Undeliverable(_))),
                "{error:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        // Served: it works as before.
        let n: u64 = client
            .clone()
            .with_server("s1")
            .call_blocking(&ctx, "record", &Value { n: 3 })
            .unwrap();
        assert_eq!(n, 3);
        running.stop_and_wait().unwrap();
    });
}

/// `direct_mandatory_flag=false` (oslo's deprecated switch): replies are published
/// without `mandatory`, so a reply to a queue that is gone is dropped by the broker,
/// neither returned nor retried — where with the flag on (the default) it is returned,
/// retried until the caller's deadline and then reported.
#[test]
fn without_direct_mandatory_flag_replies_to_missing_queues_are_not_retried() {
    let Some(base) = url() else { return };
    let logs = LogCapture::global();
    within(
        Duration::from_secs(60),
        "non-mandatory replies",
        move || {
            for (flag, reported) in [("false", false), ("true", true)] {
                let url = messaging_testkit::with_option(&base, "direct_mandatory_flag", flag);
                let topic = unique("hard_nomand");
                let calls: Arc<Mutex<Vec<String>>> = Arc::default();
                let running = echo_server(&url, &topic, calls.clone());
                let raw = Raw::connect();
                let reply_q = unique("reply_nomand");
                raw.publish(
                    "openstack",
                    &topic,
                    &oslo_request(
                        "echo",
                        serde_json::json!({ "text": "hi" }),
                        Some((&ids::hex_id(), &reply_q)),
                    ),
                    Some(1_000),
                );
                eventually("the request is handled", Duration::from_secs(10), || {
                    calls.lock().unwrap().len() == 1
                });
                // Past the caller's 1 s deadline: a returned reply has been given up on.
                std::thread::sleep(Duration::from_millis(2_500));
                let about = events_about(&logs, &reply_q);
                let said = about.iter().any(|e| e.message.contains("does not exist"));
                assert_eq!(
                    said, reported,
                    "direct_mandatory_flag={flag}: reported missing queue: {about:?}"
                );
                running.stop_and_wait().unwrap();
            }
        },
    );
}

/// oslo's `use_queue_manager`: reply and fanout queues are named
/// `<hostname>:<processname>:<n>`, counted per service generation, instead of random
/// hex, so that a restarted service reuses them.
#[test]
fn the_queue_manager_names_reply_and_fanout_queues_after_host_and_process() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "queue manager", move || {
        let process = unique("qm_proc");
        let url = messaging_testkit::with_options(
            &url,
            &[
                ("use_queue_manager", "true"),
                ("hostname", "qmhost"),
                ("processname", &process),
            ],
        );
        let topic = unique("qm_topic");
        let (running, _) = recording_server(&url, &topic);
        let client = RpcClient::new(
            messaging_transports::open(&url).unwrap(),
            Target::new(topic.clone()),
        )
        .with_timeout(Duration::from_secs(10));
        let n: u64 = client
            .call_blocking(&Context::new(), "record", &Value { n: 5 })
            .unwrap();
        assert_eq!(n, 5);
        let raw = Raw::connect();
        let fanout = format!("{topic}_fanout_qmhost:{process}:1");
        let reply = format!("reply_qmhost:{process}:2");
        assert!(raw.messages_in(&fanout).is_some(), "{fanout} exists");
        assert!(raw.messages_in(&reply).is_some(), "{reply} exists");
        drop(client);
        running.stop_and_wait().unwrap();
        let _ = std::fs::remove_file(format!("/dev/shm/qmhost_{process}_qmanager"));
    });
}

/// `kombu_compression=gzip`: what the transport sends is compressed as kombu does
/// (zlib, `compression: application/x-gzip`), and what it receives compressed is
/// read, whether or not it compresses itself. (A body that would inflate past
/// `max_message_size` is refused: unit test `a_small_body_cannot_inflate_past_the_limit`;
/// interop with Python both ways: `oslo_interop.rs`.)
#[test]
fn kombu_compression_compresses_what_is_sent_and_reads_what_comes_compressed() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "compression", move || {
        let compressed = messaging_testkit::with_option(&url, "kombu_compression", "gzip");
        let topic = unique("hard_zlib");
        let raw = Raw::connect();
        let tap = unique("hard_zlib_tap");
        raw.bind_queue(&tap, "openstack", &topic);
        RpcClient::new(
            messaging_transports::open(&compressed).unwrap(),
            Target::new(topic.clone()),
        )
        .cast_blocking(&Context::new(), "record", &Value { n: 7 })
        .unwrap();
        let body = raw.get(&tap, Duration::from_secs(5)).expect("the cast");
        assert_eq!(
            body[0],
            0x78,
            "zlib, as kombu's gzip: {:?}",
            &body[..8.min(body.len())]
        );
        assert!(!body.windows(5).any(|w| w == b"oslo."), "not plain JSON");

        // A server without the option reads compressed requests.
        let (running, seen) = recording_server(&url, &topic);
        RpcClient::new(
            messaging_transports::open(&compressed).unwrap(),
            Target::new(topic.clone()),
        )
        .cast_blocking(&Context::new(), "record", &Value { n: 8 })
        .unwrap();
        wait_for(&seen, 1, Duration::from_secs(10));
        assert_eq!(*seen.lock().unwrap(), vec![8]);
        running.stop_and_wait().unwrap();
    });
}
