//! No token leaves the service in a notification, on any transport: a context holding
//! an `auth_token`, a `service_token` and an `auth_token_info` (oslo.context's
//! credentials, see `Context::SENSITIVE_KEYS`) is sent through the `messaging`,
//! `messagingv2` and `log` drivers; a listener gets the notification with the rest of
//! the context, and neither the bytes on the wire (read by a consumer of the test's
//! own: a memory listener of its own pool, a plain AMQP queue bound to the
//! notification's key, a plain NATS subscription to its subject) nor anything logged
//! holds a secret. The `log` driver also masks the payload's secrets (`adminPass`,
//! `*password*`, `*token*`, ...), as oslo's does.
//!
//! The memory test always runs; RabbitMQ runs with `MESSAGING_TEST_RABBIT_URL`, NATS
//! with `MESSAGING_TEST_NATS_URL`.

mod nats_admin;
mod raw_amqp;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier, NotifyDriver,
};
use messaging_core::{Context, Polled, Priority, Subscription, Target, Transport, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{LogCapture, ServerThread, with_option, within};
use nats_admin::Streams;
use raw_amqp::Tap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &ids::hex_id()[..10])
}

/// The secrets of one test, unique so that no other test's can be mistaken for them.
struct Secrets {
    auth_token: String,
    service_token: String,
    /// Only inside `auth_token_info`.
    catalog_password: String,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            auth_token: format!("gAAAAAB-auth-{}", ids::hex_id()),
            service_token: format!("gAAAAAB-service-{}", ids::hex_id()),
            catalog_password: format!("catalog-{}", ids::hex_id()),
        }
    }

    fn all(&self) -> [&str; 3] {
        [
            &self.auth_token,
            &self.service_token,
            &self.catalog_password,
        ]
    }

    /// A request context as a service holds it, credentials included.
    fn context(&self) -> Context {
        [
            ("user", json!("alice")),
            ("project_id", json!("p1")),
            ("request_id", json!("req-7f4c")),
            ("roles", json!(["member"])),
            ("auth_token", json!(self.auth_token)),
            ("service_token", json!(self.service_token)),
            (
                "auth_token_info",
                json!({"token": {"id": self.auth_token, "catalog": [{"password": self.catalog_password}]}}),
            ),
        ]
        .into_iter()
        .collect()
    }

    /// Panics if `bytes` holds any secret (`what` says where they came from).
    fn assert_absent(&self, what: &str, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for secret in self.all() {
            assert!(!text.contains(secret), "a secret in {what}: {text}");
        }
    }

    /// Panics if anything logged or any span holds a secret.
    fn assert_not_logged(&self, logs: &LogCapture) {
        for event in logs.events() {
            self.assert_absent("a log event", format!("{event:?}").as_bytes());
        }
        for span in logs.spans() {
            self.assert_absent("a span", format!("{span:?}").as_bytes());
        }
    }
}

/// What a listener should see of the context: everything but the credentials,
/// `auth_token` as null (oslo's `redacted_copy().to_dict()`).
fn redacted() -> Value {
    json!({
        "user": "alice",
        "project_id": "p1",
        "request_id": "req-7f4c",
        "roles": ["member"],
        "auth_token": null,
    })
}

/// The payload (typed: the default codec of `memory://` and `nats://`, bincode, is
/// not self-describing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Update {
    instance: String,
    state: String,
}

fn update() -> Update {
    Update {
        instance: "i-1".to_owned(),
        state: "active".to_owned(),
    }
}

type Inbox = Arc<Mutex<Vec<(Context, Update)>>>;

fn listener(transport: Arc<dyn Transport>, topic: &str, inbox: Inbox) -> ServerThread {
    let endpoint =
        NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Update>| {
            inbox.lock().unwrap().push((n.context, n.payload));
            NotificationResult::Handled
        });
    let server = messaging_core::notify::listener(
        transport,
        vec![Target::new(topic)],
        vec![endpoint],
        ListenerOptions::new(),
        ThreadPoolExecutor::new(),
    )
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

fn notifier(transport: Arc<dyn Transport>, topic: &str) -> Notifier {
    Notifier::new(transport, "compute.host1")
        .with_topics([topic])
        .with_drivers([
            NotifyDriver::Messaging,
            NotifyDriver::MessagingV2,
            NotifyDriver::Log,
        ])
        .with_timeout(Duration::from_secs(20))
}

/// Waits until the listener got `count` notifications, then checks each context.
fn check_received(inbox: &Inbox, count: usize, secrets: &Secrets) {
    let deadline = Instant::now() + LIMIT;
    while inbox.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "the listener got {:?}",
            inbox.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let received = inbox.lock().unwrap().clone();
    assert_eq!(received.len(), count, "{received:?}");
    for (context, payload) in received {
        assert_eq!(serde_json::to_value(&context).unwrap(), redacted());
        assert_eq!(payload, update());
        secrets.assert_absent("a received context", &serde_json::to_vec(&context).unwrap());
    }
}

fn send(notifier: &Notifier, secrets: &Secrets) {
    block_on(notifier.info(&secrets.context(), "compute.instance.update", &update())).unwrap();
}

#[test]
fn no_token_leaves_in_a_notification_on_memory() {
    let logs = LogCapture::global();
    within(LIMIT, "memory", move || {
        let secrets = Secrets::new();
        let transport =
            messaging_transports::open(&format!("memory:///{}", unique("redact"))).unwrap();
        let topic = unique("redact");
        // A raw listener of a pool of its own: the messages exactly as the transport
        // carries them.
        let raw = transport
            .listen(
                &Subscription::Notifications {
                    targets: vec![Target::new(topic.clone())],
                    priorities: vec![Priority::Info],
                    pool: Some("raw".to_owned()),
                },
                &Default::default(),
            )
            .unwrap();
        let inbox = Inbox::default();
        let running = listener(transport.clone(), &topic, inbox.clone());
        send(&notifier(transport.clone(), &topic), &secrets);
        check_received(&inbox, 2, &secrets);
        let mut carried = Vec::new();
        while carried.len() < 2 {
            match raw.poll(Some(Duration::from_secs(10))).unwrap() {
                Polled::Messages(batch) => carried.extend(batch),
                other => panic!("the raw listener got {other:?}"),
            }
        }
        for incoming in &carried {
            let message = incoming.message();
            secrets.assert_absent(
                "the carried context",
                &serde_json::to_vec(&message.context).unwrap(),
            );
            secrets.assert_absent("the carried body", &message.body);
            secrets.assert_absent("the carried message", format!("{message:?}").as_bytes());
            assert_eq!(message.context.get("user"), Some(&json!("alice")));
        }
        secrets.assert_not_logged(&logs);
        raw.stop();
        raw.cleanup();
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn no_token_leaves_in_a_notification_on_rabbitmq() {
    let Ok(url) = std::env::var("MESSAGING_TEST_RABBIT_URL") else {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return;
    };
    let logs = LogCapture::global();
    within(LIMIT * 2, "rabbit", move || {
        let secrets = Secrets::new();
        let url = with_option(&url, "queue_ttl", "600");
        let topic = unique("redact");
        let tap = Tap::bind(
            &url,
            &unique("redact_tap"),
            "openstack",
            &[format!("{topic}.info")],
        );
        let transport = messaging_transports::open(&url).unwrap();
        let inbox = Inbox::default();
        let running = listener(transport.clone(), &topic, inbox.clone());
        send(&notifier(transport, &topic), &secrets);
        // `messaging` and `messagingv2` each put one copy on the wire.
        check_received(&inbox, 2, &secrets);
        let bodies = tap.take(2, LIMIT);
        assert_eq!(bodies.len(), 2, "the tap got {bodies:?}");
        let mut enveloped = 0;
        for body in &bodies {
            secrets.assert_absent("a body on the wire", body);
            let outer: Value = serde_json::from_slice(body).unwrap();
            let inner: Value = match outer.get("oslo.message").and_then(Value::as_str) {
                Some(inner) => {
                    enveloped += 1;
                    serde_json::from_str(inner).unwrap()
                }
                None => outer,
            };
            assert_eq!(inner["_context_user"], "alice", "{inner}");
            assert_eq!(inner["_context_auth_token"], Value::Null, "{inner}");
            assert!(inner.get("_context_service_token").is_none(), "{inner}");
            assert!(inner.get("_context_auth_token_info").is_none(), "{inner}");
        }
        assert_eq!(enveloped, 1, "one v1 and one v2 body");
        secrets.assert_not_logged(&logs);
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn no_token_leaves_in_a_notification_on_nats() {
    let Ok(url) = std::env::var("MESSAGING_TEST_NATS_URL") else {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return;
    };
    let logs = LogCapture::global();
    within(LIMIT * 2, "nats", move || {
        let secrets = Secrets::new();
        let prefix = unique("redact");
        let _streams = Streams::of(&url, std::slice::from_ref(&prefix));
        let url = with_option(
            &with_option(&url, "subject_prefix", &prefix),
            "consumer_ttl",
            "600",
        );
        let topic = unique("redact");
        // A plain NATS subscription to the notification's subject sees what was
        // published, headers and all.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let address = std::env::var("MESSAGING_TEST_NATS_URL")
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .trim_start_matches("nats://")
            .to_owned();
        let mut subscriber = runtime.block_on(async {
            let client = async_nats::connect(address).await.unwrap();
            let subscriber = client
                .subscribe(format!("{prefix}.notify.openstack.{topic}.info"))
                .await
                .unwrap();
            client.flush().await.unwrap();
            subscriber
        });
        let transport = messaging_transports::open(&url).unwrap();
        let inbox = Inbox::default();
        let running = listener(transport.clone(), &topic, inbox.clone());
        send(&notifier(transport, &topic), &secrets);
        check_received(&inbox, 2, &secrets);
        let published = runtime.block_on(async {
            use futures_lite::StreamExt;
            let mut published = Vec::new();
            while published.len() < 2 {
                match tokio::time::timeout(LIMIT, subscriber.next()).await {
                    Ok(Some(message)) => published.push(message),
                    other => panic!("the subscription got {other:?}"),
                }
            }
            published
        });
        for message in &published {
            secrets.assert_absent("a published frame", &message.payload);
            secrets.assert_absent(
                "published headers",
                format!("{:?}", message.headers).as_bytes(),
            );
            assert!(
                String::from_utf8_lossy(&message.payload).contains("alice"),
                "the context travelled"
            );
        }
        secrets.assert_not_logged(&logs);
        running.stop_and_wait().unwrap();
    });
}

/// The `log` driver writes the payload with its secrets masked (oslo's log driver
/// masks them with `mask_dict_password`), at the priority's level.
#[test]
fn the_log_driver_masks_secrets_in_the_payload() {
    let logs = LogCapture::global();
    let password = format!("pw-{}", ids::hex_id());
    let transport = messaging_transports::open("memory://").unwrap();
    let notifier = Notifier::new(transport, "compute.host1").with_driver(NotifyDriver::Log);
    block_on(notifier.warn(
        &Context::new(),
        "compute.instance.rebuild",
        &json!({"instance": "i-9", "adminPass": password, "volumes": [{"auth_password": password}]}),
    ))
    .unwrap();
    let logged: Vec<_> = logs
        .events()
        .into_iter()
        .filter(|e| {
            e.target == "messaging::notification"
                && e.fields
                    .iter()
                    .any(|(k, v)| k == "event_type" && v.contains("compute.instance.rebuild"))
        })
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let event = &logged[0];
    assert_eq!(event.level, tracing::Level::WARN);
    let payload = &event
        .fields
        .iter()
        .find(|(k, _)| k == "payload")
        .expect("a payload field")
        .1;
    assert!(!payload.contains(&password), "{payload}");
    assert!(
        payload.contains(r#""adminPass":"***""#) && payload.contains(r#""instance":"i-9""#),
        "{payload}"
    );
}
